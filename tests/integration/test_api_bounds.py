"""Integers past what their columns hold are refused on input: a 422 naming the field, nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contactsync.db import platform as t
from support.api import Api, api_client

TOO_BIG = 2**63
TOO_SMALL = -(2**63) - 1


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    with api_client(db_url) as client:
        yield client


def _refused(response: object, field: str) -> None:
    assert getattr(response, "status_code") == 422, getattr(response, "text")  # noqa: B009
    assert response.json()["field"] == field  # type: ignore[attr-defined]


def test_event_ids_beyond_64_bits(api: Api) -> None:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "l"})
    c = api.ok("POST", f"/api/lists/{lst['id']}/contacts", 201, json={"email": "a@b.co"})["contact"]
    opened = {"kind": "campaign.opened", "contact_id": c["id"], "campaign_id": 3}
    cases = [
        ({**opened, "contact_id": TOO_BIG}, "events[1].contact_id"),
        ({**opened, "campaign_id": TOO_BIG}, "events[1].campaign_id"),
        ({**opened, "campaign_id": TOO_SMALL}, "events[1].campaign_id"),
        ({"kind": "goal.reached", "contact_id": c["id"], "goal_id": TOO_BIG}, "events[1].goal_id"),
        ({"kind": "webhook.triggered", "contact_id": c["id"], "webhook_id": TOO_BIG}, "events[1].webhook_id"),
        (
            {"kind": "lead_score.changed", "contact_id": c["id"], "score_id": TOO_BIG, "value": 1},
            "events[1].score_id",
        ),
        ({"kind": "page.visited", "list_id": TOO_BIG, "email": "a@b.co", "url": "u"}, "events[1].list_id"),
    ]
    for event, field in cases:
        _refused(api.post("/api/events", json={"events": [opened, event]}), field)
    assert api.count(t.activities) == 0
    largest = {**opened, "campaign_id": TOO_BIG - 1}  # the bound itself is fine
    assert api.ok("POST", "/api/events", 202, json={"events": [largest]})["accepted"] == 1


def test_automation_ids_and_thresholds_beyond_their_columns(api: Api) -> None:
    lst = api.ok("POST", "/api/lists", 201, json={"name": "l"})
    base = {"list_id": lst["id"], "name": "a", "trigger": {"event": "campaign.opened"}}
    cases = [
        ({**base, "list_id": TOO_BIG}, "list_id"),
        ({**base, "trigger": {"event": "campaign.opened", "ref_id": TOO_BIG}}, "trigger.ref_id"),
        ({**base, "trigger": {"event": "contact.updated", "fields": [TOO_BIG]}}, "trigger.fields[0]"),
        (
            {
                **base,
                "conditions": {
                    "op": "and",
                    "conditions": [{"type": "activity", "kind": "campaign_open", "ref_id": TOO_BIG}],
                },
            },
            "conditions.conditions[0].ref_id",
        ),
    ]
    for body, field in cases:
        _refused(api.post("/api/automations", json=body), field)
    assert api.count(t.automations) == 0
    # lead scores are 32-bit columns
    body = {"thresholds": [{"min_score": 0, "label": "Ice"}, {"min_score": 2**31, "label": "Fire"}]}
    response = api.client.put("/api/lead-status-thresholds", json=body)
    _refused(response, "thresholds[1].min_score")
