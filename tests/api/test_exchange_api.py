"""The exchange through the API, on both databases: every rejection code, then the flows.

Each refusal is one row of ``REFUSALS``: a one-line name, a ``prepare`` step that sets the
scene through the API (or the service, for reference data the exchange does not own) and
returns the request to refuse, and the expected code. The test checks the RFC 9457 body
against the catalogue, and that every table of the database holds exactly what it held
before the refused request: nothing was written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import Engine, Table, inspect, select

from api import keys as key_store
from api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE
from exchange import rates
from exchange.service import Exchange
from ledger.errors import CATALOGUE, Code
from ledger.model import AccountType, CurrencyKind
from ledger.service import Ledger
from ledger.tables import Base
from tests.api.conftest import Federation, bearer
from tests.conftest import Clock
from tests.ledger.builders import pay

Headers = dict[str, str]


@dataclass
class Market:
    """The API fixture's federation, plus what exchange needs: the federation's own
    community, the reference unit FRU, SEK, a chartered provider and a bank account.

    Valuations: FRU 1, HRB 1, HHT 1, LEAF 0.8, SEK 9/200. Protocols: HRB -> HHT at
    valuation; LEAF -> HRB at valuation with a 0.5% fee; HRB -> SEK at 22 for providers
    only; LEAF -> SEK forbidden."""

    client: TestClient
    engine: Engine
    clock: Clock
    ledger: Ledger
    federation: Federation
    provider: int  # riverbend, HRB, provider, 5,000 minor units
    bank: int  # riverbend, SEK
    keys: dict[str, Headers] = field(default_factory=dict)

    @property
    def admin(self) -> Headers:
        return self.federation.keys["federation"]

    @property
    def treasurer(self) -> Headers:
        return self.federation.keys["treasurer"]

    def ok(self, method: str, path: str, body: Any = None, headers: Headers | None = None) -> Any:
        response = self.client.request(method, path, json=body, headers=headers or self.admin)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def propose(self, pair: str, **body: Any) -> Any:
        return self.ok("POST", f"/v1/protocols/{pair}", {"reason": "test", **body})

    def quote(self, payer: int, to: str, amount: int, key: str = "treasurer") -> Any:
        body = {"payer_account_id": payer, "to_currency": to, "source_amount": amount}
        return self.ok("POST", "/v1/quotes", body, self.federation.keys[key])

    def convert(self, **body: Any) -> Any:
        return self.ok("POST", "/v1/conversions", self.expecting(body), self.treasurer)

    def expecting(self, body: dict[str, Any]) -> dict[str, Any]:
        """A conversion without a quote names the rate it expects: the rate in force now,
        as a client that priced it a moment ago would (none where the pair has none)."""
        if "quote_id" in body or "expected_rate" in body:
            return body
        payer = self.ledger.get_account(body["payer_account_id"])
        payee = self.ledger.get_account(body["payee_account_id"])
        rate = Exchange(self.ledger).rate_in_force(payer.currency, payee.currency)
        return body if rate is None else {**body, "expected_rate": rates.format_rate(rate)}

    def instant(self, seconds: float = 0) -> str:
        return (self.clock() + dt.timedelta(seconds=seconds)).isoformat()

    @cached_property
    def tables(self) -> tuple[Table, ...]:
        """Every table of the schema that the migrations built."""
        built = set(inspect(self.engine).get_table_names()) - {"alembic_version"}
        tables = tuple(table for table in Base.metadata.sorted_tables if table.name in built)
        assert {table.name for table in tables} == built, "a table the snapshot would miss"
        return tables


@pytest.fixture
def market(client: TestClient, engine: Engine, clock: Clock, federation: Federation) -> Market:
    ledger = Ledger(engine, clock=clock)
    ledger.create_community("federation", "The federation")
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    ledger.create_currency("SEK", kind=CurrencyKind.EXTERNAL, scale=2, name="Krona", symbol="kr")
    provider = ledger.open_account(
        community="riverbend", currency="HRB", type=AccountType.PROVIDER, name="clinic"
    ).id
    ledger.post_transaction(pay(federation.riverbend_issuance, provider, 5_000))
    bank = ledger.open_account(
        community="riverbend", currency="SEK", type=AccountType.MEMBER, name="bank"
    ).id
    market = Market(client, engine, clock, ledger, federation, provider, bank)
    market.ok(
        "PUT",
        "/v1/exchange/settings",
        {"reference_unit": "FRU", "federation_community": "federation"},
    )
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("HHT", "1"), ("LEAF", "0.8")):
        market.ok("POST", "/v1/valuations", {"currency": code, "rate": rate, "reason": "founding"})
    market.ok("POST", "/v1/valuations", {"currency": "SEK", "rate": "9/200", "reason": "founding"})
    market.propose("HRB/HHT")
    market.propose("LEAF/HRB", fee_bps=50)
    market.propose("HRB/SEK", rate="22", eligible_account_types=["provider"])
    market.propose("LEAF/SEK", allowed=False)
    return market


# -- nothing written ----------------------------------------------------------------------------


def snapshot(market: Market) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, except when a key was last used (a read may stamp it)."""
    found = {}
    with market.engine.connect() as connection:
        for table in market.tables:
            columns = [c for c in table.columns if c.name != "last_used_at"]
            order = list(table.primary_key.columns) or columns
            rows = connection.execute(select(*columns).order_by(*order)).all()
            found[table.name] = [tuple(row) for row in rows]
    return found


# -- refusals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    headers: Headers | None = None  # default: the federation key


def _conversion(m: Market, payer: int, payee: int, amount: int = 100, **more: Any) -> Call:
    body = {"payer_account_id": payer, "payee_account_id": payee, "source_amount": amount, **more}
    return Call("POST", "/v1/conversions", m.expecting(body), m.treasurer)


