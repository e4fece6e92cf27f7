"""Conversions through the federation's protocols, every refusal by its code, on both databases."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from fractions import Fraction

import pytest
from sqlalchemy import Engine

from exchange.model import ProtocolSpec, Window
from exchange.service import Exchange
from ledger.errors import Code, LedgerError
from ledger.model import AccountStatus, AccountType, CurrencyKind
from ledger.service import Ledger
from tests.conftest import Clock
from tests.ledger.builders import pay

FEDERATION = "key:1"


@dataclass(frozen=True)
class Market:
    exchange: Exchange
    ana_hearts: int  # riverbend member, HRB (scale 2)
    ana_leaves: int  # riverbend member, LEAF (scale 0)
    provider_hearts: int  # riverbend chartered provider, HRB
    cai_hearts: int  # hilltop member, HHT (scale 2)
    sek_account: int  # an external account in SEK (scale 2)


def _market(ledger: Ledger, approvals_required: int = 0) -> Market:
    ledger.create_community("federation", "The federation")
    ledger.create_community("riverbend", "Riverbend")
    ledger.create_community("hilltop", "Hilltop")
    ledger.create_currency(
        "FRU", kind=CurrencyKind.UNIT, scale=2, name="Reference unit", symbol="¤"
    )
    ledger.create_currency(
        "HRB",
        kind=CurrencyKind.HEARTS,
        scale=2,
        name="Riverbend Hearts",
        symbol="♡",
        issuer="riverbend",
    )
    ledger.create_currency(
        "HHT",
        kind=CurrencyKind.HEARTS,
        scale=2,
        name="Hilltop Hearts",
        symbol="♡",
        issuer="hilltop",
    )
    ledger.create_currency("LEAF", kind=CurrencyKind.LEAVES, scale=0, name="Leaves", symbol="🍃")
    ledger.create_currency(
        "SEK", kind=CurrencyKind.EXTERNAL, scale=2, name="Swedish krona", symbol="kr"
    )

    def open_(
        community: str, currency: str, name: str, kind: AccountType = AccountType.MEMBER
    ) -> int:
        return ledger.open_account(community=community, currency=currency, type=kind, name=name).id

    accounts = {
        "ana_hearts": open_("riverbend", "HRB", "ana"),
        "ana_leaves": open_("riverbend", "LEAF", "ana"),
        "provider_hearts": open_("riverbend", "HRB", "clinic", AccountType.PROVIDER),
        "cai_hearts": open_("hilltop", "HHT", "cai"),
        "sek_account": open_("riverbend", "SEK", "bank"),
    }
    for code, community in (("HRB", "riverbend"), ("LEAF", "riverbend")):
        issuance = open_(community, code, "issuance", AccountType.ISSUANCE)
        for account in accounts.values():
            if ledger.get_account(account).currency == code:
                ledger.post_transaction(pay(issuance, account, 100_000, code))
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="federation")
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("HHT", "1"), ("LEAF", "4/5"), ("SEK", "9/200")):
        exchange.set_valuation(code, Fraction(rate), by=FEDERATION, reason="founding")
    if approvals_required:
        # The founding valuations are in force; from here on changes wait for approvals.
        exchange.configure(
            reference_unit="FRU",
            federation_community="federation",
            approvals_required=approvals_required,
        )
    return Market(exchange, **accounts)


@pytest.fixture
def market(ledger: Ledger) -> Market:
    m = _market(ledger)
    m.exchange.propose(ProtocolSpec("HRB", "HHT"), by=FEDERATION, reason="Hearts at valuation")
    m.exchange.propose(
        ProtocolSpec("LEAF", "HRB", fee_bps=50), by=FEDERATION, reason="Leaves buy Hearts"
    )
    m.exchange.propose(
        ProtocolSpec(
            "HRB", "SEK", fixed_rate=Fraction(22), eligible_account_types=(AccountType.PROVIDER,)
        ),
        by=FEDERATION,
        reason="Providers redeem Hearts at 22 SEK",
    )
    m.exchange.propose(
        ProtocolSpec("LEAF", "SEK", allowed=False), by=FEDERATION, reason="No speculation"
    )
    return m


def test_a_member_pays_another_community_in_its_own_hearts(ledger: Ledger, market: Market) -> None:
    outcome = market.exchange.convert(
        payer_account_id=market.ana_hearts,
        payee_account_id=market.cai_hearts,
        source_amount=1_250,
        memo="Eldercare visit",
    )
    assert outcome.transaction is not None
    assert ledger.balance(market.ana_hearts).posted == 100_000 - 1_250
    assert ledger.balance(market.cai_hearts).posted == 1_250
    ana_line = ledger.statement(market.ana_hearts).items[-1]
    cai_line = ledger.statement(market.cai_hearts).items[-1]
    assert (ana_line.amount, cai_line.amount) == (-1_250, 1_250)
    assert ana_line.transaction_id == cai_line.transaction_id


def test_leaves_buy_hearts_with_a_fee_and_exact_amounts(ledger: Ledger, market: Market) -> None:
    quote = market.exchange.quote(
        payer_account_id=market.ana_leaves, to_currency="HRB", source_amount=1_000
    )
    # 1 Leaf = 0.8 unit = 0.8 Heart = 80 Heart minor units; fee 0.5% of 1,000 rounds up to 5.
    assert (quote.fee, quote.rate, quote.target_amount) == (5, Fraction(80), 995 * 80)
    outcome = market.exchange.convert(
        payer_account_id=market.ana_leaves, payee_account_id=market.ana_hearts, quote_id=quote.id
    )
    assert outcome.transaction is not None
    assert ledger.balance(market.ana_leaves).posted == 100_000 - 1_000
    assert ledger.balance(market.ana_hearts).posted == 100_000 + 79_600
    with pytest.raises(LedgerError) as again:
        market.exchange.convert(
            payer_account_id=market.ana_leaves,
            payee_account_id=market.ana_hearts,
            quote_id=quote.id,
        )
    assert again.value.code == Code.QUOTE_USED


def test_a_replay_with_the_same_client_id_converts_once(ledger: Ledger, market: Market) -> None:
    first = market.exchange.convert(
        payer_account_id=market.ana_hearts,
        payee_account_id=market.cai_hearts,
        source_amount=500,
        client_id="conv-1",
    )
    again = market.exchange.convert(
        payer_account_id=market.ana_hearts,
        payee_account_id=market.cai_hearts,
        source_amount=500,
        client_id="conv-1",
    )
    assert again.replayed
    assert again.transaction == first.transaction
    assert ledger.balance(market.cai_hearts).posted == 500


def _refusal(market: Market, **changes: object) -> Code:
    arguments: dict[str, object] = {
        "payer_account_id": market.ana_hearts,
        "payee_account_id": market.cai_hearts,
        "source_amount": 100,
    }
    arguments.update(changes)
    with pytest.raises(LedgerError) as raised:
        market.exchange.convert(**arguments)  # type: ignore[arg-type]
    return raised.value.code


def test_refusals_each_with_its_code(ledger: Ledger, market: Market, clock: Clock) -> None:
    exchange = market.exchange
    assert (
        _refusal(market, payee_account_id=market.sek_account, payer_account_id=market.ana_leaves)
        == Code.CONVERSION_FORBIDDEN
    )
    assert _refusal(market, payee_account_id=market.sek_account) == Code.ACCOUNT_NOT_ELIGIBLE
    assert (
        _refusal(market, payer_account_id=market.cai_hearts, payee_account_id=market.sek_account)
        == Code.CONVERSION_NOT_ALLOWED
    )
    assert (
        _refusal(
            market,
            source_amount=1,
            payer_account_id=market.ana_hearts,
            payee_account_id=market.ana_leaves,
        )
        == Code.CONVERSION_NOT_ALLOWED
    )
    assert _refusal(market, source_amount=2**53) == Code.AMOUNT_OUT_OF_RANGE
    assert _refusal(market, source_amount=10**6) == Code.INSUFFICIENT_FUNDS

    quote = exchange.quote(payer_account_id=market.ana_hearts, to_currency="HHT", source_amount=100)
    assert (
        _refusal(market, quote_id=quote.id, payee_account_id=market.sek_account)
        == Code.QUOTE_MISMATCH
    )
    assert _refusal(market, quote_id="q_missing") == Code.QUOTE_NOT_FOUND
    clock.advance(61)
    assert _refusal(market, quote_id=quote.id) == Code.QUOTE_EXPIRED

    quote = exchange.quote(payer_account_id=market.ana_hearts, to_currency="HHT", source_amount=100)
    exchange.propose(ProtocolSpec("HRB", "HHT", fee_bps=10), by=FEDERATION, reason="a small fee")
    assert _refusal(market, quote_id=quote.id) == Code.PROTOCOL_CHANGED
    assert _refusal(market, source_amount=100, max_slippage_bps=5) == Code.SLIPPAGE_EXCEEDED

    exchange.suspend("HRB", "HHT", by=FEDERATION, reason="audit")
    assert _refusal(market) == Code.PROTOCOL_SUSPENDED
    exchange.resume("HRB", "HHT", by=FEDERATION, reason="audit done")

    exchange.propose(
        ProtocolSpec("HRB", "HHT", windows=(Window(months=(((clock().month % 12) + 1),)),)),
        by=FEDERATION,
        reason="next month only",
    )
    assert _refusal(market) == Code.WINDOW_CLOSED

    exchange.propose(
        ProtocolSpec("HRB", "HHT", limits={"account_daily": 150}), by=FEDERATION, reason="cap"
    )
    exchange.convert(
        payer_account_id=market.ana_hearts, payee_account_id=market.cai_hearts, source_amount=100
    )
    assert _refusal(market, source_amount=51) == Code.CONVERSION_LIMIT_EXCEEDED
    exchange.convert(
        payer_account_id=market.ana_hearts, payee_account_id=market.cai_hearts, source_amount=50
    )

    exchange.propose(
        ProtocolSpec("LEAF", "HRB", fee_bps=9_999), by=FEDERATION, reason="prohibitive"
    )
    with pytest.raises(LedgerError) as raised:
        exchange.convert(
            payer_account_id=market.ana_leaves, payee_account_id=market.ana_hearts, source_amount=1
        )
    assert raised.value.code == Code.CONVERSION_TOO_SMALL


def test_a_refused_conversion_leaves_nothing(ledger: Ledger, market: Market) -> None:
    before = [ledger.balance(a) for a in (market.ana_hearts, market.cai_hearts)]
    assert _refusal(market, source_amount=10**6) == Code.INSUFFICIENT_FUNDS
    assert [ledger.balance(a) for a in (market.ana_hearts, market.cai_hearts)] == before


def test_rates_that_would_multiply_value_round_a_circle_are_refused(market: Market) -> None:
    market.exchange.propose(
        ProtocolSpec("SEK", "HRB", fixed_rate=Fraction(1, 25)), by=FEDERATION, reason="buy back"
    )  # Hearts sell at 22 SEK and buy back at 25 SEK: 22 x 1/25 < 1
    with pytest.raises(LedgerError) as raised:
        market.exchange.propose(
            ProtocolSpec("SEK", "HRB", fixed_rate=Fraction(1, 20)), by=FEDERATION, reason="cheaper"
        )  # 22 x 1/20 = 1.1 > 1
    assert raised.value.code == Code.ARBITRAGE_CYCLE
    assert raised.value.extra["cycle"] in (("HRB", "SEK", "HRB"), ("SEK", "HRB", "SEK"))
    assert market.exchange.protocol_in_force("SEK", "HRB").spec.fixed_rate == Fraction(1, 25)


def test_four_eyes_keeps_a_change_waiting_for_another_key(ledger: Ledger) -> None:
    market = _market(ledger, approvals_required=1)
    proposed = market.exchange.propose(
        ProtocolSpec("HRB", "HHT"), by="key:1", reason="open the pair"
    )
    assert proposed.state == "proposed"
    assert _refusal(market) == Code.CONVERSION_NOT_ALLOWED
    with pytest.raises(LedgerError) as raised:
        market.exchange.approve(proposed.id, by="key:1")
    assert raised.value.code == Code.APPROVAL_INVALID
    approved = market.exchange.approve(proposed.id, by="key:2")
    assert approved.state == "active"
    market.exchange.convert(
        payer_account_id=market.ana_hearts, payee_account_id=market.cai_hearts, source_amount=10
    )


def test_history_answers_the_rate_in_force_at_any_past_instant(
    market: Market, clock: Clock
) -> None:
    before = clock()
    clock.advance(1)
    market.exchange.set_valuation("LEAF", Fraction(9, 10), by=FEDERATION, reason="review")
    assert market.exchange.valuation_at("LEAF", before).rate == Fraction(4, 5)
    assert market.exchange.valuation_at("LEAF").rate == Fraction(9, 10)
    first = market.exchange.protocol_in_force("LEAF", "HRB", before)
    market.exchange.propose(
        ProtocolSpec("LEAF", "HRB", fee_bps=100), by=FEDERATION, reason="raise fee"
    )
    assert market.exchange.protocol_in_force("LEAF", "HRB", before) == first
    versions = market.exchange.protocol_versions("LEAF", "HRB")
    assert [(v.version, v.spec.fee_bps, v.reason) for v in versions] == [
        (1, 50, "Leaves buy Hearts"),
        (2, 100, "raise fee"),
    ]


@pytest.mark.postgres_only
def test_concurrent_conversions_never_pass_a_daily_limit(
    engine: Engine, ledger: Ledger, market: Market
) -> None:
    market.exchange.propose(
        ProtocolSpec("HRB", "HHT", limits={"community_daily": 1_000}), by=FEDERATION, reason="cap"
    )
    ledger.update_account(market.provider_hearts, status=AccountStatus.OPEN)
    outcomes: list[str] = []

    def convert(payer: int) -> None:
        exchange = Exchange(Ledger(engine, clock=ledger.clock))
        for _ in range(10):
            try:
                exchange.convert(
                    payer_account_id=payer, payee_account_id=market.cai_hearts, source_amount=30
                )
                outcomes.append("ok")
            except LedgerError as error:
                outcomes.append(str(error.code))

    workers = [
        threading.Thread(target=convert, args=(p,))
        for p in [market.ana_hearts, market.provider_hearts] * 4
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert set(outcomes) <= {"ok", "conversion_limit_exceeded"}
    assert outcomes.count("ok") * 30 <= 1_000
    assert outcomes.count("ok") == 1_000 // 30
    assert ledger.balance(market.cai_hearts).posted == outcomes.count("ok") * 30
    assert dt.datetime.now(dt.UTC) > market.exchange.protocol_in_force("HRB", "HHT").effective_from


def test_a_quote_the_conversion_would_refuse_is_refused_at_once(market: Market) -> None:
    for payer, to_currency, code in (
        (market.ana_hearts, "SEK", Code.ACCOUNT_NOT_ELIGIBLE),
        (market.ana_leaves, "SEK", Code.CONVERSION_FORBIDDEN),
    ):
        with pytest.raises(LedgerError) as raised:
            market.exchange.quote(
                payer_account_id=payer, to_currency=to_currency, source_amount=100
            )
        assert raised.value.code == code
    quote = market.exchange.quote(
        payer_account_id=market.provider_hearts, to_currency="SEK", source_amount=100
    )
    assert quote.target_amount > 0
