"""Shortcode engine: the committed vectors, the registry, errors, URL safety, hashing references."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import contactsync.shortcodes.template as template_module
from contactsync.errors import ConfigError, TemplateError, ValidationError
from contactsync.shortcodes import (
    BUILTIN_FIELDS,
    FUNCTIONS,
    MAX_URL_BYTES,
    compile,
    reference_markdown,
    render,
    shortcode_key,
)
from contactsync.shortcodes.encoding import URL_CHARS
from contactsync.shortcodes.textops import proper
from support import examples

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests/vectors/shortcodes.json").read_text(encoding="utf-8"))
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def assert_parses(url: str, host: str) -> None:
    """The rendered URL is RFC 3986 text with the template's host."""
    assert all(c in URL_CHARS for c in url), url
    assert re.search(r"%(?![0-9A-Fa-f]{2})", url) is None, url
    assert url.count("#") <= 1, url
    assert urlsplit(url).hostname == host


@pytest.mark.parametrize("case", VECTORS["render"], ids=[c["name"] for c in VECTORS["render"]])
def test_render_vector(case: dict[str, Any]) -> None:
    now = datetime.fromisoformat(case["now"]) if "now" in case else NOW
    compiled = compile(
        case["template"],
        url=case.get("url", False),
        default_country_code=case.get("default_country_code", "1"),
    )
    assert compiled.render(case["context"], now=now) == case["expected"]


