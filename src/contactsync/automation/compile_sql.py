"""Compile a condition tree to one SQL boolean over ``contacts`` (correlated ``EXISTS`` sub-queries).

Manual runs select whole lists with it, chunk by chunk. It must agree with
:func:`contactsync.automation.predicate.compile_predicate` on every contact; the property test
checks that on SQLite and PostgreSQL. Text is compared as Python compares it through
:class:`~contactsync.db.backend.Backend`'s text builders (case-sensitive substrings and wildcards,
ordering by code point), which spell it for each database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from contactsync.automation.predicate import DEFAULT_THRESHOLDS, Thresholds, number_arg, text_arg
from contactsync.automation.rules import ActivityCondition, Condition, FieldCondition, Group, Scalar
from contactsync.db.backend import Backend
from contactsync.db.platform import activities, contacts, field_values

Expr = ColumnElement[bool]


class _Compiler:
    def __init__(
        self,
        *,
        backend: Backend,
        contact: sa.FromClause,
        field_types: Mapping[int, str],
        thresholds: Thresholds,
    ) -> None:
        self.backend = backend
        self.c = contact.c
        self.field_types = field_types
        self.thresholds = thresholds

    # -- text ---------------------------------------------------------------------------------
    def _contains(self, v: ColumnElement[str], a: str) -> Expr:
        return self.backend.position(v, a) > 0

    def text(self, v: ColumnElement[str], op: str, arg: Scalar | list[Scalar] | None) -> Expr:
        if op == "in":
            assert isinstance(arg, list)
            members = sorted({text_arg(a) for a in arg})
            return v.in_(members) if members else sa.false()
        if op == "empty":
            return v == ""
        if op == "not_empty":
            return v != ""
        assert arg is not None
        assert not isinstance(arg, list)
        a = text_arg(arg)
        if op == "eq":
            return v == a
        if op == "ne":
            return v != a
        if op == "contains":
            return self._contains(v, a)
        if op == "not_contains":
            return sa.not_(self._contains(v, a))
        if op == "starts_with":
            return sa.func.substr(v, 1, len(a)) == a
        if op == "ends_with":
            if not a:
                return sa.true()
            return self.backend.last_chars(v, len(a)) == a
        if op == "matches":
            return self.backend.glob(v, a)
        ordered = self.backend.in_code_points(v)
        compare = {"gt": ordered > a, "gte": ordered >= a, "lt": ordered < a, "lte": ordered <= a}[op]
        return sa.and_(v != "", compare)

    # -- numbers ------------------------------------------------------------------------------
    def number(
        self, v: ColumnElement[Any], op: str, arg: Scalar | list[Scalar] | None, *, nullable: bool = True
    ) -> Expr:
        # a NOT NULL column needs no presence test: one comparison per row instead of three
        present: Expr = v.is_not(None) if nullable else sa.true()
        if op == "empty":
            return v.is_(None)
        if op == "not_empty":
            return present
        if op == "in":
            assert isinstance(arg, list)
            members = sorted({number_arg(a) for a in arg})
            return sa.and_(present, v.in_(members)) if members else sa.false()
        assert arg is not None
        assert not isinstance(arg, list)
        a = number_arg(arg)
        if op == "ne":
            return sa.not_(sa.and_(present, v == a))
        compare = {"eq": v == a, "gt": v > a, "gte": v >= a, "lt": v < a, "lte": v <= a}[op]
        return sa.and_(present, compare)

    # -- leaves -------------------------------------------------------------------------------
    def field(self, cond: FieldCondition) -> Expr:
        fid = cond.field_id
        if fid is not None:
            where = (field_values.c.contact_id == self.c.id, field_values.c.field_id == fid)
            if self.field_types.get(fid) == "number":
                num = sa.select(field_values.c.value_num).where(*where).scalar_subquery()
                return self.number(num, cond.op, cond.value)
            txt = sa.func.coalesce(sa.select(field_values.c.value).where(*where).scalar_subquery(), "")
            return self.text(txt, cond.op, cond.value)
        if cond.subject == "lead_score":
            # integer vs float argument compares numerically on both databases: no cast, so the
            # comparison stays a plain column test
            return self.number(self.c.lead_score, cond.op, cond.value, nullable=False)
        if cond.subject == "lead_status":
            return self.text(self.lead_status(), cond.op, cond.value)
        return self.text(self.c[cond.subject], cond.op, cond.value)

    def lead_status(self) -> ColumnElement[str]:
        if not self.thresholds:
            return sa.literal("")
        whens = [(self.c.lead_score >= m, sa.literal(label)) for m, label in reversed(self.thresholds)]
        return sa.case(*whens, else_=sa.literal(self.thresholds[0][1]))

    def activity(self, cond: ActivityCondition, now: datetime) -> Expr:
        a = activities.alias("act")
        where: list[Expr] = [a.c.contact_id == self.c.id, a.c.kind == cond.kind]
        if cond.ref_id is not None:
            where.append(a.c.ref_id == cond.ref_id)
        if cond.within_days is not None:
            where.append(a.c.occurred_at >= now - timedelta(days=cond.within_days))
        if cond.url_op is not None:
            where.append(self.text(a.c.url, cond.url_op, cond.url))
        if cond.min_count == 1:
            return sa.exists().where(*where)
        counted = sa.select(sa.func.count()).select_from(a).where(*where).scalar_subquery()
        return counted >= cond.min_count

    def node(self, node: Condition, now: datetime) -> Expr:
        if isinstance(node, Group):
            # cheapest first: both databases short-circuit AND/OR left to right, and the order of
            # side-effect-free terms does not change the result
            parts = [self.node(ch, now) for ch in sorted(node.conditions, key=_cost)]
            if node.op == "and":
                return sa.and_(sa.true(), *parts)
            return sa.or_(sa.false(), *parts)
        if isinstance(node, FieldCondition):
            return self.field(node)
        return self.activity(node, now)


def _cost(node: Condition) -> int:
    if isinstance(node, Group):
        return max((_cost(ch) for ch in node.conditions), default=0) + 1
    if isinstance(node, FieldCondition):
        return 0 if node.field_id is None else 1
    return 2


def compile_sql(
    node: Condition | None,
    *,
    backend: Backend,
    now: datetime,
    field_types: Mapping[int, str],
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    contact: sa.FromClause = contacts,
) -> Expr:
    """A boolean SQL expression over ``contact`` (the ``contacts`` table or an alias of it).

    ``now`` anchors the "within the last N days" windows, exactly as for the Python predicate.
    """
    if node is None:
        return sa.true()
    compiler = _Compiler(backend=backend, contact=contact, field_types=field_types, thresholds=thresholds)
    return compiler.node(node, now)
