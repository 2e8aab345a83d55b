"""A proxy that learned nothing must be called out, not turned into a ranking.

Units: `scores.untrained_proxy` on hand-made utilities and warm-up records, and
`proxy.warmup.loss_not_lowered`. End to end: a tiny random proxy warmed up at a learning rate too
small to move it makes `ost warmup`, `ost score` and `ost report` warn; the same proxy warmed up
at a useful rate does not (so the warning can fail).
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data import write_samples
from ostselect.proxy.warmup import WARMUP_FALL, loss_not_lowered
from ostselect.scores import UNIFORM_CV, ranking_alerts, untrained_proxy
from test_scoring_proxies import samples


def test_nearly_uniform_positive_utilities_are_flagged():
    rng = np.random.default_rng(0)
    u = 0.03 + 0.001 * rng.standard_normal(200)  # std/mean ~ 0.033, every sample "helps"
    msg = untrained_proxy(u, {})
    assert msg is not None and "nearly uniform" in msg
    assert f"< {UNIFORM_CV}" in msg


def test_spread_or_toxic_utilities_are_not_flagged():
    rng = np.random.default_rng(0)
    assert untrained_proxy(0.03 + 0.01 * rng.standard_normal(200).clip(-2.9, 2.9), {}) is None
    toxic = np.full(50, 0.03)
    toxic[0] = -0.001  # one toxic sample: the proxy tells samples apart
    assert untrained_proxy(toxic, {}) is None
    assert untrained_proxy(np.full(5, 0.03), {}) is None  # too few samples to judge


def test_warmup_that_did_not_lower_the_loss_is_flagged():
    spread = np.linspace(-1, 1, 50)
    stuck = {"proxy_warmup": {"steps": 2, "loss_before": 6.557, "loss_after": 6.558}}
    msg = untrained_proxy(spread, stuck)
    assert msg is not None and "6.557 -> 6.558 over 2 steps" in msg
    learned = {"proxy_warmup": {"steps": 13, "loss_before": 2.2, "loss_after": 1.5}}
    assert untrained_proxy(spread, learned) is None
    # older records carry only the first/last few batches' mean
    assert untrained_proxy(spread, {"proxy_warmup": {"loss_head": 2.0, "loss_tail": 2.0}})


def test_loss_not_lowered_threshold_and_missing_values():
    assert loss_not_lowered(1.0, WARMUP_FALL + 1e-6)
    assert not loss_not_lowered(1.0, WARMUP_FALL - 1e-6)
    assert not loss_not_lowered(None, 1.0)
    assert not loss_not_lowered(1.0, None)
    assert not loss_not_lowered(0.0, 0.0)


def test_ranking_alerts_lists_every_reason_once():
    assert ranking_alerts(np.zeros(20), {}) == [
        "every one of the 20 scored samples has utility 0: the step changed nothing (a zero "
        "step size?), so the ranking is only pool order"
    ]
    assert ranking_alerts(np.linspace(-1, 1, 20), {}) == []


@pytest.mark.slow
@pytest.mark.parametrize(("lr", "warned"), [(1e-9, True), (3e-2, False)])
def test_cli_warns_about_a_proxy_whose_warmup_did_nothing(tmp_path, lr, warned):
    from ostselect.proxy import build_tiny_proxy

    proxy = build_tiny_proxy(tmp_path / "proxy", arch="qwen2-vl", size="tiny")
    pool, anchors = tmp_path / "pool.jsonl", tmp_path / "anchors.jsonl"
    write_samples(samples(12, "p", 1), pool)
    write_samples(samples(4, "a", 2), anchors)
    runner = CliRunner()
    warm = tmp_path / "warm"
    res = runner.invoke(
        app,
        [
            *("warmup", "--proxy", str(proxy), "--pool", str(pool), "--out", str(warm)),
            *("--fraction", "1.0", "--batch-size", "4", "--epochs", "3", "--lr", str(lr)),
        ],
    )
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert ("did not lower the loss of its own samples" in flat) is warned, flat
    scores = tmp_path / "scores.parquet"
    res = runner.invoke(
        app,
        [
            *("score", "--proxy", str(warm), "--pool", str(pool), "--anchors", str(anchors)),
            *("--out", str(scores), "--mode", "exact", "--optimizer", "sgd", "--eta", "0.01"),
        ],
    )
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert ("the proxy looks untrained" in flat) is warned, flat
    report = tmp_path / "report.html"
    res = runner.invoke(
        app, ["report", "--pool", str(pool), "--scores", str(scores), "--out", str(report)]
    )
    assert res.exit_code == 0, res.output
    assert ("the proxy looks untrained" in report.read_text()) is warned
