"""Alembic migrations: the only way the schema reaches a database.

``upgrade(url)`` brings a database to head; ``is_at_head(url)`` tells readiness. Both build
the Alembic configuration in code, so they work from an installed package as well as
from a checkout.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from ledger.database import make_engine, normalize_url

HERE = Path(__file__).resolve().parent


def config(url: str) -> Config:
    settings = Config()
    settings.set_main_option("script_location", str(HERE))
    settings.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return settings


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(config(url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


__all__ = [
    "config",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_at_head",
    "make_engine",
    "upgrade",
]
