"""Reciprocity: flows, daily and pair aggregates, unvalued transactions, credit lines,
free-rider thresholds and clearing proposals.

Revision ID: 2026_11_27_0004
Revises: 2026_11_25_0003
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_11_27_0004"
down_revision = "2026_11_25_0003"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reciprocity_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("free_rider_absolute", sa.BigInteger(), nullable=True),
        sa.Column("free_rider_relative", sa.String(length=80), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reciprocity_settings")),
    )
    op.create_table(
        "community_credit_lines",
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("credit_limit", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "credit_limit >= 0", name=op.f("ck_community_credit_lines_credit_limit_positive")
        ),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_community_credit_lines_community_id_communities"),
        ),
        sa.PrimaryKeyConstraint("community_id", name=op.f("pk_community_credit_lines")),
    )
    op.create_table(
        "reciprocity_days",
        sa.Column("giver_community_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("receiver_community_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["giver_community_id"],
            ["communities.id"],
            name=op.f("fk_reciprocity_days_giver_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["receiver_community_id"],
            ["communities.id"],
            name=op.f("fk_reciprocity_days_receiver_community_id_communities"),
        ),
        sa.PrimaryKeyConstraint(
            "giver_community_id", "day", "receiver_community_id", name=op.f("pk_reciprocity_days")
        ),
    )
    with op.batch_alter_table("reciprocity_days", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reciprocity_days_day"), ["day"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_reciprocity_days_receiver_community_id_day"),
            ["receiver_community_id", "day"],
            unique=False,
        )

    op.create_table(
        "reciprocity_flows",
        sa.Column("id", ROW_ID, nullable=False),
        sa.Column("transaction_id", ROW_ID, nullable=False),
        sa.Column("giver_community_id", sa.Integer(), nullable=False),
        sa.Column("receiver_community_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("position_transaction_id", ROW_ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["giver_community_id"],
            ["communities.id"],
            name=op.f("fk_reciprocity_flows_giver_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["position_transaction_id"],
            ["transactions.id"],
            name=op.f("fk_reciprocity_flows_position_transaction_id_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["receiver_community_id"],
            ["communities.id"],
            name=op.f("fk_reciprocity_flows_receiver_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_reciprocity_flows_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reciprocity_flows")),
    )
    with op.batch_alter_table("reciprocity_flows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reciprocity_flows_transaction_id"), ["transaction_id"], unique=False
        )

    op.create_table(
        "reciprocity_pairs",
        sa.Column("giver_community_id", sa.Integer(), nullable=False),
        sa.Column("receiver_community_id", sa.Integer(), nullable=False),
        sa.Column("given", sa.BigInteger(), nullable=False),
        sa.Column("cleared", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["giver_community_id"],
            ["communities.id"],
            name=op.f("fk_reciprocity_pairs_giver_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["receiver_community_id"],
            ["communities.id"],
            name=op.f("fk_reciprocity_pairs_receiver_community_id_communities"),
        ),
        sa.PrimaryKeyConstraint(
            "giver_community_id", "receiver_community_id", name=op.f("pk_reciprocity_pairs")
        ),
    )
    with op.batch_alter_table("reciprocity_pairs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reciprocity_pairs_receiver_community_id"),
            ["receiver_community_id"],
            unique=False,
        )

    op.create_table(
        "clearing_proposals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reference_currency_id", sa.Integer(), nullable=False),
        sa.Column("obligations", sa.JSON(), nullable=False),
        sa.Column("cleared", sa.JSON(), nullable=False),
        sa.Column("remaining", sa.JSON(), nullable=False),
        sa.Column("cycles", sa.JSON(), nullable=False),
        sa.Column("gross_before", sa.BigInteger(), nullable=False),
        sa.Column("gross_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("executed_at", sa.BigInteger(), nullable=True),
        sa.Column("executed_by", sa.String(length=100), nullable=True),
        sa.Column("transaction_ids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reference_currency_id"],
            ["currencies.id"],
            name=op.f("fk_clearing_proposals_reference_currency_id_currencies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clearing_proposals")),
    )
    with op.batch_alter_table("clearing_proposals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clearing_proposals_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "reciprocity_unvalued",
        sa.Column("transaction_id", ROW_ID, nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column("currency_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_reciprocity_unvalued_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["currency_id"],
            ["currencies.id"],
            name=op.f("fk_reciprocity_unvalued_currency_id_currencies"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_reciprocity_unvalued_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint(
            "transaction_id", "community_id", name=op.f("pk_reciprocity_unvalued")
        ),
    )
    with op.batch_alter_table("reciprocity_unvalued", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reciprocity_unvalued_community_id_day"),
            ["community_id", "day"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_reciprocity_unvalued_day"), ["day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reciprocity_unvalued", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reciprocity_unvalued_day"))
        batch_op.drop_index(batch_op.f("ix_reciprocity_unvalued_community_id_day"))

    op.drop_table("reciprocity_unvalued")
    with op.batch_alter_table("clearing_proposals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clearing_proposals_created_at"))

    op.drop_table("clearing_proposals")
    with op.batch_alter_table("reciprocity_pairs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reciprocity_pairs_receiver_community_id"))

    op.drop_table("reciprocity_pairs")
    with op.batch_alter_table("reciprocity_flows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reciprocity_flows_transaction_id"))

    op.drop_table("reciprocity_flows")
    with op.batch_alter_table("reciprocity_days", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reciprocity_days_receiver_community_id_day"))
        batch_op.drop_index(batch_op.f("ix_reciprocity_days_day"))

    op.drop_table("reciprocity_days")
    op.drop_table("community_credit_lines")
    op.drop_table("reciprocity_settings")
