"""Exchange tables: valuations, protocol versions, quotes and conversions.

Rates are exact rationals stored as two BigIntegers (numerator, denominator), never a
float or a Numeric read back into one. Nothing here is edited in place: a new valuation
or protocol version is a new row, so the rate in force at any past instant stays readable.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.tables import Base, Instant


class ExchangeSettingsRow(Base):
    """The federation's exchange settings: one row."""

    __tablename__ = "exchange_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    # The community that owns the federation's liquidity, fee and rounding accounts.
    federation_community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    approvals_required: Mapped[int] = mapped_column(Integer)
    # Whose approvals count (``exchange.governance.Approvers``): "federation" keys only, or
    # "communities": one seat per member community (its treasurers) and one for the
    # federation's keys.
    approvers: Mapped[str] = mapped_column(String(16))
    # How long a proposal waits for its approvals before it expires.
    proposal_seconds: Mapped[int] = mapped_column(Integer)
    quote_seconds: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(Instant)


class ValuationRow(Base):
    """What one major unit of a currency is worth in the reference unit, from an instant on."""

    __tablename__ = "valuations"
    __table_args__ = (Index(None, "currency_id", "effective_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    rate_numerator: Mapped[int] = mapped_column(BigInteger)
    rate_denominator: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[dt.datetime] = mapped_column(Instant)
    recorded_at: Mapped[dt.datetime] = mapped_column(Instant)
    recorded_by: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(500))
    # The governance proposal that put it in force (None: recorded before governance).
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("governance_proposals.id"))


class ProtocolVersionRow(Base):
    """One version of the rule for converting ``from`` into ``to``.

    ``state`` is proposed (waiting for approvals), active (in force from
    ``effective_from``), rejected, or expired (its proposal lapsed unapproved). The
    version in force at an instant is the active one with the highest ``version`` whose
    ``activated_at`` and ``effective_from`` are not after it.
    """

    __tablename__ = "protocol_versions"
    __table_args__ = (
        UniqueConstraint("from_currency_id", "to_currency_id", "version"),
        Index(None, "from_currency_id", "to_currency_id", "state", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    from_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    to_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    allowed: Mapped[bool] = mapped_column(Boolean)
    suspended: Mapped[bool] = mapped_column(Boolean)
    fixed_rate_numerator: Mapped[int | None] = mapped_column(BigInteger)
    fixed_rate_denominator: Mapped[int | None] = mapped_column(BigInteger)
    fee_bps: Mapped[int] = mapped_column(Integer)
    fee_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    eligible_account_types: Mapped[list[str] | None] = mapped_column(JSON)
    eligible_account_ids: Mapped[list[int] | None] = mapped_column(JSON)
    windows: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    limits: Mapped[dict[str, Any]] = mapped_column()
    effective_from: Mapped[dt.datetime] = mapped_column(Instant)
    effective_until: Mapped[dt.datetime | None] = mapped_column(Instant)
    proposed_at: Mapped[dt.datetime] = mapped_column(Instant)
    proposed_by: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(500))
    # The keys that approved it, as ``governance_approvals`` records them (a copy, so a
    # version reads whole from its row).
    approvals: Mapped[list[str]] = mapped_column(JSON)
    activated_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    # The governance proposal that decides it (None: recorded before governance).
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("governance_proposals.id"))


class QuoteRow(Base):
    __tablename__ = "quotes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    payer_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    from_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    to_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    source_amount: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    source_used: Mapped[int] = mapped_column(BigInteger)
    residue: Mapped[int] = mapped_column(BigInteger)
    target_amount: Mapped[int] = mapped_column(BigInteger)
    # Target minor units per source minor unit, exact, as "n/d" (it can outgrow 64 bits).
    rate: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(Instant)
    expires_at: Mapped[dt.datetime] = mapped_column(Instant)
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("transactions.id"))


