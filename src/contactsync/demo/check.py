"""The demo's content check: each contact's projection on the listener against what the platform holds.

Counting handler runs in state ``done`` proves that something was projected, not that it is right.
This check compares contents, contact by contact, after the demo's final full resync:

* contact email, phone and profile URL, every custom field's name and value, and the lead status
  (score and label) are equal;
* every activity item the action would send now (its ``max_items`` most recent per section) is in the
  projection, with the same click count for links; and nothing is in the projection that the
  platform does not hold at all.

Activity is compared on its natural keys (what the projection deduplicates on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from contactsync.automation.payload_builder import PayloadOptions, build
from contactsync.db.platform import contacts
from contactsync.listener.projection import KINDS, load
from contactsync.wire.payload import SECTIONS

ACTIVITY_SECTIONS = tuple(kind.section for kind in KINDS)
_NATURAL_KEYS = {kind.section: kind.natural_wire_keys for kind in KINDS}
MAX_REPORTED = 20


def differences(
    platform: sa.Engine,
    listener: sa.Engine,
    *,
    list_id: int,
    public_base_url: str,
    max_items: int,
) -> list[str]:
    """Every way the listener's projection of the list's contacts differs from the platform; one line each."""
    with platform.connect() as conn:
        ids = list(conn.execute(sa.select(contacts.c.id).where(contacts.c.list_id == list_id)).scalars())
        zero = dict.fromkeys(ids, 0)
        recent = build(conn, ids, options=_options(public_base_url, max_items), transactionids=zero)
        everything = build(conn, ids, options=_options(public_base_url, 1 << 30), transactionids=zero)
    found: list[str] = []
    with listener.connect() as conn:
        for contact_id in ids:
            state = load(conn, str(contact_id), sections=ACTIVITY_SECTIONS)
            if state is None:
                found.append(f"contact {contact_id}: never projected")
                continue
            found += [
                f"contact {contact_id}: {problem}"
                for problem in _compare(recent[contact_id].wire, everything[contact_id].wire, state.to_wire())
            ]
            if len(found) >= MAX_REPORTED:
                break
    return found[:MAX_REPORTED]


def _options(public_base_url: str, max_items: int) -> PayloadOptions:
    sections = tuple(s for s in SECTIONS if s not in ("transactionid", "contact"))
    return PayloadOptions(sections=sections, max_items=max_items, public_base_url=public_base_url)


def _compare(recent: Mapping[str, Any], everything: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for key in ("email", "phone", "profile_url"):
        want, have = recent["contact"][key], got["contact"].get(key)
        if want != have:
            problems.append(f"{key} is {have!r}, the platform has {want!r}")
    want_fields = {f["id"]: (f["name"], f["value"]) for f in recent.get("fields", [])}
    have_fields = {f["id"]: (f.get("name"), f.get("value")) for f in got.get("fields", [])}
    for fid in sorted(want_fields.keys() | have_fields.keys(), key=str):
        want, have = want_fields.get(fid), have_fields.get(fid)
        if want != have:
            problems.append(f"field {fid} (name, value) is {have!r}, the platform has {want!r}")
    if recent["lead-status"] != got.get("lead-status"):
        problems.append(
            f"lead status is {got.get('lead-status')!r}, the platform has {recent['lead-status']!r}"
        )
    for section in ACTIVITY_SECTIONS:
        keys = _NATURAL_KEYS[section]
        have = _keyed(got.get(section, ()), keys)
        missing = set(_keyed(recent.get(section, ()), keys)) - set(have)
        if missing:
            problems.append(f"{section} lacks {sorted(missing, key=repr)[:3]!r}")
        unknown = set(have) - set(_keyed(everything.get(section, ()), keys))
        if unknown:
            problems.append(f"{section} holds {sorted(unknown, key=repr)[:3]!r}, which the platform does not")
        if section == "links-clicked":
            clicks = {item["url"]: item["clicks"] for item in recent.get(section, ())}
            stale = {
                url: item["clicks"]
                for (url,), item in have.items()
                if url in clicks and item["clicks"] != clicks[url]
            }
            if stale:
                problems.append(f"links-clicked counts {stale!r}, the platform has {clicks!r}")
    return problems


def _keyed(
    items: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    return {tuple(item[k] for k in keys): item for item in items}
