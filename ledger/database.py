"""Engines and the one unit of work.

``DATABASE_URL`` picks the engine. The default is a SQLite file under ``HEARTLEAF_DATA_DIR``
(``./data`` unless set), so a new user finds their ledger next to where they started it.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged commit is on disk) and
takes the write lock up front with ``BEGIN IMMEDIATE`` for writing units of work, so two
writers never both read a balance and then collide on the upgrade to a write lock. Writers
of one process also queue on a lock of the engine's before that: SQLite's busy handler
waits by sleeping (1, 2, 5 … 100 ms) and leaves the database idle in between, while a
queue hands the write lock straight to the next thread. The busy timeout still covers
writers in other processes.
PostgreSQL runs READ COMMITTED; writers lock the accounts they touch in ascending id
order (``repository.lock_accounts``), which is what prevents double spends and deadlocks.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, OperationalError

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000
RETRY_ATTEMPTS = 8
# A pooled PostgreSQL connection idle this long is pinged before it is used again, so one
# the server dropped meanwhile (a restart, an idle timeout) is replaced instead of failing
# a request. One in steady use is not: SQLAlchemy's pool_pre_ping pings on every checkout,
# a round trip more per unit of work (a quarter of a balance read).
PING_AFTER_IDLE_SECONDS = 1.0
_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def data_directory() -> Path:
    return Path(os.environ.get("HEARTLEAF_DATA_DIR", "data")).resolve()


def default_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{data_directory() / 'heartleaf.db'}"


def normalize_url(url: str) -> str:
    """Accept the plain ``postgresql://`` form and use the psycopg 3 driver for it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str | None = None, **engine_options: Any) -> Engine:
    url = normalize_url(url or default_url())
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **engine_options)
    engine_options.setdefault("pool_size", 10)
    engine_options.setdefault("max_overflow", 20)
    engine = create_engine(url, **engine_options)
    _ping_after_idle(engine)

    @event.listens_for(engine, "after_cursor_execute")
    def _answer_now(connection: Connection, cursor: Any, statement: str, *_arguments: Any) -> None:
        # Postings run in psycopg's pipeline mode (``repository.pipelined``), where an
        # answer arrives only at the next sync; SQLAlchemy reads a statement's answer
        # (its columns, its row count) right after sending it, so sync first.
        pipeline = getattr(connection.connection.driver_connection, "_pipeline", None)
        if pipeline is not None:
            pipeline.sync()

    return engine


def _ping_after_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checking_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()  # the ping opened a transaction: leave none open
        except engine.dialect.loaded_dbapi.Error as error:
            # The server likely restarted: the pool discards every connection older than
            # now (as pool_pre_ping would), then checks out a fresh one.
            raise InvalidatePoolError(str(error)) from error


def _sqlite_engine(url: str, **engine_options: Any) -> Engine:
    database = url.split("///", 1)[1] if "///" in url else ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **engine_options
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        writing = connection.get_execution_options().get("heartleaf_write", False)
        statement = "BEGIN IMMEDIATE" if writing else "BEGIN"
        # On the driver: SQLAlchemy's execution path costs more than the BEGIN itself. Its
        # errors (a lock held past the busy timeout) are raised as SQLAlchemy's, as an
        # executed statement's are, for the retry loop.
        driver = connection.connection.driver_connection
        assert driver is not None
        try:
            driver.execute(statement)
        except sqlite3.Error as error:
            raise DBAPIError.instance(statement, {}, error, sqlite3.Error) from error

    _WRITERS[engine] = threading.RLock()  # reentrant: a writer never waits for itself
    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def unit_of_work(engine: Engine, *, write: bool, snapshot: bool = False) -> Iterator[Connection]:
    """One database transaction: commits when the block ends, rolls back if it raises.

    A read on PostgreSQL runs without a transaction (autocommit): at READ COMMITTED every
    statement sees its own snapshot anyway, so BEGIN and COMMIT would only add two round
    trips to every read. A read that needs one view of the whole store across statements
    (``verify``) asks for a ``snapshot``: REPEATABLE READ, READ ONLY. On SQLite every read
    transaction is a snapshot (WAL)."""
    writers = _WRITERS.get(engine) if write else None
    with writers or contextlib.nullcontext(), engine.connect() as connection:
        connection.execution_options(heartleaf_write=write)
        if not write and engine.dialect.name == "postgresql":
            connection.execution_options(
                isolation_level="REPEATABLE READ" if snapshot else "AUTOCOMMIT",
                postgresql_readonly=snapshot,
            )
        with connection.begin():
            yield connection


def _is_retryable(error: DBAPIError) -> bool:
    # 40001 serialization_failure and 40P01 deadlock_detected: PostgreSQL (and
    # CockroachDB, which reports every conflict as 40001) aborted our transaction to keep
    # the history serial; running it again from the start is the documented remedy.
    # SQLite's "database is locked" after the busy timeout is the same kind of contention.
    code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if code in ("40001", "40P01"):
        return True
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


def run_in_transaction(engine: Engine, work: Callable[[Connection], T], *, write: bool) -> T:
    """The one retry loop: run ``work`` in a unit of work, again on a serialization failure."""
    for attempt in range(RETRY_ATTEMPTS):
        try:
            with unit_of_work(engine, write=write) as connection:
                return work(connection)
        except DBAPIError as error:
            if attempt == RETRY_ATTEMPTS - 1 or not _is_retryable(error):
                raise
            time.sleep(random.uniform(0, 0.002 * 2**attempt))
    raise AssertionError("unreachable: the loop either returns or raises")
