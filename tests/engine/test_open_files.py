"""The open-file limit: raised as far as the run can use, and the jobs in flight kept under it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchgen.control.admission import (
    AUTO_CAP,
    FILES_PER_JOB,
    INITIAL,
    RESERVED_FILES,
    Admission,
    file_ceiling,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_ceiling_leaves_the_reserve_and_two_files_a_job() -> None:
    """64 files, 10 open: (64 - 10 - 32) / 2 = 11 jobs; never below 1."""
    assert file_ceiling(64, 10) == (64 - 10 - RESERVED_FILES) // FILES_PER_JOB == 11
    assert file_ceiling(20, 10) == 1
    assert file_ceiling(1_048_576, 10) > AUTO_CAP


def test_the_ceiling_lowers_auto_and_a_fixed_concurrency_alike() -> None:
    """auto's cap, its first target and a --concurrency above the ceiling all stay under it."""
    auto = Admission(ceiling=11)
    assert auto.cap == 11 and auto.limiter.total_tokens == 11 < INITIAL
    assert auto.update(0.0, submit_rate=100.0) == 11  # 2 minutes of 6,000 rpm would be 12,000
    fixed = Admission(cap=60, ceiling=11)
    assert fixed.cap == 11 and fixed.fixed
    assert Admission(cap=5, ceiling=11).cap == 5
    assert Admission(ceiling=None).cap == AUTO_CAP


def _in_a_process(soft: int, hard: int, code: str) -> Any:
    """Run ``code`` (which prints JSON) in a fresh Python whose open-file limit is ``soft``/``hard``."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


_CEILING = """
import json, logging, resource, sys
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
from batchgen.engine.open_files import in_flight_ceiling, open_file_count
concurrency = None if sys.argv[-1] == "auto" else int(sys.argv[-1])
ceiling = in_flight_ceiling(concurrency)
print(json.dumps({"ceiling": ceiling, "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                  "open": open_file_count()}))
"""


def _hard_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 20 if hard == resource.RLIM_INFINITY else hard


def test_a_low_soft_limit_is_raised_as_far_as_the_run_can_use() -> None:
    """Soft 64 under a higher hard limit: raised to what AUTO_CAP jobs need, no further."""
    hard = _hard_limit()
    if hard < 4096:
        pytest.skip(f"the hard open-file limit here is {hard}")
    found, _ = _in_a_process(64, hard, _CEILING.replace("sys.argv[-1]", "'auto'"))
    assert found["soft"] == found["open"] + RESERVED_FILES + FILES_PER_JOB * AUTO_CAP
    assert found["ceiling"] == AUTO_CAP


@pytest.mark.parametrize("concurrency", ["60", "auto"])
def test_a_low_hard_limit_lowers_the_jobs_in_flight_and_says_so(concurrency: str) -> None:
    """Hard and soft 64: nothing to raise; 60 jobs would not fit, so at most the ceiling, with a
    warning naming --concurrency when the user set it (info for auto)."""
    found, err = _in_a_process(64, 64, _CEILING.replace("sys.argv[-1]", repr(concurrency)))
    assert found["soft"] == 64
    assert found["ceiling"] == file_ceiling(64, found["open"])
    assert 5 <= found["ceiling"] < 20
    if concurrency == "60":
        assert f"WARNING the open-file limit (64, {found['open']} open already) leaves room for" in err
        assert f"not 60: --concurrency lowered to {found['ceiling']}; raise it (ulimit -n)" in err
    else:
        assert f"INFO the open-file limit (64) leaves room for {found['ceiling']} jobs in flight" in err
