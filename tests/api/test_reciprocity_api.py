"""Reciprocity and clearing over HTTP: every endpoint by every role, on both databases.

Federation and auditor keys read everything; a Riverbend treasurer or viewer reads
Riverbend's reciprocity and credit line, and to a Hilltop key Riverbend's detail answers
exactly as a community that does not exist. Network-wide reports are for the federation
and the auditor; only the federation changes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from exchange.model import ProtocolSpec
from exchange.service import Exchange
from ledger.model import CurrencyKind
from ledger.service import Ledger
from tests.api.conftest import Federation
from tests.conftest import Clock

KEY = "key:setup"
ROLES = ("federation", "auditor", "treasurer", "viewer", "other_treasurer", "other_viewer")


@dataclass(frozen=True)
class Trade:
    federation: Federation
    client: TestClient

    def get(self, url: str, role: str) -> Any:
        return self.client.get(url, headers=self.federation.keys[role])

    def send(self, method: str, url: str, role: str, body: Any = None) -> Any:
        return self.client.request(method, url, json=body, headers=self.federation.keys[role])

    def leaves(self, source: int, destination: int, amount: int, role: str = "federation") -> Any:
        body = {
            "postings": [
                {
                    "source_account_id": source,
                    "destination_account_id": destination,
                    "amount": amount,
                    "currency": "LEAF",
                }
            ]
        }
        return self.send("POST", "/v1/transactions", role, body)


def _exchange(engine: Engine, clock: Clock) -> Exchange:
    ledger = Ledger(engine, clock=clock)
    ledger.create_community("federation", "The federation")
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="federation")
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("HHT", "1"), ("LEAF", "4/5")):
        exchange.set_valuation(code, Fraction(rate), by=KEY, reason="founding")
    exchange.propose(ProtocolSpec("HRB", "HHT"), by=KEY, reason="trade")
    return exchange


@pytest.fixture
def trade(client: TestClient, federation: Federation, engine: Engine, clock: Clock) -> Trade:
    """Riverbend's ana pays Hilltop's cai 100 Leaves (8,000 units: Hilltop gave), and
    cai pays ana back 40 (3,200: Riverbend gave), through the API's ledger."""
    _exchange(engine, clock)
    trade = Trade(federation, client)
    assert trade.leaves(federation.ana_leaves, federation.hilltop_leaves, 100).status_code == 201
    assert trade.leaves(federation.hilltop_leaves, federation.ana_leaves, 40).status_code == 201
    return trade


OK, CREATED = 200, 201
READ_ALL = {"federation": OK, "auditor": OK}
NETWORK_READ = {**dict.fromkeys(ROLES, 403), **READ_ALL}
FEDERATION_WRITES = {**dict.fromkeys(ROLES, 403), "federation": OK}
RIVERBEND_READ = {
    **dict.fromkeys(ROLES, OK),
    "other_treasurer": 404,
    "other_viewer": 404,
}
EVERYONE = dict.fromkeys(ROLES, OK)

Call = Callable[[Trade, str], Any]


def _get(url: str) -> Call:
    return lambda t, role: t.get(url, role)


def _send(method: str, url: str, body: Any = None) -> Call:
    return lambda t, role: t.send(method, url, role, body)


def _execute(t: Trade, role: str) -> Any:
    proposal = t.send("POST", "/v1/clearing/proposals", "federation").json()
    return t.send("POST", f"/v1/clearing/proposals/{proposal['id']}/execute", role)


def _read_proposal(t: Trade, role: str) -> Any:
    proposal = t.send("POST", "/v1/clearing/proposals", "federation").json()
    return t.get(f"/v1/clearing/proposals/{proposal['id']}", role)


MATRIX: list[tuple[str, Call, dict[str, int]]] = [
    ("riverbend's reciprocity", _get("/v1/reciprocity/communities/riverbend"), RIVERBEND_READ),
    (
        "riverbend's reciprocity in a window",
        _get("/v1/reciprocity/communities/riverbend?from=2020-01-01&to=2029-12-31"),
        RIVERBEND_READ,
    ),
    ("the matrix", _get("/v1/reciprocity/matrix"), NETWORK_READ),
    ("free riders", _get("/v1/reciprocity/free-riders"), NETWORK_READ),
    ("thresholds", _get("/v1/reciprocity/thresholds"), EVERYONE),
    (
        "set thresholds",
        _send("PUT", "/v1/reciprocity/thresholds", {"absolute": 100, "relative": "1/4"}),
        FEDERATION_WRITES,
    ),
    ("credit lines", _get("/v1/reciprocity/credit-lines"), EVERYONE),
    ("riverbend's credit line", _get("/v1/reciprocity/credit-lines/riverbend"), RIVERBEND_READ),
    (
        "set riverbend's credit line",
        _send("PUT", "/v1/reciprocity/credit-lines/riverbend", {"credit_limit": 100_000}),
        FEDERATION_WRITES,
    ),
    ("obligations", _get("/v1/reciprocity/obligations"), NETWORK_READ),
    ("settlement plan", _get("/v1/reciprocity/settlement-plan"), NETWORK_READ),
    (
        "propose a clearing",
        _send("POST", "/v1/clearing/proposals"),
        {**FEDERATION_WRITES, "federation": CREATED},
    ),
    ("read a proposal", _read_proposal, NETWORK_READ),
    ("execute a proposal", _execute, FEDERATION_WRITES),
]


