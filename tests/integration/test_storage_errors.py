"""db/errors.py names the constraint a write broke, from the driver's code, on every database we run on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from contactsync.db.engine import create_engine
from contactsync.db.errors import translated
from contactsync.errors import (
    ConstraintError,
    DanglingReferenceError,
    DuplicateKeyError,
    MissingValueError,
    StorageError,
    UnstorableValueError,
)

_meta = sa.MetaData()
_parents = sa.Table("errs_parents", _meta, sa.Column("id", sa.Integer, primary_key=True))
_children = sa.Table(
    "errs_children",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(50), nullable=False, unique=True),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("errs_parents.id")),
    sa.Column("score", sa.SmallInteger),
    sa.CheckConstraint("score IS NULL OR score >= 0", name="ck_errs_score"),
)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    url = str(request.getfixturevalue(f"{request.param}_url" if request.param != "postgresql" else "pg_url"))
    engine = create_engine(url)
    _meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(_parents.insert(), [{"id": 1}])
        conn.execute(_children.insert(), [{"id": 1, "email": "a@x.test", "parent_id": 1}])
    yield engine
    engine.dispose()


def _insert(engine: sa.Engine, **values: object) -> None:
    with translated(), engine.begin() as conn:
        conn.execute(_children.insert().values(**values))


def test_a_taken_unique_key_or_primary_key_is_a_duplicate(engine: sa.Engine) -> None:
    with pytest.raises(DuplicateKeyError) as caught:
        _insert(engine, id=2, email="a@x.test")
    assert "email" in caught.value.detail
    with pytest.raises(DuplicateKeyError):
        _insert(engine, id=1, email="b@x.test")


def test_a_missing_parent_and_a_missing_value_are_told_apart(engine: sa.Engine) -> None:
    with pytest.raises(DanglingReferenceError):
        _insert(engine, id=2, email="b@x.test", parent_id=9)
    with pytest.raises(MissingValueError):
        _insert(engine, id=2, email=None)


def test_other_constraints_stay_constraint_errors(engine: sa.Engine) -> None:
    with pytest.raises(ConstraintError) as caught:
        _insert(engine, id=2, email="b@x.test", score=-1)
    assert type(caught.value) is ConstraintError
    # MariaDB reports a failed CHECK (errno 4025) through PyMySQL as an OperationalError
    raised = sa.exc.OperationalError if engine.dialect.name == "mysql" else sa.exc.IntegrityError
    assert isinstance(caught.value.__cause__, raised)
    assert "ck_errs_score" in caught.value.detail
    assert str(caught.value) == str(caught.value.__cause__)  # logs read as before


def test_a_value_the_column_cannot_hold_is_unstorable(engine: sa.Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite stores any integer in any integer column")
    with pytest.raises(UnstorableValueError) as caught:
        _insert(engine, id=2, email="b@x.test", score=99_999_999)
    assert isinstance(caught.value, StorageError)
    assert caught.value.detail
