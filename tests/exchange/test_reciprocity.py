"""Reciprocity on both databases: flows against a brute-force recomputation from the raw
transactions, credit lines (also under concurrency), and clearing.

The brute force re-derives every flow from what the ledger stores (postings, the amounts
that actually moved, reversal links, valuations as the exchange reports them) with its
own code for netting, rounding and pairing, and compares it with what the observer booked
inside the writes and with every report built on the maintained aggregates.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

from exchange.model import ProtocolSpec, Window
from exchange.reciprocity import (
    PLAN_BASIS,
    POSITION_ACCOUNT_NAME,
    DayWindow,
    Figures,
    Reciprocity,
    ReciprocityObserver,
    Thresholds,
    exact_text,
    is_free_riding,
    pair_flows,
    parse_exact,
)
from exchange.service import Exchange
from ledger.authority import HeldIn
from ledger.errors import Code, LedgerError
from ledger.group_commit import GroupCommit
from ledger.model import (
    AccountType,
    CurrencyKind,
    PostingDraft,
    Transaction,
    TransactionDraft,
    TransactionStatus,
)
from ledger.service import Ledger
from tests.conftest import Clock
from tests.ledger.builders import hold, pay
from tests.ledger.grouping import answered, hand_over, writes_held

FEDERATION = "key:1"
FUNDS = 10_000_000
Pair = tuple[str, str]


# -- a small federation -----------------------------------------------------------------------


@dataclass
class Net:
    """Four communities: the federation (owns LEAF's issuance and the liquidity accounts),
    riverbend (HRB), hilltop (HHT) and saltmarsh (HSM, which has no valuation)."""

    ledger: Ledger
    exchange: Exchange
    reciprocity: Reciprocity
    clock: Clock
    accounts: dict[str, int] = field(default_factory=dict)  # "who:currency" -> id
    observed_from: int = 0  # the first transaction the brute force counts

    def id(self, name: str) -> int:
        return self.accounts[name]


MEMBERS = {
    # name: (community, currency)
    "ana:HRB": ("riverbend", "HRB"),
    "bo:HRB": ("riverbend", "HRB"),
    "eve:HRB": ("hilltop", "HRB"),
    "ana:LEAF": ("riverbend", "LEAF"),
    "cai:LEAF": ("hilltop", "LEAF"),
    "dee:LEAF": ("saltmarsh", "LEAF"),
    "cai:HHT": ("hilltop", "HHT"),
    "dee:HSM": ("saltmarsh", "HSM"),
    "fin:HSM": ("riverbend", "HSM"),
}
ISSUERS = {"HRB": "riverbend", "HHT": "hilltop", "LEAF": "federation", "HSM": "saltmarsh"}


def _observed(engine: Engine, clock: Clock) -> Ledger:
    return Ledger(engine, clock=clock, observers=[ReciprocityObserver()])


def _net(ledger: Ledger, clock: Clock, *, configure: bool = True) -> Net:
    for slug in ("federation", "riverbend", "hilltop", "saltmarsh"):
        ledger.create_community(slug, slug.title())
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    for code, kind, scale in (
        ("HRB", CurrencyKind.HEARTS, 2),
        ("HHT", CurrencyKind.HEARTS, 2),
        ("LEAF", CurrencyKind.LEAVES, 0),
        ("HSM", CurrencyKind.HEARTS, 2),
    ):
        issuer = ISSUERS[code]
        ledger.create_currency(
            code,
            kind=kind,
            scale=scale,
            name=code,
            symbol="♡",
            issuer=None if issuer == "federation" else issuer,
            held_in=HeldIn.ALL,  # each community lets its Hearts be held across the federation
        )
    exchange = Exchange(ledger)
    net = Net(ledger, exchange, Reciprocity(ledger), clock)
    for code, community in ISSUERS.items():
        issuance = ledger.open_account(
            community=community, currency=code, type=AccountType.ISSUANCE, name="issuance"
        ).id
        net.accounts[f"issuance:{code}"] = issuance
    for name, (community, currency) in MEMBERS.items():
        account = ledger.open_account(
            community=community, currency=currency, type=AccountType.MEMBER, name=name
        ).id
        net.accounts[name] = account
        ledger.post_transaction(pay(net.id(f"issuance:{currency}"), account, FUNDS, currency))
    # Funded before the exchange is configured: nothing of this is recorded.
    net.observed_from = ledger.list_transactions(limit=1000).items[-1].id + 1
    if configure:
        _configure(net)
    return net


def _configure(net: Net) -> None:
    net.exchange.configure(reference_unit="FRU", federation_community="federation")
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("HHT", "1"), ("LEAF", "4/5")):
        net.exchange.set_valuation(code, Fraction(rate), by=FEDERATION, reason="founding")
    for source, target, fee in (("HRB", "HHT", 50), ("HHT", "HRB", 0), ("LEAF", "HHT", 25)):
        net.exchange.propose(
            ProtocolSpec(source, target, fee_bps=fee), by=FEDERATION, reason="trade"
        )


@pytest.fixture
def net(engine: Engine, clock: Clock) -> Net:
    return _net(_observed(engine, clock), clock)


def _leaves(net: Net, payer: str, payee: str, amount: int) -> Transaction:
    outcome = net.ledger.post_transaction(
        pay(net.id(f"{payer}:LEAF"), net.id(f"{payee}:LEAF"), amount, "LEAF")
    )
    assert outcome.transaction is not None
    return outcome.transaction


def _positions(net: Net) -> dict[str, int]:
    return {line.community: line.position for line in net.reciprocity.credit_lines()}


# -- the brute force ---------------------------------------------------------------------------


class BruteForce:
    """Every flow, recomputed from the stored transactions alone."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.rates: dict[tuple[str, dt.datetime], Fraction | None] = {}
        self.communities: dict[int, str] = {}
        self.scales = {c.code: c.scale for c in net.ledger.list_currencies()}
        self.ids = {c.slug: c.id for c in net.ledger.list_communities()}

    def _rate(self, code: str, at: dt.datetime) -> Fraction | None:
        if (code, at) not in self.rates:
            try:
                self.rates[code, at] = self.net.exchange.valuation_at(code, at).rate
            except LedgerError as error:
                if error.code != Code.VALUATION_MISSING:
                    raise
                self.rates[code, at] = None
        return self.rates[code, at]

    def _community(self, account_id: int) -> str:
        if account_id not in self.communities:
            self.communities[account_id] = self.net.ledger.get_account(account_id).community
        return self.communities[account_id]

    def _transactions(self) -> list[Transaction]:
        found: list[Transaction] = []
        cursor = None
        while True:
            page = self.net.ledger.list_transactions(cursor=cursor, limit=1000)
            found += page.items
            if page.next_cursor is None:
                return sorted(found, key=lambda t: t.id)
            cursor = page.next_cursor

    def flows(self) -> tuple[list[tuple[str, str, int, dt.date]], Counter[str]]:
        """(giver, receiver, amount, day) per flow, and unvalued transactions per community."""
        net = self.net
        by_transaction: dict[int, list[tuple[str, str, int]]] = {}
        result: list[tuple[str, str, int, dt.date]] = []
        unvalued: Counter[str] = Counter()
        for transaction in self._transactions():
            if transaction.id < net.observed_from:
                continue
            if transaction.reverses_id is not None:
                undone = [(g, r, -a) for g, r, a in by_transaction.get(transaction.reverses_id, [])]
                by_transaction[transaction.id] = undone
                day = transaction.created_at.date()
                result += [(g, r, a, day) for g, r, a in undone]
                continue
            if transaction.status != TransactionStatus.POSTED:
                continue
            assert transaction.resolved_at is not None
            at = transaction.resolved_at
            values: dict[str, Fraction] = {}
            involved: set[str] = set()
            missing = False
            for posting in transaction.postings:
                moved = posting.amount if posting.amount_posted is None else posting.amount_posted
                if moved == 0 or posting.currency == "FRU":
                    continue
                source = self._community(posting.source_account_id)
                destination = self._community(posting.destination_account_id)
                if source == destination:
                    continue
                involved |= {source, destination} - {"federation"}
                rate = self._rate(posting.currency, at)
                if rate is None:
                    missing = True
                    continue
                value = Fraction(moved, 10 ** self.scales[posting.currency]) * rate * 100
                values[source] = values.get(source, Fraction(0)) - value
                values[destination] = values.get(destination, Fraction(0)) + value
            if missing:
                unvalued.update(involved)
                continue
            values.pop("federation", None)
            flows = _pair_by_intervals(values, self.ids)
            if transaction.category == "settlement" and "settles" in transaction.metadata:
                # Stored, so it was judged a settlement: the payer's community gave.
                flows = [(receiver, giver, amount) for giver, receiver, amount in flows]
            by_transaction[transaction.id] = flows
            result += [(g, r, a, at.date()) for g, r, a in flows]
        return result, unvalued


def _pair_by_intervals(
    values: dict[str, Fraction], ids: dict[str, int]
) -> list[tuple[str, str, int]]:
    """Round half to even; lay payers and payees (by community id) end to end on two
    number lines; a flow is the overlap of a payee's interval with a payer's."""
    rounded = {c: round(v) for c, v in values.items()}

    def intervals(side: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
        start, found = 0, []  # type: ignore[var-annotated]
        for community, amount in sorted(side, key=lambda s: ids[s[0]]):
            found.append((community, start, start + amount))
            start += amount
        return found

    payers = intervals([(c, -v) for c, v in rounded.items() if v < 0])
    payees = intervals([(c, v) for c, v in rounded.items() if v > 0])
    flows = []
    for payee, low, high in payees:
        for payer, start, end in payers:
            overlap = min(high, end) - max(low, start)
            if overlap > 0:
                flows.append((payee, payer, overlap))
    return flows


def _sum(flows: list[tuple[str, str, int, dt.date]], window: DayWindow | None) -> Counter[Pair]:
    totals: Counter[Pair] = Counter()
    for giver, receiver, amount, day in flows:
        if window is None or window.since <= day < window.until:
            totals[giver, receiver] += amount
    return totals


def _check_against_brute_force(net: Net, brute_force: BruteForce) -> None:
    flows, unvalued = brute_force.flows()
    days = sorted({day for *_, day in flows}) or [net.clock().date()]
    windows: list[DayWindow | None] = [
        None,
        DayWindow.of(days[0], days[-1] + dt.timedelta(days=1)),
        *(DayWindow.of(day, day + dt.timedelta(days=1)) for day in days),
    ]
    members = ("hilltop", "riverbend", "saltmarsh")
    for window in windows:
        expected = _sum(flows, window)
        matrix = net.reciprocity.matrix(window)
        assert {(c.giver, c.receiver): c.amount for c in matrix.cells} == {
            pair: amount for pair, amount in expected.items() if amount
        }, window
        for community in members:
            report = net.reciprocity.community(community, window)
            given = sum(a for (g, _), a in expected.items() if g == community)
            received = sum(a for (_, r), a in expected.items() if r == community)
            assert report.figures == Figures(given, received), (community, window)
            assert {c.community: c.figures for c in report.counterparties} == {
                other: Figures(expected[community, other], expected[other, community])
                for other in members
                if other != community and (expected[community, other] or expected[other, community])
            }
            if window is None:
                assert report.unvalued_transactions == unvalued[community]
    all_time = _sum(flows, None)
    positions = _positions(net)
    for community in members:
        given = sum(a for (g, _), a in all_time.items() if g == community)
        received = sum(a for (_, r), a in all_time.items() if r == community)
        assert positions[community] == given - received
    assert net.reciprocity.verify() == []


# -- the machine --------------------------------------------------------------------------------

LEAF_OF = {"riverbend": "ana:LEAF", "hilltop": "cai:LEAF", "saltmarsh": "dee:LEAF"}
ACCOUNTS_BY_CURRENCY = {
    "LEAF": ["ana:LEAF", "cai:LEAF", "dee:LEAF"],
    "HRB": ["ana:HRB", "bo:HRB", "eve:HRB"],
    "HSM": ["dee:HSM", "fin:HSM"],
}
CONVERSIONS = [("ana:HRB", "cai:HHT"), ("cai:HHT", "ana:HRB"), ("dee:LEAF", "cai:HHT")]
VALUATIONS = {"LEAF": ["1/3", "4/5", "7/10", "3/2"], "HRB": ["1", "9/10", "2/3"]}
EXPECTED_REFUSALS = {
    Code.INSUFFICIENT_FUNDS,
    Code.ALREADY_REVERSED,
    Code.NOT_REVERSIBLE,
    Code.CONVERSION_TOO_SMALL,
    Code.PENDING_ALREADY_POSTED,
    Code.PENDING_ALREADY_VOIDED,
    Code.PENDING_EXPIRED,
    Code.NOT_PENDING,
    Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED,
}
MACHINE_SETTINGS = settings(
    max_examples=5,
    stateful_step_count=14,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

payments = st.sampled_from(sorted(ACCOUNTS_BY_CURRENCY)).flatmap(
    lambda currency: st.tuples(
        st.just(currency),
        st.permutations(ACCOUNTS_BY_CURRENCY[currency]).map(lambda p: p[:2]),
        st.integers(1, 5_000),
    )
)


def _machine(net: Net) -> type[RuleBasedStateMachine]:
    brute_force = BruteForce(net)

    class ReciprocityMachine(RuleBasedStateMachine):
        posted = Bundle("posted")
        pending = Bundle("pending")

        latest_clearing: str | None = None

        def _try(self, work: Any, *also: Code) -> Any:
            try:
                return work()
            except LedgerError as error:
                if error.code not in EXPECTED_REFUSALS and error.code not in also:
                    raise
                return None

        def _draft(self, payment: tuple[str, tuple[str, str], int], **fields: Any) -> Any:
            currency, (source, destination), amount = payment
            return pay(net.id(source), net.id(destination), amount, currency, **fields)

        @rule(target=posted, payment=payments)
        def pay_one(self, payment: Any) -> Any:
            outcome = self._try(lambda: net.ledger.post_transaction(self._draft(payment)))
            return outcome.transaction.id if outcome else 0

        @rule(first=payments, second=payments)
        def pay_a_batch(self, first: Any, second: Any) -> None:
            outcomes = net.ledger.post_transactions([self._draft(first), self._draft(second)])
            for outcome in outcomes:
                assert outcome.error is None or outcome.error.code in EXPECTED_REFUSALS

        @rule(target=posted, amounts=st.tuples(st.integers(1, 300), st.integers(1, 300)))
        def pay_two_communities_at_once(self, amounts: tuple[int, int]) -> Any:
            draft = TransactionDraft(
                postings=(
                    PostingDraft(net.id("ana:LEAF"), net.id("cai:LEAF"), amounts[0], "LEAF"),
                    PostingDraft(net.id("ana:LEAF"), net.id("dee:LEAF"), amounts[1], "LEAF"),
                    PostingDraft(net.id("dee:LEAF"), net.id("cai:LEAF"), amounts[1], "LEAF"),
                )
            )
            outcome = self._try(lambda: net.ledger.post_transaction(draft))
            return outcome.transaction.id if outcome else 0

        def _settle(self, debtor: str, creditor: str, leaves: int, basis: str) -> Any:
            return net.ledger.post_transaction(
                pay(
                    net.id(LEAF_OF[debtor]),
                    net.id(LEAF_OF[creditor]),
                    leaves,
                    "LEAF",
                    category="settlement",
                    metadata={"settles": {"debtor": debtor, "creditor": creditor, "basis": basis}},
                )
            )

        @rule(
            target=posted,
            line=st.integers(0, 3),
            share=st.sampled_from([1, 2, 3]),
            over=st.booleans(),
        )
        def settle_a_plan_line(self, line: int, share: int, over: bool) -> Any:
            """A line of the plan, in part or in full: accepted; more than it: refused."""
            plan = net.reciprocity.settlement_plan()
            if not plan:
                return 0
            payment = plan[line % len(plan)]
            per_leaf = net.exchange.valuation_at("LEAF", net.clock()).rate * 100
            if over:
                leaves = math.floor(payment.amount / per_leaf)
                while round(leaves * per_leaf) <= payment.amount:
                    leaves += 1
            else:
                leaves = math.floor(Fraction(payment.amount, share) / per_leaf)
                if leaves == 0:
                    return 0
            refused: LedgerError | None = None
            try:
                outcome = self._settle(payment.payer, payment.payee, leaves, PLAN_BASIS)
            except LedgerError as error:
                refused = error
            if refused is not None:
                expected = Code.SETTLEMENT_EXCEEDS_OUTSTANDING if over else None
                assert refused.code in {expected, Code.INSUFFICIENT_FUNDS}, refused
                return 0
            assert not over
            return outcome.transaction.id

        @rule(target=posted, index=st.integers(0, 3), share=st.sampled_from([1, 2]))
        def settle_a_clearing_result(self, index: int, share: int) -> Any:
            """Part of what the latest clearing left: outstanding unless paid or traded."""
            if self.latest_clearing is None:
                return 0
            remaining = net.reciprocity.clearing(self.latest_clearing).remaining
            if not remaining:
                return 0
            obligation = remaining[index % len(remaining)]
            per_leaf = net.exchange.valuation_at("LEAF", net.clock()).rate * 100
            leaves = math.floor(Fraction(obligation.amount, share) / per_leaf)
            if leaves == 0:
                return 0
            outcome = self._try(
                lambda: self._settle(
                    obligation.debtor, obligation.creditor, leaves, self.latest_clearing
                ),
                Code.SETTLEMENT_EXCEEDS_OUTSTANDING,
                Code.SETTLEMENT_OBLIGATION_NOT_FOUND,
            )
            return outcome.transaction.id if outcome else 0

        @rule(target=posted, pair=st.sampled_from(CONVERSIONS), amount=st.integers(1, 5_000))
        def convert(self, pair: tuple[str, str], amount: int) -> Any:
            outcome = self._try(
                lambda: net.exchange.convert(
                    payer_account_id=net.id(pair[0]),
                    payee_account_id=net.id(pair[1]),
                    source_amount=amount,
                )
            )
            return outcome.transaction.id if outcome else 0

        @rule(target=pending, payment=payments, lapses=st.booleans())
        def place_a_hold(self, payment: Any, lapses: bool) -> Any:
            currency, (source, destination), amount = payment
            draft = hold(
                net.id(source),
                net.id(destination),
                amount,
                currency,
                timeout_seconds=60 if lapses else None,
            )
            outcome = self._try(lambda: net.ledger.post_transaction(draft))
            return outcome.transaction.id if outcome else 0

        @rule(target=posted, transaction_id=consumes(pending), share=st.sampled_from([0, 1, 2]))
        def post_the_hold(self, transaction_id: int, share: int) -> Any:
            if not transaction_id:
                return 0
            held = net.ledger.get_transaction(transaction_id)
            amounts = [p.amount * share // 2 for p in held.postings]
            posted = self._try(lambda: net.ledger.post_pending(transaction_id, amounts))
            return posted.id if posted else 0

        @rule(transaction_id=consumes(pending))
        def void_the_hold(self, transaction_id: int) -> None:
            if transaction_id:
                self._try(lambda: net.ledger.void_pending(transaction_id))

        @rule()
        def let_holds_lapse(self) -> None:
            net.clock.advance(61)
            net.ledger.expire_overdue()

        @rule(transaction_id=posted)
        def reverse(self, transaction_id: int) -> None:
            if transaction_id:
                self._try(lambda: net.ledger.reverse(transaction_id))

        @rule(currency=st.sampled_from(sorted(VALUATIONS)), data=st.data())
        def revalue(self, currency: str, data: st.DataObject) -> None:
            rate = data.draw(st.sampled_from(VALUATIONS[currency]))
            net.clock.advance(1)
            net.exchange.set_valuation(currency, Fraction(rate), by=FEDERATION, reason="review")

        @rule(
            community=st.sampled_from(["riverbend", "hilltop", "saltmarsh"]),
            limit=st.sampled_from([None, 0, 2_000, 50_000]),
        )
        def set_credit_line(self, community: str, limit: int | None) -> None:
            net.reciprocity.set_credit_line(community, limit, by=FEDERATION)

        @rule(days=st.integers(1, 3))
        def next_day(self, days: int) -> None:
            net.clock.advance(days * 86_400)

        @rule()
        def clear(self) -> None:
            before = _positions(net)
            proposal = net.reciprocity.propose_clearing(by=FEDERATION)
            executed = net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)
            assert executed.status == "executed"
            self.latest_clearing = proposal.id
            net.clock.advance(1)  # the next clearing is executed later than this one
            assert _positions(net) == before
            remaining = {(o.debtor, o.creditor): o.amount for o in net.reciprocity.obligations()}
            assert remaining == {(o.debtor, o.creditor): o.amount for o in proposal.remaining}
            assert net.reciprocity.execute_clearing(proposal.id, by=FEDERATION) == executed

        @rule(payment=payments)
        def clear_after_a_change(self, payment: Any) -> None:
            proposal = net.reciprocity.propose_clearing(by=FEDERATION)
            before = net.reciprocity.obligations()
            net.ledger.post_transactions([self._draft(payment)])
            changed = net.reciprocity.obligations() != before
            if not changed:
                executed = net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)
                assert executed.status == "executed"
                self.latest_clearing = proposal.id
                net.clock.advance(1)
                return
            with pytest.raises(LedgerError) as refused:
                net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)
            assert refused.value.code == Code.CLEARING_OBLIGATIONS_CHANGED
            assert net.reciprocity.clearing(proposal.id).status == "proposed"

        @invariant()
        def figures_match_the_brute_force(self) -> None:
            _check_against_brute_force(net, brute_force)

        @invariant()
        def obligations_carry_the_positions(self) -> None:
            positions = _positions(net)
            owed: Counter[str] = Counter()
            for obligation in net.reciprocity.obligations():
                assert obligation.amount > 0
                owed[obligation.creditor] += obligation.amount
                owed[obligation.debtor] -= obligation.amount
            assert {c: p for c, p in positions.items() if p} == {c: v for c, v in owed.items() if v}
            settled: Counter[str] = Counter()
            for payment in net.reciprocity.settlement_plan():
                settled[payment.payer] += payment.amount
                settled[payment.payee] -= payment.amount
                assert payment.currencies, payment  # LEAF is held everywhere
            assert {c: -v for c, v in settled.items() if v} == {
                c: p for c, p in positions.items() if p
            }

    return ReciprocityMachine


def test_reciprocity_agrees_with_a_brute_force_over_random_histories(net: Net) -> None:
    """Payments within and across communities, batches, multi-community transactions,
    conversions, holds posted in full, in part or not at all, voided or lapsed, reversals,
    revaluations, days passing, clearings, and settlements of plan lines and clearing
    results (over-settling refused, reversals undoing them): after every step each report equals the
    recomputation from the raw transactions, on both databases."""
    run_state_machine_as_test(_machine(net), settings=MACHINE_SETTINGS)


# -- flows, one case at a time ------------------------------------------------------------------


def test_a_payment_in_shared_leaves_is_a_flow_to_the_payer_community(net: Net) -> None:
    payment = _leaves(net, "ana", "cai", 100)  # 100 Leaves at 0.8 = 80.00 units

    assert net.reciprocity.recorded_flows(payment.id) == [("hilltop", "riverbend", 8_000)]
    riverbend = net.reciprocity.community("riverbend")
    assert riverbend.figures == Figures(0, 8_000)
    assert riverbend.figures.index == -1
    assert _positions(net) == {"hilltop": 8_000, "riverbend": -8_000, "saltmarsh": 0}


def test_a_conversion_is_a_flow_between_the_two_communities_fees_left_out(net: Net) -> None:
    outcome = net.exchange.convert(
        payer_account_id=net.id("ana:HRB"), payee_account_id=net.id("cai:HHT"), source_amount=1_000
    )
    assert outcome.transaction is not None

    # 0.5% fee: 995 arrive; the federation's liquidity and fee accounts are not a party.
    assert net.reciprocity.recorded_flows(outcome.transaction.id) == [("hilltop", "riverbend", 995)]


def test_same_community_and_federation_payments_record_nothing(net: Net) -> None:
    net.ledger.post_transaction(pay(net.id("ana:HRB"), net.id("bo:HRB"), 500))
    net.ledger.post_transaction(pay(net.id("issuance:LEAF"), net.id("cai:LEAF"), 500, "LEAF"))

    assert net.reciprocity.matrix().cells == ()


def test_rounding_is_half_to_even_per_community_and_a_reversal_undoes_it_exactly(
    net: Net,
) -> None:
    net.exchange.set_valuation("LEAF", Fraction(1, 200), by=FEDERATION, reason="cheap")
    first = _leaves(net, "ana", "cai", 1)  # 0.5 minor units: rounds to 0, no flow
    second = _leaves(net, "ana", "cai", 3)  # 1.5: rounds to 2
    net.exchange.set_valuation("LEAF", Fraction(4, 5), by=FEDERATION, reason="back")
    net.ledger.reverse(second.id)  # undone as recorded (2), not revalued (240)

    assert net.reciprocity.recorded_flows(first.id) == []
    assert net.reciprocity.recorded_flows(second.id) == [("hilltop", "riverbend", 2)]
    assert net.reciprocity.matrix().cells == ()
    assert _positions(net)["riverbend"] == 0


def test_pair_flows_match_payers_with_payees_in_id_order() -> None:
    nets = {3: Fraction(-5), 1: Fraction(-3), 2: Fraction(6), 4: Fraction(5, 2)}

    assert pair_flows(nets) == [(2, 1, 3), (2, 3, 3), (4, 3, 2)]


def test_an_unvalued_currency_records_no_flow_but_is_counted(net: Net) -> None:
    net.ledger.post_transaction(pay(net.id("dee:HSM"), net.id("fin:HSM"), 700, "HSM"))

    assert net.reciprocity.matrix().cells == ()
    assert net.reciprocity.community("riverbend").unvalued_transactions == 1
    assert net.reciprocity.matrix().unvalued_transactions == 1


def test_without_an_exchange_nothing_is_recorded_and_reports_say_so(
    engine: Engine, clock: Clock
) -> None:
    net = _net(_observed(engine, clock), clock, configure=False)
    _leaves(net, "ana", "cai", 100)

    with pytest.raises(LedgerError) as refused:
        net.reciprocity.community("riverbend")
    assert refused.value.code == Code.EXCHANGE_NOT_CONFIGURED
    _configure(net)
    assert net.reciprocity.matrix().cells == ()  # what moved before is not valued after


def test_position_accounts_move_only_with_their_flows(net: Net) -> None:
    payment = _leaves(net, "ana", "cai", 100)
    (flow,) = net.ledger.list_transactions(category="reciprocity").items
    positions = {
        a.community: a.id
        for a in net.ledger.list_accounts(currency="FRU").items
        if a.name == POSITION_ACCOUNT_NAME
    }

    with pytest.raises(LedgerError) as by_hand:
        net.ledger.post_transaction(pay(positions["hilltop"], positions["riverbend"], 1, "FRU"))
    with pytest.raises(LedgerError) as reversed_flow:
        net.ledger.reverse(flow.id)

    assert (by_hand.value.code, reversed_flow.value.code) == (Code.FORBIDDEN, Code.FORBIDDEN)
    by_hand_in_a_batch, fine = net.ledger.post_transactions(
        [
            pay(positions["hilltop"], positions["riverbend"], 1, "FRU"),
            pay(net.id("ana:LEAF"), net.id("cai:LEAF"), 1, "LEAF"),
        ]
    )
    assert by_hand_in_a_batch.error is not None
    assert by_hand_in_a_batch.error.code == Code.FORBIDDEN
    assert fine.error is None
    net.ledger.reverse(fine.transaction.id)
    net.ledger.reverse(payment.id)
    assert _positions(net) == {"hilltop": 0, "riverbend": 0, "saltmarsh": 0}


def test_windows_count_whole_utc_days_and_reversals_on_their_own_day(net: Net) -> None:
    first_day = net.clock().date()
    payment = _leaves(net, "ana", "cai", 100)
    net.clock.advance(86_400)
    net.ledger.reverse(payment.id)
    day = dt.timedelta(days=1)

    on_first = net.reciprocity.community("riverbend", DayWindow.of(first_day, first_day + day))
    on_second = net.reciprocity.community(
        "riverbend", DayWindow.of(first_day + day, first_day + 2 * day)
    )
    both = net.reciprocity.community("riverbend", DayWindow.of(first_day, first_day + 2 * day))

    assert (on_first.figures, on_second.figures, both.figures) == (
        Figures(0, 8_000),
        Figures(0, -8_000),
        Figures(0, 0),
    )


def test_free_riders_against_absolute_and_relative_thresholds(net: Net) -> None:
    today = net.clock().date()
    day = dt.timedelta(days=1)
    _leaves(net, "ana", "cai", 100)  # riverbend takes 8,000
    net.clock.advance(86_400)
    _leaves(net, "ana", "cai", 50)  # riverbend takes 4,000 ...
    _leaves(net, "cai", "ana", 10)  # ... and gives 800
    net.reciprocity.set_thresholds(absolute=3_000, relative=Fraction(1, 2), by=FEDERATION)

    report = net.reciprocity.free_riders(DayWindow.of(today + day, today + 2 * day))

    riverbend = report.lines[0]
    assert riverbend.community == "riverbend"
    assert (riverbend.net_intake, riverbend.change, riverbend.flagged) == (3_200, -4_800, True)
    assert riverbend.flagged_previous
    assert [line.flagged for line in report.lines[1:]] == [False, False]
    assert report.previous_window == DayWindow(today, today + day)


@pytest.mark.parametrize(
    ("case", "given", "received", "absolute", "relative", "flagged"),
    [
        ("no thresholds flag nobody", 0, 100, None, None, False),
        ("gives more than it takes", 100, 50, 1, None, False),
        ("below the absolute threshold", 0, 99, 100, None, False),
        ("at the absolute threshold", 0, 100, 100, None, True),
        ("below the relative threshold", 40, 60, None, "1/4", False),
        ("at the relative threshold", 30, 50, None, "1/4", True),
        ("both, one short", 30, 50, 100, "1/4", False),
    ],
)
def test_the_free_rider_rule(
    case: str, given: int, received: int, absolute: int | None, relative: str | None, flagged: bool
) -> None:
    thresholds = Thresholds(
        absolute, None if relative is None else parse_exact(relative), None, None
    )
    assert is_free_riding(Figures(given, received), thresholds) is flagged, case


def test_the_previous_window_stops_at_the_first_day() -> None:
    week = DayWindow.of(dt.date(2026, 11, 9), dt.date(2026, 11, 16))
    first = DayWindow.of(dt.date(1, 1, 3), dt.date(1, 1, 10))

    assert week.previous() == DayWindow(dt.date(2026, 11, 2), dt.date(2026, 11, 9))
    assert first.previous() == DayWindow(dt.date(1, 1, 1), dt.date(1, 1, 3))
    assert DayWindow.of(dt.date.min, dt.date(1, 1, 2)).previous().days == 0


@pytest.mark.parametrize(
    ("value", "text"),
    [(Fraction(1, 4), "0.25"), (Fraction(-1), "-1"), (Fraction(-1, 3), "-1/3"), (Fraction(0), "0")],
)
def test_exact_text_round_trips(value: Fraction, text: str) -> None:
    assert exact_text(value) == text
    assert parse_exact(text) == value


# -- credit lines -------------------------------------------------------------------------------


def test_a_payment_past_the_credit_line_is_refused_and_leaves_nothing(net: Net) -> None:
    net.reciprocity.set_credit_line("riverbend", 5_000, by=FEDERATION)
    _leaves(net, "ana", "cai", 40)  # 3,200 of 5,000
    transactions_before = len(net.ledger.list_transactions(limit=1000).items)
    balance_before = net.ledger.balance(net.id("ana:LEAF"))

    with pytest.raises(LedgerError) as refused:
        _leaves(net, "ana", "cai", 40)

    assert refused.value.code == Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED
    assert refused.value.extra["community"] == "riverbend"
    assert refused.value.extra["headroom"] == 1_800
    assert "riverbend" in refused.value.detail
    assert len(net.ledger.list_transactions(limit=1000).items) == transactions_before
    assert net.ledger.balance(net.id("ana:LEAF")) == balance_before
    _leaves(net, "ana", "cai", 20)  # 1,600 fits
    _leaves(net, "cai", "ana", 1_000)  # giving is never refused
    line = net.reciprocity.credit_line("riverbend")
    assert (line.position, line.headroom) == (-4_800 + 80_000, 80_000 - 4_800 + 5_000)


def test_in_a_group_commit_a_credit_line_refuses_only_the_payment_past_it(
    net: Net, engine: Engine
) -> None:
    """Each payment is judged on the positions the ones before it left, even when a later
    one would bring the total back under the line; the others in its group still go
    through."""
    net.reciprocity.set_credit_line("riverbend", 5_000, by=FEDERATION)
    group = GroupCommit(net.ledger)
    try:
        with writes_held(engine):
            alone = hand_over(group, pay(net.id("ana:HRB"), net.id("bo:HRB"), 1), first=True)
            fits = hand_over(group, pay(net.id("ana:LEAF"), net.id("cai:LEAF"), 40, "LEAF"))
            past = hand_over(group, pay(net.id("ana:LEAF"), net.id("cai:LEAF"), 40, "LEAF"))
            giving = hand_over(group, pay(net.id("cai:LEAF"), net.id("ana:LEAF"), 20, "LEAF"))
        answered(alone, fits, past, giving)
    finally:
        group.close()

    assert group.batches_taken == 2  # the first alone, then the three together
    assert fits.outcome is not None
    assert giving.outcome is not None
    assert isinstance(past.error, LedgerError)
    assert past.error.code == Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED
    assert past.error.extra["headroom"] == 1_800
    assert _positions(net)["riverbend"] == -3_200 + 1_600


def test_a_batch_refuses_only_the_payment_past_a_credit_line(net: Net) -> None:
    """Each payment is judged on the positions the ones before it left, as if posted
    alone in order; the one past the line is refused and the rest post."""
    net.reciprocity.set_credit_line("riverbend", 5_000, by=FEDERATION)
    ana, cai, bo = net.id("ana:LEAF"), net.id("cai:LEAF"), net.id("bo:HRB")
    batch = [
        pay(ana, cai, 40, "LEAF"),  # -3,200
        pay(ana, cai, 40, "LEAF"),  # would be -6,400: past the line
        pay(cai, ana, 20, "LEAF"),  # -1,600
        pay(net.id("ana:HRB"), bo, 1),  # within riverbend: no flow
        pay(ana, cai, 40, "LEAF"),  # -4,800: fits once the second is refused
    ]
    ana_before = net.ledger.balance(ana)

    outcomes = net.ledger.post_transactions(batch)

    refused = outcomes[1].error
    assert isinstance(refused, LedgerError)
    assert refused.code == Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED
    assert (refused.extra["position"], refused.extra["headroom"]) == (-3_200, 1_800)
    assert [o.error is None for o in outcomes] == [True, False, True, True, True]
    assert _positions(net)["riverbend"] == -4_800
    assert net.ledger.balance(ana).posted == ana_before.posted - 40 + 20 - 40
    assert net.reciprocity.verify() == []


def test_an_atomic_batch_past_a_credit_line_writes_nothing(net: Net) -> None:
    net.reciprocity.set_credit_line("riverbend", 5_000, by=FEDERATION)
    ana, cai = net.id("ana:LEAF"), net.id("cai:LEAF")
    batch = [pay(ana, cai, 40, "LEAF"), pay(ana, cai, 40, "LEAF"), pay(cai, ana, 20, "LEAF")]
    transactions_before = len(net.ledger.list_transactions(limit=1000).items)

    outcomes = net.ledger.post_transactions(batch, atomic=True)

    assert [o.error.code if o.error else None for o in outcomes] == [
        Code.BATCH_ITEM_FAILED,
        Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED,
        Code.BATCH_ITEM_FAILED,
    ]
    assert _positions(net).get("riverbend", 0) == 0
    assert len(net.ledger.list_transactions(limit=1000).items) == transactions_before
    net.ledger.post_transactions([batch[0], batch[2], batch[1]], atomic=True)  # never past it
    assert _positions(net)["riverbend"] == -4_800


def test_a_hold_is_judged_when_it_is_posted(net: Net) -> None:
    net.reciprocity.set_credit_line("riverbend", 1_000, by=FEDERATION)
    held = net.ledger.post_transaction(
        hold(net.id("ana:LEAF"), net.id("cai:LEAF"), 100, "LEAF")
    ).transaction
    assert held is not None

    with pytest.raises(LedgerError) as refused:
        net.ledger.post_pending(held.id)

    assert refused.value.code == Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED
    net.ledger.post_pending(held.id, [10])  # 800 fits
    assert _positions(net)["riverbend"] == -800


def test_a_tightened_line_stops_intake_but_not_giving(net: Net) -> None:
    _leaves(net, "ana", "cai", 100)
    net.reciprocity.set_credit_line("riverbend", 0, by=FEDERATION)

    with pytest.raises(LedgerError):
        _leaves(net, "ana", "cai", 1)
    _leaves(net, "cai", "ana", 1)
    net.reciprocity.set_credit_line("riverbend", None, by=FEDERATION)
    _leaves(net, "ana", "cai", 1)
    assert net.reciprocity.credit_line("riverbend").credit_limit is None


@pytest.mark.postgres_only
@pytest.mark.slow
def test_concurrent_payments_never_jointly_pass_a_credit_line(
    net: Net, engine: Engine, clock: Clock
) -> None:
    """Twelve riverbend members each pay a different hilltop member 1 Leaf (80 units) at
    once, four times, every other time as a hold posted at once: a line of 20 payments'
    worth lets exactly 20 through. And the writers queue on locks rather than colliding:
    a posted transaction and a posted hold reach the observer at different points of the
    ledger's unit of work, and no order of theirs may deadlock."""
    workers, rounds, limit = 12, 4, 20 * 80
    payers, payees = [], []
    for index in range(workers):
        for community, names in (("riverbend", payers), ("hilltop", payees)):
            account = net.ledger.open_account(
                community=community, currency="LEAF", type=AccountType.MEMBER, name=f"m{index}"
            ).id
            net.ledger.post_transaction(pay(net.id("issuance:LEAF"), account, 100, "LEAF"))
            names.append(account)
    net.reciprocity.set_credit_line("riverbend", limit, by=FEDERATION)
    barrier = threading.Barrier(workers, timeout=30)

    def work(index: int) -> Counter[str]:
        own = _observed(engine, clock)
        outcomes: Counter[str] = Counter()
        barrier.wait()
        for attempt in range(rounds):
            draft = pay(payers[index], payees[index], 1, "LEAF")
            try:
                if attempt % 2:
                    own.post_transaction(draft)
                else:
                    held = own.post_transaction(hold(payers[index], payees[index], 1, "LEAF"))
                    assert held.transaction is not None
                    try:
                        own.post_pending(held.transaction.id)
                    except LedgerError:
                        own.void_pending(held.transaction.id)
                        raise
                outcomes["paid"] += 1
            except LedgerError as error:
                outcomes[error.code] += 1
        return outcomes

    errors: list[str] = []

    def record(context: ExceptionContext) -> None:
        errors.append(str(getattr(context.original_exception, "sqlstate", "")))

    event.listen(engine, "handle_error", record)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(work, range(workers)))
    finally:
        event.remove(engine, "handle_error", record)
    total = sum(results, Counter())

    assert total["paid"] == 20
    assert total[Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED] == workers * rounds - 20
    assert _positions(net)["riverbend"] == -limit
    assert errors == [], "writers deadlocked instead of queueing on locks"
    assert net.reciprocity.verify() == []


