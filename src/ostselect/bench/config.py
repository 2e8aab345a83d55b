"""`BenchConfig`: every knob of a DigitMath benchmark run, with the three presets we ship.

- `full_config()`: `ost bench run` (the committed docs/results): k = 20% and 50%, every baseline
  (the LLM judge included) and the set-level policy rows.
- `demo_config()`: `ost demo` / `make demo`, <= 10 minutes on 2 CPU cores.
- `mini_config()`: the end-to-end test, a minute or two.

Everything downstream is a function of the config (seeds included), so a run is reproducible from
the `config` block that `results.json` records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ostselect.baselines import get_registry
from ostselect.bench.noise import DEFAULT_NOISE_RATE

# Every registered baseline that is a benchmark row (`register_baseline(..., in_benchmark=...)`).
ALL_BASELINES = tuple(name for name, spec in get_registry().items() if spec.in_benchmark)
PROXY_ROLES = ("proxy", "target")


@dataclass(frozen=True)
class OSTVariant:
    """One OST-exact setting beyond the main one, trained like the OST-k% row (stage `variants`).

    - `name`: the row label suffix, e.g. "eta 0.02" -> "OST-exact 20% (eta 0.02)".
    - `eta`: the SGD step of the scoring; None = `BenchConfig.eta`.
    - `proxy`: "proxy" (the benchmark proxy) or "target" (the pretrained target, warmed up exactly
      like the proxy, scores the pool: the larger-proxy experiment).
    - `balance_by`: a pool `Sample.extra` field (e.g. "category"): keep the top k under
      proportional per-stratum quotas (`SelectionPolicy(balance_by=...)`) instead of the plain
      top k. With no other change the main `ost-exact` scores are reused (no re-scoring).
    - `normalize`: "group-z" ranks by the sum of per-anchor-group z-scored utilities
      (`SelectionPolicy(normalize=...)`), so no anchor group's scale dominates the sum.
    - `optimizer`: "adamw" takes the step the warm-up's AdamW would take next (its moments, at
      its next learning rate unless `eta` is given): the paper's simulated step, rather than the
      benchmark's default SGD step of size `BenchConfig.eta`.
    """

    name: str
    eta: float | None = None
    proxy: str = "proxy"
    balance_by: str | None = None
    normalize: str | None = None
    optimizer: str | None = None

    def __post_init__(self) -> None:
        if self.proxy not in PROXY_ROLES:
            raise ValueError(f"OSTVariant.proxy must be one of {PROXY_ROLES}, got {self.proxy!r}")
        if self.eta is not None and not self.eta > 0:
            raise ValueError(f"OSTVariant.eta must be > 0, got {self.eta}")


@dataclass(frozen=True)
class ModelDims:
    """Widths of one benchmark VLM (keys as in `proxy.arches.TEXT_SIZES` / `VISION_SIZES`)."""

    hidden: int = 64
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab: int = 512
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 128

    def text(self) -> dict[str, int]:
        return dict(
            hidden=self.hidden,
            layers=self.layers,
            heads=self.heads,
            kv_heads=self.kv_heads,
            intermediate=self.intermediate,
            vocab=self.vocab,
        )

    def vision(self) -> dict[str, int]:
        return dict(
            hidden=self.vision_hidden,
            layers=self.vision_layers,
            heads=self.vision_heads,
            intermediate=self.vision_intermediate,
        )


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. Sizes are sample counts; `seeds` vary target training and Random-k."""

    # data
    n_pool: int = 1000
    n_heldout: int = 300
    n_test: int = 2000  # binomial error at p = 0.6 is 1.1 points (2.3 at 300 items and p = 0.2)
    n_pretrain: int = 4000
    n_facts: int = 8000  # text-only fact problems mixed into LM pretraining
    noise_rate: float = DEFAULT_NOISE_RATE
    noise_mix: dict[str, float] | None = None
    clutter: float = 0.3
    data_seed: int = 0
    # models: a frozen per-cell digit reader, then the LM on captions + arithmetic facts
    proxy: ModelDims = field(default_factory=ModelDims)
    target: ModelDims = field(
        default_factory=lambda: ModelDims(hidden=96, intermediate=192, layers=4)
    )
    vision_pretrain_epochs: int = 4  # (cell, digit-or-blank) per image token: the "encoder"
    vision_pretrain_lr: float = 3e-3
    pretrain_epochs: int = 4  # captions + facts, language model only
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 16
    # proxy warm-up (language model only, AdamW + cosine over one pool epoch). Batch 4 and a 1%
    # ramp make the 5% point ~12 optimizer steps, 10 of them after the ramp: a trained proxy,
    # not the pretrained one (at batch 8 and a 3% ramp it was 7 steps, inside a 6-step ramp).
    warmup_fraction: float = 0.05
    warmup_lr: float = 1e-3
    warmup_batch_size: int = 4
    warmup_ramp: float = 0.01
    # OST scoring
    n_anchors: int = 100
    modes: tuple[str, ...] = ("exact", "first-order", "hybrid")
    optimizer: str = "sgd"
    eta: float = 0.005  # SGD step; 0.05 overshoots (exact AUROC 0.46 vs 0.57 at 0.005, demo)
    score_batch_size: int = 16
    # selection and baselines (noise metrics are reported at every fraction listed here)
    fractions: tuple[float, ...] = (0.2, 0.5)
    baselines: tuple[str, ...] = ("loss", "ifd", "grand", "el2n", "less", "deita")
    # Set-level policies trained at min(fractions) for OST-exact and the best baseline, beside
    # their plain top-k rows: separates what coverage buys from what noise filtering buys.
    policies: tuple[str, ...] = ("balanced", "coverage")
    # Baseline rows train under these protocols only (B is the paper's headline comparison;
    # training every baseline under A too would add ~40% to the run).
    baseline_protocols: tuple[str, ...] = ("B",)
    protocols: tuple[str, ...] = ("A", "B")  # which protocols the main rows train under
    # target fine-tuning and evaluation
    finetune_lr: float = 2e-3
    finetune_batch_size: int = 16
    epochs_a: int = 6  # Protocol A: this many passes over each subset
    # Protocol B: every row trains exactly the steps Full-SFT takes under Protocol A (epochs_a
    # full-pool epochs), so a 20% subset gets 5x the epochs.
    seeds: tuple[int, ...] = (0, 1, 2)
    max_new_tokens: int = 40
    eval_batch_size: int = 200  # greedy decoding; larger batches amortize per-token overhead
    # warm-up ablation: proxy checkpoints after these shares of one pool epoch
    ablation_fractions: tuple[float, ...] = (0.0, 0.05, 0.25, 1.0)
    ablation_seeds: int = 3  # how many of `seeds` train the ablation's OST-20% targets
    # OST variants (eta, proxy, balanced selection): OST-exact top min(fractions), Protocol B,
    # every seed; a separate table, not rows of the main one
    variants: tuple[OSTVariant, ...] = ()
    threads: int = 1  # torch threads per process
    workers: int = 2  # processes for pretraining and fine-tuning jobs (results do not depend on it)
    cache_dir: str | None = None  # pretrained models (default: bench.cache.cache_root())
    report: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **changes: Any) -> BenchConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def full_config() -> BenchConfig:
    """The committed benchmark (`ost bench run`): k = 20% and 50%, every baseline (the judge
    included), the balanced and coverage policies for OST-exact and the best baseline, 6 epochs
    (Protocol A) / 378 steps (B), 3 seeds, a 2,000-item test split."""
    return BenchConfig(
        modes=("exact", "first-order"),  # hybrid re-scored 999 of 1,000 exactly here: no row
        fractions=(0.2, 0.5),
        baselines=ALL_BASELINES,
        ablation_fractions=(),
    )


