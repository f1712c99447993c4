"""``python -m contactsync.shortcodes`` prints the generated reference (``docs/shortcodes.md``)."""

from contactsync.shortcodes.reference import reference_markdown

print(reference_markdown(), end="")
