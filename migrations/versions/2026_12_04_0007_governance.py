"""Governed policy: one proposal -> approval -> in force path for every change of policy.

``governance_proposals`` keeps each proposed change (exchange settings, a valuation, a
protocol version, a community credit line) with the rule in force when it was proposed,
its expiry and how it ended; ``governance_approvals`` who approved it, in what role, for
which community, when. ``exchange_settings`` gains whose approvals count (``approvers``)
and how long a proposal waits (``proposal_seconds``); valuations and protocol versions
name the proposal that decided them.

Protocol versions still waiting for approval become pending proposals under the rule in
force at the upgrade (``approvers`` "federation", as before), expiring a week after the
upgrade, so none lapses unseen in the moment of upgrading; the keys that had approved one
are kept as its approvals (their time is unknown: recorded as the proposal's). Nothing
already in force changes, and nothing is applied by the upgrade.

Revision ID: 2026_12_04_0007
Revises: 2026_12_04_0006
Create Date: 2026-12-04 09:00:00.000000
"""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa
from alembic import op

revision = "2026_12_04_0007"
down_revision = "2026_12_04_0006"
branch_labels = None
depends_on = None

PROPOSAL_SECONDS = 7 * 86_400
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(instant: dt.datetime) -> int:
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def upgrade() -> None:
    op.create_table(
        "governance_proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=120), nullable=False),
        sa.Column("change", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("proposed_at", sa.BigInteger(), nullable=False),
        sa.Column("proposed_by", sa.String(length=100), nullable=False),
        sa.Column("proposer_role", sa.String(length=16), nullable=False),
        sa.Column("proposer_community", sa.String(length=64), nullable=True),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.Column("closed_by", sa.String(length=100), nullable=True),
        sa.Column("close_reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_governance_proposals"),
    )
    op.create_index(
        "ix_governance_proposals_state_expires_at",
        "governance_proposals",
        ["state", "expires_at"],
    )
    op.create_index(
        "ix_governance_proposals_kind_subject_id",
        "governance_proposals",
        ["kind", "subject", "id"],
    )
    op.create_table(
        "governance_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("proposal_id", sa.Integer(), nullable=False),
        sa.Column("approved_by", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("community", sa.String(length=64), nullable=True),
        sa.Column("seat", sa.String(length=100), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["governance_proposals.id"],
            name="fk_governance_approvals_proposal_id_governance_proposals",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_governance_approvals"),
        sa.UniqueConstraint(
            "proposal_id", "approved_by", name="uq_governance_approvals_proposal_id_approved_by"
        ),
    )
    with op.batch_alter_table("exchange_settings") as batch_op:
        batch_op.add_column(sa.Column("approvers", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("proposal_seconds", sa.Integer(), nullable=True))
    op.get_bind().execute(
        sa.text("UPDATE exchange_settings SET approvers = 'federation', proposal_seconds = :s"),
        {"s": PROPOSAL_SECONDS},
    )
    with op.batch_alter_table("exchange_settings") as batch_op:
        batch_op.alter_column("approvers", existing_type=sa.String(length=16), nullable=False)
        batch_op.alter_column("proposal_seconds", existing_type=sa.Integer(), nullable=False)
    for table in ("valuations", "protocol_versions"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("proposal_id", sa.Integer(), nullable=True))
            batch_op.create_foreign_key(
                f"fk_{table}_proposal_id_governance_proposals",
                "governance_proposals",
                ["proposal_id"],
                ["id"],
            )
    _pending_protocol_versions_become_proposals()


def _pending_protocol_versions_become_proposals() -> None:
    connection = op.get_bind()
    settings = connection.execute(
        sa.text("SELECT approvals_required FROM exchange_settings")
    ).first()
    required = 0 if settings is None else int(settings[0])
    expires_at = _micros(dt.datetime.now(dt.UTC)) + PROPOSAL_SECONDS * 1_000_000
    codes = dict(connection.execute(sa.text("SELECT id, code FROM currencies")).all())
    proposals = sa.table(
        "governance_proposals",
        sa.column("id", sa.Integer()),
        sa.column("kind", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("change", sa.JSON()),
        sa.column("state", sa.String()),
        sa.column("reason", sa.String()),
        sa.column("proposed_at", sa.BigInteger()),
        sa.column("proposed_by", sa.String()),
        sa.column("proposer_role", sa.String()),
        sa.column("proposer_community", sa.String()),
        sa.column("approvals_required", sa.Integer()),
        sa.column("approvers", sa.String()),
        sa.column("expires_at", sa.BigInteger()),
    )
    approvals = sa.table(
        "governance_approvals",
        sa.column("proposal_id", sa.Integer()),
        sa.column("approved_by", sa.String()),
        sa.column("role", sa.String()),
        sa.column("community", sa.String()),
        sa.column("seat", sa.String()),
        sa.column("at", sa.BigInteger()),
    )
    waiting = connection.execute(
        sa.text(
            "SELECT id, from_currency_id, to_currency_id, version, proposed_at, proposed_by,"
            " reason, approvals FROM protocol_versions WHERE state = 'proposed' ORDER BY id"
        )
    ).all()
    for row in waiting:
        approved = row.approvals if isinstance(row.approvals, list) else json.loads(row.approvals)
        subject = f"{codes[row.from_currency_id]}->{codes[row.to_currency_id]}"
        proposal_id = connection.execute(
            sa.insert(proposals).returning(proposals.c.id),
            {
                "kind": "protocol_version",
                "subject": subject,
                "change": {"protocol_version_id": row.id, "version": row.version},
                "state": "pending",
                "reason": row.reason,
                "proposed_at": row.proposed_at,
                "proposed_by": row.proposed_by,
                "proposer_role": "federation",
                "proposer_community": None,
                "approvals_required": max(required, 1),
                "approvers": "federation",
                "expires_at": expires_at,
            },
        ).scalar_one()
        for key in dict.fromkeys(approved):  # once each, in the order given
            connection.execute(
                sa.insert(approvals),
                {
                    "proposal_id": proposal_id,
                    "approved_by": key,
                    "role": "federation",
                    "community": None,
                    "seat": key,
                    "at": row.proposed_at,
                },
            )
        connection.execute(
            sa.text("UPDATE protocol_versions SET proposal_id = :proposal WHERE id = :id"),
            {"proposal": proposal_id, "id": row.id},
        )


def downgrade() -> None:
    # Versions still waiting keep state 'proposed' and their approvals column: the service
    # before governance approves them as it did. It knows no 'expired': such a version was
    # never in force and can no longer come into force, which it calls 'rejected'.
    op.execute("UPDATE protocol_versions SET state = 'rejected' WHERE state = 'expired'")
    for table in ("protocol_versions", "valuations"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(
                f"fk_{table}_proposal_id_governance_proposals", type_="foreignkey"
            )
            batch_op.drop_column("proposal_id")
    with op.batch_alter_table("exchange_settings") as batch_op:
        batch_op.drop_column("proposal_seconds")
        batch_op.drop_column("approvers")
    op.drop_table("governance_approvals")
    op.drop_index("ix_governance_proposals_kind_subject_id", table_name="governance_proposals")
    op.drop_index("ix_governance_proposals_state_expires_at", table_name="governance_proposals")
    op.drop_table("governance_proposals")
