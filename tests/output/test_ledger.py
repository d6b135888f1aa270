"""Tests of the ledger: writing, replay, the resume rule and the output lock."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchgen.errors import LocalWriteError, LockedError, UsageError
from batchgen.output.ledger import LedgerWriter, format_ts, parse_ts
from batchgen.output.lock import lock_output
from batchgen.output.replay import replay
from batchgen.output.resume import Poll, Reconcile, Skip, Submit, decide

T0 = 1_800_000_000.0  # a fixed wall clock for every ledger in these tests


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def write_job(writer: LedgerWriter, key: str, request_id: str = "r-1", index: int = 0) -> None:
    await writer.write(
        "submitted", key, request_id=request_id, index=index, seed=7, params={"prompt": "a cat"}, labels={}
    )


def test_format_ts_is_utc_with_milliseconds() -> None:
    """Timestamps are ISO-8601 UTC with milliseconds and a Z, and parse back exactly."""
    assert format_ts(1_700_000_000.123) == "2023-11-14T22:13:20.123Z"
    assert parse_ts("2023-11-14T22:13:20.123Z") == pytest.approx(1_700_000_000.123)


@pytest.mark.anyio
async def test_events_are_on_disk_while_the_writer_is_open(tmp_path: Path) -> None:
    """Each event is one complete line in the file as soon as write() returns, not at close."""
    path = tmp_path / "out" / "ledger.jsonl"
    writer = await LedgerWriter.open(path, clock=FakeClock())
    try:
        await write_job(writer, "k1")
        lines = read_lines(path)
        assert lines == [
            {
                "event": "submitted",
                "key": "k1",
                "ts": format_ts(T0),
                "request_id": "r-1",
                "index": 0,
                "seed": 7,
                "params": {"prompt": "a cat"},
                "labels": {},
            }
        ]
        await writer.write("completed", "k1", request_id="r-1", file="images/a.png", sha256="ab", bytes=3)
        assert [line["event"] for line in read_lines(path)] == ["submitted", "completed"]
    finally:
        await writer.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.write("failed", "k1")


@pytest.mark.anyio
async def test_writer_refuses_to_overwrite_reserved_fields(tmp_path: Path) -> None:
    """event, key and ts come from the writer; passing them as fields is a programming error."""
    async with await LedgerWriter.open(tmp_path / "ledger.jsonl") as writer:
        with pytest.raises(ValueError, match="set by the writer"):
            await writer.write("completed", "k", ts="yesterday")
    assert (tmp_path / "ledger.jsonl").read_text() == ""


@pytest.mark.anyio
async def test_paths_are_written_as_strings_and_other_objects_refused(tmp_path: Path) -> None:
    """A Path field becomes its string; an object JSON cannot hold fails the caller, not the file."""
    path = tmp_path / "ledger.jsonl"
    async with await LedgerWriter.open(path) as writer:
        await writer.write("run_started", "", manifest=tmp_path / "m.yaml")
        with pytest.raises(TypeError, match="set is not JSON serialisable"):
            await writer.write("run_started", "", settings={1, 2})
    assert [line["manifest"] for line in read_lines(path)] == [str(tmp_path / "m.yaml")]


@pytest.mark.anyio
async def test_a_started_write_survives_cancellation(tmp_path: Path) -> None:
    """A write made by a task that is being cancelled still lands whole in the ledger."""
    path = tmp_path / "ledger.jsonl"
    async with await LedgerWriter.open(path) as writer:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await write_job(writer, "k1")
        assert scope.cancel_called
    assert [line["key"] for line in read_lines(path)] == ["k1"]


class FullDisk:
    """A ledger file on a disk that fills up: the real file, until ``room`` bytes are taken;
    the write that crosses it stores what fits, then fails with ENOSPC (like a real disk)."""

    def __init__(self, real: Any, room: int) -> None:
        self.real = real
        self.room = room

    def fileno(self) -> int:
        return int(self.real.fileno())

    def write(self, data: memoryview) -> int:
        size = os.fstat(self.fileno()).st_size
        if size + len(data) <= self.room:
            return int(self.real.write(data))
        if size < self.room:
            return int(self.real.write(data[: self.room - size]))
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self.real.close()


@pytest.mark.anyio
async def test_a_write_that_fails_is_cut_back_off_and_its_request_id_kept(tmp_path: Path) -> None:
    """A full disk mid-line: LocalWriteError, the partial line is cut away (the file stays whole
    lines), the event is kept as unrecorded, and writing works again once there is room."""
    path = tmp_path / "ledger.jsonl"
    writer = await LedgerWriter.open(path, clock=FakeClock(), fsync=False)
    await write_job(writer, "k1", "r-1")
    room = path.stat().st_size + 100
    writer._file = FullDisk(writer._file, room)  # type: ignore[assignment]
    with pytest.raises(LocalWriteError) as caught:
        await write_job(writer, "k2", "r-2", index=1)
    assert str(caught.value) == f"cannot write the ledger {path}: No space left on device"
    assert path.read_bytes().endswith(b"\n") and [e["key"] for e in read_lines(path)] == ["k1"]
    assert writer.unrecorded_requests() == [("r-2", "k2")]
    assert writer.broken is caught.value
    writer._file.room = 10_000  # type: ignore[attr-defined]  # space was freed
    await write_job(writer, "k3", "r-3", index=2)
    await writer.aclose()
    assert [e["key"] for e in read_lines(path)] == ["k1", "k3"]
    assert writer.unrecorded_requests() == [("r-2", "k2")]


@pytest.mark.anyio
async def test_a_line_that_cannot_be_cut_back_stops_every_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If even the cut fails, nothing more is appended (it would glue onto the torn line); each
    refused event is kept, and replay still reads every whole line before the torn one."""
    path = tmp_path / "ledger.jsonl"
    writer = await LedgerWriter.open(path, clock=FakeClock(), fsync=False)
    await write_job(writer, "k1", "r-1")
    writer._file = FullDisk(writer._file, path.stat().st_size + 100)  # type: ignore[assignment]

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", no_truncate)
    for i in (2, 3):
        with pytest.raises(LocalWriteError):
            await write_job(writer, f"k{i}", f"r-{i}", index=i)
    await writer.aclose()
    assert writer.unrecorded_requests() == [("r-2", "k2"), ("r-3", "k3")]
    assert replay(path).keys() == {"k1"}


