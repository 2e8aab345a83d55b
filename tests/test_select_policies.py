"""Every selection policy on synthetic scores tables whose right answer is known by hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ostselect.data.sample import ImageRef, Sample, Turn
from ostselect.scores import Scores, build_scores_table
from ostselect.select import ProvenanceMismatchError, SelectionPolicy, allocate, select
from ostselect.select.provenance import check_provenance

UTIL = [0.5, 0.3, 0.3, -0.1, 0.9, 0.0, -0.5, 0.2, 0.3, 0.1]


def make_sample(i: int, *, text: str | None = None, image: bytes | None = None, **extra) -> Sample:
    q = text if text is not None else f"question {i}"
    return Sample(
        id=f"s{i}",
        turns=[
            Turn("user", q),
            Turn("assistant", f"answer number {i}" if text is None else "same"),
        ],
        images=[ImageRef(data=image)] if image is not None else [],
        extra=extra,
    )


def make_scores(utility, ids=None, tokens=None, provenance=None) -> Scores:
    ids = ids or [f"s{i}" for i in range(len(utility))]
    extra = {"tokens": tokens} if tokens is not None else None
    return Scores(build_scores_table(ids, utility, "exact", extra_columns=extra), provenance or {})


def png(color: tuple[int, int, int], size: int = 32, fmt: str = "PNG") -> bytes:
    im = Image.new("RGB", (size, size), color)
    im.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, size // 2, size // 2))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


POOL = [make_sample(i) for i in range(10)]


def test_top_percent_breaks_ties_by_pool_order():
    sel = select(make_scores(UTIL), POOL, SelectionPolicy(top="30%"))
    assert sel.kept_ids == ["s4", "s0", "s1"]  # 0.9, 0.5, then the first of three 0.3s
    assert sel.thresholds["top_k"] == 3
    assert sel.thresholds["utility_cutoff"] == 0.3
    assert sel.dropped["s2"].startswith("below top-k cutoff")
    assert set(sel.kept_ids) | set(sel.dropped) == {s.id for s in POOL}


def test_top_count_and_percent_rounding():
    assert select(make_scores(UTIL), POOL, SelectionPolicy(top=2)).kept_ids == ["s4", "s0"]
    assert SelectionPolicy(top="25%").top_count(10) == 3  # 2.5 rounds half up
    assert SelectionPolicy(top="20%").top_count(10) == 2  # no float drift to 3
    assert SelectionPolicy(top="100%").top_count(7) == 7
    assert SelectionPolicy(top=50).top_count(7) == 7
    with pytest.raises(ValueError, match="percentage"):
        SelectionPolicy(top="20 percent")
    with pytest.raises(ValueError):
        SelectionPolicy(top="120%")


def test_no_limits_keeps_every_ok_sample_in_rank_order():
    sel = select(make_scores(UTIL), POOL, SelectionPolicy())
    assert sel.kept_ids == ["s4", "s0", "s1", "s2", "s8", "s7", "s9", "s5", "s3", "s6"]


def test_drop_toxic_and_min_utility():
    sel = select(make_scores(UTIL), POOL, SelectionPolicy(drop_toxic=True))
    assert set(sel.kept_ids) == {f"s{i}" for i in range(10)} - {"s3", "s6"}
    assert sel.dropped["s3"].startswith("toxic")
    assert sel.drop_counts == {"toxic": 2}
    sel = select(make_scores(UTIL), POOL, SelectionPolicy(min_utility=0.25))
    assert sel.kept_ids == ["s4", "s0", "s1", "s2", "s8"]
    assert sel.dropped["s7"].startswith("below min_utility")


def test_all_toxic_pool_keeps_nothing():
    util = [-0.3, -0.1, -0.2]
    pool = [make_sample(i) for i in range(3)]
    sel = select(make_scores(util), pool, SelectionPolicy(top="50%", drop_toxic=True))
    assert sel.kept_ids == []
    assert sel.drop_counts == {"toxic": 3}
    assert sel.thresholds["utility_cutoff"] is None
    # Without --drop-toxic the least harmful ones are still the top.
    assert select(make_scores(util), pool, SelectionPolicy(top=1)).kept_ids == ["s1"]


def test_status_and_nan_are_never_kept():
    table = build_scores_table(
        ["s0", "s1", "s2"], [0.1, float("nan"), 0.5], "exact", status=["ok", "ok", "nonfinite"]
    )
    sel = select(Scores(table, {}), [make_sample(i) for i in range(3)], SelectionPolicy())
    assert sel.kept_ids == ["s0"]
    assert sel.dropped == {"s1": "utility is NaN", "s2": "status: nonfinite"}


def test_unscored_pool_samples_are_dropped_with_reason():
    sel = select(make_scores([0.2, 0.1], ids=["s0", "s1"]), POOL[:3], SelectionPolicy())
    assert sel.kept_ids == ["s0", "s1"]
    assert sel.dropped == {"s2": "not scored"}
    assert sel.n_scored == 2


def test_budget_prefix_and_fill():
    tokens = [50, 10, 10, 10, 60, 10, 10, 10, 10, 10]
    scores = make_scores(UTIL, tokens=tokens)
    # Rank order s4(60) s0(50) s1(10) ...: 60 fits in 100, 50 does not -> prefix stops there.
    sel = select(scores, POOL, SelectionPolicy(budget_tokens=100))
    assert sel.kept_ids == ["s4"]
    assert sel.tokens_kept == 60
    assert sel.dropped["s0"] == "token budget spent"
    # Fill mode skips s0 and keeps filling with the next best that fit.
    sel = select(scores, POOL, SelectionPolicy(budget_tokens=100, budget_fill=True))
    assert sel.kept_ids == ["s4", "s1", "s2", "s8", "s7"]
    assert sel.tokens_kept == 100
    assert sel.token_source == "scores column `tokens`"


def test_budget_smaller_than_one_sample_keeps_nothing():
    scores = make_scores(UTIL, tokens=[10] * 10)
    for fill in (False, True):
        sel = select(scores, POOL, SelectionPolicy(budget_tokens=9, budget_fill=fill))
        assert sel.kept_ids == []
        assert sel.drop_counts == {"token budget spent": 10}


def test_budget_and_top_combine():
    scores = make_scores(UTIL, tokens=[1] * 10)
    sel = select(scores, POOL, SelectionPolicy(budget_tokens=5, top=3))
    assert sel.kept_ids == ["s4", "s0", "s1"]


def test_token_fallback_counts_assistant_characters():
    pool = [Sample(id="a", turns=[Turn("user", "q" * 100), Turn("assistant", "x" * 41)])]
    sel = select(make_scores([1.0], ids=["a"]), pool, SelectionPolicy())
    assert sel.tokens_kept == 11  # ceil(41 / 4); the user turn is not supervised
    assert sel.token_source.startswith("estimate")


def balanced_pool():
    # 6 in A, 3 in B, 1 in C; utility decreasing with id, so A would win everything unbalanced.
    cats = ["A"] * 6 + ["B"] * 3 + ["C"]
    pool = [make_sample(i, category=c) for i, c in enumerate(cats)]
    util = [1.0 - 0.05 * i for i in range(10)]
    return pool, make_scores(util)


def test_balance_proportional_largest_remainder():
    pool, scores = balanced_pool()
    sel = select(scores, pool, SelectionPolicy(top=5, balance_by="category"))
    # 5 * (6, 3, 1) / 10 = 3, 1.5, 0.5 -> floors 3, 1, 0; the leftover goes to B (larger weight).
    assert sel.kept_ids == ["s0", "s1", "s2", "s6", "s7"]
    assert {k: v.kept for k, v in sel.strata.items()} == {"A": 3, "B": 2, "C": 0}
    assert sel.dropped["s3"].startswith("stratum quota full")


def test_balance_equal():
    pool, scores = balanced_pool()
    sel = select(scores, pool, SelectionPolicy(top=6, balance_by="category", balance="equal"))
    # 2 each, but C has one sample: its spare is shared by A and B (the tie goes to A, first).
    assert {k: v.kept for k, v in sel.strata.items()} == {"A": 3, "B": 2, "C": 1}
    assert sel.kept_ids == ["s0", "s1", "s2", "s6", "s7", "s9"]


def test_balance_empty_stratum_hands_its_quota_on():
    pool, _ = balanced_pool()
    util = [1.0 - 0.05 * i for i in range(10)]
    util[6:9] = [-1.0, -1.0, -1.0]  # all of B is toxic
    sel = select(
        make_scores(util), pool, SelectionPolicy(top=5, balance_by="category", drop_toxic=True)
    )
    assert {k: v.kept for k, v in sel.strata.items()} == {"A": 4, "B": 0, "C": 1}
    assert len(sel.kept_ids) == 5
    assert sel.strata["B"].eligible == 0


def test_balance_missing_field_is_its_own_stratum():
    pool = [make_sample(0, category="A"), make_sample(1), make_sample(2, category="A")]
    sel = select(make_scores([0.3, 0.2, 0.1]), pool, SelectionPolicy(top=2, balance_by="category"))
    assert set(sel.strata) == {"A", "(missing)"}
    assert sel.kept_ids == ["s0", "s1"]


def test_hash_dedup_keeps_higher_utility_and_refills():
    red = png((200, 30, 30))
    red_jpeg = png((200, 30, 30), fmt="JPEG")  # re-encoded: same average-hash
    blue = png((30, 30, 200))
    pool = [
        make_sample(0, text="Find x.", image=red),
        make_sample(1, text="Find  X.", image=red_jpeg),  # duplicate of s0 (normalised text)
        make_sample(2, text="Find x.", image=blue),  # same text, other image: not a duplicate
        make_sample(3, text="Other question"),
    ]
    scores = make_scores([0.2, 0.9, 0.5, 0.1])
    sel = select(scores, pool, SelectionPolicy(top=3, dedup="hash"))
    assert sel.kept_ids == ["s1", "s2", "s3"]
    assert sel.dropped["s0"].startswith("duplicate of s1")
    assert select(scores, pool, SelectionPolicy(top=3)).kept_ids == ["s1", "s2", "s0"]


def test_provenance_refuses_missing_ids_unless_forced():
    scores = make_scores([0.5, 0.4, 0.3], ids=["s0", "s1", "ghost"])
    with pytest.raises(ProvenanceMismatchError, match=r"1 of 3 scored ids .*ghost"):
        select(scores, POOL[:2], SelectionPolicy())
    sel = select(scores, POOL[:2], SelectionPolicy(), force=True)
    assert sel.kept_ids == ["s0", "s1"]
    assert "ghost" in sel.warnings[0]


def test_provenance_refuses_other_pool_fingerprint():
    """The message names files (what a person can check), never the fingerprints."""
    prov = {"pool_fingerprint": "abc", "pool": "data/other.jsonl"}
    scores = make_scores([0.5], ids=["s0"], provenance=prov)
    with pytest.raises(ProvenanceMismatchError) as err:
        check_provenance(scores, POOL[:1], "def", scores_path="s.parquet", pool_path="pool.jsonl")
    assert str(err.value) == (
        "scores s.parquet do not match the pool pool.jsonl: they were made on data/other.jsonl. "
        "Score this pool again, or pass --force to select anyway."
    )
    with pytest.raises(
        ProvenanceMismatchError, match=r"other\.jsonl: the pool file has changed since"
    ):
        check_provenance(scores, POOL[:1], "def", pool_path="data/other.jsonl")
    assert check_provenance(scores, POOL[:1], "abc") == []
    assert "other.jsonl" in check_provenance(scores, POOL[:1], "def", force=True)[0]


def test_selection_json_summary(tmp_path):
    sel = select(make_scores(UTIL), POOL, SelectionPolicy(top="20%", drop_toxic=True))
    import json

    data = json.loads(sel.write_json(tmp_path / "selection.json").read_text())
    assert data["kept"] == 2 and data["kept_ids"] == ["s4", "s0"]
    assert data["policy"]["top"] == "20%"
    assert data["drop_counts"] == {"toxic": 2, "below top-k cutoff": 6}


def test_allocate_known_values():
    assert allocate(5, {"A": 6, "B": 3, "C": 1}) == {"A": 3, "B": 2, "C": 0}
    assert allocate(5, {"A": 6, "B": 3, "C": 1}, at_least_one=True) == {"A": 3, "B": 1, "C": 1}
    assert allocate(6, {"A": 1, "B": 1, "C": 1}, {"A": 9, "B": 9, "C": 1}) == {
        "A": 3,
        "B": 2,
        "C": 1,
    }
    assert allocate(10, {"A": 1, "B": 1}, {"A": 2, "B": 3}) == {"A": 2, "B": 3}
    assert allocate(2, {"A": 1, "B": 1, "C": 1}, at_least_one=True) == {"A": 1, "B": 1, "C": 0}


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(0, 60),
    sizes=st.lists(st.integers(0, 15), min_size=1, max_size=6),
    at_least_one=st.booleans(),
)
def test_allocate_properties(total, sizes, at_least_one):
    names = [f"g{i}" for i in range(len(sizes))]
    weights = {n: float(s) for n, s in zip(names, sizes, strict=True)}
    cap = dict(zip(names, sizes, strict=True))
    alloc = allocate(total, weights, cap, at_least_one=at_least_one)
    assert sum(alloc.values()) == min(total, sum(sizes))
    assert all(0 <= alloc[n] <= cap[n] for n in names)
    nonempty = [n for n in names if cap[n] > 0]
    if at_least_one and total >= len(nonempty):
        assert all(alloc[n] >= 1 for n in nonempty)
    assert alloc == allocate(total, weights, cap, at_least_one=at_least_one)


@settings(max_examples=40, deadline=None)
@given(
    util=st.lists(st.sampled_from([-0.2, 0.0, 0.1, 0.1, 0.3, 0.7]), min_size=1, max_size=25),
    k=st.integers(0, 30),
)
def test_top_k_equals_a_stable_sort(util, k):
    pool = [make_sample(i) for i in range(len(util))]
    sel = select(make_scores(util), pool, SelectionPolicy(top=k))
    expected = [f"s{i}" for i in np.argsort(-np.asarray(util), kind="stable")[:k]]
    assert sel.kept_ids == expected
