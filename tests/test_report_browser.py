"""Open the HTML report in headless Chromium: loads offline, cleanly, and shows its images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ostselect.report import build_report
from test_report import make_pool, make_scores_file

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian chromium not installed (`make browser` installs it)"
    ),
]


def test_report_renders_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    pool = make_pool()
    scores = make_scores_file(tmp_path / "scores.parquet", pool)
    report = build_report(scores, pool, tmp_path / "report.html", cutoff="20%", top_n=8)
    url = report.resolve().as_uri()

    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            hist = page.locator("#fig-histogram img").bounding_box()
            thumbs = page.locator("img.thumb")
            first_thumb = thumbs.first.bounding_box()
            n_thumbs = thumbs.count()
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                ".length"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()

    assert errors == []
    # Only the file itself (data: URIs are not requests that leave the page).
    assert [r for r in requests if not r.startswith("data:")] == [url]
    assert hist is not None and hist["width"] > 300 and hist["height"] > 100
    assert n_thumbs >= 10
    assert first_thumb is not None and first_thumb["width"] > 0 and first_thumb["height"] > 0
    assert broken == 0
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
