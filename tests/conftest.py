"""Shared fixtures: real PHP, real SQLite files and real PostgreSQL/MariaDB databases."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from support import IN_CI

pytest_plugins = ["support.roles", "support.engines"]
"""Fixtures shared by modules: ``world`` (an app with accounts and keys per database) and ``engine`` (a
migrated platform database per test)."""

settings.register_profile(
    "contactsync",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile("contactsync")
# Secrets at rest need a key; the embedded default would write one beside every SQLite file a test
# opens (or beside ./contactsync.db for a bare Settings()). Tests of the key file itself pass
# ``secrets_key=""`` explicitly. Child processes (workers, the CLI) inherit the same key.
os.environ.setdefault("CONTACTSYNC_SECRETS_KEY", "dGVzdHMtb25seS1rZXktdGVzdHMtb25seS1rZXktMDE")
PG_ADMIN_URL = os.environ.get("CONTACTSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN_URL = os.environ.get("CONTACTSYNC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _missing(what: str) -> None:
    """Skip locally, fail in CI: CI must exercise every backend."""
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def php() -> str:
    """Path of the php-cli binary."""
    found = shutil.which("php")
    if found is None:
        _missing("php-cli")
    assert found is not None
    return found


def _pg_admin() -> object:
    import psycopg

    try:
        return psycopg.connect(
            PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"),
            autocommit=True,
            connect_timeout=3,
        )
    except psycopg.OperationalError:
        _missing("PostgreSQL at " + PG_ADMIN_URL)
        raise


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped on exit (skipped locally when there is no server)."""
    import psycopg

    admin = _pg_admin()
    assert isinstance(admin, psycopg.Connection)
    name = "cs_" + uuid.uuid4().hex[:16]
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """A PostgreSQL database shared by the tests of one module (for suites that start servers once)."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite:///{tmp_path / 'contactsync.db'}"


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database for one test, dropped afterwards."""
    import pymysql

    try:
        admin = pymysql.connect(
            host="127.0.0.1",
            port=3306,
            user="root",
            password="",
            autocommit=True,
            connect_timeout=3,
        )
    except pymysql.err.OperationalError:
        _missing("MariaDB at 127.0.0.1:3306")
        raise
    name = "cs_" + uuid.uuid4().hex[:16]
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Every storage test runs on both SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))
