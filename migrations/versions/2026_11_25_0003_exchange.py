"""Exchange: settings, valuations, protocol versions, quotes and conversions (rates exact).

Revision ID: 2026_11_25_0003
Revises: 2026_11_25_0002
Create Date: 2026-11-25 05:33:16.490755
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_11_25_0003"
down_revision = "2026_11_25_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "exchange_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference_currency_id", sa.Integer(), nullable=False),
        sa.Column("federation_community_id", sa.Integer(), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("quote_seconds", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["federation_community_id"],
            ["communities.id"],
            name=op.f("fk_exchange_settings_federation_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["reference_currency_id"],
            ["currencies.id"],
            name=op.f("fk_exchange_settings_reference_currency_id_currencies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_settings")),
    )
    op.create_table(
        "valuations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("currency_id", sa.Integer(), nullable=False),
        sa.Column("rate_numerator", sa.BigInteger(), nullable=False),
        sa.Column("rate_denominator", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["currency_id"], ["currencies.id"], name=op.f("fk_valuations_currency_id_currencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_valuations")),
    )
    with op.batch_alter_table("valuations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_valuations_currency_id_effective_from"),
            ["currency_id", "effective_from"],
            unique=False,
        )

    op.create_table(
        "protocol_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("from_currency_id", sa.Integer(), nullable=False),
        sa.Column("to_currency_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("fixed_rate_numerator", sa.BigInteger(), nullable=True),
        sa.Column("fixed_rate_denominator", sa.BigInteger(), nullable=True),
        sa.Column("fee_bps", sa.Integer(), nullable=False),
        sa.Column("fee_account_id", sa.Integer(), nullable=True),
        sa.Column("eligible_account_types", sa.JSON(), nullable=True),
        sa.Column("eligible_account_ids", sa.JSON(), nullable=True),
        sa.Column("windows", sa.JSON(), nullable=True),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("effective_from", sa.BigInteger(), nullable=False),
        sa.Column("effective_until", sa.BigInteger(), nullable=True),
        sa.Column("proposed_at", sa.BigInteger(), nullable=False),
        sa.Column("proposed_by", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("approvals", sa.JSON(), nullable=False),
        sa.Column("activated_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["fee_account_id"],
            ["accounts.id"],
            name=op.f("fk_protocol_versions_fee_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["from_currency_id"],
            ["currencies.id"],
            name=op.f("fk_protocol_versions_from_currency_id_currencies"),
        ),
        sa.ForeignKeyConstraint(
            ["to_currency_id"],
            ["currencies.id"],
            name=op.f("fk_protocol_versions_to_currency_id_currencies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_protocol_versions")),
        sa.UniqueConstraint(
            "from_currency_id",
            "to_currency_id",
            "version",
            name=op.f("uq_protocol_versions_from_currency_id_to_currency_id_version"),
        ),
    )
    with op.batch_alter_table("protocol_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_protocol_versions_from_currency_id_to_currency_id_state_version"),
            ["from_currency_id", "to_currency_id", "state", "version"],
            unique=False,
        )

    op.create_table(
        "conversions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("protocol_version_id", sa.Integer(), nullable=False),
        sa.Column("quote_id", sa.String(length=40), nullable=True),
        sa.Column("payer_account_id", sa.Integer(), nullable=False),
        sa.Column("payer_community_id", sa.Integer(), nullable=False),
        sa.Column("payee_account_id", sa.Integer(), nullable=False),
        sa.Column("from_currency_id", sa.Integer(), nullable=False),
        sa.Column("to_currency_id", sa.Integer(), nullable=False),
        sa.Column("source_amount", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("source_used", sa.BigInteger(), nullable=False),
        sa.Column("residue", sa.BigInteger(), nullable=False),
        sa.Column("target_amount", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.String(length=120), nullable=False),
        sa.Column("valuation_from", sa.String(length=80), nullable=True),
        sa.Column("valuation_to", sa.String(length=80), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["from_currency_id"],
            ["currencies.id"],
            name=op.f("fk_conversions_from_currency_id_currencies"),
        ),
        sa.ForeignKeyConstraint(
            ["payee_account_id"],
            ["accounts.id"],
            name=op.f("fk_conversions_payee_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["payer_account_id"],
            ["accounts.id"],
            name=op.f("fk_conversions_payer_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["payer_community_id"],
            ["communities.id"],
            name=op.f("fk_conversions_payer_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["protocol_version_id"],
            ["protocol_versions.id"],
            name=op.f("fk_conversions_protocol_version_id_protocol_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["to_currency_id"],
            ["currencies.id"],
            name=op.f("fk_conversions_to_currency_id_currencies"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_conversions_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_conversions_transaction_id")),
    )
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversions_from_currency_id_to_currency_id_payer_account_id_at"),
            ["from_currency_id", "to_currency_id", "payer_account_id", "at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_conversions_from_currency_id_to_currency_id_payer_community_id_at"),
            ["from_currency_id", "to_currency_id", "payer_community_id", "at"],
            unique=False,
        )

    op.create_table(
        "quotes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("protocol_version_id", sa.Integer(), nullable=False),
        sa.Column("payer_account_id", sa.Integer(), nullable=False),
        sa.Column("from_currency_id", sa.Integer(), nullable=False),
        sa.Column("to_currency_id", sa.Integer(), nullable=False),
        sa.Column("source_amount", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("source_used", sa.BigInteger(), nullable=False),
        sa.Column("residue", sa.BigInteger(), nullable=False),
        sa.Column("target_amount", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["from_currency_id"],
            ["currencies.id"],
            name=op.f("fk_quotes_from_currency_id_currencies"),
        ),
        sa.ForeignKeyConstraint(
            ["payer_account_id"], ["accounts.id"], name=op.f("fk_quotes_payer_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["protocol_version_id"],
            ["protocol_versions.id"],
            name=op.f("fk_quotes_protocol_version_id_protocol_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["to_currency_id"], ["currencies.id"], name=op.f("fk_quotes_to_currency_id_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_quotes_transaction_id_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotes")),
    )


def downgrade() -> None:

    op.drop_table("quotes")
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_conversions_from_currency_id_to_currency_id_payer_community_id_at")
        )
        batch_op.drop_index(
            batch_op.f("ix_conversions_from_currency_id_to_currency_id_payer_account_id_at")
        )

    op.drop_table("conversions")
    with op.batch_alter_table("protocol_versions", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_protocol_versions_from_currency_id_to_currency_id_state_version")
        )

    op.drop_table("protocol_versions")
    with op.batch_alter_table("valuations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_valuations_currency_id_effective_from"))

    op.drop_table("valuations")
    op.drop_table("exchange_settings")
