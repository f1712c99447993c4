"""The explain panel's plain words, and which failing condition its verdict blames."""

from __future__ import annotations

from typing import Literal

from contactsync.automation.explain import Step
from contactsync.automation.rules import ActivityCondition, FieldCondition, Group, TriggerSpec
from contactsync.web.explain_panel import condition_words, deciding, delay_words, node_at, trigger_words

NAMES = {7: "City", 8: "Age"}


def test_conditions_read_as_sentences() -> None:
    assert (
        condition_words(FieldCondition(subject="field:7", op="eq", value="Paris"), NAMES) == "City is “Paris”"
    )
    assert (
        condition_words(FieldCondition(subject="field:8", op="gte", value=18), NAMES) == "Age is at least 18"
    )
    assert condition_words(FieldCondition(subject="status", op="not_empty"), NAMES) == "Status is not empty"
    assert condition_words(FieldCondition(subject="field:9", op="in", value=["a", "b", "c"]), NAMES) == (
        "field #9 is any of “a”, “b” or “c”"
    )
    visits = ActivityCondition(
        kind="page_visit", url_op="contains", url="pricing", min_count=3, within_days=30
    )
    assert condition_words(visits, NAMES) == (
        "visited a page whose address contains “pricing” at least 3 times in the last 30 days"
    )
    assert condition_words(ActivityCondition(kind="campaign_open", ref_id=5), NAMES) == (
        "opened campaign #5 at least once"
    )
    assert condition_words(Group(op="or"), NAMES) == "at least one of these holds"


def test_triggers_and_delays() -> None:
    spec = TriggerSpec(event="contact.updated", fields=[7, 8])
    assert trigger_words(spec, NAMES) == "When the contact is updated and one of City, Age changed."
    assert trigger_words(TriggerSpec(event="manual"), NAMES).startswith("Only when someone runs it")
    assert [delay_words(s) for s in (0, 90, 120, 7200, 86400 * 2)] == [
        "sends at once",
        "sends 90 seconds after entry",
        "sends 2 minutes after entry",
        "sends 2 hours after entry",
        "sends 2 days after entry",
    ]


def step(path: str, kind: Literal["group", "field", "activity"], result: bool) -> Step:
    depth = 0 if not path else path.count(".") + 1
    return Step(path=path, depth=depth, kind=kind, test="", actual=None, result=result)


def test_the_verdict_blames_a_failing_condition_no_passing_group_rescues() -> None:
    # and(or(a fails, b passes), c fails): a is rescued by b; c decides
    steps = [
        step("", "group", False),
        step("0", "group", True),
        step("0.0", "field", False),
        step("0.1", "field", True),
        step("1", "field", False),
    ]
    assert deciding(steps) == steps[4]
    assert deciding([step("", "group", True), step("0", "field", True)]) is None


def test_a_step_path_finds_its_condition() -> None:
    leaf = FieldCondition(subject="email", op="empty")
    tree = Group(conditions=[Group(op="or", conditions=[FieldCondition(subject="phone", op="empty"), leaf])])
    assert node_at(tree, "0.1") == leaf
    assert node_at(tree, "") == tree
