"""Every endpoint by every caller: the answer each role gets, on both databases.

The matrix below has one row per route the app serves (``test_every_route_has_a_row``
fails on a route without one). Each row builds the request a caller would send about
Riverbend's things and names the answer for each caller:

- ``federation`` does everything; ``auditor`` reads everything and writes nothing;
- ``treasurer`` (Riverbend) opens Riverbend's accounts, spends from them (paying into any
  community) and reads Riverbend; ``viewer`` (Riverbend) reads Riverbend;
- ``other_treasurer`` and ``other_viewer`` belong to Hilltop: to them Riverbend's accounts,
  transactions and reciprocity do not exist, and the answer they get is compared, field
  by field, with the answer for an id that truly does not exist;
- ``no key`` and ``revoked key`` are turned away everywhere but the operations routes.

One rule decides between 404 and 403: what a caller may not see is missing (404); what
it sees but may not do is forbidden (403). So a role without the right gets 403 before
any id is looked up, and a treasurer is told 403, not 404, for a community of the open
directory or a transaction it can read but is not its to resolve.

The directory (communities, currencies) and the exchange's rules (settings, valuations,
protocols) are readable by every key: treasurers need them to pay across communities.
Exchange writes are the federation's; quotes and conversions are payments, so they follow
the treasurer's rule on the paying account. Network-wide reciprocity reports are the
federation's and the auditor's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import Engine

from api import keys as key_store
from api.app import create_app
from exchange.model import ProtocolSpec
from exchange.reciprocity import Reciprocity
from exchange.service import Exchange
from ledger.database import make_engine
from ledger.model import CurrencyKind
from ledger.service import Ledger
from tests.api.conftest import Federation, bearer
from tests.conftest import Clock
from tests.ledger.builders import hold, pay

CALLERS = (
    "federation",
    "auditor",
    "treasurer",
    "viewer",
    "other_treasurer",
    "other_viewer",
    "no key",
    "revoked key",
)
MISSING_ACCOUNT = 2**31 - 1  # the largest id the API accepts, never reached in a test
MISSING_TRANSACTION = 2**62
PROBLEM = "application/problem+json"
SETUP_KEY = "key:setup"  # proposes protocol versions that a caller's key can approve


@dataclass(frozen=True)
class Expect:
    status: int
    code: str | None = None  # the problem's code, for a refusal
    sees: bool | None = None  # a listing: whether Riverbend's things are in it
    item_code: str | None = None  # a batch: the code its one item was refused with


OK, CREATED, ACCEPTED = Expect(200), Expect(201), Expect(202)  # 202: a change waits for approvals
NOT_AN_APPROVER = Expect(403, "approver_not_eligible")
UNAUTHENTICATED = Expect(401, "unauthenticated")
FORBIDDEN = Expect(403, "forbidden")
ACCOUNT_HIDDEN = Expect(404, "account_not_found")
TRANSACTION_HIDDEN = Expect(404, "transaction_not_found")
COMMUNITY_HIDDEN = Expect(404, "community_not_found")
NOT_ISSUER = Expect(403, "issuance_not_authorized")


def roles(
    *,
    federation: Expect,
    auditor: Expect = FORBIDDEN,
    treasurer: Expect = FORBIDDEN,
    viewer: Expect = FORBIDDEN,
    other_treasurer: Expect = FORBIDDEN,
    other_viewer: Expect = FORBIDDEN,
) -> dict[str, Expect]:
    return {
        "federation": federation,
        "auditor": auditor,
        "treasurer": treasurer,
        "viewer": viewer,
        "other_treasurer": other_treasurer,
        "other_viewer": other_viewer,
        "no key": UNAUTHENTICATED,
        "revoked key": UNAUTHENTICATED,
    }


def anyone(expect: Expect = OK) -> dict[str, Expect]:
    return roles(
        federation=expect,
        auditor=expect,
        treasurer=expect,
        viewer=expect,
        other_treasurer=expect,
        other_viewer=expect,
    )


def riverbend_reads(hidden: Expect) -> dict[str, Expect]:
    """Riverbend's own thing: Hilltop's keys are told it does not exist."""
    return roles(
        federation=OK,
        auditor=OK,
        treasurer=OK,
        viewer=OK,
        other_treasurer=hidden,
        other_viewer=hidden,
    )


def riverbend_listing() -> dict[str, Expect]:
    seen, unseen = Expect(200, sees=True), Expect(200, sees=False)
    return roles(
        federation=seen,
        auditor=seen,
        treasurer=seen,
        viewer=seen,
        other_treasurer=unseen,
        other_viewer=unseen,
    )


def federation_only(expect: Expect) -> dict[str, Expect]:
    return roles(federation=expect)


def approvers(expect: Expect) -> dict[str, Expect]:
    """A governance decision: the federation's; a treasurer's key reaches the approval rule,
    which (only federation keys count here) refuses it; viewers and auditors never decide."""
    return roles(federation=expect, treasurer=NOT_AN_APPROVER, other_treasurer=NOT_AN_APPROVER)


def treasurer_writes(expect: Expect, hidden: Expect) -> dict[str, Expect]:
    return roles(federation=expect, treasurer=expect, other_treasurer=hidden)


PUBLIC = dict.fromkeys(CALLERS, OK)
NETWORK_REPORT = roles(federation=OK, auditor=OK)


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None


@dataclass(frozen=True)
class World:
    """The federation fixture plus an exchange, and the ids a request names. In its
    ``missing`` view every Riverbend id is one that does not exist."""

    federation: Federation
    ledger: Ledger
    exchange: Exchange
    engine: Engine
    headers: dict[str, dict[str, str]]
    missing: bool = False

    def hidden_view(self) -> World:
        return replace(self, missing=True)

    def account(self) -> int:
        return MISSING_ACCOUNT if self.missing else self.federation.ana

    def community(self) -> str:
        return "nowhere" if self.missing else "riverbend"

    def transaction(self) -> int:
        return MISSING_TRANSACTION if self.missing else self.federation.transaction

    def fresh_pending(self) -> int:
        """A new hold from Ana to Bo, so each caller resolves its own."""
        if self.missing:
            return MISSING_TRANSACTION
        f = self.federation
        made = self.ledger.post_transaction(hold(f.ana, f.bo, 1)).transaction
        assert made is not None
        return made.id

    def fresh_posted(self) -> int:
        """A new payment into Riverbend, so each caller reverses its own."""
        if self.missing:
            return MISSING_TRANSACTION
        f = self.federation
        made = self.ledger.post_transaction(pay(f.riverbend_issuance, f.ana, 1)).transaction
        assert made is not None
        return made.id

    def fresh_key(self) -> int:
        record, _ = key_store.create_key(
            self.engine,
            role=key_store.Role.VIEWER,
            community="hilltop",
            label="to revoke",
            now=self.ledger.clock(),
        )
        return record.id

    def suspended(self) -> str:
        self.exchange.suspend("HRB", "HHT", by=SETUP_KEY, reason="storm")
        return "/v1/protocols/HRB/HHT/resume"

    def clearing(self) -> str:
        return Reciprocity(self.ledger).propose_clearing(by=SETUP_KEY).id

    def proposed(self) -> int:
        version = self.exchange.propose(
            ProtocolSpec("HRB", "HHT", fee_bps=10), by=SETUP_KEY, reason="a small fee"
        )
        assert version.state == "proposed"
        return version.id

    def proposal(self) -> int:
        """A new pending proposal (a protocol version's), so each caller decides its own."""
        version = self.exchange.protocol_versions("HRB", "HHT")[-1]
        if version.state != "proposed" or version.approvals:
            self.proposed()
            version = self.exchange.protocol_versions("HRB", "HHT")[-1]
        assert version.proposal_id is not None
        return version.proposal_id


def _slug(caller: str) -> str:
    return "new-" + caller.replace("_", "-").replace(" ", "-")


def _code(caller: str) -> str:
    return "X" + "".join(c for c in caller.upper() if c.isalpha())


def _payment(w: World, source: int) -> dict[str, Any]:
    posting = {
        "source_account_id": source,
        "destination_account_id": w.federation.bo,
        "amount": 1,
        "currency": "HRB",
    }
    return {"postings": [posting]}


@dataclass(frozen=True)
class Row:
    call: Callable[[World, str], Call]
    expect: dict[str, Expect]
    hides: bool = False  # a Hilltop caller's 404 must equal the one for a missing id


def _get(url: str) -> Callable[[World, str], Call]:
    return lambda w, caller: Call("GET", url)


def _post(url: str) -> Callable[[World, str], Call]:
    return lambda w, caller: Call("POST", url)


MATRIX: dict[tuple[str, str], Row] = {
    # -- operations and documentation: no key needed -------------------------------------------
    ("GET", "/"): Row(_get("/"), PUBLIC),
    ("GET", "/healthz"): Row(_get("/healthz"), PUBLIC),
    ("GET", "/readyz"): Row(_get("/readyz"), PUBLIC),
    ("GET", "/metrics"): Row(_get("/metrics"), PUBLIC),
    ("GET", "/openapi.json"): Row(_get("/openapi.json"), PUBLIC),
    ("GET", "/docs"): Row(_get("/docs"), PUBLIC),
    ("GET", "/docs/oauth2-redirect"): Row(_get("/docs/oauth2-redirect"), PUBLIC),
    ("GET", "/redoc"): Row(_get("/redoc"), PUBLIC),
    # -- the directory -------------------------------------------------------------------------
    ("POST", "/v1/communities"): Row(
        lambda w, caller: Call("POST", "/v1/communities", {"slug": _slug(caller), "name": "New"}),
        federation_only(CREATED),
    ),
    ("GET", "/v1/communities"): Row(_get("/v1/communities"), anyone()),
    ("GET", "/v1/communities/{slug}"): Row(_get("/v1/communities/riverbend"), anyone()),
    ("POST", "/v1/currencies"): Row(
        lambda w, caller: Call(
            "POST",
            "/v1/currencies",
            {"code": _code(caller), "kind": "unit", "scale": 2, "name": "New", "symbol": "n"},
        ),
        federation_only(CREATED),
    ),
    ("POST", "/v1/communities/{slug}/suspend"): Row(
        _post("/v1/communities/hilltop/suspend"), federation_only(OK)
    ),
    ("POST", "/v1/communities/{slug}/resume"): Row(
        _post("/v1/communities/hilltop/resume"), federation_only(OK)
    ),
    ("GET", "/v1/currencies"): Row(_get("/v1/currencies"), anyone()),
    ("GET", "/v1/currencies/{code}"): Row(_get("/v1/currencies/HRB"), anyone()),
    # Riverbend issues HRB: its treasurer sets the policy; the federation is no issuer of it.
    ("PATCH", "/v1/currencies/{code}"): Row(
        lambda w, caller: Call("PATCH", "/v1/currencies/HRB", {"circulation_cap": 10**12}),
        roles(federation=NOT_ISSUER, treasurer=OK, other_treasurer=NOT_ISSUER),
    ),
    ("GET", "/v1/currencies/{code}/supply"): Row(_get("/v1/currencies/HRB/supply"), anyone()),
    # -- accounts ------------------------------------------------------------------------------
    ("POST", "/v1/accounts"): Row(
        lambda w, caller: Call(
            "POST",
            "/v1/accounts",
            {"community": "riverbend", "currency": "HRB", "type": "member", "name": _slug(caller)},
        ),
        # The directory is open to every key, so a Hilltop treasurer is told it may not,
        # rather than that Riverbend does not exist.
        treasurer_writes(CREATED, FORBIDDEN),
    ),
    ("GET", "/v1/accounts"): Row(_get("/v1/accounts?community=riverbend"), riverbend_listing()),
    ("GET", "/v1/accounts/{account_id}"): Row(
        lambda w, caller: Call("GET", f"/v1/accounts/{w.account()}"),
        riverbend_reads(ACCOUNT_HIDDEN),
        hides=True,
    ),
    ("PATCH", "/v1/accounts/{account_id}"): Row(
        lambda w, caller: Call(
            "PATCH", f"/v1/accounts/{w.account()}", {"metadata": {"changed_by": caller}}
        ),
        treasurer_writes(OK, ACCOUNT_HIDDEN),
        hides=True,
    ),
    ("GET", "/v1/accounts/{account_id}/balance"): Row(
        lambda w, caller: Call(
            "GET", f"/v1/accounts/{w.account()}/balance?as_of=2030-01-01T00:00:00Z"
        ),
        riverbend_reads(ACCOUNT_HIDDEN),
        hides=True,
    ),
    ("GET", "/v1/accounts/{account_id}/statement"): Row(
        lambda w, caller: Call("GET", f"/v1/accounts/{w.account()}/statement"),
        riverbend_reads(ACCOUNT_HIDDEN),
        hides=True,
    ),
    # -- transactions --------------------------------------------------------------------------
    ("POST", "/v1/transactions"): Row(
        lambda w, caller: Call("POST", "/v1/transactions", _payment(w, w.account())),
        treasurer_writes(CREATED, ACCOUNT_HIDDEN),
        hides=True,
    ),
    ("POST", "/v1/transactions/batch"): Row(
        lambda w, caller: Call(
            "POST", "/v1/transactions/batch", {"transactions": [_payment(w, w.account())]}
        ),
        treasurer_writes(OK, Expect(200, item_code="account_not_found")),
        hides=True,
    ),
    ("GET", "/v1/transactions"): Row(
        _get("/v1/transactions?community=riverbend"), riverbend_listing()
    ),
    ("GET", "/v1/transactions/{transaction_id}"): Row(
        lambda w, caller: Call("GET", f"/v1/transactions/{w.transaction()}"),
        riverbend_reads(TRANSACTION_HIDDEN),
        hides=True,
    ),
    ("POST", "/v1/transactions/{transaction_id}/post"): Row(
        lambda w, caller: Call("POST", f"/v1/transactions/{w.fresh_pending()}/post"),
        treasurer_writes(OK, TRANSACTION_HIDDEN),
        hides=True,
    ),
    ("POST", "/v1/transactions/{transaction_id}/void"): Row(
        lambda w, caller: Call("POST", f"/v1/transactions/{w.fresh_pending()}/void"),
        treasurer_writes(OK, TRANSACTION_HIDDEN),
        hides=True,
    ),
    ("POST", "/v1/transactions/{transaction_id}/reverse"): Row(
        lambda w, caller: Call("POST", f"/v1/transactions/{w.fresh_posted()}/reverse"),
        treasurer_writes(CREATED, TRANSACTION_HIDDEN),
        hides=True,
    ),
    # -- keys and events -----------------------------------------------------------------------
    ("POST", "/v1/keys"): Row(
        lambda w, caller: Call(
            "POST", "/v1/keys", {"role": "viewer", "community": "riverbend", "label": caller}
        ),
        federation_only(CREATED),
    ),
    ("GET", "/v1/keys"): Row(_get("/v1/keys"), roles(federation=OK, auditor=OK)),
    ("DELETE", "/v1/keys/{key_id}"): Row(
        lambda w, caller: Call("DELETE", f"/v1/keys/{w.fresh_key()}"), federation_only(OK)
    ),
    # Another key's rotation: the federation's to do; any other key rotates only itself.
    ("POST", "/v1/keys/{key_id}/rotate"): Row(
        lambda w, caller: Call("POST", f"/v1/keys/{w.fresh_key()}/rotate"), federation_only(OK)
    ),
    ("GET", "/v1/events"): Row(_get("/v1/events?limit=1000"), riverbend_listing()),
    # -- exchange: the federation's rules, readable by all, written by the federation ----------
    ("PUT", "/v1/exchange/settings"): Row(
        lambda w, caller: Call(
            "PUT",
            "/v1/exchange/settings",
            {"reference_unit": "FRU", "federation_community": "commons", "approvals_required": 1},
        ),
        federation_only(OK),
    ),
    ("GET", "/v1/exchange/settings"): Row(_get("/v1/exchange/settings"), anyone()),
    ("POST", "/v1/valuations"): Row(
        lambda w, caller: Call(
            "POST", "/v1/valuations", {"currency": "LEAF", "rate": "0.8", "reason": "review"}
        ),
        federation_only(ACCEPTED),
    ),
    ("GET", "/v1/valuations/{code}"): Row(_get("/v1/valuations/HRB"), anyone()),
    ("GET", "/v1/valuations/{code}/history"): Row(_get("/v1/valuations/HRB/history"), anyone()),
    ("GET", "/v1/protocols"): Row(_get("/v1/protocols"), anyone()),
    ("GET", "/v1/protocols/{from_currency}/{to_currency}"): Row(
        _get("/v1/protocols/HRB/HHT"), anyone()
    ),
    ("GET", "/v1/protocols/{from_currency}/{to_currency}/versions"): Row(
        _get("/v1/protocols/HRB/HHT/versions"), anyone()
    ),
    ("POST", "/v1/protocols/{from_currency}/{to_currency}"): Row(
        lambda w, caller: Call("POST", "/v1/protocols/LEAF/HHT", {"reason": "Leaves buy Hearts"}),
        federation_only(CREATED),
    ),
    ("POST", "/v1/protocols/{from_currency}/{to_currency}/suspend"): Row(
        lambda w, caller: Call("POST", "/v1/protocols/HRB/HHT/suspend", {"reason": "fraud"}),
        federation_only(CREATED),
    ),
    ("POST", "/v1/protocols/{from_currency}/{to_currency}/resume"): Row(
        lambda w, caller: Call("POST", w.suspended(), {"reason": "cleared"}),
        federation_only(CREATED),
    ),
    ("POST", "/v1/protocol-versions/{version_id}/approve"): Row(
        lambda w, caller: Call("POST", f"/v1/protocol-versions/{w.proposed()}/approve"),
        approvers(OK),
    ),
    # -- governance: proposals readable by all; decided by keys whose approval counts ------
    ("GET", "/v1/governance/proposals"): Row(_get("/v1/governance/proposals"), anyone()),
    ("GET", "/v1/governance/proposals/{proposal_id}"): Row(
        lambda w, caller: Call("GET", f"/v1/governance/proposals/{w.proposal()}"), anyone()
    ),
    ("POST", "/v1/governance/proposals/{proposal_id}/approve"): Row(
        lambda w, caller: Call("POST", f"/v1/governance/proposals/{w.proposal()}/approve"),
        approvers(OK),
    ),
    ("POST", "/v1/governance/proposals/{proposal_id}/reject"): Row(
        lambda w, caller: Call(
            "POST", f"/v1/governance/proposals/{w.proposal()}/reject", {"reason": "not now"}
        ),
        approvers(OK),
    ),
    # -- exchange: quotes and conversions are payments from the quoting account ----------------
    ("POST", "/v1/quotes"): Row(
        lambda w, caller: Call(
            "POST",
            "/v1/quotes",
            {"payer_account_id": w.account(), "to_currency": "HHT", "source_amount": 100},
        ),
        treasurer_writes(CREATED, ACCOUNT_HIDDEN),
        hides=True,
    ),
    ("POST", "/v1/conversions"): Row(
        lambda w, caller: Call(
            "POST",
            "/v1/conversions",
            {
                "payer_account_id": w.account(),
                "payee_account_id": w.federation.hilltop_member,
                "source_amount": 100,
                "expected_rate": "1/1000000",  # any rate in force is better
            },
        ),
        treasurer_writes(CREATED, ACCOUNT_HIDDEN),
        hides=True,
    ),
    # -- reciprocity: a community reads its own figures; network-wide reports are the ------
    # -- federation's and the auditor's; only the federation changes anything -------------
    ("GET", "/v1/reciprocity/communities/{community}"): Row(
        lambda w, caller: Call("GET", f"/v1/reciprocity/communities/{w.community()}"),
        riverbend_reads(COMMUNITY_HIDDEN),
        hides=True,
    ),
    ("GET", "/v1/reciprocity/matrix"): Row(_get("/v1/reciprocity/matrix"), NETWORK_REPORT),
    ("GET", "/v1/reciprocity/free-riders"): Row(
        _get("/v1/reciprocity/free-riders"), NETWORK_REPORT
    ),
    ("GET", "/v1/reciprocity/thresholds"): Row(_get("/v1/reciprocity/thresholds"), anyone()),
    ("PUT", "/v1/reciprocity/thresholds"): Row(
        lambda w, caller: Call(
            "PUT", "/v1/reciprocity/thresholds", {"absolute": 50_000, "relative": "0.25"}
        ),
        federation_only(OK),
    ),
    ("GET", "/v1/reciprocity/credit-lines"): Row(
        _get("/v1/reciprocity/credit-lines"), riverbend_listing()
    ),
    ("GET", "/v1/reciprocity/credit-lines/{community}"): Row(
        lambda w, caller: Call("GET", f"/v1/reciprocity/credit-lines/{w.community()}"),
        riverbend_reads(COMMUNITY_HIDDEN),
        hides=True,
    ),
    ("PUT", "/v1/reciprocity/credit-lines/{community}"): Row(
        lambda w, caller: Call(
            "PUT", "/v1/reciprocity/credit-lines/riverbend", {"credit_limit": 100_000}
        ),
        federation_only(ACCEPTED),
    ),
    ("GET", "/v1/reciprocity/obligations"): Row(
        _get("/v1/reciprocity/obligations"), NETWORK_REPORT
    ),
    ("GET", "/v1/reciprocity/settlement-plan"): Row(
        _get("/v1/reciprocity/settlement-plan"), NETWORK_REPORT
    ),
    ("POST", "/v1/clearing/proposals"): Row(
        lambda w, caller: Call("POST", "/v1/clearing/proposals"), federation_only(CREATED)
    ),
    ("GET", "/v1/clearing/proposals/{proposal_id}"): Row(
        lambda w, caller: Call("GET", f"/v1/clearing/proposals/{w.clearing()}"), NETWORK_REPORT
    ),
    ("POST", "/v1/clearing/proposals/{proposal_id}/execute"): Row(
        lambda w, caller: Call("POST", f"/v1/clearing/proposals/{w.clearing()}/execute"),
        federation_only(OK),
    ),
}


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened."""
    try:
        from fastapi.routing import iter_route_contexts  # noqa: PLC0415 - newer FastAPI only
    except ImportError:  # pragma: no cover - older FastAPI lists included routes flat
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    return {
        (method, route.path)
        for route in routes
        for method in (route.methods or ())
        if method != "HEAD"
    }


@pytest.fixture
def world(engine: Engine, clock: Clock, federation: Federation) -> World:
    ledger = Ledger(engine, clock=clock)
    ledger.create_community("commons", "The federation's own accounts")
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Reference", symbol="¤")
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="commons")
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("HHT", "1"), ("LEAF", "4/5")):
        exchange.set_valuation(code, Fraction(rate), by=SETUP_KEY, reason="founding")
    exchange.propose(ProtocolSpec("HRB", "HHT"), by=SETUP_KEY, reason="Hearts at valuation")
    # From here on a change waits for one approval by another key than its proposer's.
    exchange.configure(reference_unit="FRU", federation_community="commons", approvals_required=1)
    record, secret = key_store.create_key(
        engine, role=key_store.Role.TREASURER, community="riverbend", label="lost", now=clock()
    )
    key_store.revoke_key(engine, record.id, clock())
    headers = {**federation.keys, "no key": {}, "revoked key": bearer(secret)}
    return World(federation, ledger, exchange, engine, headers)


def send(client: TestClient, world: World, call: Call, caller: str) -> Response:
    return client.request(call.method, call.url, json=call.json, headers=world.headers[caller])


def _riverbend_seen(body: Any) -> bool:
    items = body if isinstance(body, list) else body["items"]
    return any(
        item.get("community") == "riverbend"
        or "riverbend" in item.get("communities", ())
        or "postings" in item  # a transaction listed under ?community=riverbend
        for item in items
    )


def _judge(response: Response, expect: Expect) -> str | None:
    """What is wrong with the answer, or None."""
    got = f"{response.status_code} {response.text[:300]}"
    if response.status_code != expect.status:
        return f"expected {expect.status}, got {got}"
    if expect.status >= 400:
        if response.headers["content-type"] != PROBLEM:
            return f"not a problem: {response.headers['content-type']}"
        body = response.json()
        if body.get("code") != expect.code or body.get("status") != expect.status:
            return f"expected code {expect.code}, got {got}"
        if not all(isinstance(body.get(name), str) for name in ("type", "title", "detail")):
            return f"incomplete problem: {got}"
    if expect.sees is not None and _riverbend_seen(response.json()) != expect.sees:
        return f"expected Riverbend {'seen' if expect.sees else 'unseen'}, got {got}"
    if expect.item_code is not None:
        (item,) = response.json()["results"]
        if item["problem"] is None or item["problem"]["code"] != expect.item_code:
            return f"expected the item refused with {expect.item_code}, got {got}"
    return None


def _refusal(response: Response) -> dict[str, Any]:
    """The problem a response carries (a batch's item problem), without what names the id
    asked for: the path, the account id, and the id or slug as the detail repeats it."""
    body = response.json()
    if "results" in body:
        body = body["results"][0]["problem"]
    found = {k: v for k, v in body.items() if k not in ("instance", "account_id")}
    if isinstance(found.get("detail"), str):
        found["detail"] = re.sub(r"'[^']*'|\d+", "…", found["detail"])
    return found


def test_every_route_has_a_row() -> None:
    engine = make_engine("sqlite://")
    served = served_routes(create_app(engine, expire_in_background=False))  # never started
    engine.dispose()
    assert served - MATRIX.keys() == set(), "a route without a row in the role matrix"
    assert MATRIX.keys() - served == set(), "a row for a route the app no longer serves"


ROWS = [pytest.param(row, id=f"{method} {path}") for (method, path), row in MATRIX.items()]


@pytest.mark.parametrize("row", ROWS)
def test_each_caller_gets_its_answer(client: TestClient, world: World, row: Row) -> None:
    wrong: list[str] = []
    for caller in CALLERS:
        expect = row.expect[caller]
        response = send(client, world, row.call(world, caller), caller)
        if (problem := _judge(response, expect)) is not None:
            wrong.append(f"{caller}: {problem}")
            continue
        if row.hides and (expect.status == 404 or expect.item_code is not None):
            missing = send(client, world, row.call(world.hidden_view(), caller), caller)
            if (missing.status_code, _refusal(missing)) != (
                response.status_code,
                _refusal(response),
            ):
                wrong.append(
                    f"{caller}: a hidden id answers {response.status_code} {_refusal(response)}, "
                    f"a missing one {missing.status_code} {_refusal(missing)}"
                )
    assert wrong == []


# -- across communities ----------------------------------------------------------------------


def _status_code(response: Response) -> tuple[int, str | None]:
    body = response.json()
    return response.status_code, body.get("code") if response.status_code >= 400 else None


def test_a_transaction_seen_but_not_yours_to_resolve_is_forbidden(
    client: TestClient, world: World
) -> None:
    """Riverbend's treasurer sees a hold Hilltop placed in its favour, and a payment it made
    to Hilltop: it may read both, but posting, voiding or reversing them is Hilltop's."""
    f = world.federation
    held = world.ledger.post_transaction(hold(f.hilltop_leaves, f.ana_leaves, 5, "LEAF"))
    paid = world.ledger.post_transaction(pay(f.ana_leaves, f.hilltop_leaves, 5, "LEAF"))
    assert held.transaction is not None
    assert paid.transaction is not None
    treasurer, other = world.headers["treasurer"], world.headers["other_treasurer"]
    for transaction in (held.transaction.id, paid.transaction.id):
        assert client.get(f"/v1/transactions/{transaction}", headers=treasurer).status_code == 200
    answers = [
        _status_code(
            client.post(f"/v1/transactions/{held.transaction.id}/{act}", headers=treasurer)
        )
        for act in ("post", "void")
    ]
    answers.append(
        _status_code(
            client.post(f"/v1/transactions/{paid.transaction.id}/reverse", headers=treasurer)
        )
    )
    assert answers == [(403, "forbidden")] * 3
    assert client.get(f"/v1/transactions/{held.transaction.id}", headers=treasurer).json()[
        "status"
    ] == ("pending")
    posted = client.post(f"/v1/transactions/{held.transaction.id}/post", headers=other)
    reversed_ = client.post(f"/v1/transactions/{paid.transaction.id}/reverse", headers=other)
    assert (posted.status_code, reversed_.status_code) == (200, 201)


def test_a_treasurer_pays_into_any_community_but_only_from_its_own(
    client: TestClient, world: World
) -> None:
    f = world.federation
    treasurer = world.headers["treasurer"]

    def posting(source: int, destination: int) -> dict[str, Any]:
        return {
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": 3,
            "currency": "LEAF",
        }

    into_hilltop = client.post(
        "/v1/transactions",
        json={"postings": [posting(f.ana_leaves, f.hilltop_leaves)]},
        headers=treasurer,
    )
    assert into_hilltop.status_code == 201, into_hilltop.text
    before = client.get(f"/v1/accounts/{f.hilltop_leaves}", headers=world.headers["auditor"])
    mixed = client.post(
        "/v1/transactions",
        json={
            "postings": [
                posting(f.ana_leaves, f.hilltop_leaves),
                posting(f.hilltop_leaves, f.ana_leaves),
            ]
        },
        headers=treasurer,
    )
    assert (_status_code(mixed), mixed.json()["account_id"]) == (
        (404, "account_not_found"),
        f.hilltop_leaves,
    )
    after = client.get(f"/v1/accounts/{f.hilltop_leaves}", headers=world.headers["auditor"])
    assert after.json() == before.json()


def test_unfiltered_lists_show_a_community_key_only_its_own(
    client: TestClient, world: World
) -> None:
    f = world.federation
    world.ledger.post_transaction(pay(f.hilltop_leaves, f.ana_leaves, 1, "LEAF"))  # both see it
    for caller, own, other in (
        ("viewer", "riverbend", "hilltop"),
        ("other_viewer", "hilltop", "riverbend"),
    ):
        headers = world.headers[caller]
        accounts = client.get("/v1/accounts?limit=1000", headers=headers).json()["items"]
        assert {a["community"] for a in accounts} == {own}
        transactions = client.get("/v1/transactions?limit=1000", headers=headers).json()["items"]
        touched = [
            {
                client.get(f"/v1/accounts/{account}", headers=world.headers["auditor"]).json()[
                    "community"
                ]
                for p in t["postings"]
                for account in (p["source_account_id"], p["destination_account_id"])
            }
            for t in transactions
        ]
        assert transactions
        assert all(own in communities for communities in touched)
        events = client.get("/v1/events?limit=1000", headers=headers).json()["items"]
        assert events
        assert all(own in e["communities"] for e in events)
        foreign = client.get(f"/v1/transactions?community={other}", headers=headers).json()
        assert foreign == {"items": [], "next_cursor": None}
    everything = client.get("/v1/accounts?limit=1000", headers=world.headers["auditor"]).json()
    # commons holds the federation's liquidity, fee and rounding accounts of the protocols
    assert {a["community"] for a in everything["items"]} == {"riverbend", "hilltop", "commons"}


def test_a_revoked_key_is_refused_at_once(client: TestClient, world: World) -> None:
    admin = world.headers["federation"]
    created = client.post(
        "/v1/keys", json={"role": "auditor", "label": "temporary"}, headers=admin
    ).json()
    key = bearer(created["secret"])
    assert client.get("/v1/accounts", headers=key).status_code == 200
    client.delete(f"/v1/keys/{created['id']}", headers=admin)
    refused = client.get("/v1/accounts", headers=key)
    assert _status_code(refused) == (401, "unauthenticated")
    assert refused.headers["WWW-Authenticate"] == "Bearer"


def test_a_keys_use_is_recorded_to_the_minute(
    client: TestClient, world: World, clock: Clock
) -> None:
    admin = world.headers["federation"]
    created = client.post("/v1/keys", json={"role": "auditor", "label": "dashboard"}, headers=admin)
    key_id, key = created.json()["id"], bearer(created.json()["secret"])

    def last_used() -> str | None:
        listed = client.get("/v1/keys", headers=admin).json()
        used: str | None = next(
            listed_key["last_used_at"] for listed_key in listed if listed_key["id"] == key_id
        )
        return used

    assert last_used() is None
    assert client.get("/v1/accounts", headers=key).status_code == 200
    first = last_used()
    assert first is not None
    clock.advance(30)
    assert client.get("/v1/accounts", headers=key).status_code == 200
    assert last_used() == first  # within the minute: no write per request
    clock.advance(31)
    assert client.get("/v1/accounts", headers=key).status_code == 200
    later = last_used()
    assert later is not None
    assert later > first