@pytest.mark.parametrize(("case", "call", "expected"), MATRIX, ids=[row[0] for row in MATRIX])
def test_each_role_gets_its_answer(
    trade: Trade, case: str, call: Call, expected: dict[str, int]
) -> None:
    answers = {role: call(trade, role) for role in ROLES}

    assert {role: a.status_code for role, a in answers.items()} == expected, case
    for role, answer in answers.items():
        if answer.status_code >= 400:
            assert answer.headers["content-type"] == "application/problem+json"
            code = {403: "forbidden", 404: "community_not_found"}[answer.status_code]
            assert answer.json()["code"] == code, (role, answer.json())
    no_key = trade.client.get("/v1/reciprocity/thresholds")
    assert no_key.status_code == 401


def test_another_community_looks_exactly_like_a_missing_one(trade: Trade) -> None:
    hidden = trade.get("/v1/reciprocity/communities/riverbend", "other_viewer").json()
    missing = trade.get("/v1/reciprocity/communities/nowhere", "federation").json()

    def without_path(problem: dict[str, Any]) -> dict[str, Any]:
        """Without what names the slug asked for: the path, and the detail's quote of it."""
        found = {name: value for name, value in problem.items() if name != "instance"}
        return {**found, "detail": found["detail"].replace("'riverbend'", "'nowhere'")}

    assert without_path(hidden) == without_path(missing)
    assert hidden["code"] == "community_not_found"
    own = trade.get("/v1/reciprocity/communities/hilltop", "other_viewer")
    assert own.status_code == 200
    lines = trade.get("/v1/reciprocity/credit-lines", "viewer").json()
    assert [line["community"] for line in lines] == ["riverbend"]


def test_a_community_report_has_figures_per_counterparty(trade: Trade) -> None:
    report = trade.get("/v1/reciprocity/communities/riverbend", "viewer").json()

    assert report == {
        "community": "riverbend",
        "reference_unit": "FRU",
        "window": None,
        "given": 3_200,
        "received": 8_000,
        "net": -4_800,
        "index": "-3/7",
        "counterparties": [
            {
                "community": "hilltop",
                "given": 3_200,
                "received": 8_000,
                "net": -4_800,
                "index": "-3/7",
            }
        ],
        "unvalued_transactions": 0,
    }


def test_the_matrix_and_a_free_rider_flag(trade: Trade) -> None:
    matrix = trade.get("/v1/reciprocity/matrix", "auditor").json()
    assert [(c["giver"], c["receiver"], c["amount"]) for c in matrix["cells"]] == [
        ("hilltop", "riverbend", 8_000),
        ("riverbend", "hilltop", 3_200),
    ]
    assert matrix["communities"] == ["hilltop", "riverbend"]

    trade.send(
        "PUT", "/v1/reciprocity/thresholds", "federation", {"absolute": 1, "relative": "0.4"}
    )
    report = trade.get("/v1/reciprocity/free-riders", "auditor").json()

    assert report["flagged"] == ["riverbend"]
    riverbend = report["communities"][0]
    assert (riverbend["net_intake"], riverbend["intake_share"], riverbend["change"]) == (
        4_800,
        "3/7",
        4_800,
    )
    assert report["thresholds"]["relative"] == "0.4"


def test_a_payment_past_the_credit_line_is_a_problem_naming_the_headroom(trade: Trade) -> None:
    f = trade.federation
    line = trade.send(
        "PUT", "/v1/reciprocity/credit-lines/riverbend", "federation", {"credit_limit": 5_000}
    ).json()
    assert (line["position"], line["headroom"]) == (-4_800, 200)

    refused = trade.leaves(f.ana_leaves, f.hilltop_leaves, 10, role="treasurer")

    assert refused.status_code == 409
    problem = refused.json()
    assert problem["code"] == "community_credit_limit_exceeded"
    assert problem["extra"]["community"] == "riverbend"
    assert problem["extra"]["headroom"] == 200
    assert trade.leaves(f.ana_leaves, f.hilltop_leaves, 2, role="treasurer").status_code == 201


