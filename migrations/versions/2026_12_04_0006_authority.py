"""Authority over money: which communities may hold a currency, a cap on its circulation,
and who authorized each account's power to issue or to go below zero.

``currencies.held_in`` is the issuer's holding policy (``issuer``, ``all`` or ``system``),
filled from the currency's kind (``ledger.authority.KIND_RULES``). ``accounts.authorized_by``
names the actor that gave an account its issuance power or its credit floor (a floor below
zero, or none). Rows that predate the rule are credited to their issuer only where the
account lies in the issuer's own community; any other such account keeps NULL, and
``heartleaf verify`` reports it as issuance nobody authorized, for an auditor to look at.

Revision ID: 2026_12_04_0006
Revises: 2026_12_03_0005
Create Date: 2026-12-04 03:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_04_0006"
down_revision = "2026_12_03_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("currencies") as batch_op:
        batch_op.add_column(sa.Column("held_in", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("circulation_cap", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE currencies SET held_in = CASE kind WHEN 'hearts' THEN 'issuer'"
        " WHEN 'unit' THEN 'system' ELSE 'all' END"
    )
    with op.batch_alter_table("currencies") as batch_op:
        batch_op.alter_column("held_in", existing_type=sa.String(length=16), nullable=False)
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("authorized_by", sa.String(length=64), nullable=True))
    # Issuance and credit floors inside the issuer's own community: the issuer's.
    op.execute(
        "UPDATE accounts SET authorized_by = 'community:' || CAST(accounts.community_id AS TEXT)"
        " WHERE accounts.type NOT IN ('clearing', 'liquidity', 'fees', 'rounding')"
        " AND (accounts.type = 'issuance' OR accounts.min_balance IS NULL"
        " OR accounts.min_balance < 0)"
        " AND EXISTS (SELECT 1 FROM currencies WHERE currencies.id = accounts.currency_id"
        " AND currencies.issuer_community_id = accounts.community_id)"
    )
    # A federation currency's: the federation's, when it lies in the federation's community.
    op.execute(
        "UPDATE accounts SET authorized_by = 'federation'"
        " WHERE accounts.type NOT IN ('clearing', 'liquidity', 'fees', 'rounding')"
        " AND (accounts.type = 'issuance' OR accounts.min_balance IS NULL"
        " OR accounts.min_balance < 0)"
        " AND EXISTS (SELECT 1 FROM currencies WHERE currencies.id = accounts.currency_id"
        " AND currencies.issuer_community_id IS NULL)"
        " AND EXISTS (SELECT 1 FROM communities WHERE communities.id = accounts.community_id"
        " AND communities.slug = 'federation')"
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("authorized_by")
    with op.batch_alter_table("currencies") as batch_op:
        batch_op.drop_column("circulation_cap")
        batch_op.drop_column("held_in")