def _hearts_to_hilltop(m: Market, amount: int = 100, **more: Any) -> Call:
    return _conversion(m, m.federation.ana, m.federation.hilltop_member, amount, **more)


def _four_eyes(m: Market, approvals: int = 1) -> Any:
    m.ok(
        "PUT",
        "/v1/exchange/settings",
        {
            "reference_unit": "FRU",
            "federation_community": "federation",
            "approvals_required": approvals,
        },
    )
    return m.propose("HRB/HHT", fee_bps=5)


def _second_key(m: Market) -> Headers:
    _, secret = key_store.create_key(
        m.engine, role=key_store.Role.FEDERATION, community=None, label="second", now=m.clock()
    )
    return bearer(secret)


def _approved_once_by(m: Market) -> Call:
    proposed = _four_eyes(m, approvals=2)
    second = _second_key(m)
    m.ok("POST", f"/v1/protocol-versions/{proposed['id']}/approve", headers=second)
    return Call("POST", f"/v1/protocol-versions/{proposed['id']}/approve", headers=second)


def _settings(m: Market, **more: Any) -> Any:
    body = {"reference_unit": "FRU", "federation_community": "federation", **more}
    return m.ok("PUT", "/v1/exchange/settings", body)


def _key(m: Market, role: key_store.Role, community: str | None, label: str) -> Headers:
    _, secret = key_store.create_key(
        m.engine, role=role, community=community, label=label, now=m.clock()
    )
    return bearer(secret)


def _pending_valuation(m: Market, **settings: Any) -> Any:
    """Four eyes (or the given rule), then LEAF revalued: a proposal waiting (202)."""
    _settings(m, **{"approvals_required": 1, **settings})
    response = m.client.post(
        "/v1/valuations",
        json={"currency": "LEAF", "rate": "0.9", "reason": "review"},
        headers=m.admin,
    )
    assert response.status_code == 202, response.text
    return response.json()


def _approving_an_expired_proposal(m: Market) -> Call:
    proposal = _pending_valuation(m)
    second = _second_key(m)
    m.clock.advance(7 * 86_400)
    return Call("POST", f"/v1/governance/proposals/{proposal['id']}/approve", headers=second)


def _a_second_key_of_one_community(m: Market) -> Call:
    proposal = _pending_valuation(m, approvals_required=2, approvers="communities")
    path = f"/v1/governance/proposals/{proposal['id']}/approve"
    m.ok("POST", path, headers=m.treasurer)
    another = _key(m, key_store.Role.TREASURER, "riverbend", "second riverbend treasurer")
    return Call("POST", path, headers=another)


def _new_currency(m: Market, code: str) -> None:
    m.ledger.create_currency(code, kind=CurrencyKind.EXTERNAL, scale=2, name=code, symbol=code)


def _protocol_without_valuation(m: Market) -> Call:
    _new_currency(m, "NOK")
    return Call("POST", "/v1/protocols/HRB/NOK", {"reason": "x"})


def _valuation_of_a_new_currency(m: Market) -> Call:
    _new_currency(m, "NOK")
    return Call("GET", "/v1/valuations/NOK")


def _valuation_closing_a_circle(m: Market, **more: Any) -> Call:
    m.propose("HHT/HRB", rate="1")  # round HRB -> HHT -> HRB at valuations x 1: exactly 1
    body = {"currency": "HRB", "rate": "1.01", "reason": "x", **more}
    return Call("POST", "/v1/valuations", body)


def _scheduled_pair(m: Market) -> Call:
    m.propose("LEAF/HHT", effective_from=m.instant(86_400))
    return _conversion(m, m.federation.ana_leaves, m.federation.hilltop_member, 10)


def _ended_protocol(m: Market) -> Call:
    m.propose("LEAF/HRB", fee_bps=50, effective_until=m.instant(1))
    m.clock.advance(2)
    return _conversion(m, m.federation.ana_leaves, m.federation.ana, 10)


def _window_next_month(m: Market) -> Call:
    m.propose("LEAF/HRB", windows=[{"months": [m.clock().month % 12 + 1]}])
    return _conversion(m, m.federation.ana_leaves, m.federation.ana, 10)


def _over_the_daily_limit(m: Market) -> Call:
    m.propose("HRB/HHT", limits={"account_daily": 150})
    m.convert(
        payer_account_id=m.federation.ana,
        payee_account_id=m.federation.hilltop_member,
        source_amount=100,
    )
    return _hearts_to_hilltop(m, 51)


def _too_small(m: Market) -> Call:
    m.propose("HRB/LEAF")  # 1 Heart minor unit = 1/80 Leaf: 79 of them buy nothing
    return _conversion(m, m.federation.ana, m.federation.ana_leaves, 79)


def _quoted(m: Market, amount: int = 100) -> str:
    return str(m.quote(m.federation.ana, "HHT", amount)["id"])


def _with_quote(m: Market, quote_id: str, payee: int | None = None) -> Call:
    body = {
        "payer_account_id": m.federation.ana,
        "payee_account_id": payee or m.federation.hilltop_member,
        "quote_id": quote_id,
    }
    return Call("POST", "/v1/conversions", body, m.treasurer)


def _expired_quote(m: Market) -> Call:
    quote_id = _quoted(m)
    m.clock.advance(61)
    return _with_quote(m, quote_id)


def _used_quote(m: Market) -> Call:
    quote_id = _quoted(m)
    m.convert(
        payer_account_id=m.federation.ana,
        payee_account_id=m.federation.hilltop_member,
        quote_id=quote_id,
    )
    return _with_quote(m, quote_id)


def _quote_then_change(m: Market) -> Call:
    quote_id = _quoted(m)
    m.propose("HRB/HHT", fee_bps=10)
    return _with_quote(m, quote_id)


