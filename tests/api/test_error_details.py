"""Refusals say what would be accepted, through the API on both databases.

Each test sends one request a client gets wrong in an ordinary way and reads the problem's
``detail``: it must name the specifics (the amount in minor units, the forms of an instant,
who may convert, when a window opens), never only repeat the rule's ``title``.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ledger.errors import CATALOGUE, Code, LedgerError
from tests.api.conftest import Federation
from tests.api.test_exchange_api import Market, market  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for part in ("api", "ledger", "exchange") for p in (ROOT / part).rglob("*.py"))
RAISERS = {"LedgerError": 0, "TransactionRefusedError": 1, "problem": 0}  # name: index of code


def raise_sites() -> list[tuple[str, Code | None, ast.expr | None]]:
    """Every call that builds a refusal: where, its code (None when computed) and detail."""
    sites = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name not in RAISERS or len(node.args) <= RAISERS[name]:
                continue
            args = node.args[RAISERS[name] :]
            code = args[0]
            literal = (
                Code[code.attr]
                if isinstance(code, ast.Attribute) and ast.unparse(code.value) == "Code"
                else None
            )
            detail = args[1] if len(args) > 1 else None
            detail = next((k.value for k in node.keywords if k.arg == "detail"), detail)
            sites.append((f"{path.relative_to(ROOT)}:{node.lineno}", literal, detail))
    return sites


def generic(detail: ast.expr | None, code: Code | None) -> bool:
    """A detail left out, None, the rule's sentence itself, or a few words of text."""
    if detail is None:
        return True
    if isinstance(detail, ast.Constant):
        text = detail.value
        return (
            not isinstance(text, str)
            or (code is not None and text == CATALOGUE[code].sentence)
            or len(text.split()) < 6
        )
    return False


def test_every_refusal_is_built_with_a_detail_of_its_own() -> None:
    """A refusal whose detail is left to the catalogue answers only its title again."""
    sites = raise_sites()
    assert len(sites) > 150, "the walk finds the raise sites"
    vague = [f"{where} {code}" for where, code, detail in sites if generic(detail, code)]
    assert vague == [], "refusals with no specific detail:\n" + "\n".join(vague)


def test_the_walk_can_tell_a_vague_refusal() -> None:
    assert generic(None, Code.QUOTE_USED)
    sentence = ast.Constant(CATALOGUE[Code.QUOTE_USED].sentence)
    assert generic(sentence, Code.QUOTE_USED)
    assert generic(ast.Constant("Quote used."), Code.QUOTE_USED)
    assert not generic(ast.parse('f"Quote {q} paid {t}"', mode="eval").body, Code.QUOTE_USED)
    assert LedgerError(Code.QUOTE_USED).detail == LedgerError(Code.QUOTE_USED).rule.sentence


def test_every_code_of_the_catalogue_has_a_place_that_raises_it() -> None:
    """Walk the catalogue: each code is raised somewhere with its own detail, or computed
    where the code is chosen from a table (validation errors, HTTP statuses, a hold's end),
    whose call passes a detail; a code named nowhere would answer with its title alone."""
    raised = {code for _, code, _ in raise_sites() if code is not None}
    named = {
        code
        for path in SOURCES
        if path.name != "errors.py"
        for code in Code
        if f"Code.{code.name}" in path.read_text()
    }
    assert set(Code) - raised - named == set()
    computed = [detail for _, code, detail in raise_sites() if code is None]
    assert computed
    assert not any(generic(detail, None) for detail in computed)


def refusal(response: Any, code: Code) -> dict[str, Any]:
    """The problem body, checked to be ``code``'s with a detail more specific than its title."""
    assert response.status_code == CATALOGUE[code].http_status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code.value, body
    assert body["detail"] != body["title"], body
    return body


def payment(federation: Federation, amount: Any, currency: str = "HRB") -> dict[str, Any]:
    posting = {
        "source_account_id": federation.ana,
        "destination_account_id": federation.bo,
        "amount": amount,
        "currency": currency,
    }
    return {"postings": [posting]}


def test_a_decimal_amount_is_answered_in_the_currencys_minor_units(
    client: TestClient, federation: Federation
) -> None:
    sent = client.post(
        "/v1/transactions", json=payment(federation, 12.5), headers=federation.keys["treasurer"]
    )
    body = refusal(sent, Code.INVALID_REQUEST)
    assert body["field"] == "postings[0].amount"
    assert "whole numbers of minor units" in body["detail"]
    assert "12.5 HRB is 1250" in body["detail"], body["detail"]


def test_a_decimal_amount_too_fine_for_the_currency_says_so(
    client: TestClient, federation: Federation
) -> None:
    sent = client.post(
        "/v1/transactions",
        json=payment(federation, 12.5, "LEAF"),  # LEAF has no decimal places
        headers=federation.keys["treasurer"],
    )
    detail = refusal(sent, Code.INVALID_REQUEST)["detail"]
    assert "12.5 LEAF is 12.5 minor units, which is not whole: round it to 12 or 13" in detail