# -- clearing ------------------------------------------------------------------------------------


@pytest.fixture
def circle(net: Net) -> Net:
    """hilltop gave riverbend 80.00, saltmarsh gave hilltop 40.00, riverbend gave
    saltmarsh 56.00: riverbend owes hilltop, hilltop owes saltmarsh, saltmarsh owes
    riverbend. 40.00 goes round."""
    _leaves(net, "ana", "cai", 100)
    _leaves(net, "cai", "dee", 50)
    _leaves(net, "dee", "ana", 70)
    return net


def test_a_clearing_proposal_cancels_the_circle_and_execution_keeps_positions(
    circle: Net,
) -> None:
    net = circle
    positions = _positions(net)

    proposal = net.reciprocity.propose_clearing(by=FEDERATION)

    assert (proposal.gross_before, proposal.gross_after, proposal.total_cleared) == (
        17_600,
        5_600,
        12_000,
    )
    assert [(set(cycle), amount) for cycle, amount in proposal.cycles] == [
        ({"hilltop", "riverbend", "saltmarsh"}, 4_000)
    ]
    assert {e.community: (e.owes_before, e.owes_after) for e in proposal.effects} == {
        "hilltop": (4_000, 0),
        "riverbend": (8_000, 4_000),
        "saltmarsh": (5_600, 1_600),
    }
    assert proposal.status == "proposed"

    executed = net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)

    assert executed.status == "executed"
    assert len(executed.transaction_ids) == 1
    assert _positions(net) == positions
    assert [(o.debtor, o.creditor, o.amount) for o in net.reciprocity.obligations()] == [
        ("riverbend", "hilltop", 4_000),
        ("saltmarsh", "riverbend", 1_600),
    ]
    booked = net.ledger.get_transaction(executed.transaction_ids[0])
    assert sorted(p.amount for p in booked.postings) == [4_000, 4_000, 4_000]
    # Reciprocity is what moved; clearing changes obligations, not history.
    assert net.reciprocity.community("riverbend").figures == Figures(5_600, 8_000)


