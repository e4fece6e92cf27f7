"""The ledger against a model it must agree with, one random history at a time.

A hypothesis ``RuleBasedStateMachine`` drives ``Ledger`` through random histories: payments
with one or several postings (Hearts and Leaves mixed), holds that are then posted in full
or in part, voided or left to expire, reversals, batches (atomic or not), retries under
the same client id (with the same content and with other content), freezing, closing and
new limits. Many of those operations are invalid on purpose. A small dictionary model
predicts every outcome, down to the code and the account of each refusal, the way
TigerBeetle's auditor predicts its workload; after every step the stored ledger must
agree with it:

* every balance (posted, pending debits, pending credits), status and limit is the model's;
* per currency, balances sum to zero and pending debits equal pending credits;
* every transaction's status, links and posted amounts are the model's, and the rows an
  operation wrote are exactly the ones it should have (none for a refusal or a replay);
* ``verify`` finds nothing wrong.

Some rules check history rather than state: the as-of balance at every instant the
model recorded equals the model's balance then, and every statement's running balance
adds up, page by page, to the model's balance now.

Each example runs on a database of its own, cloned from the session's migrated template
(the same helpers ``tests/conftest.py`` uses), on SQLite and on PostgreSQL. Time is a
frozen clock the machine moves, so each example replays exactly when hypothesis shrinks it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, func, select

from ledger import repository as repo
from ledger.authority import HeldIn
from ledger.database import make_engine
from ledger.errors import Code, LedgerError
from ledger.model import (
    AccountStatus,
    AccountType,
    Balance,
    CurrencyKind,
    Outcome,
    PostingDraft,
    StatementLine,
    Transaction,
    TransactionDraft,
    TransactionStatus,
)
from ledger.service import UNSET, Ledger
from ledger.verify import verify
from tests.conftest import BACKENDS, Clock, _admin, _postgres_url, _worker
from tests.ledger.builders import hold, village

# Moderate by default (the suite shares small machines); raise it for a long hunt.
EXAMPLES = int(os.environ.get("HEARTLEAF_STATEFUL_EXAMPLES", "25"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

START = dt.datetime(2031, 3, 1, 9, 0, tzinfo=dt.UTC)
# Every clock step adds this on top of its whole seconds. The ledger hands out instants a
# few microseconds ahead of its clock (each account's history must strictly increase), and
# the model does not predict at that grain: with the extra millisecond no hold's deadline
# ever falls within microseconds of the clock, so "expired by now" is never a coin toss.
STEP_EXTRA = dt.timedelta(milliseconds=1)
# Snapshots are taken this long after the clock, just before it moves on by a second or
# more: every write so far happened before the snapshot instant, every later one after.
SNAPSHOT_OFFSET = dt.timedelta(milliseconds=500)
TIMEOUT_MAX = 90 * 86_400
AMOUNT_MAX = 2**53 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MISSING_ACCOUNT = 9_999
MISSING_TRANSACTION = 999_999
CURRENCIES = ("HRB", "LVS")
CLIENT_IDS = ("alpha", "beta", "gamma")
SCOPES = ("", "hilltop")
CATEGORIES = (None, "care:childcare", "eco:wetland")
_example_numbers = itertools.count()

Refusal = tuple[Code, int | None]  # the code and the account it concerns


class FrozenClock:
    """Time moves only when the machine moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds) + STEP_EXTRA


# -- the model ----------------------------------------------------------------------------


@dataclass
class ModelAccount:
    id: int
    currency: str
    status: AccountStatus
    floor: int | None
    ceiling: int | None
    posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0
    entries: int = 0  # history rows the account has (once every lapsed hold is swept)

    def balance(self) -> Balance:
        return Balance(self.posted, self.debits_pending, self.credits_pending)


@dataclass
class ModelTransaction:
    id: int
    draft: TransactionDraft
    status: TransactionStatus
    expires_at: dt.datetime | None
    amounts_posted: tuple[int, ...] | None = None
    reverses: int | None = None
    reversed_by: int | None = None

    def moved(self) -> list[int]:
        if self.amounts_posted is not None:
            return list(self.amounts_posted)
        return [p.amount for p in self.draft.postings]


def _is_amount(value: object) -> bool:
    return type(value) is int and 1 <= value <= AMOUNT_MAX


