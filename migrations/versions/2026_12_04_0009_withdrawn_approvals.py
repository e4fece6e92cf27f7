"""Approvals withdrawn with their key.

``governance_approvals.withdrawn_at``: when the key that gave a still-pending proposal's
approval was revoked. A withdrawn approval stays in history (who approved, when, and when
it stopped counting) and no longer counts towards the proposal. Existing approvals are
not withdrawn.

Revision ID: 2026_12_04_0009
Revises: 2026_12_04_0008
Create Date: 2026-12-04 18:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_04_0009"
down_revision = "2026_12_04_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("governance_approvals") as batch_op:
        batch_op.add_column(sa.Column("withdrawn_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("governance_approvals") as batch_op:
        batch_op.drop_column("withdrawn_at")
