"""`JobRunner.submit`: a long job started early leaves the rest of the pool to later stages.

The benchmark starts the target's pretraining (its long pole), waits for the proxy only, and
scores with the proxy on the free worker while the target still trains. These tests check the
two properties that relies on, with plain standard-library functions as jobs.
"""

from __future__ import annotations

import math
import os
import time

import pytest

from ostselect.bench.jobs import JobRunner


def test_inline_submit_runs_at_once_and_keeps_a_failure_for_result() -> None:
    runner = JobRunner(1)
    assert runner.submit(math.sqrt, 16.0).result() == 4.0  # type: ignore[arg-type]
    failed = runner.submit(math.sqrt, -1.0)  # type: ignore[arg-type]
    assert failed.done()
    with pytest.raises(ValueError, match="math domain error"):
        failed.result()


def test_a_pending_long_job_does_not_hold_back_map_on_the_other_worker() -> None:
    runner = JobRunner(2)
    try:
        runner.map(math.sqrt, [1.0, 4.0])  # type: ignore[arg-type]  # start both workers first
        long_job = runner.submit(time.sleep, 8.0)  # type: ignore[arg-type]
        start = time.perf_counter()
        assert runner.map(math.sqrt, [9.0, 16.0, 25.0]) == [3.0, 4.0, 5.0]  # type: ignore[arg-type]
        assert not long_job.done(), "map waited for the long job"
        assert time.perf_counter() - start < 8.0
        assert long_job.result() is None
        # workers draw no progress bars into the run's log (the GGUF loader calls tqdm directly)
        assert runner.submit(os.getenv, "TQDM_DISABLE").result() == "1"  # type: ignore[arg-type]
    finally:
        runner.close()
