"""The report: self-contained HTML (nothing external), every section, Markdown + PNGs."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ostselect.data.sample import ImageRef, Sample, Turn
from ostselect.report import build_report
from ostselect.scores import build_scores_table, degenerate_utilities, read_scores, write_scores
from ostselect.select import ProvenanceMismatchError

CATS = ["geometry", "algebra", "counting"]


def shape_png(i: int) -> bytes:
    """A 96x96 figure that differs per sample (a shape, a colour), to eyeball thumbnails."""
    rng = np.random.default_rng(i)
    im = Image.new("RGB", (96, 96), "white")
    d = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in rng.integers(20, 220, 3))
    box = [int(v) for v in (10 + rng.integers(0, 20), 10 + rng.integers(0, 20), 70, 80)]
    (d.ellipse if i % 2 else d.rectangle)(box, outline=colour, width=4)
    d.text((40, 40), str(i), fill=(0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def make_pool(n: int = 40) -> list[Sample]:
    pool = []
    for i in range(n):
        q = f"<image>\nHow many sides does shape {i} have? Explain step by step."
        if i == 3:
            q = "<image>\nIs <script>alert(1)</script> & <b>bold</b> escaped?"
        a = f"The figure shows shape {i}. " + ("It has four sides. " * (1 + i % 5)) + "Answer: 4"
        pool.append(
            Sample(
                id=f"q{i:03d}",
                turns=[Turn("user", q), Turn("assistant", a)],
                images=[ImageRef(data=shape_png(i))] if i % 7 else [],
                extra={"category": CATS[i % 3], "difficulty": i % 4},
            )
        )
    return pool


def make_scores_file(path: Path, pool: list[Sample]) -> Path:
    rng = np.random.default_rng(0)
    n = len(pool)
    util = rng.normal(0.02, 0.03, n)
    util[3] = 0.2  # the sample with HTML in its question is in the top gallery
    loss = 2.0 + rng.normal(0, 0.4, n) - 5 * util
    extra = {
        "loss": loss.tolist(),
        "tokens": [len(s.assistant_text) // 4 for s in pool],
        "utility[geometry]": (util + rng.normal(0, 0.01, n)).tolist(),
        "utility[algebra]": (util * 0.5 + rng.normal(0, 0.01, n)).tolist(),
    }
    table = build_scores_table([s.id for s in pool], util, "exact", extra_columns=extra)
    return write_scores(
        table,
        path,
        {
            "proxy": "tiny-qwen2-vl",
            "eta": 0.01,
            "seed": 0,
            "scorer": "test",
            "cost": {"wall_s": 0.0},
        },
    )


@pytest.fixture
def inputs(tmp_path):
    pool = make_pool()
    return pool, make_scores_file(tmp_path / "scores.parquet", pool)


def test_html_is_self_contained_and_complete(tmp_path, inputs):
    pool, scores = inputs
    out = build_report(scores, pool, tmp_path / "r" / "report.html", cutoff="20%", top_n=6)
    html = out.read_text()
    # Nothing is fetched: every src/href is a data URI, no scripts, no stylesheets by link.
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith("data:") for r in refs)
    assert "<script" not in html.replace("&lt;script", "") and "<link" not in html
    assert not re.search(r"url\(\s*['\"]?(?!data:)", html)
    assert "@import" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # user text is escaped
    # Sections.
    assert 'id="fig-histogram"' in html and 'id="fig-scatter"' in html and 'id="fig-groups"' in html
    assert "By category" in html and "By difficulty" in html and "By anchor group" in html
    assert html.count('<article class="card') == 6 + 12
    assert html.count('class="thumb"') >= 10
    assert "tiny-qwen2-vl" in html and "kept at cutoff 20%" in html
    assert 'id="fig-coverage"' in html and "Coverage by anchor group" in html
    assert html.count("data:image/png;base64,") == 4


def test_cutoff_count_marks_the_right_samples(tmp_path, inputs):
    pool, scores = inputs
    build_report(scores, pool, tmp_path / "r.html", cutoff=8)
    html = (tmp_path / "r.html").read_text()
    s = read_scores(scores)
    eighth = float(np.sort(s.utility)[::-1][7])
    assert f"8  (≥ {eighth:.3g})" in html


def test_report_without_optional_columns_or_images(tmp_path):
    pool = [
        Sample(id=f"t{i}", turns=[Turn("user", f"q{i}"), Turn("assistant", f"a{i}")])
        for i in range(5)
    ]
    table = build_scores_table([s.id for s in pool], [0.3, -0.1, 0.2, 0.0, -0.4], "loss")
    scores = write_scores(
        table, tmp_path / "s.parquet", {"scorer": "test", "cost": {"wall_s": 0.0}}
    )
    html = build_report(scores, pool, tmp_path / "r.html", top_n=2, bottom_n=2).read_text()
    assert 'id="fig-scatter"' not in html and "By anchor group" not in html
    assert html.count("no image") == 4
    assert "2 (40.0%)" in html  # toxic count


def test_report_refuses_ids_missing_from_pool_unless_forced(tmp_path, inputs):
    pool, scores = inputs
    with pytest.raises(ProvenanceMismatchError, match=r"10 of 40 scored ids are not in the pool"):
        build_report(scores, pool[:30], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    html = build_report(scores, pool[:30], tmp_path / "r.html", force=True).read_text()
    assert html.index("forced past a provenance mismatch: 10 of 40 scored ids") < html.index("Top ")


def test_report_cli_refuses_another_pools_scores_like_select(tmp_path, inputs):
    """Same refusal, same message (but for the verb), same --force as `ost select`."""
    from typer.testing import CliRunner

    from ostselect.cli import app
    from ostselect.data import write_samples

    pool = [s for s in inputs[0] if s.images]  # usable samples only: every scored id is there
    pool_path = tmp_path / "pool.jsonl"
    write_samples(pool, pool_path)
    table = build_scores_table([s.id for s in pool], np.linspace(1, 0, len(pool)), "exact")
    prov = {
        "pool_fingerprint": "0" * 64,
        "pool": "elsewhere/pool.jsonl",
        "scorer": "test",
        "cost": {"wall_s": 0.0},
    }
    scores = write_scores(table, tmp_path / "scores.parquet", prov)
    common = ["--pool", str(pool_path), "--scores", str(scores)]
    out = tmp_path / "r.html"
    report = CliRunner().invoke(app, ["report", *common, "--out", str(out)])
    select = CliRunner().invoke(app, ["select", *common, "--out", str(tmp_path / "sub")])
    assert report.exit_code == select.exit_code == 2 and not out.exists()
    said = " ".join(report.output.split())
    assert said == " ".join(select.output.split()).replace("to select anyway", "to report anyway")
    assert "they were made on elsewhere/pool.jsonl" in said and "0" * 64 not in said
    forced = CliRunner().invoke(app, ["report", *common, "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "forced past a provenance mismatch" in out.read_text()


@pytest.mark.parametrize(("utility", "flag"), [(0.0, "has utility 0"), (0.3, "same utility")])
def test_report_flags_utilities_that_rank_nothing(tmp_path, utility, flag):
    pool = make_pool(6)
    table = build_scores_table([s.id for s in pool], [utility] * 6, "exact")
    scores = write_scores(
        table, tmp_path / "s.parquet", {"scorer": "test", "cost": {"wall_s": 0.0}}
    )
    html = build_report(scores, pool, tmp_path / "r.html").read_text()
    assert 'class="alert"' in html and flag in html and "ranking is only pool order" in html
    assert degenerate_utilities([0.1, 0.3, float("nan")]) is None


def test_markdown_writes_pngs_beside_it(tmp_path, inputs):
    pool, scores = inputs
    out = build_report(scores, pool, tmp_path / "rep.md", cutoff="25%", format="md", top_n=3)
    text = out.read_text()
    assets = tmp_path / "rep_files"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all((tmp_path / link).is_file() for link in links)
    assert (assets / "histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert any(link.endswith(".jpg") for link in links)
    assert "## By anchor group" in text and "## Provenance" in text


def test_report_from_pool_file_via_cli(tmp_path, inputs):
    from typer.testing import CliRunner

    from ostselect.cli import app
    from ostselect.data import write_samples

    pool = [s for s in inputs[0] if s.images]  # as a file, image-less samples are rejects
    scores = make_scores_file(tmp_path / "usable.parquet", pool)
    pool_path = tmp_path / "pool.jsonl"
    write_samples(pool, pool_path)
    out = tmp_path / "rep.html"
    args = ["report", "--pool", str(pool_path), "--scores", str(scores), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--cutoff", "20%"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert html.count('class="thumb"') >= 10 and "report: pool fingerprint" in html
    bad = CliRunner().invoke(
        app, ["report", "--pool", str(pool_path), "--scores", str(scores), "--cutoff", "lots"]
    )
    assert bad.exit_code == 2 and "--cutoff" in bad.output


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_hidden_tags_on_cards_and_alerts_first(tmp_path, fmt):
    """Benchmarks show each card's evaluation-only label (marked as such) and open with alerts."""
    pool = make_pool(20)
    scores = make_scores_file(tmp_path / "s.parquet", pool)
    hidden = {s.id: ("misread" if i % 4 == 0 else "clean") for i, s in enumerate(pool)}
    out = build_report(
        scores,
        pool,
        tmp_path / f"r.{fmt}",
        cutoff="20%",
        top_n=4,
        bottom_n=4,
        format=fmt,
        hidden_tags=hidden,
        hidden_label="noise (hidden; benchmark only)",
        alerts=["Competence gate failed: clean-only"],
    )
    text = out.read_text()
    assert text.index("Competence gate failed") < text.index("Top ")  # before any section
    if fmt == "html":
        assert 'class="alert"' in text
        assert text.count('class="tag hidden"') == 8  # every top and bottom card
        assert "noise (hidden; benchmark only): misread" in text
    else:
        assert "`hidden label: misread`" in text
    plain = build_report(scores, pool, tmp_path / f"p.{fmt}", format=fmt).read_text()
    assert 'class="tag hidden"' not in plain and "hidden label" not in plain
    assert "Competence gate" not in plain