def test_executing_twice_answers_the_same_and_books_once(circle: Net) -> None:
    net = circle
    proposal = net.reciprocity.propose_clearing(by=FEDERATION)
    first = net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)
    transactions = len(net.ledger.list_transactions(limit=1000).items)

    again = net.reciprocity.execute_clearing(proposal.id, by="key:2")

    assert again == first
    assert len(net.ledger.list_transactions(limit=1000).items) == transactions


def test_a_stale_proposal_is_refused_and_changes_nothing(circle: Net) -> None:
    net = circle
    proposal = net.reciprocity.propose_clearing(by=FEDERATION)
    _leaves(net, "ana", "cai", 1)
    obligations = net.reciprocity.obligations()

    with pytest.raises(LedgerError) as refused:
        net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)

    assert refused.value.code == Code.CLEARING_OBLIGATIONS_CHANGED
    assert net.reciprocity.obligations() == obligations
    assert net.reciprocity.clearing(proposal.id).status == "proposed"
    with pytest.raises(LedgerError) as missing:
        net.reciprocity.execute_clearing("clr_nothing", by=FEDERATION)
    assert missing.value.code == Code.NOT_FOUND


def test_the_settlement_plan_pays_what_remains_in_currencies_the_protocols_allow(
    circle: Net,
) -> None:
    net = circle
    plan = net.reciprocity.settlement_plan()

    assert {(p.payer, p.payee, p.amount) for p in plan} == {
        ("riverbend", "hilltop", 2_400),
        ("saltmarsh", "hilltop", 1_600),
    }
    ways = {
        p.payer: [(c.from_currency, c.to_currency, c.protocol_version) for c in p.currencies]
        for p in plan
    }
    assert ways == {
        # Both hold LEAF and HRB (eve, in hilltop, holds HRB); protocols convert HRB and
        # LEAF into HHT; nothing converts riverbend's HSM.
        "riverbend": [
            ("HRB", "HRB", None),
            ("LEAF", "LEAF", None),
            ("HRB", "HHT", 1),
            ("LEAF", "HHT", 1),
        ],
        # Saltmarsh holds LEAF and HSM; LEAF -> HHT has a protocol, HSM none.
        "saltmarsh": [("LEAF", "LEAF", None), ("LEAF", "HHT", 1)],
    }

    # A protocol a member could not use now is no way to pay: closed, or providers only.
    next_month = net.clock().month % 12 + 1
    net.exchange.propose(
        ProtocolSpec("LEAF", "HHT", windows=(Window(months=(next_month,)),)),
        by=FEDERATION,
        reason="Leaves buy Hearts next month only",
    )
    net.exchange.propose(
        ProtocolSpec("HRB", "HHT", eligible_account_types=(AccountType.PROVIDER,)),
        by=FEDERATION,
        reason="providers only",
    )
    ways = {
        p.payer: [(c.from_currency, c.to_currency) for c in p.currencies]
        for p in net.reciprocity.settlement_plan()
    }
    assert ways == {
        "riverbend": [("HRB", "HRB"), ("LEAF", "LEAF")],
        "saltmarsh": [("LEAF", "LEAF")],
    }


