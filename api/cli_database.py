"""The database a ``heartleaf`` command works on, and what it says when there is none.

Only ``heartleaf db upgrade`` creates a database (a SQLite file, or the schema in an empty
PostgreSQL database). Every other command that reads or writes first checks that the
database is there and at the newest migration, and otherwise stops with one line that
names the database it looked for and how to make it: never an empty SQLite file (or a
``data/`` folder) left behind in whatever folder the command ran in.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

import migrations
from ledger.database import default_url, make_engine, normalize_url

CREATE = "create it with `heartleaf db upgrade`"
ELSEWHERE = "(DATABASE_URL, or HEARTLEAF_DATA_DIR for SQLite, names another)"


class CliError(Exception):
    """A failure worth one line to the user, not a traceback: exit status 2."""


def help_of(group: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The handler of a group of commands named alone (``heartleaf keys``): its help, as a
    bare ``heartleaf`` prints the whole tool's, exit status 0."""

    def show(args: argparse.Namespace) -> int:
        group.print_help()
        return 0

    return show


def display(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another engine or an in-memory database."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError as error:
        raise CliError(f"DATABASE_URL is not a database URL: {url!r}") from error
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("uri") == "true":
        return None
    return Path(database).resolve()


def existing_engine(url: str | None = None) -> Engine:
    """An engine on the database, refused with a clear line when it does not exist."""
    url = url or default_url()
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise CliError(f"no database at {path}: {CREATE} {ELSEWHERE}")
    return make_engine(url)


def ready_engine(url: str | None = None) -> Engine:
    """An engine on a database that exists and whose schema is at the newest migration."""
    url = url or default_url()
    engine = existing_engine(url)
    try:
        revision = migrations.current_revision(engine)
    except OperationalError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        if "does not exist" in reason:
            name = make_url(normalize_url(url)).database or "the database"
            raise CliError(
                f"no database {display(url)}: the server says {name} does not exist; "
                f"create it (`createdb {name}`), then run `heartleaf db upgrade`"
            ) from error
        raise CliError(f"cannot reach the database {display(url)}: {reason}") from error
    head = migrations.head_revision()
    if revision == head:
        return engine
    engine.dispose()
    if revision is None:
        raise CliError(f"the database {display(url)} holds no Heartleaf schema yet: {CREATE}")
    raise CliError(
        f"the database {display(url)} is at migration {revision}, not the newest ({head}): "
        "run `heartleaf db upgrade`"
    )
