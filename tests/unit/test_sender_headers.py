"""The sender headers: readable, always valid header values, bounded, and reserved for the platform."""

from __future__ import annotations

import pytest

from contactsync.automation.action_settings import Header, SyncActionSettings, validate_settings
from contactsync.errors import ValidationError
from contactsync.wire import sender


def test_any_automation_name_makes_ascii_headers_that_read_back() -> None:
    name = "Relance «été» → CRM\r\nX-Evil: 1 %41"
    made = sender.headers(42, name)
    assert made[sender.HEADER_ACTION] == "42"
    value = made[sender.HEADER_ACTION_NAME]
    assert value.isascii()
    assert "\r" not in value
    assert "\n" not in value
    received = {k.lower(): v for k, v in made.items()}
    assert sender.claimed(received) == ("42", f"{name} · action 42")


def test_the_name_fits_a_listener_label_however_long_the_automation_name() -> None:
    assert len(sender.display_name(123456, "x" * 500)) <= 100
    assert sender.display_name(7) == "action 7"
    assert sender.display_name(7, "Welcome", "CRM") == "Welcome · CRM"  # a named action by its name
    assert sender.display_name(7, "Welcome", "  ") == "Welcome · action 7"
    assert len(sender.display_name(7, "x" * 500, "y" * 500)) <= 100
    assert sender.claimed({}) == ("", "")


@pytest.mark.parametrize("name", ["X-Contactsync-Action", "x-contactsync-anything"])
def test_an_action_may_not_set_the_platform_s_headers(name: str) -> None:
    settings = SyncActionSettings(url="https://crm.example/hook", headers=[Header(name=name, value="1")])
    with pytest.raises(ValidationError, match="set by the dispatcher"):
        validate_settings(settings, [])