def test_a_batch_refuses_only_the_payment_past_the_credit_line(trade: Trade) -> None:
    f = trade.federation
    trade.send(
        "PUT", "/v1/reciprocity/credit-lines/riverbend", "federation", {"credit_limit": 5_000}
    )

    def leaves(amount: int) -> dict[str, Any]:
        posting = {
            "source_account_id": f.ana_leaves,
            "destination_account_id": f.hilltop_leaves,
            "amount": amount,
            "currency": "LEAF",
        }
        return {"postings": [posting]}

    answer = trade.send(
        "POST", "/v1/transactions/batch", "treasurer", {"transactions": [leaves(10), leaves(2)]}
    )

    assert answer.status_code == 200
    body = answer.json()
    assert (body["created"], body["rejected"]) == (1, 1)
    refused, created = body["results"]
    assert refused["status"] == "rejected"
    assert refused["problem"]["code"] == "community_credit_limit_exceeded"
    assert refused["problem"]["extra"]["headroom"] == 200
    assert created["status"] == "created"
    line = trade.get("/v1/reciprocity/credit-lines/riverbend", "federation").json()
    assert line["headroom"] == 200 - 2 * 80


def test_a_settlement_over_http_names_what_it_pays_and_no_more(trade: Trade) -> None:
    f = trade.federation

    def settlement(leaves: int, metadata: dict[str, Any]) -> Any:
        posting = {
            "source_account_id": f.ana_leaves,
            "destination_account_id": f.hilltop_leaves,
            "amount": leaves,
            "currency": "LEAF",
        }
        body = {"postings": [posting], "category": "settlement", "metadata": metadata}
        return trade.send("POST", "/v1/transactions", "treasurer", body)

    def riverbend() -> Any:
        return trade.get("/v1/reciprocity/communities/riverbend", "federation").json()

    # Riverbend owes hilltop 4,800. A label alone is a purchase: hilltop gave 800 more.
    assert settlement(10, {}).status_code == 201
    assert (riverbend()["given"], riverbend()["received"]) == (3_200, 8_800)
    settles = {
        "settles": {"debtor": "riverbend", "creditor": "hilltop", "basis": "settlement_plan"}
    }

    refused = settlement(71, settles)  # 5,680 of the 5,600 outstanding

    assert refused.status_code == 409
    problem = refused.json()
    assert problem["code"] == "settlement_exceeds_outstanding"
    assert (problem["extra"]["outstanding"], problem["extra"]["required"]) == (5_600, 5_680)
    assert (riverbend()["given"], riverbend()["received"]) == (3_200, 8_800)

    settled = settlement(70, settles)

    assert settled.status_code == 201
    assert settled.json()["metadata"] == settles
    assert (riverbend()["given"], riverbend()["received"]) == (8_800, 8_800)
    assert trade.get("/v1/reciprocity/settlement-plan", "federation").json() == []
    missing = settlement(1, settles)
    assert (missing.status_code, missing.json()["code"]) == (409, "settlement_obligation_not_found")
    invalid = settlement(1, {"settles": "riverbend pays hilltop"})
    assert (invalid.status_code, invalid.json()["code"]) == (422, "settlement_reference_invalid")


def test_clearing_over_http_is_idempotent(trade: Trade) -> None:
    proposal = trade.send("POST", "/v1/clearing/proposals", "federation").json()
    assert proposal["status"] == "proposed"
    assert proposal["obligations"] == [
        {"debtor": "riverbend", "creditor": "hilltop", "amount": 4_800}
    ]
    assert proposal["settlement"][0]["payer"] == "riverbend"

    first = trade.send("POST", f"/v1/clearing/proposals/{proposal['id']}/execute", "federation")
    again = trade.send("POST", f"/v1/clearing/proposals/{proposal['id']}/execute", "federation")

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["status"] == "executed"
    missing = trade.send("POST", "/v1/clearing/proposals/clr_missing/execute", "federation")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_a_stale_proposal_is_refused_with_its_code(trade: Trade) -> None:
    f = trade.federation
    proposal = trade.send("POST", "/v1/clearing/proposals", "federation").json()
    trade.leaves(f.ana_leaves, f.hilltop_leaves, 1)

    refused = trade.send("POST", f"/v1/clearing/proposals/{proposal['id']}/execute", "federation")

    assert (refused.status_code, refused.json()["code"]) == (409, "clearing_obligations_changed")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-11-01", "to"),
        ("to=2026-11-01", "from"),
        ("from=2026-11-02&to=2026-11-01", "from"),
        ("from=2026-02-30&to=2026-03-01", "from"),
        ("from=2000-01-01&to=2100-01-01", "to"),
    ],
)
def test_a_bad_window_is_refused(trade: Trade, query: str, field: str) -> None:
    answer = trade.get(f"/v1/reciprocity/matrix?{query}", "federation")

    assert answer.status_code == 422
    assert (answer.json()["code"], answer.json()["field"]) == ("invalid_request", field)


def test_reports_say_when_the_exchange_is_not_configured(
    client: TestClient, federation: Federation
) -> None:
    answer = client.get("/v1/reciprocity/matrix", headers=federation.keys["federation"])

    assert (answer.status_code, answer.json()["code"]) == (409, "exchange_not_configured")
