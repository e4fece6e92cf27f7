"""Real databases for every test: SQLite files and PostgreSQL databases, built by Alembic.

Each test gets a database of its own, cloned from a template migrated once per session
(a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL), and the invariant
checker runs over it when the test ends. PostgreSQL tests skip, with the reason in the
summary, when no server answers, unless ``HEARTLEAF_REQUIRE_POSTGRES=1`` (as ``.ci/run``
sets), which turns that skip into a failure.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

import migrations
from exchange.reciprocity_verify import verify as reciprocity_verify
from ledger.database import make_engine
from ledger.service import Ledger
from ledger.verify import verify

POSTGRES_ADMIN_URL = os.environ.get(
    "HEARTLEAF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRES = os.environ.get("HEARTLEAF_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgresql"]
_database_numbers = itertools.count()


class Clock:
    """The wall clock, plus an offset a test can move forward to make holds lapse."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


def _postgres_reason() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as error:
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {str(error).strip()[:120]}"


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _admin(sql: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def _postgres_url(database: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    reason = _postgres_reason()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required here (HEARTLEAF_REQUIRE_POSTGRES=1). {reason}")
        pytest.skip(reason)
    template = f"heartleaf_template_{_worker()}_{os.getpid()}"
    _admin(f'DROP DATABASE IF EXISTS "{template}"')
    _admin(f'CREATE DATABASE "{template}"')
    migrations.upgrade(_postgres_url(template))
    yield template
    _admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database of each backend."""
    if request.param == "sqlite":
        if request.node.get_closest_marker("postgres_only"):
            pytest.skip("runs on PostgreSQL only (marked postgres_only)")
        path = tmp_path / "heartleaf.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("postgres_template")
    name = f"heartleaf_test_{_worker()}_{os.getpid()}_{next(_database_numbers)}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _postgres_url(name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    # Every layer's invariants: the ledger's, then reciprocity's positions and aggregates.
    violations = verify(engine) + reciprocity_verify(engine)
    engine.dispose()
    assert violations == [], "the ledger is unsound after this test:\n" + "\n".join(
        map(str, violations)
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(engine: Engine, clock: Clock) -> Ledger:
    return Ledger(engine, clock=clock)
