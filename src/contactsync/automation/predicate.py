"""Compile a condition tree to a Python predicate over one contact's snapshot.

Used on the event path (one contact, inside the event's transaction) and as the reference the SQL
compiler is tested against. Semantics are fixed in :mod:`contactsync.automation.rules`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from contactsync.automation.rules import ActivityCondition, Condition, FieldCondition, Group, Scalar

Predicate = Callable[["ContactView", datetime], bool]
Thresholds = Sequence[tuple[int, str]]
"""Lead status thresholds as ``(min_score, label)``, ascending by ``min_score``."""

DEFAULT_THRESHOLDS: Thresholds = ((0, "Cold"), (20, "Warm"), (50, "Hot"))


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One activity of a contact, as far as conditions look at it."""

    kind: str
    ref_id: int | None
    url: str
    occurred_at: datetime


@dataclass(slots=True)
class ContactView:
    """What a predicate may look at: built-ins, field values (text, number) and activity."""

    id: int
    email: str
    phone: str
    status: str
    lead_score: int
    values: dict[int, tuple[str, float | None]] = field(default_factory=dict)
    activities: list[ActivityRow] = field(default_factory=list)


def lead_label(score: int, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> str:
    """Label of the highest threshold at or below ``score``; the lowest label below all of them."""
    label = thresholds[0][1] if thresholds else ""
    for min_score, name in thresholds:
        if score >= min_score:
            label = name
    return label


def text_arg(value: Scalar) -> str:
    """A condition argument as the text it is compared with (shared with the SQL compiler)."""
    return value if isinstance(value, str) else str(value)


def number_arg(value: Scalar) -> float:
    """A condition argument as a number; validated on save, so this does not fail on stored rules."""
    return float(value)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` any run, ``?`` one character, everything else literal; matches the whole value."""
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _text_test(op: str, arg: Scalar | list[Scalar] | None) -> Callable[[str], bool]:
    if op == "in":
        assert isinstance(arg, list)
        members = frozenset(text_arg(a) for a in arg)
        return lambda v: v in members
    if op == "empty":
        return lambda v: v == ""
    if op == "not_empty":
        return lambda v: v != ""
    assert arg is not None
    assert not isinstance(arg, list)
    a = text_arg(arg)
    if op == "matches":
        rx = glob_regex(a)
        return lambda v: rx.fullmatch(v) is not None
    tests: dict[str, Callable[[str], bool]] = {
        "eq": lambda v: v == a,
        "ne": lambda v: v != a,
        "contains": lambda v: a in v,
        "not_contains": lambda v: a not in v,
        "starts_with": lambda v: v.startswith(a),
        "ends_with": lambda v: v.endswith(a),
        # ordered text (dates): a missing value fails every comparison
        "gt": lambda v: v != "" and v > a,
        "gte": lambda v: v != "" and v >= a,
        "lt": lambda v: v != "" and v < a,
        "lte": lambda v: v != "" and v <= a,
    }
    return tests[op]


def _number_test(op: str, arg: Scalar | list[Scalar] | None) -> Callable[[float | None], bool]:
    if op == "in":
        assert isinstance(arg, list)
        members = frozenset(number_arg(a) for a in arg)
        return lambda v: v is not None and v in members
    if op == "empty":
        return lambda v: v is None
    if op == "not_empty":
        return lambda v: v is not None
    assert arg is not None
    assert not isinstance(arg, list)
    a = number_arg(arg)
    tests: dict[str, Callable[[float | None], bool]] = {
        "eq": lambda v: v is not None and v == a,
        "ne": lambda v: not (v is not None and v == a),
        "gt": lambda v: v is not None and v > a,
        "gte": lambda v: v is not None and v >= a,
        "lt": lambda v: v is not None and v < a,
        "lte": lambda v: v is not None and v <= a,
    }
    return tests[op]


def _field(cond: FieldCondition, field_types: Mapping[int, str], thresholds: Thresholds) -> Predicate:
    fid = cond.field_id
    if fid is not None:
        if field_types.get(fid) == "number":
            ntest = _number_test(cond.op, cond.value)
            return lambda c, _now: ntest(c.values.get(fid, ("", None))[1])
        ttest = _text_test(cond.op, cond.value)
        return lambda c, _now: ttest(c.values.get(fid, ("", None))[0])
    if cond.subject == "lead_score":
        ntest = _number_test(cond.op, cond.value)
        return lambda c, _now: ntest(float(c.lead_score))
    ttest = _text_test(cond.op, cond.value)
    if cond.subject == "lead_status":
        return lambda c, _now: ttest(lead_label(c.lead_score, thresholds))
    attr = cond.subject
    return lambda c, _now: ttest(getattr(c, attr))


def _activity(cond: ActivityCondition) -> Predicate:
    url_test = _text_test(cond.url_op, cond.url) if cond.url_op is not None else None
    window = timedelta(days=cond.within_days) if cond.within_days is not None else None
    kind, ref_id, need = cond.kind, cond.ref_id, cond.min_count

    def test(c: ContactView, now: datetime) -> bool:
        cutoff = now - window if window is not None else None
        count = 0
        for a in c.activities:
            if a.kind != kind or (ref_id is not None and a.ref_id != ref_id):
                continue
            if cutoff is not None and a.occurred_at < cutoff:
                continue
            if url_test is not None and not url_test(a.url):
                continue
            count += 1
            if count >= need:
                return True
        return False

    return test


def compile_predicate(
    node: Condition | None,
    *,
    field_types: Mapping[int, str],
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Predicate:
    """A function ``(contact, now) -> bool``; ``None`` (no conditions) always holds."""
    if node is None:
        return lambda _c, _now: True
    if isinstance(node, Group):
        children = [
            compile_predicate(ch, field_types=field_types, thresholds=thresholds) for ch in node.conditions
        ]
        if node.op == "and":
            return lambda c, now: all(ch(c, now) for ch in children)
        return lambda c, now: any(ch(c, now) for ch in children)
    if isinstance(node, FieldCondition):
        return _field(node, field_types, thresholds)
    return _activity(node)


Prefilter = Callable[["ContactView", datetime], bool | None]


def compile_prefilter(
    node: Condition | None,
    *,
    field_types: Mapping[int, str],
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Prefilter:
    """The predicate without activity: ``True``/``False`` when contact data alone decides, ``None``
    when activity could change the answer (three-valued AND/OR).

    The event path evaluates it first and loads activity only for the undecided contacts.
    """
    if node is None:
        return lambda _c, _now: True
    if isinstance(node, ActivityCondition):
        return lambda _c, _now: None
    if isinstance(node, FieldCondition):
        return _field(node, field_types, thresholds)
    children = [
        compile_prefilter(ch, field_types=field_types, thresholds=thresholds) for ch in node.conditions
    ]
    decisive = node.op == "or"  # the value that settles the group: True for OR, False for AND

    def group(c: ContactView, now: datetime) -> bool | None:
        unknown = False
        for ch in children:
            value = ch(c, now)
            if value is None:
                unknown = True
            elif value is decisive:
                return decisive
        return None if unknown else not decisive

    return group
