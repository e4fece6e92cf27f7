"""Keys that expire, rotate and belong to one member.

``api_keys.expires_at``: after it the key no longer authenticates. ``member``: a member
key's member, whose member accounts in its community are the only ones it reads and
spends from. ``previous_secret_hash`` and ``previous_valid_until``: a rotated key's former
secret keeps working until then, so a client can switch without a gap. Existing keys
keep working as before: no expiry, no member, no former secret.

Revision ID: 2026_12_04_0008
Revises: 2026_12_04_0007
Create Date: 2026-12-04 04:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_04_0008"
down_revision = "2026_12_04_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("member", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("previous_secret_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("previous_valid_until", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("previous_valid_until")
        batch_op.drop_column("previous_secret_hash")
        batch_op.drop_column("member")
        batch_op.drop_column("expires_at")
