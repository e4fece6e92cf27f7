"""The schema, one for SQLite and PostgreSQL.

Every amount is a BigInteger of minor units. Every ledger instant is a BigInteger of
microseconds since the Unix epoch (``Instant``): exact, ordered the same on both engines,
and cheap to compare, which history ordering leans on. Constraints are named so the
Alembic migrations can refer to them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_micros(instant: dt.datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError("ledger instants must carry a timezone")
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=micros)


class Instant(TypeDecorator[dt.datetime]):
    """An aware UTC datetime stored as integer microseconds since the epoch."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> int | None:
        return None if value is None else to_micros(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else from_micros(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}  # noqa: RUF012 - SQLAlchemy reads it as given


class CommunityRow(Base):
    __tablename__ = "communities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Instant)


class CurrencyRow(Base):
    __tablename__ = "currencies"
    __table_args__ = (CheckConstraint("scale >= 0 AND scale <= 8", name="scale_range"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    issuer_community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id"))
    scale: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    symbol: Mapped[str] = mapped_column(String(16))
    # The issuer's holding policy: ``ledger.authority.HeldIn`` (issuer, all, system).
    held_in: Mapped[str] = mapped_column(String(16))
    # The most that may be in circulation (minor units); None: no cap.
    circulation_cap: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(Instant)


class AccountRow(Base):
    """An account and its maintained balance: current, so reads never sum history."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("community_id", "currency_id", "name"),
        CheckConstraint(
            "min_balance IS NULL OR max_balance IS NULL OR min_balance <= max_balance",
            name="limits_ordered",
        ),
        CheckConstraint("debits_pending >= 0 AND credits_pending >= 0", name="pending_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    min_balance: Mapped[int | None] = mapped_column(BigInteger)
    max_balance: Mapped[int | None] = mapped_column(BigInteger)
    # Who gave the account its power to issue or to go below zero (an ``Actor.scope``):
    # the currency's issuer, or the operator. None for an account with neither power.
    authorized_by: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    balance_posted: Mapped[int] = mapped_column(BigInteger)
    debits_pending: Mapped[int] = mapped_column(BigInteger)
    credits_pending: Mapped[int] = mapped_column(BigInteger)
    # The instant of the account's newest history row: the next one must come after it.
    last_entry_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(Instant)
    updated_at: Mapped[dt.datetime] = mapped_column(Instant)


# The condition of the index on transactions that are not posted (pending, voided, expired).
UNPOSTED = "status <> 'posted'"


class TransactionRow(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("idempotency_scope", "client_id"),
        Index(None, "category", "created_at"),
        Index(None, "created_at"),
        # A posted payment, nearly every row, never writes to it. A query uses it when it
        # repeats ``UNPOSTED`` with a literal (SQLite proves a partial index's condition
        # only from the same term, never from a parameter): ``repository.list_transactions``.
        Index(
            "ix_transactions_unposted_status_created_at",
            "status",
            "created_at",
            "id",
            sqlite_where=text(UNPOSTED),
            postgresql_where=text(UNPOSTED),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # Whose namespace the client id lives in (the API passes the caller's key scope), so
    # two communities choosing the same id never collide or learn of each other.
    idempotency_scope: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    memo: Mapped[str | None] = mapped_column(String(500))
    category: Mapped[str | None] = mapped_column(String(100))
    external_ref: Mapped[str | None] = mapped_column(String(200))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    effective_date: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(Instant)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(Instant)
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("transactions.id"))
    reversed_by_id: Mapped[int | None] = mapped_column(ForeignKey("transactions.id"))


class PostingRow(Base):
    __tablename__ = "postings"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("source_account_id <> destination_account_id", name="distinct_accounts"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    source_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    destination_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    currency_id: Mapped[int] = mapped_column(ForeignKey("currencies.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    amount_posted: Mapped[int | None] = mapped_column(BigInteger)


class EntryRow(Base):
    """One account's history row: what changed and the balance right after it.

    Ordered by (account_id, at, id); ``at`` is the ledger instant of the transaction that
    wrote it, strictly increasing along the account's history from one transaction to the
    next. A current, as-of or statement read is one index range on that key.
    """

    __tablename__ = "entries"
    __table_args__ = (
        Index(None, "account_id", "at", "id"),
        Index(None, "community_id", "at", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id"))
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"))
    counterparty_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(24))
    at: Mapped[dt.datetime] = mapped_column(Instant)
    amount: Mapped[int] = mapped_column(BigInteger)
    debits_pending_change: Mapped[int] = mapped_column(BigInteger)
    credits_pending_change: Mapped[int] = mapped_column(BigInteger)
    balance_posted: Mapped[int] = mapped_column(BigInteger)
    debits_pending: Mapped[int] = mapped_column(BigInteger)
    credits_pending: Mapped[int] = mapped_column(BigInteger)


class HoldRow(Base):
    """A hold still open on one account. Deleted when its transaction resolves, so the
    table holds only live holds and the expiry correction at read time stays tiny."""

    __tablename__ = "holds"
    __table_args__ = (
        Index(None, "account_id", "expires_at"),
        Index(None, "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    debits: Mapped[int] = mapped_column(BigInteger)
    credits: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(Instant)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Instant)


class EventRow(Base):
    """The event feed. ``sequence`` is assigned in commit order (see ``repository``).

    On SQLite ``sequence`` is the rowid, as every other table's id is: one B-tree per
    event instead of a table and an index beside it."""

    __tablename__ = "events"

    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    kind: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(Instant)
    transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    account_id: Mapped[int | None] = mapped_column(Integer)
    community_ids: Mapped[list[int]] = mapped_column(JSON)


class CounterRow(Base):
    """Named counters. Its one row, ``events``, is the feed's commit-order sequence."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