def test_concurrent_executions_book_the_clearing_once(
    circle: Net, engine: Engine, clock: Clock
) -> None:
    """Four executions of one proposal at once (real commits on both databases): one
    books it, the others wait for it and answer with its result."""
    proposal = circle.reciprocity.propose_clearing(by=FEDERATION)
    barrier = threading.Barrier(4, timeout=30)

    def execute(_index: int) -> Any:
        own = Reciprocity(_observed(engine, clock))
        barrier.wait()
        return own.execute_clearing(proposal.id, by=FEDERATION)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(execute, range(4)))

    assert all(answer == answers[0] for answer in answers)
    booked = circle.ledger.list_transactions(category="reciprocity", limit=1000).items
    assert [t.id for t in booked if t.metadata.get("clearing_proposal") == proposal.id] == list(
        answers[0].transaction_ids
    )


def test_the_reference_unit_stays_once_flows_are_recorded_in_it(net: Net) -> None:
    net.ledger.create_currency("NEW", kind=CurrencyKind.UNIT, scale=2, name="New", symbol="¤")
    net.exchange.configure(reference_unit="FRU", federation_community="federation")  # same: fine
    _leaves(net, "ana", "cai", 100)
    with pytest.raises(LedgerError) as raised:
        net.exchange.configure(reference_unit="NEW", federation_community="federation")
    assert (raised.value.code, raised.value.field) == (Code.INVALID_REQUEST, "reference_unit")
    assert net.exchange.settings().reference_unit == "FRU"


