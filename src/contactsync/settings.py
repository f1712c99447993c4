"""Typed settings: the only place that reads ``CONTACTSYNC_*`` environment variables.

Everything else receives a :class:`Settings` (or plain keyword arguments) from its caller, so
tests build settings explicitly and nothing depends on process-global state.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of both sides; every field can be set as ``CONTACTSYNC_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CONTACTSYNC_", extra="ignore")

    # platform side
    database_url: str = "sqlite:///contactsync.db"
    public_base_url: str = "http://127.0.0.1:8000"
    default_country_code: str = "1"
    allow_private_networks: bool = False
    allowed_cidrs: list[str] = Field(default_factory=list)
    dispatcher_concurrency: int = 200
    endpoint_concurrency: int = 10
    claim_batch_size: int = 200
    lease_s: float = 60.0
    endpoint_slot_lease_s: float = 30.0  # PostgreSQL: a dead dispatcher's endpoint slots free after this
    poll_interval_s: float = 1.0
    metrics_host: str = "127.0.0.1"  # where `serve --metrics-port` listens (not the public API port)
    admin_password: str = ""  # bootstraps the platform's operator (and is the listener UI's password)
    admin_email: str = "admin@localhost"  # the operator's sign-in when the admin password creates them
    session_secret: str = ""
    session_idle_timeout_s: float = 2 * 3600.0  # a session unused this long ends (both admin UIs)
    session_absolute_timeout_s: float = 12 * 3600.0  # and every session ends this long after sign-in
    # secrets at rest (db/sealing.py): a base64url key (older ones may follow, comma-separated, for
    # reading), or a key file; the embedded SQLite default generates ``<database>.key`` beside it
    secrets_key: str = ""
    secrets_key_file: str = ""
    # retention (db/retention.py): days each kind of history is kept, 0 = forever; pruned in small
    # batches by the dispatcher (platform) and the listener's handlers every retention_interval_s
    retention_delivered_days: float = 30.0  # delivered and cancelled deliveries, with their attempts
    retention_failed_days: float = 90.0  # failed deliveries (a replay makes them pending again)
    retention_endpoint_events_days: float = 90.0
    retention_entries_days: float = 365.0  # automation entries (re-entry itself is decided by gates)
    retention_runs_days: float = 90.0  # finished manual runs
    retention_audit_days: float = 365.0
    retention_activities_days: float = 0.0  # rules look back over activity: kept unless set
    retention_inbox_days: float = 14.0  # listener inbox entries whose handlers all finished
    retention_refusals_days: float = 7.0  # the listener's counts of refused requests
    retention_interval_s: float = 3600.0
    # delivered syncs become the contact's webhook activity (automation/sync_activity.py), read every
    # interval (0: never) once older than the settle time, which must exceed the longest delivery
    # transaction plus the clock skew between machines (a later commit would be passed over)
    sync_activity_interval_s: float = 1.0
    sync_activity_settle_s: float = 5.0
    # e-mail to account owners when an endpoint is disabled or failing for a day (delivery/notify.py);
    # empty host: no e-mail
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "contactsync@localhost"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False

    # listener side
    listener_database_url: str = "sqlite:///contactsync-listener.db"
    listener_token: str = ""
    listener_secret: str = ""
    listener_allowed_ips: list[str] = Field(default_factory=list)
    listener_max_body_bytes: int = 5 * 1024 * 1024
    listener_max_input_vars: int = 100_000
    listener_max_nesting: int = 64
    listener_tolerance_s: int = 300
    listener_handlers: list[str] = Field(default_factory=list)
    listener_projection: bool = True
    listener_projection_url: str = ""  # empty: the projection lives in listener_database_url
    listener_handler_lease_s: float = 300.0  # a run claimed by a process that died is retried after this
    listener_handler_stall_s: float = 60.0  # a handler without progress this long: /health answers 503
    listener_crm: list[dict[str, Any]] = Field(default_factory=list)  # CRM forwarders (listener/crm.py)
    listener_get_mapping: dict[str, str] = Field(default_factory=dict)  # GET parameter → target (getmap.py)
    listener_public_base_url: str = ""  # https://…: the listener UI's cookies are Secure behind a proxy
    listener_run_handlers: bool = True  # false: only acknowledge (`contactsync listen --handlers-only`)
