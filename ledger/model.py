"""What the ledger takes and gives: frozen, slotted values, no database in sight."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class CommunityStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class CurrencyKind(StrEnum):
    HEARTS = "hearts"
    LEAVES = "leaves"
    EXTERNAL = "external"
    UNIT = "unit"


class AccountType(StrEnum):
    MEMBER = "member"
    PROVIDER = "provider"
    ISSUANCE = "issuance"
    TREASURY = "treasury"
    CLEARING = "clearing"
    LIQUIDITY = "liquidity"
    FEES = "fees"
    ROUNDING = "rounding"


class AccountStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


class TransactionStatus(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class EntryKind(StrEnum):
    """Why an account's history row was written."""

    POSTED = "posted"  # a transaction posted straight away
    PENDING = "pending"  # a hold was placed
    PENDING_POSTED = "pending_posted"  # a hold was posted (in full or in part)
    PENDING_VOIDED = "pending_voided"  # a hold was voided
    PENDING_EXPIRED = "pending_expired"  # a hold reached its deadline


class EventKind(StrEnum):
    TRANSACTION_POSTED = "transaction.posted"
    TRANSACTION_PENDING = "transaction.pending"
    PENDING_POSTED = "transaction.pending_posted"
    PENDING_VOIDED = "transaction.pending_voided"
    PENDING_EXPIRED = "transaction.pending_expired"
    TRANSACTION_REVERSED = "transaction.reversed"
    ACCOUNT_CREATED = "account.created"
    ACCOUNT_CHANGED = "account.changed"
    COMMUNITY_CREATED = "community.created"
    CURRENCY_CREATED = "currency.created"
    VALUATION_CHANGED = "valuation.changed"
    PROTOCOL_CHANGED = "protocol.changed"


@dataclass(frozen=True, slots=True)
class Community:
    id: int
    slug: str
    name: str
    status: CommunityStatus
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Currency:
    id: int
    code: str
    kind: CurrencyKind
    issuer: str | None  # community slug; None means the federation issues it
    scale: int
    name: str
    symbol: str
    created_at: dt.datetime
    held_in: str = "all"  # ledger.authority.HeldIn: which communities may hold it
    circulation_cap: int | None = None  # the most that may be in circulation; None: no cap


@dataclass(frozen=True, slots=True)
class Supply:
    """A currency's issuance as of an instant, in minor units: what its issuance accounts
    put out, what came back to them, and the difference, which is in circulation."""

    currency: str
    issued: int
    redeemed: int
    in_circulation: int
    circulation_cap: int | None
    by_issuance_account: tuple[tuple[int, str, int, int], ...]  # id, community, issued, redeemed


@dataclass(frozen=True, slots=True)
class Balance:
    """Credits minus debits, in minor units.

    ``available`` is what can still leave the account: posted minus the debits on hold.
    """

    posted: int
    debits_pending: int
    credits_pending: int

    @property
    def available(self) -> int:
        return self.posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    community: str
    currency: str
    type: AccountType
    name: str
    status: AccountStatus
    min_balance: int | None
    max_balance: int | None
    metadata: dict[str, Any]
    balance: Balance
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PostingDraft:
    source_account_id: int
    destination_account_id: int
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class TransactionDraft:
    postings: tuple[PostingDraft, ...]
    client_id: str | None = None
    memo: str | None = None
    category: str | None = None
    external_ref: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    effective_date: dt.date | None = None
    pending: bool = False
    # Seconds a hold lives before it expires; only for pending drafts (None: no deadline).
    timeout_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Posting:
    index: int
    source_account_id: int
    destination_account_id: int
    currency: str
    amount: int
    # For a pending transaction that was posted, the amount that actually moved.
    amount_posted: int | None


@dataclass(frozen=True, slots=True)
class Transaction:
    id: int
    client_id: str | None
    status: TransactionStatus
    postings: tuple[Posting, ...]
    memo: str | None
    category: str | None
    external_ref: str | None
    metadata: dict[str, Any]
    effective_date: dt.date | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    resolved_at: dt.datetime | None
    reverses_id: int | None
    reversed_by_id: int | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One transaction's result in a batch: the transaction, or the rule that refused it."""

    transaction: Transaction | None
    error: Any = None  # LedgerError; typed loosely to keep model free of errors' import cycle
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StatementLine:
    entry_id: int
    transaction_id: int
    kind: EntryKind
    at: dt.datetime
    effective_date: dt.date | None
    amount: int  # change to the posted balance (signed)
    debits_pending_change: int
    credits_pending_change: int
    balance: Balance  # after this line
    counterparty_account_id: int | None
    memo: str | None
    category: str | None


@dataclass(frozen=True, slots=True)
class Event:
    sequence: int
    kind: EventKind
    at: dt.datetime
    transaction_id: int | None
    account_id: int | None
    community_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None
