"""Keys that belong to one member, expire, and rotate, through the real app on both
databases. A member key is tried against every route of the app: outside its few, it is
refused; inside them, it sees and moves only its member's own accounts."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from api.app import MEMBER_ROUTES
from tests.api.conftest import Federation, bearer
from tests.conftest import Clock


def _key(client: TestClient, federation: Federation, **body: Any) -> dict[str, Any]:
    made = client.post(
        "/v1/keys", json={"label": "a key", **body}, headers=federation.keys["federation"]
    )
    assert made.status_code == 201, made.text
    created: dict[str, Any] = made.json()
    return created


def _pay(source: int, destination: int, amount: int = 1) -> dict[str, Any]:
    return {
        "postings": [
            {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": amount,
                "currency": "HRB",
            }
        ]
    }


def _transactions(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM transactions")).scalar_one())


def test_a_member_key_reads_and_pays_from_its_own_accounts_only(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    ana = bearer(
        _key(client, federation, role="member", community="riverbend", member="ana")["secret"]
    )
    listed = client.get("/v1/accounts", headers=ana).json()["items"]
    assert sorted(a["id"] for a in listed) == sorted([federation.ana, federation.ana_leaves])
    assert client.get(f"/v1/accounts/{federation.ana}/balance", headers=ana).status_code == 200
    assert client.get(f"/v1/accounts/{federation.ana}/statement", headers=ana).status_code == 200
    for other in (federation.bo, federation.hilltop_member):
        hidden = client.get(f"/v1/accounts/{other}", headers=ana)
        assert (hidden.status_code, hidden.json()["code"]) == (404, "account_not_found")
    paid = client.post("/v1/transactions", json=_pay(federation.ana, federation.bo), headers=ana)
    assert paid.status_code == 201, paid.text
    seen = client.get(f"/v1/transactions/{paid.json()['id']}", headers=ana)
    assert seen.status_code == 200
    # Bo's money is not Ana's to spend, though Bo is of her community.
    before = _transactions(engine)
    taken = client.post("/v1/transactions", json=_pay(federation.bo, federation.ana), headers=ana)
    assert (taken.status_code, taken.json()["code"]) == (404, "account_not_found")
    assert _transactions(engine) == before
    other = client.get(f"/v1/transactions/{federation.transaction}", headers=ana)
    assert other.status_code == 200  # the fixture's issuance paid Ana: hers to see
    held = client.get(f"/v1/transactions/{federation.pending}", headers=ana)
    assert held.status_code == 200  # Ana's hold to Bo


def test_a_member_key_is_refused_every_other_route(
    client: TestClient, federation: Federation
) -> None:
    ana = bearer(
        _key(client, federation, role="member", community="riverbend", member="ana")["secret"]
    )
    tried = 0
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method in sorted(m.upper() for m in operations):
            if not path.startswith("/v1/") or (method, path) in MEMBER_ROUTES:
                continue
            url = re.sub(r"\{[^}]+\}", "1", path)
            answer = client.request(method, url, headers=ana)
            assert (answer.status_code, answer.json().get("code")) == (403, "forbidden"), (
                method,
                path,
                answer.text,
            )
            tried += 1
    assert tried > 40
    served = {(m.upper(), path) for path, operations in paths.items() for m in operations}
    assert served >= MEMBER_ROUTES, MEMBER_ROUTES - served  # no allowed route is a typo


def test_a_member_key_needs_a_member_with_accounts(
    client: TestClient, federation: Federation
) -> None:
    body = {"role": "member", "community": "riverbend", "member": "nobody", "label": "x"}
    answer = client.post("/v1/keys", json=body, headers=federation.keys["federation"])
    assert (answer.status_code, answer.json()["code"]) == (404, "account_not_found")
    del body["member"]
    answer = client.post("/v1/keys", json=body, headers=federation.keys["federation"])
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request")
    body = {"role": "member", "community": "riverbend", "member": "ana", "label": "x"}
    answer = client.post("/v1/keys", json=body, headers=federation.keys["treasurer"])
    assert (answer.status_code, answer.json()["code"]) == (403, "forbidden")


def test_a_key_expires(client: TestClient, clock: Clock, federation: Federation) -> None:
    past = (clock() - dt.timedelta(seconds=1)).isoformat()
    refused = client.post(
        "/v1/keys",
        json={"role": "auditor", "label": "late", "expires_at": past},
        headers=federation.keys["federation"],
    )
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_request")
    soon = (clock() + dt.timedelta(hours=1)).isoformat()
    made = _key(client, federation, role="auditor", expires_at=soon)
    assert made["expires_at"] is not None
    auditor = bearer(made["secret"])
    assert client.get("/v1/communities", headers=auditor).status_code == 200
    clock.advance(3601)
    expired = client.get("/v1/communities", headers=auditor)
    assert (expired.status_code, expired.json()["code"]) == (401, "unauthenticated")


def test_a_rotated_key_keeps_its_old_secret_for_the_overlap_only(
    client: TestClient, clock: Clock, federation: Federation
) -> None:
    made = _key(client, federation, role="viewer", community="riverbend")
    old = bearer(made["secret"])
    rotated = client.post(
        f"/v1/keys/{made['id']}/rotate", json={"old_secret_valid_seconds": 60}, headers=old
    )
    assert rotated.status_code == 200, rotated.text
    new = bearer(rotated.json()["secret"])
    assert rotated.json()["prefix"] == made["prefix"]
    assert new != old
    for key in (old, new):
        assert client.get("/v1/communities", headers=key).status_code == 200
    clock.advance(61)
    assert client.get("/v1/communities", headers=old).status_code == 401
    assert client.get("/v1/communities", headers=new).status_code == 200
    # A key other than the federation's rotates only itself.
    other = client.post(f"/v1/keys/{made['id']}/rotate", headers=federation.keys["other_treasurer"])
    assert (other.status_code, other.json()["code"]) == (403, "forbidden")
