"""Random sequences of conversions against a protocol's per-account and per-community daily
and monthly limits, on both databases, predicted step by step by a small model.

Each hypothesis example gets a fresh pair of currencies (so its own protocol, its own
limits and its own liquidity accounts) in the test's database, and a clock it moves
itself: by seconds, to the last second of a day or a month, and across the boundary. The
model keeps the accepted conversions and predicts every outcome (accepted,
``conversion_too_small``, ``conversion_limit_exceeded`` or ``insufficient_funds``); at the
end the stored conversions are checked against the limits in force when each was made.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from exchange import rates
from exchange.model import LIMIT_NAMES, ProtocolSpec
from exchange.repository import conversions
from exchange.service import Exchange
from ledger.authority import HeldIn
from ledger.errors import Code, LedgerError
from ledger.model import AccountType, CurrencyKind
from ledger.service import Ledger
from tests.ledger.builders import pay

FEDERATION = "key:1"
FUNDS = 10_000_000
POOR_FUNDS = 300
_pairs = itertools.count(1)


class SettableClock:
    """A clock the test moves; it never goes back, across examples too."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def move(self, step: tuple[str, int]) -> None:
        kind, value = step
        now = self.now
        if kind == "seconds":
            self.now = now + dt.timedelta(seconds=value)
        elif kind == "days":
            self.now = now + dt.timedelta(days=value)
        elif kind == "end_of_day":  # the day's last second, then ``value`` seconds on
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            self.now = max(now, midnight + dt.timedelta(days=1, seconds=-1 + value))
        else:  # end_of_month
            first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            following = (first + dt.timedelta(days=32)).replace(day=1)
            self.now = max(now, following + dt.timedelta(seconds=-1 + value))


clock_steps = st.one_of(
    st.tuples(st.just("seconds"), st.integers(min_value=0, max_value=7_200)),
    st.tuples(st.just("days"), st.integers(min_value=1, max_value=40)),
    st.tuples(st.sampled_from(["end_of_day", "end_of_month"]), st.integers(0, 1)),
)
limit_sets = st.dictionaries(
    st.sampled_from(LIMIT_NAMES), st.integers(min_value=1, max_value=2_000), max_size=4
)
PAYERS = ("river_ana", "river_bo", "river_poor", "hill_cai")
conversions_ = st.tuples(
    st.just("convert"),
    st.sampled_from(PAYERS),
    st.integers(min_value=1, max_value=900),
    st.booleans(),  # True: the amount is the target
)
steps = st.lists(
    st.one_of(  # three conversions for each move of the clock or change of limits
        conversions_,
        conversions_,
        conversions_,
        st.tuples(st.just("clock"), clock_steps),
        st.tuples(st.just("relimit"), limit_sets),
    ),
    min_size=1,
    max_size=40,
)


@dataclass
class Model:
    """What the ledger should hold: balances and the accepted conversions."""

    limits: dict[str, int]
    balances: dict[str, int]
    accepted: list[tuple[str, str, int, dt.datetime]] = field(default_factory=list)

    def used(self, name: str, payer: str, community: str, now: dt.datetime) -> int:
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        since = day if name.endswith("daily") else day.replace(day=1)
        by_account = name.startswith("account")
        return sum(
            amount
            for who, where, amount, at in self.accepted
            if at >= since and (who == payer if by_account else where == community)
        )

    def predict(self, payer: str, community: str, amount: int, now: dt.datetime) -> Code | None:
        for name in LIMIT_NAMES:
            limit = self.limits.get(name)
            if limit is not None and self.used(name, payer, community, now) + amount > limit:
                return Code.CONVERSION_LIMIT_EXCEEDED
        if self.balances[payer] < amount:
            return Code.INSUFFICIENT_FUNDS
        return None


@dataclass(frozen=True)
class World:
    ledger: Ledger
    exchange: Exchange
    clock: SettableClock


@pytest.fixture
def world(engine: Engine) -> World:
    clock = SettableClock(dt.datetime(2031, 1, 30, 22, 0, tzinfo=dt.UTC))
    ledger = Ledger(engine, clock=clock)
    for slug in ("federation", "riverbend", "hilltop"):
        ledger.create_community(slug, slug.title())
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="federation")
    return World(ledger, exchange, clock)