def test_the_feed_shows_a_payment_before_the_bookkeeping_of_its_flow(net: Net) -> None:
    last = net.ledger.events_after(0, limit=1000)[-1].sequence
    payment = _leaves(net, "ana", "cai", 100)
    events = [e for e in net.ledger.events_after(last, limit=1000) if e.transaction_id]
    assert [e.transaction_id for e in events] == [payment.id, payment.id + 1]  # flow booked
    assert events[0].at <= events[1].at


# -- settlements ----------------------------------------------------------------------------------


def _settles(debtor: str, creditor: str, basis: str = PLAN_BASIS) -> dict[str, Any]:
    return {"settles": {"debtor": debtor, "creditor": creditor, "basis": basis}}


def _settle(
    net: Net, payer: str, payee: str, leaves: int, metadata: dict[str, Any] | None
) -> Transaction:
    """``payer`` pays ``payee`` in LEAF (80.00 units per 100), categorised settlement."""
    outcome = net.ledger.post_transaction(
        pay(
            net.id(f"{payer}:LEAF"),
            net.id(f"{payee}:LEAF"),
            leaves,
            "LEAF",
            category="settlement",
            metadata=metadata or {},
        )
    )
    assert outcome.transaction is not None
    return outcome.transaction


def _refused(net: Net, work: Any) -> LedgerError:
    """The refusal of ``work``, after checking that it wrote nothing."""
    before = (
        net.ledger.list_transactions(limit=1000).items,
        _positions(net),
        net.reciprocity.matrix(),
    )
    with pytest.raises(LedgerError) as refused:
        work()
    after = (
        net.ledger.list_transactions(limit=1000).items,
        _positions(net),
        net.reciprocity.matrix(),
    )
    assert after == before
    return refused.value