def _slippage(m: Market) -> Call:
    m.propose("HRB/HHT", fee_bps=10)
    return _hearts_to_hilltop(m, 1_000, max_slippage_bps=5)


def _suspended(m: Market) -> Call:
    m.ok("POST", "/v1/protocols/HRB/HHT/suspend", {"reason": "audit"})
    return _hearts_to_hilltop(m)


Prepare = Callable[[Market], Call]
REFUSALS: list[tuple[str, Prepare, Code]] = [
    (
        "valuation of zero",
        lambda m: Call("POST", "/v1/valuations", {"currency": "HRB", "rate": "0", "reason": "x"}),
        Code.RATE_INVALID,
    ),
    (
        "valuation above 10^18",
        lambda m: Call(
            "POST", "/v1/valuations", {"currency": "HRB", "rate": "1" * 20, "reason": "x"}
        ),
        Code.RATE_INVALID,
    ),
    (
        "reference unit not worth 1",
        lambda m: Call("POST", "/v1/valuations", {"currency": "FRU", "rate": "2", "reason": "x"}),
        Code.RATE_INVALID,
    ),
    (
        "fixed rate over zero",
        lambda m: Call("POST", "/v1/protocols/HRB/SEK", {"rate": "1/0", "reason": "x"}),
        Code.RATE_INVALID,
    ),
    (
        "protocol for a currency without valuation",
        _protocol_without_valuation,
        Code.VALUATION_MISSING,
    ),
    ("valuation of a currency without one", _valuation_of_a_new_currency, Code.VALUATION_MISSING),
    (
        "a fixed rate back that multiplies value round the circle",
        lambda m: Call("POST", "/v1/protocols/HHT/HRB", {"rate": "1.01", "reason": "x"}),
        Code.ARBITRAGE_CYCLE,
    ),
    ("a valuation that makes a circle gain", _valuation_closing_a_circle, Code.ARBITRAGE_CYCLE),
    (
        "a valuation that will make a circle gain in a minute",
        lambda m: _valuation_closing_a_circle(m, effective_from=m.instant(60)),
        Code.ARBITRAGE_CYCLE,
    ),
    (
        "protocol of a pair without one",
        lambda m: Call("GET", "/v1/protocols/HHT/LEAF"),
        Code.PROTOCOL_NOT_FOUND,
    ),
    (
        "suspending a pair without a protocol",
        lambda m: Call("POST", "/v1/protocols/HHT/LEAF/suspend", {"reason": "x"}),
        Code.PROTOCOL_NOT_FOUND,
    ),
    (
        "resuming a pair without a protocol",
        lambda m: Call("POST", "/v1/protocols/HHT/LEAF/resume", {"reason": "x"}),
        Code.PROTOCOL_NOT_FOUND,
    ),
    (
        "approving a version that does not exist",
        lambda m: Call("POST", f"/v1/protocol-versions/{2**31 - 1}/approve"),
        Code.PROPOSAL_NOT_FOUND,
    ),
    (
        "approving a version already in force",
        lambda m: Call("POST", "/v1/protocol-versions/1/approve"),
        Code.PROPOSAL_NOT_FOUND,
    ),
    (
        "approving one's own proposal",
        lambda m: Call("POST", f"/v1/protocol-versions/{_four_eyes(m)['id']}/approve"),
        Code.APPROVAL_INVALID,
    ),
    ("approving twice with one key", _approved_once_by, Code.APPROVAL_INVALID),
    ("approving a proposal that expired", _approving_an_expired_proposal, Code.PROPOSAL_EXPIRED),
    (
        "a treasurer approving while only federation keys count",
        lambda m: Call(
            "POST",
            f"/v1/governance/proposals/{_pending_valuation(m)['id']}/approve",
            headers=m.treasurer,
        ),
        Code.APPROVER_NOT_ELIGIBLE,
    ),
    (
        "a second key of a community that approved",
        _a_second_key_of_one_community,
        Code.APPROVAL_SEAT_TAKEN,
    ),
    (
        "a valuation dated before the one in force",
        lambda m: Call(
            "POST",
            "/v1/valuations",
            {"currency": "LEAF", "rate": "0.85", "reason": "x", "effective_from": m.instant(-60)},
        ),
        Code.VALUATION_BACKDATED,
    ),
    (
        "a pair without a protocol",
        lambda m: _conversion(m, m.federation.ana, m.federation.hilltop_leaves),
        Code.CONVERSION_NOT_ALLOWED,
    ),
    (
        "a quote for a pair without a protocol",
        lambda m: Call(
            "POST",
            "/v1/quotes",
            {"payer_account_id": m.federation.ana, "to_currency": "LEAF", "source_amount": 5},
            m.treasurer,
        ),
        Code.CONVERSION_NOT_ALLOWED,
    ),
    (
        "Leaves to external money",
        lambda m: _conversion(m, m.federation.ana_leaves, m.bank, 10),
        Code.CONVERSION_FORBIDDEN,
    ),
    ("a suspended protocol", _suspended, Code.PROTOCOL_SUSPENDED),
    ("a protocol that takes effect tomorrow", _scheduled_pair, Code.PROTOCOL_NOT_IN_FORCE),
    ("a protocol whose time ended", _ended_protocol, Code.PROTOCOL_NOT_IN_FORCE),
    (
        "a member redeeming Hearts for krona",
        lambda m: _conversion(m, m.federation.ana, m.bank),
        Code.ACCOUNT_NOT_ELIGIBLE,
    ),
    ("outside the protocol's window", _window_next_month, Code.WINDOW_CLOSED),
    ("past the account's daily limit", _over_the_daily_limit, Code.CONVERSION_LIMIT_EXCEEDED),
    ("an amount that buys nothing", _too_small, Code.CONVERSION_TOO_SMALL),
    (
        "a quote that does not exist",
        lambda m: _with_quote(m, "q_missing"),
        Code.QUOTE_NOT_FOUND,
    ),
    ("an expired quote", _expired_quote, Code.QUOTE_EXPIRED),
    ("a quote used already", _used_quote, Code.QUOTE_USED),
    (
        "a quote for another currency",
        lambda m: _with_quote(m, _quoted(m), payee=m.federation.hilltop_leaves),
        Code.QUOTE_MISMATCH,
    ),
    (
        "a quote for another account",
        lambda m: Call(
            "POST",
            "/v1/conversions",
            {
                "payer_account_id": m.federation.bo,
                "payee_account_id": m.federation.hilltop_member,
                "quote_id": _quoted(m),
            },
            m.treasurer,
        ),
        Code.QUOTE_MISMATCH,
    ),
    ("a quote priced under an older protocol", _quote_then_change, Code.PROTOCOL_CHANGED),
    ("a fee above the slippage allowed", _slippage, Code.SLIPPAGE_EXCEEDED),
]


