"""The REST API: thin endpoints over ``ledger.service.Ledger``.

Every endpoint authenticates the bearer key, checks the role, and calls one ledger
operation. A caller who may not see a community gets the same answer for its accounts
and transactions as for ones that do not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from typing import Annotated, Any, TypeVar, cast

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, Table, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

import migrations
from api import keys as key_store
from api import problems
from api.body_limit import BodyLimit
from api.keys import Principal, Role
from api.metrics import Metrics
from api.schemas import (
    AccountCreate,
    AccountPublic,
    AccountUpdate,
    BalancePublic,
    BatchCreate,
    BatchItemResult,
    BatchResult,
    CommunityCreate,
    CommunityPublic,
    CurrencyCreate,
    CurrencyPolicyUpdate,
    CurrencyPublic,
    EventPage,
    EventPublic,
    Health,
    IssuanceAccountSupply,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyRotate,
    Page,
    PendingPost,
    PostingPublic,
    Problem,
    ReversalCreate,
    StatementLinePublic,
    SupplyPublic,
    TransactionCreate,
    TransactionPublic,
    parse_instant,
    storable,
)
from api.tables import IdempotencyRow
from exchange.reciprocity import ReciprocityObserver
from exchange.service import Exchange
from ledger import model
from ledger.authority import Actor, ActorRole
from ledger.database import run_in_transaction
from ledger.errors import Code, LedgerError, account_not_found, transaction_not_found
from ledger.group_commit import GroupCommit
from ledger.service import Ledger, utc_now

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "A problem (RFC 9457) with a stable `code`.",
        "content": {
            problems.PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    },
}
ROTATION_OVERLAP_DEFAULT_SECONDS = 3600  # a rotated key's old secret works this long
# An idempotency record whose create has not answered yet (``_idempotent``).
CLAIMED = 0
CLAIM_WAIT = dt.timedelta(seconds=10)  # how long a twin waits for the first to answer
CLAIM_STALE = dt.timedelta(seconds=60)  # a claim this old lost its holder: take it over
CLAIM_POLL_SECONDS = 0.02
LONG_POLL_MAX_SECONDS = 30
IDEMPOTENCY_KEY_LENGTH = 128  # the column idempotency_records.key
LONG_POLL_INTERVAL_SECONDS = 0.1
EXPIRY_INTERVAL_SECONDS = 1.0
CursorQuery = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1,000.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=128,
        description="Same as `client_id` in the body, for clients that prefer a header.",
    ),
]
InstantQuery = Annotated[
    str | None,
    Query(
        max_length=40,
        description="An RFC 3339 instant with its offset, or a date (2026-11-25) meaning its "
        "start, 00:00 UTC.",
        examples=["2026-11-25T09:00:00Z"],
    ),
]
T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer hl_…`.")


def build_ledger(engine: Engine, clock: Callable[[], dt.datetime] = utc_now) -> Ledger:
    """The ledger as the service runs it, with every layer above that follows its writes;
    the API, the CLI, the demo and the benchmark all build it here."""
    return Ledger(engine, clock=clock, observers=[ReciprocityObserver()])


class State:
    """What every request needs: the ledger, its engine, the clock and the metrics; and
    the group commit that single postings share (``ledger/group_commit.py``)."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime], metrics: Metrics) -> None:
        self.engine = engine
        self.clock = clock
        self.ledger = build_ledger(engine, clock)
        self.group_commit = GroupCommit(self.ledger)
        self.metrics = metrics


async def _state(request: Request) -> State:  # async: no worker thread for a lookup
    state: State = request.app.state.heartleaf
    return state


StateDep = Annotated[State, Depends(_state)]


# What a member key may call, each further limited to the member's own accounts.
MEMBER_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/v1/communities"),
        ("GET", "/v1/currencies"),
        ("GET", "/v1/currencies/{code}"),
        ("GET", "/v1/accounts"),
        ("GET", "/v1/accounts/{account_id}"),
        ("GET", "/v1/accounts/{account_id}/balance"),
        ("GET", "/v1/accounts/{account_id}/statement"),
        ("POST", "/v1/transactions"),
        ("POST", "/v1/transactions/batch"),
        ("GET", "/v1/transactions/{transaction_id}"),
        ("POST", "/v1/keys/{key_id}/rotate"),
    }
)


