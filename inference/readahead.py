"""One reader thread for a slide's analysis: it decodes the detector tiles ahead of the models
and, first whenever it has any, reads what the models will need next (the stage-2 crops of the
batch stage 1 has just done).

One thread for both, not a second one for the crops: on 2 cores, stage 1 runs on one torch
thread and the reader has the other core, with time to spare (40,000 px slide, no glass: tiles
14 s of reading against 21 s of stage 1). A second reading thread only fought stage 1 for the
cores (stage 1 21 -> 26 s, the crops' 6 s saved).

    ahead = ReadAhead(read_tile, plans, depth=8)
    with contextlib.closing(ahead.batches(8, timings)) as batches:
        for count, tiles in batches:
            future = ahead.submit(read_crops, ...)   # served before the next tiles
            ...
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

Plan = TypeVar("Plan")
Tile = TypeVar("Tile")

_POLL_S = 0.01  # how often a reader with a full tile queue looks again (it serves jobs meanwhile)


class _Failed:
    """A reader-thread exception, handed to the consumer to raise."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ReadAhead(Generic[Plan, Tile]):
    """Reads `read_tile(plan)` for each plan in a thread, up to `depth` tiles ahead; runs the
    jobs given to `submit` before the next tile. Start it with `batches`, stop it by closing
    that generator (contextlib.closing): the thread is joined, and jobs submitted after that
    run in the caller's thread."""

    def __init__(
        self, read_tile: Callable[[Plan], Tile], plans: Sequence[Plan], depth: int
    ) -> None:
        self._read_tile = read_tile
        self._plans = plans
        self._tiles: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._jobs: queue.Queue[tuple[Future[Any], Callable[[], Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._closed = False  # no more jobs for the thread: submit runs them itself
        self._all_read = False  # every tile read (the thread only serves jobs now)
        self._busy = False  # reading a tile or running a job

    def idle(self) -> bool:
        """The thread is waiting, not reading: its tile queue is full (or every tile is read)
        and no job waits. The models may then take its core (`Pipeline._stage1_threads`)."""
        waiting = self._all_read or self._tiles.full()
        return waiting and not self._busy and self._jobs.empty()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """`fn(*args)` on the reader thread, before any tile it has not started yet."""
        future: Future[Any] = Future()
        job = functools.partial(fn, *args)
        with self._lock:
            if not self._closed:
                self._jobs.put((future, job))
                return future
        _run(future, job)
        return future

    def batches(
        self, batch_size: int, timings: dict[str, float]
    ) -> Generator[tuple[int, list[Tile]], None, None]:
        """Per batch of `batch_size` plans: (plans in it, their tiles). Adds the time the
        thread spent reading them to timings["read"], and the time the caller waited for them
        to timings["wait"]."""
        thread = threading.Thread(target=self._produce, name="tile-prefetch", daemon=True)
        thread.start()
        try:
            for start in range(0, len(self._plans), batch_size):
                count = min(batch_size, len(self._plans) - start)
                read: list[Tile] = []
                while len(read) < count:
                    t = time.perf_counter()
                    item = self._tiles.get()
                    timings["wait"] += time.perf_counter() - t
                    if isinstance(item, _Failed):
                        raise item.exc
                    tile, read_s = item
                    timings["read"] += read_s
                    read.append(tile)
                yield count, read
        finally:
            self._stop.set()
            thread.join()

    def _produce(self) -> None:
        try:
            for plan in self._plans:
                self._serve(block=False)
                if self._stop.is_set():
                    return
                t = time.perf_counter()
                self._busy = True
                try:
                    tile = self._read_tile(plan)
                finally:
                    self._busy = False
                if not self._put((tile, time.perf_counter() - t)):
                    return
            self._all_read = True
            while not self._stop.is_set():  # every tile read: serve jobs until closed
                self._serve(block=True)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
        finally:
            with self._lock:
                self._closed = True
            self._serve(block=False)  # jobs submitted before the close still run here

    def _put(self, item: Any) -> bool:
        """Queue a tile, serving jobs while the queue is full; False once stopped."""
        while not self._stop.is_set():
            try:
                self._tiles.put_nowait(item)
                return True
            except queue.Full:
                self._serve(block=True)
        return False

    def _serve(self, block: bool) -> None:
        """Run the jobs waiting (with `block`, wait up to _POLL_S for the first)."""
        while True:
            try:
                future, job = self._jobs.get(timeout=_POLL_S) if block else self._jobs.get_nowait()
            except queue.Empty:
                return
            self._busy = True
            try:
                _run(future, job)
            finally:
                self._busy = False
            block = False


def _run(future: Future[Any], job: Callable[[], Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(job())
    except BaseException as exc:  # the caller gets it from future.result()
        future.set_exception(exc)