def test_a_purchase_labelled_settlement_without_a_reference_is_trade(net: Net) -> None:
    _leaves(net, "ana", "cai", 100)  # hilltop gave riverbend 80.00 units
    labelled = _settle(net, "ana", "cai", 100, None)

    # The label is just a label: hilltop's members delivered again, so hilltop gave again.
    assert net.reciprocity.recorded_flows(labelled.id) == [("hilltop", "riverbend", 8_000)]
    assert _positions(net) == {"hilltop": 16_000, "riverbend": -16_000, "saltmarsh": 0}
    assert [(p.payer, p.payee, p.amount) for p in net.reciprocity.settlement_plan()] == [
        ("riverbend", "hilltop", 16_000)
    ]
    # ``settles`` on a payment of another category means nothing either.
    other = _leaves_with(net, "ana", "cai", 10, category="care", metadata=_settles(*PAIR))
    assert net.reciprocity.recorded_flows(other.id) == [("hilltop", "riverbend", 800)]


PAIR = ("riverbend", "hilltop")


def _leaves_with(net: Net, payer: str, payee: str, amount: int, **fields: Any) -> Transaction:
    outcome = net.ledger.post_transaction(
        pay(net.id(f"{payer}:LEAF"), net.id(f"{payee}:LEAF"), amount, "LEAF", **fields)
    )
    assert outcome.transaction is not None
    return outcome.transaction


