"""The platform's promises under concurrency, as a busy installation runs it.

PostgreSQL: two ``contactsync serve`` processes and two ``contactsync worker`` processes on one
database, requests fired together (a barrier) and spread over both API processes. SQLite: one
``serve --with-worker`` process (the embedded set-up). Every test asserts exact counts and orders;
each invariant the specs state about concurrency has its test here, and a new one belongs here too:

* re-entry (automation.md): ``once``, ``always`` and ``once per N hours`` under bursts of events,
  and with a manual run racing the events;
* one running manual run per automation; a second start is a 409 naming it;
* a contact's email is unique in its list, case-insensitively, under concurrent upserts;
* ordered per contact (delivery.md): a newer delivery waits while an older one is pending retry,
  with failures injected, across dispatcher processes; no delivery has two attempts at once and
  none is delivered twice.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from contactsync.automation.actions import account_of_automation
from contactsync.db import platform as t
from support.delivery import CountingReceiver
from support.platform import Installation, installation

POLL_INTERVAL_S = 0.2
"""Short, so retries (woken by polling) come round quickly; chains do not depend on it."""


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def inst(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    """Started once per database for the module; every test works in lists of its own."""
    tmp = tmp_path_factory.mktemp(f"concurrency-{request.param}")
    if request.param == "sqlite":
        url, apis, workers = f"sqlite:///{tmp / 'platform.db'}", 1, 0
    else:
        url, apis, workers = str(request.getfixturevalue("pg_module_url")), 2, 2
    with installation(
        url, tmp, api_processes=apis, worker_processes=workers, poll_interval_s=POLL_INTERVAL_S
    ) as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[CountingReceiver]:
    with CountingReceiver() as rec:
        yield rec


def burst(
    inst: Installation, n: int, call: Callable[[int, httpx.Client], httpx.Response]
) -> list[httpx.Response]:
    """``n`` requests released together (request ``i`` goes to API process ``i`` mod their number)."""
    gate = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        with inst.client(i) as client:
            client.get("/api/lists")  # connected and authenticated before the barrier
            gate.wait(60)
            return call(i, client)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@dataclass
class World:
    """A list of the test's own with contacts and automations (each with one sync action)."""

    list_id: int
    contacts: list[int]
    automations: dict[str, int]

    def where(self) -> sa.ColumnElement[bool]:
        return t.deliveries.c.automation_id.in_(list(self.automations.values()))


def make_world(
    inst: Installation,
    url: str,
    *,
    contacts: int,
    automations: dict[str, dict[str, Any]],
    trigger: str = "page.visited",
    action: dict[str, Any] | None = None,
) -> World:
    with inst.client() as client:
        list_id = ok(client.post("/api/lists", json={"name": "concurrency"}), 201)["id"]
        if contacts:
            csv = "email\n" + "".join(f"c{i}@example.com\n" for i in range(contacts))
            imported = client.post(
                f"/api/lists/{list_id}/contacts/import", content=csv, headers={"Content-Type": "text/csv"}
            )
            assert ok(imported, 200)["created"] == contacts
        with inst.engine.connect() as conn:
            ids = list(
                conn.execute(
                    sa.select(t.contacts.c.id)
                    .where(t.contacts.c.list_id == list_id)
                    .order_by(t.contacts.c.id)
                ).scalars()
            )
        made = {}
        for name, reentry in automations.items():
            body = {"list_id": list_id, "name": name, "trigger": {"event": trigger}, "reentry": reentry}
            made[name] = ok(client.post("/api/automations", json=body), 201)["id"]
            settings = {"url": url, "retry_schedule_s": [0] + [0.05] * 40, **(action or {})}
            ok(client.post(f"/api/automations/{made[name]}/actions", json=settings), 201)
    return World(list_id, ids, made)


def ok(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def event(contact_id: int, i: int) -> dict[str, Any]:
    return {
        "events": [{"kind": "page.visited", "contact_id": contact_id, "url": f"https://example.com/p{i}"}]
    }


def entries(inst: Installation, automation_id: int) -> Counter[int]:
    """How many times each contact entered the automation."""
    e = t.automation_entries.c
    with inst.engine.connect() as conn:
        return Counter(
            conn.execute(sa.select(e.contact_id).where(e.automation_id == automation_id)).scalars()
        )


def deliveries(inst: Installation, where: sa.ColumnElement[bool]) -> list[Any]:
    d = t.deliveries.c
    with inst.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(d.transactionid, d.automation_id, d.contact_id, d.state).where(where).order_by(d.id)
            )
        )


