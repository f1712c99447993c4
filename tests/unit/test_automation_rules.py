"""Pure parts of automation: rule models, the Python predicate, the prefilter, settings and helpers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.automation.action_settings import (
    Header,
    SyncActionSettings,
    capacity_warnings,
    validate_settings,
    worst_case_variables,
)
from contactsync.automation.predicate import (
    ActivityRow,
    ContactView,
    compile_predicate,
    compile_prefilter,
    glob_regex,
    lead_label,
)
from contactsync.automation.rules import ActivityCondition, FieldCondition, Group, Reentry, TriggerSpec
from contactsync.delivery.endpoints import endpoint_key
from contactsync.errors import ValidationError
from support import examples

NOW = datetime(2026, 1, 31, 12, 0, 0)


def view(**kw: object) -> ContactView:
    base: dict[str, object] = {
        "id": 1,
        "email": "jane@x.test",
        "phone": "",
        "status": "subscribed",
        "lead_score": 0,
    }
    return ContactView(**{**base, **kw})  # type: ignore[arg-type]


def holds(rule: Mapping[str, object], contact: ContactView, types: dict[int, str] | None = None) -> bool:
    return compile_predicate(Group.model_validate(rule), field_types=types or {})(contact, NOW)


@pytest.mark.parametrize(
    ("score", "label"),
    [(-5, "Cold"), (0, "Cold"), (19, "Cold"), (20, "Warm"), (49, "Warm"), (50, "Hot"), (900, "Hot")],
)
def test_default_lead_status_thresholds(score: int, label: str) -> None:
    assert lead_label(score) == label


def test_custom_thresholds() -> None:
    assert lead_label(5, ((10, "A"), (20, "B"))) == "A"
    assert lead_label(25, ((10, "A"), (20, "B"))) == "B"


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("*", "", True),
        ("a*c", "abbbc", True),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a.c", "abc", False),
        ("[a]", "[a]", True),
        ("[a]", "a", False),
        ("100%", "100%", True),
        ("*pricing*", "https://x.test/pricing?a", True),
        ("A*", "abc", False),
    ],
)
def test_matches_is_a_whole_value_wildcard(pattern: str, text: str, expected: bool) -> None:
    assert (glob_regex(pattern).fullmatch(text) is not None) is expected


def test_and_or_and_empty_groups() -> None:
    contact = view(email="jane@acme.test")
    yes = {"type": "field", "subject": "email", "op": "ends_with", "value": "@acme.test"}
    no = {"type": "field", "subject": "email", "op": "starts_with", "value": "bob"}
    assert holds({"op": "and", "conditions": [yes]}, contact)
    assert not holds({"op": "and", "conditions": [yes, no]}, contact)
    assert holds({"op": "or", "conditions": [no, yes]}, contact)
    assert holds({"op": "and", "conditions": []}, contact)
    assert not holds({"op": "or", "conditions": []}, contact)
    assert compile_predicate(None, field_types={})(contact, NOW)


def test_numbers_compare_as_numbers_and_missing_fails_all_but_ne() -> None:
    types = {1: "number"}
    ten = view(values={1: ("10", 10.0)})
    nothing = view()
    gt9 = {"conditions": [{"type": "field", "subject": "field:1", "op": "gt", "value": "9"}]}
    ne5 = {"conditions": [{"type": "field", "subject": "field:1", "op": "ne", "value": 5}]}
    empty = {"conditions": [{"type": "field", "subject": "field:1", "op": "empty"}]}
    assert holds(gt9, ten, types)  # "10" > "9" is false as text, true as numbers
    assert not holds(gt9, nothing, types)
    assert holds(ne5, nothing, types)
    assert holds(empty, nothing, types)
    assert not holds(empty, ten, types)


def test_activity_counts_within_the_window() -> None:
    visits = [
        ActivityRow("page_visit", None, "https://x.test/pricing", NOW - timedelta(days=d)) for d in (1, 3, 9)
    ]
    contact = view(activities=visits)
    rule = {
        "conditions": [
            {"type": "activity", "kind": "page_visit", "url_op": "contains", "url": "pricing", "min_count": 2}
        ]
    }
    assert holds(rule, contact)
    rule["conditions"][0]["within_days"] = 7
    assert holds(rule, contact)
    rule["conditions"][0]["min_count"] = 3
    assert not holds(rule, contact)
    exactly = view(activities=[ActivityRow("goal", 4, "", NOW - timedelta(days=7))])
    at_edge = {"conditions": [{"type": "activity", "kind": "goal", "ref_id": 4, "within_days": 7}]}
    assert holds(at_edge, exactly)  # the window includes its start


def test_prefilter_decides_without_activity_only_when_it_can() -> None:
    rule = Group.model_validate(
        {
            "op": "and",
            "conditions": [
                {"type": "field", "subject": "lead_score", "op": "gte", "value": 20},
                {"type": "activity", "kind": "campaign_open"},
            ],
        }
    )
    pre = compile_prefilter(rule, field_types={})
    assert pre(view(lead_score=5), NOW) is False
    assert pre(view(lead_score=25), NOW) is None
    either = Group(op="or", conditions=rule.conditions)
    assert compile_prefilter(either, field_types={})(view(lead_score=25), NOW) is True


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "field", "subject": "nickname", "op": "eq", "value": "x"},
        {"type": "field", "subject": "email", "op": "empty", "value": "x"},
        {"type": "field", "subject": "email", "op": "in", "value": "x"},
        {"type": "field", "subject": "email", "op": "eq"},
        {"type": "activity", "kind": "goal", "url_op": "contains", "url": "x"},
        {"type": "activity", "kind": "page_visit", "ref_id": 3},
        {"type": "activity", "kind": "page_visit", "url_op": "contains"},
        {"type": "activity", "kind": "goal", "min_count": 0},
    ],
)
def test_malformed_conditions_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Group.model_validate({"conditions": [bad]})


def test_reentry_and_trigger_shapes() -> None:
    assert Reentry().policy == "once"
    with pytest.raises(pydantic.ValidationError):
        Reentry(policy="per_hours")
    with pytest.raises(pydantic.ValidationError):
        Reentry(policy="once", hours=3)
    with pytest.raises(pydantic.ValidationError):
        TriggerSpec(event="campaign.opened", fields=[1])
    with pytest.raises(pydantic.ValidationError):
        TriggerSpec(event="page.visited", ref_id=1)
    assert TriggerSpec(event="contact.updated", fields=[3]).fields == [3]


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://x.test/a?b", "https://x.test:443"),
        ("http://x.test/", "http://x.test:80"),
        ("http://X.test:8080/p", "http://x.test:8080"),
        ("http://[::1]:9/", "http://[::1]:9"),
        ("http://[::1]/", "http://[::1]:80"),
        ("HTTPS://u:p@X.test/", "https://x.test:443"),
    ],
)
def test_endpoint_key(url: str, endpoint: str) -> None:
    assert endpoint_key(url) == endpoint


@pytest.mark.parametrize("url", ["ftp://x.test/", "http:///path", "x.test"])
def test_endpoint_key_is_only_of_an_http_url(url: str) -> None:
    with pytest.raises(ValidationError):
        endpoint_key(url)


def test_settings_defaults_follow_the_specs() -> None:
    s = SyncActionSettings(url="https://x.test/")
    assert (s.method, s.content_type, s.max_items, s.date_format, s.time_zone) == (
        "POST",
        "form",
        100,
        "datetime",
        "UTC",
    )
    assert (s.connect_timeout_s, s.timeout_s, s.ordered_per_contact) == (5.0, 15.0, False)
    assert s.retry_schedule_s == [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    assert len(s.sections) == 9
    validate_settings(s, [])


def test_template_errors_carry_line_and_column() -> None:
    with pytest.raises(ValidationError) as info:
        validate_settings(SyncActionSettings(url="https://x.test/?a=[#NOPE#]"), ["FIRST_NAME"])
    assert info.value.field == "url"
    assert "line 1, column 21" in str(info.value)


def test_capacity_warning_suggests_a_fix() -> None:
    small = SyncActionSettings(url="https://x.test/", sections=["fields", "lead-status"])
    assert worst_case_variables(small, 10) == 5 + 2 + 30
    assert capacity_warnings(small, 10) == []
    full = SyncActionSettings(url="https://x.test/")
    assert "max_items" in capacity_warnings(full, 10)[0]
    assert capacity_warnings(SyncActionSettings(url="https://x.test/", content_type="json"), 10) == []


@settings(max_examples=examples(ci=200))
@given(st.text(max_size=20), st.text(max_size=5))
def test_text_operators_match_python_string_methods(value: str, arg: str) -> None:
    contact = view(phone=value)
    for op, expected in [
        ("eq", value == arg),
        ("ne", value != arg),
        ("contains", arg in value),
        ("not_contains", arg not in value),
        ("starts_with", value.startswith(arg)),
        ("ends_with", value.endswith(arg)),
    ]:
        rule = {"conditions": [{"type": "field", "subject": "phone", "op": op, "value": arg}]}
        assert holds(rule, contact) is expected, op


def test_header_model_is_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        Header(name="", value="x")
    with pytest.raises(pydantic.ValidationError):
        SyncActionSettings(url="https://x.test/", unknown=1)  # type: ignore[call-arg]
    assert FieldCondition(subject="field:12", op="empty").field_id == 12
    assert ActivityCondition(kind="goal").min_count == 1