@pytest.mark.anyio
async def test_a_ledger_that_cannot_be_opened_is_a_local_write_error(tmp_path: Path) -> None:
    """Opening the ledger where a folder blocks its path is LocalWriteError, not a traceback."""
    (tmp_path / "ledger.jsonl").mkdir()
    with pytest.raises(LocalWriteError, match="cannot open the ledger"):
        await LedgerWriter.open(tmp_path / "ledger.jsonl")


@pytest.mark.anyio
async def test_concurrent_writes_never_interleave(tmp_path: Path) -> None:
    """Many tasks writing at once give one intact line per event."""
    path = tmp_path / "ledger.jsonl"
    async with await LedgerWriter.open(path) as writer, anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(write_job, writer, f"k{i}", f"r-{i}", i)
    state = replay(path)
    assert state.warnings == []
    assert len(state.records) == 50
    assert {r.request_id for r in state.records.values()} == {f"r-{i}" for i in range(50)}


class CountingFile:
    """The real ledger file, counting the writes that reach it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.writes = 0

    def fileno(self) -> int:
        return int(self.real.fileno())

    def write(self, data: memoryview) -> int:
        self.writes += 1
        return int(self.real.write(data))

    def close(self) -> None:
        self.real.close()


@pytest.mark.anyio
async def test_lines_that_queue_up_share_one_write_and_each_caller_waits_for_its_own(tmp_path: Path) -> None:
    """Group commit: 50 events handed in at once reach the file in fewer writes than lines,
    in the order they were handed in, and each write() returns with its line on disk."""
    path = tmp_path / "ledger.jsonl"
    writer = await LedgerWriter.open(path, clock=FakeClock())
    counting = CountingFile(writer._file)
    writer._file = counting  # type: ignore[assignment]
    on_disk_when_returned: list[bool] = []

    async def write_one(i: int) -> None:
        await write_job(writer, f"k{i}", f"r-{i}", i)
        on_disk_when_returned.append(f'"r-{i}"' in path.read_text())

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(write_one, i)
    await writer.aclose()
    assert [line["request_id"] for line in read_lines(path)] == [f"r-{i}" for i in range(50)]
    assert on_disk_when_returned == [True] * 50
    assert 1 <= counting.writes < 50


@pytest.mark.anyio
async def test_a_shared_write_that_fails_fails_every_line_in_it(tmp_path: Path) -> None:
    """When the disk fills during a write shared by several lines, every one of them is
    refused and kept as unrecorded, and the file is cut back to whole lines."""
    path = tmp_path / "ledger.jsonl"
    writer = await LedgerWriter.open(path, clock=FakeClock(), fsync=False)
    await write_job(writer, "k0", "r-0")
    writer._file = FullDisk(writer._file, path.stat().st_size + 300)  # type: ignore[assignment]
    refused: list[str] = []

    async def write_one(i: int) -> None:
        try:
            await write_job(writer, f"k{i}", f"r-{i}", i)
        except LocalWriteError:
            refused.append(f"r-{i}")

    async with anyio.create_task_group() as tg:
        for i in range(1, 21):
            tg.start_soon(write_one, i)
    await writer.aclose()
    written = [line["request_id"] for line in read_lines(path)]
    assert path.read_bytes().endswith(b"\n")
    assert sorted(written + refused) == sorted(f"r-{i}" for i in range(21))
    assert refused and sorted(rid for rid, _ in writer.unrecorded_requests()) == sorted(refused)


@pytest.mark.anyio
async def test_the_api_key_never_reaches_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing every kind of event with the key in the environment leaves no trace of it."""
    secret = "sk-test-4f1d9a2b-never-write-me"
    monkeypatch.setenv("SEGMIND_API_KEY", secret)
    path = tmp_path / "ledger.jsonl"
    async with await LedgerWriter.open(path) as writer:
        await writer.write("run_started", "", manifest="m.yaml", manifest_sha256="00", settings={"rpm": 5})
        await write_job(writer, "k1")
        await writer.write("expired", "k1", request_id="r-1")
        await writer.write("failed", "k1", request_id=None, seed=7, code=400, error="bad", retryable=False)
        await writer.write("run_finished", "", completed=0, failed=1)
    assert secret not in path.read_text("utf-8")


