"""``contactsync demo``: the platform, a dispatcher and a listener in one process, on SQLite, with live data.

Zero configuration: a working directory holds two SQLite files; a list with custom fields gets
~1,000 contacts with months of activity; three automations (a POST form with every section, a GET
whose URL is a shortcode template, and a manual full resync) sync contacts to the local listener
while events are fired.
Loopback is allowed explicitly (``allowed_cidrs=127.0.0.0/8``) — the only way the dispatcher will
talk to 127.0.0.1. The run ends after ``duration_s`` or on Ctrl-C, drains what is in flight, and
reports whether every generated delivery was delivered and projected by the listener.

:mod:`.config` says how it runs, :mod:`.seed` makes the data, :mod:`.pairing` pairs the demo's
actions with its listener, :mod:`.run` runs the servers and fires the events, :mod:`.report` follows
the progress and reports, with :mod:`.check` comparing every contact's projection with the platform.
"""
