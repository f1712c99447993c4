"""The demo's data: an account, a list with custom fields, contacts with months of activity, and the
three automations that sync them to the demo's listener."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from contactsync.automation.action_settings import SyncActionSettings
from contactsync.automation.actions import create_action
from contactsync.automation.activity import (
    CampaignOpened,
    Event,
    GoalReached,
    LeadScored,
    LinkClicked,
    PageVisited,
    insert_activities,
)
from contactsync.automation.automations import AutomationIn, create_automation
from contactsync.automation.contacts import ContactIn, upsert_contact
from contactsync.automation.lists import FieldIn, ListIn, create_account, create_field, create_list
from contactsync.automation.runtime import Runtime
from contactsync.demo.config import DemoConfig
from contactsync.wire.payload import SECTIONS

FIRST = ("jane", "john", "amélie", "li", "omar", "sofia", "lukas", "maría", "kenji", "ava", "noah", "zoë")
LAST = ("doe", "smith", "o'neil", "müller", "garcía", "tanaka", "nguyen", "rossi", "kowalski", "dubois")
CITIES = ("Paris", "Berlin", "São Paulo", "Tokyo", "Toronto", "Lagos", "Sydney", "Austin", "Kraków")
PLANS = ("free", "starter", "pro", "enterprise")
CAMPAIGNS = ((1, "Spring launch"), (2, "Weekly digest #41"), (3, "Webinar invite"), (4, "Black Friday"))
PAGES = ("https://shop.example/pricing", "https://shop.example/docs/start", "https://shop.example/blog/sync")
LINKS = (
    "https://shop.example/offer?utm=mail",
    "https://shop.example/webinar",
    "https://shop.example/pricing",
)
GOALS = ((1, "Signed up for webinar"), (2, "Started trial"))

ALL_SECTIONS = [s for s in SECTIONS if s not in {"transactionid", "contact"}]
MAX_ITEMS = 20
"""What the demo's POST actions send: every section, the 20 most recent items of each."""


@dataclass(frozen=True, slots=True)
class Seeded:
    account_id: int
    list_id: int
    contact_ids: list[int]
    automation_ids: list[int]
    secrets: list[str]


def _contact(rng: random.Random, i: int) -> ContactIn:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    signup = datetime(2025, 1, 1) + timedelta(days=rng.randrange(600))
    return ContactIn(
        list_id=0,
        email=f"{first}.{last}.{i}@example.com".replace("'", ""),
        phone=f"+1 (555) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
        status="unsubscribed" if rng.random() < 0.1 else "subscribed",
        fields={
            "FIRST_NAME": first,
            "LAST_NAME": last,
            "CITY": rng.choice(CITIES),
            "PLAN": rng.choice(PLANS),
            "SIGNUP_DATE": signup.strftime("%Y-%m-%d"),
        },
    )


def random_event(rng: random.Random, contact_id: int, at: datetime | None = None) -> Event:
    """One plausible activity event for ``contact_id`` (``at`` None: now)."""
    roll = rng.random()
    if roll < 0.35:
        cid, name = rng.choice(CAMPAIGNS)
        return CampaignOpened(
            kind="campaign.opened", contact_id=contact_id, campaign_id=cid, campaign_name=name, occurred_at=at
        )
    if roll < 0.6:
        return PageVisited(kind="page.visited", contact_id=contact_id, url=rng.choice(PAGES), occurred_at=at)
    if roll < 0.8:
        return LinkClicked(kind="link.clicked", contact_id=contact_id, url=rng.choice(LINKS), occurred_at=at)
    if roll < 0.9:
        gid, name = rng.choice(GOALS)
        return GoalReached(
            kind="goal.reached", contact_id=contact_id, goal_id=gid, goal_name=name, occurred_at=at
        )
    return LeadScored(
        kind="lead_score.changed",
        contact_id=contact_id,
        score_id=1,
        name="Engagement",
        value=rng.choice((5, 10, 15)),
        occurred_at=at,
    )