@pytest.mark.anyio
async def test_replay_folds_events_into_job_records(tmp_path: Path) -> None:
    """Replay gives each key its last state, times, attempts and recorded facts."""
    path = tmp_path / "ledger.jsonl"
    clock = FakeClock()
    async with await LedgerWriter.open(path, clock=clock) as writer:
        await writer.write(
            "run_started", "", manifest="m.yaml", manifest_sha256="00", settings={}, version="0"
        )
        await write_job(writer, "done", request_id="r-1", index=0)
        await write_job(writer, "again", request_id="r-2", index=1)
        clock.now += 10
        await writer.write(
            "completed", "done", request_id="r-1", seed=7, inference_time=12.5,
            file="images/a.png", sha256="ab" * 32, bytes=123,
        )  # fmt: skip
        await writer.write("expired", "again", request_id="r-2")
        await write_job(writer, "again", request_id="r-3", index=1)
        await writer.write("failed", "bad", request_id=None, seed=3, code=400, error="no", retryable=False)
    state = replay(path)
    assert state.warnings == []
    assert len(state.runs) == 1
    assert state.keys() == {"done", "again", "bad"}
    done = state.records["done"]
    assert (done.state, done.file, done.bytes, done.inference_time) == (
        "completed",
        "images/a.png",
        123,
        12.5,
    )
    assert done.submitted_at == pytest.approx(T0)
    assert done.finished_at == pytest.approx(T0 + 10)
    again = state.records["again"]
    assert (again.state, again.request_id, again.attempts, again.expirations) == ("submitted", "r-3", 2, 1)
    assert again.submitted_at == pytest.approx(T0 + 10)
    bad = state.records["bad"]
    assert (bad.state, bad.code, bad.error, bad.retryable, bad.request_id) == (
        "failed",
        400,
        "no",
        False,
        None,
    )


