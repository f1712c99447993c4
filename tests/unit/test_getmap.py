"""GET deliveries without a transactionid: keys, ordering, mapping, and the advice shown on the platform."""

from __future__ import annotations

import pytest

from contactsync.errors import ConfigError, PayloadError
from contactsync.listener.getmap import advise, check_mapping, key_for, order_id, plain_payload
from contactsync.wire import transactionid as txid

SEED = "https://www.example.com/?param1=[#SHORTCODE-1#]&param2=[#SHORTCODE_2#]"


def test_the_seed_template_maps_its_fields_but_names_no_contact() -> None:
    advice = advise(SEED, {"SHORTCODE-1": 7, "SHORTCODE_2": 8})
    assert not advice.wire
    assert advice.mapping == {"param1": "field:7", "param2": "field:8"}
    assert not advice.keyed
    assert check_mapping(advice.mapping) == advice.mapping


def test_advice_maps_single_shortcodes_and_explains_the_rest() -> None:
    template = (
        "https://x.example/p?cid=[#ID#]&e=[# EMAIL #]&e2=[#EMAIL#]"
        "&g=[#PROPER FIRST_NAME#]&s=ads&n=[#FIELD_9#]#top"
    )
    advice = advise(template, {"FIRST_NAME": 3})
    assert advice.mapping == {"cid": "id", "e": "email", "n": "field:9"}
    assert advice.keyed
    notes = {p.name: p.note for p in advice.parameters}
    assert notes["e2"] == "same value as e, which is the one mapped to email"
    assert notes["g"].startswith("shaped by functions")
    assert notes["s"].startswith("fixed text")
    assert check_mapping(advice.mapping) == advice.mapping


def test_a_template_with_wire_keys_needs_no_mapping() -> None:
    advice = advise("https://x.example/?transactionid=[#TRANSACTIONID#]&contact[id]=[#ID#]", {})
    assert advice.wire
    assert advice.mapping == {}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"p": "fields:3"}, "'p' maps to 'fields:3'"),
        ({"a": "email", "b": "email"}, "both map to 'email'"),
        ({"": "id"}, "parameter name is empty"),
    ],
)
def test_bad_mappings_are_refused_by_name(mapping: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_mapping(mapping)


def test_keys_come_from_the_webhook_id_or_are_generated_and_not_deduplicable() -> None:
    assert key_for("7262734018228486144") == ("7262734018228486144", True)
    generated, deduplicable = key_for(None)
    assert generated.startswith("local-")
    assert not deduplicable
    assert key_for("x" * 65)[1] is False  # longer than any key we store


def test_order_ids_are_the_key_when_it_is_a_transactionid_else_the_receive_time() -> None:
    assert order_id("7262734018228486144", 1_800_000_000_000) == 7262734018228486144
    early, late = order_id("local-a", 1_800_000_000_000), order_id("local-a", 1_800_000_000_001)
    assert early < late
    assert txid.timestamp_ms(early) == 1_800_000_000_000
    assert order_id("local-a", 1_800_000_000_000) == early  # a replay orders the same way


def test_plain_payload_places_mapped_parameters_and_keeps_the_rest() -> None:
    payload = plain_payload(
        {"cid": "42", "em": "", "f3": "Bern", "utm": "mail"},
        key="7262734018228486144",
        received_at_ms=0,
        mapping={"cid": "id", "em": "email", "f3": "field:3"},
    )
    assert payload.transactionid == 7262734018228486144
    assert payload.contact.id == 42
    assert payload.contact.model_fields_set == {"id", "email"}  # present-and-empty email, no phone
    assert payload.fields is not None
    assert payload.fields[0].value == "Bern"
    assert payload.model_extra == {"utm": "mail"}
    with pytest.raises(PayloadError, match="must be a single value"):
        plain_payload({"cid": {"0": "1"}}, key="k", received_at_ms=txid.EPOCH_MS, mapping={"cid": "id"})