def test_a_settlement_naming_a_plan_line_is_given_by_its_payer_and_settles_the_plan(
    net: Net,
) -> None:
    _leaves(net, "ana", "cai", 100)  # hilltop gave riverbend 80.00 units
    assert _positions(net)["riverbend"] == -8_000
    plan = net.reciprocity.settlement_plan()
    assert [(p.payer, p.payee, p.amount) for p in plan] == [("riverbend", "hilltop", 8_000)]

    settled = _settle(net, "ana", "cai", 100, _settles("riverbend", "hilltop"))

    assert net.reciprocity.recorded_flows(settled.id) == [("riverbend", "hilltop", 8_000)]
    assert settled.metadata == _settles("riverbend", "hilltop")  # the payment says it
    assert _positions(net) == {"hilltop": 0, "riverbend": 0, "saltmarsh": 0}
    assert net.reciprocity.settlement_plan() == []
    assert net.reciprocity.obligations() == []
    assert net.reciprocity.verify() == []

    reversal = net.ledger.reverse(settled.id).transaction  # undoing it reopens the debt
    assert reversal is not None
    assert net.reciprocity.recorded_flows(reversal.id) == [("riverbend", "hilltop", -8_000)]
    assert _positions(net)["riverbend"] == -8_000
    assert [(p.payer, p.payee, p.amount) for p in net.reciprocity.settlement_plan()] == [
        ("riverbend", "hilltop", 8_000)
    ]
    assert net.reciprocity.verify() == []


def test_a_settlement_pays_no_more_than_the_plan_line_leaves(net: Net) -> None:
    _leaves(net, "ana", "cai", 100)  # riverbend owes hilltop 8,000
    _settle(net, "ana", "cai", 50, _settles(*PAIR))  # 4,000 paid, 4,000 left

    refused = _refused(net, lambda: _settle(net, "ana", "cai", 51, _settles(*PAIR)))

    assert refused.code == Code.SETTLEMENT_EXCEEDS_OUTSTANDING
    assert refused.extra == {
        "debtor": "riverbend",
        "creditor": "hilltop",
        "basis": PLAN_BASIS,
        "outstanding": 4_000,
        "required": 4_080,
    }
    _settle(net, "ana", "cai", 50, _settles(*PAIR))  # exactly what is left
    assert _positions(net) == {"hilltop": 0, "riverbend": 0, "saltmarsh": 0}
    refused = _refused(net, lambda: _settle(net, "ana", "cai", 1, _settles(*PAIR)))
    assert refused.code == Code.SETTLEMENT_OBLIGATION_NOT_FOUND


