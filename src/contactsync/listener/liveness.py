"""Liveness of the handler workers, and the health report built from it.

Each worker keeps two clocks (monotonic seconds):

* **beat** — its loop went round, even when the database call in it failed. A worker whose beat
  stops is hung (a handler that never returns, a database call that never answers): its
  supervisor replaces it.
* **progress** — it claimed or recorded runs. A worker without progress for ``stall_s`` is
  *stalled*, hung or failing, and ``/health`` answers 503 until it moves again: a database
  that refuses writes is seen there, while the worker backs off and retries by itself.

The backlog (pending runs and the age of the oldest, the lag) comes from the database, so it is
right for handlers running in another process (``contactsync listen --handlers-only``) too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from contactsync.db.listener import handler_runs, in_state

ERROR_CHARS = 500


@dataclass
class Liveness:
    """What one handler's worker has been doing (event loop thread only)."""

    beat_s: float
    progress_s: float
    failures: int = 0
    failing_since_s: float | None = None
    last_error: str = ""
    restarts: int = 0
    alive: bool = True

    def beat(self, now_s: float) -> None:
        self.beat_s = now_s

    def progressed(self, now_s: float) -> int:
        """Record progress; returns how many failures in a row it ends (0 when there were none)."""
        ended, self.failures, self.failing_since_s = self.failures, 0, None
        self.beat_s = self.progress_s = now_s
        return ended

    def failed(self, now_s: float, error: BaseException) -> int:
        """Record a failure of the worker's own work (not a handler's); returns the count in a row."""
        self.failures += 1
        if self.failing_since_s is None:
            self.failing_since_s = now_s
        self.last_error = f"{type(error).__name__}: {error}"[:ERROR_CHARS]
        self.beat_s = now_s
        return self.failures

    def restarted(self, now_s: float, why: str) -> None:
        self.restarts += 1
        self.last_error = why[:ERROR_CHARS]
        self.beat_s = now_s
        self.alive = True


@dataclass(frozen=True, slots=True)
class Backlog:
    """A handler's pending runs and when the oldest of them was received (epoch ms)."""

    pending: int
    oldest_received_ms: int


def backlog(engine: sa.Engine) -> dict[str, Backlog]:
    """Pending runs per handler, read from the database (the same figures as the lag metric)."""
    query = (
        sa.select(handler_runs.c.handler, sa.func.count(), sa.func.min(handler_runs.c.received_at_ms))
        .where(in_state("pending"))
        .group_by(handler_runs.c.handler)
    )
    with engine.connect() as conn:
        return {name: Backlog(int(count), int(oldest)) for name, count, oldest in conn.execute(query)}


def report(
    names: Sequence[str],
    *,
    workers: Mapping[str, Liveness] | None,
    pending: Mapping[str, Backlog] | None,
    now_s: float,
    now_ms: int,
    stall_s: float,
) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Whether every handler is healthy, and what ``/health`` shows for each.

    ``workers`` is None when handlers run in another process (only the backlog is known here);
    ``pending`` is None when the database could not be read.
    """
    healthy = True
    shown: dict[str, dict[str, Any]] = {}
    for name in names:
        entry: dict[str, Any] = {}
        if pending is not None:
            waiting = pending.get(name)
            entry["pending"] = waiting.pending if waiting else 0
            entry["lag_s"] = round(max(now_ms - waiting.oldest_received_ms, 0) / 1000, 3) if waiting else 0.0
        else:
            entry["pending"] = entry["lag_s"] = None
        worker = workers.get(name) if workers is not None else None
        if worker is None:
            entry["worker"] = "elsewhere"  # listener_run_handlers=false: another process runs it
        else:
            idle_s = now_s - worker.progress_s
            stalled = not worker.alive or idle_s > stall_s
            healthy = healthy and not stalled
            entry.update(
                worker="stalled" if stalled else "running",
                alive=worker.alive,
                since_progress_s=round(max(idle_s, 0.0), 3),
                failures_in_a_row=worker.failures,
                failing_for_s=(
                    round(now_s - worker.failing_since_s, 3) if worker.failing_since_s is not None else None
                ),
                last_error=worker.last_error or None,
                restarts=worker.restarts,
            )
        shown[name] = entry
    return healthy, shown
