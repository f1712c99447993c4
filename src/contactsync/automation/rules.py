"""The definition of an automation: trigger, condition tree and re-entry policy (automation.md).

One definition, two compilers (:mod:`~contactsync.automation.predicate` for one contact in Python,
:mod:`~contactsync.automation.compile_sql` for whole lists). Everything the two must agree on is
fixed here, as data:

* Text comparisons are exact and case-sensitive on the stored value; a missing value is ``""``.
* ``matches`` is a whole-value wildcard pattern (``*`` any run, ``?`` one character), not a regular
  expression: regex flavours differ between Python, SQLite and PostgreSQL, wildcards do not.
* Number comparisons use the numeric value; a contact without one fails every comparison except
  ``ne`` (which is ``not eq``) and ``empty``.
* Dates compare as their canonical text (``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM:SS``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

TRIGGERS = (
    "contact.created",
    "contact.updated",
    "campaign.opened",
    "link.clicked",
    "page.visited",
    "goal.reached",
    "webhook.triggered",
    "lead_score.changed",
    "manual",
)
Trigger = Literal[
    "contact.created",
    "contact.updated",
    "campaign.opened",
    "link.clicked",
    "page.visited",
    "goal.reached",
    "webhook.triggered",
    "lead_score.changed",
    "manual",
]

TEXT_OPS = frozenset(
    {
        "eq",
        "ne",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        "empty",
        "not_empty",
        "in",
        "matches",
    }
)
ORDERED_OPS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "empty", "not_empty"})
Op = Literal[
    "eq",
    "ne",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "empty",
    "not_empty",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "matches",
]
UNARY_OPS = frozenset({"empty", "not_empty"})

BUILTIN_SUBJECTS = {
    "email": "text",
    "phone": "text",
    "status": "text",
    "lead_score": "number",
    "lead_status": "text",
}
"""Condition subjects other than custom fields (``field:<id>``), with the type that picks their operators."""

ActivityKind = Literal["campaign_open", "link_click", "page_visit", "goal", "automation", "webhook"]
URL_KINDS = frozenset({"link_click", "page_visit"})
UrlOp = Literal["eq", "contains", "starts_with", "ends_with", "matches"]

Int64 = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)]
"""An integer input that ends up in a 64-bit column or comparison: larger ones are refused on input
(a 422 naming the field) instead of failing in the database."""
Int32 = Annotated[int, Field(ge=-(1 << 31), le=(1 << 31) - 1)]
"""An integer input stored in a 32-bit column (lead scores and their thresholds)."""

Scalar = str | int | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldCondition(_Strict):
    """Compare a contact attribute: a built-in (``email``, ``lead_score`` …) or ``field:<id>``."""

    type: Literal["field"] = "field"
    subject: str = Field(description="built-in name or 'field:<id>'")
    op: Op
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> FieldCondition:
        if self.subject not in BUILTIN_SUBJECTS:
            prefix, _, num = self.subject.partition(":")
            if prefix != "field" or not num.isdigit():
                raise ValueError(f"unknown subject {self.subject!r}: a built-in or 'field:<id>'")
        if self.op in UNARY_OPS:
            if self.value is not None:
                raise ValueError(f"operator {self.op!r} takes no value")
        elif self.op == "in":
            if not isinstance(self.value, list):
                raise ValueError("operator 'in' takes a list of values")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"operator {self.op!r} takes one value")
        return self

    @property
    def field_id(self) -> int | None:
        """The custom field id, or None for a built-in subject."""
        return int(self.subject.split(":", 1)[1]) if self.subject.startswith("field:") else None


class ActivityCondition(_Strict):
    """ "Opened campaign X", "clicked a url containing …", "visited a page matching … at least N times"."""

    type: Literal["activity"] = "activity"
    kind: ActivityKind
    ref_id: Int64 | None = Field(default=None, description="campaign/goal/automation/webhook id; None: any")
    url_op: UrlOp | None = None
    url: str | None = None
    min_count: int = Field(default=1, ge=1, le=1_000_000)
    within_days: int | None = Field(default=None, ge=1, le=36_500)

    @model_validator(mode="after")
    def _check_shape(self) -> ActivityCondition:
        if (self.url_op is None) != (self.url is None):
            raise ValueError("url_op and url go together")
        if self.url_op is not None and self.kind not in URL_KINDS:
            raise ValueError(f"{self.kind} activity has no url to compare")
        if self.ref_id is not None and self.kind in URL_KINDS:
            raise ValueError(f"{self.kind} activity has no id to compare")
        return self


class Group(_Strict):
    """AND/OR over children; an empty AND holds, an empty OR does not."""

    type: Literal["group"] = "group"
    op: Literal["and", "or"] = "and"
    conditions: list[Condition] = Field(default_factory=list, max_length=200)


Condition = Annotated[Union[FieldCondition, ActivityCondition, Group], Field(discriminator="type")]  # noqa: UP007
Group.model_rebuild()


class Reentry(_Strict):
    """May a contact go through again: ``once`` (default), ``always`` or ``per_hours``."""

    policy: Literal["once", "always", "per_hours"] = "once"
    hours: int | None = Field(default=None, ge=1, le=24 * 3650)

    @model_validator(mode="after")
    def _check_hours(self) -> Reentry:
        if (self.policy == "per_hours") != (self.hours is not None):
            raise ValueError("hours is required for 'per_hours' and only for it")
        return self


class TriggerSpec(_Strict):
    """What starts the automation; ``fields`` narrows contact.updated, ``ref_id`` the activity triggers."""

    event: Trigger
    fields: list[Int64] = Field(default_factory=list, description="contact.updated: only when these change")
    ref_id: Int64 | None = Field(default=None, description="campaign/goal/webhook id the event must carry")

    @model_validator(mode="after")
    def _check(self) -> TriggerSpec:
        if self.fields and self.event != "contact.updated":
            raise ValueError("fields only narrow contact.updated")
        if self.ref_id is not None and self.event not in {
            "campaign.opened",
            "goal.reached",
            "webhook.triggered",
        }:
            raise ValueError(f"{self.event} carries no id to filter on")
        return self


ACTIVITY_TRIGGER_KIND = {
    "campaign.opened": "campaign_open",
    "link.clicked": "link_click",
    "page.visited": "page_visit",
    "goal.reached": "goal",
    "webhook.triggered": "webhook",
    "lead_score.changed": "lead_score",
}
"""Activity kind whose ingestion fires each activity trigger."""


def walk(node: Condition) -> list[FieldCondition | ActivityCondition]:
    """Leaves of a condition tree, depth first."""
    if isinstance(node, Group):
        return [leaf for child in node.conditions for leaf in walk(child)]
    return [node]


def depth(node: Condition) -> int:
    """Nesting depth (a leaf is 1); the API caps it so compiled SQL stays small."""
    if isinstance(node, Group):
        return 1 + max((depth(c) for c in node.conditions), default=0)
    return 1
