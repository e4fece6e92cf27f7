"""Changes to valuations and protocols: in force when they say, never a gaining circle,
not even when two are made at once (PostgreSQL runs them concurrently for real)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from fractions import Fraction

import pytest
from sqlalchemy import Engine

from exchange.model import ProtocolSpec
from exchange.service import Exchange
from ledger.errors import Code, LedgerError
from ledger.model import CurrencyKind
from ledger.service import Ledger
from tests.conftest import Clock

BY = "key:1"


@pytest.fixture
def exchange(ledger: Ledger) -> Exchange:
    """Currencies A to F (scale 2), all valued at 1 unit; nothing converts yet."""
    ledger.create_community("federation", "The federation")
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="federation")
    for code in "ABCDEF":
        ledger.create_currency(code, kind=CurrencyKind.EXTERNAL, scale=2, name=code, symbol=code)
        exchange.set_valuation(code, Fraction(1), by=BY, reason="founding")
    return exchange


def _fixed(source: str, target: str, rate: str, **more: object) -> ProtocolSpec:
    return ProtocolSpec(source, target, fixed_rate=Fraction(rate), **more)


def _code(change: Callable[[], object]) -> Code | None:
    try:
        change()
    except LedgerError as error:
        return error.code
    return None


def test_a_scheduled_change_that_would_close_a_gaining_circle_is_refused_now(
    exchange: Exchange, clock: Clock
) -> None:
    exchange.propose(_fixed("A", "B", "1"), by=BY, reason="a to b")
    later = clock() + dt.timedelta(days=7)
    assert (
        _code(
            lambda: exchange.propose(
                _fixed("B", "A", "1.5", effective_from=later), by=BY, reason="next week"
            )
        )
        == Code.ARBITRAGE_CYCLE
    )
    # A protocol that has ended by the time a change takes effect is no edge of a circle.
    exchange.propose(
        _fixed("B", "A", "0.9", effective_until=clock() + dt.timedelta(days=1)),
        by=BY,
        reason="until tomorrow",
    )
    assert (
        _code(lambda: exchange.propose(_fixed("A", "B", "1.5"), by=BY, reason="dearer now"))
        == Code.ARBITRAGE_CYCLE
    )
    exchange.propose(_fixed("A", "B", "1.5", effective_from=later), by=BY, reason="later, dearer")


def test_a_valuation_scheduled_to_close_a_circle_is_refused_now(
    exchange: Exchange, clock: Clock
) -> None:
    exchange.propose(ProtocolSpec("A", "B"), by=BY, reason="at valuation")
    exchange.propose(_fixed("B", "A", "1"), by=BY, reason="back at par")
    later = clock() + dt.timedelta(hours=1)
    with pytest.raises(LedgerError) as raised:
        exchange.set_valuation("A", Fraction(11, 10), by=BY, reason="up", effective_from=later)
    assert raised.value.code == Code.ARBITRAGE_CYCLE
    assert "from " in raised.value.detail
    assert raised.value.extra["cycle"][0] == raised.value.extra["cycle"][-1]
    assert [v.rate for v in exchange.valuation_history("A")] == [Fraction(1)]
    exchange.set_valuation("A", Fraction(9, 10), by=BY, reason="down", effective_from=later)


def test_the_version_in_force_is_the_newest_that_took_effect(
    exchange: Exchange, clock: Clock
) -> None:
    first = exchange.propose(_fixed("A", "B", "1"), by=BY, reason="now")
    start = clock()
    exchange.propose(
        _fixed("A", "B", "1/2", effective_from=start + dt.timedelta(hours=2)),
        by=BY,
        reason="in two hours",
    )
    third = exchange.propose(
        _fixed("A", "B", "1/4", effective_from=start + dt.timedelta(hours=1)),
        by=BY,
        reason="in an hour",
    )
    assert exchange.protocol_in_force("A", "B") == first
    assert exchange.protocol_in_force("A", "B", start + dt.timedelta(hours=1)) == third
    # Version 3 is newer than version 2, so it stays in force when version 2's time comes.
    assert exchange.protocol_in_force("A", "B", start + dt.timedelta(hours=3)) == third


@pytest.mark.postgres_only
def test_concurrent_proposals_take_one_number_each(engine: Engine, exchange: Exchange) -> None:
    exchange.propose(_fixed("A", "B", "1"), by=BY, reason="first")
    start = threading.Barrier(6)
    codes: list[Code | None] = []

    def propose(index: int) -> None:
        mine = Exchange(Ledger(engine, clock=exchange.clock))
        start.wait()
        codes.append(
            _code(lambda: mine.propose(_fixed("A", "B", f"1/{index + 2}"), by=BY, reason="race"))
        )

    _run(propose, 6)
    assert codes == [None] * 6
    assert [v.version for v in exchange.protocol_versions("A", "B")] == list(range(1, 8))


@pytest.mark.postgres_only
def test_concurrent_changes_read_as_one_version_only_one_wins(
    engine: Engine, exchange: Exchange
) -> None:
    exchange.propose(_fixed("A", "B", "1"), by=BY, reason="first")
    start = threading.Barrier(6)
    codes: list[Code | None] = []

    def propose(index: int) -> None:
        mine = Exchange(Ledger(engine, clock=exchange.clock))
        start.wait()
        codes.append(
            _code(
                lambda: mine.propose(
                    _fixed("A", "B", f"1/{index + 2}"), by=BY, reason="race", expected_version=1
                )
            )
        )

    _run(propose, 6)
    assert sorted(codes, key=str) == [None] + [Code.VERSION_MISMATCH] * 5


@pytest.mark.postgres_only
def test_two_changes_that_only_together_close_a_circle_never_both_pass(
    engine: Engine, exchange: Exchange
) -> None:
    """A -> B exists; B -> C and C -> A each leave no circle, both together gain 2x."""
    for round_, (a, b, c) in enumerate(("ABC", "DEF", "BDF", "CEA")):
        exchange.propose(_fixed(a, b, "1"), by=BY, reason=f"round {round_}")
        halves = [_fixed(b, c, "1"), _fixed(c, a, "2")]
        codes = _race(engine, exchange, halves)
        assert sorted(codes.values(), key=str) == [None, Code.ARBITRAGE_CYCLE], codes
        # Undo the half that passed, so the next round starts from one edge again.
        passed = next(h for h in halves if codes[h.from_currency] is None)
        exchange.propose(
            ProtocolSpec(passed.from_currency, passed.to_currency, allowed=False),
            by=BY,
            reason="undo",
        )
        exchange.propose(ProtocolSpec(a, b, allowed=False), by=BY, reason="undo")


def _race(engine: Engine, exchange: Exchange, specs: list[ProtocolSpec]) -> dict[str, Code | None]:
    """Propose the specs at once, each from its own connection; the code of each by source."""
    start = threading.Barrier(len(specs))
    codes: dict[str, Code | None] = {}

    def propose(index: int) -> None:
        mine = Exchange(Ledger(engine, clock=exchange.clock))
        spec = specs[index]
        start.wait()
        codes[spec.from_currency] = _code(lambda: mine.propose(spec, by=BY, reason="race"))

    _run(propose, len(specs))
    return codes


def _run(work: Callable[[int], None], count: int) -> None:
    workers = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
