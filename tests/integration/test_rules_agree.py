"""One rule definition, two compilers: the SQL selection and the Python predicate agree on every contact."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.automation.compile_sql import compile_sql
from contactsync.automation.predicate import compile_predicate, compile_prefilter
from contactsync.automation.rules import (
    ORDERED_OPS,
    TEXT_OPS,
    UNARY_OPS,
    ActivityCondition,
    Condition,
    FieldCondition,
    Group,
)
from contactsync.automation.snapshot import load_views
from contactsync.db import create_engine
from contactsync.db import platform as t
from contactsync.db.backend import backend_of
from contactsync.db.migrate import upgrade
from support import examples

NOW = datetime(2026, 3, 1, 12, 0, 0)
THRESHOLDS = ((0, "Cold"), (20, "Warm"), (50, "Hot"))
ALPHABET = "aAb*?[]%_\\é "
POOL = ["", "a", "A", "ab", "Ab", "b%", "a_b", "*", "a*", "?b", "[a]", "é", "aé", "a b", "\\", "%"]
texts = st.sampled_from(POOL) | st.text(ALPHABET, max_size=3)
numbers = st.sampled_from([-1.5, 0.0, 0.5, 2.0, 20.0, 49.0, 50.0, 100.0])
dates = st.sampled_from(["2024-01-01", "2024-01-01 00:00:00", "2024-06-30 12:00:00", "2025-12-31"])
FIELDS = {"text": 0, "number": 0, "date": 0}  # ids filled in once the table rows exist


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    upgrade(db_url)
    eng = create_engine(db_url)
    with eng.begin() as conn:
        conn.execute(t.accounts.insert().values(id=1, name="a", created_at=NOW))
        conn.execute(t.lists.insert().values(id=1, account_id=1, name="l", created_at=NOW))
        for i, kind in enumerate(FIELDS, start=1):
            conn.execute(
                t.fields.insert().values(
                    id=i,
                    list_id=1,
                    name=kind,
                    shortcode_key=kind.upper(),
                    type=kind,
                    choices=[],
                    created_at=NOW,
                )
            )
            FIELDS[kind] = i
    yield eng
    eng.dispose()


@st.composite
def field_conditions(draw: st.DrawFn) -> FieldCondition:
    subject = draw(
        st.sampled_from(["email", "phone", "status", "lead_score", "lead_status", "text", "number", "date"])
    )
    kind = {"lead_score": "number", "number": "number", "date": "date"}.get(subject, "text")
    name = f"field:{FIELDS[subject]}" if subject in FIELDS else subject
    op = draw(st.sampled_from(sorted(ORDERED_OPS if kind != "text" else TEXT_OPS)))
    values = {"number": numbers, "date": dates, "text": texts}[kind]
    if subject == "lead_status":
        values = st.sampled_from(["Cold", "Warm", "Hot", "warm"])
    if subject == "status":
        values = st.sampled_from(["subscribed", "unsubscribed", "sub*"])
    value: Any = None
    if op == "in":
        value = draw(st.lists(values, max_size=3))
    elif op not in UNARY_OPS:
        value = draw(values)
    return FieldCondition(subject=name, op=op, value=value)


@st.composite
def activity_conditions(draw: st.DrawFn) -> ActivityCondition:
    kind = draw(
        st.sampled_from(["campaign_open", "link_click", "page_visit", "goal", "automation", "webhook"])
    )
    url_kind = kind in {"link_click", "page_visit"}
    url_op = draw(st.none() | st.sampled_from(["eq", "contains", "starts_with", "ends_with", "matches"]))
    return ActivityCondition(
        kind=kind,
        ref_id=None if url_kind else draw(st.none() | st.integers(1, 3)),
        url_op=url_op if url_kind else None,
        url=draw(texts) if url_kind and url_op else None,
        min_count=draw(st.integers(1, 3)),
        within_days=draw(st.none() | st.sampled_from([1, 7, 30])),
    )


conditions: st.SearchStrategy[Condition] = st.recursive(
    field_conditions() | activity_conditions(),
    lambda children: st.builds(
        Group, op=st.sampled_from(["and", "or"]), conditions=st.lists(children, max_size=3)
    ),
    max_leaves=6,
)

activity_rows = st.tuples(
    st.sampled_from(["campaign_open", "link_click", "page_visit", "goal", "automation", "webhook"]),
    st.integers(1, 3),
    texts,
    st.sampled_from([0, 1, 7, 8, 30, 31]),
    st.sampled_from([0, 1, -1]),
)
contacts_data = st.lists(
    st.fixed_dictionaries(
        {
            "email": texts,
            "phone": texts,
            "status": st.sampled_from(["subscribed", "unsubscribed"]),
            "lead_score": st.integers(-5, 80),
            "text": st.none() | texts,
            "number": st.none() | numbers,
            "date": st.none() | dates,
            "activity": st.lists(activity_rows, max_size=5),
        }
    ),
    min_size=1,
    max_size=8,
)


def _load(conn: sa.Connection, data: list[dict[str, Any]]) -> None:
    conn.execute(t.contacts.delete())
    for i, c in enumerate(data, start=1):
        email = f"{c['email']}{i}"
        conn.execute(
            t.contacts.insert().values(
                id=i,
                list_id=1,
                email=email,
                email_key=email.lower(),
                phone=c["phone"],
                status=c["status"],
                lead_score=c["lead_score"],
                created_at=NOW,
                updated_at=NOW,
            )
        )
        for kind in FIELDS:
            if c[kind] is not None:
                num = c[kind] if kind == "number" else None
                conn.execute(
                    t.field_values.insert().values(
                        contact_id=i, field_id=FIELDS[kind], value=str(c[kind]), value_num=num
                    )
                )
        for kind, ref, url, days, seconds in c["activity"]:
            at = NOW - timedelta(days=days, seconds=seconds)
            conn.execute(
                t.activities.insert().values(
                    contact_id=i, kind=kind, ref_id=ref, url=url, name="", occurred_at=at
                )
            )


def _subtrees(node: Condition) -> list[Condition]:
    if isinstance(node, Group):
        return [node, *(sub for child in node.conditions for sub in _subtrees(child))]
    return [node]


@settings(max_examples=examples(ci=300, local=60))
@given(rule=conditions, data=contacts_data)
def test_sql_and_python_agree(engine: sa.Engine, rule: Condition, data: list[dict[str, Any]]) -> None:
    """Every sub-tree of the rule (each leaf on its own, too) selects the same contacts both ways."""
    types = {FIELDS[k]: k for k in FIELDS}
    nodes = _subtrees(rule)
    kinds = {"campaign_open", "link_click", "page_visit", "goal", "automation", "webhook"}
    with engine.begin() as conn:
        _load(conn, data)
        columns = [
            sa.case(
                (
                    compile_sql(
                        n, backend=backend_of(engine), now=NOW, field_types=types, thresholds=THRESHOLDS
                    ),
                    1,
                ),
                else_=0,
            )
            for n in nodes
        ]
        query = (
            sa.select(t.contacts.c.id, *columns).where(t.contacts.c.list_id == 1).order_by(t.contacts.c.id)
        )
        by_sql = {row[0]: [bool(x) for x in row[1:]] for row in conn.execute(query)}
        views = load_views(conn, list(range(1, len(data) + 1)), kinds=kinds)
    predicates = [compile_predicate(n, field_types=types, thresholds=THRESHOLDS) for n in nodes]
    by_python = {cid: [p(view, NOW) for p in predicates] for cid, view in views.items()}
    assert by_sql == by_python
    # the event path's activity-free prefilter never contradicts the predicate
    prefilters = [compile_prefilter(n, field_types=types, thresholds=THRESHOLDS) for n in nodes]
    for cid, view in views.items():
        early = [p(view, NOW) for p in prefilters]
        assert all(e is None or e == full for e, full in zip(early, by_python[cid], strict=True))


def _pool_contacts(values: list[Any], kind: str) -> list[dict[str, Any]]:
    base = {"email": "e", "phone": "", "status": "subscribed", "lead_score": 0, "activity": []}
    rows = []
    for v in [*values, None]:
        row = {**base, "text": None, "number": None, "date": None, kind: v}
        if kind == "text":
            row["phone"] = v if v is not None else ""
        rows.append(row)
    return rows


@pytest.mark.parametrize("kind", ["text", "number", "date"])
def test_every_operator_on_every_pool_value(engine: sa.Engine, kind: str) -> None:
    """Exhaustive over small pools: each operator × argument × stored value, one query per pair."""
    pools: dict[str, list[Any]] = {
        "text": POOL,
        "number": [-1.5, 0.0, 0.5, 2.0],
        "date": ["2024-01-01", "2024-01-01 00:00:00"],
    }
    pool = pools[kind]
    ops = sorted(TEXT_OPS if kind == "text" else ORDERED_OPS)
    subjects = [f"field:{FIELDS[kind]}", *(["phone"] if kind == "text" else [])]
    rules: list[Condition] = []
    for subject in subjects:
        for op in ops:
            if op in UNARY_OPS:
                rules.append(FieldCondition(subject=subject, op=op))
            elif op == "in":
                rules.extend(FieldCondition(subject=subject, op=op, value=[a]) for a in pool)
            else:
                rules.extend(FieldCondition(subject=subject, op=op, value=a) for a in pool)
    test_sql_and_python_agree.hypothesis.inner_test(  # type: ignore[attr-defined]
        engine,
        Group(
            op="and",
            conditions=[Group(op="or", conditions=rules[i : i + 100]) for i in range(0, len(rules), 100)],
        ),
        _pool_contacts(pool, kind),
    )
