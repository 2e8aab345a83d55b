"""Optimizer update rules, written once and shared by every scoring mode and by the warm-up checks.

Each rule is a pure function of dicts of tensors (no in-place ops, no optimizer objects), so it
works under `torch.func` / `vmap` and broadcasts over a leading candidate dimension on the
gradients. The arithmetic mirrors `torch.optim`'s single-tensor kernels op for op, so the
simulated step equals the step a real `torch.optim.SGD` / `torch.optim.AdamW` would take
(bit-for-bit on CPU in float64).

Low-precision parameters (bfloat16, float16) are stepped in float32 master precision, as
mixed-precision training does: gradients and parameters are upcast, the moments are kept in float32
(float16 would flush g * g to 0 and blow the step up to m / eps), and `apply` rounds theta' back
to the parameter's dtype once, at the end, because the anchors are evaluated in the model's dtype.
`displacement` stays in float32: first-order only takes dot products with it. float32 and float64
parameters are their own master precision, so their arithmetic is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ostselect.precision import master_dtype, to_master

if TYPE_CHECKING:
    from ostselect.proxy.api import OptimizerState

Tensors = Mapping[str, torch.Tensor]

DEFAULT_SGD_LR = 1e-3
DEFAULT_ADAMW_LR = 1e-5
SUGGESTED_ETA = 0.005  # named in refusals: a step that moves a small proxy measurably


class StepSizeError(ValueError):
    """A zero or non-finite step size: every utility would be 0 (or NaN), a silent wrong answer."""


@dataclass(frozen=True)
class SGD:
    """Plain SGD: theta' = theta - lr * g (no momentum, no weight decay), the paper's figure."""

    lr: float
    name: str = "sgd"

    def apply(self, params: Tensors, grads: Tensors) -> dict[str, torch.Tensor]:
        """theta' for the given gradient (grads may carry a leading candidate dimension)."""
        return {
            k: torch.add(to_master(p), to_master(grads[k]), alpha=-self.lr).to(p.dtype)
            for k, p in params.items()
        }

    def displacement(self, params: Tensors, grads: Tensors) -> dict[str, torch.Tensor]:
        """theta - theta', computed directly (not as a difference) to keep first-order precise."""
        return {k: to_master(grads[k]) * self.lr for k in params}

    def hyperparameters(self) -> dict[str, Any]:
        return {"optimizer": "sgd", "lr": self.lr}

    def torch_optimizer(self, params: Tensors) -> torch.optim.Optimizer:
        """The real optimizer over live parameters, for the naive reference loop."""
        return torch.optim.SGD(list(params.values()), lr=self.lr)


