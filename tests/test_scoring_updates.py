"""The shared update rules reproduce torch.optim's next step exactly (float64, CPU)."""

from __future__ import annotations

import pytest
import torch

from ostselect.proxy.api import OptimizerState
from ostselect.scoring.updates import SGD, AdamW, StepSizeError, make_update_rule


def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "b.bias": torch.randn(5, generator=g, dtype=torch.float64),
    }


def _grads(seed: int) -> dict[str, torch.Tensor]:
    return {k: v * 0.3 + 0.1 for k, v in _params(seed).items()}


def _torch_step(params, opt_factory, warm_grads, next_grads):
    """Run a real optimizer for len(warm_grads) steps, snapshot, then take one more step."""
    live = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = opt_factory(list(live.values()))
    for grads in warm_grads:
        for k, p in live.items():
            p.grad = grads[k].clone()
        opt.step()
    before = {k: p.detach().clone() for k, p in live.items()}
    state = None
    if isinstance(opt, torch.optim.AdamW) and warm_grads:
        group = opt.param_groups[0]
        state = OptimizerState(
            step=int(opt.state[live["a.weight"]]["step"].item()),
            lr=group["lr"],
            betas=group["betas"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            exp_avg={k: opt.state[p]["exp_avg"].clone() for k, p in live.items()},
            exp_avg_sq={k: opt.state[p]["exp_avg_sq"].clone() for k, p in live.items()},
        )
    for k, p in live.items():
        p.grad = next_grads[k].clone()
    opt.step()
    after = {k: p.detach().clone() for k, p in live.items()}
    return before, state, after


def test_sgd_matches_torch_bit_for_bit():
    before, _, after = _torch_step(
        _params(), lambda ps: torch.optim.SGD(ps, lr=0.05), [], _grads(1)
    )
    ours = SGD(0.05).apply(before, _grads(1))
    for k in before:
        assert torch.equal(ours[k], after[k]), k


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("warm_steps", [0, 1, 7])
def test_adamw_continues_state_bit_for_bit(weight_decay, warm_steps):
    def factory(ps):
        return torch.optim.AdamW(
            ps, lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay
        )

    warm = [_grads(10 + i) for i in range(warm_steps)]
    before, state, after = _torch_step(_params(), factory, warm, _grads(99))
    if state is None:
        rule = AdamW.from_state(
            None, before, lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay
        )
    else:
        assert state.step == warm_steps
        rule = AdamW.from_state(state, before)
    ours = rule.apply(before, _grads(99))
    for k in before:
        assert torch.equal(ours[k], after[k]), (k, (ours[k] - after[k]).abs().max())
    # theta - theta' computed directly agrees with the difference to float64 rounding.
    disp = rule.displacement(before, _grads(99))
    for k in before:
        torch.testing.assert_close(disp[k], before[k] - after[k], rtol=1e-12, atol=1e-15)


def test_rules_broadcast_over_candidates_and_vmap():
    params = _params()
    state = OptimizerState(
        step=3, lr=1e-2, exp_avg=_grads(5), exp_avg_sq={k: v.abs() for k, v in _grads(6).items()}
    )
    rule = AdamW.from_state(state, params)
    batch = {k: torch.stack([_grads(s)[k] for s in (1, 2, 3)]) for k in params}
    broadcast = rule.apply(params, batch)
    mapped = torch.func.vmap(lambda g: rule.apply(params, g))(batch)
    for i, s in enumerate((1, 2, 3)):
        single = rule.apply(params, _grads(s))
        for k in params:
            assert torch.equal(broadcast[k][i], single[k])
            torch.testing.assert_close(mapped[k][i], single[k], rtol=0, atol=1e-15)


def test_state_must_match_parameters():
    params = _params()
    state = OptimizerState(
        step=1,
        lr=1e-3,
        exp_avg={"a.weight": params["a.weight"]},
        exp_avg_sq={"a.weight": params["a.weight"]},
    )
    with pytest.raises(ValueError, match=r"b\.bias"):
        AdamW.from_state(state, params)


def test_auto_picks_adamw_only_with_state():
    params = _params()
    assert isinstance(make_update_rule("auto", params, None, 0.1), SGD)
    state = OptimizerState(step=2, lr=4e-4, exp_avg=_grads(1), exp_avg_sq=_grads(2))
    rule = make_update_rule("auto", params, state, None)
    assert isinstance(rule, AdamW) and rule.lr == 4e-4 and rule.step == 2


@pytest.mark.parametrize("optimizer", ["auto", "sgd", "adamw"])
def test_zero_or_non_finite_step_size_is_refused_with_the_fix(optimizer):
    """A finished schedule saves next lr 0: every utility would be 0, so it is refused."""
    params = _params()
    done = OptimizerState(step=9, lr=0.0, exp_avg=_grads(1), exp_avg_sq=_grads(2))
    state = done if optimizer != "sgd" else None
    if optimizer != "sgd":
        with pytest.raises(
            StepSizeError, match=r"next step is 0 \(its warm-up schedule finished\)"
        ):
            make_update_rule(optimizer, params, state, None)
    assert make_update_rule(optimizer, params, state, 5e-3).lr == 5e-3  # --eta overrides it
    for bad in (0.0, float("nan"), float("inf")):
        with pytest.raises(StepSizeError, match=r"--eta .* is not a usable step size"):
            make_update_rule(optimizer, params, state, bad)
