"""Pure text transforms with more logic than a str method: PROPER, SQUISH and NUMBER.

Each takes the value and returns text, never raising: input it cannot read becomes ``""``.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_MAX_NUMBER_CHARS = 100


def proper(value: str) -> str:
    """Spreadsheet PROPER: a letter is title-cased after a non-letter (or at the start), else lowered.

    Unicode-aware: letters are ``str.isalpha`` characters; combining marks keep the state of the
    letter they decorate, so ``e\\u0301a`` stays one word.
    """
    if value.isascii():
        return value.title()
    out: list[str] = []
    after_letter = False
    for char in value:
        if char.isalpha():
            out.append(char.lower() if after_letter else char.title())
            after_letter = True
        elif unicodedata.category(char).startswith("M"):
            out.append(char.lower())
        else:
            out.append(char)
            after_letter = False
    return "".join(out)


def squish(value: str) -> str:
    """Strip both ends and collapse every inner whitespace run (Unicode spaces too) to one space."""
    return " ".join(value.split())


def fixed_decimals(value: str, places: int) -> str:
    """``NUMBER``: ``places`` decimals, ``.`` separator, half rounded away from zero (as PHP's
    ``number_format``), no thousands separator, no ``-0.00``; ``""`` for anything but a plain
    decimal number (``1,5``, ``NaN``, ``inf`` and over-long input included).
    """
    text = value.strip()
    if len(text) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
        return ""
    try:
        number = Decimal(text)
        digits = max(number.adjusted(), 0) + places + 2
        rounded = number.quantize(
            Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=Context(prec=digits)
        )
    except (InvalidOperation, ValueError):
        return ""
    out = f"{rounded:f}"
    return out[1:] if out.startswith("-") and not rounded else out