class ConversionRow(Base):
    """What a conversion used: protocol version, exact rate, valuations and amounts."""

    __tablename__ = "conversions"
    __table_args__ = (
        Index(None, "from_currency_id", "to_currency_id", "payer_account_id", "at"),
        Index(None, "from_currency_id", "to_currency_id", "payer_community_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), unique=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    quote_id: Mapped[str | None] = mapped_column(String(40))
    payer_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    payer_community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    payee_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    from_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    to_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    source_amount: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    source_used: Mapped[int] = mapped_column(BigInteger)
    residue: Mapped[int] = mapped_column(BigInteger)
    target_amount: Mapped[int] = mapped_column(BigInteger)
    rate: Mapped[str] = mapped_column(String(120))
    valuation_from: Mapped[str | None] = mapped_column(String(80))
    valuation_to: Mapped[str | None] = mapped_column(String(80))
    at: Mapped[dt.datetime] = mapped_column(Instant)


# -- governance (exchange/governance.py) ---------------------------------------------------------


class GovernanceProposalRow(Base):
    """One proposed change of policy (exchange settings, a valuation, a protocol version, a
    community credit line), from proposal to its end: applied, rejected or expired.

    ``change`` is what would be applied, in exact text (rates as "n/d", instants as RFC
    3339). ``approvals_required`` and ``approvers`` are the rule in force when it was
    proposed; it comes into force under the stricter of that and the rule in force when
    the last approval arrives, which an applied proposal then records in their place.
    Rows are never deleted."""

    __tablename__ = "governance_proposals"
    __table_args__ = (
        Index(None, "state", "expires_at"),
        Index(None, "kind", "subject", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    # What it changes, readable: "settings", a currency code, "HRB->HHT", a community slug.
    subject: Mapped[str] = mapped_column(String(120))
    change: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # pending, applied, rejected, expired
    reason: Mapped[str] = mapped_column(String(500))
    proposed_at: Mapped[dt.datetime] = mapped_column(Instant)
    proposed_by: Mapped[str] = mapped_column(String(100))
    proposer_role: Mapped[str] = mapped_column(String(16))
    proposer_community: Mapped[str | None] = mapped_column(String(64))
    approvals_required: Mapped[int] = mapped_column(Integer)
    approvers: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[dt.datetime] = mapped_column(Instant)
    # When it was applied, rejected or expired; by whom (None when it applied itself or
    # expired); and, for a rejection, why.
    closed_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    closed_by: Mapped[str | None] = mapped_column(String(100))
    close_reason: Mapped[str | None] = mapped_column(String(500))


class GovernanceApprovalRow(Base):
    """One key's approval of one proposal: who, in what role, for which community, when.

    ``seat`` is what the approval counts as: the key itself when only federation keys
    approve, or the community it represents ("federation" for the federation's keys) when
    approvals must come from distinct communities. A key approves a proposal once."""

    __tablename__ = "governance_approvals"
    __table_args__ = (UniqueConstraint("proposal_id", "approved_by"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("governance_proposals.id"))
    approved_by: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    community: Mapped[str | None] = mapped_column(String(64))
    seat: Mapped[str] = mapped_column(String(100))
    at: Mapped[dt.datetime] = mapped_column(Instant)
    # When its key was revoked while the proposal was pending: it no longer counts.
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(Instant)


# -- reciprocity (exchange/reciprocity.py) ------------------------------------------------------
#
# Flows are ledger transactions between per-community position accounts in the reference
# unit (see reciprocity.py); these tables tie each flow to the transaction that caused it and
# keep the aggregates the reports read, so no report sums history.


class ReciprocityFlowRow(Base):
    """One flow a ledger transaction caused: ``giver`` gave ``amount`` (reference-unit minor
    units) to ``receiver``. A reversal's rows carry the negated amounts of its original's."""

    __tablename__ = "reciprocity_flows"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), index=True)
    giver_community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    receiver_community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[dt.datetime] = mapped_column(Instant)
    # The ledger transaction between the two position accounts that books this flow (None
    # only if flows of one write between the same two communities cancelled out).
    position_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("transactions.id"))


class ReciprocityDayRow(Base):
    """What ``giver`` gave ``receiver`` on one UTC day: the sum of that day's flows."""

    __tablename__ = "reciprocity_days"
    __table_args__ = (
        Index(None, "receiver_community_id", "day"),
        Index(None, "day"),
    )

    giver_community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    receiver_community_id: Mapped[int] = mapped_column(
        ForeignKey("communities.id"), primary_key=True
    )
    amount: Mapped[int] = mapped_column(BigInteger)


class ReciprocityPairRow(Base):
    """What ``giver`` gave ``receiver`` in all (``given``), and how much of the receiver's
    resulting obligation to the giver multilateral clearing has set off (``cleared``)."""

    __tablename__ = "reciprocity_pairs"
    __table_args__ = (Index(None, "receiver_community_id"),)

    giver_community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), primary_key=True)
    receiver_community_id: Mapped[int] = mapped_column(
        ForeignKey("communities.id"), primary_key=True
    )
    given: Mapped[int] = mapped_column(BigInteger)
    cleared: Mapped[int] = mapped_column(BigInteger)