@pytest.mark.anyio
async def test_torn_last_line_is_ignored_then_repaired(tmp_path: Path) -> None:
    """A half-written last line is skipped by replay and cut away by the next writer."""
    path = tmp_path / "ledger.jsonl"
    async with await LedgerWriter.open(path) as writer:
        await write_job(writer, "k1")
    with path.open("ab") as f:
        f.write(b'{"event":"completed","key":"k1","ts":"2027-01-15T08:0')  # killed mid-write
    state = replay(path)
    assert state.records["k1"].state == "submitted"
    assert len(state.warnings) == 1
    assert f"{path}:2: incomplete last line ignored" in state.warnings[0]

    async with await LedgerWriter.open(path) as writer:
        await writer.write("completed", "k1", request_id="r-1", file="images/a.png", sha256="ab", bytes=1)
    assert [line["event"] for line in read_lines(path)] == ["submitted", "completed"]
    repaired = replay(path)
    assert repaired.warnings == []
    assert repaired.records["k1"].state == "completed"


@pytest.mark.anyio
async def test_whole_last_event_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    """A last line that is a complete object without its newline keeps its event."""
    path = tmp_path / "ledger.jsonl"
    async with await LedgerWriter.open(path) as writer:
        await write_job(writer, "k1")
    line = json.dumps({"event": "failed", "key": "k1", "ts": format_ts(T0), "code": 422, "retryable": False})
    with path.open("ab") as f:
        f.write(line.encode())
    assert replay(path).records["k1"].state == "failed"
    async with await LedgerWriter.open(path) as writer:
        await write_job(writer, "k2")
    assert [line["key"] for line in read_lines(path)] == ["k1", "k1", "k2"]