@pytest.mark.parametrize(
    ("reference", "code"),
    [
        ("riverbend owes hilltop", Code.SETTLEMENT_REFERENCE_INVALID),
        ({"debtor": "riverbend", "creditor": "hilltop"}, Code.SETTLEMENT_REFERENCE_INVALID),
        (
            {"debtor": "riverbend", "creditor": "hilltop", "basis": PLAN_BASIS, "amount": 1},
            Code.SETTLEMENT_REFERENCE_INVALID,
        ),
        (
            {"debtor": "riverbend", "creditor": "hilltop", "basis": 7},
            Code.SETTLEMENT_REFERENCE_INVALID,
        ),
        (
            {"debtor": "riverbend", "creditor": "hilltop", "basis": "the plan"},
            Code.SETTLEMENT_REFERENCE_INVALID,
        ),
        (
            {"debtor": "riverbend", "creditor": "riverbend", "basis": PLAN_BASIS},
            Code.SETTLEMENT_REFERENCE_INVALID,
        ),
        # The payment goes riverbend -> hilltop; a reference to another pair does not fit it.
        (
            {"debtor": "riverbend", "creditor": "saltmarsh", "basis": PLAN_BASIS},
            Code.SETTLEMENT_REFERENCE_INVALID,
        ),
        (
            {"debtor": "nowhere", "creditor": "hilltop", "basis": PLAN_BASIS},
            Code.SETTLEMENT_OBLIGATION_NOT_FOUND,
        ),
        (
            {"debtor": "federation", "creditor": "hilltop", "basis": PLAN_BASIS},
            Code.SETTLEMENT_OBLIGATION_NOT_FOUND,
        ),
        (
            {"debtor": "riverbend", "creditor": "hilltop", "basis": "clr_none"},
            Code.SETTLEMENT_OBLIGATION_NOT_FOUND,
        ),
    ],
)
def test_a_reference_that_names_no_obligation_of_the_payment_is_refused(
    net: Net, reference: Any, code: Code
) -> None:
    _leaves(net, "ana", "cai", 100)  # riverbend owes hilltop 8,000

    refused = _refused(net, lambda: _settle(net, "ana", "cai", 10, {"settles": reference}))

    assert refused.code == code


def test_a_settlement_the_plan_does_not_hold_is_refused(net: Net) -> None:
    _leaves(net, "ana", "cai", 100)  # riverbend owes hilltop, not the other way round
    refused = _refused(
        net, lambda: _settle(net, "cai", "ana", 10, _settles("hilltop", "riverbend"))
    )
    assert refused.code == Code.SETTLEMENT_OBLIGATION_NOT_FOUND
    # Nor does anyone owe saltmarsh.
    refused = _refused(
        net, lambda: _settle(net, "ana", "dee", 10, _settles("riverbend", "saltmarsh"))
    )
    assert refused.code == Code.SETTLEMENT_OBLIGATION_NOT_FOUND


def test_a_settlement_in_an_unvalued_currency_is_refused(net: Net) -> None:
    _leaves(net, "ana", "dee", 100)  # riverbend owes saltmarsh 8,000
    draft = pay(
        net.id("fin:HSM"),  # riverbend's account in saltmarsh's HSM, which has no valuation
        net.id("dee:HSM"),
        100,
        "HSM",
        category="settlement",
        metadata=_settles("riverbend", "saltmarsh"),
    )
    refused = _refused(net, lambda: net.ledger.post_transaction(draft))
    assert refused.code == Code.SETTLEMENT_REFERENCE_INVALID


def test_in_a_batch_two_settlements_of_one_line_cannot_both_pay_it(net: Net) -> None:
    _leaves(net, "ana", "cai", 100)  # riverbend owes hilltop 8,000
    draft = pay(
        net.id("ana:LEAF"),
        net.id("cai:LEAF"),
        100,
        "LEAF",
        category="settlement",
        metadata=_settles(*PAIR),
    )

    first, second = net.ledger.post_transactions([draft, draft])

    assert first.transaction is not None
    assert second.error is not None
    assert second.error.code == Code.SETTLEMENT_OBLIGATION_NOT_FOUND
    assert _positions(net) == {"hilltop": 0, "riverbend": 0, "saltmarsh": 0}


def test_a_settlement_is_judged_when_its_hold_is_posted(net: Net) -> None:
    _leaves(net, "ana", "cai", 100)  # riverbend owes hilltop 8,000
    held = net.ledger.post_transaction(
        hold(
            net.id("ana:LEAF"),
            net.id("cai:LEAF"),
            100,
            "LEAF",
            category="settlement",
            metadata=_settles(*PAIR),
        )
    ).transaction
    assert held is not None
    _settle(net, "ana", "cai", 50, _settles(*PAIR))  # half of it paid meanwhile

    refused = _refused(net, lambda: net.ledger.post_pending(held.id))
    assert refused.code == Code.SETTLEMENT_EXCEEDS_OUTSTANDING

    net.ledger.post_pending(held.id, [50])  # what is left
    assert _positions(net) == {"hilltop": 0, "riverbend": 0, "saltmarsh": 0}


def test_a_settlement_of_a_clearing_result_pays_what_it_left(circle: Net) -> None:
    net = circle
    proposal = net.reciprocity.propose_clearing(by=FEDERATION)
    refused = _refused(
        net, lambda: _settle(net, "ana", "cai", 10, _settles(*PAIR, basis=proposal.id))
    )
    assert refused.code == Code.SETTLEMENT_OBLIGATION_NOT_FOUND  # proposed, not executed
    executed = net.reciprocity.execute_clearing(proposal.id, by=FEDERATION)
    assert ("riverbend", "hilltop", 4_000) in [
        (o.debtor, o.creditor, o.amount) for o in executed.remaining
    ]
    reference = _settles(*PAIR, basis=proposal.id)

    first = _settle(net, "ana", "cai", 25, reference)  # 2,000 of 4,000
    assert net.reciprocity.recorded_flows(first.id) == [("riverbend", "hilltop", 2_000)]
    refused = _refused(net, lambda: _settle(net, "ana", "cai", 26, reference))
    assert refused.code == Code.SETTLEMENT_EXCEEDS_OUTSTANDING
    assert (refused.extra or {}).get("outstanding") == 2_000
    _settle(net, "ana", "cai", 25, reference)
    refused = _refused(net, lambda: _settle(net, "ana", "cai", 1, reference))
    assert refused.code == Code.SETTLEMENT_OBLIGATION_NOT_FOUND
    assert [(o.debtor, o.creditor, o.amount) for o in net.reciprocity.obligations()] == [
        ("saltmarsh", "riverbend", 1_600)
    ]

    net.ledger.reverse(first.id)  # reopens what it paid, and only that
    refused = _refused(net, lambda: _settle(net, "ana", "cai", 26, reference))
    assert (refused.extra or {}).get("outstanding") == 2_000
    _settle(net, "ana", "cai", 25, reference)

    # Trade since the clearing lowers what is owed, and the settlement with it.
    _leaves(net, "ana", "dee", 5)  # saltmarsh gave riverbend 400: it owes 1,200 of 1,600
    saltmarsh = _settles("saltmarsh", "riverbend", basis=proposal.id)
    refused = _refused(net, lambda: _settle(net, "dee", "ana", 16, saltmarsh))  # 1,280
    assert (refused.extra or {}).get("outstanding") == 1_200
    _leaves(net, "dee", "ana", 10)  # and trade the other way owes more than clearing left
    refused = _refused(net, lambda: _settle(net, "dee", "ana", 21, saltmarsh))  # 1,680
    assert (refused.extra or {}).get("outstanding") == 1_600
    # A newer executed clearing replaces this one's result.
    net.reciprocity.execute_clearing(net.reciprocity.propose_clearing(by=FEDERATION).id, by="k")
    refused = _refused(net, lambda: _settle(net, "dee", "ana", 20, saltmarsh))
    assert refused.code == Code.SETTLEMENT_OBLIGATION_NOT_FOUND
    assert net.reciprocity.verify() == []
