"""Every query of ``ledger/`` lives here. Services hold the logic; this module holds SQL.

Statements are SQLAlchemy Core, built once at import so their compiled form is cached:
the posting path runs a handful of them per transaction and nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import (
    Connection,
    RowMapping,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

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


def currency_by_code(connection: Connection, code: str) -> RowMapping | None:
    statement = _CURRENCY_WITH_ISSUER.where(currencies.c.code == code)
    return connection.execute(statement).mappings().first()


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


_LOCK_ACCOUNTS = (
    select(
        accounts.c.id,
        accounts.c.community_id,
        accounts.c.currency_id,
        currencies.c.code,
        accounts.c.status,
        accounts.c.min_balance,
        accounts.c.max_balance,
        accounts.c.balance_posted,
        accounts.c.debits_pending,
        accounts.c.credits_pending,
        accounts.c.last_entry_at,
    )
    .join(currencies, currencies.c.id == accounts.c.currency_id)
    .where(accounts.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(accounts.c.id)
    .with_for_update(of=accounts)
)


def lock_accounts(connection: Connection, account_ids: Iterable[int]) -> Sequence[Any]:
    """Read and lock accounts in ascending id order: the one global lock order.

    On PostgreSQL ``FOR UPDATE`` rows are locked as the ordered scan reaches them, so two
    writers touching overlapping accounts queue on the lowest shared id instead of
    deadlocking. On SQLite the clause is dropped: BEGIN IMMEDIATE already holds the lock.
    """
    return connection.execute(_LOCK_ACCOUNTS, {"ids": sorted(set(account_ids))}).all()


_UPDATE_ACCOUNT_BALANCE = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(
        balance_posted=bindparam("new_posted"),
        debits_pending=bindparam("new_debits_pending"),
        credits_pending=bindparam("new_credits_pending"),
        last_entry_at=bindparam("new_last_entry_at"),
    )
)


def update_account_balances(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_UPDATE_ACCOUNT_BALANCE, rows)


def update_account(connection: Connection, account_id: int, values: dict[str, Any]) -> None:
    connection.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def account_communities(connection: Connection, account_ids: Sequence[int]) -> dict[int, str]:
    statement = (
        select(accounts.c.id, communities.c.slug)
        .join(communities, communities.c.id == accounts.c.community_id)
        .where(accounts.c.id.in_(bindparam("ids", expanding=True)))
    )
    return {
        int(row[0]): row[1] for row in connection.execute(statement, {"ids": list(account_ids)})
    }


def account_ids_of_community(connection: Connection, community_id: int) -> Sequence[int]:
    statement = select(accounts.c.id).where(accounts.c.community_id == community_id)
    return connection.execute(statement).scalars().all()


# -- transactions -------------------------------------------------------------------------


_TRANSACTIONS_BY_CLIENT_ID = select(transactions).where(
    transactions.c.idempotency_scope == bindparam("scope"),
    transactions.c.client_id.in_(bindparam("client_ids", expanding=True)),
)
_INSERT_TRANSACTIONS = insert(transactions).returning(
    transactions.c.id, sort_by_parameter_order=True
)
_INSERT_POSTINGS = insert(postings)
_INSERT_ENTRIES = insert(entries)
_INSERT_HOLDS = insert(holds)
_INSERT_EVENTS = insert(events)


def transactions_by_client_id(
    connection: Connection, scope: str, client_ids: Sequence[str]
) -> Sequence[RowMapping]:
    parameters = {"scope": scope, "client_ids": list(client_ids)}
    return connection.execute(_TRANSACTIONS_BY_CLIENT_ID, parameters).mappings().all()


def insert_transactions(connection: Connection, rows: list[dict[str, Any]]) -> list[int]:
    return [int(value) for value in connection.execute(_INSERT_TRANSACTIONS, rows).scalars().all()]


def insert_postings(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_INSERT_POSTINGS, rows)


def insert_entries(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_INSERT_ENTRIES, rows)


def insert_holds(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_INSERT_HOLDS, rows)


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
                transactions.c.category.startswith(category + ":"),
            )
        )
    if status is not None:
        statement = statement.where(transactions.c.status == status)
    if since is not None:
        statement = statement.where(transactions.c.created_at >= since)
    if until is not None:
        statement = statement.where(transactions.c.created_at < until)
    if after is not None:
        after_at, transaction_id = after
        statement = statement.where(
            or_(
                transactions.c.created_at > after_at,
                and_(transactions.c.created_at == after_at, transactions.c.id > transaction_id),
            )
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


def overdue_hold_totals(
    connection: Connection, account_id: int, at: dt.datetime
) -> tuple[int, int]:
    """Debits and credits still held on the account by holds whose deadline is <= at.

    Expiry is applied by the next write that touches the account (or by the expirer);
    until then reads subtract these so that no read ever shows an expired hold.
    """
    statement = select(
        func.coalesce(func.sum(holds.c.debits), 0), func.coalesce(func.sum(holds.c.credits), 0)
    ).where(
        holds.c.account_id == account_id,
        holds.c.expires_at <= at,
        holds.c.created_at <= at,
    )
    debits, credits = connection.execute(statement).one()
    return int(debits), int(credits)


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


def entry_at_or_before(
    connection: Connection, account_id: int, at: dt.datetime
) -> RowMapping | None:
    statement = (
        select(entries.c.balance_posted, entries.c.debits_pending, entries.c.credits_pending)
        .where(entries.c.account_id == account_id, entries.c.at <= at)
        .order_by(entries.c.at.desc(), entries.c.id.desc())
        .limit(1)
    )
    return connection.execute(statement).mappings().first()


def statement_page(
    connection: Connection,
    account_id: int,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    after: tuple[dt.datetime, int] | None,
    limit: int,
) -> Sequence[RowMapping]:
    statement = (
        select(
            entries,
            transactions.c.memo,
            transactions.c.category,
            transactions.c.effective_date,
        )
        .join(transactions, transactions.c.id == entries.c.transaction_id)
        .where(entries.c.account_id == account_id)
        .order_by(entries.c.at, entries.c.id)
        .limit(limit)
    )
    if since is not None:
        statement = statement.where(entries.c.at >= since)
    if until is not None:
        statement = statement.where(entries.c.at < until)
    if after is not None:
        after_at, entry_id = after
        statement = statement.where(
            or_(entries.c.at > after_at, and_(entries.c.at == after_at, entries.c.id > entry_id))
        )
    return connection.execute(statement).mappings().all()


# -- the event feed --------------------------------------------------------------------------


_RESERVE_EVENTS = (
    update(counters)
    .where(counters.c.name == EVENT_COUNTER)
    .values(value=counters.c.value + bindparam("count"))
    .returning(counters.c.value)
)


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
    last = int(connection.execute(_RESERVE_EVENTS, {"count": count}).scalar_one())
    return last - count + 1


def insert_events(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(_INSERT_EVENTS, rows)


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


def stream_entries(connection: Connection, chunk: int) -> Iterable[Any]:
    """Every history row in (account_id, at, id) order, fetched ``chunk`` rows at a time."""
    statement = select(entries).order_by(entries.c.account_id, entries.c.at, entries.c.id)
    result = connection.execution_options(yield_per=chunk).execute(statement)
    yield from result


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