def check_problem(response: Response, code: Code, path: str) -> dict[str, Any]:
    """The RFC 9457 body of ``code``, exactly as the catalogue states it."""
    rule = CATALOGUE[code]
    assert response.status_code == rule.http_status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["code"] == code.value, body
    assert body["type"] == PROBLEM_TYPE_BASE + code.value
    assert body["title"] == rule.sentence
    assert body["status"] == rule.http_status
    assert body["retryable"] is rule.retryable
    assert body["instance"] == path.split("?", maxsplit=1)[0]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def refuse(market: Market, call: Call, code: Code) -> dict[str, Any]:
    before = snapshot(market)
    response = market.client.request(
        call.method, call.path, json=call.body, headers=call.headers or market.admin
    )
    body = check_problem(response, code, call.path)
    assert snapshot(market) == before, "a refused request wrote something"
    return body


def test_every_exchange_code_has_a_row() -> None:
    exchange_codes = [
        code
        for code in Code
        if list(Code).index(Code.RATE_INVALID) <= list(Code).index(code)
        and list(Code).index(code) <= list(Code).index(Code.SLIPPAGE_EXCEEDED)
    ]
    covered = {code for _, _, code in REFUSALS} | {Code.EXCHANGE_NOT_CONFIGURED}
    assert [code for code in exchange_codes if code not in covered] == []
    # The rows follow the catalogue's order, as the reference page does.
    order = [list(Code).index(code) for _, _, code in REFUSALS]
    assert order == sorted(order)


@pytest.mark.parametrize(
    ("prepare", "code"), [(p, c) for _, p, c in REFUSALS], ids=[n for n, _, _ in REFUSALS]
)
def test_refusal(market: Market, prepare: Prepare, code: Code) -> None:
    refuse(market, prepare(market), code)


def test_the_exchange_refuses_everything_until_configured(
    client: TestClient, engine: Engine, clock: Clock, federation: Federation
) -> None:
    market = Market(client, engine, clock, Ledger(engine, clock=clock), federation, 0, 0)
    for call in (
        Call("GET", "/v1/exchange/settings"),
        Call("POST", "/v1/valuations", {"currency": "HRB", "rate": "1", "reason": "x"}),
        Call("POST", "/v1/protocols/HRB/HHT", {"reason": "x", "rate": "1"}),
    ):
        refuse(market, call, Code.EXCHANGE_NOT_CONFIGURED)


def test_a_refused_conversion_carries_its_details(market: Market) -> None:
    body = refuse(market, _over_the_daily_limit(market), Code.CONVERSION_LIMIT_EXCEEDED)
    assert body["extra"] == {
        "limit": "account_daily",
        "limit_amount": 150,
        "used": 100,
        "headroom": 50,
    }
    assert body["account_id"] == market.federation.ana
    body = refuse(
        market,
        Call("POST", "/v1/protocols/HHT/HRB", {"rate": "1.01", "reason": "x"}),
        Code.ARBITRAGE_CYCLE,
    )
    assert body["extra"]["gain"] == "1.01"
    assert sorted(body["extra"]["cycle"][:-1]) == ["HHT", "HRB"]


# -- flows --------------------------------------------------------------------------------------


def _balance(m: Market, account: int) -> int:
    return int(m.ok("GET", f"/v1/accounts/{account}/balance")["posted"])


def test_quote_then_convert_at_the_quoted_price(market: Market) -> None:
    m, f = market, market.federation
    quote = m.quote(f.ana_leaves, "HRB", 100)
    # 1 Leaf = 0.8 unit = 80 Heart minor units; the fee is 0.5% of 100, rounded up: 1.
    assert {k: quote[k] for k in ("rate", "fee", "residue", "target_amount")} == {
        "rate": "80",
        "fee": 1,
        "residue": 0,
        "target_amount": 99 * 80,
    }
    assert quote["protocol_version"] == 1
    assert dt.datetime.fromisoformat(quote["expires_at"]) > m.clock()
    converted = m.convert(
        payer_account_id=f.ana_leaves, payee_account_id=f.ana, quote_id=quote["id"]
    )
    assert converted["target_amount"] == 7_920
    assert (converted["valuation_from"], converted["valuation_to"]) == ("0.8", "1")
    legs = {
        (p["source_account_id"] == f.ana_leaves, p["currency"], p["amount"])
        for p in converted["transaction"]["postings"]
    }
    assert legs == {(True, "LEAF", 99), (True, "LEAF", 1), (False, "HRB", 7_920)}
    assert _balance(m, f.ana_leaves) == 400
    assert _balance(m, f.ana) == 10_000 + 7_920


