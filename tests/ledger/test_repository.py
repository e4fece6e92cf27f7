"""Reads outside a unit of work (``repository.fetch_outside_transaction``): their rows,
their errors, and the pooled connection they give back as they found it; and the lookup of
a batch's client ids."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError

from ledger import repository as repo
from ledger.database import unit_of_work
from ledger.model import TransactionStatus
from ledger.service import Ledger
from tests.ledger.builders import hold, pay, village

BY_SLUG = "SELECT id, name FROM communities WHERE slug = :slug"


def test_it_returns_the_rows_of_one_statement(ledger: Ledger, engine: Engine) -> None:
    village(ledger)
    community = ledger.get_community("hilltop")
    assert repo.fetch_outside_transaction(engine, BY_SLUG, {"slug": "hilltop"}) == [
        (community.id, "Hilltop")
    ]
    assert repo.fetch_outside_transaction(engine, BY_SLUG, {"slug": "nowhere"}) == []


def test_a_failing_statement_raises_sqlalchemys_error(engine: Engine) -> None:
    with pytest.raises(DBAPIError):
        repo.fetch_outside_transaction(engine, "SELECT no_such_column FROM communities", {})
    # and the connection it used still serves
    assert repo.fetch_outside_transaction(engine, BY_SLUG, {"slug": "nowhere"}) == []


def test_account_communities_leaves_out_accounts_that_do_not_exist(
    ledger: Ledger, engine: Engine
) -> None:
    place = village(ledger)
    missing = place.hilltop_member + 1_000
    assert repo.account_communities(engine, [place.ana, place.hilltop_member, missing]) == {
        place.ana: "riverbend",
        place.hilltop_member: "hilltop",
    }
    assert ledger.communities_of_accounts([place.bo, place.bo, missing]) == {place.bo: "riverbend"}
    assert repo.account_communities(engine, []) == {}


@pytest.mark.postgres_only
@pytest.mark.parametrize("statement", [BY_SLUG, "SELECT no_such_column FROM communities"])
def test_the_pooled_connection_goes_back_out_of_autocommit(engine: Engine, statement: str) -> None:
    """The read runs in autocommit; a connection left that way would make the next unit of
    work on it commit every statement as it ran, and its rollback undo nothing."""
    engine.dispose()  # one pooled connection from here on: the next checkout is the same one
    with contextlib.suppress(DBAPIError):
        repo.fetch_outside_transaction(engine, statement, {"slug": "nowhere"})
    pooled = engine.raw_connection()
    try:
        assert pooled.driver_connection.autocommit is False  # type: ignore[union-attr]
    finally:
        pooled.close()
    with pytest.raises(RuntimeError):
        _write_then_fail(engine)
    with unit_of_work(engine, write=False) as connection:
        assert (
            connection.execute(text("SELECT to_regclass('written_then_rolled_back')")).scalar()
            is None
        )


def _write_then_fail(engine: Engine) -> None:
    with unit_of_work(engine, write=True) as connection:
        connection.execute(text("CREATE TABLE written_then_rolled_back (id integer)"))
        raise RuntimeError("the unit of work fails")


def test_the_client_id_lookup_finds_exactly_the_stored_ids_of_its_scope(
    ledger: Ledger, engine: Engine
) -> None:
    v = village(ledger)
    stored = ["t1", "42", "ünïcode ♡", 'quote " and \\ backslash']
    ledger.post_transactions([pay(v.issuance, v.ana, 1, client_id=c) for c in stored])
    ledger.post_transaction(pay(v.issuance, v.ana, 1, client_id="elsewhere"), scope="key-9")
    wanted = [*stored, "absent", "elsewhere", "4", "t"]
    with unit_of_work(engine, write=False) as connection:
        found = repo.transactions_by_client_id(connection, "", wanted)
        assert sorted(row["client_id"] for row in found) == sorted(stored)
        assert repo.transactions_by_client_id(connection, "key-9", wanted)[0]["client_id"] == (
            "elsewhere"
        )
        assert repo.transactions_by_client_id(connection, "", []) == []


def test_on_sqlite_the_client_id_lookup_seeks_the_unique_index_per_id(engine: Engine) -> None:
    """A batch looks up 8,190 ids; scanning the scope's transactions instead would cost
    a batch as much as the history is long."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan of SQLite's form of the lookup")
    statement = str(repo._TRANSACTIONS_BY_CLIENT_ID_JSON.compile(dialect=engine.dialect))
    with unit_of_work(engine, write=False) as connection:
        plan = [
            row[-1]
            for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", ("", '["a", "b"]')
            )
        ]
    searches = [step for step in plan if "transactions" in step]
    assert searches == [
        "SEARCH transactions USING INDEX sqlite_autoindex_transactions_1 "
        "(idempotency_scope=? AND client_id=?)"
    ], plan


