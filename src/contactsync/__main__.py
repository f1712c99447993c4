"""``python -m contactsync`` runs the CLI."""

from contactsync.cli import main

main()
