"""Background work of the API process: manual runs, processed chunk by chunk in threads.

Each chunk is one committed transaction (the service guarantees resumability), so stopping the
process at any moment loses nothing: the next start of the app (or of the run) continues after the
last committed chunk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

from contactsync.automation import manual
from contactsync.automation.runtime import Runtime
from contactsync.db.platform import manual_runs

log = logging.getLogger("contactsync.api.background")


class _Stopping(Exception):
    """Raised from the progress hook to leave a run between two chunks."""


class RunWorkers:
    """One thread per manual run being processed by this process."""

    def __init__(self, engine: sa.Engine, runtime: Runtime, *, on_enqueued: Callable[[], None]) -> None:
        self.engine = engine
        self.runtime = runtime
        self._on_enqueued = on_enqueued
        self._lock = threading.Lock()
        self._active: dict[int, threading.Thread] = {}
        self._stopping = threading.Event()

    def ensure(self, run_id: int) -> None:
        """Process ``run_id`` unless a thread of this process already does."""
        with self._lock:
            if run_id in self._active or self._stopping.is_set():
                return
            thread = threading.Thread(
                target=self._work, args=(run_id,), name=f"manual-run-{run_id}", daemon=True
            )
            self._active[run_id] = thread
        thread.start()

    def resume_all(self) -> list[int]:
        """Pick up every run left ``running`` (by a stopped or crashed server); returns their ids."""
        with self.engine.connect() as conn:
            ids = [
                int(i)
                for i in conn.execute(
                    sa.select(manual_runs.c.id)
                    .where(manual_runs.c.state == "running")
                    .order_by(manual_runs.c.id)
                ).scalars()
            ]
        for run_id in ids:
            self.ensure(run_id)
        return ids

    def _work(self, run_id: int) -> None:
        try:
            manual.run_to_completion(self.engine, self.runtime, run_id, on_progress=self._progress)
        except _Stopping:
            log.info("manual run %s paused for shutdown; starting it again resumes it", run_id)
        except Exception:
            log.exception("manual run %s stopped; starting it again resumes it", run_id)
        finally:
            with self._lock:
                self._active.pop(run_id, None)

    def _progress(self, run: manual.ManualRunOut) -> None:
        if run.enqueued:
            self._on_enqueued()
        if self._stopping.is_set() and run.state == "running":
            raise _Stopping

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Let every thread finish its current chunk and leave."""
        self._stopping.set()
        with self._lock:
            threads = list(self._active.values())
        for thread in threads:
            thread.join(timeout_s)
