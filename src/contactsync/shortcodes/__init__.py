"""The shortcode engine: URL templates like ``https://x.test/?d=[#PROPER EMAIL/2#]``.

Pure (no I/O) and independent of the rest of the package except :mod:`contactsync.errors`.
Compile once (:func:`compile`, errors with line/column and nearest names), render many times
(:meth:`Template.render`, never raises for any contact value). The contract is spec/shortcodes.md;
the generated reference is ``docs/shortcodes.md`` (:func:`reference_markdown`).
"""

from contactsync.shortcodes.encoding import MAX_URL_BYTES, php_rawurlencode, php_urlencode, url_warnings
from contactsync.shortcodes.fields import BUILTIN_FIELDS, shortcode_key
from contactsync.shortcodes.functions import FUNCTIONS, Example, Function, Param
from contactsync.shortcodes.reference import reference_markdown
from contactsync.shortcodes.template import Slot, Template, compile, render, select_word

__all__ = [
    "BUILTIN_FIELDS",
    "FUNCTIONS",
    "MAX_URL_BYTES",
    "Example",
    "Function",
    "Param",
    "Slot",
    "Template",
    "compile",
    "php_rawurlencode",
    "php_urlencode",
    "reference_markdown",
    "render",
    "select_word",
    "shortcode_key",
    "url_warnings",
]
