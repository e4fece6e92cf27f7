"""PostgreSQL under the engine: pooled connections replaced after the server dropped them,
and the plan of a batch's client-id lookup."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from ledger import database
from ledger import repository as repo
from ledger.database import unit_of_work
from ledger.service import Ledger
from tests.conftest import POSTGRES_ADMIN_URL
from tests.ledger.builders import pay, village

pytestmark = pytest.mark.postgres_only


def _backend(engine: Engine) -> int:
    with unit_of_work(engine, write=False) as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(backend: int) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))


def test_an_idle_connection_the_server_dropped_is_replaced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = _backend(engine)
    _terminate(dropped)
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert _backend(engine) != dropped  # pinged, found dead, replaced: the request succeeds
    with unit_of_work(engine, write=True) as connection:  # and writes work on it
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_a_connection_in_steady_use_is_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 3600.0)
    dropped = _backend(engine)
    _terminate(dropped)
    # No round trip before use: the loss shows on the first statement, as it would for a
    # connection dropped mid-request, and the pool then starts afresh.
    with pytest.raises(OperationalError):
        _backend(engine)
    assert _backend(engine) != dropped


def _rows_removed_by_filters(plan: dict[str, Any]) -> int:
    return (
        int(plan.get("Rows Removed by Filter", 0))
        + int(plan.get("Rows Removed by Join Filter", 0))
        + sum(_rows_removed_by_filters(child) for child in plan.get("Plans", []))
    )


def test_a_batchs_client_id_lookup_never_tests_every_row_against_every_id(
    ledger: Ledger, engine: Engine
) -> None:
    """The lookup a batch makes runs, on a connection that has posted before, as a
    prepared statement with a generic plan, on statistics that lag behind the table. Under
    those, ``client_id = ANY(:ids)`` was planned as an index scan by scope alone that tested
    every stored transaction against the whole unhashed list: 8,190 ids times every
    transaction. Looked up as joined rows, no stored transaction is filtered out."""
    v = village(ledger)
    ledger.post_transactions([pay(v.issuance, v.ana, 1, client_id=f"old-{i}") for i in range(300)])
    statement = (
        str(repo._TRANSACTIONS_BY_CLIENT_ID_ARRAY.compile(dialect=engine.dialect))
        .replace("%(client_ids)s", "$1")
        .replace("%(scope)s", "$2")
    )
    wanted = [f"old-{i}" for i in range(0, 300, 7)] + [f"new-{i}" for i in range(200)]
    with unit_of_work(engine, write=False) as connection:
        cursor = connection.connection.cursor()
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE lookup(varchar[], varchar) AS {statement}")
        cursor.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE lookup({}, {})").format(
                sql.Literal(wanted), sql.Literal("")
            )
        )
        ((explained,),) = cursor.fetchall()
        cursor.execute("DEALLOCATE lookup")
        cursor.execute("RESET plan_cache_mode")
    plan = explained[0]["Plan"]
    assert plan["Actual Rows"] == len(range(0, 300, 7))
    assert _rows_removed_by_filters(plan) == 0, json.dumps(plan, indent=1)
