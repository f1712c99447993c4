"""The endpoints & settings page over real HTTP (SQLite and PostgreSQL): endpoint health, disable and
enable, in-flight cap and rate limit, lead-status thresholds; refusals beside their form with what was
typed kept; one audit row per change."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from support.api import Api, api_client
from support.web import Ui, audit_actions, person, sign_in

EDITOR = "ed@example.com"
ENDPOINT = "https://crm.example:443"


@contextmanager
def setup(db_url: str) -> Iterator[tuple[Api, Ui, dict[str, Any]]]:
    """An automation on contact.created whose action sends to crm.example (no dispatcher: one delivery
    waits), and a signed-in editor."""
    with api_client(db_url, session_secret="s", admin_password="an operator's password") as api:
        lid = api.ok("POST", "/api/lists", 201, json={"name": "Customers"})["id"]
        body = {"list_id": lid, "name": "to the CRM", "trigger": {"event": "contact.created"}}
        auto = api.ok("POST", "/api/automations", 201, json=body)["id"]
        api.ok("POST", f"/api/automations/{auto}/actions", 201, json={"url": "https://crm.example/in"})
        contact = api.ok("POST", f"/api/lists/{lid}/contacts", 201, json={"email": "a@x.com"})["contact"][
            "id"
        ]
        endpoint = next(e["id"] for e in api.ok("GET", "/api/endpoints") if e["endpoint"] == ENDPOINT)
        person(api.engine, EDITOR, account_id=api.account_id, role="editor")
        with closing(sign_in(api.base_url, EDITOR)) as ui:
            yield api, ui, {"endpoint": endpoint, "contact": contact}


def error_of(page: str, form: str) -> str:
    found = re.search(rf'id="error-{form}">(.*?)</p>', page, re.S)
    assert found is not None, f"no error beside {form}"
    return html.unescape(found.group(1))


def row_of(page: str) -> str:
    found = re.search(rf'<tr data-endpoint="{ENDPOINT}">.*?</tr>', page, re.S)
    assert found is not None, page[-3000:]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))))


def test_disable_and_enable_an_endpoint_from_its_page(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        eid = ids["endpoint"]
        row = row_of(ui.get("/endpoints").text)
        assert "healthy" in row
        assert " 1 10 none " in row  # one delivery waits; default cap; no rate limit

        off = ui.post("/endpoints/disable", {"endpoint_id": eid, "reason": "CRM maintenance tonight"})
        assert off.status_code == 303
        assert "disabled: its deliveries wait" in html.unescape(ui.get(off.headers["location"]).text)
        row = row_of(ui.get("/endpoints").text)
        assert "disabled since" in row
        assert "CRM maintenance tonight" in row
        assert api.ok("GET", f"/api/endpoints/{eid}")["enabled"] is False

        on = ui.post("/endpoints/enable", {"endpoint_id": eid, "back": "endpoints"})
        assert on.headers["location"].startswith("/endpoints?msg=")
        assert api.ok("GET", f"/api/endpoints/{eid}")["enabled"] is True
        assert audit_actions(api.engine) == [
            ("endpoint.disable", EDITOR, str(eid), {"reason": "CRM maintenance tonight"}),
            ("endpoint.enable", EDITOR, str(eid), {}),
        ]


def test_limits_are_saved_or_refused_beside_their_form(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        eid = ids["endpoint"]
        form = f"limits-{eid}"
        zero = ui.post(
            "/endpoints/limits", {"endpoint_id": eid, "max_in_flight": "0", "rate_limit_per_s": "5"}
        )
        assert zero.status_code == 422
        assert error_of(zero.text, form) == "max_in_flight: Input should be greater than or equal to 1"
        assert 'name="max_in_flight" min="1" max="1000" size="5" value="0"' in zero.text
        negative = ui.post(
            "/endpoints/limits", {"endpoint_id": eid, "max_in_flight": "4", "rate_limit_per_s": "-1"}
        )
        assert error_of(negative.text, form) == "rate_limit_per_s: Input should be greater than 0"
        assert 'value="-1"' in negative.text

        saved = ui.post(
            "/endpoints/limits", {"endpoint_id": eid, "max_in_flight": "3", "rate_limit_per_s": "2.5"}
        )
        assert saved.status_code == 303
        got = api.ok("GET", f"/api/endpoints/{eid}")
        assert (got["max_in_flight"], got["rate_limit_per_s"]) == (3, 2.5)
        assert " 3 2.5 / s " in row_of(ui.get("/endpoints").text)
        unlimited = ui.post(
            "/endpoints/limits", {"endpoint_id": eid, "max_in_flight": "3", "rate_limit_per_s": ""}
        )
        assert unlimited.status_code == 303
        assert api.ok("GET", f"/api/endpoints/{eid}")["rate_limit_per_s"] is None
        assert audit_actions(api.engine) == [
            ("endpoint.limits", EDITOR, str(eid), {"max_in_flight": 3, "rate_limit_per_s": 2.5}),
            ("endpoint.limits", EDITOR, str(eid), {"max_in_flight": 3, "rate_limit_per_s": None}),
        ]


def test_lead_status_thresholds_are_edited_as_a_table(db_url: str) -> None:
    with setup(db_url) as (api, ui, ids):
        page = ui.get("/endpoints").text
        assert re.findall(r'name="label" value="([^"]*)"', page) == ["Cold", "Warm", "Hot", "", "", ""]
        assert api.ok("GET", f"/api/contacts/{ids['contact']}")["lead_status"] == "Cold"

        twice = ui.post("/lead-status", {"min_score": ["0", "0", ""], "label": ["Low", "Also low", ""]})
        assert twice.status_code == 422
        assert error_of(twice.text, "thresholds") == "minimum scores must be distinct"
        assert re.findall(r'name="label" value="([^"]*)"', twice.text) == ["Low", "Also low", ""]
        half = ui.post("/lead-status", {"min_score": ["0", "30"], "label": ["Low", ""]})
        assert error_of(half.text, "thresholds") == "row 2: give both a minimum score and a label"
        nothing = ui.post("/lead-status", {"min_score": ["", ""], "label": ["", ""]})
        assert error_of(nothing.text, "thresholds").startswith("thresholds: List should have at least 1 item")

        saved = ui.post(
            "/lead-status", {"min_score": ["100", "-5", "10", ""], "label": ["High", "Low", "Mid", ""]}
        )
        assert saved.status_code == 303
        assert api.ok("GET", "/api/lead-status-thresholds")["thresholds"] == [
            {"min_score": -5, "label": "Low"},
            {"min_score": 10, "label": "Mid"},
            {"min_score": 100, "label": "High"},
        ]
        assert api.ok("GET", f"/api/contacts/{ids['contact']}")["lead_status"] == "Low"
        assert audit_actions(api.engine) == [
            ("lead_status.update", EDITOR, str(api.account_id), {"thresholds": 3})
        ]


def test_a_viewer_reads_the_page_without_its_forms(db_url: str) -> None:
    with setup(db_url) as (api, _ui, ids):
        person(api.engine, "vi@example.com", account_id=api.account_id, role="viewer")
        with closing(sign_in(api.base_url, "vi@example.com")) as viewer:
            page = viewer.get("/endpoints").text
            assert ENDPOINT in page
            assert 'action="/endpoints/disable"' not in page
            assert 'id="save-thresholds"' not in page
            assert viewer.post("/endpoints/disable", {"endpoint_id": ids["endpoint"]}).status_code == 403
        assert audit_actions(api.engine) == []
