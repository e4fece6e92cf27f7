"""``heartleaf verify`` checks the reciprocity layer too, on both databases: each maintained
figure (pair totals, what clearing set off, day rows, positions) tampered with directly in
the database is named, the CLI exits 1 on it, and an untampered ledger, the demo's
included, verifies clean.

Each tamper is undone before the test ends, so the fixture's own check at teardown sees
the ledger as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from api import cli
from api.app import build_ledger
from api.demo import seed_demo
from exchange.reciprocity import POSITION_ACCOUNT_NAME, Reciprocity
from exchange.reciprocity_verify import verify
from ledger.verify import Violation
from tests.conftest import Clock
from tests.exchange.test_reciprocity import (
    FEDERATION,
    Net,
    _leaves,
    _net,
    _observed,
    _positions,
    _settle,
    _settles,
)


@pytest.fixture
def net(engine: Engine, clock: Clock) -> Net:
    """A circle cleared, then a settlement of what it left, a reversal and more trade."""
    net = _net(_observed(engine, clock), clock)
    _leaves(net, "ana", "cai", 100)
    _leaves(net, "cai", "dee", 50)
    _leaves(net, "dee", "ana", 70)
    proposal = net.reciprocity.propose_clearing(by=FEDERATION)
    net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)
    settled = _settle(net, "ana", "cai", 25, _settles("riverbend", "hilltop", proposal.id))
    clock.advance(86_400)  # the reversal and the trade after it on the next day
    net.ledger.reverse(settled.id)
    _leaves(net, "ana", "dee", 30)
    return net


def _ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            slug: id_ for id_, slug in connection.execute(text("SELECT id, slug FROM communities"))
        }


@contextmanager
def _tampered(engine: Engine, change: str, undo: str, parameters: dict[str, Any]) -> Iterator[None]:
    with engine.begin() as connection:
        assert connection.execute(text(change), parameters).rowcount == 1
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text(undo), parameters)


def _cli(database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[int, str]:
    """``heartleaf verify``'s exit status and what it printed on stdout."""
    monkeypatch.setenv("DATABASE_URL", database_url)  # the CLI's own way to its database
    capsys.readouterr()
    status = cli.main(["verify"])
    return status, capsys.readouterr().out