@pytest.mark.anyio
async def test_corrupt_middle_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    """Garbage or bad events inside the file are skipped with PATH:LINE warnings, not raised."""
    path = tmp_path / "ledger.jsonl"
    good = json.dumps({"event": "submitted", "key": "k1", "ts": format_ts(T0), "request_id": "r-1"})
    later = json.dumps({"event": "submitted", "key": "k2", "ts": format_ts(T0), "request_id": "r-2"})
    path.write_text(
        "\n".join(
            [
                good,
                "{not json",
                "[1, 2]",
                json.dumps({"event": "teleported", "key": "k1", "ts": format_ts(T0)}),
                json.dumps({"event": "completed", "ts": format_ts(T0)}),
                json.dumps({"event": "completed", "key": "k1", "ts": "soon"}),
                json.dumps({"event": "completed", "key": "k1", "ts": format_ts(T0), "file": 5}),
                json.dumps({"event": "failed", "key": "k1", "ts": format_ts(T0), "code": True}),
                "",
                later,
            ]
        )
        + "\n"
    )
    state = replay(path)
    assert state.keys() == {"k1", "k2"}
    assert state.records["k1"].state == "submitted"
    assert [w.split(": ", 1)[0] for w in state.warnings] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7, 8)]
    assert "not a JSON object" in state.warnings[0]
    assert "unknown event 'teleported'" in state.warnings[2]
    assert "without a job key" in state.warnings[3]
    assert "without a valid ts" in state.warnings[4]
    assert "completed field 'file' should be a string" in state.warnings[5]
    assert "failed field 'code' should be an integer" in state.warnings[6]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import anyio
    from batchgen.output.ledger import LedgerWriter

    async def main() -> None:
        async with await LedgerWriter.open(Path(sys.argv[1]), fsync=False) as writer:
            for i in range(1_000_000):
                params = {"p": "x" * 300}
                await writer.write("submitted", f"k{i}", request_id=f"r-{i}", index=i, params=params)
                if i == 20:
                    print("writing", flush=True)

    anyio.run(main)
    """
)


@pytest.mark.e2e
def test_ledger_of_a_process_killed_while_writing_replays_and_reopens(tmp_path: Path) -> None:
    """SIGKILL a real process in the middle of writing: replay loses at most the torn line; appends go on."""
    path = tmp_path / "ledger.jsonl"
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        proc.kill()
    state = replay(path)
    assert len(state.records) > 20
    assert all(
        w.endswith("incomplete last line ignored (a run was killed while writing it)") for w in state.warnings
    )

    async def append() -> None:
        async with await LedgerWriter.open(path) as writer:
            await write_job(writer, "after-kill")

    anyio.run(append)
    reopened = replay(path)
    assert reopened.warnings == []
    assert reopened.keys() == state.keys() | {"after-kill"}


def test_replay_of_a_missing_ledger_is_empty(tmp_path: Path) -> None:
    """A first run has no ledger: replay gives an empty state, no error."""
    state = replay(tmp_path / "nope.jsonl")
    assert (state.records, state.warnings, state.runs) == ({}, [], [])


def test_unreadable_ledger_is_a_usage_error_not_an_empty_one(tmp_path: Path) -> None:
    """A ledger path that cannot be read stops the run instead of resubmitting everything."""
    (tmp_path / "ledger.jsonl").mkdir()
    with pytest.raises(UsageError, match="cannot read the ledger"):
        replay(tmp_path / "ledger.jsonl")


# --- decide: every resume rule ------------------------------------------------------


async def ledger_with(tmp_path: Path, *events: tuple[str, str, dict[str, object]]) -> Path:
    path = tmp_path / "ledger.jsonl"
    async with await LedgerWriter.open(path, clock=FakeClock()) as writer:
        for event, key, fields in events:
            await writer.write(event, key, **fields)
    return path


def saved_image(tmp_path: Path, content: bytes = b"image bytes") -> str:
    image = tmp_path / "images" / "a.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(content)
    return hashlib.sha256(content).hexdigest()


SUBMITTED = ("submitted", "k", {"request_id": "r-1", "index": 0, "seed": 7})


def test_unknown_job_is_submitted_as_new(tmp_path: Path) -> None:
    """A job the ledger has never seen is submitted."""
    assert decide(None, out_dir=tmp_path, now=T0) == Submit("new")


@pytest.mark.anyio
async def test_completed_with_its_file_intact_is_skipped(tmp_path: Path) -> None:
    """completed + the file on disk with the recorded sha256: skip."""
    digest = saved_image(tmp_path)
    path = await ledger_with(
        tmp_path,
        SUBMITTED,
        ("completed", "k", {"request_id": "r-1", "file": "images/a.png", "sha256": digest}),
    )
    record = replay(path).get("k")
    assert decide(record, out_dir=tmp_path, now=T0 + 99_999) == Skip("completed")


@pytest.mark.anyio
async def test_completed_with_its_recorded_size_and_time_is_skipped_without_reading_it(tmp_path: Path) -> None:
    """completed with bytes and mtime_ns as the file still has them: skipped without hashing
    (content swapped behind an unchanged size and time is trusted: the documented limit);
    the same content with its time changed is hashed, and still skipped."""
    digest = saved_image(tmp_path)
    image = tmp_path / "images" / "a.png"
    stamp = image.stat().st_mtime_ns // 1000 * 1000 + 7
    os.utime(image, ns=(stamp, stamp))
    done = {"request_id": "r-1", "file": "images/a.png", "sha256": digest, "bytes": 11, "mtime_ns": stamp}
    record = replay(await ledger_with(tmp_path, SUBMITTED, ("completed", "k", done))).get("k")
    assert record is not None and record.mtime_ns == stamp
    image.write_bytes(b"IMAGE BYTES")  # same size, other bytes, time set back
    os.utime(image, ns=(stamp, stamp))
    assert decide(record, out_dir=tmp_path, now=T0) == Skip("completed")
    image.write_bytes(b"image bytes")  # the recorded bytes again, a new time: hashed, and they match
    assert decide(record, out_dir=tmp_path, now=T0) == Skip("completed")
    image.write_bytes(b"IMAGE BYTES")  # new time and other bytes: changed
    assert decide(record, out_dir=tmp_path, now=T0) == Poll("r-1", T0, recover=True)


@pytest.mark.anyio
async def test_completed_with_file_missing_or_changed_is_recovered_from_its_request(tmp_path: Path) -> None:
    """completed but the file is gone or its content differs: ask its request again, don't pay."""
    digest = saved_image(tmp_path)
    path = await ledger_with(
        tmp_path,
        SUBMITTED,
        ("completed", "k", {"request_id": "r-1", "file": "images/a.png", "sha256": digest}),
    )
    record = replay(path).get("k")
    (tmp_path / "images" / "a.png").write_bytes(b"something else")
    recover = Poll("r-1", T0, recover=True)
    assert decide(record, out_dir=tmp_path, now=T0) == recover
    (tmp_path / "images" / "a.png").unlink()
    assert decide(record, out_dir=tmp_path, now=T0) == recover


