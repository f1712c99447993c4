"""The automation builder's words: triggers, operators and activity kinds as a marketer says them.

The values sent and stored stay the rule language's codes (:mod:`contactsync.automation.rules`);
only what the page shows changes. Operators are offered per value type, exactly as the service
accepts them (``TEXT_OPS`` for text and choices, ``ORDERED_OPS`` for numbers and dates), so the
builder cannot offer what saving would refuse.
"""

from __future__ import annotations

from typing import Any

from contactsync.automation.rules import BUILTIN_SUBJECTS, ORDERED_OPS, TEXT_OPS, TRIGGERS

TRIGGER_WORDS = {
    "contact.created": "a contact is added to the list",
    "contact.updated": "a contact's details change",
    "campaign.opened": "a contact opens a campaign",
    "link.clicked": "a contact clicks a link",
    "page.visited": "a contact visits a page",
    "goal.reached": "a contact reaches a goal",
    "webhook.triggered": "a webhook arrives for a contact",
    "lead_score.changed": "a contact's lead score changes",
    "manual": "only when run by hand",
}
assert set(TRIGGER_WORDS) == set(TRIGGERS)

OPERATOR_WORDS = {
    "eq": "is",
    "ne": "is not",
    "in": "is any of",
    "contains": "contains",
    "not_contains": "does not contain",
    "starts_with": "starts with",
    "ends_with": "ends with",
    "matches": "matches the pattern (* and ?)",
    "empty": "is empty",
    "not_empty": "is not empty",
    "gt": "is more than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
}
"""In the order the builder offers them."""

ORDERED_WORDS = {"gt": "is after", "gte": "is on or after", "lt": "is before", "lte": "is on or before"}
"""Date fields say the ordered comparisons in time."""

KIND_WORDS = {
    "campaign_open": ("opened a campaign", "opened campaign id"),
    "link_click": ("clicked a link", "whose address contains"),
    "page_visit": ("visited a page", "whose address contains"),
    "goal": ("reached a goal", "goal id"),
    "automation": ("went through an automation", "automation id"),
    "webhook": ("triggered a webhook", "webhook id"),
}
"""Each activity kind's sentence and the words before its narrowing box (an address or an id)."""

BUILTIN_NAMES = {
    "email": "Email",
    "phone": "Phone",
    "status": "Subscription status",
    "lead_score": "Lead score",
    "lead_status": "Lead status",
}

CONTACT_STATUSES = ("subscribed", "unsubscribed")


def operators_for(kind: str) -> list[str]:
    """The operator codes that apply to a value of ``kind`` (the service's own rule)."""
    allowed = ORDERED_OPS if kind in {"number", "date"} else TEXT_OPS
    return [op for op in OPERATOR_WORDS if op in allowed]


def subjects(fields: list[dict[str, Any]], lead_statuses: list[str]) -> list[dict[str, Any]]:
    """Everything a field condition can compare, with its words, its operators and, for a choice
    field or a status, the values to pick from."""
    out: list[dict[str, Any]] = []
    for name, kind in BUILTIN_SUBJECTS.items():
        choices: list[str] = []
        if name == "status":
            choices = list(CONTACT_STATUSES)
        elif name == "lead_status":
            choices = list(lead_statuses)
        out.append(
            {
                "value": name,
                "label": BUILTIN_NAMES.get(name, name),
                "type": kind,
                "choices": choices,
                "ops": operators_for(kind),
            }
        )
    for f in fields:
        out.append(
            {
                "value": f"field:{f['id']}",
                "label": f["name"],
                "type": f["type"],
                "choices": f["choices"],
                "ops": operators_for(f["type"]),
            }
        )
    return out


def builder_data(fields: list[dict[str, Any]], lead_statuses: list[str]) -> dict[str, Any]:
    """What the page's builder script reads (JSON in the page)."""
    return {
        "subjects": subjects(fields, lead_statuses),
        "operators": OPERATOR_WORDS,
        "ordered": ORDERED_WORDS,
        "kinds": {k: {"label": v[0], "narrow": v[1]} for k, v in KIND_WORDS.items()},
    }
