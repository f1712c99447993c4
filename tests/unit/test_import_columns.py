"""CSV columns matched to fields by the names people see, and rows checked before any write (pure)."""

from __future__ import annotations

import pytest

from contactsync.automation.import_columns import (
    Problem,
    check,
    guess,
    mapping_problems,
    match_field,
    read_csv,
    rename_headers,
)
from contactsync.automation.lists import FieldOut
from contactsync.errors import ValidationError


def fld(i: int, name: str, key: str, type_: str = "text", choices: list[str] | None = None) -> FieldOut:
    return FieldOut(id=i, list_id=1, name=name, type=type_, shortcode_key=key, choices=choices or [])


DEFS = [
    fld(1, "First name", "FIRST_NAME"),
    fld(2, "City", "TOWN"),
    fld(3, "Visits", "VISITS", "number"),
    fld(4, "Plan", "PLAN", "choice", ["free", "pro"]),
    fld(5, "Town", "HOME"),
]


def test_a_header_matches_a_field_by_name_before_key_ignoring_case_and_spaces() -> None:
    assert match_field("first name", DEFS) == DEFS[0]
    assert match_field("FIRST_NAME", DEFS) == DEFS[0]
    assert match_field(" First  Name ", DEFS) == DEFS[0]
    assert match_field("first-name", DEFS) == DEFS[0]
    assert match_field("Town", DEFS) == DEFS[4]  # the field named Town, not the one keyed TOWN
    assert match_field("home", DEFS) == DEFS[4]
    assert match_field("3", DEFS) == DEFS[2]
    assert match_field("Shoe size", DEFS) is None


def test_two_fields_a_header_matches_equally_make_it_ambiguous() -> None:
    twins = [fld(1, "Last name", "SURNAME"), fld(2, "Last-Name", "FAMILY")]
    with pytest.raises(ValidationError, match="could be any of the fields 'Last name', 'Last-Name'"):
        match_field("lastname", twins)
    assert guess(["lastname"], twins) == [""]


def test_the_guess_maps_builtins_fields_and_leaves_the_rest_ignored() -> None:
    headers = ["E-mail", "Phone number", "first name", "visits", "Notes", "email"]
    assert guess(headers, DEFS) == ["email", "phone", "field:1", "field:3", "", ""]


def test_rename_headers_keeps_keys_and_ids_and_renames_names() -> None:
    """A header that is a key (any case) or an id keeps meaning what it meant before field names were
    accepted (``town`` stays the field keyed TOWN, though another field is named Town)."""
    headers = ["FIRST_NAME", "town", "2", "visits", "First Name", "first-name", "Shoe size"]
    assert rename_headers(headers, DEFS) == {"First Name": "1", "first-name": "1"}


def test_mapping_problems_name_the_columns() -> None:
    headers = ["email", "a", "b", "c"]
    assert mapping_problems(headers, ["email", "field:2", "field:2", "field:99"], DEFS) == [
        "columns 'a' and 'b' both go to City",
        "column 'c': choose a field of this list or “ignore”",
    ]
    assert mapping_problems(["a"], [""], DEFS) == ["one column must be the contacts' Email"]


def test_every_bad_cell_is_reported_and_only_valid_rows_are_kept() -> None:
    table = read_csv(
        b"Email,Visits,Plan,Phone\r\n"
        b"ada@example.com,3.0,pro,+1 555 0100\r\n"
        b",x,gold,abc\r\n"
        b"\r\n"
        b"bob@example.com,,,\r\n"
        b"short\r\n"
    )
    out = check(table, ["email", "field:3", "field:4", "phone"], DEFS, shown=2)
    assert out.problems == [
        Problem(3, "Email", "empty: every contact needs an email address"),
        Problem(3, "Visits", "'x' is not a number"),
        Problem(3, "Plan", "'gold' is not one of ['free', 'pro']"),
        Problem(3, "Phone", "'abc' is not a phone number"),
        Problem(6, "", "1 cells for 4 columns"),
    ]
    assert [r.email for r in out.rows] == ["ada@example.com", "bob@example.com"]
    assert out.rows[0].fields == {"3": "3.0", "4": "pro"}
    assert out.rows[1].phone is None
    assert out.shown[0].values == {"email": "ada@example.com", "field:3": "3", "field:4": "pro",
                                   "phone": "+1 555 0100"}  # fmt: skip
    assert set(out.shown[1].wrong) == {"email", "field:3", "field:4", "phone"}


def test_a_file_that_is_not_utf8_csv_is_refused_in_words() -> None:
    with pytest.raises(ValidationError, match="not UTF-8"):
        read_csv(b"email\n\xff\n")
    with pytest.raises(ValidationError, match="the file is empty"):
        read_csv(b"\n")
