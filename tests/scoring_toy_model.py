"""A small pure-torch `ScoringModel` for testing the scoring math without transformers.

Integer token sequences from the turns (user turns unsupervised, assistant turns supervised), a
frozen embedding plus a frozen first block whose output `prepare` caches (like a frozen vision tower
or lower layers), then trainable blocks and an LM head; per-sample loss = masked mean next-token CE.
A dropout layer makes eval mode observable. Not a mock: the scorer's math runs on it for real.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ostselect.data.sample import Sample, Turn
from ostselect.proxy.api import OptimizerState

VOCAB = 48
ROLE_TOKENS = {"system": 1, "user": 2, "assistant": 3}


def encode(sample: Sample) -> tuple[list[int], list[bool]]:
    """Token ids and which positions are supervised targets (assistant content)."""
    ids, sup = [0], [False]
    for im in sample.images:  # reading the image is part of prepare: a missing file fails here
        digest = hashlib.sha256(im.read_bytes()).digest()
        ids.append(4 + digest[0] % (VOCAB - 4))
        sup.append(False)
    for turn in sample.turns:
        ids.append(ROLE_TOKENS[turn.role])
        sup.append(False)
        for ch in turn.content:
            ids.append(4 + ord(ch) % (VOCAB - 4))
            sup.append(turn.role == "assistant")
    return ids, sup


class ToyNet(nn.Module):
    def __init__(self, dim: int = 8, trainable_layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.block0 = nn.Linear(dim, dim)  # frozen: computed once in prepare
        self.blocks = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(trainable_layers))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(dim, VOCAB)
        for p in [*self.embed.parameters(), *self.block0.parameters()]:
            p.requires_grad_(False)

    def frozen(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return x + torch.tanh(self.block0(x))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(1, h.shape[-2] + 1, dtype=h.dtype).unsqueeze(-1)
        for block in self.blocks:
            context = h.cumsum(-2) / steps  # causal mean of the prefix
            h = h + torch.tanh(block(torch.cat([h, context], -1)))
        return self.head(self.dropout(h))


class ToyProxy:
    """Implements `ostselect.proxy.api.ScoringModel` (plus the optional batched-gradient hook)."""

    def __init__(
        self,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        batched_grads: bool = True,
        trainable: str = "all",
        state: OptimizerState | None = None,
        name: str = "toy",
    ) -> None:
        torch.manual_seed(seed)
        self.model = ToyNet().to(dtype)
        if trainable == "top":
            for p in [*self.model.blocks[0].parameters()]:
                p.requires_grad_(False)
        self.dtype = dtype
        self.name = name
        self.params_spec = trainable
        self._state = state
        self.batched_grads = batched_grads
        self.model.eval()

    # ---- ScoringModel ----
    def trainable_parameters(self) -> dict[str, torch.Tensor]:
        return {k: p for k, p in self.model.named_parameters() if p.requires_grad}

    def prepare(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        encoded = [encode(s) for s in samples]
        length = max(len(ids) for ids, _ in encoded)
        ids = torch.zeros(len(samples), length, dtype=torch.long)
        mask = torch.zeros(len(samples), length, dtype=self.dtype)
        for i, (seq, sup) in enumerate(encoded):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(sup)] = torch.tensor(sup, dtype=self.dtype)
        with torch.no_grad():
            hidden = self.model.frozen(ids)
        return {"hidden": hidden, "targets": ids[:, 1:], "mask": mask[:, 1:]}

    def __len__(self) -> int:  # pragma: no cover - protocol nicety
        return 0

    def per_sample_loss(
        self, prepared: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        if params is None:
            logits = self.model(prepared["hidden"])
        else:
            logits = torch.func.functional_call(
                self.model, dict(params), (prepared["hidden"],), strict=False
            )
        logp = torch.log_softmax(logits[..., :-1, :], -1)
        nll = -torch.gather(logp, -1, prepared["targets"].unsqueeze(-1)).squeeze(-1)
        mask = prepared["mask"]
        return (nll * mask).sum(-1) / mask.sum(-1)

    def per_sample_loss_reference(self, samples: Sequence[Sample]) -> torch.Tensor:
        """The uncached path: re-encode and run the frozen block too, with the live parameters."""
        encoded = self.prepare(samples)
        with torch.enable_grad():
            hidden = self.model.frozen(
                torch.cat([torch.zeros_like(encoded["targets"][:, :1]), encoded["targets"]], 1)
            )
        return self.per_sample_loss({**encoded, "hidden": hidden})

    def per_sample_gradients(
        self, prepared: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]
    ):
        """Optional hook: [B] losses and per-sample gradients [B, ...] in one vmapped pass."""
        if not self.batched_grads:
            raise NotImplementedError

        def one(p, hidden, targets, mask):
            batch = {"hidden": hidden[None], "targets": targets[None], "mask": mask[None]}
            loss = self.per_sample_loss(batch, p)[0]
            return loss, loss

        grad_fn = torch.func.grad(one, has_aux=True)
        grads, losses = torch.func.vmap(grad_fn, in_dims=(None, 0, 0, 0))(
            dict(params), prepared["hidden"], prepared["targets"], prepared["mask"]
        )
        return losses, grads

    def supervised_token_counts(self, prepared: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return prepared["mask"].sum(-1).long()

    def optimizer_state(self) -> OptimizerState | None:
        return self._state

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        h.update(self.params_spec.encode())
        return h.hexdigest()[:16]

    def save(
        self,
        out_dir: str | Path,
        optimizer_state: OptimizerState | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out / "model.pt")
        if optimizer_state is not None:
            torch.save(optimizer_state, out / "optimizer.pt")
        (out / "meta.json").write_text(json.dumps({"params": self.params_spec, **(metadata or {})}))
        return out

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float64) -> ToyProxy:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        state = None
        if (path / "optimizer.pt").exists():
            state = torch.load(path / "optimizer.pt", weights_only=False)
        proxy = cls(dtype=dtype, trainable=meta["params"], state=state, name=str(path))
        proxy.model.load_state_dict(torch.load(path / "model.pt"))
        return proxy


def make_samples(
    n: int, seed: int = 0, prefix: str = "s", groups: Sequence[str] = ()
) -> list[Sample]:
    """Short conversations with random letters; assistant answers partly copy the question."""
    g = torch.Generator().manual_seed(seed)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789 "
    out = []
    for i in range(n):
        qlen, alen = (int(x) for x in torch.randint(3, 12, (2,), generator=g))
        q = "".join(letters[int(j)] for j in torch.randint(0, len(letters), (qlen,), generator=g))
        a = "".join(letters[int(j)] for j in torch.randint(0, len(letters), (alen,), generator=g))
        if i % 3 == 0:
            a = q[: max(1, alen)]
        extra = {"group": groups[i % len(groups)]} if groups else {}
        out.append(
            Sample(id=f"{prefix}{i}", turns=[Turn("user", q), Turn("assistant", a)], extra=extra)
        )
    return out
