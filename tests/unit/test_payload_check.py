"""``SyncPayload.check_wire``: the request path's validation without the model accepts exactly what
``from_wire`` accepts, with the same transactionid, and refuses with the same error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contactsync.errors import PayloadError
from contactsync.wire import payload as payload_module
from contactsync.wire.payload import SECTIONS, SyncPayload

_SCALARS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "0", "7", "0012", "-3", " 4", "1" * 19, "9" * 18, "٣", "x"]),
    st.integers(min_value=-(1 << 64), max_value=1 << 64),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
_KEYS = st.one_of(
    st.sampled_from(["id", "name", "value", "email", "url", "clicks", "score", "label", "page", "extra"]),
    st.integers(min_value=0, max_value=3),
)
_ITEM = st.one_of(st.dictionaries(_KEYS, _SCALARS, max_size=5), _SCALARS)
_SECTION = st.one_of(
    st.lists(_ITEM, max_size=3),
    st.dictionaries(st.integers(min_value=0, max_value=3), _ITEM, max_size=3),
    _ITEM,
)
_TIDS = st.one_of(
    st.sampled_from(["1", "0", "01", "", "9223372036854775807", "9223372036854775808", "12a", "１"]),
    st.integers(min_value=-2, max_value=(1 << 63) + 2),
    st.text(max_size=3),
    st.none(),
)


@st.composite
def bodies(draw: st.DrawFn) -> dict[Any, Any]:
    data: dict[Any, Any] = {}
    tid = draw(_TIDS)
    if tid is not None or draw(st.booleans()):
        data["transactionid"] = tid
    if draw(st.integers(0, 9)):
        data["contact"] = draw(_ITEM)
    for key in draw(st.lists(st.sampled_from([*SECTIONS, "other", "campaigns_opened"]), max_size=4)):
        data[key] = draw(_SECTION)
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.integers(0, 3))] = "x"
    return data


def _outcome(check: Any, data: dict[Any, Any]) -> tuple[str, object]:
    try:
        return "ok", check(data)
    except PayloadError as exc:
        return "error", (str(exc), exc.path)


def _with_contact(**contact: object) -> dict[Any, Any]:
    return {"transactionid": "1", "contact": contact}


@settings(max_examples=600)
@given(bodies())
@example(_with_contact(id="٣"))  # a digit, but not 0-9
@example(_with_contact(id="1" * 19))
@example(_with_contact(id=True))
@example(_with_contact(id=None))
@example(_with_contact(id=2.0))
@example(_with_contact(email=5))
@example(_with_contact(email=b"x"))
@example({"transactionid": "1", "contact": {}, "lead-status": {"score": "x"}})
@example({"transactionid": "1", "contact": {}, "lead-status": []})
@example({"transactionid": "1", "contact": {}, "fields": ""})
@example({"transactionid": "1", "contact": {}, "fields": [{0: "x"}]})
@example({"transactionid": "1", "contact": {}, 5: "x"})
@example({"transactionid": "１", "contact": {}})
@example({"transactionid": True, "contact": {}})
def test_check_wire_agrees_with_from_wire(data: dict[Any, Any]) -> None:
    expected = _outcome(lambda d: SyncPayload.from_wire(d).transactionid, data)
    assert _outcome(SyncPayload.check_wire, data) == expected


@settings(max_examples=300)
@given(bodies())
def test_the_fast_check_only_accepts_what_the_model_accepts(data: dict[Any, Any]) -> None:
    """The one-pass check either says 'ask the model' or the model agrees (not just by falling back)."""
    tid = payload_module._plain_transactionid(data)
    if tid is not None:
        assert SyncPayload.from_wire(data).transactionid == tid


def test_the_common_shapes_take_the_fast_path() -> None:
    """What the sender and the PHP-form decoder produce is checked without building the model."""
    form = {
        "transactionid": "7300000000000000001",
        "contact": {"id": "5", "email": "a@example.com", "phone": "", "profile_url": "", "x": {0: "kept"}},
        "fields": {
            0: {"id": "1", "name": "First Name", "value": "Jane"},
            1: {"id": "", "name": "", "value": ""},
        },
        "links-clicked": {0: {"url": "https://e.example", "clicks": "3"}},
        "lead-status": {"score": "40", "label": "Warm"},
        "custom": ["anything"],
    }
    as_json = {
        "transactionid": 7300000000000000001,
        "contact": {"id": 5, "email": "a@example.com"},
        "fields": [{"id": 1, "name": "First Name", "value": "Jane"}],
        "campaigns-opened": [],
        "lead-status": None,
    }
    for data in (form, as_json):
        assert payload_module._plain_transactionid(data) == 7300000000000000001
        assert SyncPayload.check_wire(data) == SyncPayload.from_wire(data).transactionid


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"transactionid": "01", "contact": {}}, "transactionid"),
        ({"transactionid": "1", "contact": {"id": "x"}}, "contact.id"),
        ({"transactionid": "1", "contact": {}, "fields": {0: {"id": "1"}, 1: "x"}}, "fields[1]"),
        ({"transactionid": "1"}, "contact"),
    ],
)
def test_refusals_name_the_same_key(data: dict[Any, Any], path: str) -> None:
    with pytest.raises(PayloadError) as info:
        SyncPayload.check_wire(data)
    assert info.value.path == path
