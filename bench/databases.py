"""Fresh databases for each run, cloned from one template per backend.

The template is migrated by Alembic (``migrations.upgrade``) and holds the federation of
``workload.build_federation``: communities, currency, accounts and funding, written through
the ledger the service runs (``api.app.build_ledger``). A run gets a copy, so every run
starts from the same state and only the measured work differs. On SQLite the copy is a
file copy (after a WAL checkpoint); on PostgreSQL it is ``CREATE DATABASE … TEMPLATE``.
SQLite files live under the scratch directory (``bench/.peers/db`` by default: the same
disk as the peers' SQLite file, so both pay the same fsync); PostgreSQL databases are named
``<prefix>*`` (``bench_heartleaf_*`` by default) and dropped at the end.

Only setup is written without waiting for the disk (SQLite ``synchronous=OFF``,
PostgreSQL ``synchronous_commit=off`` on the connections of ``setup_engine``: the template,
the reciprocity section's federations): it is never measured, and its rows are the same
either way. Every measured run gets the engine exactly as ``make_engine`` builds it.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event, text

import migrations
from api.app import build_ledger
from bench.workload import Federation, Scratch, build_federation
from ledger.database import make_engine

DEFAULT_PREFIX = "bench_heartleaf_"
BACKENDS = ("sqlite", "postgresql")


def _setup_without_waiting_for_the_disk(dbapi_connection: Any, _record: Any) -> None:
    """Runs after ``make_engine``'s own connect hook, so it has the last word."""
    cursor = dbapi_connection.cursor()
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor.execute("PRAGMA synchronous=OFF")
    else:
        cursor.execute("SET synchronous_commit = off")
        dbapi_connection.commit()
    cursor.close()


class Databases:
    def __init__(
        self,
        postgres_url: str,
        scratch: Scratch,
        prefix: str = DEFAULT_PREFIX,
        *,
        exchange: bool = True,
    ) -> None:
        """``postgres_url``: a server URL ending in a database to administer from;
        ``exchange``: configure the federation's exchange in the template (see workload)."""
        self.exchange = exchange
        self.postgres_admin = postgres_url
        self.postgres_base = postgres_url.rsplit("/", 1)[0]
        self.scratch = scratch
        self.prefix = prefix
        self.federations: dict[str, Federation] = {}
        self.created: set[tuple[str, str]] = set()

    def url(self, backend: str, name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self._sqlite_path(name)}"
        return f"{self.postgres_base}/{self.prefix}{name}"

    def template(self, backend: str, workload: dict[str, Any]) -> Federation:
        """Build the template once per backend; the federation is the same in every clone."""
        if backend not in self.federations:
            url = self.fresh(backend, "template")
            engine = self.setup_engine(url)
            try:
                self.federations[backend] = build_federation(
                    build_ledger(engine), workload, exchange=self.exchange
                )
                if backend == "sqlite":
                    with engine.connect() as connection:
                        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                engine.dispose()
        return self.federations[backend]

    @staticmethod
    def setup_engine(url: str) -> Engine:
        """``make_engine``'s engine, but not waiting for the disk: for setup, never measured."""
        engine = make_engine(url)
        event.listen(engine, "connect", _setup_without_waiting_for_the_disk)
        return engine

    def fresh(self, backend: str, name: str) -> str:
        """An empty database named ``name``, migrated to the newest schema; its URL."""
        self._drop(backend, name)
        if backend == "postgresql":
            self._admin(f'CREATE DATABASE "{self.prefix}{name}"')
        self.created.add((backend, name))
        url = self.url(backend, name)
        migrations.upgrade(url)
        return url

    def clone(self, backend: str, name: str) -> str:
        """A fresh copy of the template, named ``name``; returns its URL."""
        self._drop(backend, name)
        if backend == "sqlite":
            shutil.copyfile(self._sqlite_path("template"), self._sqlite_path(name))
        else:
            self._admin(f'CREATE DATABASE "{self.prefix}{name}" TEMPLATE "{self.prefix}template"')
        self.created.add((backend, name))
        return self.url(backend, name)

    def drop_all(self) -> None:
        for backend, name in sorted(self.created):
            self._drop(backend, name)
        self.created.clear()

    def postgres_problem(self) -> str | None:
        """None when the PostgreSQL server answers, else why not (one line)."""
        try:
            with psycopg.connect(self._libpq(self.postgres_admin), connect_timeout=3):
                return None
        except psycopg.Error as error:
            return f"PostgreSQL unreachable at {self.postgres_base}: {str(error).strip()[:160]}"

    def server_version(self) -> str | None:
        try:
            engine = make_engine(self.postgres_admin)
            try:
                with engine.connect() as connection:
                    return str(connection.execute(text("SHOW server_version")).scalar_one())
            finally:
                engine.dispose()
        except Exception as error:
            return f"unreachable: {type(error).__name__}"

    def size_bytes(self, backend: str, name: str) -> int:
        if backend == "sqlite":
            return sum(
                path.stat().st_size
                for path in (self._sqlite_path(name), Path(f"{self._sqlite_path(name)}-wal"))
                if path.exists()
            )
        with psycopg.connect(self._libpq(self.postgres_admin), autocommit=True) as connection:
            row = connection.execute(
                "SELECT pg_database_size(%s)", (self.prefix + name,)
            ).fetchone()
            return int(row[0]) if row else 0

    # -- plumbing ---------------------------------------------------------------------------

    def _sqlite_path(self, name: str) -> Path:
        return self.scratch.sqlite / f"{name}.db"

    def _drop(self, backend: str, name: str) -> None:
        if backend == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self._sqlite_path(name)}{suffix}").unlink(missing_ok=True)
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{self.prefix}{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        with psycopg.connect(self._libpq(self.postgres_admin), autocommit=True) as connection:
            connection.execute(statement)

    @staticmethod
    def _libpq(url: str) -> str:
        """psycopg takes ``postgresql://`` URLs, without SQLAlchemy's ``+driver``."""
        scheme, rest = url.split("://", 1)
        return "postgresql://" + rest if scheme.startswith("postgres") else url
