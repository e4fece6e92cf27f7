"""Fewer B-trees per write: the event feed's sequence is SQLite's rowid, and only
transactions that are not posted are indexed by status.

A single posted transfer with its reciprocity position wrote 27.5 distinct pages per
commit; these two cut about two of them (the events' separate primary-key index, and the
``(status, expires_at)`` index every posted row entered, which no query ordered by: expiry
reads ``holds``). With ``synchronous=FULL`` each page is a WAL frame the commit waits for.

Building the new index holds writes to ``transactions`` until it is built, on PostgreSQL
as on SQLite (which also copies ``events`` once): run the upgrade while no one posts.

Revision ID: 2026_12_03_0005
Revises: 2026_11_27_0004
Create Date: 2026-12-03 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_03_0005"
down_revision = "2026_11_27_0004"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UNPOSTED = sa.text("status <> 'posted'")


def upgrade() -> None:
    with op.batch_alter_table("transactions") as batch_op:
        batch_op.drop_index("ix_transactions_status_expires_at")
        batch_op.create_index(
            "ix_transactions_unposted_status_created_at",
            ["status", "created_at", "id"],
            unique=False,
            sqlite_where=UNPOSTED,
            postgresql_where=UNPOSTED,
        )
    if op.get_bind().dialect.name == "sqlite":
        # A BIGINT primary key is a separate index in SQLite; INTEGER makes it the rowid.
        # SQLite changes a column's type only by copying the table, which batch mode does.
        with op.batch_alter_table("events", recreate="always") as batch_op:
            batch_op.alter_column("sequence", existing_type=sa.BigInteger(), type_=ROW_ID)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("events", recreate="always") as batch_op:
            batch_op.alter_column("sequence", existing_type=ROW_ID, type_=sa.BigInteger())
    with op.batch_alter_table("transactions") as batch_op:
        batch_op.drop_index("ix_transactions_unposted_status_created_at")
        batch_op.create_index(
            "ix_transactions_status_expires_at", ["status", "expires_at"], unique=False
        )
