"""Every query of ``exchange/``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, RowMapping, Table, func, insert, select, update

from exchange.tables import (
    ConversionRow,
    ExchangeSettingsRow,
    ProtocolVersionRow,
    QuoteRow,
    ReciprocityFlowRow,
    ValuationRow,
)
from ledger.repository import communities, currencies

settings_table = cast(Table, ExchangeSettingsRow.__table__)
valuations = cast(Table, ValuationRow.__table__)
protocol_versions = cast(Table, ProtocolVersionRow.__table__)
quotes = cast(Table, QuoteRow.__table__)
conversions = cast(Table, ConversionRow.__table__)


def settings(connection: Connection, *, lock: bool = False) -> RowMapping | None:
    """The settings row; ``lock`` takes it for the rest of the unit of work, which is how
    changes to valuations and protocols queue behind each other (see ``service``)."""
    statement = (
        select(
            settings_table,
            currencies.c.code.label("reference_unit"),
            communities.c.slug.label("federation_community"),
        )
        .join(currencies, currencies.c.id == settings_table.c.reference_currency_id)
        .join(communities, communities.c.id == settings_table.c.federation_community_id)
    )
    if lock:
        statement = statement.with_for_update(of=settings_table)
    return connection.execute(statement).mappings().first()


def any_flow_recorded(connection: Connection) -> bool:
    flows = cast(Table, ReciprocityFlowRow.__table__)
    return connection.execute(select(flows.c.transaction_id).limit(1)).first() is not None


def save_settings(connection: Connection, values: dict[str, Any]) -> None:
    if connection.execute(select(settings_table.c.id)).first() is None:
        connection.execute(insert(settings_table), {"id": 1, **values})
    else:
        connection.execute(update(settings_table).values(**values))


def insert_valuation(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(valuations), values)


def valuation_at(connection: Connection, currency_id: int, at: dt.datetime) -> RowMapping | None:
    """The valuation in force at ``at``: the latest to take effect among those recorded by
    then, so a valuation recorded with a past ``effective_from`` does not rewrite history."""
    statement = (
        select(valuations)
        .where(
            valuations.c.currency_id == currency_id,
            valuations.c.effective_from <= at,
            valuations.c.recorded_at <= at,
        )
        .order_by(valuations.c.effective_from.desc(), valuations.c.id.desc())
        .limit(1)
    )
    return connection.execute(statement).mappings().first()


def valuation_history(connection: Connection, currency_id: int) -> Sequence[RowMapping]:
    statement = (
        select(valuations)
        .where(valuations.c.currency_id == currency_id)
        .order_by(valuations.c.effective_from, valuations.c.id)
    )
    return connection.execute(statement).mappings().all()


def insert_protocol_version(connection: Connection, values: dict[str, Any]) -> int:
    statement = insert(protocol_versions).returning(protocol_versions.c.id)
    return int(connection.execute(statement, values).scalar_one())


def next_protocol_version(connection: Connection, from_id: int, to_id: int) -> int:
    statement = select(func.coalesce(func.max(protocol_versions.c.version), 0)).where(
        protocol_versions.c.from_currency_id == from_id, protocol_versions.c.to_currency_id == to_id
    )
    return int(connection.execute(statement).scalar_one()) + 1


def protocol_version_by_id(
    connection: Connection, version_id: int, *, lock: bool = False
) -> RowMapping | None:
    statement = select(protocol_versions).where(protocol_versions.c.id == version_id)
    if lock:
        statement = statement.with_for_update()
    return connection.execute(statement).mappings().first()


def protocol_in_force(
    connection: Connection, from_id: int, to_id: int, at: dt.datetime
) -> RowMapping | None:
    """The version in force at ``at``: the highest active version of the pair that had
    been activated and had taken effect by then. A version scheduled for later leaves the
    one before it in force until its ``effective_from``; a proposal approved after a newer
    version (a suspension, say) does not override it."""
    statement = (
        select(protocol_versions)
        .where(
            protocol_versions.c.from_currency_id == from_id,
            protocol_versions.c.to_currency_id == to_id,
            protocol_versions.c.state == "active",
            protocol_versions.c.activated_at <= at,
            protocol_versions.c.effective_from <= at,
        )
        .order_by(protocol_versions.c.version.desc())
        .limit(1)
    )
    return connection.execute(statement).mappings().first()


def protocol_scheduled(
    connection: Connection, from_id: int, to_id: int, at: dt.datetime
) -> RowMapping | None:
    """The first active version of the pair that takes effect after ``at``, if any."""
    statement = (
        select(protocol_versions)
        .where(
            protocol_versions.c.from_currency_id == from_id,
            protocol_versions.c.to_currency_id == to_id,
            protocol_versions.c.state == "active",
            protocol_versions.c.effective_from > at,
        )
        .order_by(protocol_versions.c.effective_from, protocol_versions.c.version)
        .limit(1)
    )
    return connection.execute(statement).mappings().first()


def changes_after(connection: Connection, at: dt.datetime) -> list[dt.datetime]:
    """The instants after ``at`` at which a recorded valuation or active protocol version
    takes effect: where the set of rates in force can next change."""
    instants = {
        *connection.execute(
            select(valuations.c.effective_from).where(valuations.c.effective_from > at)
        ).scalars(),
        *connection.execute(
            select(protocol_versions.c.effective_from).where(
                protocol_versions.c.state == "active", protocol_versions.c.effective_from > at
            )
        ).scalars(),
    }
    return sorted(instants)


def protocol_versions_of(connection: Connection, from_id: int, to_id: int) -> Sequence[RowMapping]:
    statement = (
        select(protocol_versions)
        .where(
            protocol_versions.c.from_currency_id == from_id,
            protocol_versions.c.to_currency_id == to_id,
        )
        .order_by(protocol_versions.c.version)
    )
    return connection.execute(statement).mappings().all()


def protocol_pairs(connection: Connection) -> Sequence[Any]:
    statement = select(
        protocol_versions.c.from_currency_id, protocol_versions.c.to_currency_id
    ).distinct()
    return connection.execute(statement).all()


def update_protocol_version(
    connection: Connection, version_id: int, values: dict[str, Any]
) -> None:
    connection.execute(
        update(protocol_versions).where(protocol_versions.c.id == version_id).values(**values)
    )


def insert_quote(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(quotes), values)


def quote_by_id(connection: Connection, quote_id: str, *, lock: bool = False) -> RowMapping | None:
    statement = select(quotes).where(quotes.c.id == quote_id)
    if lock:
        statement = statement.with_for_update()
    return connection.execute(statement).mappings().first()


def mark_quote_used(connection: Connection, quote_id: str, transaction_id: int) -> None:
    connection.execute(
        update(quotes).where(quotes.c.id == quote_id).values(transaction_id=transaction_id)
    )


def insert_conversion(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(conversions), values)


def converted_since(
    connection: Connection,
    from_id: int,
    to_id: int,
    *,
    account_id: int | None = None,
    community_id: int | None = None,
    since: dt.datetime,
) -> int:
    """Source units converted on the pair since an instant, by an account or a community."""
    statement = select(func.coalesce(func.sum(conversions.c.source_amount), 0)).where(
        conversions.c.from_currency_id == from_id,
        conversions.c.to_currency_id == to_id,
        conversions.c.at >= since,
    )
    if account_id is not None:
        statement = statement.where(conversions.c.payer_account_id == account_id)
    if community_id is not None:
        statement = statement.where(conversions.c.payer_community_id == community_id)
    return int(connection.execute(statement).scalar_one())


def conversion_by_transaction(connection: Connection, transaction_id: int) -> RowMapping | None:
    statement = select(conversions).where(conversions.c.transaction_id == transaction_id)
    return connection.execute(statement).mappings().first()