def seed(engine: sa.Engine, rt: Runtime, *, config: DemoConfig, listener_url: str) -> Seeded:
    """The demo's list, contacts with history, and its three automations (one transaction)."""
    rng = random.Random(config.seed)
    now = rt.clock()
    with engine.begin() as conn:
        account = create_account(conn, name="Demo", now=now)
        lst = create_list(conn, ListIn(account_id=account, name="Newsletter"), now=now)
        ids = {}
        for name, kind, choices in (
            ("First Name", "text", []),
            ("Last Name", "text", []),
            ("City", "text", []),
            ("Plan", "choice", list(PLANS)),
            ("Signup Date", "date", []),
        ):
            created = create_field(
                conn, FieldIn(list_id=lst.id, name=name, type=kind, choices=choices), now=now
            )
            ids[created.shortcode_key] = created.id
        contact_ids = []
        for i in range(config.contacts):
            data = _contact(rng, i).model_copy(update={"list_id": lst.id})
            contact_ids.append(upsert_contact(conn, data, now=now).contact.id)
        history = [
            random_event(rng, cid, now - timedelta(days=rng.randrange(1, 120), minutes=rng.randrange(1440)))
            for cid in contact_ids
            for _ in range(rng.randrange(0, 6))
        ]
        insert_activities(conn, history, [e.contact_id or 0 for e in history], now=now)
        form = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": lst.id,
                    "name": "Campaign engagement → CRM (POST form)",
                    "trigger": {"event": "campaign.opened"},
                    "conditions": {"type": "group", "op": "and", "conditions": [
                        {"type": "field", "subject": "status", "op": "eq", "value": "subscribed"}]},
                    "reentry": {"policy": "always"},
                }
            ),
        )  # fmt: skip
        post = create_action(
            conn,
            rt,
            automation_id=form.id,
            settings=SyncActionSettings(
                name="Contact to the CRM",
                url=listener_url,
                sections=ALL_SECTIONS,
                max_items=MAX_ITEMS,
                headers=[{"name": "X-Demo", "value": "contactsync"}],
            ),
        )
        get = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": lst.id,
                    "name": "Pricing-page visitors → ad audience (GET template)",
                    "trigger": {"event": "page.visited"},
                    "conditions": {"type": "group", "op": "and", "conditions": [
                        {"type": "activity", "kind": "page_visit", "url_op": "contains", "url": "pricing",
                         "within_days": 30}]},
                    "reentry": {"policy": "per_hours", "hours": 1},
                }
            ),
        )  # fmt: skip
        # wire keys carry the contact's values as they are (the listener merges them into its copy);
        # the ad platform's own parameters show what the functions do to them
        template = (
            f"{listener_url}?transactionid=[#TRANSACTIONID#]&contact[id]=[#ID#]"
            "&contact[email]=[#EMAIL#]&contact[phone]=[#PHONE#]&contact[profile_url]=[#PROFILE_URL#]"
            f"&fields[0][id]={ids['FIRST_NAME']}&fields[0][name]=First+Name&fields[0][value]=[#FIRST_NAME#]"
            f"&fields[1][id]={ids['CITY']}&fields[1][name]=City&fields[1][value]=[#CITY#]"
            "&lead-status[score]=[#LEAD_SCORE#]&lead-status[label]=[#LEAD_STATUS#]"
            "&audience_email=[#EMAIL_NORMALIZE EMAIL#]&audience_phone=[#PHONE_E164 PHONE#]"
            "&greeting=[#PROPER FIRST_NAME#]&region=[#UPPER CITY#]"
        )
        get_action = create_action(
            conn,
            rt,
            automation_id=get.id,
            settings=SyncActionSettings(name="Visitor to the ad audience", url=template, method="GET"),
        )
        resync = create_automation(
            conn,
            rt,
            AutomationIn.model_validate(
                {
                    "list_id": lst.id,
                    "name": "Full resync → listener (manual)",
                    "trigger": {"event": "manual"},
                    "reentry": {"policy": "always"},
                }
            ),
        )
        resync_action = create_action(
            conn,
            rt,
            automation_id=resync.id,
            settings=SyncActionSettings(
                name="Everyone to the listener", url=listener_url, sections=ALL_SECTIONS, max_items=MAX_ITEMS
            ),
        )
    secrets_in_clear = [rt.keyring.open(a.secret) for a in (post, get_action, resync_action)]
    return Seeded(account, lst.id, contact_ids, [form.id, get.id, resync.id], secrets_in_clear)
