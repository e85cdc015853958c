"""The reader thread of a slide's analysis (inference/readahead.py): tiles in order, jobs first,
errors to the caller, nothing left running."""

from __future__ import annotations

import contextlib
import threading

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
