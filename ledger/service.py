"""The ledger's operations: one unit of work per call, every rule checked inside it.

``Ledger`` is the real interface of ``ledger/``: the REST API, the exchange layer, the
CLI and the tests call exactly these methods. Each write opens one unit of work through
``run_in_transaction`` (the one retry loop), locks the accounts it touches in ascending
id order, validates against what it just locked, writes in bulk, and commits once.

History is ordered by the ledger instant, assigned here inside the writing unit of work:
``max(now, newest instant on any touched account + 1 µs)``. So each account's history is
strictly increasing even when the wall clock steps back or two writers race; the client's
``effective_date`` is stored and filterable but never reorders history.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from sqlalchemy import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from ledger import authority, money
from ledger import repository as repo
from ledger.authority import OPERATOR, Actor, HeldIn
from ledger.database import run_in_transaction
from ledger.errors import (
    Code,
    LedgerError,
    TransactionRefusedError,
    account_frozen,
    account_not_found,
    already_reversed,
    community_not_found,
    currency_not_found,
    transaction_not_found,
)
from ledger.model import (
    Account,
    AccountStatus,
    AccountType,
    Balance,
    Community,
    CommunityStatus,
    Currency,
    CurrencyKind,
    EntryKind,
    Event,
    EventKind,
    Outcome,
    Page,
    Posting,
    PostingDraft,
    StatementLine,
    Supply,
    Transaction,
    TransactionDraft,
    TransactionStatus,
)
from ledger.tables import from_micros, to_micros

T = TypeVar("T")

BATCH_MAX: Final = 8190
POSTINGS_MAX: Final = 128
PAGE_LIMIT_MAX: Final = 1000
TIMEOUT_SECONDS_MIN: Final = 1
TIMEOUT_SECONDS_MAX: Final = 90 * 86_400
EXPIRY_CHUNK: Final = 500
ONE_MICROSECOND: Final = dt.timedelta(microseconds=1)
TEXT_LIMITS: Final = {"client_id": 128, "memo": 500, "category": 100, "external_ref": 200}


class WriteHook(Protocol):
    """Rules and records of a layer above, run inside the posting's unit of work."""

    def check(self, connection: Connection, now: dt.datetime) -> None:
        """Raise ``LedgerError`` to refuse; the touched accounts are already locked."""

    def record(self, connection: Connection, transaction: Transaction) -> None:
        """Write the layer's own rows for a transaction just written."""


class Movement(NamedTuple):
    """Value that moved for real (posted, not held) between two communities' accounts.

    A named tuple: a batch makes one per crossing posting, and a frozen dataclass's
    ``__init__`` costs an ``object.__setattr__`` per field."""

    transaction_id: int
    source_account_id: int
    destination_account_id: int
    source_community_id: int
    destination_community_id: int
    currency_id: int
    amount: int
    at: dt.datetime
    reverses_id: int | None  # set when this movement undoes transaction ``reverses_id``
    category: str | None  # the transaction's


class MovementObserver(Protocol):
    """A layer above that follows value crossing between communities (exchange/'s
    reciprocity), inside the unit of work that moves it."""

    def observe(
        self, connection: Connection, ledger: Ledger, movements: Sequence[Movement]
    ) -> None:
        """Record the movements; raise ``TransactionRefusedError`` to refuse one
        transaction of the write (a batch posts the rest), ``LedgerError`` to refuse it all."""


class _Unset:
    """Marks an argument the caller did not pass (``None`` means "no limit")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _ExpiryNeeded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a unit of work that found overdue holds on the accounts it locked."""

    def __init__(self, up_to: dt.datetime) -> None:
        self.up_to = up_to


