"""Field keys: the built-ins every list has, and the key derived from a custom field's name."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

from contactsync.errors import ValidationError

BUILTIN_FIELDS: tuple[str, ...] = (
    "ID",
    "EMAIL",
    "PHONE",
    "PROFILE_URL",
    "TRANSACTIONID",
    "LIST_ID",
    "LIST_NAME",
    "LEAD_SCORE",
    "LEAD_STATUS",
    "CREATED_AT",
    "NOW",
)
_OTHER = re.compile(r"[^A-Z0-9]+")
_BY_ID = re.compile(r"FIELD_[0-9]+")


def shortcode_key(field_name: str, *, taken: Collection[str] | None = None) -> str:
    """The shortcode key of a custom field: ``"First name"`` → ``FIRST_NAME``, ``"Prénom"`` → ``PRENOM``.

    Upper-cased; accents dropped (NFKD); every run of other characters becomes ``_``; ends trimmed of
    ``_``. Keys must start with a letter and must not look like ``FIELD_<id>`` (reserved for ids), so
    such keys get an ``F_`` prefix. With ``taken`` (the list's other keys), a key equal to a built-in
    or to one of ``taken`` gets ``_2``, ``_3``, … so keys stay unique in the list.
    """
    ascii_name = unicodedata.normalize("NFKD", field_name.upper()).encode("ascii", "ignore").decode("ascii")
    key = _OTHER.sub("_", ascii_name.upper()).strip("_")
    if not key:
        raise ValidationError(f"field name {field_name!r} has no letter or digit to make a key", field="name")
    if not key[0].isalpha() or _BY_ID.fullmatch(key):
        key = "F_" + key
    if taken is None:
        return key
    used = {t.upper() for t in taken} | set(BUILTIN_FIELDS)
    candidate, n = key, 1
    while candidate in used:
        n += 1
        candidate = f"{key}_{n}"
    return candidate