def _open_pair(
    world: World, scale_from: int, scale_to: int, minor_rate: Fraction, fee_bps: int, limits: dict
) -> tuple[str, str, dict[str, int], int]:
    """A fresh pair with its protocol, funded payers and a payee."""
    ledger, number = world.ledger, next(_pairs)
    source, target = f"SRC{number}", f"DST{number}"
    for code, scale in ((source, scale_from), (target, scale_to)):
        ledger.create_currency(
            code,
            kind=CurrencyKind.HEARTS,
            scale=scale,
            name=code,
            symbol="♡",
            issuer="riverbend",
            held_in=HeldIn.ALL,  # both communities hold the pair's currencies
        )

    def open_(community: str, currency: str, name: str, kind: AccountType) -> int:
        return ledger.open_account(community=community, currency=currency, type=kind, name=name).id

    issuance = {
        community: open_(community, source, "issuance", AccountType.ISSUANCE)
        for community in ("riverbend", "hilltop")
    }
    payers = {
        "river_ana": open_("riverbend", source, "ana", AccountType.MEMBER),
        "river_bo": open_("riverbend", source, "bo", AccountType.MEMBER),
        "river_poor": open_("riverbend", source, "poor", AccountType.MEMBER),
        "hill_cai": open_("hilltop", source, "cai", AccountType.MEMBER),
    }
    for name, account in payers.items():
        community = "hilltop" if name.startswith("hill") else "riverbend"
        funds = POOR_FUNDS if name == "river_poor" else FUNDS
        ledger.post_transaction(pay(issuance[community], account, funds, source))
    payee = open_("hilltop", target, "dee", AccountType.MEMBER)
    world.exchange.propose(
        ProtocolSpec(
            source,
            target,
            fixed_rate=minor_rate * Fraction(10) ** (scale_from - scale_to),
            fee_bps=fee_bps,
            limits=limits,
        ),
        by=FEDERATION,
        reason="limits under test",
    )
    return source, target, payers, payee


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    scale_from=st.integers(min_value=0, max_value=8),
    scale_to=st.integers(min_value=0, max_value=8),
    minor_rate=st.builds(Fraction, st.integers(1, 12), st.integers(1, 12)),
    fee_bps=st.sampled_from([0, 1, 50, 2_500]),
    limits=limit_sets,
    script=steps,
)
def test_conversions_never_pass_a_daily_or_monthly_limit(
    world: World,
    scale_from: int,
    scale_to: int,
    minor_rate: Fraction,
    fee_bps: int,
    limits: dict[str, int],
    script: list[tuple],
) -> None:
    source, target, payers, payee = _open_pair(
        world, scale_from, scale_to, minor_rate, fee_bps, limits
    )
    rate = minor_rate  # target minor units per source minor unit
    model = Model(
        dict(limits), {name: POOR_FUNDS if name == "river_poor" else FUNDS for name in payers}
    )
    community_of = {name: "hilltop" if name.startswith("hill") else "riverbend" for name in payers}
    limits_of_accepted: list[dict[str, int]] = []

    for step in script:
        if step[0] == "clock":
            world.clock.move(step[1])
            continue
        if step[0] == "relimit":
            world.exchange.propose(
                ProtocolSpec(
                    source,
                    target,
                    fixed_rate=minor_rate * Fraction(10) ** (scale_from - scale_to),
                    fee_bps=fee_bps,
                    limits=step[1],
                ),
                by=FEDERATION,
                reason="new limits",
            )
            model.limits = dict(step[1])
            continue
        _, payer, amount, by_target = step
        price: Callable[[int, Fraction, int], rates.Conversion] = (
            rates.convert_target if by_target else rates.convert_source
        )
        try:
            priced = price(amount, rate, fee_bps)
        except rates.ConversionTooSmallError:
            expected: Code | None = Code.CONVERSION_TOO_SMALL
        else:
            expected = model.predict(
                payer, community_of[payer], priced.source_amount, world.clock()
            )
        if expected is not None:
            with pytest.raises(LedgerError) as refused:
                world.exchange.convert(
                    payer_account_id=payers[payer],
                    payee_account_id=payee,
                    **({"target_amount": amount} if by_target else {"source_amount": amount}),
                )
            event(f"refused: {refused.value.code}")
            assert refused.value.code == expected, (step, refused.value.detail)
            if expected == Code.CONVERSION_LIMIT_EXCEEDED:
                extra = refused.value.extra
                assert extra["used"] + priced.source_amount > extra["limit_amount"]
            continue
        outcome = world.exchange.convert(
            payer_account_id=payers[payer],
            payee_account_id=payee,
            **({"target_amount": amount} if by_target else {"source_amount": amount}),
        )
        event("accepted")
        assert outcome.transaction is not None
        model.balances[payer] -= priced.source_amount
        model.accepted.append((payer, community_of[payer], priced.source_amount, world.clock()))
        limits_of_accepted.append(dict(model.limits))

    # The ledger agrees with the model ...
    for name, account in payers.items():
        assert world.ledger.balance(account).posted == model.balances[name], name
    with world.ledger.engine.connect() as connection:
        stored = connection.execute(
            select(conversions.c.payer_account_id, conversions.c.source_amount, conversions.c.at)
            .where(conversions.c.payee_account_id == payee)
            .order_by(conversions.c.id)
        ).all()
    name_of = {account: name for name, account in payers.items()}
    assert [(name_of[row[0]], row[1]) for row in stored] == [
        (payer, amount) for payer, _, amount, _ in model.accepted
    ]
    # ... and, from the stored rows alone, no period ever held more than the limit that was
    # in force when its last conversion was made.
    for index, ((account, _, at), in_force) in enumerate(
        zip(stored, limits_of_accepted, strict=True)
    ):
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        for name, limit in in_force.items():
            since = day if name.endswith("daily") else day.replace(day=1)
            total = sum(
                row[1]
                for row in stored[: index + 1]
                if row[2] >= since
                and (
                    row[0] == account
                    if name.startswith("account")
                    else community_of[name_of[row[0]]] == community_of[name_of[account]]
                )
            )
            assert total <= limit, (name, limit, total)