@pytest.mark.anyio
@pytest.mark.parametrize(
    "file", ["../../../etc/hostname", "/etc/hostname", "images/../../x.png", "x.png", "images", None]
)
async def test_completed_file_outside_images_is_not_done(tmp_path: Path, file: str | None) -> None:
    """A completed line whose file is not a plain path under images/ is skipped with a warning,
    even when that file exists with the recorded sha256: the job is not done."""
    outside = tmp_path / "etc" / "hostname"
    outside.parent.mkdir()
    outside.write_bytes(b"host")
    out = tmp_path / "a" / "b" / "c"
    (out / "images").mkdir(parents=True)
    path = await ledger_with(
        out,
        SUBMITTED,
        (
            "completed",
            "k",
            {"request_id": "r-1", "file": file, "sha256": hashlib.sha256(b"host").hexdigest()},
        ),
    )
    state = replay(path)
    assert [w.split(": ", 1)[1] for w in state.warnings] == [
        f"completed file {file!r} is not a path inside images/, line skipped"
    ]
    record = state.get("k")
    assert record is not None and record.state == "submitted"
    # Not done: its request is asked again (result, then history) before paying again.
    assert decide(record, out_dir=out, now=T0 + 99_999) == Poll("r-1", T0, recover=True)


@pytest.mark.anyio
async def test_completed_file_through_a_symlink_out_of_images_is_not_done(tmp_path: Path) -> None:
    """images/x.png (or a folder in images/) symlinked outside OUT/images never counts as done."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"image bytes")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "sub").symlink_to(outside)
    (out / "images" / "x.png").symlink_to(outside / "x.png")
    digest = hashlib.sha256(b"image bytes").hexdigest()
    for file in ("images/x.png", "images/sub/x.png"):
        path = await ledger_with(
            out, SUBMITTED, ("completed", "k", {"request_id": "r-1", "file": file, "sha256": digest})
        )
        record = replay(path).get("k")
        assert decide(record, out_dir=out, now=T0) == Submit("file-outside", "r-1")
        path.unlink()


def test_deeply_nested_json_line_is_a_corrupt_line_not_a_crash(tmp_path: Path) -> None:
    """A ledger line of 100,000 nested arrays is skipped like any corrupt line (no RecursionError),
    in the middle of the file and as a torn last line, and the writer still opens the file."""
    path = tmp_path / "ledger.jsonl"
    good = json.dumps({"event": "submitted", "key": "k1", "ts": format_ts(T0), "request_id": "r-1"})
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text(f"{good}\n{deep}\n{good}\n{deep}")
    state = replay(path)
    assert state.keys() == {"k1"}
    assert [w.split(": ", 1)[1] for w in state.warnings] == [
        "not a JSON object, line skipped",
        "incomplete last line ignored (a run was killed while writing it)",
    ]

    async def reopen() -> None:
        async with await LedgerWriter.open(path):
            pass

    anyio.run(reopen)
    assert path.read_text().endswith(f"{good}\n")


@pytest.mark.anyio
async def test_in_flight_within_retention_is_polled_not_resubmitted(tmp_path: Path) -> None:
    """submitted less than retention - margin ago: poll the same request id."""
    record = replay(await ledger_with(tmp_path, SUBMITTED)).get("k")
    assert record is not None
    decision = decide(record, out_dir=tmp_path, now=T0 + 3299.9, retention=3600, margin=300)
    assert decision == Poll("r-1", record.submitted_at or 0.0)
    assert decision.submitted_at == pytest.approx(T0)


@pytest.mark.anyio
async def test_in_flight_past_retention_is_recovered_before_any_resubmit(tmp_path: Path) -> None:
    """submitted retention - margin ago or more: its result, else the history's image, else submit."""
    record = replay(await ledger_with(tmp_path, SUBMITTED)).get("k")
    recover = Poll("r-1", T0, recover=True)
    assert decide(record, out_dir=tmp_path, now=T0 + 3300, retention=3600, margin=300) == recover
    assert decide(record, out_dir=tmp_path, now=T0 + 20, retention=30, margin=10) == recover