def settled(inst: Installation, where: sa.ColumnElement[bool], *, timeout_s: float = 90) -> list[Any]:
    """The deliveries matching ``where`` once none is pending or in flight (all should be delivered)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = deliveries(inst, where)
        if all(r.state not in ("pending", "in_flight") for r in rows):
            assert [r for r in rows if r.state != "delivered"] == [], inst.log_tails()
            return rows
        assert time.monotonic() < deadline, (
            f"still open: {Counter(r.state for r in rows)}\n{inst.log_tails()}"
        )
        time.sleep(0.05)


def received_once(receiver: CountingReceiver, rows: list[Any]) -> None:
    """Every delivery reached the receiver with exactly one 2xx, and no two attempts overlapped."""
    with receiver.lock:
        seen = {str(r.transactionid): sorted(receiver.intervals.get(str(r.transactionid), [])) for r in rows}
    assert {tid: sum(ok for *_, ok in s) for tid, s in seen.items()} == dict.fromkeys(seen, 1)
    for s in seen.values():
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(s))


# --- re-entry -------------------------------------------------------------------------------------

BURST = 40


@pytest.mark.parametrize(
    ("policy", "per_contact"),
    [
        pytest.param({"policy": "once"}, 1, id="once"),
        pytest.param({"policy": "per_hours", "hours": 1}, 1, id="per_hours"),
        pytest.param({"policy": "always"}, BURST // 2, id="always"),
    ],
)
def test_a_burst_of_events_enters_each_reentry_policy_exactly(
    inst: Installation, receiver: CountingReceiver, policy: dict[str, Any], per_contact: int
) -> None:
    # one automation alone on its list: another automation's entry must not serialise the burst
    w = make_world(inst, receiver.url, contacts=2, automations={"a": policy})
    answers = burst(inst, BURST, lambda i, c: c.post("/api/events", json=event(w.contacts[i % 2], i)))
    assert [r.status_code for r in answers] == [202] * BURST, [
        r.text for r in answers if r.status_code != 202
    ]
    assert entries(inst, w.automations["a"]) == dict.fromkeys(w.contacts, per_contact)
    assert sum(r.json()["entries"] for r in answers) == 2 * per_contact
    rows = settled(inst, w.where())
    assert len(rows) == 2 * per_contact
    assert sorted(str(r.transactionid) for r in rows) == sorted(
        tid for r in answers for tid in r.json()["transactionids"]
    )
    received_once(receiver, rows)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param({"policy": "once"}, id="once"),
        pytest.param({"policy": "per_hours", "hours": 24}, id="per_hours"),
    ],
)
def test_a_manual_run_racing_events_lets_each_contact_in_once(
    inst: Installation, receiver: CountingReceiver, policy: dict[str, Any]
) -> None:
    w = make_world(inst, receiver.url, contacts=12, automations={"a": policy})
    aid = w.automations["a"]
    n = 2 * len(w.contacts) + 1

    def call(i: int, client: httpx.Client) -> httpx.Response:
        if i == n // 2:
            return client.post(f"/api/automations/{aid}/runs")
        return client.post("/api/events", json=event(w.contacts[i % len(w.contacts)], i))

    answers = burst(inst, n, call)
    run_id = next(r.json()["id"] for r in answers if r.request.url.path.endswith("/runs"))
    assert all(r.status_code == 202 for r in answers), [r.text for r in answers]
    assert wait_run(inst, run_id)["state"] == "completed"
    assert entries(inst, aid) == dict.fromkeys(w.contacts, 1)
    rows = settled(inst, w.where())
    assert sorted(r.contact_id for r in rows) == sorted(w.contacts)
    received_once(receiver, rows)


# --- manual runs ----------------------------------------------------------------------------------


def wait_run(inst: Installation, run_id: int, *, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with inst.client() as client:
        while True:
            run = ok(client.get(f"/api/runs/{run_id}"), 200)
            if run["state"] != "running":
                return dict(run)
            assert time.monotonic() < deadline, run
            time.sleep(0.05)


def test_concurrent_starts_of_a_manual_run_never_overlap_and_name_the_running_one(
    inst: Installation, receiver: CountingReceiver
) -> None:
    contacts = 200
    w = make_world(
        inst, receiver.url, contacts=contacts, automations={"a": {"policy": "always"}}, trigger="manual"
    )
    aid = w.automations["a"]
    answers = burst(inst, 10, lambda _i, c: c.post(f"/api/automations/{aid}/runs"))
    assert {r.status_code for r in answers} <= {202, 409}, [r.text for r in answers]
    started = [r.json()["id"] for r in answers if r.status_code == 202]
    assert len(started) == len(set(started)) >= 1
    for refused in (r.json() for r in answers if r.status_code == 409):
        assert (refused["error"], refused["field"]) == ("conflict", "automation_id")
        named = int(refused["message"].split()[2])
        assert named in started
        assert f"manual run {named} of automation {aid} is still running" in refused["message"]
    runs = [wait_run(inst, run_id) for run_id in sorted(started)]
    assert [(r["state"], r["enqueued"]) for r in runs] == [("completed", contacts)] * len(runs)
    # one at a time: each run started after the previous one finished (the bug overlapped them)
    for earlier, later in itertools.pairwise(runs):
        assert later["started_at"] >= earlier["finished_at"], (earlier, later)
    with inst.client() as client:
        assert [r["id"] for r in ok(client.get(f"/api/automations/{aid}/runs"), 200)] == sorted(started)
    assert entries(inst, aid) == dict.fromkeys(w.contacts, len(runs))
    rows = settled(inst, w.where())
    assert len(rows) == contacts * len(runs)
    received_once(receiver, rows)


def test_a_start_while_a_run_is_running_is_a_409_naming_it(
    inst: Installation, receiver: CountingReceiver
) -> None:
    w = make_world(inst, receiver.url, contacts=3, automations={"a": {"policy": "once"}}, trigger="manual")
    aid = w.automations["a"]
    with inst.engine.begin() as conn:  # a run left running, as if its server stopped mid-way
        run_id = conn.execute(
            t.manual_runs.insert()
            .values(
                automation_id=aid,
                account_id=account_of_automation(conn, aid),
                state="running",
                total=3,
                started_at=_now(),
                updated_at=_now(),
            )
            .returning(t.manual_runs.c.id)
        ).scalar_one()
    with inst.client(1) as client:
        refused = client.post(f"/api/automations/{aid}/runs")
    assert refused.status_code == 409, refused.text
    assert refused.json()["message"].startswith(f"manual run {run_id} of automation {aid} is still running")
    # the refusal also resumed the orphan
    assert (wait_run(inst, run_id)["state"], entries(inst, aid)) == (
        "completed",
        dict.fromkeys(w.contacts, 1),
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- contacts -------------------------------------------------------------------------------------


def test_concurrent_upserts_of_one_email_in_mixed_case_make_one_contact(
    inst: Installation, receiver: CountingReceiver
) -> None:
    w = make_world(
        inst, receiver.url, contacts=0, automations={"created": {"policy": "once"}}, trigger="contact.created"
    )
    with inst.client() as client:
        body = {
            "list_id": w.list_id,
            "name": "updated",
            "trigger": {"event": "contact.updated"},
            "reentry": {"policy": "always"},
        }
        updated = ok(client.post("/api/automations", json=body), 201)["id"]
        ok(client.post(f"/api/automations/{updated}/actions", json={"url": receiver.url}), 201)
    spellings = [
        "jane.doe@example.com",
        "Jane.Doe@Example.com",
        "JANE.DOE@EXAMPLE.COM",
        "jane.DOE@example.COM",
    ]
    n = 24
    answers = burst(
        inst,
        n,
        lambda i, c: c.post(
            f"/api/lists/{w.list_id}/contacts", json={"email": spellings[i % 4], "phone": f"+1555000{i:04d}"}
        ),
    )
    assert Counter(r.status_code for r in answers) == {201: 1, 200: n - 1}, [r.text for r in answers]
    contact_ids = {r.json()["contact"]["id"] for r in answers}
    assert len(contact_ids) == 1
    assert inst.scalar(sa.select(sa.func.count()).where(t.contacts.c.list_id == w.list_id)) == 1
    changed = sum(r.json()["changed"] for r in answers if r.status_code == 200)
    (cid,) = contact_ids
    assert entries(inst, w.automations["created"]) == {cid: 1}
    assert entries(inst, updated) == ({cid: changed} if changed else {})
    rows = settled(inst, t.deliveries.c.automation_id.in_([w.automations["created"], updated]))
    assert len(rows) == 1 + changed
    received_once(receiver, rows)


# --- ordered delivery -----------------------------------------------------------------------------


def test_ordered_chains_with_injected_failures_arrive_in_order_once(inst: Installation) -> None:
    links, contacts = 6, 4
    with CountingReceiver(fail_ratio=0.3, seed=17) as flaky:
        w = make_world(
            inst,
            flaky.url,
            contacts=contacts,
            automations={"a": {"policy": "always"}},
            action={"ordered_per_contact": True},
        )

        def chain(k: int) -> list[str]:
            tids: list[str] = []
            for i in range(links):  # one contact's events one after the other, over both API processes
                with inst.client(k + i) as client:
                    tids += ok(client.post("/api/events", json=event(w.contacts[k], i)), 202)[
                        "transactionids"
                    ]
            return tids

        with ThreadPoolExecutor(contacts) as pool:
            chains = list(pool.map(chain, range(contacts)))
        rows = settled(inst, w.where())
        with flaky.lock:
            seen = {tid: sorted(s) for tid, s in flaky.intervals.items()}
    assert len(rows) == links * contacts
    assert [len(c) for c in chains] == [links] * contacts
    by_contact: dict[int, list[int]] = {}
    for r in rows:
        by_contact.setdefault(r.contact_id, []).append(r.transactionid)
    assert sorted(map(sorted, by_contact.values())) == sorted(sorted(int(x) for x in c) for c in chains)
    failures = 0
    for tids in by_contact.values():
        order = sorted(tids)
        for earlier, later in itertools.pairwise(order):
            done = max(end for _, end, ok in seen[str(earlier)] if ok)
            # no attempt of the newer delivery before the older one succeeded
            assert min(start for start, _, _ in seen[str(later)]) >= done, (earlier, later)
        for tid in order:
            attempts = seen[str(tid)]
            assert sum(ok for *_, ok in attempts) == 1
            assert attempts[-1][2], "nothing after the success"
            failures += len(attempts) - 1
    assert failures > 0, "the receiver injected no failure: the test proved nothing about retries"
