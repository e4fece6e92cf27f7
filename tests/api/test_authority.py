"""The attack catalogue: a valid key trying a power it lacks, over the public API.

Each attack names the power, the key that tries it and the stable code it gets; every
refusal is checked to leave nothing behind (no account, transaction or history row more,
no floor or policy changed). Next to each refusal the key that holds the power succeeds,
so a rule that refused everything would fail here too. Both databases, through the real
app (``tests/api/conftest.py``'s federation: Riverbend issues HRB, Hilltop HHT, the
federation LEAF).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from ledger.authority import Actor, ActorRole
from ledger.errors import Code, LedgerError
from ledger.model import AccountType
from ledger.service import Ledger
from tests.api.conftest import Federation
from tests.ledger.builders import pay

TABLES = ("accounts", "transactions", "postings", "entries", "events")


def _counts(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        counts: dict[str, Any] = {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in TABLES
        }
        counts["limits"] = connection.execute(
            text("SELECT id, min_balance, max_balance, status FROM accounts ORDER BY id")
        ).all()
        counts["currencies"] = connection.execute(
            text("SELECT code, held_in, circulation_cap FROM currencies ORDER BY code")
        ).all()
    return counts


def _refused(
    client: TestClient,
    engine: Engine,
    key: dict[str, str],
    method: str,
    url: str,
    body: Any,
    status: int,
    code: str,
) -> dict[str, Any]:
    before = _counts(engine)
    response = client.request(method, url, json=body, headers=key)
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _counts(engine) == before, "a refusal left something behind"
    problem: dict[str, Any] = response.json()
    assert problem["detail"] != problem["title"]
    return problem


def _account(community: str, currency: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"community": community, "currency": currency, "type": "member", "name": name, **fields}


def _pay(source: int, destination: int, amount: int, currency: str) -> dict[str, Any]:
    posting = {
        "source_account_id": source,
        "destination_account_id": destination,
        "amount": amount,
        "currency": currency,
    }
    return {"postings": [posting]}


# -- issuance and holding ---------------------------------------------------------------------


def test_a_treasurer_cannot_hold_or_mint_another_communitys_hearts(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    treasurer = federation.keys["treasurer"]
    # The attack from the issue: an HHT account with no floor in Riverbend.
    _refused(
        client,
        engine,
        treasurer,
        "POST",
        "/v1/accounts",
        _account("riverbend", "HHT", "mint", min_balance=None),
        403,
        "currency_not_held",
    )
    # Hilltop, HHT's issuer, may open one with no floor in its own community.
    opened = client.post(
        "/v1/accounts",
        json=_account("hilltop", "HHT", "line", min_balance=None),
        headers=federation.keys["other_treasurer"],
    )
    assert opened.status_code == 201, opened.text


def test_only_the_federation_issues_leaves(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    issuance = {"community": "riverbend", "currency": "LEAF", "type": "issuance", "name": "mint"}
    for role in ("treasurer", "other_treasurer"):
        community = "riverbend" if role == "treasurer" else "hilltop"
        _refused(
            client,
            engine,
            federation.keys[role],
            "POST",
            "/v1/accounts",
            {**issuance, "community": community},
            403,
            "issuance_not_authorized",
        )
        _refused(
            client,
            engine,
            federation.keys[role],
            "POST",
            "/v1/accounts",
            _account(community, "LEAF", "overdraft", min_balance=-100),
            403,
            "issuance_not_authorized",
        )
    opened = client.post("/v1/accounts", json=issuance, headers=federation.keys["federation"])
    assert opened.status_code == 201, opened.text


def test_the_federation_is_not_the_issuer_of_a_communitys_hearts(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    _refused(
        client,
        engine,
        federation.keys["federation"],
        "POST",
        "/v1/accounts",
        {"community": "riverbend", "currency": "HRB", "type": "issuance", "name": "mint"},
        403,
        "issuance_not_authorized",
    )
    opened = client.post(
        "/v1/accounts",
        json={"community": "riverbend", "currency": "HRB", "type": "issuance", "name": "mint"},
        headers=federation.keys["treasurer"],
    )
    assert opened.status_code == 201, opened.text


def test_a_floor_below_zero_is_the_issuers_to_give(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    url = f"/v1/accounts/{federation.ana_leaves}"
    for floor in (None, -500):
        _refused(
            client,
            engine,
            federation.keys["treasurer"],
            "PATCH",
            url,
            {"min_balance": floor},
            403,
            "issuance_not_authorized",
        )
    # A floor of zero or more is the treasurer's own to raise; the credit line is the
    # federation's to grant, and then only the federation changes it.
    assert client.patch(
        url, json={"min_balance": 10}, headers=federation.keys["treasurer"]
    ).is_success
    granted = client.patch(url, json={"min_balance": -500}, headers=federation.keys["federation"])
    assert granted.status_code == 200, granted.text
    _refused(
        client,
        engine,
        federation.keys["treasurer"],
        "PATCH",
        url,
        {"min_balance": 0},
        403,
        "issuance_not_authorized",
    )
    with engine.connect() as connection:
        recorded = connection.execute(
            text("SELECT authorized_by FROM accounts WHERE id = :id"), {"id": federation.ana_leaves}
        ).scalar_one()
    assert recorded == "federation"


# -- system accounts -------------------------------------------------------------------------


@pytest.fixture
def liquidity(engine: Engine, federation: Federation) -> int:
    """An exchange-owned account in Riverbend, as the exchange opens one."""
    ledger = Ledger(engine)
    return ledger.open_account(
        community="riverbend", currency="HRB", type=AccountType.LIQUIDITY, name="liquidity"
    ).id


def test_no_key_moves_or_changes_a_system_account(
    client: TestClient, engine: Engine, federation: Federation, liquidity: int
) -> None:
    Ledger(engine).post_transaction(pay(federation.riverbend_issuance, liquidity, 700))
    for role in ("treasurer", "federation"):
        key = federation.keys[role]
        _refused(
            client,
            engine,
            key,
            "POST",
            "/v1/transactions",
            _pay(liquidity, federation.ana, 100, "HRB"),
            403,
            "system_account",
        )
        _refused(
            client,
            engine,
            key,
            "POST",
            "/v1/transactions",
            _pay(federation.ana, liquidity, 100, "HRB"),
            403,
            "system_account",
        )
        for change in ({"status": "frozen"}, {"max_balance": 1}, {"metadata": {"x": 1}}):
            _refused(
                client,
                engine,
                key,
                "PATCH",
                f"/v1/accounts/{liquidity}",
                change,
                403,
                "system_account",
            )
        _refused(
            client,
            engine,
            key,
            "POST",
            "/v1/accounts",
            {"community": "riverbend", "currency": "HRB", "type": "clearing", "name": "mine"},
            403,
            "system_account",
        )
    # Hilltop's treasurer cannot see Riverbend's system account: told it does not exist.
    before = _counts(engine)
    answer = client.post(
        "/v1/transactions",
        json=_pay(federation.hilltop_leaves, liquidity, 1, "LEAF"),
        headers=federation.keys["other_treasurer"],
    )
    assert (answer.status_code, answer.json()["code"]) == (404, "account_not_found")
    assert _counts(engine) == before


def test_a_batch_is_judged_per_item_inside_the_write(
    client: TestClient, engine: Engine, federation: Federation, liquidity: int
) -> None:
    body = {
        "transactions": [
            _pay(federation.ana, federation.bo, 5, "HRB"),
            _pay(federation.hilltop_member, federation.ana, 5, "HHT"),  # Hilltop's account
            _pay(federation.ana, liquidity, 5, "HRB"),  # a system account
        ]
    }
    answer = client.post("/v1/transactions/batch", json=body, headers=federation.keys["treasurer"])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["created", "rejected", "rejected"]
    assert [r["problem"] and r["problem"]["code"] for r in results] == [
        None,
        "account_not_found",
        "system_account",
    ]


# -- supply ----------------------------------------------------------------------------------


def test_the_issuer_caps_circulation_inside_the_write(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    supply = client.get("/v1/currencies/HRB/supply", headers=federation.keys["viewer"]).json()
    circulating = supply["in_circulation"]
    assert (supply["issued"], supply["redeemed"]) == (10_000, 0)
    assert supply["by_issuance_account"] == [
        {
            "account_id": federation.riverbend_issuance,
            "community": "riverbend",
            "issued": 10_000,
            "redeemed": 0,
        }
    ]
    _refused(
        client,
        engine,
        federation.keys["federation"],
        "PATCH",
        "/v1/currencies/HRB",
        {"circulation_cap": circulating + 100},
        403,
        "issuance_not_authorized",
    )
    _refused(
        client,
        engine,
        federation.keys["treasurer"],
        "PATCH",
        "/v1/currencies/HRB",
        {"circulation_cap": circulating - 1},
        409,
        "limit_below_balance",
    )
    capped = client.patch(
        "/v1/currencies/HRB",
        json={"circulation_cap": circulating + 100},
        headers=federation.keys["treasurer"],
    )
    assert capped.json()["circulation_cap"] == circulating + 100
    mint = _pay(federation.riverbend_issuance, federation.bo, 101, "HRB")
    _refused(
        client,
        engine,
        federation.keys["treasurer"],
        "POST",
        "/v1/transactions",
        mint,
        409,
        "circulation_cap_exceeded",
    )
    mint["postings"][0]["amount"] = 100
    assert client.post(
        "/v1/transactions", json=mint, headers=federation.keys["treasurer"]
    ).is_success
    after = client.get("/v1/currencies/HRB/supply", headers=federation.keys["viewer"]).json()
    assert after["in_circulation"] == circulating + 100
    past = client.get(
        "/v1/currencies/HRB/supply",
        params={"as_of": supply_instant(client, federation)},
        headers=federation.keys["viewer"],
    ).json()
    assert past["in_circulation"] == circulating


def supply_instant(client: TestClient, federation: Federation) -> str:
    """An instant after the fixture's first issuance and before this test's."""
    line = client.get(
        f"/v1/accounts/{federation.riverbend_issuance}/statement",
        headers=federation.keys["treasurer"],
    ).json()["items"][0]
    return str(line["at"])


# -- suspension ------------------------------------------------------------------------------


def test_a_suspended_community_makes_and_receives_no_payments(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    fed = federation.keys["federation"]
    _refused(
        client,
        engine,
        federation.keys["other_treasurer"],
        "POST",
        "/v1/communities/riverbend/suspend",
        None,
        403,
        "forbidden",
    )
    assert client.post("/v1/communities/hilltop/suspend", headers=fed).json()["status"] == (
        "suspended"
    )
    to_hilltop = _pay(federation.ana_leaves, federation.hilltop_leaves, 5, "LEAF")
    _refused(
        client,
        engine,
        federation.keys["treasurer"],
        "POST",
        "/v1/transactions",
        to_hilltop,
        409,
        "community_suspended",
    )
    # Its history stays readable.
    read = client.get(f"/v1/accounts/{federation.hilltop_leaves}/statement", headers=fed)
    assert read.status_code == 200
    assert client.post("/v1/communities/hilltop/resume", headers=fed).json()["status"] == "active"
    paid = client.post("/v1/transactions", json=to_hilltop, headers=federation.keys["treasurer"])
    assert paid.status_code == 201, paid.text


# -- holds -----------------------------------------------------------------------------------


def test_resolving_a_hold_is_judged_inside_the_write(
    engine: Engine, federation: Federation
) -> None:
    """The API refuses first (another community's hold is forbidden there); the ledger
    refuses too, for whichever caller reaches it: posting or voiding a hold needs the
    authority that placed it."""
    ledger = Ledger(engine)
    hilltop = Actor(ActorRole.TREASURER, _community_id(engine, "hilltop"))
    member_bo = Actor(
        ActorRole.MEMBER, _community_id(engine, "riverbend"), frozenset({federation.bo})
    )
    for actor in (hilltop, member_bo):
        for resolve in (
            lambda a=actor: ledger.post_pending(federation.pending, actor=a),
            lambda a=actor: ledger.void_pending(federation.pending, actor=a),
        ):
            before = _counts(engine)
            with pytest.raises(LedgerError) as refused:
                resolve()
            assert refused.value.code == Code.ACCOUNT_NOT_FOUND
            assert _counts(engine) == before
    riverbend = Actor(ActorRole.TREASURER, _community_id(engine, "riverbend"))
    assert ledger.void_pending(federation.pending, actor=riverbend).status == "voided"


def _community_id(engine: Engine, slug: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT id FROM communities WHERE slug = :slug"), {"slug": slug}
            ).scalar_one()
        )


def test_a_hold_on_an_issuance_account_counts_against_the_cap(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    """A hold posts later without asking the cap again, so the cap counts it when it is
    placed: two holds cannot together issue more than the cap leaves."""
    treasurer = federation.keys["treasurer"]
    circulating = client.get("/v1/currencies/HRB/supply", headers=treasurer).json()[
        "in_circulation"
    ]
    capped = client.patch(
        "/v1/currencies/HRB", json={"circulation_cap": circulating + 100}, headers=treasurer
    )
    assert capped.status_code == 200, capped.text
    hold = {**_pay(federation.riverbend_issuance, federation.bo, 100, "HRB"), "pending": True}
    placed = client.post("/v1/transactions", json=hold, headers=treasurer)
    assert placed.status_code == 201, placed.text
    hold["postings"][0]["amount"] = 1
    _refused(
        client, engine, treasurer, "POST", "/v1/transactions", hold, 409,
        "circulation_cap_exceeded",
    )  # fmt: skip
    _refused(
        client, engine, treasurer, "PATCH", "/v1/currencies/HRB",
        {"circulation_cap": circulating + 99}, 409, "limit_below_balance",
    )  # fmt: skip
    posted = client.post(f"/v1/transactions/{placed.json()['id']}/post", headers=treasurer)
    assert posted.status_code == 200, posted.text
    after = client.get("/v1/currencies/HRB/supply", headers=treasurer).json()
    assert after["in_circulation"] == circulating + 100