def test_an_untampered_ledger_verifies_clean(
    net: Net, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    assert net.reciprocity.verify() == []
    assert verify(engine) == []
    assert _cli(database_url, monkeypatch, capsys) == (0, "")


def test_the_demo_federation_verifies_clean(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ledger = build_ledger(engine)
    seed_demo(ledger)
    reciprocity = Reciprocity(ledger)
    assert reciprocity.matrix().cells  # the demo trades across communities
    reciprocity.execute_clearing(reciprocity.propose_clearing(by="key:1").id, by="key:1")
    assert verify(engine) == []
    assert _cli(database_url, monkeypatch, capsys) == (0, "")


TAMPERS: list[tuple[str, str, str, str, Callable[[dict[str, int]], dict[str, Any]]]] = [
    (
        "a pair's total given",
        "UPDATE reciprocity_pairs SET given = given + 1 "
        "WHERE giver_community_id = :giver AND receiver_community_id = :receiver",
        "UPDATE reciprocity_pairs SET given = given - 1 "
        "WHERE giver_community_id = :giver AND receiver_community_id = :receiver",
        "reciprocity_pairs: hilltop -> riverbend: given 8001 but its flows sum to 8000",
        lambda ids: {"giver": ids["hilltop"], "receiver": ids["riverbend"]},
    ),
    (
        "what clearing set off on a pair",
        "UPDATE reciprocity_pairs SET cleared = cleared - 5 "
        "WHERE giver_community_id = :giver AND receiver_community_id = :receiver",
        "UPDATE reciprocity_pairs SET cleared = cleared + 5 "
        "WHERE giver_community_id = :giver AND receiver_community_id = :receiver",
        "reciprocity_pairs: saltmarsh -> hilltop: cleared 3995 but executed clearings set off 4000",
        lambda ids: {"giver": ids["saltmarsh"], "receiver": ids["hilltop"]},
    ),
    (
        "a day's row",
        "UPDATE reciprocity_days SET amount = amount + 7 "
        "WHERE giver_community_id = :giver AND receiver_community_id = :receiver",
        "UPDATE reciprocity_days SET amount = amount - 7 "
        "WHERE giver_community_id = :giver AND receiver_community_id = :receiver",
        "reciprocity_days: riverbend -> saltmarsh on ",
        lambda ids: {"giver": ids["riverbend"], "receiver": ids["saltmarsh"]},
    ),
]


@pytest.mark.parametrize(
    ("change", "undo", "named", "where"),
    [row[1:] for row in TAMPERS],
    ids=[row[0] for row in TAMPERS],
)
def test_a_tampered_aggregate_is_named_and_fails_the_cli(
    net: Net,
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    change: str,
    undo: str,
    named: str,
    where: Callable[[dict[str, int]], dict[str, Any]],
) -> None:
    with _tampered(engine, change, undo, where(_ids(engine))):
        found = [str(v) for v in verify(engine)]
        assert len(found) == 1, found
        assert found[0].startswith(named), found
        status, out = _cli(database_url, monkeypatch, capsys)
        assert status == 1
        assert out.splitlines() == found
    assert verify(engine) == []


def test_a_missing_day_row_is_named(net: Net, engine: Engine) -> None:
    ids = _ids(engine)
    with engine.begin() as connection:
        (row,) = connection.execute(
            text(
                "SELECT giver_community_id, day, receiver_community_id, amount "
                "FROM reciprocity_days WHERE giver_community_id = :giver "
                "AND receiver_community_id = :receiver"
            ),
            {"giver": ids["riverbend"], "receiver": ids["saltmarsh"]},
        ).all()
        connection.execute(
            text(
                "DELETE FROM reciprocity_days WHERE giver_community_id = :giver "
                "AND receiver_community_id = :receiver"
            ),
            {"giver": ids["riverbend"], "receiver": ids["saltmarsh"]},
        )
    try:
        found = verify(engine)
        assert [v.check for v in found] == ["reciprocity_days"]
        assert f"riverbend -> saltmarsh on {row.day}: 0 but that day's flows sum to " in str(
            found[0]
        )
    finally:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO reciprocity_days (giver_community_id, day, "
                    "receiver_community_id, amount) VALUES (:giver, :day, :receiver, :amount)"
                ),
                {"giver": row[0], "day": row[1], "receiver": row[2], "amount": row[3]},
            )
    assert verify(engine) == []


def test_a_position_that_differs_from_its_flows_is_named(net: Net, engine: Engine) -> None:
    positions = _positions(net)
    with engine.begin() as connection:
        account_id = _position_account(connection, "riverbend")
    change = "UPDATE accounts SET balance_posted = balance_posted + 3 WHERE id = :id"
    undo = "UPDATE accounts SET balance_posted = balance_posted - 3 WHERE id = :id"
    with _tampered(engine, change, undo, {"id": account_id}):
        assert verify(engine) == [
            Violation(
                "reciprocity_position",
                f"riverbend: position {positions['riverbend'] + 3} but its flows and clearings "
                f"net {positions['riverbend']}",
                account_id=account_id,
            )
        ]
    assert verify(engine) == []


def test_a_tampered_flow_shows_in_every_figure_built_on_it(net: Net, engine: Engine) -> None:
    ids = _ids(engine)
    where = {"giver": ids["hilltop"], "receiver": ids["riverbend"]}
    with engine.connect() as connection:
        flow_id = connection.execute(
            text(
                "SELECT MIN(id) FROM reciprocity_flows "
                "WHERE giver_community_id = :giver AND receiver_community_id = :receiver"
            ),
            where,
        ).scalar_one()
    change = "UPDATE reciprocity_flows SET amount = amount + 2 WHERE id = :id"
    undo = "UPDATE reciprocity_flows SET amount = amount - 2 WHERE id = :id"
    with _tampered(engine, change, undo, {"id": flow_id}):
        found = verify(engine)
        assert sorted({v.check for v in found}) == [
            "reciprocity_days",
            "reciprocity_pairs",
            "reciprocity_position",
        ]
        assert {v.detail.split(":")[0] for v in found if v.check == "reciprocity_position"} == {
            "hilltop",
            "riverbend",
        }
    assert verify(engine) == []


def _position_account(connection: Connection, slug: str) -> int:
    return int(
        connection.execute(
            text(
                "SELECT accounts.id FROM accounts JOIN communities "
                "ON communities.id = accounts.community_id "
                "WHERE communities.slug = :slug AND accounts.name = :name"
            ),
            {"slug": slug, "name": POSITION_ACCOUNT_NAME},
        ).scalar_one()
    )
