"""Every query of ``ledger/`` lives here. Services hold the logic; this module holds SQL.

Statements are SQLAlchemy Core, built once at import so their compiled form is cached,
except the posting path's, the statement page's and the API's short reads, which run on
the driver's cursor (see ``Raw``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any, NamedTuple, cast

from psycopg import pq
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    RowMapping,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from ledger.authority import SYSTEM_ACCOUNT_OWNERS
from ledger.tables import (
    AccountRow,
    CommunityRow,
    CounterRow,
    CurrencyRow,
    EntryRow,
    EventRow,
    HoldRow,
    PostingRow,
    TransactionRow,
    from_micros,
    to_micros,
)

accounts = cast(Table, AccountRow.__table__)
communities = cast(Table, CommunityRow.__table__)
currencies = cast(Table, CurrencyRow.__table__)
transactions = cast(Table, TransactionRow.__table__)
postings = cast(Table, PostingRow.__table__)
entries = cast(Table, EntryRow.__table__)
holds = cast(Table, HoldRow.__table__)
events = cast(Table, EventRow.__table__)
counters = cast(Table, CounterRow.__table__)

EVENT_COUNTER = "events"


class Raw:
    """The posting path's statements and the statement page's read, run on the driver's cursor
    inside SQLAlchemy's transaction (``exchange/reciprocity.py``'s observer runs its own the
    same way); the API's short reads run on it outside one (``fetch_outside_transaction``).
    They are written once in portable SQL with ``:name`` parameters; on PostgreSQL the names
    become psycopg's ``%(name)s``, and on SQLite a plain insert of many rows becomes
    multi-row statements (``run_many``). Values arrive already in storage form (instants as
    microseconds, JSON as text), which is what ``Instant`` and ``JSON`` would have produced:
    the rows are the same either way, a test reads them back through SQLAlchemy. Why:
    SQLAlchemy's per-statement work is most of the cost of a single posting, and the posting
    path runs seven statements per transaction. A connection lost under one is discarded
    when it returns to the pool, not at once as SQLAlchemy would.
    """

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.pyformat = dialect.name == "postgresql"
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    def _sql(self, statement: str) -> str:
        return _pyformat(statement) if self.pyformat else statement

    def fetch(self, statement: str, parameters: dict[str, Any]) -> list[Any]:
        try:
            self.cursor.execute(self._sql(statement), parameters)
            return list(self.cursor.fetchall())
        except self.dbapi_error as error:
            raise self._translated(error, statement, parameters) from error

    def run_many(self, statement: str, rows: list[dict[str, Any]]) -> None:
        try:
            if len(rows) == 1:
                self.cursor.execute(self._sql(statement), rows[0])
            elif not self.pyformat and (insert := _plain_insert(statement)) is not None:
                # SQLite: multi-row statements, not a step per row (a batch of 8,190: 64 ->
                # 56 µs per transfer). PostgreSQL keeps executemany, which its pipeline sends
                # without waiting: there one statement of many rows took twice as long.
                head, names = insert
                start = 0
                for count in _row_counts(len(rows)):
                    chunk = rows[start : start + count]
                    start += count
                    self.cursor.execute(
                        _multi_row(head, len(names), count),
                        [row[name] for row in chunk for name in names],
                    )
            else:
                self.cursor.executemany(self._sql(statement), rows)
        except self.dbapi_error as error:
            raise self._translated(error, statement, rows) from error

    def _translated(self, error: Exception, statement: str, parameters: Any) -> Exception:
        """Driver errors as SQLAlchemy's (IntegrityError, OperationalError …), as
        ``Connection.execute`` raises them, so callers and the retry loop see one family."""
        return DBAPIError.instance(statement, parameters, error, self.dbapi_error)


@contextmanager
def pipelined(connection: Connection) -> Iterator[None]:
    """Send the statements inside the block without waiting for answers nobody reads
    (psycopg's pipeline mode): on PostgreSQL a write then waits once per statement whose
    rows it reads, plus once at the end, instead of once per statement. A block inside a
    block joins it (a nested pipeline would sync when it ends). Errors of statements whose
    answers were not read surface at the next read or at the end of the block. A no-op on
    SQLite, where there is no round trip."""
    if connection.dialect.name != "postgresql":
        yield
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    if driver.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        yield
        return
    dbapi_error: type[Exception] = connection.dialect.loaded_dbapi.Error
    try:
        with driver.pipeline():
            yield
    except dbapi_error as error:  # an error the pipeline reports when it syncs
        raise DBAPIError.instance("pipelined writes", {}, error, dbapi_error) from error


def raw(connection: Connection) -> Raw:
    """A driver cursor for the statements that follow. A new one each time: in pipeline
    mode a cursor reads the answer it holds, so one cursor shared by statements whose
    answers arrive later could read an earlier statement's answer as its own."""
    return Raw(connection.connection.cursor(), connection.dialect)


def fetch_outside_transaction(
    engine: Engine, statement: str, parameters: dict[str, Any]
) -> list[Any]:
    """The rows of one read statement, on a pooled driver connection with no transaction
    around it: a single statement sees one snapshot by itself on both databases. For the
    reads an API request makes on its event loop (the bearer key's, a treasurer's
    sources): there a unit of work's BEGIN and COMMIT each let go of the GIL, and with the
    group-commit writer busy getting it back is most of the read's cost (a key read took
    64-138 µs on SQLite with a writer posting beside it, against 39-42 µs this way)."""
    connection = engine.raw_connection()
    driver = connection.driver_connection
    on_postgresql = engine.dialect.name == "postgresql"
    try:
        if on_postgresql:  # client-side while idle: no round trip, and none to roll back after
            driver.autocommit = True  # type: ignore[union-attr]
        try:
            return Raw(connection.cursor(), engine.dialect).fetch(statement, parameters)
        finally:
            if on_postgresql:
                driver.autocommit = False  # type: ignore[union-attr]
    finally:
        connection.close()


def in_list(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(:prefix0, :prefix1, …)`` and its parameters, for ``IN`` on the driver's cursor:
    only generated parameter names are joined into the SQL, every value is bound."""
    parameters = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return "(" + ", ".join(f":{name}" for name in parameters) + ")", parameters


@lru_cache(maxsize=256)
def _pyformat(statement: str) -> str:
    return re.sub(r":(\w+)", r"%(\1)s", statement)


# Rows per multi-row statement: at most this many, else a power of two below it, so that
# whatever the batch size a table's inserts take one of nine shapes, each prepared once and
# kept in the connection's statement cache (256 rows of the widest insert, entries' twelve
# columns, are 3,072 parameters, within every SQLite build's limit since 3.32).
ROWS_PER_STATEMENT = 256
_PLAIN_INSERT = re.compile(r"(INSERT INTO \w+ \([^)]*\) VALUES )\((:\w+(?:, :\w+)*)\)")


@cache
def _plain_insert(statement: str) -> tuple[str, tuple[str, ...]] | None:
    """``INSERT INTO t (…) VALUES (:a, :b, …)`` as its head and parameter names; None for
    any other statement (an upsert, an update)."""
    found = _PLAIN_INSERT.fullmatch(statement)
    if found is None:
        return None
    return found[1], tuple(name.strip()[1:] for name in found[2].split(","))


def _row_counts(rows: int) -> Iterator[int]:
    """The rows of each statement: full ones, then the rest by powers of two."""
    for _ in range(rows // ROWS_PER_STATEMENT):
        yield ROWS_PER_STATEMENT
    rest = rows % ROWS_PER_STATEMENT
    while rest:
        count = 1 << (rest.bit_length() - 1)
        yield count
        rest -= count


@lru_cache(maxsize=256)
def _multi_row(head: str, columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return head + ", ".join([row] * rows)


def _micros_or_none(instant: dt.datetime | None) -> int | None:
    return None if instant is None else to_micros(instant)


# -- communities and currencies ---------------------------------------------------------


def insert_community(connection: Connection, values: dict[str, Any]) -> int:
    return int(
        connection.execute(insert(communities).returning(communities.c.id), values).scalar_one()
    )


def community_by_slug(connection: Connection, slug: str) -> RowMapping | None:
    return (
        connection.execute(select(communities).where(communities.c.slug == slug)).mappings().first()
    )


def community_by_id(connection: Connection, community_id: int) -> RowMapping | None:
    return (
        connection.execute(select(communities).where(communities.c.id == community_id))
        .mappings()
        .first()
    )


def list_communities(connection: Connection) -> Sequence[RowMapping]:
    return connection.execute(select(communities).order_by(communities.c.slug)).mappings().all()


def update_community(connection: Connection, community_id: int, values: dict[str, Any]) -> None:
    connection.execute(update(communities).where(communities.c.id == community_id).values(**values))


_CURRENCY_WITH_ISSUER = select(currencies, communities.c.slug.label("issuer_slug")).outerjoin(
    communities, communities.c.id == currencies.c.issuer_community_id
)


def insert_currency(connection: Connection, values: dict[str, Any]) -> int:
    return int(
        connection.execute(insert(currencies).returning(currencies.c.id), values).scalar_one()
    )


def currency_by_code(connection: Connection, code: str, *, lock: bool = False) -> RowMapping | None:
    statement = _CURRENCY_WITH_ISSUER.where(currencies.c.code == code)
    if lock:
        statement = statement.with_for_update(of=currencies)
    return connection.execute(statement).mappings().first()


def update_currency(connection: Connection, currency_id: int, values: dict[str, Any]) -> None:
    connection.execute(update(currencies).where(currencies.c.id == currency_id).values(**values))


def lock_currency(connection: Connection, currency_id: int) -> None:
    """Serialize the writers that change a capped currency's circulation (PostgreSQL;
    SQLite's BEGIN IMMEDIATE serializes every writer already)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            select(currencies.c.id).where(currencies.c.id == currency_id).with_for_update()
        )


def circulation(connection: Connection, currency_id: int) -> int:
    """What a currency's issuance accounts have put out, net: minus their balances."""
    total = connection.execute(
        select(func.coalesce(func.sum(accounts.c.balance_posted), 0)).where(
            accounts.c.currency_id == currency_id, accounts.c.type == "issuance"
        )
    ).scalar_one()
    return -int(total)


def committed_circulation(connection: Connection, currency_id: int) -> int:
    """What a currency's issuance accounts have put out or hold to put out: circulation
    plus the holds placed on them (a hold posts later without asking the cap again)."""
    total = connection.execute(
        select(
            func.coalesce(func.sum(accounts.c.debits_pending - accounts.c.balance_posted), 0)
        ).where(accounts.c.currency_id == currency_id, accounts.c.type == "issuance")
    ).scalar_one()
    return int(total)


def powered_accounts(connection: Connection) -> list[tuple[int, str, int | None, str | None]]:
    """Ordinary accounts that issue or may go below zero: id, currency, its issuer's
    community id and who authorized the power (``verify``)."""
    statement = (
        select(
            accounts.c.id,
            currencies.c.code,
            currencies.c.issuer_community_id,
            accounts.c.authorized_by,
        )
        .join(currencies, currencies.c.id == accounts.c.currency_id)
        .where(
            accounts.c.type.not_in([str(t) for t in SYSTEM_ACCOUNT_OWNERS]),
            or_(
                accounts.c.type == "issuance",
                accounts.c.min_balance.is_(None),
                accounts.c.min_balance < 0,
            ),
        )
        .order_by(accounts.c.id)
    )
    return [(r[0], r[1], r[2], r[3]) for r in connection.execute(statement)]


def capped_currencies(connection: Connection) -> list[tuple[int, str, int]]:
    statement = select(currencies.c.id, currencies.c.code, currencies.c.circulation_cap).where(
        currencies.c.circulation_cap.is_not(None)
    )
    return [(r[0], r[1], r[2]) for r in connection.execute(statement)]


def issuance_totals(
    connection: Connection, currency_id: int, as_of: dt.datetime | None
) -> list[tuple[int, str, int, int]]:
    """Per issuance account of a currency: id, community, issued and redeemed up to
    ``as_of`` (posted history rows: what left the account and what came back)."""
    amount = entries.c.amount
    statement = (
        select(
            accounts.c.id,
            communities.c.slug,
            func.coalesce(func.sum(case((amount < 0, -amount), else_=0)), 0),
            func.coalesce(func.sum(case((amount > 0, amount), else_=0)), 0),
        )
        .select_from(accounts)
        .join(communities, communities.c.id == accounts.c.community_id)
        .outerjoin(
            entries,
            (entries.c.account_id == accounts.c.id)
            & (true() if as_of is None else entries.c.at <= as_of),
        )
        .where(accounts.c.currency_id == currency_id, accounts.c.type == "issuance")
        .group_by(accounts.c.id, communities.c.slug)
        .order_by(accounts.c.id)
    )
    return [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in connection.execute(statement)]


def list_currencies(connection: Connection) -> Sequence[RowMapping]:
    return connection.execute(_CURRENCY_WITH_ISSUER.order_by(currencies.c.code)).mappings().all()


# -- accounts ---------------------------------------------------------------------------

_ACCOUNT_COLUMNS = (
    select(
        accounts,
        communities.c.slug.label("community_slug"),
        currencies.c.code.label("currency_code"),
    )
    .join(communities, communities.c.id == accounts.c.community_id)
    .join(currencies, currencies.c.id == accounts.c.currency_id)
)


def insert_account(connection: Connection, values: dict[str, Any]) -> int:
    return int(connection.execute(insert(accounts).returning(accounts.c.id), values).scalar_one())


def account_by_id(connection: Connection, account_id: int) -> RowMapping | None:
    return (
        connection.execute(_ACCOUNT_COLUMNS.where(accounts.c.id == account_id)).mappings().first()
    )


def _overdue_hold_sum(column: Any, at: str) -> Any:
    """The amount still held on the outer query's account by holds created by ``at`` whose
    deadline is <= ``at``. Expiry is applied by the next write that touches the account
    (or by the expirer); until then reads subtract these, so no read shows a lapsed hold."""
    # PostgreSQL sums BIGINT as NUMERIC; amounts stay integers.
    return (
        select(func.coalesce(func.sum(column), 0).cast(BigInteger))
        .where(
            holds.c.account_id == accounts.c.id,
            holds.c.expires_at <= bindparam(at),
            holds.c.created_at <= bindparam(at),
        )
        .scalar_subquery()
    )


# Reads answer in one statement (one round trip on PostgreSQL): the account, or its
# history row as of an instant, with the holds that had lapsed by then.
_ACCOUNT_WITH_OVERDUE = _ACCOUNT_COLUMNS.add_columns(
    _overdue_hold_sum(holds.c.debits, "at").label("overdue_debits"),
    _overdue_hold_sum(holds.c.credits, "at").label("overdue_credits"),
).where(accounts.c.id == bindparam("account_id"))

_LATEST_ENTRY = (
    select(entries.c.balance_posted, entries.c.debits_pending, entries.c.credits_pending)
    .where(entries.c.account_id == bindparam("account_id"), entries.c.at <= bindparam("at"))
    .order_by(entries.c.at.desc(), entries.c.id.desc())
    .limit(1)
    .subquery("latest")
)
_BALANCE_AS_OF = (
    select(
        _LATEST_ENTRY,
        _overdue_hold_sum(holds.c.debits, "held_at").label("overdue_debits"),
        _overdue_hold_sum(holds.c.credits, "held_at").label("overdue_credits"),
    )
    .select_from(accounts.outerjoin(_LATEST_ENTRY, true()))
    .where(accounts.c.id == bindparam("account_id"))
)


def account_with_overdue_holds(
    connection: Connection, account_id: int, at: dt.datetime
) -> RowMapping | None:
    """The account with ``overdue_debits`` and ``overdue_credits``: what holds past their
    deadline at ``at`` still hold on it (reads subtract them)."""
    parameters = {"account_id": account_id, "at": at}
    return connection.execute(_ACCOUNT_WITH_OVERDUE, parameters).mappings().first()


def balance_as_of(
    connection: Connection, account_id: int, at: dt.datetime, held_at: dt.datetime
) -> RowMapping | None:
    """The account's newest history row at or before ``at`` (its columns NULL when it has
    none yet) with the holds lapsed by ``held_at``; None when there is no such account."""
    parameters = {"account_id": account_id, "at": at, "held_at": held_at}
    return connection.execute(_BALANCE_AS_OF, parameters).mappings().first()


def account_name_taken(
    connection: Connection, community_id: int, currency_id: int, name: str
) -> bool:
    statement = select(accounts.c.id).where(
        accounts.c.community_id == community_id,
        accounts.c.currency_id == currency_id,
        accounts.c.name == name,
    )
    return connection.execute(statement).first() is not None


def list_accounts(
    connection: Connection,
    *,
    community_id: int | None,
    currency_id: int | None,
    account_type: str | None,
    after_id: int | None,
    limit: int,
) -> Sequence[RowMapping]:
    statement = _ACCOUNT_COLUMNS.order_by(accounts.c.id).limit(limit)
    if community_id is not None:
        statement = statement.where(accounts.c.community_id == community_id)
    if currency_id is not None:
        statement = statement.where(accounts.c.currency_id == currency_id)
    if account_type is not None:
        statement = statement.where(accounts.c.type == account_type)
    if after_id is not None:
        statement = statement.where(accounts.c.id > after_id)
    return connection.execute(statement).mappings().all()


class LockedRow(NamedTuple):
    id: int
    community_id: int
    currency_id: int
    code: str
    status: str
    min_balance: int | None
    max_balance: int | None
    balance_posted: int
    debits_pending: int
    credits_pending: int
    last_entry_at: dt.datetime | None
    type: str
    community_status: str
    circulation_cap: int | None


def lock_accounts(connection: Connection, account_ids: Iterable[int]) -> list[LockedRow]:
    """Read and lock accounts in ascending id order: the one global lock order.

    On PostgreSQL rows are locked in the ``ORDER BY`` order (the lock step runs above the
    sort), so two writers touching overlapping accounts queue on the lowest shared id
    instead of deadlocking. On SQLite ``FOR UPDATE`` is left out: BEGIN IMMEDIATE already
    holds the database's write lock.
    """
    ids = sorted(set(account_ids))
    if not ids:
        return []
    listed, parameters = in_list("id", ids)
    lock = " FOR UPDATE OF accounts" if connection.dialect.name == "postgresql" else ""
    rows = raw(connection).fetch(f"{_LOCK_SELECT}{listed} ORDER BY accounts.id{lock}", parameters)
    return [
        LockedRow(*row[:10], None if row[10] is None else from_micros(row[10]), *row[11:])  # type: ignore[call-arg]
        for row in rows
    ]


_LOCK_SELECT = (
    "SELECT accounts.id, accounts.community_id, accounts.currency_id, currencies.code, "
    "accounts.status, accounts.min_balance, accounts.max_balance, accounts.balance_posted, "
    "accounts.debits_pending, accounts.credits_pending, accounts.last_entry_at, accounts.type, "
    "communities.status, currencies.circulation_cap FROM accounts "
    "JOIN currencies ON currencies.id = accounts.currency_id "
    "JOIN communities ON communities.id = accounts.community_id WHERE accounts.id IN "
)


def update_account_balances(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        raw(connection).run_many(
            "UPDATE accounts SET balance_posted = :new_posted, debits_pending = "
            ":new_debits_pending, "
            "credits_pending = :new_credits_pending, last_entry_at = :new_last_entry_at WHERE id "
            "= :account_id",
            [
                {**row, "new_last_entry_at": _micros_or_none(row["new_last_entry_at"])}
                for row in rows
            ],
        )


def update_account(connection: Connection, account_id: int, values: dict[str, Any]) -> None:
    connection.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


_ACCOUNT_COMMUNITIES_SQL = (
    "SELECT accounts.id, communities.slug FROM accounts"
    " JOIN communities ON communities.id = accounts.community_id WHERE accounts.id IN "
)


def account_communities(engine: Engine, account_ids: Sequence[int]) -> dict[int, str]:
    """Outside a unit of work: the API checks a treasurer's sources with it on its event
    loop (``fetch_outside_transaction``), and an account's community never changes."""
    if not account_ids:
        return {}
    listed, parameters = in_list("id", account_ids)
    rows = fetch_outside_transaction(engine, f"{_ACCOUNT_COMMUNITIES_SQL}{listed}", parameters)
    return {int(account_id): slug for account_id, slug in rows}


def account_ids_of_community(connection: Connection, community_id: int) -> Sequence[int]:
    statement = select(accounts.c.id).where(accounts.c.community_id == community_id)
    return connection.execute(statement).scalars().all()


# -- transactions -------------------------------------------------------------------------


# The wanted ids arrive as one parameter, and the lookup probes the unique index once per
# id: no stored transaction is tested against the whole list. PostgreSQL gets them as an
# array, joined as rows: an IN list of 8,190 parameters, once psycopg prepares it, can get
# a generic plan that compares every stored transaction with every id (minutes at a
# million transactions); so can ``client_id = ANY(:ids)`` when stale statistics make the
# planner probe the index by scope alone and test each row against the unhashed array
# (seen: 0.6 s per batch at 5,000 transactions on a connection that had posted single
# transfers). SQLite gets them as a JSON array: an expanding IN cost SQLAlchemy a bound
# parameter per id to render and process, 4% of a batch of 8,190.
_WANTED_CLIENT_IDS = (
    func.unnest(bindparam("client_ids", type_=postgresql.ARRAY(String)))
    .table_valued("client_id")
    .render_derived("wanted")
)
_TRANSACTIONS_BY_CLIENT_ID_ARRAY = select(transactions).join(
    _WANTED_CLIENT_IDS,
    and_(
        transactions.c.idempotency_scope == bindparam("scope"),
        transactions.c.client_id == _WANTED_CLIENT_IDS.c.client_id,
    ),
)
# SQLite lists the subquery's ids, then seeks the unique index once per id (a join with
# json_each scanned every stored transaction of the scope instead). json_each is built into
# SQLite since 3.38 and compiled into the usual builds before it.
_TRANSACTIONS_BY_CLIENT_ID_JSON = select(transactions).where(
    transactions.c.idempotency_scope == bindparam("scope"),
    transactions.c.client_id.in_(
        select(func.json_each(bindparam("client_ids")).table_valued("value").c.value)
    ),
)


def transactions_by_client_id(
    connection: Connection, scope: str, client_ids: Sequence[str]
) -> Sequence[RowMapping]:
    on_postgresql = connection.dialect.name == "postgresql"
    statement = (
        _TRANSACTIONS_BY_CLIENT_ID_ARRAY if on_postgresql else _TRANSACTIONS_BY_CLIENT_ID_JSON
    )
    wanted: list[str] | str = list(client_ids) if on_postgresql else json.dumps(list(client_ids))
    return connection.execute(statement, {"scope": scope, "client_ids": wanted}).mappings().all()


def insert_transactions(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    if len(rows) == 1:
        values = _transaction_storage(rows[0])
        return [int(raw(connection).fetch(_INSERT_TRANSACTION_SQL, values)[0][0])]
    # Many rows: take their ids first, then insert them without RETURNING (``run_many``;
    # SQLite cannot promise RETURNING order for a multi-row insert).
    ids = _reserve_transaction_ids(connection, len(rows))
    stored = [_transaction_storage(row) for row in rows]
    for values, id_ in zip(stored, ids, strict=True):
        values["id"] = id_
    raw(connection).run_many(_INSERT_TRANSACTION_WITH_ID_SQL, stored)
    return ids


def _reserve_transaction_ids(connection: Connection, count: int) -> list[int]:
    if connection.dialect.name == "postgresql":
        rows = raw(connection).fetch(
            "SELECT nextval(pg_get_serial_sequence('transactions', 'id')) "
            "FROM generate_series(1, :count)",
            {"count": count},
        )
        return [int(row[0]) for row in rows]
    # SQLite: the write lock (BEGIN IMMEDIATE) is held, so no one else takes ids meanwhile.
    (last,) = raw(connection).fetch("SELECT COALESCE(MAX(id), 0) FROM transactions", {})[0]
    return list(range(int(last) + 1, int(last) + 1 + count))


def _transaction_storage(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "metadata": "null" if row["metadata"] is None else json.dumps(row["metadata"]),
        "effective_date": None
        if row["effective_date"] is None
        else row["effective_date"].isoformat(),
        "created_at": to_micros(row["created_at"]),
        "expires_at": _micros_or_none(row["expires_at"]),
        "resolved_at": _micros_or_none(row["resolved_at"]),
    }


_INSERT_TRANSACTION_WITH_ID_SQL = (
    "INSERT INTO transactions (id, idempotency_scope, client_id, request_hash, status, memo, "
    "category, external_ref, metadata, effective_date, created_at, expires_at, resolved_at, "
    "reverses_id, reversed_by_id) VALUES (:id, :idempotency_scope, :client_id, :request_hash, "
    ":status, :memo, :category, :external_ref, :metadata, :effective_date, :created_at, "
    ":expires_at, :resolved_at, :reverses_id, :reversed_by_id)"
)
_INSERT_TRANSACTION_SQL = (
    "INSERT INTO transactions (idempotency_scope, client_id, request_hash, status, memo, category, "
    "external_ref, metadata, effective_date, created_at, expires_at, resolved_at, reverses_id, "
    "reversed_by_id) VALUES (:idempotency_scope, :client_id, :request_hash, :status, :memo, "
    ":category, "
    ":external_ref, :metadata, :effective_date, :created_at, :expires_at, :resolved_at, "
    ":reverses_id, "
    ":reversed_by_id) RETURNING id"
)


def insert_postings(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        raw(connection).run_many(
            'INSERT INTO postings (transaction_id, "index", source_account_id, '
            "destination_account_id, currency_id, amount, amount_posted) VALUES (:transaction_id, "
            ":index, :source_account_id, :destination_account_id, :currency_id, :amount, "
            ":amount_posted)",
            rows,
        )


def insert_entries(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """History rows already in storage form (``at`` in microseconds, ``kind`` as text):
    the service builds them so, one per posting side, and a batch builds thousands."""
    if rows:
        raw(connection).run_many(
            "INSERT INTO entries (account_id, community_id, transaction_id, "
            "counterparty_account_id, kind, at, "
            "amount, debits_pending_change, credits_pending_change, balance_posted, "
            "debits_pending, "
            "credits_pending) VALUES (:account_id, :community_id, :transaction_id, "
            ":counterparty_account_id, "
            ":kind, :at, :amount, :debits_pending_change, :credits_pending_change, "
            ":balance_posted, "
            ":debits_pending, :credits_pending)",
            rows,
        )


def insert_holds(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        raw(connection).run_many(
            "INSERT INTO holds (transaction_id, account_id, debits, credits, created_at, "
            "expires_at) "
            "VALUES (:transaction_id, :account_id, :debits, :credits, :created_at, :expires_at)",
            [
                {
                    **row,
                    "created_at": to_micros(row["created_at"]),
                    "expires_at": _micros_or_none(row["expires_at"]),
                }
                for row in rows
            ],
        )


def delete_holds(connection: Connection, transaction_id: int) -> None:
    connection.execute(delete(holds).where(holds.c.transaction_id == transaction_id))


def transaction_by_id(
    connection: Connection, transaction_id: int, *, lock: bool = False
) -> RowMapping | None:
    statement = select(transactions).where(transactions.c.id == transaction_id)
    if lock:
        statement = statement.with_for_update()
    return connection.execute(statement).mappings().first()


def update_transaction(connection: Connection, transaction_id: int, values: dict[str, Any]) -> None:
    connection.execute(
        update(transactions).where(transactions.c.id == transaction_id).values(**values)
    )


def update_postings_posted(connection: Connection, rows: list[dict[str, Any]]) -> None:
    statement = (
        update(postings)
        .where(postings.c.id == bindparam("posting_id"))
        .values(amount_posted=bindparam("posted"))
    )
    connection.execute(statement, rows)


_POSTINGS_OF = (
    select(postings, currencies.c.code.label("currency_code"))
    .join(currencies, currencies.c.id == postings.c.currency_id)
    .where(postings.c.transaction_id.in_(bindparam("ids", expanding=True)))
    .order_by(postings.c.transaction_id, postings.c.index)
)


def postings_of(connection: Connection, transaction_ids: Sequence[int]) -> Sequence[RowMapping]:
    if not transaction_ids:
        return []
    return connection.execute(_POSTINGS_OF, {"ids": list(transaction_ids)}).mappings().all()


def transactions_by_ids(
    connection: Connection, transaction_ids: Sequence[int]
) -> Sequence[RowMapping]:
    statement = select(transactions).where(transactions.c.id.in_(bindparam("ids", expanding=True)))
    return connection.execute(statement, {"ids": list(transaction_ids)}).mappings().all()


def list_transactions(
    connection: Connection,
    *,
    community_id: int | None,
    account_id: int | None,
    category: str | None,
    status: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    after: tuple[dt.datetime, int] | None,
    limit: int,
) -> Sequence[RowMapping]:
    """Transactions in ledger order (created_at, id), filtered; ``after`` is the cursor key."""
    statement = (
        select(transactions).order_by(transactions.c.created_at, transactions.c.id).limit(limit)
    )
    if account_id is not None:
        touching = select(entries.c.transaction_id).where(entries.c.account_id == account_id)
        statement = statement.where(transactions.c.id.in_(touching))
    if community_id is not None:
        touching = select(entries.c.transaction_id).where(entries.c.community_id == community_id)
        statement = statement.where(transactions.c.id.in_(touching))
    if category is not None:
        # "care" matches care:childcare and care:elders; "care:childcare" matches itself.
        statement = statement.where(
            or_(
                transactions.c.category == category,
                # autoescape: a % or _ in the filter is itself, not a wildcard.
                transactions.c.category.startswith(category + ":", autoescape=True),
            )
        )
    if status is not None:
        statement = statement.where(transactions.c.status == status)
        if status != "posted":
            # SQLite uses a partial index only when the query repeats its condition with a
            # literal, never a parameter: see ``tables.UNPOSTED``.
            statement = statement.where(transactions.c.status != literal_column("'posted'"))
    if since is not None:
        statement = statement.where(transactions.c.created_at >= since)
    if until is not None:
        statement = statement.where(transactions.c.created_at < until)
    if after is not None:
        after_at, transaction_id = after
        statement = statement.where(
            *_after_cursor(transactions.c.created_at, transactions.c.id, after_at, transaction_id)
        )
    return connection.execute(statement).mappings().all()


# -- holds and expiry -----------------------------------------------------------------------

_OVERDUE_ON_ACCOUNTS = select(holds.c.transaction_id).where(
    holds.c.account_id.in_(bindparam("ids", expanding=True)),
    holds.c.expires_at <= bindparam("at"),
)


def overdue_hold_transactions(
    connection: Connection, account_ids: Sequence[int], at: dt.datetime
) -> set[int]:
    rows = connection.execute(_OVERDUE_ON_ACCOUNTS, {"ids": list(account_ids), "at": at})
    return {int(row[0]) for row in rows}


def all_overdue_hold_transactions(
    connection: Connection, at: dt.datetime, limit: int
) -> Sequence[int]:
    statement = (
        select(holds.c.transaction_id, func.min(holds.c.expires_at).label("due"))
        .where(holds.c.expires_at <= at)
        .group_by(holds.c.transaction_id)
        .order_by("due", holds.c.transaction_id)
        .limit(limit)
    )
    return [int(row[0]) for row in connection.execute(statement)]


def overdue_hold_totals_by_account(
    connection: Connection, account_ids: Sequence[int], at: dt.datetime
) -> dict[int, tuple[int, int]]:
    statement = (
        select(holds.c.account_id, func.sum(holds.c.debits), func.sum(holds.c.credits))
        .where(holds.c.account_id.in_(bindparam("ids", expanding=True)), holds.c.expires_at <= at)
        .group_by(holds.c.account_id)
    )
    rows = connection.execute(statement, {"ids": list(account_ids)})
    return {int(row[0]): (int(row[1]), int(row[2])) for row in rows}


# -- history --------------------------------------------------------------------------------


class StatementRow(NamedTuple):
    """One history row of a statement page as stored (``at`` in microseconds, ``kind`` as
    its text), with its transaction's memo, category and effective date."""

    id: int
    transaction_id: int
    kind: str
    at: int
    amount: int
    debits_pending_change: int
    credits_pending_change: int
    balance_posted: int
    debits_pending: int
    credits_pending: int
    counterparty_account_id: int
    memo: str | None
    category: str | None
    effective_date: dt.date | None


# The columns a statement line takes from its transaction: StatementRow's last fields.
_STATEMENT_TRANSACTION_COLUMNS = ("memo", "category", "effective_date")


def statement_page(
    connection: Connection,
    account_id: int,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    after: tuple[dt.datetime, int] | None,
    limit: int,
) -> list[StatementRow]:
    """Up to ``limit`` rows of the account's history in (at, id) order. Read on the
    driver's cursor: SQLAlchemy's processing of a 50-row result cost more than the query
    (issue 7's reads), and a page's cost is what a statement read is."""
    sql = _statement_page_sql(since is not None, until is not None, after is not None)
    parameters: dict[str, Any] = {"account_id": account_id, "limit": limit}
    if since is not None:
        parameters["since"] = to_micros(since)
    if until is not None:
        parameters["until"] = to_micros(until)
    if after is not None:
        parameters["after_at"], parameters["after_id"] = to_micros(after[0]), after[1]
    rows = raw(connection).fetch(sql, parameters)
    lines = [StatementRow._make(row) for row in rows]
    if connection.dialect.name == "sqlite":  # where a Date is kept as its ISO text
        lines = [
            line
            if line.effective_date is None
            else line._replace(effective_date=dt.date.fromisoformat(str(line.effective_date)))
            for line in lines
        ]
    return lines


@cache
def _statement_page_sql(since: bool, until: bool, after: bool) -> str:
    """The statement page's SQL for one combination of filters, compiled once and for no
    database in particular: the query is portable SQL with ``:name`` parameters (no
    reserved words, no dialect's operators), as ``Raw`` expects."""
    from_entries = StatementRow._fields[: -len(_STATEMENT_TRANSACTION_COLUMNS)]
    statement = (
        select(
            *(entries.c[name] for name in from_entries),
            *(transactions.c[name] for name in _STATEMENT_TRANSACTION_COLUMNS),
        )
        .join(transactions, transactions.c.id == entries.c.transaction_id)
        .where(entries.c.account_id == bindparam("account_id"))
        .order_by(entries.c.at, entries.c.id)
        .limit(bindparam("limit"))
    )
    if since:
        statement = statement.where(entries.c.at >= bindparam("since"))
    if until:
        statement = statement.where(entries.c.at < bindparam("until"))
    if after:
        statement = statement.where(
            *_after_cursor(entries.c.at, entries.c.id, bindparam("after_at"), bindparam("after_id"))
        )
    return str(statement.compile())


def _after_cursor(at_column: Any, id_column: Any, at: Any, row_id: Any) -> tuple[Any, Any]:
    """The rows after a page's cursor (at, id), in (at, id) order. The first condition
    alone is what an index on (…, at) can seek to: the OR on its own would make PostgreSQL
    read from the start of the range up to the cursor, so a later page would cost more the
    longer the history."""
    return at_column >= at, or_(at_column > at, and_(at_column == at, id_column > row_id))


# -- the event feed --------------------------------------------------------------------------


def reserve_event_sequences(connection: Connection, count: int) -> int:
    """Reserve ``count`` feed positions and return the first.

    Why this gives commit order: the counter row is updated as the last write of every
    unit of work, and its row lock is held until that unit commits. A second writer
    blocks on the row until the first has committed, then reads the new value. So
    positions are handed out in the order transactions commit, without gaps, and a
    position becomes visible only after every smaller one already is. A reader that
    follows ``sequence > cursor`` therefore never misses an event and never sees one
    twice, even when PostgreSQL writers on disjoint accounts run concurrently. The cost
    is that commits queue on this one row for the length of a commit; it is the price of
    an exact order, and far cheaper than serializing whole transactions.
    """
    statement = "UPDATE counters SET value = value + :count WHERE name = :name RETURNING value"
    last = int(raw(connection).fetch(statement, {"count": count, "name": EVENT_COUNTER})[0][0])
    return last - count + 1


def insert_events(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        raw(connection).run_many(
            "INSERT INTO events (sequence, kind, at, transaction_id, account_id, community_ids) "
            "VALUES (:sequence, :kind, :at, :transaction_id, :account_id, :community_ids)",
            [
                {
                    **row,
                    "at": to_micros(row["at"]),
                    "community_ids": _json_ids(tuple(row["community_ids"])),
                }
                for row in rows
            ],
        )


@lru_cache(maxsize=4_096)
def _json_ids(ids: tuple[int, ...]) -> str:
    """A batch's events name a few community sets over and over: encode each once."""
    return json.dumps(list(ids))


def events_after(connection: Connection, after: int, limit: int) -> Sequence[RowMapping]:
    statement = (
        select(events).where(events.c.sequence > after).order_by(events.c.sequence).limit(limit)
    )
    return connection.execute(statement).mappings().all()


def last_event_sequence(connection: Connection) -> int:
    return int(
        connection.execute(select(func.coalesce(func.max(events.c.sequence), 0))).scalar_one()
    )


# -- verification (read-only sweeps over the whole store) ----------------------------------


def currency_sums(connection: Connection) -> Sequence[Any]:
    statement = (
        select(
            currencies.c.code,
            func.coalesce(func.sum(accounts.c.balance_posted), 0),
            func.coalesce(func.sum(accounts.c.debits_pending), 0),
            func.coalesce(func.sum(accounts.c.credits_pending), 0),
        )
        .select_from(currencies.outerjoin(accounts, accounts.c.currency_id == currencies.c.id))
        .group_by(currencies.c.code)
        .order_by(currencies.c.code)
    )
    return connection.execute(statement).all()


def count_entries(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(entries)).scalar_one())


def stream_history(connection: Connection, chunk: int) -> Iterator[Sequence[tuple[int, ...]]]:
    """Every history row in (account_id, at, id) order, ``chunk`` rows at a time (a
    server-side cursor on PostgreSQL), as (id, account_id, transaction_id, amount,
    debits_pending_change, credits_pending_change, balance_posted, debits_pending,
    credits_pending, at): ``at`` in stored microseconds, since ``verify`` walks millions
    of rows and converting each would cost more than the walk."""
    statement = select(
        entries.c.id,
        entries.c.account_id,
        entries.c.transaction_id,
        entries.c.amount,
        entries.c.debits_pending_change,
        entries.c.credits_pending_change,
        entries.c.balance_posted,
        entries.c.debits_pending,
        entries.c.credits_pending,
        type_coerce(entries.c.at, BigInteger),
    ).order_by(entries.c.account_id, entries.c.at, entries.c.id)
    result = connection.execution_options(yield_per=chunk).execute(statement)
    for partition in result.partitions():
        yield cast(Sequence[tuple[int, ...]], partition)


def all_accounts(connection: Connection) -> Sequence[Any]:
    return connection.execute(
        select(accounts, currencies.c.code.label("currency_code"))
        .join(currencies, currencies.c.id == accounts.c.currency_id)
        .order_by(accounts.c.id)
    ).all()


def posting_totals_by_account(connection: Connection) -> dict[int, tuple[int, int, int]]:
    """(posted, debits_pending, credits_pending) per account, recomputed from postings."""
    moved = func.coalesce(postings.c.amount_posted, postings.c.amount)
    totals: dict[int, list[int]] = {}
    for side, sign in ((postings.c.destination_account_id, 1), (postings.c.source_account_id, -1)):
        posted = connection.execute(
            select(side, func.sum(moved))
            .join(transactions, transactions.c.id == postings.c.transaction_id)
            .where(transactions.c.status == "posted")
            .group_by(side)
        )
        for account_id, amount in posted:
            totals.setdefault(int(account_id), [0, 0, 0])[0] += sign * int(amount)
        pending = connection.execute(
            select(side, func.sum(postings.c.amount))
            .join(transactions, transactions.c.id == postings.c.transaction_id)
            .where(transactions.c.status == "pending")
            .group_by(side)
        )
        for account_id, amount in pending:
            totals.setdefault(int(account_id), [0, 0, 0])[1 if sign < 0 else 2] += int(amount)
    return {account_id: (t[0], t[1], t[2]) for account_id, t in totals.items()}


def hold_totals_by_account(connection: Connection) -> dict[int, tuple[int, int]]:
    rows = connection.execute(
        select(holds.c.account_id, func.sum(holds.c.debits), func.sum(holds.c.credits)).group_by(
            holds.c.account_id
        )
    )
    return {int(row[0]): (int(row[1]), int(row[2])) for row in rows}


def postings_with_wrong_currency(connection: Connection) -> Sequence[Any]:
    source = accounts.alias("source")
    destination = accounts.alias("destination")
    statement = (
        select(postings.c.transaction_id, postings.c.index)
        .join(source, source.c.id == postings.c.source_account_id)
        .join(destination, destination.c.id == postings.c.destination_account_id)
        .where(
            or_(
                source.c.currency_id != postings.c.currency_id,
                destination.c.currency_id != postings.c.currency_id,
            )
        )
    )
    return connection.execute(statement).all()


def broken_reversal_links(connection: Connection) -> Sequence[Any]:
    original = transactions.alias("original")
    statement = (
        select(transactions.c.id)
        .outerjoin(original, original.c.id == transactions.c.reverses_id)
        .where(
            transactions.c.reverses_id.is_not(None),
            or_(original.c.id.is_(None), original.c.reversed_by_id != transactions.c.id),
        )
    )
    return connection.execute(statement).all()