def test_a_decimal_amount_in_no_known_currency_is_answered_generally(
    client: TestClient, federation: Federation
) -> None:
    sent = client.post(
        "/v1/transactions",
        json=payment(federation, 12.5, "XYZ"),
        headers=federation.keys["treasurer"],
    )
    detail = refusal(sent, Code.INVALID_REQUEST)["detail"]
    assert "12.5 of a currency with 2 decimal places is 1250" in detail, detail


def test_a_plain_date_is_an_instant_at_its_start_in_utc(
    client: TestClient, federation: Federation
) -> None:
    headers = federation.keys["treasurer"]
    url = f"/v1/accounts/{federation.ana}/balance"
    as_date = client.get(url, params={"as_of": "2026-03-01"}, headers=headers)
    assert as_date.status_code == 200, as_date.text
    assert as_date.json()["as_of"].startswith("2026-03-01T00:00:00")
    midnight = client.get(url, params={"as_of": "2026-03-01T00:00:00Z"}, headers=headers)
    assert as_date.json() == midnight.json()
    since = client.get(
        "/v1/transactions", params={"since": "2000-01-01", "until": "2999-01-01"}, headers=headers
    )
    assert since.status_code == 200, since.text
    assert since.json()["items"], "every transaction lies between those two days"


def test_a_plain_date_is_an_instant_in_a_body_too(
    client: TestClient, federation: Federation
) -> None:
    body = {"role": "viewer", "community": "riverbend", "label": "x", "expires_at": "2999-01-01"}
    created = client.post("/v1/keys", json=body, headers=federation.keys["federation"])
    assert created.status_code == 201, created.text
    assert created.json()["expires_at"].startswith("2999-01-01T00:00:00"), created.text


def test_an_instant_that_does_not_parse_names_the_forms_accepted(
    client: TestClient, federation: Federation
) -> None:
    headers = federation.keys["treasurer"]
    url = f"/v1/accounts/{federation.ana}/balance"
    for sent, why in (
        ("yesterday", "it is neither form"),
        ("2026-01-01T00:00:00", "it has no offset"),
        ("2026-02-30", "there is no such day"),
    ):
        body = refusal(
            client.get(url, params={"as_of": sent}, headers=headers), Code.INVALID_REQUEST
        )
        assert body["field"] == "as_of"
        assert f'"{sent}" is not an instant ({why})' in body["detail"], body["detail"]
        assert "2026-12-01T09:30:00Z" in body["detail"]
        assert "a date (2026-12-01), meaning its start, 00:00 UTC" in body["detail"]
    key = {"role": "viewer", "community": "riverbend", "label": "x", "expires_at": "soon"}
    body = refusal(
        client.post("/v1/keys", json=key, headers=federation.keys["federation"]),
        Code.INVALID_REQUEST,
    )
    assert body["field"] == "expires_at"
    assert '"soon" is not an instant' in body["detail"]


def test_a_posting_in_an_unknown_currency_is_told_it_does_not_exist(
    client: TestClient, federation: Federation
) -> None:
    sent = client.post(
        "/v1/transactions",
        json=payment(federation, 100, "XYZ"),
        headers=federation.keys["treasurer"],
    )
    body = refusal(sent, Code.CURRENCY_NOT_FOUND)
    assert "There is no currency 'XYZ'" in body["detail"]
    assert "holds HRB" in body["detail"]
    assert body["field"] == "postings[0].currency"


def test_a_posting_in_another_currency_is_told_which_one_the_account_holds(
    client: TestClient, federation: Federation
) -> None:
    sent = client.post(
        "/v1/transactions",
        json=payment(federation, 1, "LEAF"),
        headers=federation.keys["treasurer"],
    )
    body = refusal(sent, Code.CURRENCY_MISMATCH)
    assert f"account {federation.ana} holds HRB" in body["detail"]


def test_an_account_not_eligible_is_told_who_may_convert(market: Market) -> None:  # noqa: F811
    m = market
    sent = m.client.post(
        "/v1/conversions",
        json={
            "payer_account_id": m.federation.ana,
            "payee_account_id": m.bank,
            "source_amount": 100,
            "expected_rate": "1/1000000",
        },
        headers=m.treasurer,
    )
    body = refusal(sent, Code.ACCOUNT_NOT_ELIGIBLE)
    assert body["detail"] == (
        f"Account {m.federation.ana} (type member) may not convert: the protocol converts HRB "
        "to SEK only from provider accounts."
    )
    assert body["extra"]["eligible_account_types"] == ["provider"]


def test_a_closed_window_says_when_it_opens_again(market: Market) -> None:  # noqa: F811
    m = market
    now = m.clock()
    opens = dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.UTC)
    m.propose("LEAF/HRB", windows=[{"months": [opens.month], "hours": [0, 1, 2]}])
    sent = m.client.post(
        "/v1/conversions",
        json={
            "payer_account_id": m.federation.ana_leaves,
            "payee_account_id": m.federation.ana,
            "source_amount": 10,
            "expected_rate": "1/1000000",
        },
        headers=m.treasurer,
    )
    body = refusal(sent, Code.WINDOW_CLOSED)
    assert body["extra"]["opens_at"] == opens.isoformat()
    assert f"it opens again at {opens.isoformat()}" in body["detail"], body["detail"]
    assert f"months {opens.month} and hours 0-2" in body["detail"]