@pytest.mark.anyio
async def test_expired_event_is_recovered_first(tmp_path: Path) -> None:
    """An expired job whose resubmit was never recorded (killed in between): history first."""
    path = await ledger_with(tmp_path, SUBMITTED, ("expired", "k", {"request_id": "r-1"}))
    assert decide(replay(path).get("k"), out_dir=tmp_path, now=T0 + 1) == Poll("r-1", T0, recover=True)


@pytest.mark.anyio
async def test_a_submit_with_no_answer_is_reconciled(tmp_path: Path) -> None:
    """submitting as the last event (killed between the POST and the answer): Reconcile."""
    body = {"prompt": "a fox", "seed": 3}
    path = await ledger_with(tmp_path, ("submitting", "k", {"index": 0, "body": body}))
    state = replay(path)
    assert decide(state.get("k"), out_dir=tmp_path, now=T0 + 1) == Reconcile(body, T0)
    assert state.request_ids == set()


@pytest.mark.anyio
async def test_a_failure_after_the_submit_is_recovered_one_at_submit_is_retried(tmp_path: Path) -> None:
    """Failed retryably while following a paid request (a status outage, the result, saving
    the image): the rerun asks that request again, never pays for a new one. Failed at the
    submit itself (refused, nothing paid): submit again."""
    for n, step in enumerate(("status", "result", "download")):
        failed = (
            "failed",
            "k",
            {"request_id": "r-1", "code": 502, "error": "x", "retryable": True, "step": step},
        )
        record = replay(await ledger_with(tmp_path / str(n), SUBMITTED, failed)).get("k")
        assert decide(record, out_dir=tmp_path, now=T0) == Poll("r-1", T0, recover=True), step
    at_submit = ("failed", "k2", {"request_id": None, "code": 500, "error": "x", "retryable": True, "step": "submit"})
    record = replay(await ledger_with(tmp_path / "s", at_submit)).get("k2")
    assert decide(record, out_dir=tmp_path, now=T0) == Submit("retry", None)


@pytest.mark.anyio
async def test_cost_lines_price_request_ids(tmp_path: Path) -> None:
    cost = ("cost", "k", {"request_id": "r-1", "usd": 0.04, "status": "COMPLETED"})
    state = replay(await ledger_with(tmp_path, SUBMITTED, cost))
    assert state.costs == {"r-1": (0.04, "COMPLETED")}
    assert state.get("k") is not None and state.get("k").state == "submitted"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_permanent_failure_is_skipped_unless_retry_failed(tmp_path: Path) -> None:
    """failed with retryable false: skip; with retry_failed: submit again."""
    failed = ("failed", "k", {"request_id": "r-1", "code": 422, "error": "blocked", "retryable": False})
    record = replay(await ledger_with(tmp_path, SUBMITTED, failed)).get("k")
    assert decide(record, out_dir=tmp_path, now=T0) == Skip("failed")
    assert decide(record, out_dir=tmp_path, now=T0, retry_failed=True) == Submit("retry-failed", "r-1")


@pytest.mark.anyio
async def test_retryable_failure_is_retried(tmp_path: Path) -> None:
    """failed with retryable true: submit again, with or without retry_failed."""
    failed = ("failed", "k", {"request_id": None, "code": 502, "error": "bad gateway", "retryable": True})
    record = replay(await ledger_with(tmp_path, failed)).get("k")
    assert record is not None and record.request_id is None
    assert decide(record, out_dir=tmp_path, now=T0) == Submit("retry")


