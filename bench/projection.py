"""SQL projection throughput: a batch merged at once (``handle_batch``) vs one ``apply()`` per delivery.

Both paths take the same deliveries — every section filled, about two per contact, arriving slightly
out of transactionid order — in batches of the handler runner's size, each batch in one transaction,
into a fresh database (PostgreSQL by default; ``--sqlite`` for a file). Rounds alternate the two paths,
each round under new contact ids so both see the same mix of new and known contacts. Prints entries/s
and this process's CPU per entry for each path (best round), and the ratios ``batch_vs_one_by_one``
(higher is better) by wall clock and by CPU time; on a shared machine read the ratios, not the rates.

Run: ``python bench/projection.py [--deliveries 5000] [--batch 100] [--rounds 3] [--sqlite]``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from contactsync.db.engine import write_transaction
from contactsync.listener.projection import Projection, apply, carried
from contactsync.wire.payload import SyncPayload

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def wire(transactionid: int, contact_id: int, rng: random.Random) -> dict[str, Any]:
    """A full delivery, as the platform sends for a contact with some history."""
    day = f"2026-03-{rng.randint(1, 28):02d} 10:00:00"
    return {
        "transactionid": str(transactionid),
        "contact": {
            "id": contact_id,
            "email": f"c{contact_id}.{transactionid}@example.com",
            "phone": "+15551234567",
            "profile_url": f"https://platform.example/contacts/{contact_id}",
        },
        "fields": [{"id": fid, "name": f"Field {fid}", "value": f"v{transactionid}"} for fid in range(1, 6)],
        "campaigns-opened": [{"id": rng.randint(1, 5), "name": "Spring", "open_date": day}],
        "links-clicked": [{"url": f"https://example.com/{rng.randint(1, 3)}", "clicks": rng.randint(1, 9)}],
        "pages-visited": [{"page": "https://example.com/pricing", "visit_date": day}],
        "automation-triggered": [{"id": 9, "name": "Welcome", "trigger_date": day}],
        "goals-reached": [{"id": rng.randint(11, 12), "name": "Bought", "reach_date": day}],
        "webhooks-triggered": [{"id": 13, "name": "Zap", "trigger_date": day}],
        "lead-score": [{"id": 15, "name": "Opened", "score": rng.randint(1, 20), "score_date": day}],
        "lead-status": {"score": rng.randint(0, 60), "label": "Warm"},
    }


def deliveries(count: int, contact_base: int, seed: int) -> list[SyncPayload]:
    """``count`` deliveries over ``count // 2`` contacts, each displaced a few places from tid order."""
    rng = random.Random(seed)
    contacts = max(1, count // 2)
    wires = [wire(1000 + n, contact_base + rng.randrange(contacts), rng) for n in range(count)]
    keyed = sorted(enumerate(wires), key=lambda item: item[0] + rng.uniform(0, 20))
    return [SyncPayload.from_wire(item) for _, item in keyed]


def one_by_one(projection: Projection, payloads: Sequence[SyncPayload]) -> None:
    """The handler before batches were merged: one :func:`apply` per delivery, in one transaction."""
    found = [carried(payload) for payload in payloads]
    with write_transaction(projection.engine) as conn:
        for delivery in found:
            if delivery is not None:
                apply(conn, delivery, now_ms=int(time.time() * 1000))


def batched(projection: Projection, payloads: Sequence[SyncPayload]) -> None:
    errors = projection.handle_batch(payloads)
    if any(errors):
        raise RuntimeError(f"the batch failed: {next(e for e in errors if e)}")


PATHS: dict[str, Callable[[Projection, Sequence[SyncPayload]], None]] = {
    "one_by_one": one_by_one,
    "batch": batched,
}


@contextmanager
def database(sqlite: bool) -> Iterator[str]:
    if sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/projection.db"
        return
    name = "bench_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100, help="the handler runner's batch size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    with database(args.sqlite) as url:
        projection = Projection(url, clock_ms=lambda: int(time.time() * 1000))
        try:
            for round_ in range(args.rounds):
                for index, (name, run) in enumerate(PATHS.items()):
                    payloads = deliveries(args.deliveries, (2 * round_ + index + 1) * 10_000_000, seed=round_)
                    wall, cpu = time.perf_counter(), time.process_time()
                    for start in range(0, len(payloads), args.batch):
                        run(projection, payloads[start : start + args.batch])
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    rate, cpu_us = len(payloads) / wall, cpu / len(payloads) * 1e6
                    print(
                        f"round={round_} path={name} entries_per_s={rate:.0f} cpu_us_per_entry={cpu_us:.0f}"
                    )
                    seen = best.get(name, (0.0, float("inf")))
                    best[name] = (max(seen[0], rate), min(seen[1], cpu_us))
        finally:
            projection.close()
    for name, (rate, cpu_us) in best.items():
        print(f"best path={name} entries_per_s={rate:.0f} cpu_us_per_entry={cpu_us:.0f}")
    (old_rate, old_cpu), (new_rate, new_cpu) = best["one_by_one"], best["batch"]
    print(f"batch_vs_one_by_one_wall={new_rate / old_rate:.2f}")
    print(f"batch_vs_one_by_one_cpu={old_cpu / new_cpu:.2f}")


if __name__ == "__main__":
    main()
