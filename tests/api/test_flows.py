"""What a treasurer and the federation's tools do through the API, end to end."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.api.conftest import Federation, bearer


def _pay(
    source: int, destination: int, amount: int, currency: str = "HRB", **fields: Any
) -> dict[str, Any]:
    posting = {
        "source_account_id": source,
        "destination_account_id": destination,
        "amount": amount,
        "currency": currency,
    }
    return {"postings": [posting], **fields}


def test_treasurer_pays_within_and_across_communities(
    client: TestClient, federation: Federation
) -> None:
    treasurer = federation.keys["treasurer"]
    within = client.post(
        "/v1/transactions",
        json=_pay(federation.ana, federation.bo, 1_250, category="care:childcare"),
        headers=treasurer,
    )
    assert within.status_code == 201, within.text
    across = client.post(
        "/v1/transactions",
        json=_pay(federation.ana_leaves, federation.hilltop_leaves, 40, "LEAF"),
        headers=treasurer,
    )
    assert across.status_code == 201, across.text
    balance = client.get(
        f"/v1/accounts/{federation.hilltop_leaves}/balance", headers=federation.keys["auditor"]
    )
    assert balance.json()["posted"] == 540
    statement = client.get(
        f"/v1/accounts/{federation.ana}/statement?limit=2", headers=treasurer
    ).json()
    assert [line["balance"]["posted"] for line in statement["items"]] == [
        10_000,
        10_000,
    ]  # the hold then
    following = client.get(
        f"/v1/accounts/{federation.ana}/statement?cursor={statement['next_cursor']}",
        headers=treasurer,
    ).json()
    assert following["items"][-1]["balance"]["posted"] == 10_000 - 1_250
    listed = client.get("/v1/transactions?category=care", headers=treasurer).json()
    assert [t["id"] for t in listed["items"]] == [within.json()["id"]]


def test_replay_returns_the_original_and_a_changed_replay_is_refused(
    client: TestClient, federation: Federation
) -> None:
    headers = {**federation.keys["treasurer"], "Idempotency-Key": "nov-0001"}
    first = client.post(
        "/v1/transactions", json=_pay(federation.ana, federation.bo, 100), headers=headers
    )
    again = client.post(
        "/v1/transactions", json=_pay(federation.ana, federation.bo, 100), headers=headers
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = client.post(
        "/v1/transactions", json=_pay(federation.ana, federation.bo, 101), headers=headers
    )
    assert (changed.status_code, changed.json()["code"]) == (409, "idempotency_conflict")
    balance = client.get(f"/v1/accounts/{federation.bo}/balance", headers=headers).json()
    assert balance["posted"] == 100


def test_two_phase_through_the_api(client: TestClient, federation: Federation) -> None:
    treasurer = federation.keys["treasurer"]
    held = client.post(
        "/v1/transactions",
        json=_pay(federation.ana, federation.bo, 3_000, pending=True, timeout_seconds=3600),
        headers=treasurer,
    ).json()
    assert held["status"] == "pending"
    balance = client.get(f"/v1/accounts/{federation.ana}/balance", headers=treasurer).json()
    assert balance["available"] == 10_000 - 1_000 - 3_000
    posted = client.post(
        f"/v1/transactions/{held['id']}/post", json={"amounts": [2_000]}, headers=treasurer
    )
    assert posted.status_code == 200, posted.text
    assert posted.json()["postings"][0]["amount_posted"] == 2_000
    again = client.post(f"/v1/transactions/{held['id']}/post", headers=treasurer)
    assert again.json()["code"] == "pending_already_posted"
    voided = client.post(f"/v1/transactions/{federation.pending}/void", headers=treasurer)
    assert voided.json()["status"] == "voided"
    reversal = client.post(
        f"/v1/transactions/{held['id']}/reverse",
        json={"memo": "wrong member"},
        headers=federation.keys["federation"],
    )
    assert reversal.status_code == 201, reversal.text
    assert reversal.json()["reverses_id"] == held["id"]
    twice = client.post(
        f"/v1/transactions/{held['id']}/reverse", headers=federation.keys["federation"]
    )
    assert twice.json()["code"] == "already_reversed"


def test_batch_gives_each_item_its_result(client: TestClient, federation: Federation) -> None:
    items = [_pay(federation.ana, federation.bo, 10, client_id=f"b-{n}") for n in range(5)]
    items.append(_pay(federation.ana, federation.bo, 10**9))
    result = client.post(
        "/v1/transactions/batch", json={"transactions": items}, headers=federation.keys["treasurer"]
    ).json()
    assert (result["created"], result["rejected"]) == (5, 1)
    assert result["results"][5]["problem"]["code"] == "insufficient_funds"
    replay = client.post(
        "/v1/transactions/batch",
        json={"transactions": items[:5]},
        headers=federation.keys["treasurer"],
    ).json()
    assert replay["replayed"] == 5


def test_account_changes_honour_if_match(client: TestClient, federation: Federation) -> None:
    headers = federation.keys["treasurer"]
    read = client.get(f"/v1/accounts/{federation.bo}", headers=headers)
    etag = read.headers["ETag"]
    frozen = client.patch(
        f"/v1/accounts/{federation.bo}",
        json={"status": "frozen"},
        headers={**headers, "If-Match": etag},
    )
    assert frozen.status_code == 200, frozen.text
    assert frozen.headers["ETag"] != etag
    stale = client.patch(
        f"/v1/accounts/{federation.bo}",
        json={"status": "open"},
        headers={**headers, "If-Match": etag},
    )
    assert (stale.status_code, stale.json()["code"]) == (412, "version_mismatch")
    refused = client.post(
        "/v1/transactions", json=_pay(federation.ana, federation.bo, 1), headers=headers
    )
    assert refused.json()["code"] == "account_frozen"


def test_event_feed_long_poll_wakes_for_a_new_event(
    client: TestClient, federation: Federation
) -> None:
    viewer = federation.keys["viewer"]
    cursor = client.get("/v1/events?after=0&limit=1000", headers=viewer).json()["next_cursor"]

    def pay_soon() -> None:
        time.sleep(0.3)
        client.post(
            "/v1/transactions",
            json=_pay(federation.ana, federation.bo, 5),
            headers=federation.keys["treasurer"],
        )

    payer = threading.Thread(target=pay_soon)
    payer.start()
    started = time.monotonic()
    page = client.get(f"/v1/events?after={cursor}&wait=10", headers=viewer).json()
    payer.join()
    assert time.monotonic() - started < 10
    assert [e["kind"] for e in page["items"]] == ["transaction.posted"]
    assert page["items"][0]["communities"] == ["riverbend"]
    hidden = client.get(
        f"/v1/events?after={cursor}", headers=federation.keys["other_viewer"]
    ).json()
    assert hidden["items"] == []
    assert int(hidden["next_cursor"]) >= int(
        page["next_cursor"]
    )  # skipped past what it may not see


def test_keys_are_shown_once_and_revocable(client: TestClient, federation: Federation) -> None:
    admin = federation.keys["federation"]
    created = client.post(
        "/v1/keys",
        json={"role": "viewer", "community": "hilltop", "label": "dashboard", "client_id": "k-1"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert client.get("/v1/accounts", headers=bearer(secret)).status_code == 200
    replay = client.post(
        "/v1/keys",
        json={"role": "viewer", "community": "hilltop", "label": "dashboard", "client_id": "k-1"},
        headers=admin,
    )
    assert (replay.status_code, replay.json()["secret"], replay.json()["id"]) == (
        201,
        None,
        created.json()["id"],
    )
    listed = client.get("/v1/keys", headers=admin).json()
    assert all("secret" not in key for key in listed)
    revoked = client.delete(f"/v1/keys/{created.json()['id']}", headers=admin)
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/v1/accounts", headers=bearer(secret)).status_code == 401


def test_readiness_follows_the_schema(client: TestClient, engine: Engine) -> None:
    assert client.get("/readyz").json()["migrations"] == "at head"
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
    finally:
        with engine.begin() as connection:
            from migrations import head_revision  # noqa: PLC0415

            connection.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head_revision()}
            )


def test_metrics_count_requests_and_refusals(client: TestClient, federation: Federation) -> None:
    client.post(
        "/v1/transactions",
        json=_pay(federation.ana, federation.bo, 10**9),
        headers=federation.keys["treasurer"],
    )
    text_body = client.get("/metrics").text
    assert (
        'heartleaf_transactions_total{code="insufficient_funds",outcome="rejected"} 1.0'
        in text_body
    )
    assert 'route="/v1/transactions",status="409"' in text_body