async def _principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Async: the key's read is a short read (``_short_read``; a worker-thread hop for it
    cost a server 30% of its single postings over HTTP); the once-a-minute write goes to a
    worker thread."""
    if credentials is None:
        raise LedgerError(
            Code.UNAUTHENTICATED,
            "The request has no API key; send 'Authorization: Bearer <key>' with a key "
            "from POST /v1/keys (or heartleaf keys create).",
        )
    now = state.clock()
    found = await _short_read(
        state.engine, key_store.authenticate, state.engine, credentials.credentials, now
    )
    if found is None:
        raise LedgerError(Code.UNAUTHENTICATED, "The API key is unknown, expired or revoked.")
    if found.principal.role == Role.MEMBER:
        route = request.scope.get("route")
        allowed = (request.method, getattr(route, "path", "")) in MEMBER_ROUTES
        if not allowed:
            raise LedgerError(
                Code.FORBIDDEN,
                "A member key reads its member's own accounts, balances and statements and "
                "pays from them; nothing else.",
            )
    if found.use_unrecorded:
        await anyio.to_thread.run_sync(
            key_store.record_use, state.engine, found.principal.key_id, now
        )
    return found.principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def _short_read(engine: Engine, read: Callable[..., T], *arguments: Any) -> T:
    """Run a short indexed read on the event loop when a pooled connection is free: it waits
    for no writer (SQLite's WAL, PostgreSQL's MVCC; ``key_store.authenticate`` says more),
    and a worker-thread hop costs more than the read. Otherwise in a worker thread, since
    waiting for a connection (or opening one) would stall every request."""
    if _pooled_connection_free(engine):
        return read(*arguments)
    return await anyio.to_thread.run_sync(read, *arguments)


def _pooled_connection_free(engine: Engine) -> bool:
    checked_in = getattr(engine.pool, "checkedin", None)  # QueuePool's: file SQLite, PostgreSQL
    return checked_in is not None and checked_in() > 0


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


async def _storable_parameters(request: Request) -> None:
    """Refuse query parameters the operation does not take (a mistyped ``sinse=`` would
    otherwise be ignored and answer a different question), and path and query text no
    database keeps (a NUL: PostgreSQL refuses it) before it reaches a query; bodies are
    checked by their schemas (``api.schemas.Strict``). Async: it never waits, and a sync
    dependency costs a worker-thread hop per request."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        taken = _query_names(route.dependant)
        unknown = sorted(set(request.query_params) - taken)
        if unknown:
            shown = ", ".join(name for name in unknown if storable(name)) or "a parameter"
            raise LedgerError(
                Code.INVALID_REQUEST,
                f"This operation takes no query parameter {shown[:200]}.",
                field=unknown[0] if storable(unknown[0]) else None,
            )
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if isinstance(value, str) and not storable(value):
            raise LedgerError(
                Code.INVALID_REQUEST,
                f"{name if storable(name) else 'A parameter'} holds a NUL character.",
                field=name if storable(name) else None,
            )


