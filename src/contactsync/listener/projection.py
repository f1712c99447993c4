"""The SQL projection: synced contacts as normalized tables in the customer's database.

Portable on purpose (SQLite, PostgreSQL, MySQL/MariaDB): instead of dialect-specific upserts, each
update locks its contact row (``SELECT … FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds
the write lock) and decides in Python, so the rules read the same on every database:

* a contact is keyed by the sender's contact id; an update whose transactionid is not newer than
  the last applied one is ignored as a whole (stale, or the same delivery seen again);
* custom field values are replaced by those of the applied update when it carries the section;
* activities are facts: one row per natural key, never duplicated; links keep the highest count.

Inserting a contact that a concurrent process inserted first fails on the primary key; the
handler runner retries, and the retry sees the row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.engine import create_engine
from contactsync.db.migrate import upgrade
from contactsync.errors import PayloadError
from contactsync.wire.payload import SyncPayload


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one list section of the payload maps onto its activity table."""

    section: str
    table: sa.Table
    columns: Callable[[Mapping[str, Any]], dict[str, Any]]
    key: tuple[str, ...]


def _named(id_column: str, date_key: str, date_column: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def columns(item: Mapping[str, Any]) -> dict[str, Any]:
        return {
            id_column: _text(item.get("id")),
            "name": _text(item.get("name")),
            date_column: _text(item.get(date_key)),
        }

    return columns


def _link(item: Mapping[str, Any]) -> dict[str, Any]:
    url = _text(item.get("url"))
    try:
        clicks = int(_text(item.get("clicks")) or 0)
    except ValueError:
        clicks = 0
    return {"url_sha256": _sha256(url), "url": url, "clicks": clicks}


def _page(item: Mapping[str, Any]) -> dict[str, Any]:
    page = _text(item.get("page"))
    return {"page_sha256": _sha256(page), "page": page, "visit_date": _text(item.get("visit_date"))}


def _score(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "score_id": _text(item.get("id")),
        "name": _text(item.get("name")),
        "score": _text(item.get("score")),
        "score_date": _text(item.get("score_date")),
    }


KINDS: tuple[_Kind, ...] = (
    _Kind(
        "campaigns-opened",
        t.campaigns_opened,
        _named("campaign_id", "open_date", "open_date"),
        ("campaign_id", "open_date"),
    ),
    _Kind("links-clicked", t.links_clicked, _link, ("url_sha256",)),
    _Kind("pages-visited", t.pages_visited, _page, ("page_sha256", "visit_date")),
    _Kind(
        "automation-triggered",
        t.automations_triggered,
        _named("automation_id", "trigger_date", "trigger_date"),
        ("automation_id", "trigger_date"),
    ),
    _Kind(
        "goals-reached",
        t.goals_reached,
        _named("goal_id", "reach_date", "reach_date"),
        ("goal_id", "reach_date"),
    ),
    _Kind(
        "webhooks-triggered",
        t.webhooks_triggered,
        _named("webhook_id", "trigger_date", "trigger_date"),
        ("webhook_id", "trigger_date"),
    ),
    _Kind("lead-score", t.lead_scores, _score, ("score_id", "score_date")),
)


def _items(value: Any) -> list[Mapping[str, Any]]:
    """A list section as sent: a JSON list, or PHP's integer-keyed map from a form body."""
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def apply(conn: sa.Connection, data: Mapping[str, Any], *, transactionid: int, now_ms: int) -> bool:
    """Apply one decoded payload (wire structure, section names as keys); False if stale.

    Runs inside the caller's transaction, so the caller decides when the projection commits.
    """
    contact = data.get("contact")
    if not isinstance(contact, Mapping):
        raise PayloadError("the payload has no contact section", path="contact")
    contact_id = _text(contact.get("id"))
    if not contact_id:
        raise PayloadError("the SQL projection keys contacts by id; contact.id is empty", path="contact.id")
    current = conn.execute(
        sa.select(t.contacts.c.last_transactionid, t.contacts.c.version)
        .where(t.contacts.c.contact_id == contact_id)
        .with_for_update()
    ).first()
    if current is not None and current.last_transactionid >= transactionid:
        return False
    values: dict[str, Any] = {
        "email": _text(contact.get("email")),
        "phone": _text(contact.get("phone")),
        "profile_url": _text(contact.get("profile_url")),
        "last_transactionid": transactionid,
        "updated_at_ms": now_ms,
    }
    status = data.get("lead-status")
    if isinstance(status, Mapping):
        values["lead_score"] = _text(status.get("score"))
        values["lead_label"] = _text(status.get("label"))
    if current is None:
        conn.execute(sa.insert(t.contacts).values(contact_id=contact_id, version=1, **values))
    else:
        conn.execute(
            sa.update(t.contacts)
            .where(t.contacts.c.contact_id == contact_id)
            .values(version=current.version + 1, **values)
        )
    if "fields" in data and data["fields"] is not None:
        _replace_fields(conn, contact_id, _items(data["fields"]))
    for kind in KINDS:
        if kind.section in data:
            _merge(conn, kind, contact_id, _items(data[kind.section]), transactionid)
    return True


def _replace_fields(conn: sa.Connection, contact_id: str, items: Iterable[Mapping[str, Any]]) -> None:
    conn.execute(sa.delete(t.field_values).where(t.field_values.c.contact_id == contact_id))
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        field_id = _text(item.get("id"))
        rows[field_id] = {
            "contact_id": contact_id,
            "field_id": field_id,
            "name": _text(item.get("name")),
            "value": _text(item.get("value")),
        }
    if rows:
        conn.execute(sa.insert(t.field_values), list(rows.values()))


def _merge(
    conn: sa.Connection, kind: _Kind, contact_id: str, items: Iterable[Mapping[str, Any]], transactionid: int
) -> None:
    wanted: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in items:
        row = kind.columns(item)
        key = tuple(row[k] for k in kind.key)
        seen = wanted.get(key)
        if seen is None or row.get("clicks", 0) > seen.get("clicks", 0):
            wanted[key] = row
    if not wanted:
        return
    table = kind.table
    first = kind.key[0]
    key_columns = [table.c[k] for k in kind.key]
    existing: dict[tuple[Any, ...], Any] = {}
    extra = [table.c.clicks] if "clicks" in table.c else []
    for row_found in conn.execute(
        sa.select(*key_columns, table.c.id, *extra).where(
            table.c.contact_id == contact_id, table.c[first].in_(sorted({k[0] for k in wanted}))
        )
    ):
        existing[tuple(row_found[: len(kind.key)])] = row_found
    new_rows: list[dict[str, Any]] = []
    for key, row in wanted.items():
        found = existing.get(key)
        if found is None:
            new_rows.append({"contact_id": contact_id, "first_transactionid": transactionid, **row})
        elif extra and row["clicks"] > found.clicks:
            conn.execute(sa.update(table).where(table.c.id == found.id).values(clicks=row["clicks"]))
    if new_rows:
        conn.execute(sa.insert(table), new_rows)


class Projection:
    """The built-in ``sql`` handler: applies each inbox entry to the projection database."""

    name = "sql"

    def __init__(self, url: str, *, clock_ms: Callable[[], int], migrate: bool = True) -> None:
        self.engine = create_engine(url)
        self._clock_ms = clock_ms
        if migrate:
            upgrade(self.engine, side="listener")

    def __call__(self, payload: SyncPayload) -> None:
        self.apply(payload)

    def apply(self, payload: SyncPayload) -> bool:
        """Project ``payload`` in its own transaction; False if it was stale or already applied."""
        data = payload.to_wire(json_types=True)
        with self.engine.begin() as conn:
            return apply(conn, data, transactionid=payload.transactionid, now_ms=self._clock_ms())

    def handle_batch(self, payloads: Sequence[SyncPayload]) -> list[Exception | None]:
        """Project many payloads in one transaction, each in its own savepoint (one bad one stays alone)."""
        errors: list[Exception | None] = []
        now = self._clock_ms()
        try:
            with self.engine.begin() as conn:
                for payload in payloads:
                    try:
                        with conn.begin_nested():
                            apply(
                                conn,
                                payload.to_wire(json_types=True),
                                transactionid=payload.transactionid,
                                now_ms=now,
                            )
                    except (PayloadError, sa.exc.SQLAlchemyError) as exc:
                        errors.append(exc)
                    else:
                        errors.append(None)
        except sa.exc.SQLAlchemyError as exc:
            return [exc] * len(payloads)
        return errors

    def close(self) -> None:
        self.engine.dispose()
