"""Platform REST API (FastAPI): ``create_app(settings)``; OpenAPI at ``/api/openapi.json``."""

from contactsync.api.app import create_app

__all__ = ["create_app"]
