"""How the demo runs, and the settings it gives the platform and the listener (no configuration needed)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from contactsync.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig:
    """How the demo runs; ``duration_s`` None means until Ctrl-C."""

    workdir: Path
    duration_s: float | None = None
    contacts: int = 1000
    events_per_s: float = 10.0
    host: str = "127.0.0.1"
    platform_port: int = 8000
    listener_port: int = 8001
    drain_timeout_s: float = 60.0
    seed: int = 7


def demo_settings(config: DemoConfig, *, platform_port: int, listener_port: int, password: str) -> Settings:
    wd = config.workdir
    return Settings(
        database_url=f"sqlite:///{wd / 'platform.db'}",
        listener_database_url=f"sqlite:///{wd / 'listener.db'}",
        public_base_url=f"http://{config.host}:{platform_port}",
        allow_private_networks=False,
        allowed_cidrs=["127.0.0.0/8"],
        admin_password=password,
        session_secret=secrets.token_urlsafe(32),
        listener_token=secrets.token_urlsafe(32),
        dispatcher_concurrency=50,
        poll_interval_s=0.5,
    )