class ReciprocityUnvaluedRow(Base):
    """A cross-community transaction that recorded no flow because a currency it moved had
    no valuation in force when it posted: reports count these rather than hide them."""

    __tablename__ = "reciprocity_unvalued"
    __table_args__ = (
        Index(None, "community_id", "day"),
        Index(None, "day"),
    )

    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), primary_key=True)
    currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    day: Mapped[dt.date] = mapped_column(Date)
    at: Mapped[dt.datetime] = mapped_column(Instant)


class CreditLineRow(Base):
    """The most a community may owe the rest of the network: its net position (given minus
    received, in reference-unit minor units) may not fall below ``-credit_limit``."""

    __tablename__ = "community_credit_lines"
    __table_args__ = (CheckConstraint("credit_limit >= 0", name="credit_limit_positive"),)

    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"), primary_key=True)
    credit_limit: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(Instant)
    updated_by: Mapped[str] = mapped_column(String(100))


class ReciprocitySettingsRow(Base):
    """The federation's free-rider thresholds: one row. Either may be unset."""

    __tablename__ = "reciprocity_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Net intake (received minus given) at or above which a community is flagged.
    free_rider_absolute: Mapped[int | None] = mapped_column(BigInteger)
    # Share of its volume a community takes net, (received - given) / (received + given),
    # at or above which it is flagged; exact text ("0.25", "1/3").
    free_rider_relative: Mapped[str | None] = mapped_column(String(80))
    updated_at: Mapped[dt.datetime] = mapped_column(Instant)
    updated_by: Mapped[str] = mapped_column(String(100))


class ClearingProposalRow(Base):
    """A multilateral set-off computed from the obligations of one moment, kept with the
    fingerprint of those obligations; executing it checks they are still the same."""

    __tablename__ = "clearing_proposals"
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reference_currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    # [[debtor slug, creditor slug, amount], …] in (debtor, creditor) order.
    obligations: Mapped[list[Any]] = mapped_column(JSON)
    cleared: Mapped[list[Any]] = mapped_column(JSON)
    remaining: Mapped[list[Any]] = mapped_column(JSON)
    # [[[slug, …], amount], …]: each cycle the set-off runs round, and by how much.
    cycles: Mapped[list[Any]] = mapped_column(JSON)
    gross_before: Mapped[int] = mapped_column(BigInteger)
    gross_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(Instant)
    created_by: Mapped[str] = mapped_column(String(100))
    executed_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    executed_by: Mapped[str | None] = mapped_column(String(100))
    # The ledger transactions that booked the set-off between position accounts.
    transaction_ids: Mapped[list[Any]] = mapped_column(JSON)
