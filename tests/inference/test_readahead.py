"""The reader thread of a slide's analysis (inference/readahead.py): tiles in order, jobs first,
errors to the caller, nothing left running."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pytest

from inference.readahead import ReadAhead


def _names() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "tile-prefetch"]


def test_tiles_come_in_order_and_a_job_runs_on_the_reader_before_the_tiles_not_yet_read() -> None:
    events: list[str] = []
    gate = threading.Event()

    def read(plan: int) -> int:
        if plan == 2:
            gate.wait(5)  # the third tile waits until the job was submitted
        events.append(f"tile {plan}")
        return plan * 10

    ahead: ReadAhead[int, int] = ReadAhead(read, list(range(6)), depth=1)
    timings = {"read": 0.0, "wait": 0.0}
    got: list[list[int]] = []
    with contextlib.closing(ahead.batches(2, timings)) as batches:
        for _count, tiles in batches:
            got.append(tiles)
            if len(got) == 1:

                def job() -> str:
                    events.append("job")
                    return threading.current_thread().name

                done = ahead.submit(job)
                gate.set()
                assert done.result(timeout=5) == "tile-prefetch"
    assert got == [[0, 10], [20, 30], [40, 50]]
    assert events.index("job") < events.index("tile 3")
    assert not _names()


def test_a_job_error_reaches_its_future_and_jobs_after_the_close_run_in_the_caller() -> None:
    ahead: ReadAhead[int, int] = ReadAhead(lambda p: p, [1, 2, 3], depth=2)
    with contextlib.closing(ahead.batches(3, {"read": 0.0, "wait": 0.0})) as batches:
        for _ in batches:

            def broken() -> None:
                raise ValueError("crop unreadable")

            with pytest.raises(ValueError, match="crop unreadable"):
                ahead.submit(broken).result(timeout=5)
    assert not _names()
    after = ahead.submit(lambda: threading.current_thread().name)
    assert after.result(timeout=0) == threading.current_thread().name


def test_a_tile_error_is_raised_in_the_caller_and_the_thread_stops() -> None:
    def read(plan: int) -> int:
        if plan == 3:
            raise OSError("tile 3 unreadable")
        return plan

    ahead: ReadAhead[int, int] = ReadAhead(read, list(range(8)), depth=2)
    batches = ahead.batches(2, {"read": 0.0, "wait": 0.0})
    with pytest.raises(OSError, match="tile 3"), contextlib.closing(batches):
        for _ in batches:
            pass
    assert not _names()


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 5
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_idle_only_while_the_reader_waits_with_a_full_queue_or_every_tile_read() -> None:
    """What lets stage 1 take the reader's core: busy reading a tile or running a job is not
    idle; waiting with its queue full is; so is having read every tile."""
    reading, job_gate = threading.Event(), threading.Event()

    def read(plan: int) -> int:
        if plan == 1:
            reading.wait(5)  # the second tile is slow to read
        return plan

    ahead: ReadAhead[int, int] = ReadAhead(read, [0, 1, 2, 3], depth=2)
    with contextlib.closing(ahead.batches(1, {"read": 0.0, "wait": 0.0})) as batches:
        assert next(batches) == (1, [0])
        assert _eventually(lambda: ahead._busy)
        assert not ahead.idle()  # reading tile 1
        reading.set()
        assert _eventually(ahead.idle)  # tiles 1 and 2 queued: full, waiting to put tile 3
        running = ahead.submit(job_gate.wait, 5)
        assert _eventually(lambda: ahead._busy)
        assert not ahead.idle()  # running the job
        job_gate.set()
        assert running.result(timeout=5) is True
        assert [next(batches)[1] for _ in range(3)] == [[1], [2], [3]]
        assert _eventually(ahead.idle)  # every tile read and taken, no job waiting
        assert not ahead._tiles.full()