def test_convert_at_the_current_rate_within_a_slippage(market: Market) -> None:
    m, f = market, market.federation
    exact = m.convert(
        payer_account_id=f.ana,
        payee_account_id=f.hilltop_member,
        source_amount=1_250,
        max_slippage_bps=0,
        memo="Eldercare visit",
    )
    assert (exact["source_amount"], exact["target_amount"], exact["fee"]) == (1_250, 1_250, 0)
    # With a 0.5% fee, 50 basis points of slippage is enough and 49 is not.
    within = m.convert(
        payer_account_id=f.ana_leaves,
        payee_account_id=f.ana,
        source_amount=200,
        max_slippage_bps=50,
    )
    assert (within["fee"], within["target_amount"]) == (1, 199 * 80)
    refuse(
        m,
        _conversion(m, f.ana_leaves, f.ana, 200, max_slippage_bps=49),
        Code.SLIPPAGE_EXCEEDED,
    )


def test_convert_to_a_target_amount(market: Market) -> None:
    m, f = market, market.federation
    target = m.convert(payer_account_id=f.ana_leaves, payee_account_id=f.ana, target_amount=800)
    # 800 Heart minor units need 10 Leaves; 11 with the fee (0.5% of 11, rounded up: 1).
    assert (target["source_amount"], target["fee"], target["residue"]) == (11, 1, 0)
    assert target["target_amount"] == 800
    assert _balance(m, f.ana_leaves) == 500 - 11


def test_each_side_sees_the_payment_in_its_own_currency(market: Market) -> None:
    m, f = market, market.federation
    converted = m.convert(
        payer_account_id=f.ana,
        payee_account_id=f.hilltop_member,
        source_amount=1_250,
        memo="Eldercare visit",
    )
    transaction_id = converted["transaction"]["id"]
    mine = m.ok("GET", f"/v1/accounts/{f.ana}/statement", headers=m.treasurer)["items"][-1]
    theirs = m.ok(
        "GET",
        f"/v1/accounts/{f.hilltop_member}/statement",
        headers=f.keys["other_viewer"],
    )["items"][-1]
    assert (mine["transaction_id"], mine["amount"], mine["balance"]["currency"]) == (
        transaction_id,
        -1_250,
        "HRB",
    )
    assert (theirs["transaction_id"], theirs["amount"], theirs["balance"]["currency"]) == (
        transaction_id,
        1_250,
        "HHT",
    )
    assert mine["memo"] == theirs["memo"] == "Eldercare visit"
    seen = m.ok("GET", f"/v1/transactions/{transaction_id}", headers=f.keys["other_viewer"])
    recorded = dict(seen["metadata"]["conversion"])
    # The digest of every field of the request, which a retry must repeat.
    assert len(recorded.pop("request_hash")) == 64
    assert recorded == {"rate": "1", "protocol_version": 1, "quote_id": None}


