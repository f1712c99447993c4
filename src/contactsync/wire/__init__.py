"""The wire contract (spec/wire.md): pure codecs shared by the platform and the listener, no I/O.

* :mod:`~contactsync.wire.phpform`: PHP-exact ``http_build_query`` and ``$_POST``/``parse_str``.
* :mod:`~contactsync.wire.signing`: Standard Webhooks signatures.
* :mod:`~contactsync.wire.transactionid`: time-ordered delivery ids.
"""

from contactsync.wire import phpform, signing, transactionid

__all__ = ["phpform", "signing", "transactionid"]
