"""Anchor sets: proportional allocation, one per stratum, seeded draws, overlaps, the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ostselect.cli import app
from ostselect.data import iter_samples, write_samples
from ostselect.data.sample import Sample, Turn
from ostselect.proxy.anchors import build_anchor_set, find_overlaps


def flat(res) -> str:
    """CLI output with Rich's line wrapping undone."""
    return " ".join(res.output.split())


def heldout(counts: dict[str, int], prefix: str = "h") -> list[Sample]:
    out = []
    for cat, n in counts.items():
        for j in range(n):
            out.append(
                Sample(
                    id=f"{prefix}-{cat}-{j}",
                    turns=[Turn("user", f"{cat} problem {j}"), Turn("assistant", f"answer {j}")],
                    extra={"topic": cat},
                )
            )
    return out


def test_proportional_with_one_per_stratum():
    samples = heldout({"easy": 300, "medium": 150, "hard": 45, "olympiad": 5})
    anchors = build_anchor_set(samples, 100, stratify_by="topic", seed=0)
    # 100 * (300, 150, 45, 5) / 500 = 60, 30, 9, 1 exactly.
    assert anchors.strata == {"easy": 60, "hard": 9, "medium": 30, "olympiad": 1}
    drawn = Counter(s.extra["topic"] for s in anchors.samples)
    assert drawn == Counter(anchors.strata)
    assert len(set(anchors.ids)) == 100
    # Held-out order is kept.
    order = {s.id: i for i, s in enumerate(samples)}
    assert [order[i] for i in anchors.ids] == sorted(order[i] for i in anchors.ids)


def test_small_strata_still_get_one():
    samples = heldout({"a": 97, "b": 1, "c": 2})
    anchors = build_anchor_set(samples, 10, stratify_by="topic")
    # Proportional would give b and c nothing (0.1, 0.2); each gets one, taken from a.
    assert anchors.strata == {"a": 8, "b": 1, "c": 1}


def test_size_beyond_heldout_takes_everything():
    samples = heldout({"a": 3, "b": 2})
    anchors = build_anchor_set(samples, 50, stratify_by="topic")
    assert sorted(anchors.ids) == sorted(s.id for s in samples)


def test_deterministic_and_seed_sensitive():
    samples = heldout({"a": 200, "b": 100})
    one = build_anchor_set(samples, 30, stratify_by="topic", seed=7).ids
    assert one == build_anchor_set(samples, 30, stratify_by="topic", seed=7).ids
    assert one != build_anchor_set(samples, 30, stratify_by="topic", seed=8).ids


def test_unstratified_and_missing_field():
    samples = [*heldout({"a": 10}), Sample("x", [Turn("user", "q"), Turn("assistant", "a")])]
    assert build_anchor_set(samples, 4).strata == {"(all)": 4}
    strata = build_anchor_set(samples, 4, stratify_by="topic").strata
    assert strata["(missing)"] == 1 and sum(strata.values()) == 4


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    size=st.integers(0, 120),
    seed=st.integers(0, 3),
)
def test_allocation_properties(sizes, size, seed):
    samples = heldout({f"t{i}": n for i, n in enumerate(sizes)})
    anchors = build_anchor_set(samples, size, stratify_by="topic", seed=seed)
    assert len(anchors.samples) == min(size, len(samples))
    assert sum(anchors.strata.values()) == len(anchors.samples)
    if size >= len(sizes):
        assert all(v >= 1 for v in anchors.strata.values())
    assert all(anchors.strata[f"t{i}"] <= n for i, n in enumerate(sizes))


def test_overlaps_by_id_and_content():
    anchors = heldout({"a": 3}, prefix="h")
    pool = heldout({"b": 2}, prefix="p")
    pool.append(anchors[0])  # same id (and content)
    twin = Sample("p-twin", list(anchors[1].turns), extra={"topic": "z"})  # same content only
    pool.append(twin)
    report = find_overlaps(anchors, pool)
    assert [(o.anchor_id, o.pool_id, o.kind) for o in report.overlaps] == [
        ("h-a-0", "h-a-0", "id+content"),
        ("h-a-1", "p-twin", "content"),
    ]
    assert not find_overlaps(anchors, heldout({"b": 2}, prefix="p"))


def test_anchor_cli_writes_file_strata_and_overlaps(tmp_path):
    held = heldout({"easy": 20, "hard": 10})
    held_path, pool_path = tmp_path / "heldout.jsonl", tmp_path / "pool.jsonl"
    write_samples(held, held_path)
    write_samples(heldout({"x": 5}, prefix="p") + held[:2], pool_path)
    out = tmp_path / "anchors" / "anchors.jsonl"
    args = ["anchor", "--from", str(held_path), "--size", "9", "--stratify-by", "topic"]
    res = CliRunner().invoke(
        app, [*args, "--seed", "3", "--out", str(out), "--pool", str(pool_path)]
    )
    assert res.exit_code == 0, res.output
    got = [s.id for s in iter_samples(out)]
    strata = json.loads(out.with_name("anchors.jsonl.strata.json").read_text())
    assert strata["strata"] == {"easy": 6, "hard": 3} and strata["seed"] == 3
    assert strata["ids"] == got and len(got) == 9
    expected_overlaps = {"h-easy-0", "h-easy-1"} & set(got)
    for sid in expected_overlaps:
        assert sid in flat(res)
    if not expected_overlaps:
        assert "no anchor overlaps" in flat(res)


def test_anchor_cli_clear_errors(tmp_path):
    res = CliRunner().invoke(app, ["anchor", "--from", str(tmp_path / "nope.jsonl"), "--out", "a"])
    assert res.exit_code == 2 and "does not exist" in flat(res)


@pytest.mark.parametrize("seed", [0, 1])
def test_overlap_reported_when_anchor_drawn_from_pool(tmp_path, seed):
    held = heldout({"a": 4})
    held_path = tmp_path / "h.jsonl"
    write_samples(held, held_path)
    out = tmp_path / "anc.jsonl"
    args = ["anchor", "--from", str(held_path), "--size", "4", "--seed", str(seed)]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--pool", str(held_path)])
    assert res.exit_code == 0, res.output
    assert "4 anchors overlap the pool" in flat(res)