@dataclass(frozen=True)
class AdamW:
    """The next `torch.optim.AdamW` step from a given state (`step` steps already taken).

    Missing moments mean a fresh optimizer (zeros, step 0). Decoupled weight decay multiplies
    theta by (1 - lr * wd) before the Adam update; bias correction uses step + 1; eps is added
    after dividing sqrt(v) by sqrt(bias_correction2), all as in torch.
    """

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    step: int = 0
    exp_avg: Mapping[str, torch.Tensor] = field(default_factory=dict)
    exp_avg_sq: Mapping[str, torch.Tensor] = field(default_factory=dict)
    name: str = "adamw"

    @classmethod
    def from_state(
        cls,
        state: OptimizerState | None,
        params: Tensors,
        *,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> AdamW:
        """Continue a warm-up state (its lr unless `lr` overrides it), else start fresh."""
        if state is None:
            return cls(
                lr=DEFAULT_ADAMW_LR if lr is None else lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
            )
        names = set(params)
        for label, moments in (("exp_avg", state.exp_avg), ("exp_avg_sq", state.exp_avg_sq)):
            missing, extra = names - set(moments), set(moments) - names
            if missing or extra:
                raise ValueError(
                    f"optimizer state {label} does not match the trainable parameters "
                    f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}); "
                    "load the proxy with the same --params selection it was warmed up with"
                )
        for k, p in params.items():
            if state.exp_avg[k].shape != p.shape or state.exp_avg_sq[k].shape != p.shape:
                raise ValueError(
                    f"optimizer state for {k} has shape {tuple(state.exp_avg[k].shape)}"
                    f" but the parameter has {tuple(p.shape)}"
                )
        return cls(
            lr=state.lr if lr is None else lr,
            betas=tuple(state.betas),  # type: ignore[arg-type]
            eps=state.eps,
            weight_decay=state.weight_decay,
            step=int(state.step),
            exp_avg={k: _master_like(state.exp_avg[k], p) for k, p in params.items()},
            exp_avg_sq={k: _master_like(state.exp_avg_sq[k], p) for k, p in params.items()},
        )

    def _coefficients(self) -> tuple[float, float]:
        t = float(self.step + 1)
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**t)
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        return step_size, bias_correction2_sqrt

    def _moments(self, name: str, p: torch.Tensor, g: torch.Tensor):
        """(m, v) after this step, in master precision (`p`, `g` already upcast)."""
        beta1, beta2 = self.betas
        m0 = self.exp_avg.get(name)
        v0 = self.exp_avg_sq.get(name)
        m0 = torch.zeros_like(p) if m0 is None else m0.to(p.dtype)
        v0 = torch.zeros_like(p) if v0 is None else v0.to(p.dtype)
        m = torch.lerp(m0, g, 1 - beta1)
        v = torch.addcmul(v0 * beta2, g, g, value=1 - beta2)
        return m, v

    def apply(self, params: Tensors, grads: Tensors) -> dict[str, torch.Tensor]:
        step_size, bc2_sqrt = self._coefficients()
        out = {}
        for k, p_model in params.items():
            p = to_master(p_model)
            m, v = self._moments(k, p, to_master(grads[k]))
            decayed = p * (1 - self.lr * self.weight_decay) if self.weight_decay != 0 else p
            denom = (torch.sqrt(v) / bc2_sqrt) + self.eps
            out[k] = torch.addcdiv(decayed, m, denom, value=-step_size).to(p_model.dtype)
        return out

    def displacement(self, params: Tensors, grads: Tensors) -> dict[str, torch.Tensor]:
        step_size, bc2_sqrt = self._coefficients()
        out = {}
        for k, p_model in params.items():
            p = to_master(p_model)
            m, v = self._moments(k, p, to_master(grads[k]))
            denom = (torch.sqrt(v) / bc2_sqrt) + self.eps
            d = m / denom * step_size
            out[k] = d + p * (self.lr * self.weight_decay) if self.weight_decay != 0 else d
        return out

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "optimizer": "adamw",
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "state_step": self.step,
            "continues_state": bool(self.exp_avg),
        }

    def torch_optimizer(self, params: Tensors) -> torch.optim.Optimizer:
        """A real `torch.optim.AdamW` over live parameters, loaded with (copies of) this state.

        The state is cast to each parameter's dtype, as torch's optimizer keeps it: for a
        bfloat16/float16 proxy the naive loop is the literal low-precision loop (no master
        weights), which is why exact, not naive, is the reference there."""
        opt = torch.optim.AdamW(
            list(params.values()),
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            weight_decay=self.weight_decay,
        )
        if self.exp_avg:
            scalar_dtype = (
                torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            )
            for k, p in params.items():
                opt.state[p] = {
                    "step": torch.tensor(float(self.step), dtype=scalar_dtype),
                    "exp_avg": self.exp_avg[k].detach().clone().to(p),
                    "exp_avg_sq": self.exp_avg_sq[k].detach().clone().to(p),
                }
        return opt


UpdateRule = SGD | AdamW


def _master_like(moment: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A saved optimizer moment on `p`'s device, in `p`'s master precision."""
    return moment.to(device=p.device, dtype=master_dtype(p.dtype))


def make_update_rule(
    optimizer: str, params: Tensors, state: OptimizerState | None, lr: float | None
) -> UpdateRule:
    """`auto` continues AdamW when the proxy has a warm-up state and uses SGD otherwise.

    Raises `StepSizeError` when the step size (given, or the warm-up's saved next lr) is zero or
    not finite, naming the fix.
    """
    if optimizer == "auto":
        optimizer = "adamw" if state is not None else "sgd"
    if optimizer == "sgd":
        rule: UpdateRule = SGD(lr=DEFAULT_SGD_LR if lr is None else lr)
    elif optimizer == "adamw":
        rule = AdamW.from_state(state, params, lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use auto, sgd or adamw")
    check_step_size(rule.lr, saved=lr is None and isinstance(rule, AdamW) and state is not None)
    return rule


def check_step_size(lr: float, *, saved: bool = False) -> None:
    """Refuse a step size that cannot move theta (`saved`: it is the warm-up state's next lr)."""
    if math.isfinite(lr) and lr > 0:
        return
    if saved:
        why = "its warm-up schedule finished" if lr == 0 else "the saved state is broken"
        raise StepSizeError(
            f"the proxy's saved learning rate for the next step is {lr:g} ({why}): pass --eta "
            f"{SUGGESTED_ETA:g} or warm up with --fraction < 1"
        )
    raise StepSizeError(
        f"--eta {lr:g} is not a usable step size (every utility would be 0 or NaN): pass a "
        f"positive, finite --eta such as {SUGGESTED_ETA:g}"
    )
