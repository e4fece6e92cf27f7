"""Alembic's entry point: runs revisions online against the configured URL."""

from __future__ import annotations

from alembic import context

import api.tables  # noqa: F401 - registers the API tables on the same metadata
import exchange.tables  # noqa: F401 - and the exchange tables
from ledger.database import make_engine
from ledger.tables import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite alters tables by copying them; batch mode does that
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