def demo_config() -> BenchConfig:
    """`ost demo`: the full run's pretrained models (one cache entry) and Protocol B on a
    500-sample pool: top-20% of OST-exact (plain and coverage-aware) and of the loss baseline,
    Random, Full-SFT and Clean-only, 2 seeds (<= 10 minutes on 2 cores)."""
    return BenchConfig(
        n_pool=500,
        n_heldout=150,
        n_test=1000,
        modes=("exact",),
        n_anchors=50,
        epochs_a=12,  # 384 Protocol B steps, as many as the full run's 378
        protocols=("B",),
        fractions=(0.2,),
        baselines=("loss",),
        policies=("coverage",),
        seeds=(0, 1),
        ablation_fractions=(),
        report=True,
    )


def mini_config() -> BenchConfig:
    """The end-to-end test: every stage runs, on toy sizes (accuracy is not meaningful here)."""
    tiny = ModelDims(hidden=32, intermediate=64, layers=2, vision_hidden=32, vision_intermediate=64)
    return BenchConfig(
        n_pool=48,
        n_heldout=20,
        n_test=10,
        n_pretrain=40,
        n_facts=16,
        proxy=tiny,
        target=tiny,
        vision_pretrain_epochs=1,
        pretrain_epochs=1,
        warmup_fraction=0.25,
        n_anchors=10,
        fractions=(0.5,),
        baselines=("loss",),
        epochs_a=1,
        seeds=(0, 1),
        max_new_tokens=8,
        ablation_fractions=(0.0, 0.25),
        ablation_seeds=1,
        variants=(OSTVariant("target as proxy", proxy="target"),),
        workers=1,
        report=False,
    )


PRESETS = {"full": full_config, "demo": demo_config, "mini": mini_config}