def _require(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise LedgerError(Code.FORBIDDEN, f"A {principal.role} key cannot do this.")


def _actor(principal: Principal) -> Actor:
    """Who a key's writes act for; the ledger checks its authority inside each write."""
    if principal.role == Role.FEDERATION:
        return Actor(ActorRole.FEDERATION)
    if principal.role == Role.TREASURER:
        return Actor(ActorRole.TREASURER, principal.community_id)
    if principal.role == Role.MEMBER:
        return Actor(
            ActorRole.MEMBER,
            principal.community_id,
            member_account_ids=principal.member_account_ids,
        )
    # Viewers and auditors write nothing: every writing route requires another role first.
    raise LedgerError(Code.FORBIDDEN, f"A {principal.role} key cannot do this.")


def _visible_account(state: State, principal: Principal, account_id: int) -> model.Account:
    if principal.role == Role.MEMBER and account_id not in principal.member_account_ids:
        raise account_not_found(account_id)
    account = state.ledger.get_account(account_id)
    if not principal.reads_everything and account.community != principal.community:
        raise account_not_found(account_id)
    return account


def _sources_allowed(
    state: State, principal: Principal, source_ids: Iterable[int]
) -> LedgerError | None:
    """A treasurer spends only from its own community; any other source looks missing."""
    if principal.role == Role.FEDERATION:
        return None
    ids = sorted(set(source_ids))
    owners = state.ledger.communities_of_accounts(ids)
    for account_id in ids:
        if owners.get(account_id, principal.community) != principal.community:
            return account_not_found(account_id)
    return None


def _visible_transaction(
    state: State, principal: Principal, transaction_id: int
) -> model.Transaction:
    transaction = state.ledger.get_transaction(transaction_id)
    if principal.reads_everything:
        return transaction
    if principal.role == Role.MEMBER:
        touched = {
            a for p in transaction.postings for a in (p.source_account_id, p.destination_account_id)
        }
        if not touched & principal.member_account_ids:
            raise transaction_not_found(transaction_id)
        return transaction
    owners = state.ledger.communities_of_accounts(
        a for p in transaction.postings for a in (p.source_account_id, p.destination_account_id)
    )
    if principal.community not in owners.values():
        raise transaction_not_found(transaction_id)
    return transaction


def _request_hash(payload: BaseModel | dict[str, Any] | None) -> str:
    data = (
        payload.model_dump(mode="json", exclude={"client_id"})
        if isinstance(payload, BaseModel)
        else payload
    )
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _client_id(body_id: str | None, header_id: str | None) -> str | None:
    if body_id is not None and header_id is not None and body_id != header_id:
        raise LedgerError(
            Code.INVALID_REQUEST,
            "client_id and the Idempotency-Key header disagree.",
            field="client_id",
        )
    return body_id or header_id


def _insert_row(table: Table, row: dict[str, Any], connection: Connection) -> None:
    connection.execute(insert(table), row)


def _idempotent(
    state: State,
    principal: Principal,
    key: str | None,
    operation: str,
    payload: BaseModel | dict[str, Any] | None,
    create: Callable[[], tuple[int, dict[str, Any]]],
    stored_view: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body,
) -> JSONResponse:
    """Run a create once per (caller, key): a retry gets the first status and body back.

    The key is claimed before the create runs (a record with no answer yet, in its own
    unit of work), so of twins arriving at once exactly one creates; the others wait for
    its answer and replay it. A create that is refused releases the claim, so a corrected
    retry may run. A claim whose holder died (older than ``CLAIM_STALE``) is taken over.
    """
    if key is None:
        status, body = create()
        return JSONResponse(body, status_code=status)
    scope = principal.idempotency_scope
    scoped_key = f"{operation}:{key}"
    if len(scoped_key) > IDEMPOTENCY_KEY_LENGTH:  # "#" marks a digest: no raw key collides
        scoped_key = f"{operation}#{hashlib.sha256(key.encode()).hexdigest()}"
    request_hash = _request_hash(payload)
    table = cast(Table, IdempotencyRow.__table__)
    where = (table.c.scope == scope) & (table.c.key == scoped_key)
    deadline = time.monotonic() + CLAIM_WAIT.total_seconds()
    while True:
        claim = {
            "scope": scope,
            "key": scoped_key,
            "request_hash": request_hash,
            "status_code": CLAIMED,
            "body": {},
            "created_at": state.clock(),
        }
        try:
            run_in_transaction(state.engine, partial(_insert_row, table, claim), write=True)
            break
        except IntegrityError:
            pass  # a record exists: an answer to replay, or a twin's claim to wait for
        with state.engine.connect() as connection:
            found = connection.execute(
                select(
                    table.c.request_hash, table.c.status_code, table.c.body, table.c.created_at
                ).where(where)
            ).first()
        if found is None:
            continue  # released between our insert and our read: claim it again
        if found.request_hash != request_hash:
            raise LedgerError(
                Code.IDEMPOTENCY_CONFLICT,
                "This client_id was already used for a request with other content; send the "
                "same content to replay it, or a new client_id for a new request.",
                field="client_id",
            )
        if found.status_code != CLAIMED:
            return JSONResponse(
                found.body, status_code=found.status_code, headers={"Idempotent-Replayed": "true"}
            )
        if state.clock() - found.created_at > CLAIM_STALE:
            run_in_transaction(
                state.engine,
                lambda c: c.execute(delete(table).where(where, table.c.status_code == CLAIMED)),
                write=True,
            )
            continue
        if time.monotonic() > deadline:
            raise LedgerError(
                Code.IDEMPOTENCY_IN_PROGRESS,
                "A request with this client_id is still being carried out; send the same "
                "request again in a few seconds to get its answer.",
                field="client_id",
            )
        time.sleep(CLAIM_POLL_SECONDS)
    try:
        status, body = create()
    except BaseException:
        run_in_transaction(
            state.engine,
            lambda c: c.execute(delete(table).where(where, table.c.status_code == CLAIMED)),
            write=True,
        )
        raise
    answer = {"status_code": status, "body": stored_view(body)}
    run_in_transaction(
        state.engine, lambda c: c.execute(update(table).where(where).values(**answer)), write=True
    )
    return JSONResponse(body, status_code=status)


# -- views -------------------------------------------------------------------------------------


def _json(model_instance: BaseModel) -> dict[str, Any]:
    return model_instance.model_dump(mode="json")


def _body(
    model_instance: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The model as the response, serialized once by pydantic. Returned as a model, FastAPI
    would dump it, validate the dump against the route's ``response_model`` and encode it
    again: for a batch of 8,190 results, that is most of the request."""
    return Response(
        model_instance.model_dump_json(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _balance_view(
    account_id: int, currency: str, balance: model.Balance, as_of: dt.datetime | None
) -> BalancePublic:
    return BalancePublic(
        account_id=account_id,
        currency=currency,
        posted=balance.posted,
        debits_pending=balance.debits_pending,
        credits_pending=balance.credits_pending,
        available=balance.available,
        as_of=as_of,
    )


def _account_view(account: model.Account) -> AccountPublic:
    return AccountPublic(
        id=account.id,
        community=account.community,
        currency=account.currency,
        type=account.type,
        name=account.name,
        status=account.status,
        min_balance=account.min_balance,
        max_balance=account.max_balance,
        metadata=account.metadata,
        balance=_balance_view(account.id, account.currency, account.balance, None),
        version=account.version,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )


def _transaction_view(transaction: model.Transaction) -> TransactionPublic:
    return TransactionPublic(
        id=transaction.id,
        client_id=transaction.client_id,
        status=transaction.status,
        postings=[
            PostingPublic(
                index=p.index,
                source_account_id=p.source_account_id,
                destination_account_id=p.destination_account_id,
                amount=p.amount,
                currency=p.currency,
                amount_posted=p.amount_posted,
            )
            for p in transaction.postings
        ],
        memo=transaction.memo,
        category=transaction.category,
        external_ref=transaction.external_ref,
        metadata=transaction.metadata,
        effective_date=transaction.effective_date,
        created_at=transaction.created_at,
        expires_at=transaction.expires_at,
        resolved_at=transaction.resolved_at,
        reverses_id=transaction.reverses_id,
        reversed_by_id=transaction.reversed_by_id,
    )


def _key_view(record: key_store.KeyRecord) -> KeyPublic:
    return KeyPublic(
        id=record.id,
        prefix=record.prefix,
        role=str(record.role),
        community=record.community,
        label=record.label,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        revoked_at=record.revoked_at,
        expires_at=record.expires_at,
        member=record.member,
    )


def _draft(body: TransactionCreate, client_id: str | None) -> model.TransactionDraft:
    return model.TransactionDraft(
        postings=tuple(
            model.PostingDraft(p.source_account_id, p.destination_account_id, p.amount, p.currency)
            for p in body.postings
        ),
        client_id=client_id,
        memo=body.memo,
        category=body.category,
        external_ref=body.external_ref,
        metadata=body.metadata,
        effective_date=body.effective_date,
        pending=body.pending,
        timeout_seconds=body.timeout_seconds,
    )


def _instant(text_value: str | None, name: str) -> dt.datetime | None:
    """A query parameter's instant, read as a body's is (``api.schemas.parse_instant``)."""
    if text_value is None:
        return None
    try:
        return parse_instant(text_value)
    except ValueError as error:
        raise LedgerError(Code.INVALID_REQUEST, f"{name}: {error}.", field=name) from error


def _etag(account: model.Account) -> str:
    return f'"{account.version}"'


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not (tag.isascii() and tag.isdigit()):  # "²" is a digit to isdigit, not to int
        raise LedgerError(Code.VERSION_MISMATCH, "If-Match must be an ETag this API returned.")
    return int(tag)


# -- routes -------------------------------------------------------------------------------------

v1 = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)


@v1.post("/communities", status_code=201, response_model=CommunityPublic, tags=["communities"])
def create_community(
    body: CommunityCreate,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Add a community to the federation (federation keys only)."""
    _require(principal, Role.FEDERATION)

    def create() -> tuple[int, dict[str, Any]]:
        community = state.ledger.create_community(body.slug, body.name)
        return 201, _json(CommunityPublic.model_validate(community, from_attributes=True))

    return _idempotent(
        state, principal, _client_id(body.client_id, idempotency_key), "community", body, create
    )


@v1.get("/communities", response_model=list[CommunityPublic], tags=["communities"])
def list_communities(state: StateDep, principal: PrincipalDep) -> list[CommunityPublic]:
    """The federation's directory of communities (any key)."""
    return [
        CommunityPublic.model_validate(c, from_attributes=True)
        for c in state.ledger.list_communities()
    ]


@v1.get("/communities/{slug}", response_model=CommunityPublic, tags=["communities"])
def get_community(
    slug: Annotated[str, Path(max_length=64)], state: StateDep, principal: PrincipalDep
) -> CommunityPublic:
    return CommunityPublic.model_validate(state.ledger.get_community(slug), from_attributes=True)


def _set_community_status(
    state: State, principal: Principal, slug: str, status: model.CommunityStatus
) -> CommunityPublic:
    _require(principal, Role.FEDERATION)
    community = state.ledger.set_community_status(slug, status)
    return CommunityPublic.model_validate(community, from_attributes=True)


@v1.post("/communities/{slug}/suspend", response_model=CommunityPublic, tags=["communities"])
def suspend_community(
    slug: Annotated[str, Path(max_length=64)], state: StateDep, principal: PrincipalDep
) -> CommunityPublic:
    """Suspend a community (federation keys only): its accounts make and receive no
    payments and it opens none, while its history stays readable. Suspending twice is the
    same as once."""
    return _set_community_status(state, principal, slug, model.CommunityStatus.SUSPENDED)


@v1.post("/communities/{slug}/resume", response_model=CommunityPublic, tags=["communities"])
def resume_community(
    slug: Annotated[str, Path(max_length=64)], state: StateDep, principal: PrincipalDep
) -> CommunityPublic:
    """Lift a community's suspension (federation keys only)."""
    return _set_community_status(state, principal, slug, model.CommunityStatus.ACTIVE)


@v1.post("/currencies", status_code=201, response_model=CurrencyPublic, tags=["currencies"])
def create_currency(
    body: CurrencyCreate,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create a currency (federation keys only). Scale is fixed for its lifetime."""
    _require(principal, Role.FEDERATION)

    def create() -> tuple[int, dict[str, Any]]:
        currency = state.ledger.create_currency(
            body.code,
            kind=body.kind,
            scale=body.scale,
            name=body.name,
            symbol=body.symbol,
            issuer=body.issuer,
            held_in=body.held_in,
            circulation_cap=body.circulation_cap,
        )
        return 201, _json(CurrencyPublic.model_validate(currency, from_attributes=True))

    return _idempotent(
        state, principal, _client_id(body.client_id, idempotency_key), "currency", body, create
    )


@v1.get("/currencies", response_model=list[CurrencyPublic], tags=["currencies"])
def list_currencies(state: StateDep, principal: PrincipalDep) -> list[CurrencyPublic]:
    return [
        CurrencyPublic.model_validate(c, from_attributes=True)
        for c in state.ledger.list_currencies()
    ]


@v1.get("/currencies/{code}", response_model=CurrencyPublic, tags=["currencies"])
def get_currency(
    code: Annotated[str, Path(max_length=32)], state: StateDep, principal: PrincipalDep
) -> CurrencyPublic:
    return CurrencyPublic.model_validate(
        state.ledger.get_currency(code, fresh=True), from_attributes=True
    )


@v1.patch("/currencies/{code}", response_model=CurrencyPublic, tags=["currencies"])
def update_currency_policy(
    code: Annotated[str, Path(max_length=32)],
    body: CurrencyPolicyUpdate,
    state: StateDep,
    principal: PrincipalDep,
) -> CurrencyPublic:
    """The issuer sets where its currency may be held and how much may circulate: a
    community's treasurer for its Hearts, a federation key for the federation's currencies."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("held_in", "circulation_cap")
        if name in body.model_fields_set
    }
    if changes.get("held_in", "") is None:
        raise LedgerError(
            Code.INVALID_REQUEST,
            "held_in is issuer, all or system; it cannot be null.",
            field="held_in",
        )
    currency = state.ledger.set_currency_policy(code, actor=_actor(principal), **changes)
    return CurrencyPublic.model_validate(currency, from_attributes=True)


@v1.get("/currencies/{code}/supply", response_model=SupplyPublic, tags=["currencies"])
def get_supply(
    code: Annotated[str, Path(max_length=32)],
    state: StateDep,
    principal: PrincipalDep,
    as_of: InstantQuery = None,
) -> SupplyPublic:
    """How much of the currency was issued and redeemed, by which issuance account, and how
    much circulates, now or as of an instant (any key: issuance is public in a federation)."""
    instant = _instant(as_of, "as_of")
    supply = state.ledger.supply(code, as_of=instant)
    return SupplyPublic(
        currency=supply.currency,
        as_of=instant,
        issued=supply.issued,
        redeemed=supply.redeemed,
        in_circulation=supply.in_circulation,
        circulation_cap=supply.circulation_cap,
        by_issuance_account=[
            IssuanceAccountSupply(account_id=a, community=c, issued=i, redeemed=r)
            for a, c, i, r in supply.by_issuance_account
        ],
    )


@v1.post("/accounts", status_code=201, response_model=AccountPublic, tags=["accounts"])
def create_account(
    body: AccountCreate,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Open an account: the federation anywhere, a treasurer in its own community, in a
    currency the community may hold; issuance accounts and floors below zero (or none)
    only by the currency's issuer; system accounts by no key."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    actor = _actor(principal)

    def create() -> tuple[int, dict[str, Any]]:
        floor: dict[str, Any] = (
            {"min_balance": body.min_balance} if "min_balance" in body.model_fields_set else {}
        )
        account = state.ledger.open_account(
            community=body.community,
            currency=body.currency,
            type=body.type,
            name=body.name,
            max_balance=body.max_balance,
            metadata=body.metadata,
            actor=actor,
            **floor,
        )
        return 201, _json(_account_view(account))

    return _idempotent(
        state, principal, _client_id(body.client_id, idempotency_key), "account", body, create
    )


@v1.get("/accounts", response_model=Page[AccountPublic], tags=["accounts"])
def list_accounts(
    state: StateDep,
    principal: PrincipalDep,
    community: Annotated[str | None, Query(max_length=64)] = None,
    currency: Annotated[str | None, Query(max_length=32)] = None,
    type: Annotated[model.AccountType | None, Query()] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[AccountPublic]:
    """Accounts with their balances; community keys see their own community only, a member
    key its member's accounts only."""
    if principal.role == Role.MEMBER:
        own = [state.ledger.get_account(i) for i in sorted(principal.member_account_ids)]
        wanted = [
            a
            for a in own
            if community in (None, a.community)
            and currency in (None, a.currency)
            and type in (None, a.type)
        ]
        return Page(items=[_account_view(a) for a in wanted], next_cursor=None)
    if not principal.reads_everything:
        if community not in (None, principal.community):
            return Page(items=[], next_cursor=None)
        community = principal.community
    page = state.ledger.list_accounts(
        community=community, currency=currency, type=type, cursor=cursor, limit=limit
    )
    return Page(items=[_account_view(a) for a in page.items], next_cursor=page.next_cursor)


AccountIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Account id.")]


@v1.get("/accounts/{account_id}", response_model=AccountPublic, tags=["accounts"])
def get_account(
    account_id: AccountIdPath, state: StateDep, principal: PrincipalDep, response: Response
) -> AccountPublic:
    account = _visible_account(state, principal, account_id)
    response.headers["ETag"] = _etag(account)
    return _account_view(account)


@v1.patch("/accounts/{account_id}", response_model=AccountPublic, tags=["accounts"])
def update_account(
    account_id: AccountIdPath,
    body: AccountUpdate,
    state: StateDep,
    principal: PrincipalDep,
    response: Response,
    if_match: Annotated[str | None, Header(max_length=64, description="The ETag you read.")] = None,
) -> AccountPublic:
    """Change limits, status (freeze, unfreeze, close) or metadata. Send If-Match with the
    ETag you read to be sure nobody changed the account in between."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    _visible_account(state, principal, account_id)
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("min_balance", "max_balance")
        if name in body.model_fields_set
    }
    account = state.ledger.update_account(
        account_id,
        expected_version=_expected_version(if_match),
        status=body.status,
        metadata=body.metadata,
        actor=_actor(principal),
        **changes,
    )
    response.headers["ETag"] = _etag(account)
    return _account_view(account)


@v1.get("/accounts/{account_id}/balance", response_model=BalancePublic, tags=["accounts"])
def get_balance(
    account_id: AccountIdPath,
    state: StateDep,
    principal: PrincipalDep,
    as_of: InstantQuery = None,
) -> BalancePublic:
    """The balance now, or as it stood at `as_of`."""
    account = _visible_account(state, principal, account_id)
    instant = _instant(as_of, "as_of")
    balance = state.ledger.balance(account_id, as_of=instant)
    return _balance_view(account_id, account.currency, balance, instant)


@v1.get(
    "/accounts/{account_id}/statement", response_model=Page[StatementLinePublic], tags=["accounts"]
)
def get_statement(
    account_id: AccountIdPath,
    state: StateDep,
    principal: PrincipalDep,
    since: InstantQuery = None,
    until: InstantQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[StatementLinePublic]:
    """The account's history in ledger order, each line with the balance after it."""
    account = _visible_account(state, principal, account_id)
    page = state.ledger.statement(
        account_id,
        since=_instant(since, "since"),
        until=_instant(until, "until"),
        cursor=cursor,
        limit=limit,
    )
    items = [
        StatementLinePublic(
            entry_id=line.entry_id,
            transaction_id=line.transaction_id,
            kind=line.kind,
            at=line.at,
            effective_date=line.effective_date,
            amount=line.amount,
            debits_pending_change=line.debits_pending_change,
            credits_pending_change=line.credits_pending_change,
            balance=_balance_view(account_id, account.currency, line.balance, None),
            counterparty_account_id=line.counterparty_account_id,
            memo=line.memo,
            category=line.category,
        )
        for line in page.items
    ]
    return Page(items=items, next_cursor=page.next_cursor)


@v1.post("/transactions", status_code=201, response_model=TransactionPublic, tags=["transactions"])
async def create_transaction(
    body: TransactionCreate,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Post a transaction (or place a hold with `pending`). All postings apply or none."""
    # Async: the request awaits the group commit's future on the event loop. As a sync
    # route in a worker thread, each posting paid two thread hand-offs more, and a
    # one-worker SQLite server took ~15% fewer postings from 8 clients, ~20% fewer from 32.
    # Requests wait for the writer without a limit of their own (a worker thread each
    # capped them at anyio's 40); ``uvicorn --limit-concurrency`` caps a server's.
    _require(principal, Role.FEDERATION, Role.TREASURER, Role.MEMBER)
    draft = _draft(body, _client_id(body.client_id, idempotency_key))
    try:
        # Whose accounts the draft may move is checked inside the write (ledger.authority).
        outcome = await asyncio.wrap_future(
            state.group_commit.submit(
                draft, scope=principal.idempotency_scope, actor=_actor(principal)
            )
        )
        if outcome.error is not None:
            raise outcome.error
    except LedgerError as error:
        state.metrics.transaction_rejected(error.code)
        raise
    assert outcome.transaction is not None
    if not outcome.replayed:
        state.metrics.transactions_posted(1)
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return _body(_transaction_view(outcome.transaction), 201, headers)


@v1.post("/transactions/batch", response_model=BatchResult, tags=["transactions"])
def create_batch(body: BatchCreate, state: StateDep, principal: PrincipalDep) -> Response:
    """Up to 8,190 transactions in one request and one database transaction, each with
    its own result; with `atomic`, all of them or none."""
    _require(principal, Role.FEDERATION, Role.TREASURER, Role.MEMBER)
    drafts = [_draft(item, item.client_id) for item in body.transactions]
    outcomes = state.ledger.post_transactions(
        drafts, scope=principal.idempotency_scope, atomic=body.atomic, actor=_actor(principal)
    )
    results = []
    for index, outcome in enumerate(outcomes):
        if outcome.error is not None:
            state.metrics.transaction_rejected(outcome.error.code)
            results.append(
                BatchItemResult(
                    index=index,
                    status="rejected",
                    transaction=None,
                    problem=Problem.model_validate(problems.from_ledger_error(outcome.error)),
                )
            )
        else:
            assert outcome.transaction is not None
            results.append(
                BatchItemResult(
                    index=index,
                    status="replayed" if outcome.replayed else "created",
                    transaction=_transaction_view(outcome.transaction),
                    problem=None,
                )
            )
    created = sum(r.status == "created" for r in results)
    state.metrics.transactions_posted(created)
    return _body(
        BatchResult(
            created=created,
            replayed=sum(r.status == "replayed" for r in results),
            rejected=sum(r.status == "rejected" for r in results),
            results=results,
        )
    )


TransactionIdPath = Annotated[int, Path(ge=1, le=2**63 - 1, description="Transaction id.")]


@v1.get("/transactions", response_model=Page[TransactionPublic], tags=["transactions"])
def list_transactions(
    state: StateDep,
    principal: PrincipalDep,
    community: Annotated[str | None, Query(max_length=64)] = None,
    account_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    category: Annotated[
        str | None, Query(max_length=100, description="Matches itself and subcategories.")
    ] = None,
    status: Annotated[model.TransactionStatus | None, Query()] = None,
    since: InstantQuery = None,
    until: InstantQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[TransactionPublic]:
    """Transactions in ledger order, filtered; community keys see those touching their community."""
    if not principal.reads_everything:
        if community not in (None, principal.community):
            return Page(items=[], next_cursor=None)
        community = principal.community
    if account_id is not None:
        _visible_account(state, principal, account_id)
    page = state.ledger.list_transactions(
        community=community,
        account_id=account_id,
        category=category,
        status=status,
        since=_instant(since, "since"),
        until=_instant(until, "until"),
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[_transaction_view(t) for t in page.items], next_cursor=page.next_cursor)


@v1.get("/transactions/{transaction_id}", response_model=TransactionPublic, tags=["transactions"])
def get_transaction(
    transaction_id: TransactionIdPath, state: StateDep, principal: PrincipalDep
) -> TransactionPublic:
    return _transaction_view(_visible_transaction(state, principal, transaction_id))


def _resolve_pending(
    state: State,
    principal: Principal,
    transaction_id: int,
    key: str | None,
    operation: str,
    payload: BaseModel | None,
    act: Callable[[], model.Transaction],
) -> JSONResponse:
    _require(principal, Role.FEDERATION, Role.TREASURER)
    transaction = _visible_transaction(state, principal, transaction_id)
    refusal = _sources_allowed(
        state, principal, (p.source_account_id for p in transaction.postings)
    )
    if refusal is not None:  # the caller sees it (it pays into its community), so no 404
        raise LedgerError(
            Code.FORBIDDEN,
            "A treasurer key posts or voids holds on its own community's accounts only.",
            field="transaction_id",
        )
    return _idempotent(
        state,
        principal,
        key,
        f"{operation}:{transaction_id}",
        payload,
        lambda: (200, _json(_transaction_view(act()))),
    )


@v1.post(
    "/transactions/{transaction_id}/post", response_model=TransactionPublic, tags=["transactions"]
)
def post_pending(
    transaction_id: TransactionIdPath,
    state: StateDep,
    principal: PrincipalDep,
    body: PendingPost | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Post a pending transaction in full, or `amounts` per posting; the rest is released."""
    amounts = None if body is None else body.amounts
    return _resolve_pending(
        state,
        principal,
        transaction_id,
        idempotency_key,
        "post",
        body,
        lambda: state.ledger.post_pending(transaction_id, amounts, actor=_actor(principal)),
    )


@v1.post(
    "/transactions/{transaction_id}/void", response_model=TransactionPublic, tags=["transactions"]
)
def void_pending(
    transaction_id: TransactionIdPath,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Void a pending transaction: its holds are released, nothing moves."""
    return _resolve_pending(
        state,
        principal,
        transaction_id,
        idempotency_key,
        "void",
        None,
        lambda: state.ledger.void_pending(transaction_id, actor=_actor(principal)),
    )


@v1.post(
    "/transactions/{transaction_id}/reverse",
    status_code=201,
    response_model=TransactionPublic,
    tags=["transactions"],
)
def reverse_transaction(
    transaction_id: TransactionIdPath,
    state: StateDep,
    principal: PrincipalDep,
    body: ReversalCreate | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Reverse a posted transaction with a new one that swaps its postings (once only).
    A treasurer may reverse what its own community received."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    original = _visible_transaction(state, principal, transaction_id)
    refusal = _sources_allowed(
        state, principal, (p.destination_account_id for p in original.postings)
    )
    if refusal is not None:  # the caller sees it (it paid from its community), so no 404
        raise LedgerError(
            Code.FORBIDDEN,
            "A treasurer key reverses only what its own community received.",
            field="transaction_id",
        )
    client_id = _client_id(None if body is None else body.client_id, idempotency_key)
    outcome = state.ledger.reverse(
        transaction_id,
        client_id=client_id,
        scope=principal.idempotency_scope,
        memo=None if body is None else body.memo,
        actor=_actor(principal),
    )
    assert outcome.transaction is not None
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return _body(_transaction_view(outcome.transaction), 201, headers)


@v1.post("/keys", status_code=201, response_model=KeyCreated, tags=["keys"])
def create_key(
    body: KeyCreate,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create an API key (federation only). The secret is in this response and nowhere else."""
    _require(principal, Role.FEDERATION)

    def create() -> tuple[int, dict[str, Any]]:
        record, secret = key_store.create_key(
            state.engine,
            role=Role(body.role),
            community=body.community,
            label=body.label,
            now=state.clock(),
            member=body.member,
            expires_at=body.expires_at,
        )
        return 201, _json(KeyCreated(**_key_view(record).model_dump(), secret=secret))

    return _idempotent(
        state,
        principal,
        _client_id(body.client_id, idempotency_key),
        "key",
        body,
        create,
        stored_view=lambda created: {**created, "secret": None},
    )


@v1.get("/keys", response_model=list[KeyPublic], tags=["keys"])
def list_keys(state: StateDep, principal: PrincipalDep) -> list[KeyPublic]:
    # An auditor reads everything, who may act included (never a secret: none is kept).
    _require(principal, Role.FEDERATION, Role.AUDITOR)
    return [_key_view(record) for record in key_store.list_keys(state.engine)]


@v1.delete("/keys/{key_id}", response_model=KeyPublic, tags=["keys"])
def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], state: StateDep, principal: PrincipalDep
) -> KeyPublic:
    """Revoke a key at once; it stays listed, with its revocation time."""
    _require(principal, Role.FEDERATION)
    withdraw = Exchange(state.ledger).governance.withdraw_key
    return _key_view(key_store.revoke_key(state.engine, key_id, state.clock(), withdraw=withdraw))


@v1.post("/keys/{key_id}/rotate", response_model=KeyCreated, tags=["keys"])
def rotate_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    state: StateDep,
    principal: PrincipalDep,
    body: KeyRotate | None = None,
) -> KeyCreated:
    """Give a key a new secret (shown once, here); the old secret keeps working for
    `old_secret_valid_seconds`. A federation key rotates any key; any other key only
    itself."""
    if principal.role != Role.FEDERATION and principal.key_id != key_id:
        raise LedgerError(Code.FORBIDDEN, "A key other than a federation key rotates only itself.")
    seconds = ROTATION_OVERLAP_DEFAULT_SECONDS if body is None else body.old_secret_valid_seconds
    overlap = dt.timedelta(seconds=seconds)
    record, secret = key_store.rotate_key(state.engine, key_id, state.clock(), overlap)
    return KeyCreated(**_key_view(record).model_dump(), secret=secret)


@v1.get("/events", response_model=EventPage, tags=["events"])
async def list_events(
    state: StateDep,
    principal: PrincipalDep,
    after: Annotated[
        str,
        Query(
            pattern=r"^[0-9]{1,18}$",
            description="`next_cursor` of the previous page; 0 from the start.",
        ),
    ] = "0",
    limit: LimitQuery = 100,
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=LONG_POLL_MAX_SECONDS,
            description="Seconds to wait for an event when there is none yet.",
        ),
    ] = 0,
) -> EventPage:
    """Committed changes in commit order. Following `next_cursor` never misses an event and
    never shows one twice (see ``ledger.repository.reserve_event_sequences``)."""
    cursor = int(after)
    deadline = time.monotonic() + wait
    slugs = {c.id: c.slug for c in await anyio.to_thread.run_sync(state.ledger.list_communities)}
    while True:
        events = await anyio.to_thread.run_sync(state.ledger.events_after, cursor, limit)
        last = events[-1].sequence if events else cursor
        visible = [
            e
            for e in events
            if principal.reads_everything or principal.community_id in e.community_ids
        ]
        if visible or (events and len(events) == limit) or time.monotonic() >= deadline:
            break
        cursor = last  # only invisible events so far: keep following from there
        await asyncio.sleep(LONG_POLL_INTERVAL_SECONDS)
    if any(community_id not in slugs for e in visible for community_id in e.community_ids):
        slugs = {
            c.id: c.slug for c in await anyio.to_thread.run_sync(state.ledger.list_communities)
        }
    items = [
        EventPublic(
            sequence=e.sequence,
            kind=e.kind,
            at=e.at,
            transaction_id=e.transaction_id,
            account_id=e.account_id,
            communities=[slugs[c] for c in e.community_ids],
        )
        for e in visible
    ]
    return EventPage(items=items, next_cursor=str(last))


# -- operations -----------------------------------------------------------------------------------

operations = APIRouter(tags=["operations"])


@operations.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@operations.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(state: StateDep) -> JSONResponse:
    """The database answers and its schema is at the newest migration."""
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        at_head = migrations.is_at_head(state.engine)
    except Exception as error:  # noqa: BLE001 - any failure to reach the database means "not ready"
        return JSONResponse(
            _json(Health(status="unavailable", database=type(error).__name__)), status_code=503
        )
    if not at_head:
        return JSONResponse(
            _json(
                Health(
                    status="unavailable",
                    database="ok",
                    migrations="behind: run `heartleaf db upgrade`",
                )
            ),
            status_code=503,
        )
    return JSONResponse(_json(Health(status="ok", database="ok", migrations="at head")))


@operations.get("/metrics", response_class=PlainTextResponse)
def metrics(state: StateDep) -> PlainTextResponse:
    """Prometheus text format: requests by route and status, latency, transactions."""
    body, content_type = state.metrics.render()
    return PlainTextResponse(body, media_type=content_type)


def create_app(
    engine: Engine, *, clock: Callable[[], dt.datetime] = utc_now, expire_in_background: bool = True
) -> FastAPI:
    metrics_ = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = (
            asyncio.create_task(_expire_forever(app.state.heartleaf))
            if expire_in_background
            else None
        )
        yield
        await anyio.to_thread.run_sync(app.state.heartleaf.group_commit.close)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="Heartleaf",
        version="1.0.0",
        summary="The shared ledger of a federation of communities running Hearts and Leaves.",
        description=(
            "Amounts are integers of minor units beside their currency code; instants are RFC 3339 "
            "in UTC. Authenticate with `Authorization: Bearer <key>`. Every error is an RFC 9457 "
            "problem with a stable `code`. History is ordered by the instant the ledger assigns "
            "when it writes; a transaction's `effective_date` is stored and filterable but does "
            "not reorder history."
        ),
        lifespan=lifespan,
        dependencies=[Depends(_storable_parameters)],
        docs_url=None,  # api.front serves /docs and /redoc with their assets, no CDN
        redoc_url=None,
    )
    app.state.heartleaf = State(engine, clock, metrics_)
    app.add_middleware(BodyLimit)
    problems.install(app)
    metrics_.install(app)
    # Imported here: the exchange routes build on this module's dependencies and views.
    from api import front  # noqa: PLC0415
    from api.exchange_routes import router as exchange_router  # noqa: PLC0415
    from api.reciprocity_routes import router as reciprocity_router  # noqa: PLC0415

    app.include_router(v1)
    app.include_router(exchange_router)
    app.include_router(reciprocity_router)
    app.include_router(operations)
    front.install(app)  # /, /docs, /redoc and their assets, served offline
    return app


async def _expire_forever(state: State) -> None:
    """Sweep lapsed holds so their release rows are written even on idle accounts.

    Reads never depend on it (they subtract lapsed holds themselves); it keeps history
    and the event feed timely."""
    while True:
        await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)
        try:
            await anyio.to_thread.run_sync(state.ledger.expire_overdue)
        except Exception:  # noqa: BLE001 - a failed sweep is retried on the next tick
            problems.log.exception("expiry sweep failed")
