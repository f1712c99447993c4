"""The wire contract (spec/wire.md): pure codecs shared by the platform and the listener, no I/O.

* :mod:`~contactsync.wire.payload`: SyncPayload and its form, JSON and query forms.
* :mod:`~contactsync.wire.phpform`: PHP-exact ``http_build_query`` and ``$_POST``/``parse_str``.
* :mod:`~contactsync.wire.signing`: Standard Webhooks signatures.
* :mod:`~contactsync.wire.transactionid`: time-ordered delivery ids.
"""

from contactsync.wire import payload, phpform, signing, transactionid

__all__ = ["payload", "phpform", "signing", "transactionid"]
