"""Delivery: from an outbox row to a 2xx at the customer's URL, with nothing lost on the way.

Pure policy at the bottom (``retry``, ``netguard`` address rules, ``throttle``), storage in the
middle (``states`` machine, ``leases`` for claiming, ``outbox`` for enqueue/finish,
``interventions`` for cancel/replay/recover, ``backlog`` for queue depth, ``endpoints`` and
``health``), I/O on top (``attempt`` sends one request, ``dispatcher`` runs the loop, ``worker``
runs processes, ``metrics`` exports Prometheus gauges and counters).
"""
