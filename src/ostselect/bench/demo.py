"""Run a benchmark preset end to end and write its outputs (`ost bench run`, `ost demo`).

The working files (generated data, checkpoints, scores) go to `work_dir`; the deliverables
(results.json, results.md, plots, the OST report) go to `out_dir`, so the committed
`docs/results/` holds only what a reader needs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ostselect.bench.config import BenchConfig
from ostselect.bench.protocol import Log, run_benchmark
from ostselect.bench.results import write_results


def run_and_write(
    config: BenchConfig,
    out_dir: str | Path,
    *,
    work_dir: str | Path | None = None,
    command: str | None = None,
    log: Log | None = None,
    keep_work: bool = True,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run `config` and write its results; returns (results, written paths)."""
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out / "work"
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = run_benchmark(config, work, log=log)
    results["command"] = command
    results["started"] = started
    paths = write_results(results, out)
    report = work / "report.html"
    if report.exists() and work.resolve() != out.resolve():
        shutil.copy2(report, out / "report.html")
        paths["report"] = out / "report.html"
    if not keep_work and work.resolve() != out.resolve():
        shutil.rmtree(work, ignore_errors=True)
    return results, paths