@pytest.mark.parametrize("case", VECTORS["errors"], ids=[c["name"] for c in VECTORS["errors"]])
def test_error_vector(case: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        compile(case["template"], case.get("fields"), url=case.get("url", True))
    err = info.value
    assert (err.line, err.column) == (case["line"], case["column"]), err.message
    assert case["contains"] in err.message
    assert f"at {err.line}:{err.column}" in err.message
    if "suggestions" in case:
        assert list(err.suggestions) == case["suggestions"]
    caret_line = err.caret().splitlines()[-1]
    assert caret_line == " " * (err.column - 1) + "^"


def test_every_function_has_vectors() -> None:
    used: set[str] = set()
    for case in VECTORS["render"]:
        for shortcode in re.findall(r"\[#(.*?)#\]", case["template"], re.DOTALL):
            used.update(word.split(":")[0].upper() for word in shortcode.split()[:-1])
    assert set(FUNCTIONS) <= used, sorted(set(FUNCTIONS) - used)


@pytest.mark.parametrize(
    ("name", "example"), [(f.name, ex) for f in FUNCTIONS.values() for ex in f.examples], ids=str
)
def test_registry_examples_render(name: str, example: Any) -> None:
    field = re.search(r"([A-Z_]+)(?:/-?[0-9]+)?#\]$", example.shortcode)
    assert field is not None
    assert name in example.shortcode
    assert render(example.shortcode, {field.group(1): example.value}, url=False) == example.result


def test_registry_entries_are_complete() -> None:
    for fn in FUNCTIONS.values():
        assert fn.doc, fn.name
        assert fn.examples, fn.name
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", fn.name)
        assert fn.signature.startswith(fn.name)


def test_hash_email_matches_uid2_published_values() -> None:
    # Published by The Trade Desk UID2 docs, "Normalization and Encoding" (unifiedid.com/docs/
    # getting-started/gs-normalization-encoding): SHA-256 of the normalized `user@example.com`, and the
    # base64 of the SHA-256 of `janesaoirse@gmail.com` (normalized) vs `JANESaoirse@gmail.com` (not).
    assert render("[#HASH_EMAIL E#]", {"E": "  User@Example.COM\n"}, url=False) == (
        "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
    )
    digest = render("[#HASH_EMAIL E#]", {"E": "JANESaoirse@gmail.com"}, url=False)
    assert base64.b64encode(bytes.fromhex(digest)).decode() == "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8="
    raw = render("[#SHA256 E#]", {"E": "JANESaoirse@gmail.com"}, url=False)
    assert base64.b64encode(bytes.fromhex(raw)).decode() == "VpLXEp5N1bj/V1WzjgZsC+FfuYdntAOywSVIO00FD/E="


def test_hash_phone_is_sha256_of_e164_digits() -> None:
    # No published digest for the '+'-less form was found (UID2 hashes "+1…"); this value was computed
    # with hashlib.sha256(b"16505551212") and is pinned so the normalization cannot drift.
    expected = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    for phone in ["+1 (650) 555-1212", "650.555.1212", "1 650 555 1212", "001 650 555 1212"]:
        assert render("[#HASH_PHONE P#]", {"P": phone}, url=False) == expected


def test_proper_spreadsheet_semantics_for_ascii_and_unicode() -> None:
    assert proper("jean-luc o'neil") == "Jean-Luc O'Neil"
    assert render("[#PROPER EMAIL/2#]", {"EMAIL": "jane.doe@ACME.com"}, url=False) == "Acme.Com"
    assert proper("ÉLODIE D'ÉTÉ-ÅSA") == "Élodie D'Été-Åsa"
    assert proper("σοφία παπαδοπούλου") == "Σοφία Παπαδοπούλου"
    assert proper("иван иванов-петров") == "Иван Иванов-Петров"


def _spreadsheet_proper(text: str) -> str:
    out, after_letter = [], False
    for char in text:
        out.append(
            char.lower() if after_letter and char.isalpha() else char.title() if char.isalpha() else char
        )
        after_letter = char.isalpha()
    return "".join(out)


@hsettings(max_examples=examples(ci=300))
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_proper_ascii_fast_path_is_the_spec(text: str) -> None:
    assert proper(text) == _spreadsheet_proper(text)


ALL_FUNCTIONS_URL = (
    "https://h.example/[#X#]/[#PROPER X/2#]?"
    + "&".join(
        f"{name.lower()}=[#{sig} X#]"
        for name, sig in {
            **{n: n for n in FUNCTIONS},
            "LEFT": "LEFT:2",
            "RIGHT": "RIGHT:2",
            "MID": "MID:2:3",
            "TRUNCATE": "TRUNCATE:5",
            "DEFAULT": 'DEFAULT:"d"',
            "PREFIX": "PREFIX:p",
            "SUFFIX": "SUFFIX:s",
            "REPLACE": "REPLACE:a:b",
            "REMOVE": "REMOVE:x",
            "DATE": 'DATE:"%F %a"',
            "DATEADD": "DATEADD:3",
            "NUMBER": "NUMBER:2",
        }.items()
    )
    + "&w=[#X/-1#]#f[#X#]"
)


@hsettings(max_examples=examples(ci=500))
@given(value=st.one_of(st.text(alphabet=st.characters(exclude_categories=())), st.integers(), st.none()))
def test_render_never_raises_and_url_parses(value: object) -> None:
    compiled = compile(ALL_FUNCTIONS_URL)
    url = compiled.render({"X": value}, now=NOW)
    assert_parses(url, "h.example")
    assert urlsplit(url).path.count("/") == 2


@hsettings(max_examples=examples(ci=300))
@given(value=st.text(alphabet=st.characters(exclude_categories=())))
def test_raw_values_cannot_move_the_host_or_break_the_url(value: str) -> None:
    for tpl in ("https://h.example/[#RAW X#]", "https://h.example?[#RAW X#]", "https://h.example/#[#RAW X#]"):
        url = compile(tpl).render({"X": value})
        assert_parses(url, "h.example")
        assert urlsplit(url).port is None


@hsettings(max_examples=examples(ci=1000))
@given(st.text(alphabet=st.sampled_from('[#]:"\\/ -_aZ9\nxé%?&='), max_size=40))
def test_compile_either_works_or_raises_a_positioned_template_error(text: str) -> None:
    for source, url in ((text, False), ("https://h.example/" + text, True)):
        errors: list[TemplateError] = []
        try:
            compile(source, url=url)
        except TemplateError as err:
            errors.append(err)
        for error in errors:
            assert 1 <= error.line <= source.count("\n") + 1
            assert error.column >= 1
            assert f"at {error.line}:{error.column}" in error.message


def test_lone_surrogates_render_as_replacement_character() -> None:
    assert compile("https://h.example/?q=[#X#]").render({"X": "a\ud800"}) == "https://h.example/?q=a%EF%BF%BD"
    assert render("[#SHA256 X#]", {"X": "\udfff"}, url=False) == render(
        "[#SHA256 X#]", {"X": "\ufffd"}, url=False
    )


def test_render_does_not_reparse(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile("https://h.example/?a=[#UPPER X#]")

    def forbidden(*args: object) -> None:
        raise AssertionError("render must not parse")

    monkeypatch.setattr(template_module, "parse", forbidden)
    assert compiled.render({"X": "a"}) == "https://h.example/?a=A"


def test_render_cache_reuses_compiled_templates() -> None:
    template_module._cached.cache_clear()
    for person in ("ann", "bob", "cy"):
        assert (
            render("https://h.example/?n=[#PROPER N#]", {"N": person})
            == f"https://h.example/?n={person.title()}"
        )
    info = template_module._cached.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert info.maxsize == 1024


def test_unknown_fields_only_with_a_field_list() -> None:
    assert compile("https://h.example/?a=[#ANYTHING#]").fields == ("ANYTHING",)
    with pytest.raises(TemplateError):
        compile("https://h.example/?a=[#ANYTHING#]", ["FIELD_3"])
    assert compile("https://h.example/?a=[#field_3#]&b=[#now#]", ["FIELD_3"]).fields == ("FIELD_3", "NOW")
    for name in BUILTIN_FIELDS:
        compile(f"https://h.example/?a=[#{name.lower()}#]", [])


def test_slots_report_component_and_position() -> None:
    compiled = compile("https://h.example/p/[#A#]?q=[#B#]\n#[#UPPER C#]", url=False)
    assert [(s.field, s.component) for s in compiled.slots] == [("A", "text"), ("B", "text"), ("C", "text")]
    compiled = compile("https://h.example/p/[#A#]?q=[#B#]#[#UPPER C#]")
    assert [(s.field, s.component, s.column) for s in compiled.slots] == [
        ("A", "path", 21),
        ("B", "query", 29),
        ("C", "fragment", 35),
    ]
    assert compiled.slots[2].functions == ("UPPER",)


def test_now_defaults_to_current_utc_time_and_ignores_context() -> None:
    before = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    rendered = compile("[#NOW#]", url=False).render({"NOW": "1999-01-01 00:00:00"})
    assert datetime.fromisoformat(rendered) >= before


def test_long_url_warning() -> None:
    compiled = compile("https://h.example/?q=[#X#]")
    short = compiled.render({"X": "a"})
    assert compiled.warnings(short) == ()
    long = compiled.render({"X": "é" * MAX_URL_BYTES})
    (warning,) = compiled.warnings(long)
    assert "8192 bytes" in warning
    assert str(len(long)) in warning


def test_default_country_code_is_checked() -> None:
    with pytest.raises(ConfigError):
        compile("[#PHONE_E164 P#]", url=False, default_country_code="+1")
    assert compile("[#PHONE_E164 P#]", url=False, default_country_code="353").render(
        {"P": "085 123 4567"}
    ) == ("353851234567")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("First name", "FIRST_NAME"),
        ("Prénom", "PRENOM"),
        ("  e-mail (work) ", "E_MAIL_WORK"),
        ("2nd address", "F_2ND_ADDRESS"),
        ("Field 3", "F_FIELD_3"),
        ("Straße № 5", "STRASSE_NO_5"),
    ],
)
def test_shortcode_key(name: str, key: str) -> None:
    assert shortcode_key(name) == key
    assert compile(f"[#{key}#]", [key], url=False).fields == (key,)


def test_shortcode_key_uniqueness_and_errors() -> None:
    assert shortcode_key("Email") == "EMAIL"
    assert shortcode_key("Email", taken=[]) == "EMAIL_2"
    assert shortcode_key("City", taken=["CITY", "city_2"]) == "CITY_3"
    with pytest.raises(ValidationError):
        shortcode_key("—!")


def test_reference_doc_is_up_to_date() -> None:
    committed = (ROOT / "docs/shortcodes.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        "docs/shortcodes.md is stale: python -m contactsync.shortcodes > docs/shortcodes.md"
    )
    for fn in FUNCTIONS.values():
        assert f"`{fn.signature}`" in committed