def _fits(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def _shape_refusal(draft: TransactionDraft) -> Refusal | None:
    """What is wrong with the draft on its face, before any account is read."""
    for posting in draft.postings:
        if not _is_amount(posting.amount):
            return Code.AMOUNT_OUT_OF_RANGE, None
        if posting.source_account_id == posting.destination_account_id:
            return Code.SAME_ACCOUNT, posting.source_account_id
    timeout = draft.timeout_seconds
    if timeout is not None and (not draft.pending or not 1 <= timeout <= TIMEOUT_MAX):
        return Code.TIMEOUT_OUT_OF_RANGE, None
    return None


def _apply(draft: TransactionDraft, accounts: dict[int, ModelAccount]) -> Refusal | None:
    """Apply the draft to ``accounts`` (a copy the caller may throw away); the first rule
    it breaks, in the catalogue's order."""
    sides = [
        (p, account_id)
        for p in draft.postings
        for account_id in (p.source_account_id, p.destination_account_id)
    ]
    for _posting, account_id in sides:
        if account_id not in accounts:
            return Code.ACCOUNT_NOT_FOUND, account_id
    for posting, account_id in sides:
        if accounts[account_id].currency != posting.currency:
            return Code.CURRENCY_MISMATCH, account_id
    for _posting, account_id in sides:
        if accounts[account_id].status == AccountStatus.CLOSED:
            return Code.ACCOUNT_CLOSED, account_id
        if accounts[account_id].status == AccountStatus.FROZEN:
            return Code.ACCOUNT_FROZEN, account_id
    for posting in draft.postings:
        source = accounts[posting.source_account_id]
        destination = accounts[posting.destination_account_id]
        if draft.pending:
            source.debits_pending += posting.amount
            destination.credits_pending += posting.amount
        else:
            source.posted -= posting.amount
            destination.posted += posting.amount
        source.entries += 1
        destination.entries += 1
    touched = sorted({account_id for _posting, account_id in sides})
    for account_id in touched:
        a = accounts[account_id]
        values = (a.posted, a.debits_pending, a.credits_pending, a.posted + a.credits_pending)
        if not all(_fits(v) for v in values):
            return Code.BALANCE_OUT_OF_RANGE, account_id
    for account_id in touched:
        a = accounts[account_id]
        if a.floor is not None and a.posted - a.debits_pending < a.floor:
            return Code.INSUFFICIENT_FUNDS, account_id
    for account_id in touched:
        a = accounts[account_id]
        if a.ceiling is not None and a.posted + a.credits_pending > a.ceiling:
            return Code.CEILING_EXCEEDED, account_id
    return None


def _copy(accounts: dict[int, ModelAccount]) -> dict[int, ModelAccount]:
    return {account_id: replace(account) for account_id, account in accounts.items()}


def _same_request(a: TransactionDraft, b: TransactionDraft) -> bool:
    return replace(a, client_id=None) == replace(b, client_id=None)


def _refusal(error: LedgerError | None) -> Refusal | None:
    return None if error is None else (error.code, error.account_id)


def _attempt(action: Callable[[], Any]) -> tuple[Any, LedgerError | None]:
    try:
        return action(), None
    except LedgerError as error:
        return None, error


@dataclass(frozen=True)
class Expected:
    """What the model predicts for one draft of a request."""

    kind: str  # "accepted", "replay" (of a stored transaction), "replay_in_batch", "refused"
    refusal: Refusal | None = None
    transaction_id: int | None = None  # replay: the stored transaction
    first_index: int | None = None  # replay_in_batch: the draft it repeats


# -- strategies ----------------------------------------------------------------------------

FLOORS = st.sampled_from([0, 0, -300, None])
CEILINGS = st.sampled_from([None, None, 1_000, 2_500])
AMOUNT_KINDS = ("small",) * 24 + ("large",) * 3 + ("zero", "negative", "above_max", "max")
TWISTS = ("none",) * 30 + ("same_account", "missing_account", "other_currency")
TIMEOUTS = st.sampled_from([None, None, 5, 30, 60, 3_600, 0, TIMEOUT_MAX + 1])
SECONDS = st.sampled_from([1, 2, 5, 30, 90, 600])


def _amount(data: st.DataObject) -> int:
    kind = data.draw(st.sampled_from(AMOUNT_KINDS), label="amount kind")
    if kind == "small":
        return data.draw(st.integers(1, 300), label="amount")
    if kind == "large":
        return data.draw(st.integers(401, 8_000), label="amount")
    return {"zero": 0, "negative": -7, "above_max": AMOUNT_MAX + 1, "max": AMOUNT_MAX}[kind]


# -- the machine ---------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    # Set by the test: makes a fresh migrated database, returns its URL and a clean-up.
    new_database: Callable[[], tuple[str, Callable[[], None]]]

    def __init__(self) -> None:
        super().__init__()
        self.url, self._drop = type(self).new_database()
        self.engine: Engine = make_engine(self.url)
        self.clock = FrozenClock()
        self.ledger = Ledger(self.engine, clock=self.clock)
        self.accounts: dict[int, ModelAccount] = {}
        self.transactions: dict[int, ModelTransaction] = {}
        self.client_ids: dict[tuple[str, str], tuple[TransactionDraft, int]] = {}
        self.requests: list[tuple[tuple[TransactionDraft, ...], str, bool]] = []
        self.snapshots: list[tuple[dt.datetime, dict[int, Balance]]] = []
        self.names = itertools.count()
        self.ledger.create_community("riverbend", "Riverbend")
        self.ledger.create_community("hilltop", "Hilltop")
        self.ledger.create_currency(
            "HRB",
            kind=CurrencyKind.HEARTS,
            scale=2,
            name="Hearts",
            symbol="♡",
            issuer="riverbend",
            held_in=HeldIn.ALL,
        )
        self.ledger.create_currency(
            "LVS", kind=CurrencyKind.LEAVES, scale=0, name="Leaves", symbol="🍃"
        )
        self.snapshots.append((START - dt.timedelta(seconds=1), {}))

    def teardown(self) -> None:
        self.engine.dispose()
        self._drop()

    # -- setting up -------------------------------------------------------------------------

    @initialize(
        limits=st.lists(st.tuples(FLOORS, CEILINGS), min_size=5, max_size=5),
        funds=st.lists(st.integers(100, 2_000), min_size=5, max_size=5),
        holds=st.lists(
            st.tuples(st.integers(0, 4), st.integers(1, 300), st.sampled_from([None, 30, 3_600])),
            min_size=1,
            max_size=3,
        ),
    )
    def open_the_books(
        self,
        limits: list[tuple[int | None, int | None]],
        funds: list[int],
        holds: list[tuple[int, int, int | None]],
    ) -> None:
        """Issuance accounts, five members with random limits, their first funds, and a
        few holds among them, so every history has something to post, void or let lapse."""
        issuance = {
            currency: self._open("riverbend", currency, AccountType.ISSUANCE, UNSET, None)
            for currency in CURRENCIES
        }
        members = [("riverbend", "HRB"), ("riverbend", "HRB"), ("hilltop", "HRB")]
        members += [("riverbend", "LVS"), ("hilltop", "LVS")]
        ids = []
        for (community, currency), (floor, ceiling), amount in zip(
            members, limits, funds, strict=True
        ):
            member = self._open(community, currency, AccountType.MEMBER, floor, ceiling)
            funding = PostingDraft(issuance[currency], member, amount, currency)
            self._post([TransactionDraft((funding,))], scope="", atomic=False)
            ids.append(member)
        next_of = {0: 1, 1: 2, 2: 0, 3: 4, 4: 3}  # the next member holding the same currency
        for source, amount, timeout in holds:
            currency = members[source][1]
            posting = PostingDraft(ids[source], ids[next_of[source]], amount, currency)
            draft = TransactionDraft((posting,), pending=True, timeout_seconds=timeout)
            self._post([draft], scope="", atomic=False)

    def _open(
        self, community: str, currency: str, type_: AccountType, floor: Any, ceiling: int | None
    ) -> int:
        before = self._row_counts()
        account = self.ledger.open_account(
            community=community,
            currency=currency,
            type=type_,
            name=f"{type_}-{next(self.names)}",
            min_balance=floor,
            max_balance=ceiling,
        )
        expected_floor = None if floor is UNSET else floor
        assert (account.min_balance, account.max_balance) == (expected_floor, ceiling)
        assert account.balance == Balance(0, 0, 0)
        assert account.id not in self.accounts
        self.accounts[account.id] = ModelAccount(
            account.id, currency, AccountStatus.OPEN, expected_floor, ceiling
        )
        self._expect_written(before, quiet=True, events=1)
        return account.id

    @rule(
        community=st.sampled_from(["riverbend", "hilltop"]),
        currency=st.sampled_from(CURRENCIES),
        floor=FLOORS,
        ceiling=CEILINGS,
    )
    def open_account(
        self, community: str, currency: str, floor: int | None, ceiling: int | None
    ) -> None:
        # Floors stay <= 0 here: test_open_account_refuses_a_floor_above_the_opening_balance
        # pins what a positive floor on a new account does.
        self._open(community, currency, AccountType.MEMBER, floor, ceiling)

    # -- drafting ---------------------------------------------------------------------------

    def _draw_posting(self, data: st.DataObject) -> PostingDraft:
        currency = data.draw(st.sampled_from(CURRENCIES), label="currency")
        holders = sorted(a.id for a in self.accounts.values() if a.currency == currency)
        # Mostly spend from accounts that have something to spend, so that payments and
        # holds get through often enough to build a history; sometimes from any account.
        funded = [
            a.id
            for a in self.accounts.values()
            if a.currency == currency and (a.floor is None or a.posted - a.debits_pending > a.floor)
        ]
        spend_funds: bool = data.draw(st.booleans(), label="funded source")
        pool = funded if funded and spend_funds else holders
        source = data.draw(st.sampled_from(sorted(pool)), label="source")
        destination = data.draw(
            st.sampled_from([a for a in holders if a != source]), label="destination"
        )
        twist = data.draw(st.sampled_from(TWISTS), label="twist")
        if twist == "same_account":
            destination = source
        elif twist == "missing_account":
            destination = MISSING_ACCOUNT
        elif twist == "other_currency":
            others = sorted(a.id for a in self.accounts.values() if a.currency != currency)
            destination = data.draw(st.sampled_from(others), label="foreign destination")
        return PostingDraft(source, destination, _amount(data), currency)

    def _draw_draft(self, data: st.DataObject, *, pending: bool) -> TransactionDraft:
        count = data.draw(st.integers(1, 3), label="postings")
        timeout = data.draw(TIMEOUTS, label="timeout") if pending else None
        if not pending and data.draw(st.integers(0, 19), label="stray timeout") == 0:
            timeout = 60  # a deadline on a transaction that posts straight away
        return TransactionDraft(
            postings=tuple(self._draw_posting(data) for _ in range(count)),
            client_id=data.draw(st.none() | st.sampled_from(CLIENT_IDS), label="client id"),
            memo=data.draw(st.sampled_from([None, "thanks"]), label="memo"),
            category=data.draw(st.sampled_from(CATEGORIES), label="category"),
            pending=pending,
            timeout_seconds=timeout,
        )

    # -- posting ----------------------------------------------------------------------------

    @rule(
        data=st.data(),
        kind=st.sampled_from(["pay", "hold", "pay", "batch", "atomic batch"]),
        scope=st.sampled_from(SCOPES),
    )
    def post(self, data: st.DataObject, kind: str, scope: str) -> None:
        """A payment, a hold, or a batch of both (atomic or not), valid or not."""
        if kind in ("pay", "hold"):
            self._post([self._draw_draft(data, pending=kind == "hold")], scope=scope, atomic=False)
            return
        count = data.draw(st.integers(2, 3), label="drafts")
        drafts = [
            self._draw_draft(data, pending=data.draw(st.booleans(), label="pending"))
            for _ in range(count)
        ]
        self._post(drafts, scope=scope, atomic=kind == "atomic batch")

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), change=st.sampled_from([None, "amount", None, "memo", "category"]))
    def retry(self, data: st.DataObject, change: str | None) -> None:
        """A request sent before, again. Unchanged, what was stored replays and what was
        refused is judged afresh; changed, under a client id already stored, it conflicts."""
        if change is None or not self.client_ids:
            drafts, scope, atomic = data.draw(st.sampled_from(self.requests), label="request")
            self._post(list(drafts), scope=scope, atomic=atomic)
            return
        key = data.draw(st.sampled_from(sorted(self.client_ids)), label="scope and client id")
        stored, _transaction_id = self.client_ids[key]
        if change == "amount":
            first = stored.postings[0]
            postings = (replace(first, amount=first.amount + 1), *stored.postings[1:])
            draft = replace(stored, postings=postings)
        elif change == "memo":
            draft = replace(stored, memo=f"{stored.memo} (again)")
        else:
            draft = replace(stored, category="eco:compost")
        self._post([draft], scope=key[0], atomic=False)

    def _expect_batch(
        self, drafts: list[TransactionDraft], scope: str, atomic: bool
    ) -> tuple[list[Expected], dict[int, ModelAccount]]:
        """The model's answer to ``post_transactions``, and the balances it leaves."""
        outcomes: list[Expected | None] = [None] * len(drafts)
        for index, draft in enumerate(drafts):
            refusal = _shape_refusal(draft)
            if refusal is not None:
                outcomes[index] = Expected("refused", refusal)
        for index, draft in enumerate(drafts):
            key = (scope, draft.client_id or "")
            if outcomes[index] is None and draft.client_id and key in self.client_ids:
                stored, transaction_id = self.client_ids[key]
                outcomes[index] = (
                    Expected("replay", transaction_id=transaction_id)
                    if _same_request(draft, stored)
                    else Expected("refused", (Code.IDEMPOTENCY_CONFLICT, None))
                )
        work = _copy(self.accounts)
        first_of: dict[str, int] = {}
        for index, draft in enumerate(drafts):
            if outcomes[index] is not None:
                continue
            if draft.client_id is not None and draft.client_id in first_of:
                first = first_of[draft.client_id]
                outcomes[index] = (
                    Expected("replay_in_batch", first_index=first)
                    if _same_request(draft, drafts[first])
                    else Expected("refused", (Code.IDEMPOTENCY_CONFLICT, None))
                )
                continue
            trial = _copy(work)
            refusal = _apply(draft, trial)
            if refusal is not None:
                outcomes[index] = Expected("refused", refusal)
                if atomic:
                    break
                continue
            work = trial
            outcomes[index] = Expected("accepted")
            if draft.client_id is not None:
                first_of[draft.client_id] = index
        if atomic and any(o is not None and o.kind == "refused" for o in outcomes):
            failed = Expected("refused", (Code.BATCH_ITEM_FAILED, None))
            kept = ("refused", "replay")
            return [o if o is not None and o.kind in kept else failed for o in outcomes], (
                self.accounts
            )
        assert all(o is not None for o in outcomes)
        return [o for o in outcomes if o is not None], work

    def _post(self, drafts: list[TransactionDraft], *, scope: str, atomic: bool) -> None:
        expected, balances_after = self._expect_batch(drafts, scope, atomic)
        quiet = self._quiet()
        before = self._row_counts()
        if len(drafts) == 1 and not atomic:
            # The single-transaction door raises the refusal instead of returning it.
            outcome, error = _attempt(lambda: self.ledger.post_transaction(drafts[0], scope=scope))
            outcomes: list[Outcome] = [outcome if error is None else Outcome(None, error)]
        else:
            outcomes = self.ledger.post_transactions(drafts, scope=scope, atomic=atomic)
        assert len(outcomes) == len(drafts)

        accepted: list[tuple[TransactionDraft, Transaction]] = []
        for index, (draft, want, got) in enumerate(zip(drafts, expected, outcomes, strict=True)):
            where = f"draft {index} of {drafts}"
            if want.kind == "refused":
                assert _refusal(got.error) == want.refusal, where
                assert got.transaction is None, where
                continue
            assert got.error is None, f"{where}: refused with {got.error!r}, expected {want}"
            assert got.transaction is not None, where
            if want.kind == "replay":
                assert got.replayed, where
                assert got.transaction.id == want.transaction_id, where
            elif want.kind == "replay_in_batch":
                assert got.replayed, where
                assert want.first_index is not None
                first = outcomes[want.first_index].transaction
                assert first is not None
                assert got.transaction.id == first.id, where
            else:
                assert not got.replayed, where
                accepted.append((draft, got.transaction))

        self.accounts = balances_after
        for draft, transaction in accepted:
            self._record_new(draft, transaction, scope)
        if any(d.client_id for d in drafts):
            self.requests.append((tuple(drafts), scope, atomic))
        postings = sum(len(d.postings) for d, _t in accepted)
        holds = sum(
            len({a for p in d.postings for a in (p.source_account_id, p.destination_account_id)})
            for d, _t in accepted
            if d.pending
        )
        self._expect_written(
            before,
            quiet=quiet,
            transactions=len(accepted),
            postings=postings,
            entries=2 * postings,
            holds=holds,
            events=len(accepted),
        )

    def _record_new(self, draft: TransactionDraft, transaction: Transaction, scope: str) -> None:
        assert transaction.id not in self.transactions
        assert self.clock.now <= transaction.created_at < self.clock.now + SNAPSHOT_OFFSET
        if draft.pending:
            assert transaction.status == TransactionStatus.PENDING
            deadline = (
                None
                if draft.timeout_seconds is None
                else transaction.created_at + dt.timedelta(seconds=draft.timeout_seconds)
            )
            assert transaction.expires_at == deadline
        else:
            assert transaction.status == TransactionStatus.POSTED
        self.transactions[transaction.id] = ModelTransaction(
            transaction.id,
            draft,
            TransactionStatus(transaction.status),
            transaction.expires_at,
        )
        if draft.client_id is not None:
            self.client_ids[(scope, draft.client_id)] = (draft, transaction.id)

    # -- two-phase --------------------------------------------------------------------------

    def _draw_transaction(self, data: st.DataObject, wanted: list[int]) -> int:
        twist = data.draw(st.sampled_from(("wanted",) * 6 + ("any", "missing")), label="pick")
        if twist == "missing" or not self.transactions:
            return MISSING_TRANSACTION
        if twist == "any" or not wanted:
            return data.draw(st.sampled_from(sorted(self.transactions)), label="transaction")
        return data.draw(st.sampled_from(wanted), label="transaction")

    def _pending_ids(self) -> list[int]:
        return sorted(
            t.id for t in self.transactions.values() if t.status == TransactionStatus.PENDING
        )

    def _resolution_refusal(self, transaction_id: int, amounts: list[int] | None) -> Refusal | None:
        """The checks posting and voiding share, in the ledger's order: the transaction,
        its status (a lapsed hold is expired), then the count of ``amounts`` if given."""
        found = self.transactions.get(transaction_id)
        if found is None:
            return Code.TRANSACTION_NOT_FOUND, None
        if found.status == TransactionStatus.POSTED:
            code = Code.PENDING_ALREADY_POSTED if found.draft.pending else Code.NOT_PENDING
            return code, None
        if found.status == TransactionStatus.VOIDED:
            return Code.PENDING_ALREADY_VOIDED, None
        if found.status == TransactionStatus.EXPIRED:
            return Code.PENDING_EXPIRED, None
        if amounts is not None and len(amounts) != len(found.draft.postings):
            return Code.INVALID_REQUEST, None
        return None

    @precondition(lambda self: self._pending_ids())
    @rule(data=st.data(), action=st.sampled_from(["post", "void"]))
    def resolve_hold(self, data: st.DataObject, action: str) -> None:
        """Post a hold (in full, in part, or wrongly) or void it; mostly a pending one."""
        transaction_id = self._draw_transaction(data, self._pending_ids())
        if action == "void":
            # Voiding moves nothing, so a frozen account does not stop it (nor does it
            # stop a hold from expiring).
            self._resolve(
                transaction_id,
                self._resolution_refusal(transaction_id, None),
                TransactionStatus.VOIDED,
                None,
                lambda: self.ledger.void_pending(transaction_id),
            )
            return
        found = self.transactions.get(transaction_id)
        amounts: list[int] | None = None
        if found is not None and data.draw(st.booleans(), label="partial"):
            amounts = [
                data.draw(
                    st.sampled_from([p.amount, 0, p.amount // 2, p.amount + 1, -1]),
                    label="amount posted",
                )
                for p in found.draft.postings
            ]
            if data.draw(st.integers(0, 9), label="wrong length") == 0:
                amounts.append(1)
        refusal = self._resolution_refusal(transaction_id, amounts)
        if refusal is None:
            assert found is not None
            posted = amounts or [p.amount for p in found.draft.postings]
            for posting, amount in zip(found.draft.postings, posted, strict=True):
                if amount < 0:
                    refusal = Code.AMOUNT_OUT_OF_RANGE, None
                    break
                if amount > posting.amount:
                    refusal = Code.POST_AMOUNT_EXCEEDS_PENDING, None
                    break
            else:
                for account_id in sorted(self._accounts_of(found.draft)):
                    if self.accounts[account_id].status == AccountStatus.FROZEN:
                        refusal = Code.ACCOUNT_FROZEN, account_id
                        break
        self._resolve(
            transaction_id,
            refusal,
            TransactionStatus.POSTED,
            amounts,
            lambda: self.ledger.post_pending(transaction_id, amounts),
        )

    def _resolve(
        self,
        transaction_id: int,
        refusal: Refusal | None,
        status: TransactionStatus,
        amounts: list[int] | None,
        action: Callable[[], Transaction],
    ) -> None:
        quiet = self._quiet()
        before = self._row_counts()
        result, error = _attempt(action)
        assert _refusal(error) == refusal, f"transaction {transaction_id}: {error!r}"
        if refusal is not None:
            self._expect_written(before, quiet=quiet)
            return
        found = self.transactions[transaction_id]
        held = [p.amount for p in found.draft.postings]
        moved = (amounts or held) if status == TransactionStatus.POSTED else [0] * len(held)
        self._release(found, moved)
        found.status = status
        if status == TransactionStatus.POSTED:
            found.amounts_posted = tuple(moved)
        assert result.status == status
        assert [p.amount_posted for p in result.postings] == (
            list(moved) if status == TransactionStatus.POSTED else [None] * len(held)
        )
        self._expect_written(
            before,
            quiet=quiet,
            entries=2 * len(held),
            holds=-len(self._accounts_of(found.draft)),
            events=1,
        )

    def _release(self, found: ModelTransaction, moved: list[int]) -> None:
        for posting, amount in zip(found.draft.postings, moved, strict=True):
            source = self.accounts[posting.source_account_id]
            destination = self.accounts[posting.destination_account_id]
            source.posted -= amount
            source.debits_pending -= posting.amount
            destination.posted += amount
            destination.credits_pending -= posting.amount
            source.entries += 1
            destination.entries += 1

    @staticmethod
    def _accounts_of(draft: TransactionDraft) -> set[int]:
        return {a for p in draft.postings for a in (p.source_account_id, p.destination_account_id)}

    # -- time -------------------------------------------------------------------------------

    def _expire_model(self, up_to: dt.datetime) -> None:
        for found in self.transactions.values():
            if (
                found.status == TransactionStatus.PENDING
                and found.expires_at is not None
                and found.expires_at <= up_to
            ):
                self._release(found, [0] * len(found.draft.postings))
                found.status = TransactionStatus.EXPIRED

    @rule(seconds=SECONDS)
    def let_time_pass(self, seconds: int) -> None:
        """Record the model's balances at an instant after every write so far, then move on
        (which lets holds lapse: the model releases them at their deadline)."""
        instant = self.clock.now + SNAPSHOT_OFFSET
        self._expire_model(up_to=instant)
        self.snapshots.append(
            (instant, {account_id: a.balance() for account_id, a in self.accounts.items()})
        )
        self.clock.advance(seconds)
        self._expire_model(up_to=self.clock.now)

    # -- corrections ------------------------------------------------------------------------

    @precondition(lambda self: self.transactions)
    @rule(data=st.data(), scope=st.sampled_from(SCOPES))
    def reverse(self, data: st.DataObject, scope: str) -> None:
        reversible = sorted(
            t.id
            for t in self.transactions.values()
            if t.status == TransactionStatus.POSTED and t.reverses is None and t.reversed_by is None
        )
        transaction_id = self._draw_transaction(data, reversible)
        client_id = data.draw(st.none() | st.sampled_from(CLIENT_IDS), label="client id")
        quiet = self._quiet()
        before = self._row_counts()
        expected, draft, work = self._expect_reversal(transaction_id, client_id, scope)
        outcome, error = _attempt(
            lambda: self.ledger.reverse(transaction_id, client_id=client_id, scope=scope)
        )
        where = f"reverse({transaction_id}, client_id={client_id!r}, scope={scope!r})"
        if expected.kind == "refused":
            assert _refusal(error) == expected.refusal, f"{where}: {error!r}"
            self._expect_written(before, quiet=quiet)
            return
        assert error is None, f"{where}: refused with {error!r}, expected {expected}"
        assert outcome.transaction is not None
        if expected.kind == "replay":
            assert outcome.replayed
            assert outcome.transaction.id == expected.transaction_id
            self._expect_written(before, quiet=quiet)
            return
        assert draft is not None
        assert work is not None
        reversal = outcome.transaction
        assert reversal.reverses_id == transaction_id
        assert [
            (p.source_account_id, p.destination_account_id, p.amount) for p in reversal.postings
        ] == [(p.source_account_id, p.destination_account_id, p.amount) for p in draft.postings]
        self.accounts = work
        self._record_new(draft, reversal, scope)
        self.transactions[reversal.id].reverses = transaction_id
        self.transactions[transaction_id].reversed_by = reversal.id
        self._expect_written(
            before,
            quiet=quiet,
            transactions=1,
            postings=len(draft.postings),
            entries=2 * len(draft.postings),
            events=2,
        )

    def _expect_reversal(
        self, transaction_id: int, client_id: str | None, scope: str
    ) -> tuple[Expected, TransactionDraft | None, dict[int, ModelAccount] | None]:
        original = self.transactions.get(transaction_id)
        if original is None:
            return Expected("refused", (Code.TRANSACTION_NOT_FOUND, None)), None, None
        if original.reversed_by is not None and client_id is None:
            return Expected("refused", (Code.ALREADY_REVERSED, None)), None, None
        if original.status != TransactionStatus.POSTED or original.reverses is not None:
            return Expected("refused", (Code.NOT_REVERSIBLE, None)), None, None
        postings = tuple(
            PostingDraft(p.destination_account_id, p.source_account_id, moved, p.currency)
            for p, moved in zip(original.draft.postings, original.moved(), strict=True)
            if moved > 0
        )
        if not postings:
            return Expected("refused", (Code.NOT_REVERSIBLE, None)), None, None
        draft = TransactionDraft(
            postings=postings,
            client_id=client_id,
            memo=f"Reversal of transaction {transaction_id}",
            category=original.draft.category,
            metadata={"reverses": transaction_id},
        )
        if client_id is not None and (scope, client_id) in self.client_ids:
            stored, stored_id = self.client_ids[(scope, client_id)]
            if _same_request(draft, stored):
                return Expected("replay", transaction_id=stored_id), None, None
            return Expected("refused", (Code.IDEMPOTENCY_CONFLICT, None)), None, None
        if original.reversed_by is not None:
            return Expected("refused", (Code.ALREADY_REVERSED, None)), None, None
        work = _copy(self.accounts)
        refusal = _apply(draft, work)
        if refusal is not None:
            return Expected("refused", refusal), None, None
        return Expected("accepted"), draft, work

    # -- account life -----------------------------------------------------------------------

    def _draw_account(self, data: st.DataObject) -> int:
        if data.draw(st.integers(0, 19), label="missing account") == 0:
            return MISSING_ACCOUNT
        return data.draw(st.sampled_from(sorted(self.accounts)), label="account")

    @rule(
        data=st.data(),
        status=st.sampled_from(
            [AccountStatus.FROZEN, AccountStatus.OPEN, None, AccountStatus.CLOSED]
        ),
        floor=st.sampled_from([UNSET, UNSET, None, 0, -500, 100, 5_000]),
        ceiling=st.sampled_from([UNSET, UNSET, None, 0, 1_000, 100_000, -1]),
    )
    def change_account(
        self, data: st.DataObject, status: AccountStatus | None, floor: Any, ceiling: Any
    ) -> None:
        """Freeze, unfreeze or close an account, or give it new limits; valid or not."""
        self._update(self._draw_account(data), floor, ceiling, status)

    def _update(
        self, account_id: int, floor: Any, ceiling: Any, status: AccountStatus | None
    ) -> None:
        model = self.accounts.get(account_id)
        refusal: Refusal | None = None
        if model is None:
            refusal = Code.ACCOUNT_NOT_FOUND, account_id
        else:
            new_floor = model.floor if floor is UNSET else floor
            new_ceiling = model.ceiling if ceiling is UNSET else ceiling
            balance = model.balance()
            if (new_ceiling is not None and new_ceiling < 0) or (
                new_floor is not None and new_ceiling is not None and new_floor > new_ceiling
            ):
                refusal = Code.LIMITS_INVALID, None
            elif (new_floor is not None and balance.available < new_floor) or (
                new_ceiling is not None and balance.posted + balance.credits_pending > new_ceiling
            ):
                refusal = Code.LIMIT_BELOW_BALANCE, account_id
            elif status is not None and status != model.status:
                if model.status == AccountStatus.CLOSED:
                    refusal = Code.STATUS_CHANGE_INVALID, account_id
                elif status == AccountStatus.CLOSED and balance != Balance(0, 0, 0):
                    refusal = Code.ACCOUNT_NOT_EMPTY, account_id
        quiet = self._quiet()
        before = self._row_counts()
        account, error = _attempt(
            lambda: self.ledger.update_account(
                account_id, min_balance=floor, max_balance=ceiling, status=status
            )
        )
        assert _refusal(error) == refusal, f"update of account {account_id}: {error!r}"
        if refusal is not None:
            self._expect_written(before, quiet=quiet)
            return
        assert model is not None
        model.floor = new_floor
        model.ceiling = new_ceiling
        model.status = model.status if status is None else status
        assert (account.min_balance, account.max_balance, account.status) == (
            model.floor,
            model.ceiling,
            model.status,
        )
        self._expect_written(before, quiet=quiet, events=1)

    # -- history ----------------------------------------------------------------------------

    @precondition(lambda self: len(self.snapshots) > 1)
    @rule()
    def as_of_every_recorded_instant(self) -> None:
        for instant, balances in self.snapshots:
            assert instant < self.clock.now
            for account_id in sorted(self.accounts):
                got = self.ledger.balance(account_id, as_of=instant)
                want = balances.get(account_id, Balance(0, 0, 0))
                assert got == want, f"account {account_id} as of {instant}"

    @rule(data=st.data(), page_size=st.integers(1, 4))
    def statement_adds_up(self, data: st.DataObject, page_size: int) -> None:
        """Sweep the lapsed holds, which changes no balance anyone can read but writes their
        history; then one account's statement, page by page, must add up to the model."""
        self.ledger.expire_overdue()
        assert self._quiet(), "a hold past its deadline is still open after the sweep"
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(repo.entries.c.account_id, func.count()).group_by(repo.entries.c.account_id)
            ).all()
        counted = {int(account_id): int(count) for account_id, count in rows}
        assert counted == {a.id: a.entries for a in self.accounts.values() if a.entries}

        account_id = data.draw(st.sampled_from(sorted(self.accounts)), label="account")
        lines: list[StatementLine] = []
        cursor = None
        while True:
            page = self.ledger.statement(account_id, cursor=cursor, limit=page_size)
            assert len(page.items) <= page_size
            lines += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert lines == list(self.ledger.statement(account_id, limit=1000).items)

        running = Balance(0, 0, 0)
        previous: StatementLine | None = None
        for line in lines:
            running = Balance(
                running.posted + line.amount,
                running.debits_pending + line.debits_pending_change,
                running.credits_pending + line.credits_pending_change,
            )
            assert line.balance == running, f"line {line.entry_id} of account {account_id}"
            if previous is not None and previous.transaction_id != line.transaction_id:
                assert previous.at < line.at, "history is not strictly ordered"
            previous = line
        model = self.accounts[account_id]
        assert running == model.balance()
        assert len(lines) == model.entries

        # As of each of the latest instants, the balance is the statement's line then.
        last_at: dict[dt.datetime, Balance] = {line.at: line.balance for line in lines}
        for instant in sorted(last_at)[-6:]:
            if instant <= self.clock.now:
                assert self.ledger.balance(account_id, as_of=instant) == last_at[instant]

        # A time window is a slice of the same statement.
        if lines:
            since = lines[len(lines) // 2].at
            window = self.ledger.statement(account_id, since=since, limit=1000).items
            assert list(window) == [line for line in lines if line.at >= since]

        touching = {
            t.id for t in self.transactions.values() if account_id in self._accounts_of(t.draft)
        }
        listed = self.ledger.list_transactions(account_id=account_id, limit=1000)
        assert {t.id for t in listed.items} == touching

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def balances_agree_with_the_model(self) -> None:
        page = self.ledger.list_accounts(limit=1000)
        assert page.next_cursor is None
        stored = {a.id: (a.balance, a.status, a.min_balance, a.max_balance) for a in page.items}
        modelled = {
            a.id: (a.balance(), a.status, a.floor, a.ceiling) for a in self.accounts.values()
        }
        assert stored == modelled
        for currency in CURRENCIES:
            balances = [a.balance for a in page.items if a.currency == currency]
            assert sum(b.posted for b in balances) == 0, f"{currency} does not sum to zero"
            assert sum(b.debits_pending for b in balances) == sum(
                b.credits_pending for b in balances
            ), f"{currency} holds do not balance"

    @invariant()
    def transactions_agree_with_the_model(self) -> None:
        page = self.ledger.list_transactions(limit=1000)
        assert page.next_cursor is None
        stored = {
            t.id: (
                t.status,
                t.reverses_id,
                t.reversed_by_id,
                [(p.source_account_id, p.destination_account_id, p.amount) for p in t.postings],
                [p.amount_posted for p in t.postings],
            )
            for t in page.items
        }
        modelled = {
            t.id: (
                t.status,
                t.reverses,
                t.reversed_by,
                [
                    (p.source_account_id, p.destination_account_id, p.amount)
                    for p in t.draft.postings
                ],
                list(t.amounts_posted or [None] * len(t.draft.postings)),
            )
            for t in self.transactions.values()
        }
        assert stored == modelled
        counts = self._row_counts()
        assert counts["transactions"] == len(self.transactions)
        assert counts["postings"] == sum(len(t.draft.postings) for t in self.transactions.values())

    @invariant()
    def the_store_verifies(self) -> None:
        assert verify(self.engine) == []

    # -- rows ---------------------------------------------------------------------------------

    def _row_counts(self) -> dict[str, int]:
        tables = (repo.transactions, repo.postings, repo.entries, repo.holds, repo.events)
        with self.engine.connect() as connection:
            return {
                table.name: int(
                    connection.execute(select(func.count()).select_from(table)).scalar_one()
                )
                for table in tables
            }

    def _quiet(self) -> bool:
        """No hold is past its deadline yet unswept: a write cannot start with a sweep."""
        with self.engine.connect() as connection:
            lapsed = connection.execute(
                select(func.count())
                .select_from(repo.holds)
                .where(repo.holds.c.expires_at <= self.clock.now)
            ).scalar_one()
        return int(lapsed) == 0

    def _expect_written(
        self,
        before: dict[str, int],
        *,
        quiet: bool,
        transactions: int = 0,
        postings: int = 0,
        entries: int = 0,
        holds: int = 0,
        events: int = 0,
    ) -> None:
        """The operation wrote exactly these rows. When lapsed holds were waiting, the
        operation may first have swept them (entries, events, released holds): then only
        transactions and postings, which a sweep never writes, are counted."""
        after = self._row_counts()
        written = {name: after[name] - before[name] for name in after}
        expected = {
            "transactions": transactions,
            "postings": postings,
            "entries": entries,
            "holds": holds,
            "events": events,
        }
        if not quiet:
            written = {k: v for k, v in written.items() if k in ("transactions", "postings")}
            expected = {k: v for k, v in expected.items() if k in ("transactions", "postings")}
        assert written == expected


# -- the test ------------------------------------------------------------------------------


def _database_factory(
    backend: str, request: pytest.FixtureRequest, directory: Path
) -> Callable[[], tuple[str, Callable[[], None]]]:
    """Fresh migrated databases, cheaply: a copy of the session's template file on SQLite,
    ``CREATE DATABASE … TEMPLATE`` on PostgreSQL (as ``tests/conftest.py`` does per test)."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")

        def new_sqlite() -> tuple[str, Callable[[], None]]:
            path = directory / f"example-{next(_example_numbers)}.db"
            shutil.copyfile(template, path)

            def drop() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)

            return f"sqlite:///{path}", drop

        return new_sqlite

    template_name: str = request.getfixturevalue("postgres_template")

    def new_postgres() -> tuple[str, Callable[[], None]]:
        name = f"heartleaf_machine_{_worker()}_{os.getpid()}_{next(_example_numbers)}"
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
        return _postgres_url(name), lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return new_postgres


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_ledger_agrees_with_its_model(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    machine = type(
        "LedgerMachineOn" + backend.capitalize(),
        (LedgerMachine,),
        {"new_database": staticmethod(_database_factory(backend, request, tmp_path))},
    )
    run_state_machine_as_test(machine, settings=SETTINGS)


# -- what the machine found, pinned as plain tests ------------------------------------------


def test_open_account_refuses_a_floor_above_the_opening_balance(
    ledger: Ledger, engine: Engine
) -> None:
    """A new account starts at zero, so a floor of 100 already lies above its balance.
    ``update_account`` refuses that very state with ``limit_below_balance``;
    ``open_account`` accepted it, and ``verify`` then reported the new, untouched account
    as breaking its limits."""
    ledger.create_community("riverbend", "Riverbend")
    ledger.create_currency("LVS", kind=CurrencyKind.LEAVES, scale=0, name="Leaves", symbol="🍃")
    _account, error = _attempt(
        lambda: ledger.open_account(
            community="riverbend",
            currency="LVS",
            type=AccountType.MEMBER,
            name="reserve",
            min_balance=100,
        )
    )
    assert error is not None, "opened an account outside its own limits"
    assert error.code == Code.LIMIT_BELOW_BALANCE


def test_posting_a_hold_never_leaves_a_lapsed_hold_in_history(ledger: Ledger, clock: Clock) -> None:
    """Two holds from Ana; the second lapses after 30 s; at 32 s the first is posted. The
    post must not write its history row over the lapsed hold: the hold is released at its
    deadline, and every as-of read after that deadline shows it gone."""
    v = village(ledger)
    first = ledger.post_transaction(hold(v.ana, v.bo, 100)).transaction
    lapsing = ledger.post_transaction(hold(v.ana, v.bo, 200, timeout_seconds=30)).transaction
    assert first is not None
    assert lapsing is not None
    assert lapsing.expires_at is not None
    clock.advance(32)
    ledger.post_pending(first.id)
    ledger.expire_overdue()
    after_deadline = lapsing.expires_at + dt.timedelta(seconds=1)
    assert ledger.balance(v.ana, as_of=after_deadline) == Balance(10_000, 100, 0)
    assert ledger.balance(v.ana, as_of=clock()) == Balance(9_900, 0, 0)
    assert ledger.balance(v.ana) == Balance(9_900, 0, 0)
