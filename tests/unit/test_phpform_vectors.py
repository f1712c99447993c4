"""Replay tests/vectors/phpform.json (recorded from real PHP by scripts/gen_phpform_vectors.py), no PHP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contactsync.wire import phpform

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "phpform.json").read_text())


def _typed(text: str) -> str | dict[str, str]:
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}


def _as_vector(value: Any) -> Any:
    if isinstance(value, dict):
        return [
            [key if isinstance(key, int) else _typed(key), _as_vector(item)] for key, item in value.items()
        ]
    return _typed(value)


def _body(body: str | dict[str, str]) -> bytes:
    return bytes.fromhex(body["hex"]) if isinstance(body, dict) else body.encode()


def test_vectors_come_from_php_8_2_defaults() -> None:
    assert VECTORS["php_version"].startswith("8.")
    assert VECTORS["ini"]["max_input_vars"] == "1000"
    assert len(VECTORS["decode"]) >= 100


@pytest.mark.parametrize(
    "case", VECTORS["decode"], ids=[f"{c['source']}:{c['comment'][:50]}" for c in VECTORS["decode"]]
)
def test_decode_matches_recorded_php(case: dict[str, Any]) -> None:
    body = _body(case["body"])
    assert _as_vector(phpform.decode(body, source=case["source"])) == case["expected"]
    # str bodies (surrogateescape) decode exactly like their bytes
    text = body.decode("utf-8", "surrogateescape")
    assert _as_vector(phpform.decode(text, source=case["source"])) == case["expected"]


@pytest.mark.parametrize("case", VECTORS["encode"], ids=[c["comment"][:50] for c in VECTORS["encode"]])
def test_encode_matches_recorded_php(case: dict[str, Any]) -> None:
    assert phpform.encode(case["data"]) == case["rfc1738"]
    assert phpform.encode(case["data"], rfc3986=True) == case["rfc3986"]