class _DraftRefused(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised out of a batch's unit of work, which rolls back, when an observer refused
    the transaction of draft ``index``: the batch is judged again with that draft refused."""

    def __init__(self, index: int, error: LedgerError) -> None:
        self.index = index
        self.error = error


@dataclass(slots=True)
class _LockedAccount:
    """An account as locked for a write, with the balance the write is building."""

    id: int
    community_id: int
    currency_id: int
    currency: str
    status: str
    min_balance: int | None
    max_balance: int | None
    posted: int
    debits_pending: int
    credits_pending: int
    last_entry_at: dt.datetime | None
    type: str
    community_status: str
    circulation_cap: int | None

    def balance(self) -> Balance:
        return Balance(self.posted, self.debits_pending, self.credits_pending)


class Ledger:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], dt.datetime] = utc_now,
        observers: Sequence[MovementObserver] = (),
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.observers = tuple(observers)
        self._currencies: dict[str, Currency] = {}
        self._caused: dict[int, list[_Events]] = {}  # by id() of the unit of work's connection

    # -- communities and currencies -----------------------------------------------------

    def create_community(
        self, slug: str, name: str, status: CommunityStatus = CommunityStatus.ACTIVE
    ) -> Community:
        def work(connection: Connection) -> Community:
            if repo.community_by_slug(connection, slug) is not None:
                raise LedgerError(
                    Code.COMMUNITY_EXISTS,
                    f"There is already a community {slug!r}; choose another slug.",
                    field="slug",
                )
            now = self.clock()
            values = {"slug": slug, "name": name, "status": str(status), "created_at": now}
            community_id = repo.insert_community(connection, values)
            _emit(connection, now, [(EventKind.COMMUNITY_CREATED, None, None, (community_id,))])
            return Community(community_id, slug, name, status, now)

        return self._write_unique(work, Code.COMMUNITY_EXISTS, field="slug")

    def get_community(self, slug: str) -> Community:
        return self._read(lambda connection: _community(connection, slug))

    def list_communities(self) -> list[Community]:
        return self._read(
            lambda connection: [
                _community_from_row(row) for row in repo.list_communities(connection)
            ]
        )

    def set_community_status(self, slug: str, status: CommunityStatus) -> Community:
        def work(connection: Connection) -> Community:
            community = _community(connection, slug)
            repo.update_community(connection, community.id, {"status": str(status)})
            return replace(community, status=status)

        return self._write(work)

    def create_currency(
        self,
        code: str,
        *,
        kind: CurrencyKind,
        scale: int,
        name: str,
        symbol: str,
        issuer: str | None = None,
        held_in: HeldIn | None = None,
        circulation_cap: int | None = None,
    ) -> Currency:
        """Create a currency. Its kind says who issues it (``authority.KIND_RULES``) and
        where it is held unless ``held_in`` says otherwise."""
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int)
            or not 0 <= scale <= money.SCALE_MAX
        ):
            raise LedgerError(
                Code.SCALE_OUT_OF_RANGE,
                f"scale is {scale!r}; give a whole number of decimal places from 0 to "
                f"{money.SCALE_MAX} (2 for cents).",
                field="scale",
            )

        def work(connection: Connection) -> Currency:
            if repo.currency_by_code(connection, code) is not None:
                raise LedgerError(
                    Code.CURRENCY_EXISTS,
                    f"There is already a currency {code!r}; choose another code.",
                    field="code",
                )
            issuer_id = None if issuer is None else _community(connection, issuer).id
            authority.check_currency_kind(kind, issuer_id)
            policy = held_in or authority.KIND_RULES[kind].held_in
            _check_currency_policy(policy, issuer_id, circulation_cap)
            now = self.clock()
            repo.insert_currency(
                connection,
                {
                    "code": code,
                    "kind": str(kind),
                    "issuer_community_id": issuer_id,
                    "scale": scale,
                    "name": name,
                    "symbol": symbol,
                    "held_in": str(policy),
                    "circulation_cap": circulation_cap,
                    "created_at": now,
                },
            )
            communities = () if issuer_id is None else (issuer_id,)
            _emit(connection, now, [(EventKind.CURRENCY_CREATED, None, None, communities)])
            return _currency(connection, code)

        return self._write_unique(work, Code.CURRENCY_EXISTS, field="code")

    def get_currency(self, code: str, *, fresh: bool = False) -> Currency:
        """A currency. Its code, kind, issuer and scale never change once created, so what
        was read once stays true for them; its policy may change: ``fresh`` reads it anew
        (every rule that depends on the policy reads the row inside its own write)."""
        known = None if fresh else self._currencies.get(code)
        if known is None:
            known = self._currencies[code] = self._read(
                lambda connection: _currency(connection, code)
            )
        return known

    def list_currencies(self) -> list[Currency]:
        return self._read(
            lambda connection: [_currency_from_row(row) for row in repo.list_currencies(connection)]
        )

    def set_currency_policy(
        self,
        code: str,
        *,
        actor: Actor = OPERATOR,
        held_in: HeldIn | _Unset = UNSET,
        circulation_cap: int | _Unset | None = UNSET,
    ) -> Currency:
        """The issuer changes where its currency may be held or how much may circulate.
        Accounts already open stay open; a cap below what circulates now is refused."""

        def work(connection: Connection) -> Currency:
            row = repo.currency_by_code(connection, code, lock=True)
            if row is None:
                raise currency_not_found(code)
            current = _currency_from_row(row)
            if not actor.is_issuer_of(row["issuer_community_id"]):
                raise LedgerError(
                    Code.ISSUANCE_NOT_AUTHORIZED,
                    f"Only {code}'s issuer ("
                    + ("the federation" if current.issuer is None else f"{current.issuer}")
                    + ") sets where it is held and how much of it may circulate.",
                    field="currency",
                )
            policy = current.held_in if isinstance(held_in, _Unset) else held_in
            cap = (
                current.circulation_cap if isinstance(circulation_cap, _Unset) else circulation_cap
            )
            _check_currency_policy(HeldIn(policy), row["issuer_community_id"], cap)
            if cap is not None:
                circulating = repo.committed_circulation(connection, row["id"])
                if circulating > cap:
                    raise LedgerError(
                        Code.LIMIT_BELOW_BALANCE,
                        f"{circulating} minor units of {code} circulate already or are held "
                        f"to be issued, more than a cap of {cap}; set a cap of at least "
                        f"{circulating}, or void the holds first.",
                        field="circulation_cap",
                    )
            repo.update_currency(
                connection, row["id"], {"held_in": str(policy), "circulation_cap": cap}
            )
            self._currencies.pop(code, None)
            return replace(current, held_in=str(policy), circulation_cap=cap)

        return self._write(work)

    def supply(self, code: str, as_of: dt.datetime | None = None) -> Supply:
        """How much of a currency its issuance accounts put out and took back, by account,
        as of ``as_of`` (now when None); the difference is what circulates."""

        def work(connection: Connection) -> Supply:
            currency = _currency(connection, code)
            rows = repo.issuance_totals(connection, currency.id, as_of)
            issued = sum(r[2] for r in rows)
            redeemed = sum(r[3] for r in rows)
            return Supply(
                code,
                issued,
                redeemed,
                issued - redeemed,
                currency.circulation_cap,
                tuple((r[0], r[1], r[2], r[3]) for r in rows),
            )

        return self._read(work)

    # -- accounts --------------------------------------------------------------------------

    def open_account(
        self,
        *,
        community: str,
        currency: str,
        type: AccountType,
        name: str,
        min_balance: int | _Unset | None = UNSET,
        max_balance: int | None = None,
        metadata: dict[str, Any] | None = None,
        actor: Actor = OPERATOR,
    ) -> Account:
        """Open an account. Without ``min_balance`` the floor is 0 (no overdraft), except
        for issuance and system accounts, which have none: issuing is what makes an
        issuance account negative. ``actor`` must be allowed to (``authority``)."""
        if isinstance(min_balance, _Unset):
            unbounded = type == AccountType.ISSUANCE or authority.system_owner(type) is not None
            min_balance = None if unbounded else 0
        _check_limits(min_balance, max_balance)
        if min_balance is not None and min_balance > 0:  # a new account holds zero
            raise LedgerError(
                Code.LIMIT_BELOW_BALANCE,
                "A new account holds zero, so its floor cannot be above zero.",
                field="min_balance",
            )

        def work(connection: Connection) -> Account:
            owner = _community(connection, community)
            if owner.status == CommunityStatus.SUSPENDED:
                raise LedgerError(
                    Code.COMMUNITY_SUSPENDED,
                    f"{community} is suspended by the federation: it opens no accounts until "
                    "it is resumed.",
                    field="community",
                )
            held_row = repo.currency_by_code(connection, currency)
            if held_row is None:
                raise LedgerError(
                    Code.CURRENCY_NOT_FOUND, f"There is no currency {currency}.", field="currency"
                )
            held = _currency_from_row(held_row)
            authorized_by = authority.check_may_open(
                actor,
                account_type=type,
                community_id=owner.id,
                community_slug=owner.slug,
                currency_code=held.code,
                issuer_community_id=held_row["issuer_community_id"],
                held_in=HeldIn(held.held_in),
                min_balance=min_balance,
            )
            if repo.account_name_taken(connection, owner.id, held.id, name):
                raise LedgerError(
                    Code.ACCOUNT_NAME_TAKEN,
                    f"{community} already has an account {name!r} in {currency}; choose "
                    "another name.",
                    field="name",
                )
            now = self.clock()
            account_id = repo.insert_account(
                connection,
                {
                    "community_id": owner.id,
                    "currency_id": held.id,
                    "type": str(type),
                    "name": name,
                    "status": str(AccountStatus.OPEN),
                    "min_balance": min_balance,
                    "max_balance": max_balance,
                    "authorized_by": authorized_by,
                    "metadata": metadata or {},
                    "balance_posted": 0,
                    "debits_pending": 0,
                    "credits_pending": 0,
                    "last_entry_at": None,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            _emit(connection, now, [(EventKind.ACCOUNT_CREATED, None, account_id, (owner.id,))])
            return self._account(connection, account_id, now)

        return self._write_unique(work, Code.ACCOUNT_NAME_TAKEN, field="name")

    def get_account(self, account_id: int) -> Account:
        return self._read(lambda connection: self._account(connection, account_id, self.clock()))

    def list_accounts(
        self,
        *,
        community: str | None = None,
        currency: str | None = None,
        type: AccountType | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]:
        limit = _page_limit(limit)
        after_id = None if cursor is None else _decode_cursor(cursor)[1]

        def work(connection: Connection) -> Page[Account]:
            community_id = None if community is None else _community(connection, community).id
            currency_id = None if currency is None else _currency(connection, currency).id
            rows = repo.list_accounts(
                connection,
                community_id=community_id,
                currency_id=currency_id,
                account_type=None if type is None else str(type),
                after_id=after_id,
                limit=limit + 1,
            )
            now = self.clock()
            overdue = repo.overdue_hold_totals_by_account(connection, [r["id"] for r in rows], now)
            accounts = [_account_from_row(row, overdue.get(row["id"], (0, 0))) for row in rows]
            return _page(accounts, limit, lambda account: _encode_cursor(0, account.id))

        return self._read(work)

    def update_account(
        self,
        account_id: int,
        *,
        expected_version: int | None = None,
        min_balance: int | _Unset | None = UNSET,
        max_balance: int | _Unset | None = UNSET,
        status: AccountStatus | None = None,
        metadata: dict[str, Any] | None = None,
        actor: Actor = OPERATOR,
    ) -> Account:
        """Change limits, status or metadata. ``expected_version`` (the API's If-Match)
        makes the change conditional on nobody having changed the account since. A
        system account is changed by no key; a floor below zero only by the issuer."""

        def work(connection: Connection) -> Account:
            rows = repo.lock_accounts(connection, [account_id])
            if not rows:
                raise account_not_found(account_id)
            now = self.clock()
            pending = rows[0].debits_pending or rows[0].credits_pending
            if pending and repo.overdue_hold_transactions(connection, [account_id], now):
                raise _ExpiryNeeded(now)  # judge and store the change on released holds
            current = self._account(connection, account_id, now)
            authority.check_may_change_account(
                actor, current.type, account_id, rows[0].community_id
            )
            if expected_version is not None and expected_version != current.version:
                raise LedgerError(
                    Code.VERSION_MISMATCH,
                    f"Account {account_id} is at version {current.version}, not "
                    f"{expected_version}; read it again and send If-Match: "
                    f'"{current.version}" if the change still stands.',
                    account_id=account_id,
                    extra={"version": current.version},
                )
            floor = current.min_balance if isinstance(min_balance, _Unset) else min_balance
            ceiling = current.max_balance if isinstance(max_balance, _Unset) else max_balance
            held = repo.currency_by_code(connection, current.currency)
            assert held is not None
            powered = authority.check_may_change_floor(
                actor,
                currency_code=current.currency,
                issuer_community_id=held["issuer_community_id"],
                current=current.min_balance,
                new=floor,
                account_type=current.type,
            )
            _check_limits(floor, ceiling)
            balance = current.balance
            if (floor is not None and balance.available < floor) or (
                ceiling is not None and balance.posted + balance.credits_pending > ceiling
            ):
                raise LedgerError(
                    Code.LIMIT_BELOW_BALANCE,
                    f"Account {account_id} has {balance.available} available and "
                    f"{balance.posted + balance.credits_pending} with pending credits; limits "
                    f"must keep both within them (floor {floor}, ceiling {ceiling}).",
                    account_id=account_id,
                )
            new_status = current.status if status is None else status
            if new_status != current.status:
                if current.status == AccountStatus.CLOSED:
                    raise LedgerError(
                        Code.STATUS_CHANGE_INVALID,
                        f"Account {account_id} is closed for good; open a new account instead.",
                        account_id=account_id,
                    )
                if new_status == AccountStatus.CLOSED and balance != Balance(0, 0, 0):
                    raise LedgerError(
                        Code.ACCOUNT_NOT_EMPTY,
                        f"Account {account_id} holds {balance.posted} with "
                        f"{balance.debits_pending} pending out and {balance.credits_pending} "
                        "pending in; move it to zero and let holds resolve before closing it.",
                        account_id=account_id,
                    )
            repo.update_account(
                connection,
                account_id,
                {
                    "min_balance": floor,
                    "max_balance": ceiling,
                    "status": str(new_status),
                    "metadata": current.metadata if metadata is None else metadata,
                    "version": current.version + 1,
                    "updated_at": now,
                    **(
                        {"authorized_by": actor.scope if powered else None}
                        if floor != current.min_balance
                        else {}
                    ),
                },
            )
            community_id = rows[0].community_id
            _emit(connection, now, [(EventKind.ACCOUNT_CHANGED, None, account_id, (community_id,))])
            return self._account(connection, account_id, now)

        return self._write_after_expiry(work)

    def communities_of_accounts(self, account_ids: Iterable[int]) -> dict[int, str]:
        """The community slug of each account that exists (missing ids are left out)."""
        return repo.account_communities(self.engine, sorted(set(account_ids)))

    # -- posting -----------------------------------------------------------------------------

    def post_transaction(
        self,
        draft: TransactionDraft,
        *,
        scope: str = "",
        hook: WriteHook | None = None,
        actor: Actor = OPERATOR,
    ) -> Outcome:
        """Post one transaction; raises the ``LedgerError`` of the rule that refused it.

        ``hook`` lets a layer above (exchange/) check its own rules and record its own rows
        inside the same unit of work, after the accounts are locked."""
        (outcome,) = self.post_transactions([draft], scope=scope, hook=hook, actor=actor)
        if outcome.error is not None:
            raise outcome.error
        return outcome

    def post_transactions(
        self,
        drafts: Sequence[TransactionDraft],
        *,
        scope: str = "",
        atomic: bool = False,
        hook: WriteHook | None = None,
        actor: Actor = OPERATOR,
    ) -> list[Outcome]:
        """Post a batch: one outcome per draft, in order, all in one unit of work.

        ``actor`` is who the batch acts for: each posting's source must be an account it
        may spend from, and no posting moves a system account outside its own operation
        (``authority.posting_refusal``), checked on the rows the write locked.

        Each draft is judged on the balances (and an observer's state: reciprocity
        positions) the drafts before it left, and refused alone. With ``atomic``
        the batch applies in full or not at all: once one draft is refused, the others
        answer ``batch_item_failed`` and nothing is written.
        """
        if len(drafts) > BATCH_MAX:
            raise LedgerError(
                Code.BATCH_TOO_LARGE,
                f"The batch holds {len(drafts):,} transactions; send at most {BATCH_MAX:,} "
                "in one, and the rest in further batches.",
                field="transactions",
            )
        shape_errors = [_shape_error(draft) for draft in drafts]
        hashes = [_request_hash(draft) for draft in drafts]
        # A single new transaction skips the client-id lookup and lets the unique index
        # catch a reuse: a replay then costs one rolled-back attempt, a new one a query less.
        look_up = len(drafts) > 1 or hook is not None
        arguments: dict[str, Any] = {
            "hook": hook,
            "drafts": drafts,
            "shape_errors": shape_errors,
            "hashes": hashes,
            "scope": scope,
            "atomic": atomic,
            "actor": actor,
        }
        for _attempt in range(3):
            try:
                outcomes = self._write_judged(look_up, arguments)
            except _ExpiryNeeded as needed:
                self.expire_overdue(up_to=needed.up_to)
                continue
            except IntegrityError:
                # The client id is taken (by an earlier request, or by a concurrent writer
                # since our lookup): the next attempt looks it up and replays or refuses.
                look_up = True
                continue
            refused_with_id = any(
                o.error is not None and d.client_id is not None
                for o, d in zip(outcomes, drafts, strict=True)
            )
            if look_up or not refused_with_id:
                return outcomes
            # Refused without the lookup: it may be the retry of a request stored earlier,
            # which must get its first answer back. Nothing was written; look and retry.
            look_up = True
        return self._write_judged(True, arguments)

    def _write_judged(self, look_up: bool, arguments: dict[str, Any]) -> list[Outcome]:
        """Write a batch; when an observer refuses one of its transactions, write it again
        with that draft refused, so the drafts after it are judged without it. Each round
        refuses one draft more, so this ends."""
        while True:
            try:
                return self._write(
                    _pipelined(partial(self._post_batch, look_up=look_up, **arguments))
                )
            except _DraftRefused as refused:
                arguments["shape_errors"][refused.index] = refused.error

    def _post_batch(
        self,
        connection: Connection,
        drafts: Sequence[TransactionDraft],
        shape_errors: list[LedgerError | None],
        hashes: list[str],
        scope: str,
        atomic: bool,
        *,
        look_up: bool = True,
        hook: WriteHook | None = None,
        reversal_of: int | None = None,
        observe: bool = True,
        actor: Actor = OPERATOR,
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(drafts)
        for index, error in enumerate(shape_errors):
            if error is not None:
                outcomes[index] = Outcome(None, error)

        # Idempotency: a client id already stored answers with what it first did.
        client_ids = {
            d.client_id for d, o in zip(drafts, outcomes, strict=True) if d.client_id and o is None
        }
        stored = (
            {
                row["client_id"]: row
                for row in repo.transactions_by_client_id(connection, scope, sorted(client_ids))
            }
            if client_ids and look_up
            else {}
        )
        replayed_ids = [int(row["id"]) for row in stored.values()]
        replays = (
            {t.id: t for t in self._transactions(connection, replayed_ids)} if replayed_ids else {}
        )
        for index, draft in enumerate(drafts):
            if outcomes[index] is None and draft.client_id in stored:
                row = stored[draft.client_id]
                if row["request_hash"] != hashes[index]:
                    outcomes[index] = Outcome(None, _idempotency_conflict(int(row["id"])))
                else:
                    outcomes[index] = Outcome(replays[int(row["id"])], None, replayed=True)

        account_ids = {
            account_id
            for draft, outcome in zip(drafts, outcomes, strict=True)
            if outcome is None
            for posting in draft.postings
            for account_id in (posting.source_account_id, posting.destination_account_id)
        }
        locked = {
            row.id: _locked_from_row(row) for row in repo.lock_accounts(connection, account_ids)
        }
        before = {account_id: replace(account) for account_id, account in locked.items()}
        now = self.clock()
        newest = max((a.last_entry_at for a in locked.values() if a.last_entry_at), default=now)
        horizon = max(now, newest + ONE_MICROSECOND) + len(drafts) * ONE_MICROSECOND
        # Holds exist only where something is pending, so most writes skip the lookup.
        holding = [a.id for a in locked.values() if a.debits_pending or a.credits_pending]
        if holding and repo.overdue_hold_transactions(connection, holding, horizon):
            raise _ExpiryNeeded(horizon)
        if hook is not None and any(o is None for o in outcomes):
            hook.check(connection, now)

        accepted: list[tuple[int, TransactionDraft, dt.datetime]] = []
        first_by_client_id: dict[str, int] = {}
        circulation = _Circulation(before)
        for index, draft in enumerate(drafts):
            if outcomes[index] is not None:
                continue
            if draft.client_id is not None and draft.client_id in first_by_client_id:
                first = first_by_client_id[draft.client_id]
                if hashes[first] != hashes[index]:
                    outcomes[index] = Outcome(
                        None,
                        LedgerError(
                            Code.IDEMPOTENCY_CONFLICT,
                            f"client_id {draft.client_id!r} names an earlier transaction of "
                            "this batch with other content; give each its own client_id.",
                            field="client_id",
                        ),
                    )
                else:
                    outcomes[index] = Outcome(None, None, replayed=True)  # filled in below
                continue
            touched = _accounts_of(draft)
            saved = [
                (locked[a], locked[a].posted, locked[a].debits_pending, locked[a].credits_pending)
                for a in touched
                if a in locked
            ]
            error = _apply_draft(draft, locked, touched, actor) or circulation.check(
                connection, locked, touched
            )
            if error is not None and error.code == Code.CURRENCY_MISMATCH:
                error = _unknown_currency(connection, error) or error
            if error is not None:
                for account, posted, debits, credits in saved:  # undo the partial application
                    account.posted = posted
                    account.debits_pending = debits
                    account.credits_pending = credits
                outcomes[index] = Outcome(None, error)
                if atomic:
                    break
                continue
            at = max(now, *(_after(locked[a].last_entry_at) for a in touched))
            for account_id in touched:
                locked[account_id].last_entry_at = at
            accepted.append((index, draft, at))
            if draft.client_id is not None:
                first_by_client_id[draft.client_id] = index

        if atomic and any(o is not None and o.error is not None for o in outcomes):
            return _atomic_failure(outcomes)

        written = self._write_accepted(
            connection, accepted, before, hashes, scope, reversal_of if observe else _UNOBSERVED
        )
        if hook is not None:
            for transaction in written:
                hook.record(connection, transaction)
        for (index, _draft, _at), transaction in zip(accepted, written, strict=True):
            outcomes[index] = Outcome(transaction, None)
        for index, draft in enumerate(drafts):
            outcome = outcomes[index]
            if outcome is not None and outcome.replayed and outcome.transaction is None:
                assert draft.client_id is not None
                original = outcomes[first_by_client_id[draft.client_id]]
                assert original is not None
                outcomes[index] = Outcome(original.transaction, None, replayed=True)
        return [o for o in outcomes if o is not None]

    def _write_accepted(
        self,
        connection: Connection,
        accepted: list[tuple[int, TransactionDraft, dt.datetime]],
        before: dict[int, _LockedAccount],
        hashes: list[str],
        scope: str,
        reversal_of: int | _Unobserved | None,
    ) -> list[Transaction]:
        """Write the accepted drafts, replaying them from the balances ``before`` the batch
        so every history row carries the running balance right after its own posting."""
        if not accepted:
            return []
        transaction_rows = []
        for index, draft, at in accepted:
            expires_at = (
                at + dt.timedelta(seconds=draft.timeout_seconds)
                if draft.pending and draft.timeout_seconds is not None
                else None
            )
            transaction_rows.append(
                {
                    "idempotency_scope": scope,
                    "client_id": draft.client_id,
                    "request_hash": hashes[index],
                    "status": _PENDING if draft.pending else _POSTED,
                    "memo": draft.memo,
                    "category": draft.category,
                    "external_ref": draft.external_ref,
                    "metadata": draft.metadata,
                    "effective_date": draft.effective_date,
                    "created_at": at,
                    "expires_at": expires_at,
                    "resolved_at": None if draft.pending else at,
                    "reverses_id": None,
                    "reversed_by_id": None,
                }
            )
        transaction_ids = repo.insert_transactions(connection, transaction_rows)

        history: dict[int, _LockedAccount] = {}
        posting_rows: list[dict[str, Any]] = []
        entry_rows: list[dict[str, Any]] = []
        hold_rows: list[dict[str, Any]] = []
        events: list[tuple[EventKind, int | None, int | None, tuple[int, ...]]] = []
        movements: list[Movement] = []
        results: list[Transaction] = []
        for (_index, draft, at), transaction_id, row in zip(
            accepted, transaction_ids, transaction_rows, strict=True
        ):
            held: dict[int, list[int]] = {}
            community_ids: set[int] = set()
            stored_at = to_micros(at)
            kind = _PENDING_ENTRY if draft.pending else _POSTED_ENTRY
            for position, posting in enumerate(draft.postings):
                source_id = posting.source_account_id
                destination_id = posting.destination_account_id
                amount = posting.amount
                source, destination = before[source_id], before[destination_id]
                community_ids.add(source.community_id)
                community_ids.add(destination.community_id)
                if not draft.pending and source.community_id != destination.community_id:
                    if reversal_of is None:
                        movements.append(
                            _movement(
                                transaction_id,
                                source,
                                destination,
                                amount,
                                at,
                                None,
                                draft.category,
                            )
                        )
                    elif not isinstance(reversal_of, _Unobserved):
                        # A reversal undoes the original movement rather than adding one back.
                        movements.append(
                            _movement(
                                transaction_id,
                                destination,
                                source,
                                -amount,
                                at,
                                reversal_of,
                                draft.category,
                            )
                        )
                posting_rows.append(
                    {
                        "transaction_id": transaction_id,
                        "index": position,
                        "source_account_id": source_id,
                        "destination_account_id": destination_id,
                        "currency_id": source.currency_id,
                        "amount": amount,
                        "amount_posted": None,
                    }
                )
                history[source_id] = source
                history[destination_id] = destination
                source.last_entry_at = destination.last_entry_at = at
                if draft.pending:
                    held.setdefault(source_id, [0, 0])[0] += amount
                    held.setdefault(destination_id, [0, 0])[1] += amount
                    source_row = _entry(
                        source, transaction_id, destination_id, kind, stored_at, debits=amount
                    )
                    destination_row = _entry(
                        destination, transaction_id, source_id, kind, stored_at, credits=amount
                    )
                else:
                    source_row = _entry(
                        source, transaction_id, destination_id, kind, stored_at, posted=-amount
                    )
                    destination_row = _entry(
                        destination, transaction_id, source_id, kind, stored_at, posted=amount
                    )
                entry_rows.append(source_row)
                entry_rows.append(destination_row)
            for account_id, (debits, credits) in held.items():
                hold_rows.append(
                    {
                        "transaction_id": transaction_id,
                        "account_id": account_id,
                        "debits": debits,
                        "credits": credits,
                        "created_at": at,
                        "expires_at": row["expires_at"],
                    }
                )
            kind_of_event = (
                EventKind.TRANSACTION_PENDING if draft.pending else EventKind.TRANSACTION_POSTED
            )
            events.append((kind_of_event, transaction_id, None, tuple(sorted(community_ids))))
            results.append(_transaction_from_draft(transaction_id, draft, row))

        # Observers lock rows of their own (reciprocity: community positions). They run
        # before the events are appended, as in ``_release``: the feed's counter row is
        # the last lock of every write, so no two writers take locks in opposite orders.
        notify = bool(movements and self.observers)
        with repo.pipelined(connection):
            repo.insert_postings(connection, posting_rows)
            repo.insert_entries(connection, entry_rows)
            repo.insert_holds(connection, hold_rows)
            repo.update_account_balances(connection, [_balance_update(a) for a in history.values()])
            if not notify:
                self._emit_or_defer(connection, accepted[-1][2], events)
        if notify:
            try:
                caused = self._notify(connection, movements)
            except TransactionRefusedError as refused:
                index_of = {t: a[0] for t, a in zip(transaction_ids, accepted, strict=True)}
                if refused.transaction_id not in index_of:
                    raise
                raise _DraftRefused(index_of[refused.transaction_id], refused) from refused
            _emit(connection, accepted[-1][2], events, caused)
        return results

    def post_within(self, connection: Connection, draft: TransactionDraft) -> Transaction:
        """Post ``draft`` inside a unit of work already open (an observer's own bookkeeping,
        which moves the observer's system accounts: no key reaches this), all or nothing
        with it; observers are not told of it."""
        (outcome,) = self._post_batch(
            connection,
            [draft],
            [_shape_error(draft)],
            [_request_hash(draft)],
            "",
            True,
            look_up=draft.client_id is not None,
            observe=False,
        )
        if outcome.error is not None:
            raise outcome.error
        assert outcome.transaction is not None
        return outcome.transaction

    def _notify(self, connection: Connection, movements: list[Movement]) -> list[_Events]:
        """Tell the observers; return the events of what they posted within, which follow
        the events of the write that caused them in the feed."""
        if not movements:
            return []
        key = id(connection)
        self._caused[key] = []
        try:
            for observer in self.observers:
                observer.observe(connection, self, movements)
        finally:
            caused = self._caused.pop(key)
        return caused

    def _emit_or_defer(self, connection: Connection, at: dt.datetime, events: list[_Event]) -> None:
        caused = self._caused.get(id(connection))
        if caused is None:
            _emit(connection, at, events)
        else:  # posted within by an observer: after its cause, see ``_notify``
            caused.append((at, events))

    # -- two-phase ---------------------------------------------------------------------------

    def post_pending(
        self,
        transaction_id: int,
        amounts: Sequence[int] | None = None,
        *,
        actor: Actor = OPERATOR,
    ) -> Transaction:
        """Post a pending transaction: in full, or ``amounts[i]`` (0 .. held) of posting i,
        releasing the rest of each hold, as TigerBeetle's partial post does. ``actor``
        must be allowed to spend from every source the hold holds."""
        return self._resolve_pending(transaction_id, TransactionStatus.POSTED, amounts, actor)

    def void_pending(self, transaction_id: int, *, actor: Actor = OPERATOR) -> Transaction:
        return self._resolve_pending(transaction_id, TransactionStatus.VOIDED, None, actor)

    def _resolve_pending(
        self,
        transaction_id: int,
        outcome: TransactionStatus,
        amounts: Sequence[int] | None,
        actor: Actor,
    ) -> Transaction:
        def work(connection: Connection) -> Transaction:
            row = repo.transaction_by_id(connection, transaction_id)
            if row is None:
                raise transaction_not_found(transaction_id)
            postings = repo.postings_of(connection, [transaction_id])
            locked = {
                r.id: _locked_from_row(r)
                for r in repo.lock_accounts(connection, _posting_accounts(postings))
            }
            # Who resolves a hold must be allowed to spend what it holds, as when placing it.
            pairs = [(p["source_account_id"], p["destination_account_id"]) for p in postings]
            refusal = _authority_refusal(actor, locked, pairs)
            if refusal is not None:
                raise refusal
            row = repo.transaction_by_id(connection, transaction_id, lock=True)
            assert row is not None
            _check_still_pending(row)
            now = self.clock()
            # Lapsed holds on these accounts (this one's or another's) are released at
            # their deadlines first, so this write's history rows come after those.
            if repo.overdue_hold_transactions(connection, sorted(locked), now):
                raise _ExpiryNeeded(now)
            if amounts is not None and len(amounts) != len(postings):
                raise LedgerError(
                    Code.INVALID_REQUEST,
                    "Give one amount per posting of the pending transaction.",
                    field="amounts",
                )
            posted_amounts = [p["amount"] for p in postings] if amounts is None else list(amounts)
            if outcome == TransactionStatus.POSTED:
                for posting, amount in zip(postings, posted_amounts, strict=True):
                    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                        raise LedgerError(
                            Code.AMOUNT_OUT_OF_RANGE,
                            f"amounts holds {amount!r}; each is a whole number of minor "
                            f"units from 0 to the {posting['amount']} held.",
                            field="amounts",
                        )
                    if amount > posting["amount"]:
                        raise LedgerError(
                            Code.POST_AMOUNT_EXCEEDS_PENDING,
                            f"amounts holds {amount}, but that posting holds "
                            f"{posting['amount']}; post at most that (or omit amounts to post "
                            "in full).",
                            field="amounts",
                        )
                for account in locked.values():
                    if account.status == AccountStatus.FROZEN:
                        raise account_frozen(account.id)
            else:
                posted_amounts = [0] * len(postings)
            kind = (
                EntryKind.PENDING_POSTED
                if outcome == TransactionStatus.POSTED
                else EntryKind.PENDING_VOIDED
            )
            at = max(now, *(_after(a.last_entry_at) for a in locked.values()))
            self._release(connection, row, postings, posted_amounts, locked, kind, outcome, at)
            return self._transactions(connection, [transaction_id])[0]

        return self._write_after_expiry(work)

    def _release(
        self,
        connection: Connection,
        row: RowMapping,
        postings: Sequence[RowMapping],
        posted_amounts: Sequence[int],
        locked: dict[int, _LockedAccount],
        kind: EntryKind,
        status: TransactionStatus,
        at: dt.datetime,
    ) -> None:
        """Release a transaction's holds, moving ``posted_amounts`` for real, at ``at``."""
        transaction_id = int(row["id"])
        entry_rows = []
        movements = []
        stored_at, stored_kind = to_micros(at), str(kind)
        for posting, amount in zip(postings, posted_amounts, strict=True):
            source = locked[posting["source_account_id"]]
            destination = locked[posting["destination_account_id"]]
            held = posting["amount"]
            if amount and source.community_id != destination.community_id:
                movements.append(
                    _movement(
                        transaction_id, source, destination, amount, at, None, row["category"]
                    )
                )
            entry_rows.append(
                _entry(
                    source,
                    transaction_id,
                    destination.id,
                    stored_kind,
                    stored_at,
                    posted=-amount,
                    debits=-held,
                )
            )
            entry_rows.append(
                _entry(
                    destination,
                    transaction_id,
                    source.id,
                    stored_kind,
                    stored_at,
                    posted=amount,
                    credits=-held,
                )
            )
        for account in locked.values():
            account.last_entry_at = at
        repo.insert_entries(connection, entry_rows)
        repo.update_account_balances(connection, [_balance_update(a) for a in locked.values()])
        if status == TransactionStatus.POSTED:
            repo.update_postings_posted(
                connection,
                [
                    {"posting_id": p["id"], "posted": amount}
                    for p, amount in zip(postings, posted_amounts, strict=True)
                ],
            )
        repo.update_transaction(
            connection, transaction_id, {"status": str(status), "resolved_at": at}
        )
        repo.delete_holds(connection, transaction_id)
        caused = self._notify(connection, movements)
        event_kind = {
            TransactionStatus.POSTED: EventKind.PENDING_POSTED,
            TransactionStatus.VOIDED: EventKind.PENDING_VOIDED,
            TransactionStatus.EXPIRED: EventKind.PENDING_EXPIRED,
        }[status]
        communities = tuple(sorted({a.community_id for a in locked.values()}))
        _emit(connection, at, [(event_kind, transaction_id, None, communities)], caused)

    def expire_overdue(self, up_to: dt.datetime | None = None) -> int:
        """Expire every hold whose deadline is at or before ``up_to`` (default: now).

        Each expiry is written at its deadline (or just after the account's newest row),
        so an as-of read shows the hold released exactly when it lapsed. Returns how many
        transactions expired.
        """
        deadline = up_to or self.clock()
        expired = 0
        while True:

            def work(connection: Connection) -> int:
                due = repo.all_overdue_hold_transactions(connection, deadline, EXPIRY_CHUNK)
                if not due:
                    return 0
                postings = repo.postings_of(connection, due)
                locked = {
                    r.id: _locked_from_row(r)
                    for r in repo.lock_accounts(connection, _posting_accounts(postings))
                }
                count = 0
                for transaction_id in due:
                    row = repo.transaction_by_id(connection, transaction_id, lock=True)
                    if row is None or row["status"] != TransactionStatus.PENDING:
                        continue
                    own = [p for p in postings if p["transaction_id"] == transaction_id]
                    accounts = {a: locked[a] for a in _posting_accounts(own)}
                    at = max(
                        row["expires_at"], *(_after(a.last_entry_at) for a in accounts.values())
                    )
                    self._release(
                        connection,
                        row,
                        own,
                        [0] * len(own),
                        accounts,
                        EntryKind.PENDING_EXPIRED,
                        TransactionStatus.EXPIRED,
                        at,
                    )
                    count += 1
                return count

            count = self._write(work)
            expired += count
            if count == 0:
                return expired

    # -- corrections -------------------------------------------------------------------------

    def reverse(
        self,
        transaction_id: int,
        *,
        client_id: str | None = None,
        scope: str = "",
        memo: str | None = None,
        actor: Actor = OPERATOR,
    ) -> Outcome:
        """Post the mirror image of a posted transaction, linked both ways, at most once.

        A posted pending transaction reverses the amounts that actually moved. The
        reversal is an ordinary transaction: limits and account status apply to it, and
        ``actor`` must be allowed to spend from its sources (what the original paid in);
        system accounts it mirrors move as the original's operation moved them.
        """
        original = self.get_transaction(transaction_id)
        if original.reversed_by_id is not None and client_id is None:
            raise already_reversed(transaction_id)
        if original.status != TransactionStatus.POSTED:
            raise LedgerError(
                Code.NOT_REVERSIBLE,
                f"Transaction {transaction_id} is {original.status.value}; only a posted one "
                "is reversed (a hold is voided instead).",
                field="transaction_id",
            )
        if original.reverses_id is not None:
            raise LedgerError(
                Code.NOT_REVERSIBLE, "A reversal cannot itself be reversed.", field="transaction_id"
            )
        postings = tuple(
            PostingDraft(p.destination_account_id, p.source_account_id, _moved(p), p.currency)
            for p in original.postings
            if _moved(p) > 0
        )
        if not postings:
            raise LedgerError(Code.NOT_REVERSIBLE, "Nothing moved, so there is nothing to reverse.")
        draft = TransactionDraft(
            postings=postings,
            client_id=client_id,
            memo=memo or f"Reversal of transaction {transaction_id}",
            category=original.category,
            metadata={"reverses": transaction_id},
        )
        hashes = [_request_hash(draft)]

        def work(connection: Connection) -> Outcome:
            if client_id is not None:
                stored = repo.transactions_by_client_id(connection, scope, [client_id])
                if stored:
                    if stored[0]["request_hash"] != hashes[0]:
                        raise _idempotency_conflict(int(stored[0]["id"]))
                    return Outcome(
                        self._transactions(connection, [int(stored[0]["id"])])[0], None, True
                    )
            current = repo.transaction_by_id(connection, transaction_id)
            if current is not None and current["reversed_by_id"] is not None:
                raise already_reversed(transaction_id)
            # Accounts first, then the transaction row: the lock order every writer keeps.
            # The check above answers the common case early; this one settles a race.
            try:
                (outcome,) = self._post_batch(
                    connection,
                    [draft],
                    [_shape_error(draft)],
                    hashes,
                    scope,
                    False,
                    reversal_of=transaction_id,
                    actor=actor.running(authority.REVERSAL),
                )
            except _DraftRefused as refused:  # an observer refused the reversal itself
                raise refused.error from None
            if outcome.error is not None:
                # A concurrent reversal that won took the funds back first: say so, rather
                # than the insufficient funds it left behind.
                row = repo.transaction_by_id(connection, transaction_id, lock=True)
                if row is not None and row["reversed_by_id"] is not None:
                    raise already_reversed(transaction_id)
                raise outcome.error
            assert outcome.transaction is not None
            row = repo.transaction_by_id(connection, transaction_id, lock=True)
            assert row is not None
            if row["reversed_by_id"] is not None:
                raise already_reversed(transaction_id)
            reversal_id = outcome.transaction.id
            repo.update_transaction(connection, reversal_id, {"reverses_id": transaction_id})
            repo.update_transaction(connection, transaction_id, {"reversed_by_id": reversal_id})
            communities = tuple(
                sorted(
                    {r.community_id for r in repo.lock_accounts(connection, _accounts_of(draft))}
                )
            )
            _emit(
                connection,
                outcome.transaction.created_at,
                [(EventKind.TRANSACTION_REVERSED, transaction_id, None, communities)],
            )
            return Outcome(self._transactions(connection, [reversal_id])[0], None)

        return self._write_after_expiry(work)

    # -- reading -----------------------------------------------------------------------------

    def get_transaction(self, transaction_id: int) -> Transaction:
        def work(connection: Connection) -> Transaction:
            found = self._transactions(connection, [transaction_id])
            if not found:
                raise transaction_not_found(transaction_id)
            return found[0]

        return self._read(work)

    def transaction_account_ids(self, transaction_id: int) -> set[int]:
        return set(_accounts_of_postings(self.get_transaction(transaction_id).postings))

    def list_transactions(
        self,
        *,
        community: str | None = None,
        account_id: int | None = None,
        category: str | None = None,
        status: TransactionStatus | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Transaction]:
        """Transactions in ledger order. ``category`` matches itself and its subcategories."""
        limit = _page_limit(limit)
        after = None if cursor is None else _decode_instant_cursor(cursor)

        def work(connection: Connection) -> Page[Transaction]:
            community_id = None if community is None else _community(connection, community).id
            rows = repo.list_transactions(
                connection,
                community_id=community_id,
                account_id=account_id,
                category=category,
                status=None if status is None else str(status),
                since=since,
                until=until,
                after=after,
                limit=limit + 1,
            )
            found = self._transactions_from_rows(connection, rows)
            return _page(found, limit, lambda t: _encode_cursor(to_micros(t.created_at), t.id))

        return self._read(work)

    def balance(self, account_id: int, as_of: dt.datetime | None = None) -> Balance:
        """The account's balance now, or as it stood at ``as_of`` (an index lookup either
        way). Holds whose deadline has passed by then are never shown."""

        def work(connection: Connection) -> Balance:
            now = self.clock()
            if as_of is None:
                return self._account(connection, account_id, now).balance
            # History as of ``as_of`` itself (a write may be stamped a moment ahead of the
            # clock: asked as of its own instant, it is there), but no hold is taken to
            # have lapsed later than now: that would be a forecast, not history.
            row = repo.balance_as_of(connection, account_id, as_of, min(as_of, now))
            if row is None:
                raise account_not_found(account_id)
            if row["balance_posted"] is None:
                return Balance(0, 0, 0)
            return Balance(
                row["balance_posted"],
                row["debits_pending"] - row["overdue_debits"],
                row["credits_pending"] - row["overdue_credits"],
            )

        return self._read(work)

    def statement(
        self,
        account_id: int,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[StatementLine]:
        """The account's history in ledger order, each line with the balance after it."""
        limit = _page_limit(limit)
        after = None if cursor is None else _decode_instant_cursor(cursor)

        def work(connection: Connection) -> Page[StatementLine]:
            rows = repo.statement_page(
                connection, account_id, since=since, until=until, after=after, limit=limit + 1
            )
            # An empty page may be an unknown account's: only then is it worth a look.
            if not rows and repo.account_by_id(connection, account_id) is None:
                raise account_not_found(account_id)
            lines = [_statement_line(row) for row in rows]
            return _page(
                lines, limit, lambda line: _encode_cursor(to_micros(line.at), line.entry_id)
            )

        return self._read(work)

    def events_after(self, after: int, limit: int = 100) -> list[Event]:
        limit = _page_limit(limit)
        return self._read(
            lambda connection: [
                _event_from_row(row) for row in repo.events_after(connection, after, limit)
            ]
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _write(self, work: Callable[[Connection], T]) -> T:
        return run_in_transaction(self.engine, work, write=True)

    def _write_unique(self, work: Callable[[Connection], T], code: Code, *, field: str) -> T:
        """A create whose look-up found no clash; a concurrent create of the same name that
        commits first makes the unique index refuse ours, with the same answer."""
        try:
            return self._write(work)
        except IntegrityError as error:
            raise LedgerError(
                code,
                f"Another request just created the same {field}; choose another.",
                field=field,
            ) from error

    def _write_after_expiry(self, work: Callable[[Connection], T]) -> T:
        """A write that may meet lapsed holds on its accounts: release them, then retry."""
        for _attempt in range(3):
            try:
                return self._write(work)
            except _ExpiryNeeded as needed:
                self.expire_overdue(up_to=needed.up_to)
        return self._write(work)

    def _read(self, work: Callable[[Connection], T]) -> T:
        return run_in_transaction(self.engine, work, write=False)

    def _account(self, connection: Connection, account_id: int, now: dt.datetime) -> Account:
        row = repo.account_with_overdue_holds(connection, account_id, now)
        if row is None:
            raise account_not_found(account_id)
        return _account_from_row(row, (row["overdue_debits"], row["overdue_credits"]))

    def _transactions(
        self, connection: Connection, transaction_ids: Sequence[int]
    ) -> list[Transaction]:
        rows = repo.transactions_by_ids(connection, transaction_ids)
        order = {
            transaction_id: position for position, transaction_id in enumerate(transaction_ids)
        }
        return self._transactions_from_rows(connection, sorted(rows, key=lambda r: order[r["id"]]))

    def _transactions_from_rows(
        self, connection: Connection, rows: Sequence[RowMapping]
    ) -> list[Transaction]:
        by_transaction: dict[int, list[Posting]] = {}
        for p in repo.postings_of(connection, [int(r["id"]) for r in rows]):
            by_transaction.setdefault(p["transaction_id"], []).append(
                Posting(
                    p["index"],
                    p["source_account_id"],
                    p["destination_account_id"],
                    p["currency_code"],
                    p["amount"],
                    p["amount_posted"],
                )
            )
        now = self.clock()
        return [_transaction_from_row(row, by_transaction.get(row["id"], []), now) for row in rows]


# -- validation ------------------------------------------------------------------------------


def _check_currency_policy(held_in: HeldIn, issuer_id: int | None, cap: int | None) -> None:
    if held_in == HeldIn.ISSUER and issuer_id is None:
        raise LedgerError(
            Code.INVALID_REQUEST,
            "A federation currency is held in every community (all) or in system accounts "
            "only (system); issuer applies to a community's own currency.",
            field="held_in",
        )
    if cap is not None and not (isinstance(cap, int) and 0 <= cap <= money.AMOUNT_MAX):
        raise LedgerError(
            Code.AMOUNT_OUT_OF_RANGE,
            f"A circulation cap is a whole number of minor units from 0 to {money.AMOUNT_MAX}.",
            field="circulation_cap",
        )


class _Circulation:
    """A batch's running committed circulation of each capped currency it issues from:
    what circulates plus what holds on issuance accounts would put out when posted (a
    hold is checked against the cap when it is placed; posting it never adds more).

    Read once per currency per batch, under the currency's lock, then moved by what each
    accepted draft took out of (or paid into, or held on) the issuance accounts it locked."""

    def __init__(self, before: dict[int, _LockedAccount]) -> None:
        self.before = before
        self.base: dict[int, int] = {}  # circulation outside this batch's locked accounts

    def check(
        self, connection: Connection, locked: dict[int, _LockedAccount], touched: list[int]
    ) -> LedgerError | None:
        for account_id in touched:
            account = locked[account_id]
            if account.type != AccountType.ISSUANCE or account.circulation_cap is None:
                continue
            currency_id = account.currency_id
            if currency_id not in self.base:
                repo.lock_currency(connection, currency_id)
                issuers = [a for a in self.before.values() if a.currency_id == currency_id]
                stored = repo.committed_circulation(connection, currency_id)
                self.base[currency_id] = stored - sum(
                    _committed(a) for a in issuers if a.type == AccountType.ISSUANCE
                )
            now = self.base[currency_id] + sum(
                _committed(a)
                for a in locked.values()
                if a.currency_id == currency_id and a.type == AccountType.ISSUANCE
            )
            if now > account.circulation_cap:
                return LedgerError(
                    Code.CIRCULATION_CAP_EXCEEDED,
                    f"{account.currency} would have {now} minor units in circulation, above "
                    f"its issuer's cap of {account.circulation_cap}; issue less, or ask the "
                    "issuer to raise the cap.",
                    account_id=account_id,
                    extra={"circulation_cap": account.circulation_cap, "in_circulation": now},
                )
        return None


def _committed(issuance: _LockedAccount) -> int:
    """What an issuance account has put out, or holds to put out."""
    return issuance.debits_pending - issuance.posted


def _check_limits(min_balance: int | None, max_balance: int | None) -> None:
    for name, value in (("min_balance", min_balance), ("max_balance", max_balance)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not money.fits_balance(value)
        ):
            raise LedgerError(
                Code.LIMITS_INVALID,
                f"{name} is {value!r}; give a whole number of minor units from "
                f"{money.BALANCE_MIN:,} to {money.BALANCE_MAX:,}, or null for no limit.",
                field=name,
            )
    if max_balance is not None and max_balance < 0:
        raise LedgerError(
            Code.LIMITS_INVALID,
            f"max_balance is {max_balance}; a ceiling is 0 or more, or null for none.",
            field="max_balance",
        )
    if min_balance is not None and max_balance is not None and min_balance > max_balance:
        raise LedgerError(
            Code.LIMITS_INVALID,
            f"min_balance {min_balance} is above max_balance {max_balance}; the floor must "
            "be at or below the ceiling.",
            field="min_balance",
        )


def _shape_error(draft: TransactionDraft) -> LedgerError | None:
    """What is wrong with the draft on its face, before anything is read."""
    if not draft.postings:
        return LedgerError(
            Code.POSTINGS_EMPTY,
            "postings is empty; give 1 to 128 postings, each with source_account_id, "
            "destination_account_id, amount and currency.",
            field="postings",
        )
    if len(draft.postings) > POSTINGS_MAX:
        return LedgerError(
            Code.POSTINGS_TOO_MANY,
            f"The transaction has {len(draft.postings)} postings; at most {POSTINGS_MAX} fit "
            "in one, so split it.",
            field="postings",
        )
    for position, posting in enumerate(draft.postings):
        if not money.is_amount(posting.amount):
            return LedgerError(
                Code.AMOUNT_OUT_OF_RANGE,
                f"postings[{position}].amount is {posting.amount!r}; give a whole number of "
                f"minor units from {money.AMOUNT_MIN} to {money.AMOUNT_MAX:,}.",
                field=f"postings[{position}].amount",
            )
        if posting.source_account_id == posting.destination_account_id:
            return LedgerError(
                Code.SAME_ACCOUNT,
                f"postings[{position}] pays account {posting.source_account_id} into itself; "
                "give a destination_account_id other than the source.",
                field=f"postings[{position}]",
                account_id=posting.source_account_id,
            )
    if draft.timeout_seconds is not None and (
        not draft.pending
        or isinstance(draft.timeout_seconds, bool)
        or not TIMEOUT_SECONDS_MIN <= draft.timeout_seconds <= TIMEOUT_SECONDS_MAX
    ):
        return LedgerError(
            Code.TIMEOUT_OUT_OF_RANGE,
            f"timeout_seconds is {draft.timeout_seconds!r}; a hold (pending: true) lasts "
            f"{TIMEOUT_SECONDS_MIN} to {TIMEOUT_SECONDS_MAX:,} seconds (90 days).",
            field="timeout_seconds",
        )
    for name, limit in TEXT_LIMITS.items():
        text = getattr(draft, name)
        if text is not None and len(text) > limit:
            return LedgerError(
                Code.INVALID_REQUEST, f"{name} is longer than {limit} characters.", field=name
            )
    return None


def _unknown_currency(connection: Connection, mismatch: LedgerError) -> LedgerError | None:
    """A posting in a currency that does not exist is told so, not that it mismatches."""
    code = mismatch.extra["posting_currency"]
    if repo.currency_by_code(connection, code) is not None:
        return None
    held = mismatch.extra["account_currency"]
    return LedgerError(
        Code.CURRENCY_NOT_FOUND,
        f"There is no currency {code!r}; account {mismatch.account_id} holds {held}, so the "
        f"posting's currency would be {held} (GET /v1/currencies lists them all).",
        account_id=mismatch.account_id,
        field=mismatch.field,
        extra={"currency": code, "account_currency": held},
    )


def _apply_draft(
    draft: TransactionDraft,
    locked: dict[int, _LockedAccount],
    touched: list[int],
    actor: Actor = OPERATOR,
) -> LedgerError | None:
    """Apply the draft to the locked balances in memory; the first rule it breaks, if any.

    The straight line of transaction rules, in ``Code`` order (authority right after
    existence, so a refusal never tells an actor more than it may see). The caller
    restores the balances when this returns an error.
    """
    for posting in draft.postings:
        for account_id in (posting.source_account_id, posting.destination_account_id):
            if account_id not in locked:
                return account_not_found(account_id)
    refusal = _authority_refusal(
        actor, locked, [(p.source_account_id, p.destination_account_id) for p in draft.postings]
    )
    if refusal is not None:
        return refusal
    for posting in draft.postings:
        for account_id in (posting.source_account_id, posting.destination_account_id):
            if locked[account_id].community_status == CommunityStatus.SUSPENDED:
                return LedgerError(
                    Code.COMMUNITY_SUSPENDED,
                    f"The community of account {account_id} is suspended by the federation: "
                    "its accounts make and receive no payments until it is resumed.",
                    account_id=account_id,
                )
    for position, posting in enumerate(draft.postings):
        for account_id in (posting.source_account_id, posting.destination_account_id):
            held = locked[account_id].currency
            if held != posting.currency:
                return LedgerError(
                    Code.CURRENCY_MISMATCH,
                    f"postings[{position}] is in {posting.currency}, but account {account_id} "
                    f"holds {held}: a posting moves the currency both its accounts hold.",
                    account_id=account_id,
                    field=f"postings[{position}].currency",
                    extra={"posting_currency": posting.currency, "account_currency": held},
                )
    for posting in draft.postings:
        for account_id in (posting.source_account_id, posting.destination_account_id):
            if locked[account_id].status == AccountStatus.CLOSED:
                return LedgerError(
                    Code.ACCOUNT_CLOSED,
                    f"Account {account_id} is closed: it makes and receives no payments; pay "
                    "an open account instead.",
                    account_id=account_id,
                )
            if locked[account_id].status == AccountStatus.FROZEN:
                return account_frozen(account_id)
    for posting in draft.postings:
        source = locked[posting.source_account_id]
        destination = locked[posting.destination_account_id]
        if draft.pending:
            source.debits_pending += posting.amount
            destination.credits_pending += posting.amount
        else:
            source.posted -= posting.amount
            destination.posted += posting.amount
    for account_id in touched:
        account = locked[account_id]
        if not all(
            money.fits_balance(v)
            for v in (
                account.posted,
                account.debits_pending,
                account.credits_pending,
                account.posted + account.credits_pending,
            )
        ):
            return LedgerError(
                Code.BALANCE_OUT_OF_RANGE,
                f"Account {account_id} would pass {money.BALANCE_MAX:,} minor units (or go "
                "below its negative), the most a ledger holds; pay less into it.",
                account_id=account_id,
            )
    for account_id in touched:
        account = locked[account_id]
        if (
            account.min_balance is not None
            and account.posted - account.debits_pending < account.min_balance
        ):
            return LedgerError(
                Code.INSUFFICIENT_FUNDS,
                f"Account {account_id} would be left with "
                f"{account.posted - account.debits_pending} available (minor units), "
                f"below its floor of {account.min_balance}.",
                account_id=account_id,
                extra={
                    "available": account.posted - account.debits_pending,
                    "min_balance": account.min_balance,
                },
            )
    for account_id in touched:
        account = locked[account_id]
        if (
            account.max_balance is not None
            and account.posted + account.credits_pending > account.max_balance
        ):
            return LedgerError(
                Code.CEILING_EXCEEDED,
                f"Account {account_id} would reach {account.posted + account.credits_pending} "
                "(minor units, pending credits included), "
                f"above its ceiling of {account.max_balance}.",
                account_id=account_id,
                extra={"max_balance": account.max_balance},
            )
    return None


def _authority_refusal(
    actor: Actor, locked: dict[int, _LockedAccount], pairs: Iterable[tuple[int, int]]
) -> LedgerError | None:
    """The first posting (source, destination) the actor may not make, on locked rows."""
    for source_id, destination_id in pairs:
        for account_id, is_source in ((source_id, True), (destination_id, False)):
            account = locked[account_id]
            refusal = authority.posting_refusal(
                actor,
                account_id=account_id,
                account_type=account.type,
                community_id=account.community_id,
                source=is_source,
            )
            if refusal is not None:
                return refusal
    return None


def _check_still_pending(row: RowMapping) -> None:
    status = row["status"]
    if status == TransactionStatus.PENDING:
        return
    if status == TransactionStatus.POSTED and row["resolved_at"] == row["created_at"]:
        # Posted straight away (a resolved hold always resolves after it was placed).
        raise LedgerError(
            Code.NOT_PENDING,
            f"Transaction {row['id']} was posted at once, not held; reverse it instead.",
            field="transaction_id",
        )
    code = {
        TransactionStatus.POSTED: Code.PENDING_ALREADY_POSTED,
        TransactionStatus.VOIDED: Code.PENDING_ALREADY_VOIDED,
        TransactionStatus.EXPIRED: Code.PENDING_EXPIRED,
    }[TransactionStatus(status)]
    raise LedgerError(
        code,
        f"Transaction {row['id']} is no longer held: it was {status}, so it cannot be posted "
        "or voided now; read it to see how it ended.",
        field="transaction_id",
    )


def _idempotency_conflict(transaction_id: int) -> LedgerError:
    return LedgerError(
        Code.IDEMPOTENCY_CONFLICT,
        f"This client_id already made transaction {transaction_id}, from other content; "
        "send a new client_id for a new transaction, or the same content to replay it.",
        field="client_id",
        extra={"transaction_id": transaction_id},
    )


_Event = tuple[
    EventKind, int | None, int | None, tuple[int, ...]
]  # kind, transaction, account, communities
_Events = tuple[dt.datetime, list[_Event]]


class _Unobserved:
    """Marks a write whose movements no observer is told of."""


_UNOBSERVED: Final = _Unobserved()


def _movement(
    transaction_id: int,
    source: _LockedAccount,
    destination: _LockedAccount,
    amount: int,
    at: dt.datetime,
    reverses_id: int | None,
    category: str | None,
) -> Movement:
    return Movement(
        transaction_id=transaction_id,
        source_account_id=source.id,
        destination_account_id=destination.id,
        source_community_id=source.community_id,
        destination_community_id=destination.community_id,
        currency_id=source.currency_id,
        amount=amount,
        at=at,
        reverses_id=reverses_id,
        category=category,
    )


def _request_hash(draft: TransactionDraft) -> str:
    """SHA-256 of the draft's canonical JSON: what "the same request" means."""
    canonical = {
        "postings": [
            [p.source_account_id, p.destination_account_id, p.amount, p.currency]
            for p in draft.postings
        ],
        "memo": draft.memo,
        "category": draft.category,
        "external_ref": draft.external_ref,
        "metadata": draft.metadata,
        "effective_date": None
        if draft.effective_date is None
        else draft.effective_date.isoformat(),
        "pending": draft.pending,
        "timeout_seconds": draft.timeout_seconds,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# -- small pieces -----------------------------------------------------------------------------


_POSTED: Final = str(TransactionStatus.POSTED)
_PENDING: Final = str(TransactionStatus.PENDING)
_POSTED_ENTRY: Final = str(EntryKind.POSTED)
_PENDING_ENTRY: Final = str(EntryKind.PENDING)


def _entry(
    account: _LockedAccount,
    transaction_id: int,
    counterparty_id: int,
    kind: str,
    stored_at: int,
    *,
    posted: int = 0,
    debits: int = 0,
    credits: int = 0,
) -> dict[str, Any]:
    """Move ``account``'s posted balance and pending debits and credits by these changes and
    return the history row that records it, in storage form (``kind`` as text, the instant
    in microseconds); the caller moves ``last_entry_at``."""
    account.posted += posted
    account.debits_pending += debits
    account.credits_pending += credits
    return {
        "account_id": account.id,
        "community_id": account.community_id,
        "transaction_id": transaction_id,
        "counterparty_account_id": counterparty_id,
        "kind": kind,
        "at": stored_at,
        "amount": posted,
        "debits_pending_change": debits,
        "credits_pending_change": credits,
        "balance_posted": account.posted,
        "debits_pending": account.debits_pending,
        "credits_pending": account.credits_pending,
    }


def _balance_update(account: _LockedAccount) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "new_posted": account.posted,
        "new_debits_pending": account.debits_pending,
        "new_credits_pending": account.credits_pending,
        "new_last_entry_at": account.last_entry_at,
    }


def record_events(
    connection: Connection,
    at: dt.datetime,
    events: Sequence[tuple[EventKind, int | None, int | None, tuple[int, ...]]],
) -> None:
    """Append (kind, transaction id, account id, community ids) events to the feed from a
    layer above; like every writer, call it as the last write of the unit of work."""
    _emit(connection, at, events)


def _emit(
    connection: Connection,
    at: dt.datetime,
    events: Sequence[_Event],
    caused: Sequence[_Events] = (),
) -> None:
    """Append events to the feed, then those ``caused`` by the write; call last in a unit
    of work (see reserve_event_sequences)."""
    timed = [(at, event) for event in events]
    timed += [(when, event) for when, more in caused for event in more]
    first = repo.reserve_event_sequences(connection, len(timed))
    repo.insert_events(
        connection,
        [
            {
                "sequence": first + offset,
                "kind": str(kind),
                "at": when,
                "transaction_id": transaction_id,
                "account_id": account_id,
                "community_ids": communities,
            }
            for offset, (when, (kind, transaction_id, account_id, communities)) in enumerate(timed)
        ],
    )


def _pipelined(work: Callable[[Connection], T]) -> Callable[[Connection], T]:
    """``work`` in one pipeline (see ``repository.pipelined``): on PostgreSQL a posting waits
    only for what it reads (locks, ids, the feed's counter) and for the end."""

    def run(connection: Connection) -> T:
        with repo.pipelined(connection):
            return work(connection)

    return run


def _atomic_failure(outcomes: list[Outcome | None]) -> list[Outcome]:
    """An atomic batch that failed: refused drafts keep their reason, earlier replays
    keep their transaction, everything else is refused because of them."""
    failed = LedgerError(
        Code.BATCH_ITEM_FAILED,
        "Nothing in this atomic batch was written, because another transaction in it was "
        "refused (see its own result); fix that one and send the batch again.",
    )
    return [
        o
        if o is not None and (o.error is not None or o.transaction is not None)
        else Outcome(None, failed)
        for o in outcomes
    ]


def _after(instant: dt.datetime | None) -> dt.datetime:
    return dt.datetime.min.replace(tzinfo=dt.UTC) if instant is None else instant + ONE_MICROSECOND


def _accounts_of(draft: TransactionDraft) -> list[int]:
    return sorted(
        {a for p in draft.postings for a in (p.source_account_id, p.destination_account_id)}
    )


def _accounts_of_postings(postings: Iterable[Posting]) -> list[int]:
    return sorted({a for p in postings for a in (p.source_account_id, p.destination_account_id)})


def _posting_accounts(postings: Iterable[RowMapping]) -> list[int]:
    return sorted(
        {a for p in postings for a in (p["source_account_id"], p["destination_account_id"])}
    )


def _moved(posting: Posting) -> int:
    return posting.amount if posting.amount_posted is None else posting.amount_posted


def _page_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT_MAX:
        raise LedgerError(
            Code.INVALID_REQUEST, f"limit must be between 1 and {PAGE_LIMIT_MAX}.", field="limit"
        )
    return limit


def _page(items: list[Any], limit: int, cursor_of: Callable[[Any], str]) -> Page[Any]:
    if len(items) > limit:
        return Page(tuple(items[:limit]), cursor_of(items[limit - 1]))
    return Page(tuple(items), None)


def _encode_cursor(at_micros: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at_micros}:{row_id}".encode()).decode().rstrip("=")


_INT64 = range(-(2**63), 2**63)


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, id_text = text.split(":")
        at, row_id = int(at_text), int(id_text)
        if at not in _INT64 or row_id not in _INT64:
            raise ValueError("a cursor holds 64-bit numbers")  # a crafted one; never ours
        return at, row_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise cursor_invalid() from error


def _decode_instant_cursor(cursor: str) -> tuple[dt.datetime, int]:
    at_micros, row_id = _decode_cursor(cursor)
    try:
        return from_micros(at_micros), row_id
    except OverflowError as error:
        raise cursor_invalid() from error


# -- rows to values -------------------------------------------------------------------------


def cursor_invalid() -> LedgerError:
    return LedgerError(
        Code.CURSOR_INVALID,
        "cursor is not a next_cursor this list returned; leave it out to start from the "
        "first page, then pass each page's next_cursor unchanged.",
        field="cursor",
    )


def _community(connection: Connection, slug: str) -> Community:
    row = repo.community_by_slug(connection, slug)
    if row is None:
        raise community_not_found(slug)
    return _community_from_row(row)


def _community_from_row(row: RowMapping) -> Community:
    return Community(
        row["id"], row["slug"], row["name"], CommunityStatus(row["status"]), row["created_at"]
    )


def _currency(connection: Connection, code: str) -> Currency:
    row = repo.currency_by_code(connection, code)
    if row is None:
        raise currency_not_found(code)
    return _currency_from_row(row)


def _currency_from_row(row: RowMapping) -> Currency:
    return Currency(
        row["id"],
        row["code"],
        CurrencyKind(row["kind"]),
        row["issuer_slug"],
        row["scale"],
        row["name"],
        row["symbol"],
        row["created_at"],
        row["held_in"],
        row["circulation_cap"],
    )


def _locked_from_row(row: Any) -> _LockedAccount:
    return _LockedAccount(
        id=row.id,
        community_id=row.community_id,
        currency_id=row.currency_id,
        currency=row.code,
        status=row.status,
        min_balance=row.min_balance,
        max_balance=row.max_balance,
        posted=row.balance_posted,
        debits_pending=row.debits_pending,
        credits_pending=row.credits_pending,
        last_entry_at=row.last_entry_at,
        type=row.type,
        community_status=row.community_status,
        circulation_cap=row.circulation_cap,
    )


def _account_from_row(row: RowMapping, overdue: tuple[int, int]) -> Account:
    debits_overdue, credits_overdue = overdue
    return Account(
        id=row["id"],
        community=row["community_slug"],
        currency=row["currency_code"],
        type=AccountType(row["type"]),
        name=row["name"],
        status=AccountStatus(row["status"]),
        min_balance=row["min_balance"],
        max_balance=row["max_balance"],
        metadata=row["metadata"],
        balance=Balance(
            row["balance_posted"],
            row["debits_pending"] - debits_overdue,
            row["credits_pending"] - credits_overdue,
        ),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _transaction_from_row(
    row: RowMapping, postings: list[Posting], now: dt.datetime
) -> Transaction:
    status = TransactionStatus(row["status"])
    if (
        status == TransactionStatus.PENDING
        and row["expires_at"] is not None
        and row["expires_at"] <= now
    ):
        # Lapsed but not yet swept: report what it is (the next write finalizes it).
        status = TransactionStatus.EXPIRED
    return Transaction(
        id=row["id"],
        client_id=row["client_id"],
        status=status,
        postings=tuple(postings),
        memo=row["memo"],
        category=row["category"],
        external_ref=row["external_ref"],
        metadata=row["metadata"],
        effective_date=row["effective_date"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        resolved_at=row["resolved_at"],
        reverses_id=row["reverses_id"],
        reversed_by_id=row["reversed_by_id"],
    )


def _transaction_from_draft(
    transaction_id: int, draft: TransactionDraft, row: dict[str, Any]
) -> Transaction:
    return Transaction(
        id=transaction_id,
        client_id=draft.client_id,
        status=TransactionStatus(row["status"]),
        postings=tuple(
            Posting(i, p.source_account_id, p.destination_account_id, p.currency, p.amount, None)
            for i, p in enumerate(draft.postings)
        ),
        memo=draft.memo,
        category=draft.category,
        external_ref=draft.external_ref,
        metadata=draft.metadata,
        effective_date=draft.effective_date,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        resolved_at=row["resolved_at"],
        reverses_id=None,
        reversed_by_id=None,
    )


def _statement_line(row: repo.StatementRow) -> StatementLine:
    return StatementLine(
        entry_id=row.id,
        transaction_id=row.transaction_id,
        kind=EntryKind(row.kind),
        at=from_micros(row.at),
        effective_date=row.effective_date,
        amount=row.amount,
        debits_pending_change=row.debits_pending_change,
        credits_pending_change=row.credits_pending_change,
        balance=Balance(row.balance_posted, row.debits_pending, row.credits_pending),
        counterparty_account_id=row.counterparty_account_id,
        memo=row.memo,
        category=row.category,
    )


def _event_from_row(row: RowMapping) -> Event:
    return Event(
        sequence=row["sequence"],
        kind=EventKind(row["kind"]),
        at=row["at"],
        transaction_id=row["transaction_id"],
        account_id=row["account_id"],
        community_ids=tuple(row["community_ids"]),
    )