def test_a_retry_converts_once_even_after_the_rate_moved(market: Market) -> None:
    m, f = market, market.federation
    headers = {**m.treasurer, "Idempotency-Key": "leaves-0001"}
    body = m.expecting(
        {"payer_account_id": f.ana_leaves, "payee_account_id": f.ana, "source_amount": 100}
    )
    first = m.client.post("/v1/conversions", json=body, headers=headers)
    assert first.status_code == 201, first.text
    m.ok("POST", "/v1/valuations", {"currency": "LEAF", "rate": "0.9", "reason": "review"})
    again = m.client.post("/v1/conversions", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert _balance(m, f.ana_leaves) == 400
    changed = m.client.post("/v1/conversions", json={**body, "source_amount": 101}, headers=headers)
    check_problem(changed, Code.IDEMPOTENCY_CONFLICT, "/v1/conversions")


def test_protocol_changes_follow_the_etag(market: Market) -> None:
    m = market
    read = m.client.get("/v1/protocols/HRB/HHT", headers=m.admin)
    assert read.headers["ETag"] == '"1"'
    changed = m.client.post(
        "/v1/protocols/HRB/HHT",
        json={"fee_bps": 5, "reason": "a small fee"},
        headers={**m.admin, "If-Match": read.headers["ETag"]},
    )
    assert changed.status_code == 201, changed.text
    assert changed.json()["version"] == 2
    stale = Call(
        "POST",
        "/v1/protocols/HRB/HHT",
        {"fee_bps": 9, "reason": "a larger fee"},
        {**m.admin, "If-Match": '"1"'},
    )
    body = refuse(m, stale, Code.VERSION_MISMATCH)
    assert body["extra"] == {"version": 2}
    assert m.client.get("/v1/protocols/HRB/HHT", headers=m.admin).headers["ETag"] == '"2"'
    # A pair's first version: the ETag of no version is "0".
    first = m.client.post(
        "/v1/protocols/HHT/HRB",
        json={"reason": "Hearts back at valuation"},
        headers={**m.admin, "If-Match": '"0"'},
    )
    assert first.status_code == 201, first.text


def test_suspend_and_resume(market: Market) -> None:
    m, f = market, market.federation
    suspended = m.ok("POST", "/v1/protocols/HRB/HHT/suspend", {"reason": "audit"})
    assert (suspended["suspended"], suspended["state"], suspended["version"]) == (
        True,
        "active",
        2,
    )
    refuse(m, _hearts_to_hilltop(m), Code.PROTOCOL_SUSPENDED)
    resumed = m.ok("POST", "/v1/protocols/HRB/HHT/resume", {"reason": "audit done"})
    assert (resumed["suspended"], resumed["version"]) == (False, 3)
    m.convert(payer_account_id=f.ana, payee_account_id=f.hilltop_member, source_amount=10)
    history = m.ok("GET", "/v1/protocols/HRB/HHT/versions")
    assert [(v["version"], v["suspended"], v["reason"]) for v in history] == [
        (1, False, "test"),
        (2, True, "audit"),
        (3, False, "audit done"),
    ]


def test_four_eyes(market: Market) -> None:
    m, f = market, market.federation
    proposed = _four_eyes(m)
    assert (proposed["state"], proposed["approvals"]) == ("proposed", [])
    # Waiting: version 1 stays in force, without the fee.
    waiting = m.convert(
        payer_account_id=f.ana, payee_account_id=f.hilltop_member, source_amount=1_000
    )
    assert (waiting["protocol_version"], waiting["fee"]) == (1, 0)
    second = _second_key(m)
    approved = m.ok("POST", f"/v1/protocol-versions/{proposed['id']}/approve", headers=second)
    assert approved["state"] == "active"
    assert len(approved["approvals"]) == 1
    assert approved["approvals"][0] != approved["proposed_by"]
    after = m.convert(
        payer_account_id=f.ana, payee_account_id=f.hilltop_member, source_amount=1_000
    )
    assert (after["protocol_version"], after["fee"]) == (2, 1)
    # An emergency suspension needs no second key; lifting it does.
    m.ok("POST", "/v1/protocols/HRB/HHT/suspend", {"reason": "fraud"})
    resumed = m.ok("POST", "/v1/protocols/HRB/HHT/resume", {"reason": "cleared"})
    assert resumed["state"] == "proposed"
    refuse(m, _hearts_to_hilltop(m), Code.PROTOCOL_SUSPENDED)
    m.ok("POST", f"/v1/protocol-versions/{resumed['id']}/approve", headers=second)
    m.convert(payer_account_id=f.ana, payee_account_id=f.hilltop_member, source_amount=10)


def test_approving_an_older_proposal_does_not_lift_a_newer_suspension(market: Market) -> None:
    m = market
    proposed = _four_eyes(m)
    m.ok("POST", "/v1/protocols/HRB/HHT/suspend", {"reason": "fraud"})
    m.ok("POST", f"/v1/protocol-versions/{proposed['id']}/approve", headers=_second_key(m))
    in_force = m.ok("GET", "/v1/protocols/HRB/HHT")
    assert (in_force["version"], in_force["suspended"]) == (3, True)
    refuse(m, _hearts_to_hilltop(m), Code.PROTOCOL_SUSPENDED)


def test_a_scheduled_version_leaves_the_current_one_in_force(market: Market) -> None:
    m, f = market, market.federation
    m.propose("LEAF/HRB", fee_bps=100, effective_from=m.instant(3_600))
    assert m.ok("GET", "/v1/protocols/LEAF/HRB")["version"] == 1
    before = m.convert(payer_account_id=f.ana_leaves, payee_account_id=f.ana, source_amount=200)
    assert (before["protocol_version"], before["fee"]) == (1, 1)
    m.clock.advance(3_601)
    after = m.convert(payer_account_id=f.ana_leaves, payee_account_id=f.ana, source_amount=200)
    assert (after["protocol_version"], after["fee"]) == (2, 2)


def test_history_answers_the_rate_in_force_at_a_past_instant(market: Market) -> None:
    m = market
    before = m.instant()
    m.clock.advance(10)
    m.ok("POST", "/v1/valuations", {"currency": "LEAF", "rate": "0.9", "reason": "review"})
    m.propose("LEAF/HRB", fee_bps=100)
    m.clock.advance(10)
    query = {"at": before}
    assert (
        m.client.get("/v1/valuations/LEAF", params=query, headers=m.admin).json()["rate"] == "0.8"
    )
    assert m.ok("GET", "/v1/valuations/LEAF")["rate"] == "0.9"
    past = m.client.get("/v1/protocols/LEAF/HRB", params=query, headers=m.admin).json()
    assert (past["version"], past["fee_bps"]) == (1, 50)
    assert m.ok("GET", "/v1/protocols/LEAF/HRB")["version"] == 2
    history = m.ok("GET", "/v1/valuations/LEAF/history")
    assert [(v["rate"], v["reason"]) for v in history] == [("0.8", "founding"), ("0.9", "review")]
    # A valuation dated back before the one in force would never be used: refused, and
    # what was in force before stays as it was.
    body = refuse(
        m,
        Call(
            "POST",
            "/v1/valuations",
            {"currency": "LEAF", "rate": "0.85", "reason": "backdated", "effective_from": before},
        ),
        Code.VALUATION_BACKDATED,
    )
    assert body["field"] == "effective_from"
    assert body["extra"]["in_force_from"] == history[-1]["effective_from"].replace("Z", "+00:00")
    assert (
        m.client.get("/v1/valuations/LEAF", params=query, headers=m.admin).json()["rate"] == "0.8"
    )
    assert [v["rate"] for v in m.ok("GET", "/v1/valuations/LEAF/history")] == ["0.8", "0.9"]


def test_a_quote_between_finely_valued_currencies_converts(market: Market) -> None:
    """The minor rate of two 18-place valuations has parts beyond 10^18; it is stored and
    read back exactly."""
    m, f = market, market.federation
    m.ok(
        "POST",
        "/v1/valuations",
        {"currency": "HHT", "rate": "0.987654321098765431", "reason": "fine"},
    )
    m.ok(
        "POST", "/v1/valuations", {"currency": "HRB", "rate": "0.98765432109876543", "reason": "x"}
    )
    quote = m.quote(f.ana, "HHT", 5_000)
    assert "/" in quote["rate"]
    converted = m.convert(
        payer_account_id=f.ana, payee_account_id=f.hilltop_member, quote_id=quote["id"]
    )
    assert converted["target_amount"] == quote["target_amount"] == 4_999
    assert converted["valuation_to"] == "0.987654321098765431"


# -- governed policy ----------------------------------------------------------------------------


def _waits(m: Market, method: str, path: str, body: Any, headers: Headers | None = None) -> Any:
    response = m.client.request(method, path, json=body, headers=headers or m.admin)
    assert response.status_code == 202, response.text
    proposal = response.json()
    assert proposal["state"] == "pending"
    return proposal


def _decide(m: Market, proposal: Any, verb: str, headers: Headers, body: Any = None) -> Any:
    return m.ok("POST", f"/v1/governance/proposals/{proposal['id']}/{verb}", body, headers)


def test_one_federation_key_can_no_longer_lower_the_approvals_and_act_alone(
    market: Market,
) -> None:
    m = market
    _settings(m, approvals_required=1)
    lowering = _waits(
        m,
        "PUT",
        "/v1/exchange/settings",
        {"reference_unit": "FRU", "federation_community": "federation", "reason": "fewer eyes"},
    )
    assert lowering["kind"] == "exchange_settings"
    assert lowering["change"]["approvals_required"] == 0
    assert m.ok("GET", "/v1/exchange/settings")["approvals_required"] == 1
    refuse(
        m,
        Call("POST", f"/v1/governance/proposals/{lowering['id']}/approve"),
        Code.APPROVAL_INVALID,
    )
    # Its protocol change waits for a second key as well, and it cannot approve that either.
    proposed = m.propose("HRB/HHT", fee_bps=5)
    assert proposed["state"] == "proposed"
    refuse(
        m, Call("POST", f"/v1/protocol-versions/{proposed['id']}/approve"), Code.APPROVAL_INVALID
    )
    second = _second_key(m)
    applied = _decide(m, lowering, "approve", second)
    assert (applied["state"], applied["approvals_counted"]) == ("applied", 1)
    assert applied["approvals"][0]["key"] == applied["closed_by"] != applied["proposed_by"]
    assert m.ok("GET", "/v1/exchange/settings")["approvals_required"] == 0


def test_a_valuation_waits_is_listed_and_keeps_who_approved_it(market: Market) -> None:
    m, f = market, market.federation
    _settings(m, approvals_required=1)
    proposal = _pending_valuation(m)
    listed = m.ok("GET", "/v1/governance/proposals", headers=f.keys["viewer"])
    assert [(p["id"], p["kind"], p["subject"]) for p in listed] == [
        (proposal["id"], "valuation", "LEAF")
    ]
    assert m.ok("GET", "/v1/valuations/LEAF")["rate"] == "0.8"
    second = _second_key(m)
    applied = _decide(m, proposal, "approve", second)
    assert applied["state"] == "applied"
    in_force = m.ok("GET", "/v1/valuations/LEAF")
    assert (in_force["rate"], in_force["proposal_id"]) == ("0.9", proposal["id"])
    assert m.ok("GET", "/v1/governance/proposals") == []
    done = m.client.get(
        "/v1/governance/proposals",
        params={"state": "applied", "kind": "valuation"},
        headers=m.admin,
    ).json()
    assert done[0]["id"] == proposal["id"]
    assert done[0]["proposed_by"] == in_force["recorded_by"]
    assert done[0]["approvals"][0]["at"] == done[0]["closed_at"]


def test_keys_of_other_roles_cannot_propose_or_decide(market: Market) -> None:
    m, f = market, market.federation
    _settings(m, approvals_required=1)
    proposal = _pending_valuation(m)
    changes = [
        Call("POST", "/v1/valuations", {"currency": "LEAF", "rate": "2", "reason": "x"}),
        Call(
            "PUT",
            "/v1/exchange/settings",
            {"reference_unit": "FRU", "federation_community": "federation"},
        ),
        Call("POST", "/v1/protocols/HHT/HRB", {"reason": "x"}),
        Call("PUT", "/v1/reciprocity/credit-lines/riverbend", {"credit_limit": 10**9}),
        Call("POST", "/v1/protocols/HRB/HHT/suspend", {"reason": "x"}),
    ]
    approve = f"/v1/governance/proposals/{proposal['id']}/approve"
    reject = f"/v1/governance/proposals/{proposal['id']}/reject"
    for role in ("treasurer", "viewer", "auditor", "other_treasurer", "other_viewer"):
        headers = f.keys[role]
        for change in changes:
            refuse(m, Call(change.method, change.path, change.body, headers), Code.FORBIDDEN)
        decides = Code.APPROVER_NOT_ELIGIBLE if "treasurer" in role else Code.FORBIDDEN
        refuse(m, Call("POST", approve, None, headers), decides)
        refuse(m, Call("POST", reject, {"reason": "no"}, headers), decides)
    assert m.ok("GET", f"/v1/governance/proposals/{proposal['id']}")["state"] == "pending"


def test_communities_represented_approve_one_seat_each(market: Market) -> None:
    m, f = market, market.federation
    _settings(m, approvals_required=2, approvers="communities")
    line = _waits(m, "PUT", "/v1/reciprocity/credit-lines/riverbend", {"credit_limit": 50_000})
    # A credit line's proposal is riverbend's business: hilltop's viewer does not see it,
    # hilltop's treasurer does (it is asked to approve it), riverbend's keys do.
    hidden = Call("GET", f"/v1/governance/proposals/{line['id']}", headers=f.keys["other_viewer"])
    refuse(m, hidden, Code.PROPOSAL_NOT_FOUND)
    assert m.ok("GET", "/v1/governance/proposals", headers=f.keys["other_viewer"]) == []
    assert m.ok("GET", f"/v1/governance/proposals/{line['id']}", headers=f.keys["viewer"])
    refuse(
        m,
        Call("POST", f"/v1/governance/proposals/{line['id']}/approve", headers=m.treasurer),
        Code.APPROVER_NOT_ELIGIBLE,
    )
    first = _decide(m, line, "approve", f.keys["other_treasurer"])
    assert (first["state"], first["approvals"][0]["seat"]) == ("pending", "community:hilltop")
    refuse(
        m,
        Call(
            "POST",
            f"/v1/governance/proposals/{line['id']}/approve",
            headers=_key(m, key_store.Role.TREASURER, "hilltop", "another hilltop key"),
        ),
        Code.APPROVAL_SEAT_TAKEN,
    )
    m.ledger.create_community("saltmarsh", "Saltmarsh")
    saltmarsh = _key(m, key_store.Role.TREASURER, "saltmarsh", "saltmarsh treasurer")
    assert _decide(m, line, "approve", saltmarsh)["state"] == "applied"
    assert m.ok("GET", "/v1/reciprocity/credit-lines/riverbend")["credit_limit"] == 50_000


def test_a_rejected_change_never_comes_into_force(market: Market) -> None:
    m = market
    _settings(m, approvals_required=1)
    proposed = m.propose("HRB/HHT", fee_bps=5)
    second = _second_key(m)
    proposal = {"id": proposed["proposal_id"]}
    rejected = _decide(m, proposal, "reject", second, {"reason": "no fee this year"})
    assert (rejected["state"], rejected["closed_by"], rejected["close_reason"]) == (
        "rejected",
        rejected["closed_by"],
        "no fee this year",
    )
    assert rejected["closed_by"] != rejected["proposed_by"]
    versions = m.ok("GET", "/v1/protocols/HRB/HHT/versions")
    assert [v["state"] for v in versions] == ["active", "rejected"]
    refuse(
        m,
        Call("POST", f"/v1/governance/proposals/{proposal['id']}/approve", headers=second),
        Code.PROPOSAL_NOT_FOUND,
    )


def test_slippage_is_measured_against_the_rate_the_client_expected(market: Market) -> None:
    """Without a quote, the client states the protocol rate it priced with: a rate that
    moved against it since is refused, not paid."""
    m, f = market, market.federation
    base = {
        "payer_account_id": f.ana,
        "payee_account_id": f.hilltop_member,
        "source_amount": 100,
        "memo": "Eldercare visit",
    }
    before = snapshot(m)
    silent = m.client.post("/v1/conversions", json=base, headers=m.treasurer)
    body = check_problem(silent, Code.INVALID_REQUEST, "/v1/conversions")
    assert body["field"] == "expected_rate"
    assert 'The rate in force for HRB→HHT is "1"' in body["detail"]
    assert snapshot(m) == before
    better = m.client.post(
        "/v1/conversions", json={**base, "expected_rate": "2"}, headers=m.treasurer
    )
    assert (better.status_code, better.json()["code"]) == (409, "slippage_exceeded")
    assert "worse than the 2 you expected" in better.json()["detail"]
    paid = m.client.post(
        "/v1/conversions",
        json={**base, "expected_rate": "1", "client_id": "expected-1"},
        headers=m.treasurer,
    )
    assert paid.status_code == 201, paid.text
    # A retry repeats every field: the same request replays, another slippage conflicts.
    again = m.client.post(
        "/v1/conversions",
        json={**base, "expected_rate": "1", "client_id": "expected-1"},
        headers=m.treasurer,
    )
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    changed = m.client.post(
        "/v1/conversions",
        json={**base, "expected_rate": "1", "client_id": "expected-1", "max_slippage_bps": 5},
        headers=m.treasurer,
    )
    assert (changed.status_code, changed.json()["code"]) == (409, "idempotency_conflict")


def test_a_revoked_keys_approval_stops_counting_and_its_proposals_are_withdrawn(
    market: Market,
) -> None:
    """An approval is a key's word: when the key is revoked before the change applies,
    the approval stays in history, marked withdrawn, and no longer counts; a pending
    proposal the revoked key made is withdrawn. What applied stays applied."""
    m = market
    proposal = _pending_valuation(m, approvals_required=2)
    records = [
        key_store.create_key(
            m.engine, role=key_store.Role.FEDERATION, community=None, label=label, now=m.clock()
        )
        for label in ("second", "third", "fourth")
    ]
    (second, _), (third, third_secret), (fourth, fourth_secret) = records
    approve = f"/v1/governance/proposals/{proposal['id']}/approve"
    counted = m.ok("POST", approve, headers=bearer(records[0][1]))
    assert counted["approvals_counted"] == 1
    m.ok("DELETE", f"/v1/keys/{second.id}")
    after = m.ok("GET", f"/v1/governance/proposals/{proposal['id']}")
    assert (after["state"], after["approvals_counted"]) == ("pending", 0)
    assert after["approvals"][0]["key"] == f"key:{second.id}"
    assert after["approvals"][0]["withdrawn_at"] is not None
    m.ok("POST", approve, headers=bearer(third_secret))
    assert m.ok("GET", "/v1/valuations/LEAF")["rate"] == "0.8"  # one approval counts, of two
    applied = m.ok("POST", approve, headers=bearer(fourth_secret))
    assert (applied["state"], applied["approvals_counted"]) == ("applied", 2)
    assert m.ok("GET", "/v1/valuations/LEAF")["rate"] == "0.9"
    # Revoking a key after the change applied changes nothing of it.
    m.ok("DELETE", f"/v1/keys/{third.id}")
    assert m.ok("GET", f"/v1/governance/proposals/{proposal['id']}")["state"] == "applied"
    # A pending proposal whose proposer's key is revoked is withdrawn.
    response = m.client.post(
        "/v1/valuations",
        json={"currency": "HHT", "rate": "1.1", "reason": "review"},
        headers=bearer(fourth_secret),
    )
    assert response.status_code == 202, response.text
    m.ok("DELETE", f"/v1/keys/{fourth.id}")
    withdrawn = m.ok("GET", f"/v1/governance/proposals/{response.json()['id']}")
    assert withdrawn["state"] == "rejected"
    assert withdrawn["close_reason"] == "withdrawn: the proposer's key was revoked"
