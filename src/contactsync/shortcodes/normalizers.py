"""Digests, encodings and the ad-platform audience normalizers (email, E.164 phone).

Ad platforms (Meta, Google Customer Match, The Trade Desk UID2) match audiences on the SHA-256
of a *normalized* identifier, so the normalization is the contract: email → trimmed and
lower-cased; phone → E.164 digits with the country code and without the ``+``.

Contact values are Python strings that may hold lone surrogates (from JSON ``"\\ud800"``); they
cannot be UTF-8 encoded, so :func:`utf8` replaces them with U+FFFD instead of raising.
"""

from __future__ import annotations

import base64
import hashlib
import re

_NON_DIGITS = re.compile(r"[^0-9]+")
_COUNTRY_CODE = re.compile(r"[1-9][0-9]{0,2}")


def utf8(value: str) -> bytes:
    """UTF-8 bytes of ``value``; lone surrogates become U+FFFD rather than an exception."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        return scrub(value).encode("utf-8")


def scrub(value: str) -> str:
    """``value`` with every lone surrogate replaced by U+FFFD."""
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def is_country_code(text: str) -> bool:
    """An ITU country calling code: 1 to 3 digits, not starting with 0."""
    return _COUNTRY_CODE.fullmatch(text) is not None


def md5(value: str) -> str:
    return hashlib.md5(utf8(value), usedforsecurity=False).hexdigest()


def sha1(value: str) -> str:
    return hashlib.sha1(utf8(value), usedforsecurity=False).hexdigest()


def sha256(value: str) -> str:
    return hashlib.sha256(utf8(value)).hexdigest()


def sha512(value: str) -> str:
    return hashlib.sha512(utf8(value)).hexdigest()


def b64(value: str) -> str:
    """Standard base64 (RFC 4648 §4) with ``=`` padding."""
    return base64.b64encode(utf8(value)).decode("ascii")


def b64url(value: str) -> str:
    """URL-safe base64 (RFC 4648 §5) without padding, as JWTs and most APIs expect."""
    return base64.urlsafe_b64encode(utf8(value)).rstrip(b"=").decode("ascii")


def email_normalize(value: str) -> str:
    """Trim and lower-case: the normalization Meta, Google and UID2 agree on for every domain."""
    return value.strip().lower()


def hash_email(value: str) -> str:
    """SHA-256 hex of the normalized email; ``""`` for an empty email (an empty hash matches nobody)."""
    normalized = email_normalize(value)
    return sha256(normalized) if normalized else ""


def phone_e164(value: str, country_code: str) -> str:
    """E.164 digits without ``+``; ``""`` when the value holds no digit.

    * ``+…`` or ``00…`` → international already: keep the digits (minus the ``00``, and minus a
      ``(0)`` trunk hint as in ``+44 (0)7911 123456``).
    * otherwise a national number: drop trunk zeros (UK ``07911…``) and prefix ``country_code`` —
      unless it is longer than 10 digits and already starts with the country code
      (``1 650 555 1212`` with country code 1 stays ``16505551212``).

    Letters, spaces and punctuation are ignored (so ``ext. 12`` would join the number: keep
    extensions in another field).
    """
    text = value.strip()
    digits = _NON_DIGITS.sub("", text)
    if not digits:
        return ""
    if text.startswith("+"):
        return _NON_DIGITS.sub("", text.replace("(0)", "", 1))
    if digits.startswith("00"):
        return digits[2:].lstrip("0") or ""
    national = digits.lstrip("0")
    if not national:
        return ""
    if len(national) > 10 and national.startswith(country_code):
        return national
    return country_code + national


def hash_phone(value: str, country_code: str) -> str:
    """SHA-256 hex of the E.164 digits (no ``+``); ``""`` when there is no number."""
    digits = phone_e164(value, country_code)
    return sha256(digits) if digits else ""