def test_many_rows_are_inserted_whole_across_statements(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, rows go in as multi-row statements of bounded shapes; on PostgreSQL
    through executemany. Either way every row arrives whole."""
    monkeypatch.setattr(repo, "ROWS_PER_STATEMENT", 4)  # 11 rows: 4 + 4 + 2 + 1
    rows = [{"a": i, "b": None if i % 3 else f"row {i}"} for i in range(11)]
    with unit_of_work(engine, write=True) as connection:
        connection.execute(text("CREATE TEMPORARY TABLE scratch (a INTEGER, b VARCHAR(10))"))
        repo.raw(connection).run_many("INSERT INTO scratch (a, b) VALUES (:a, :b)", rows)
        stored = connection.execute(text("SELECT a, b FROM scratch ORDER BY a")).all()
    assert [tuple(row) for row in stored] == [(row["a"], row["b"]) for row in rows]


def test_on_sqlite_a_batchs_inserts_are_multi_row_statements(
    ledger: Ledger, engine: Engine
) -> None:
    """Four transactions, of eight history rows: each table's rows go in as one statement
    (power-of-two counts), not a step per row; a reworded statement that fell back to
    executemany would show here."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's multi-row inserts")
    v = village(ledger)
    traced: list[str] = []

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(traced.append)

    engine.dispose()  # every connection from here on is traced
    event.listen(engine, "connect", trace)
    try:
        ledger.post_transactions(
            [pay(v.issuance, v.ana, 1), pay(v.issuance, v.hilltop_member, 2)] * 2
        )
    finally:
        event.remove(engine, "connect", trace)
        engine.dispose()
    inserts = Counter(s.split(" (")[0] for s in traced if s.startswith("INSERT INTO"))
    assert inserts["INSERT INTO entries"] == 1, traced
    assert inserts["INSERT INTO postings"] == 1
    assert inserts["INSERT INTO transactions"] == 1
    assert inserts["INSERT INTO events"] == 1


@pytest.mark.parametrize("status", [TransactionStatus.PENDING, TransactionStatus.VOIDED])
def test_listing_an_unposted_status_can_use_the_index_of_unposted_transactions(
    ledger: Ledger, engine: Engine, status: TransactionStatus
) -> None:
    """Posted transactions are left out of the status index, so each posting writes one
    B-tree less; a query reaches the partial index only by repeating its condition
    (SQLite proves it from nothing else), which a reworded listing would lose."""
    v = village(ledger)
    ledger.post_transaction(hold(v.issuance, v.ana, 5))
    statements: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FROM transactions" in statement:
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        ledger.list_transactions(status=status)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    (statement, parameters), *_ = statements
    with unit_of_work(engine, write=False, snapshot=True) as connection:  # SET LOCAL needs one
        if engine.dialect.name == "sqlite":
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        else:  # a table this small is read whole unless scanning is ruled out
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        steps = " | ".join(str(row[-1]) for row in plan)
    assert "ix_transactions_unposted_status_created_at" in steps, steps
