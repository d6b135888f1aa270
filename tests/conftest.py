"""Shared fixtures: anyio on asyncio (aiofiles is asyncio-only) or virtual time; real emulator
processes; the batchgen logger captured."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clock import inline_worker_threads, virtual_backend
from tests.support.processes import EmulatorProcess


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Every async test runs on asyncio."""
    return "asyncio"


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> object:
    """The ``anyio_backend`` of a test on virtual time, worker-thread calls inline (support/clock.py)."""
    inline_worker_threads(monkeypatch)
    return virtual_backend()


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Factory: ``start(*cli_args) -> base_url`` of a real ``batchgen emulator`` subprocess of its own.

    Each call starts ``python -m batchgen emulator --host 127.0.0.1 --port <free port>
    *cli_args`` (e.g. ``"--api-key", "k"``), waits until ``/_emulator/stats`` answers
    and returns ``http://127.0.0.1:<port>``. Every process started is terminated when
    the test ends. For settings ``POST /_emulator/config`` can change, use
    ``emulator_server``: it costs no process start.
    """
    started: list[EmulatorProcess] = []

    def start(*cli_args: str, timeout: float = 20.0) -> str:
        emulator = EmulatorProcess(cli_args, tmp_path)
        started.append(emulator)
        return emulator.start(timeout=timeout)

    yield start
    for emulator in started:
        emulator.stop()


# The session's shared emulator: 64 px images, everything else its defaults.
SHARED_EMULATOR_ARGS = ("--image-size", "64")


@pytest.fixture(scope="session")
def _shared_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One ``batchgen emulator`` process for the whole session, started when a test first needs it."""
    emulator = EmulatorProcess(SHARED_EMULATOR_ARGS, tmp_path_factory.mktemp("emulator"))
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator_server(_shared_emulator: EmulatorProcess) -> Callable[..., str]:
    """Factory: ``use(**settings) -> base_url`` of the session's emulator process, reset for this test.

    ``settings`` are what ``POST /_emulator/config`` takes (``time_scale=0.01``,
    ``workers=4``, ``credits=5``, ...). The reset (``POST /_emulator/reset``) leaves the
    process as a fresh one started with ``SHARED_EMULATOR_ARGS``: no jobs, counters,
    request log or history rows, so a test's figures are its own.
    """

    def use(**settings: Any) -> str:
        return _shared_emulator.reset(**settings)

    return use


@pytest.fixture
def batchgen_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the `batchgen` logger even if a CLI run in this process stopped propagation."""
    logger = logging.getLogger("batchgen")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old)
