"""Reviewers editing their cells over HTTP, as the review page does (PATCH with the version
they read), and the check that every acknowledged edit is in the database.

Used by the fault tests (tests/analysis/test_faults.py) and the load benchmark
(benchmarks/load_review.py). A reviewer retries a refusal the server says to retry (503) and a
dropped connection with the same version; a 409 after such a retry means the earlier attempt
did commit (the cell shows our values): the edit is then counted as `late`, not acknowledged.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import requests

from inference.types import BETHESDA_CLASSES

CLASSES = BETHESDA_CLASSES


@dataclass
class EditLog:
    acked: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)  # cell, version
    late: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged requests
    statuses: Counter[int] = field(default_factory=Counter)  # every answer
    errors: list[str] = field(default_factory=list)  # anything unexpected
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _retry_later(log: EditLog, give_up_at: float, error: str) -> bool:
    """After a failed attempt: pause and say retry while there is time left, else log the error."""
    if time.monotonic() > give_up_at:
        with log.lock:
            log.errors.append(error)
        return False
    with log.lock:
        log.retries += 1
    time.sleep(0.2)
    return True


def reviewer(
    *,
    base_url: str,
    token: str,
    cells: list[int],
    stop_at: float,
    log: EditLog,
    seed: int,
    give_up_at: float | None = None,
) -> None:
    rnd = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    version = dict.fromkeys(cells, 1)
    step = dict.fromkeys(cells, 0)
    give_up_at = give_up_at or stop_at + 30
    while time.monotonic() < stop_at:
        cell = rnd.choice(cells)
        step[cell] += 1
        values = {"current_class": rnd.choice(CLASSES), "x": 10 + step[cell] % 5000}
        while True:
            started = time.monotonic()
            try:
                response = session.patch(
                    f"{base_url}/api/cells/{cell}/",
                    json={"version": version[cell], **values},
                    timeout=30,
                )
            except requests.RequestException as exc:
                with log.lock:
                    log.statuses[0] += 1
                if _retry_later(log, give_up_at, f"cell {cell}: {type(exc).__name__}"):
                    continue
                break
            elapsed = time.monotonic() - started
            with log.lock:
                log.statuses[response.status_code] += 1
            if response.status_code == 200:
                body = response.json()
                version[cell] = body["version"]
                with log.lock:
                    log.acked.append((cell, body["version"], values))
                    log.latencies.append(elapsed)
                break
            if response.status_code == 503 and response.json().get("code") == (
                "database_unavailable"
            ):
                if _retry_later(log, give_up_at, f"cell {cell}: still 503 at the end"):
                    continue
                break
            if response.status_code == 409:
                current = response.json()["current"]
                version[cell] = current["version"]
                if all(current[k] == v for k, v in values.items()):
                    with log.lock:  # our earlier attempt committed; its answer was lost
                        log.late.append((cell, current["version"], values))
                else:
                    with log.lock:
                        log.errors.append(f"cell {cell}: 409 with someone else's values")
                break
            with log.lock:
                log.errors.append(f"cell {cell}: {response.status_code} {response.text[:300]}")
            break


def run_reviewers(
    *, base_url: str, seeded: dict[str, Any], seconds: float, log: EditLog
) -> list[threading.Thread]:
    stop_at = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=reviewer,
            kwargs={
                "base_url": base_url,
                "token": r["token"],
                "cells": r["cells"],
                "stop_at": stop_at,
                "log": log,
                "seed": i,
            },
            daemon=True,
        )
        for i, r in enumerate(seeded["reviewers"])
    ]
    for t in threads:
        t.start()
    return threads


def lost_edits(database_url: str, log: EditLog) -> list[str]:
    """Every acknowledged (and late) edit must be a revision with its values; every cell's
    version must count its revisions (nothing overwritten without a trace)."""
    problems: list[str] = []
    edits = log.acked + log.late
    cells = sorted({cell for cell, _, _ in edits})
    with psycopg.connect(database_url) as conn:
        revisions = {
            (cell, version): after
            for cell, version, after in conn.execute(
                "SELECT cell_id, version, after FROM review_cellrevision WHERE cell_id = ANY(%s)",
                (cells,),
            )
        }
        for cell, version, values in edits:
            after = revisions.get((cell, version))
            if after is None or any(after[k] != v for k, v in values.items()):
                problems.append(f"cell {cell} v{version}: {values} not in the database ({after})")
        for cell, version, count in conn.execute(
            "SELECT c.id, c.version, (SELECT count(*) FROM review_cellrevision r "
            "WHERE r.cell_id = c.id) FROM review_cell c WHERE c.id = ANY(%s)",
            (cells,),
        ):
            if version != count + 1:
                problems.append(f"cell {cell}: version {version} but {count} revisions")
    return problems


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
