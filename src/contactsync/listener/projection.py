"""The SQL projection: synced contacts as normalized tables in the customer's database.

The tables are a function of the *set* of deliveries received, never of their arrival order
(listener.md): apply any permutation of the same deliveries, with duplicates and replays, and the
tables come out the same (``id`` surrogate keys and ``updated_at_ms`` aside).

* **Attributes** (contact email, phone, profile_url, lead status score and label; each custom field's
  name and value) are last-writer-wins *per attribute*, ordered by transactionid; each stores the
  transactionid that wrote it. A delivery writes only what it carries: a section not selected or a
  key a partial delivery lacks leaves the stored value alone; present and empty clears it to ``""``.
* **Activity** rows are grow-only sets on their natural keys: a late, older delivery still adds its
  activity. ``first_transactionid`` is the oldest delivery that carried the row, whose text (a name,
  a score) is the one kept; links keep the highest click count seen.

Portable on purpose (SQLite, PostgreSQL, MySQL/MariaDB): each update locks its contact rows (``SELECT
… FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already holds the write lock) and decides in Python, so
the rules read the same on every database. The handler merges a whole batch at once
(:func:`apply_batch`: a few statements per batch); :func:`apply` merges one delivery (a batch that
failed is retried one by one, so a bad payload fails alone). Inserting a contact that a concurrent
process inserted first fails on the primary key; the batch is tried again, and the retry sees the row.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from contactsync.db import listener as t
from contactsync.db.backend import Backend, backend_of
from contactsync.db.driver_sql import insert_many, run, run_many, update_many
from contactsync.db.engine import create_engine, write_transaction
from contactsync.db.migrate import upgrade
from contactsync.errors import PayloadError
from contactsync.wire.payload import SyncPayload


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


_HASHED = {"url_sha256": "url", "page_sha256": "page"}
"""Key columns that hold the SHA-256 of a text column (URLs of any length stay unique)."""


@dataclass(frozen=True)
class _Kind:
    """How one list section of the payload maps onto its activity table (statements built once)."""

    section: str
    table: sa.Table
    columns: Callable[[Mapping[str, Any]], dict[str, Any]]
    key: tuple[str, ...]
    wire: tuple[tuple[str, str], ...]
    """(column, wire key) pairs, to give a stored row back in the payload's terms."""
    newest: str
    """The column that orders the section most recent first (its date, or the click count)."""

    @functools.cached_property
    def existing(self) -> sa.Select[Any]:
        """Rows of one contact among candidate first-key values (``cid``, ``firsts``)."""
        table = self.table
        extra = [table.c.clicks] if "clicks" in table.c else []
        return sa.select(
            *(table.c[k] for k in self.key), table.c.id, table.c.first_transactionid, *extra
        ).where(
            table.c.contact_id == sa.bindparam("cid"),
            table.c[self.key[0]].in_(sa.bindparam("firsts", expanding=True)),
        )

    @functools.cached_property
    def insert(self) -> sa.Insert:
        return sa.insert(self.table)

    @functools.cached_property
    def update(self) -> sa.Update:
        return sa.update(self.table).where(self.table.c.id == sa.bindparam("rid"))

    @functools.cached_property
    def of_contact(self) -> sa.Select[Any]:
        table = self.table
        return (
            sa.select(*(table.c[column].label(key) for column, key in self.wire))
            .where(table.c.contact_id == sa.bindparam("cid"))
            .order_by(table.c[self.newest].desc(), *(table.c[k] for k in self.key))
        )

    @functools.cached_property
    def natural_wire_keys(self) -> tuple[str, ...]:
        """The natural key in the payload's terms (a hashed column stands for the text it hashes)."""
        columns = dict(self.wire)
        return tuple(columns.get(column) or _HASHED[column] for column in self.key)

    def text_of(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The non-key columns a row's oldest delivery decides (names, scores)."""
        return {k: v for k, v in row.items() if k not in self.key and k != "clicks"}


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


def _named_kind(section: str, table: sa.Table, id_column: str, date: str) -> _Kind:
    return _Kind(
        section,
        table,
        _named(id_column, date, date),
        (id_column, date),
        ((id_column, "id"), ("name", "name"), (date, date)),
        date,
    )


KINDS: tuple[_Kind, ...] = (
    _named_kind("campaigns-opened", t.campaigns_opened, "campaign_id", "open_date"),
    _Kind(
        "links-clicked",
        t.links_clicked,
        _link,
        ("url_sha256",),
        (("url", "url"), ("clicks", "clicks")),
        "clicks",
    ),
    _Kind(
        "pages-visited",
        t.pages_visited,
        _page,
        ("page_sha256", "visit_date"),
        (("page", "page"), ("visit_date", "visit_date")),
        "visit_date",
    ),
    _named_kind("automation-triggered", t.automations_triggered, "automation_id", "trigger_date"),
    _named_kind("goals-reached", t.goals_reached, "goal_id", "reach_date"),
    _named_kind("webhooks-triggered", t.webhooks_triggered, "webhook_id", "trigger_date"),
    _Kind(
        "lead-score",
        t.lead_scores,
        _score,
        ("score_id", "score_date"),
        (("score_id", "id"), ("name", "name"), ("score", "score"), ("score_date", "score_date")),
        "score_date",
    ),
)
KIND_OF = {kind.section: kind for kind in KINDS}


# --- what a delivery carries (pure) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one delivery carries for the projection, and only that: absent stays absent."""

    contact_id: str
    transactionid: int
    attributes: dict[str, str]
    """Carried contact attributes by column (``CONTACT_ATTRIBUTES``); ``""`` is present and empty."""
    fields: dict[str, dict[str, str]]
    """Custom fields by id: the ``name`` and/or ``value`` the delivery carries."""
    activity: dict[str, list[dict[str, Any]]]
    """Activity rows by section, as table columns, one per natural key."""


_LEAD_STATUS = (("score", "lead_score"), ("label", "lead_label"))


def carried(payload: SyncPayload) -> Delivery | None:
    """The projection's view of ``payload``; None when it names no contact at all (nothing to project).

    A payload that carries contact data but no ``contact.id`` is a :class:`PayloadError`: the
    projection keys contacts by the sender's id.
    """
    contact = payload.contact
    present = contact.model_fields_set
    if contact.id is None:
        if not present and not contact.model_extra:
            return None
        raise PayloadError("the SQL projection keys contacts by id; contact.id is empty", path="contact.id")
    attributes: dict[str, str] = {
        key: getattr(contact, key) for key in ("email", "phone", "profile_url") if key in present
    }
    status = payload.lead_status
    if status is not None:
        for key, column in _LEAD_STATUS:
            if key in status.model_fields_set:
                attributes[column] = _text(getattr(status, key))
    fields: dict[str, dict[str, str]] = {}
    for item in payload.fields or ():
        if item.id is None:
            continue
        sent = fields.setdefault(str(item.id), {})
        for key in ("name", "value"):
            if key in item.model_fields_set:
                sent[key] = getattr(item, key)
    activity: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        items = getattr(payload, kind.section.replace("-", "_"))
        if items:
            activity[kind.section] = _distinct(kind, (item.to_wire(json_types=True) for item in items))
    return Delivery(str(contact.id), payload.transactionid, attributes, fields, activity)


def _distinct(kind: _Kind, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per natural key: the first (most recent) one sent, with the highest click count."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in items:
        row = kind.columns(item)
        key = tuple(row[k] for k in kind.key)
        seen = rows.get(key)
        if seen is None:
            rows[key] = row
        elif row.get("clicks", 0) > seen.get("clicks", 0):
            seen["clicks"] = row["clicks"]
    return list(rows.values())


def wins(stamp: int | None, transactionid: int) -> bool:
    """Whether a delivery overwrites an attribute written by ``stamp`` (None: never written)."""
    return stamp is None or transactionid > stamp


# --- applying a delivery to the tables -----------------------------------------------------------------

# Built once: constructing SQL expressions per statement cost more than running them.
_STAMPS = tuple(t.contacts.c[f"{name}_transactionid"] for name in t.CONTACT_ATTRIBUTES)
_SELECT_CONTACT = (
    sa.select(*_STAMPS, t.contacts.c.last_transactionid)
    .where(t.contacts.c.contact_id == sa.bindparam("cid"))
    .with_for_update()
)
_INSERT_CONTACT = sa.insert(t.contacts)
_UPDATE_CONTACT = sa.update(t.contacts).where(t.contacts.c.contact_id == sa.bindparam("cid"))
_SELECT_FIELDS = sa.select(
    t.field_values.c.field_id, t.field_values.c.name_transactionid, t.field_values.c.value_transactionid
).where(t.field_values.c.contact_id == sa.bindparam("cid"))
_INSERT_FIELDS = sa.insert(t.field_values)
_UPDATE_FIELD = sa.update(t.field_values).where(
    t.field_values.c.contact_id == sa.bindparam("cid"), t.field_values.c.field_id == sa.bindparam("fid")
)


def apply(conn: sa.Connection, delivery: Delivery, *, now_ms: int) -> bool:
    """Merge one delivery into the tables; True if anything changed (False: stale or seen before).

    Runs inside the caller's transaction, so the caller decides when the projection commits.
    """
    cid, tid = delivery.contact_id, delivery.transactionid
    found = run(conn, _SELECT_CONTACT, {"cid": cid})
    changes: dict[str, Any] = {}
    if not found:
        row: dict[str, Any] = {"contact_id": cid, "last_transactionid": tid, "updated_at_ms": now_ms}
        for name, value in delivery.attributes.items():
            row[name] = value
            row[f"{name}_transactionid"] = tid
        run(conn, _INSERT_CONTACT, row)
    else:
        stamps = dict(zip(t.CONTACT_ATTRIBUTES, found[0], strict=False))
        for name, value in delivery.attributes.items():
            if wins(stamps[name], tid):
                changes[name] = value
                changes[f"{name}_transactionid"] = tid
        if tid > found[0][-1]:
            changes["last_transactionid"] = tid
    changed = _merge_fields(conn, delivery)
    for section, rows in delivery.activity.items():
        changed = _merge_activity(conn, KIND_OF[section], cid, rows, tid) or changed
    if found and (changes or changed):
        run(conn, _UPDATE_CONTACT, {"cid": cid, **changes, "updated_at_ms": now_ms})
    return not found or bool(changes) or changed


def _merge_fields(conn: sa.Connection, delivery: Delivery) -> bool:
    if not delivery.fields:
        return False
    cid, tid = delivery.contact_id, delivery.transactionid
    stamps = {row[0]: row[1:] for row in run(conn, _SELECT_FIELDS, {"cid": cid})}
    new_rows: list[dict[str, Any]] = []
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for field_id, sent in delivery.fields.items():
        stamp = stamps.get(field_id)
        if stamp is None:
            new_rows.append(
                {
                    "contact_id": cid,
                    "field_id": field_id,
                    "name": sent.get("name"),
                    "name_transactionid": tid if "name" in sent else None,
                    "value": sent.get("value"),
                    "value_transactionid": tid if "value" in sent else None,
                }
            )
            continue
        change: dict[str, Any] = {}
        for key, value in sent.items():
            if wins(stamp[0] if key == "name" else stamp[1], tid):
                change[key] = value
                change[f"{key}_transactionid"] = tid
        if change:
            updates.setdefault(tuple(change), []).append({"cid": cid, "fid": field_id, **change})
    if new_rows:
        run_many(conn, _INSERT_FIELDS, new_rows)
    for rows in updates.values():
        run_many(conn, _UPDATE_FIELD, rows)
    return bool(new_rows or updates)


def _merge_activity(
    conn: sa.Connection, kind: _Kind, contact_id: str, rows: Sequence[dict[str, Any]], transactionid: int
) -> bool:
    """Add the rows not stored yet; an older delivery's text replaces a newer one's; clicks only rise."""
    existing = {
        tuple(found[: len(kind.key)]): found
        for found in conn.execute(
            kind.existing, {"cid": contact_id, "firsts": sorted({row[kind.key[0]] for row in rows})}
        )
    }
    new_rows: list[dict[str, Any]] = []
    changed = False
    for row in rows:
        found = existing.get(tuple(row[k] for k in kind.key))
        if found is None:
            new_rows.append({"contact_id": contact_id, "first_transactionid": transactionid, **row})
            continue
        change: dict[str, Any] = {}
        if transactionid < found.first_transactionid:
            change = {**kind.text_of(row), "first_transactionid": transactionid}
        if "clicks" in row and row["clicks"] > found.clicks:
            change["clicks"] = row["clicks"]
        if change:
            run(conn, kind.update, {"rid": found.id, **change})
            changed = True
    if new_rows:
        run_many(conn, kind.insert, new_rows)
    return changed or bool(new_rows)


# --- merging a batch of deliveries --------------------------------------------------------------------
#
# The same rules as :func:`apply`, decided in memory for a whole batch: the current rows of every contact
# the batch names are read with one statement per table, the deliveries merged into them, and only what
# differs written back with one statement per table and kind. A batch costs a bounded number of round
# trips whatever its size, where :func:`apply` costs about ten per delivery.


def _among(column: sa.ColumnElement[Any], name: str, backend: Backend) -> sa.ColumnElement[bool]:
    """``column`` among the strings of list parameter ``name``: one array parameter where the database
    takes arrays, so the statement's text stays the same for every batch (an expanding ``IN`` renders,
    and makes psycopg parse, a new text per list length)."""
    return backend.among(column, name, sa.String())


@functools.cache
def _contact_rows(backend: Backend) -> sa.Select[Any]:
    contacts = t.contacts
    return (
        sa.select(contacts)
        .where(_among(contacts.c.contact_id, "cids", backend))
        .order_by(contacts.c.contact_id)
        # sorted: projectors locking overlapping batches wait for each other instead of deadlocking
        .with_for_update()
    )


@functools.cache
def _field_rows(backend: Backend) -> sa.Select[Any]:
    fields = t.field_values
    return sa.select(fields).where(
        _among(fields.c.contact_id, "cids", backend), _among(fields.c.field_id, "fids", backend)
    )


_BLANK_CONTACT = {
    **dict.fromkeys(t.CONTACT_ATTRIBUTES),
    **{f"{name}_transactionid": None for name in t.CONTACT_ATTRIBUTES},
}
_BLANK_FIELD = {"name": None, "name_transactionid": None, "value": None, "value_transactionid": None}


@functools.cache
def _activity_rows(kind: _Kind, backend: Backend) -> sa.Select[Any]:
    """Stored rows of ``kind`` for the batch's contacts among candidate first-key values (a superset)."""
    table = kind.table
    return sa.select(table).where(
        _among(table.c.contact_id, "cids", backend), _among(table.c[kind.key[0]], "firsts", backend)
    )


@functools.cache
def _mutable(kind: _Kind) -> tuple[str, ...]:
    """The columns of a stored activity row that a delivery may change (text, first delivery, clicks)."""
    fixed = {"id", "contact_id", *kind.key}
    return tuple(column.name for column in kind.table.c if column.name not in fixed)


def apply_batch(conn: sa.Connection, deliveries: Iterable[Delivery], *, now_ms: int) -> None:
    """Merge ``deliveries`` (any order, duplicates, several per contact) as :func:`apply` one by one would.

    Runs inside the caller's transaction. A contact another process inserted after the read fails the
    insert on its primary key, as with :func:`apply`; the caller retries and the retry merges into it.
    """
    by_contact: dict[str, list[Delivery]] = {}
    for delivery in sorted(deliveries, key=lambda d: (d.contact_id, d.transactionid)):
        by_contact.setdefault(delivery.contact_id, []).append(delivery)
    if not by_contact:
        return
    with backend_of(conn).planned_on_indexes(conn):  # by key, however much the tables grew since analyzed
        _merge_batch(conn, by_contact, now_ms)


def _merge_batch(conn: sa.Connection, by_contact: Mapping[str, list[Delivery]], now_ms: int) -> None:
    cids = sorted(by_contact)
    stored = {
        row.contact_id: dict(row._mapping)
        for row in conn.execute(_contact_rows(backend_of(conn)), {"cids": cids})
    }
    rows: dict[str, dict[str, Any]] = {}
    for cid in cids:
        row = rows[cid] = {
            "contact_id": cid,
            **_BLANK_CONTACT,
            "last_transactionid": None,
            **stored.get(cid, {}),
        }
        for delivery in by_contact[cid]:
            tid = delivery.transactionid
            for name, value in delivery.attributes.items():
                if wins(row[f"{name}_transactionid"], tid):
                    row[name] = value
                    row[f"{name}_transactionid"] = tid
            if row["last_transactionid"] is None or tid > row["last_transactionid"]:
                row["last_transactionid"] = tid
    new_rows = [{**rows[cid], "updated_at_ms": now_ms} for cid in cids if cid not in stored]
    if new_rows:  # first, as apply() does: a concurrent insert of the same contact fails here
        insert_many(conn, _INSERT_CONTACT, new_rows)
    touched = _merge_batch_fields(conn, by_contact)
    for kind in KINDS:
        touched |= _merge_batch_activity(conn, kind, by_contact)
    updates = [
        {**rows[cid], "updated_at_ms": now_ms}
        for cid in cids
        if cid in stored and (rows[cid] != stored[cid] or cid in touched)
    ]
    if updates:
        update_many(conn, _UPDATE_CONTACT, {"contact_id": "cid"}, updates)


def _merge_batch_fields(conn: sa.Connection, by_contact: Mapping[str, list[Delivery]]) -> set[str]:
    """Merge the batch's custom fields; the contacts whose fields changed."""
    cids = sorted(cid for cid, deliveries in by_contact.items() if any(d.fields for d in deliveries))
    if not cids:
        return set()
    fids = sorted({fid for cid in cids for d in by_contact[cid] for fid in d.fields})
    rows = {
        (row.contact_id, row.field_id): dict(row._mapping)
        for row in conn.execute(_field_rows(backend_of(conn)), {"cids": cids, "fids": fids})
    }
    before = {key: dict(row) for key, row in rows.items()}
    for cid in cids:
        for delivery in by_contact[cid]:
            tid = delivery.transactionid
            for fid, sent in delivery.fields.items():
                row = rows.setdefault((cid, fid), {"contact_id": cid, "field_id": fid, **_BLANK_FIELD})
                for key, value in sent.items():
                    if wins(row[f"{key}_transactionid"], tid):
                        row[key] = value
                        row[f"{key}_transactionid"] = tid
    new_rows, changed = _differences(rows, before)
    if new_rows:
        insert_many(conn, _INSERT_FIELDS, new_rows)
    if changed:
        update_many(conn, _UPDATE_FIELD, {"contact_id": "cid", "field_id": "fid"}, changed)
    return {row["contact_id"] for row in new_rows + changed}


def _merge_batch_activity(
    conn: sa.Connection, kind: _Kind, by_contact: Mapping[str, list[Delivery]]
) -> set[str]:
    """Merge the batch's rows of one section; the contacts that gained or changed a row."""
    carriers = [
        (cid, d) for cid, deliveries in by_contact.items() for d in deliveries if kind.section in d.activity
    ]
    if not carriers:
        return set()
    cids = sorted({cid for cid, _ in carriers})
    firsts = sorted({row[kind.key[0]] for _, d in carriers for row in d.activity[kind.section]})
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for found in conn.execute(_activity_rows(kind, backend_of(conn)), {"cids": cids, "firsts": firsts}):
        stored = dict(found._mapping)
        rows[(stored["contact_id"], *(stored[k] for k in kind.key))] = stored
    before = {key: dict(row) for key, row in rows.items()}
    for cid, delivery in carriers:
        tid = delivery.transactionid
        for sent in delivery.activity[kind.section]:
            row = rows.get((cid, *(sent[k] for k in kind.key)))
            if row is None:
                rows[(cid, *(sent[k] for k in kind.key))] = {
                    "contact_id": cid,
                    "first_transactionid": tid,
                    **sent,
                }
                continue
            if tid < row["first_transactionid"]:
                row.update(kind.text_of(sent), first_transactionid=tid)
            if "clicks" in sent and sent["clicks"] > row["clicks"]:
                row["clicks"] = sent["clicks"]
    new_rows, changed = _differences(rows, before)
    if new_rows:
        insert_many(conn, kind.insert, new_rows)
    if changed:
        mutable = _mutable(kind)
        update_many(
            conn,
            kind.update,
            {"id": "rid"},
            [{"id": row["id"], **{c: row[c] for c in mutable}} for row in changed],
        )
    return {row["contact_id"] for row in new_rows + changed}


def _differences(
    rows: Mapping[tuple[Any, ...], dict[str, Any]], before: Mapping[tuple[Any, ...], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows to insert and the stored rows that changed, in key order (a stable order of row locks)."""
    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for key, row in sorted(rows.items()):
        if key not in before:
            new_rows.append(row)
        elif row != before[key]:
            changed.append(row)
    return new_rows, changed


# --- the converged state of one contact ----------------------------------------------------------------

Stamped = tuple[Any, int | None]
"""A stored attribute: its value and the transactionid that wrote it (None, None: never carried)."""


@dataclass(frozen=True, slots=True)
class ContactState:
    """One contact as the projection holds it, optionally with a delivery merged in (same rules)."""

    contact_id: str
    last_transactionid: int
    attributes: dict[str, Stamped]
    fields: dict[str, dict[str, Stamped]]
    activity: dict[str, list[dict[str, Any]]]
    """Stored rows by section, in wire keys, most recent first."""

    def merged(self, delivery: Delivery) -> ContactState:
        """This state with ``delivery`` applied, as :func:`apply` would leave the tables."""
        tid = delivery.transactionid
        attributes = dict(self.attributes)
        for name, value in delivery.attributes.items():
            if wins(attributes.get(name, (None, None))[1], tid):
                attributes[name] = (value, tid)
        fields = {fid: dict(keys) for fid, keys in self.fields.items()}
        for fid, sent in delivery.fields.items():
            stored = fields.setdefault(fid, {})
            for key, value in sent.items():
                if wins(stored.get(key, (None, None))[1], tid):
                    stored[key] = (value, tid)
        activity = {section: list(rows) for section, rows in self.activity.items()}
        for section, rows in delivery.activity.items():
            kind = KIND_OF[section]
            held = activity.setdefault(section, [])
            natural = kind.natural_wire_keys
            keys = {tuple(row[k] for k in natural) for row in held}
            for row in rows:
                wire = {key: row[column] for column, key in kind.wire}
                if tuple(wire[k] for k in natural) not in keys:
                    held.append(wire)
        return ContactState(self.contact_id, max(self.last_transactionid, tid), attributes, fields, activity)

    def to_wire(self) -> dict[str, Any]:
        """The state in the payload's JSON terms; what was never carried is left out, not ``null``."""
        contact: dict[str, Any] = {"id": _number(self.contact_id)}
        status: dict[str, Any] = {}
        for name, (value, stamp) in self.attributes.items():
            if stamp is None:
                continue
            if name == "lead_score":
                status["score"] = _number(value)
            elif name == "lead_label":
                status["label"] = value
            else:
                contact[name] = value
        out: dict[str, Any] = {"transactionid": str(self.last_transactionid), "contact": contact}
        fields = [
            {"id": _number(fid), **{key: value for key, (value, stamp) in keys.items() if stamp is not None}}
            for fid, keys in sorted(self.fields.items(), key=lambda item: _id_order(item[0]))
        ]
        if fields:
            out["fields"] = fields
        for section, rows in self.activity.items():
            if rows:
                out[section] = [
                    {k: _number(v) if k in _NUMBERS else v for k, v in row.items()} for row in rows
                ]
        if status:
            out["lead-status"] = status
        return out


_NUMBERS = frozenset({"id", "clicks", "score"})
"""Wire keys that are integers in JSON; the tables keep them as the text that was sent."""


def _number(value: Any) -> Any:
    """A stored decimal string as the integer JSON carries; anything else as it is."""
    if isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit() and len(value) < 19:
        return int(value)
    return value


def _id_order(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 63, value)


def converged(state: ContactState | None, delivery: Delivery) -> dict[str, Any]:
    """The contact as the projection holds it with ``delivery`` merged in, in the payload's JSON terms."""
    base = state or ContactState(delivery.contact_id, delivery.transactionid, {}, {}, {})
    return base.merged(delivery).to_wire()


_CONTACT_STATE = sa.select(
    *(t.contacts.c[name] for name in t.CONTACT_ATTRIBUTES), *_STAMPS, t.contacts.c.last_transactionid
).where(t.contacts.c.contact_id == sa.bindparam("cid"))
_FIELD_STATE = sa.select(
    t.field_values.c.field_id,
    t.field_values.c.name,
    t.field_values.c.name_transactionid,
    t.field_values.c.value,
    t.field_values.c.value_transactionid,
).where(t.field_values.c.contact_id == sa.bindparam("cid"))


def load(conn: sa.Connection, contact_id: str, *, sections: Iterable[str] = ()) -> ContactState | None:
    """The stored state of one contact (activity only for ``sections``); None if never synced."""
    found = conn.execute(_CONTACT_STATE, {"cid": contact_id}).first()
    if found is None:
        return None
    count = len(t.CONTACT_ATTRIBUTES)
    attributes = {name: (found[i], found[count + i]) for i, name in enumerate(t.CONTACT_ATTRIBUTES)}
    fields: dict[str, dict[str, Stamped]] = {}
    for fid, name, name_tid, value, value_tid in conn.execute(_FIELD_STATE, {"cid": contact_id}):
        keys = fields[fid] = {}
        if name_tid is not None:
            keys["name"] = (name, name_tid)
        if value_tid is not None:
            keys["value"] = (value, value_tid)
    activity = {
        section: [
            dict(row._mapping) for row in conn.execute(KIND_OF[section].of_contact, {"cid": contact_id})
        ]
        for section in sections
    }
    return ContactState(contact_id, found[-1], attributes, fields, activity)


class Projection:
    """The built-in ``sql`` handler: merges each inbox entry into the projection database."""

    name = "sql"

    def __init__(
        self,
        url: str,
        *,
        clock_ms: Callable[[], int],
        migrate: bool = True,
        write_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.engine = create_engine(url)
        self._write_lock = write_lock
        self._clock_ms = clock_ms
        if migrate:
            upgrade(self.engine, side="listener")

    def __call__(self, payload: SyncPayload) -> None:
        self.apply(payload)

    def apply(self, payload: SyncPayload) -> bool:
        """Merge ``payload`` in its own transaction; False if it changed nothing (or names no contact)."""
        delivery = carried(payload)
        if delivery is None:
            return False
        with write_transaction(self.engine, self._write_lock) as conn:
            return apply(conn, delivery, now_ms=self._clock_ms())

    def handle_batch(self, payloads: Sequence[SyncPayload]) -> list[Exception | None]:
        """Merge many payloads in one transaction; if one fails, each goes alone so it fails alone."""
        now = self._clock_ms()
        try:
            deliveries = [delivery for delivery in map(carried, payloads) if delivery is not None]
            for attempt in range(2):
                try:
                    with write_transaction(self.engine, self._write_lock) as conn:
                        apply_batch(conn, deliveries, now_ms=now)
                    return [None] * len(payloads)
                except sa.exc.IntegrityError:
                    if attempt:  # a contact inserted concurrently is there for the second attempt
                        raise
        except (PayloadError, sa.exc.SQLAlchemyError):
            pass  # rolled back as a whole: retry one by one below
        errors: list[Exception | None] = []
        for payload in payloads:
            try:
                self.apply(payload)
            except (PayloadError, sa.exc.SQLAlchemyError) as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def state(self, contact_id: str, *, sections: Iterable[str] = ()) -> ContactState | None:
        """The stored state of one contact (see :func:`load`)."""
        with self.engine.connect() as conn:
            return load(conn, contact_id, sections=sections)

    def converged(self, payload: SyncPayload, sections: Iterable[str] = ()) -> dict[str, Any] | None:
        """The payload's contact as stored with ``payload`` merged in; None if it names no contact.

        Whether or not this handler has applied ``payload`` yet, the answer is the same, so a handler
        that reads it (the CRM forwarders) never sends older data than the tables will hold.
        """
        delivery = carried(payload)
        if delivery is None:
            return None
        return converged(self.state(delivery.contact_id, sections=sections), delivery)

    def close(self) -> None:
        self.engine.dispose()