@pytest.mark.anyio
async def test_removed_jobs_are_reported_in_index_order(tmp_path: Path) -> None:
    """Ledger jobs that left the manifest are listed (not touched) for the summary."""
    path = await ledger_with(
        tmp_path,
        ("submitted", "b", {"request_id": "r-b", "index": 5}),
        ("submitted", "a", {"request_id": "r-a", "index": 2}),
        ("submitted", "kept", {"request_id": "r-k", "index": 0}),
    )
    state = replay(path)
    assert [r.key for r in state.removed(["kept", "new-job"])] == ["a", "b"]


# --- the lock -----------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from batchgen.output.lock import lock_output
    with lock_output(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
    """
)


def test_a_second_process_cannot_take_the_lock(tmp_path: Path) -> None:
    """While another process holds OUT/.lock, lock_output raises LockedError naming its pid."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(LockedError) as caught, lock_output(tmp_path):
                pass
            assert str(caught.value) == f"another batchgen run is using {tmp_path} (pid {holder.pid})"
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "released"
        finally:
            holder.kill()
    with lock_output(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_an_unusable_output_directory_is_a_usage_error(tmp_path: Path) -> None:
    """OUT that is a file (or cannot be created) is a clear UsageError, not a traceback."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with (
        pytest.raises(UsageError, match=f"cannot use {not_a_dir} as the output directory"),
        lock_output(not_a_dir),
    ):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The lock dies with its process: after SIGKILL the next run takes it at once."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        holder.kill()
    with lock_output(tmp_path):
        with pytest.raises(LockedError, match="another batchgen run"), lock_output(tmp_path):
            pass  # and it is exclusive even within one process


@pytest.mark.anyio
async def test_replay_keeps_the_runs(tmp_path: Path) -> None:
    """run_started / run_finished become the run history: manifest, settings, times, counts."""
    path = tmp_path / "ledger.jsonl"
    clock = FakeClock()
    async with await LedgerWriter.open(path, clock=clock) as writer:
        await writer.write(
            "run_started", "", manifest="/m.yaml", manifest_sha256="aa", settings={"rpm": 5}, version="1"
        )
        clock.now += 60
        await writer.write("run_finished", "", completed=3, requests=9, wall_time=60.0)
        clock.now += 100
        await writer.write(
            "run_started", "", manifest="/m.yaml", manifest_sha256="bb", settings={}, version="1"
        )
    history = replay(path).runs
    assert [(r.manifest_sha256, r.started_at, r.finished_at) for r in history] == [
        ("aa", T0, T0 + 60),
        ("bb", T0 + 160, None),
    ]
    assert history[0].settings == {"rpm": 5} and history[0].counts == {
        "completed": 3,
        "requests": 9,
        "wall_time": 60.0,
    }
    assert history[1].counts is None


@pytest.mark.anyio
async def test_the_writer_folds_what_it_wrote_into_a_state_as_replay_would(tmp_path: Path) -> None:
    """on_write=state.apply keeps a replayed state current: it ends equal to replaying the file,
    and a line the disk refused is not folded in."""
    path = tmp_path / "ledger.jsonl"
    clock = FakeClock()
    async with await LedgerWriter.open(path, clock=clock) as writer:
        await writer.write("run_started", "", manifest="m.yaml", manifest_sha256="00", settings={}, version="0")
        await write_job(writer, "done", request_id="r-1", index=0)
        await writer.write("run_finished", "", completed=0)
    state = replay(path)
    async with await LedgerWriter.open(path, clock=clock, fsync=False, on_write=state.apply) as writer:
        clock.now += 5
        await writer.write("run_started", "", manifest="m.yaml", manifest_sha256="00", settings={}, version="0")
        await writer.write(
            "completed", "done", request_id="r-1", seed=7, inference_time=1.5,
            file="images/a.png", sha256="ab" * 32, bytes=3,
        )  # fmt: skip
        await write_job(writer, "late", request_id="r-2", index=1)
        writer._file = FullDisk(writer._file, path.stat().st_size)  # type: ignore[assignment]
        with pytest.raises(LocalWriteError):
            await writer.write("failed", "late", request_id="r-2", code=500, error="x", retryable=True)
    assert state == replay(path)
    assert state.records["done"].state == "completed" and state.records["late"].state == "submitted"
    assert len(state.runs) == 2 and state.runs[-1].finished_at is None
