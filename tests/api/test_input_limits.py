"""Bad input of a whole class gets one clear answer and writes nothing: numbers JSON has
no words for, bodies and metadata past their limits, an If-Match that only looks like a
number, and a category filter's % and _ (which are themselves, not wildcards)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from api.problems import BODY_MAX_BYTES
from api.schemas import METADATA_MAX_BYTES
from tests.api.conftest import Federation


def _transactions(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM transactions")).scalar_one())


def _body(federation: Federation, metadata: str) -> str:
    return (
        f'{{"postings": [{{"source_account_id": {federation.ana}, '
        f'"destination_account_id": {federation.bo}, "amount": 1, "currency": "HRB"}}], '
        f'"metadata": {metadata}}}'
    )


def test_non_finite_numbers_are_refused_before_anything_is_written(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    before = _transactions(engine)
    for value in ("NaN", "Infinity", "-Infinity", '{"deep": [1, NaN]}'):
        answer = client.post(
            "/v1/transactions",
            content=_body(federation, f'{{"x": {value}}}'),
            headers={**federation.keys["treasurer"], "Content-Type": "application/json"},
        )
        assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request"), value
        assert "NaN or Infinity" in answer.json()["detail"]
    assert _transactions(engine) == before
    fine = client.post(
        "/v1/transactions",
        content=_body(federation, '{"x": 1.5}'),
        headers={**federation.keys["treasurer"], "Content-Type": "application/json"},
    )
    assert fine.status_code == 201, fine.text


def test_metadata_and_bodies_have_limits(
    client: TestClient, engine: Engine, federation: Federation
) -> None:
    before = _transactions(engine)
    big = '{"x": "' + "a" * METADATA_MAX_BYTES + '"}'
    answer = client.post(
        "/v1/transactions",
        content=_body(federation, big),
        headers={**federation.keys["treasurer"], "Content-Type": "application/json"},
    )
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request")
    assert f"{METADATA_MAX_BYTES:,}" in answer.json()["detail"]
    huge = _body(federation, '{"x": "' + "a" * (BODY_MAX_BYTES + 1) + '"}')
    answer = client.post(
        "/v1/transactions",
        content=huge,
        headers={**federation.keys["treasurer"], "Content-Type": "application/json"},
    )
    assert (answer.status_code, answer.json()["code"]) == (413, "payload_too_large")
    assert _transactions(engine) == before


def test_a_chunked_body_past_the_limit_is_refused(
    client: TestClient, federation: Federation
) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(BODY_MAX_BYTES // 65_536 + 2):
            yield b" " * 65_536

    answer = client.post(
        "/v1/transactions",
        content=chunks(),
        headers={**federation.keys["treasurer"], "Content-Type": "application/json"},
    )
    assert (answer.status_code, answer.json()["code"]) == (413, "payload_too_large")


def test_an_if_match_of_unicode_digits_is_a_mismatch_not_a_failure(
    client: TestClient, federation: Federation
) -> None:
    for tag in ('"²"', '"١٢"', 'W/"³"'):
        answer = client.patch(
            f"/v1/accounts/{federation.ana}",
            json={"max_balance": 10**9},
            headers={**federation.keys["treasurer"], "If-Match": tag.encode()},  # type: ignore[dict-item]
        )
        assert (answer.status_code, answer.json()["code"]) == (412, "version_mismatch"), tag


def test_percent_and_underscore_in_a_category_filter_are_literal(
    client: TestClient, federation: Federation
) -> None:
    fed = federation.keys["federation"]
    for category in ("care:childcare", "c_re:y"):
        paid = client.post(
            "/v1/transactions",
            json={
                "postings": [
                    {
                        "source_account_id": federation.ana,
                        "destination_account_id": federation.bo,
                        "amount": 1,
                        "currency": "HRB",
                    }
                ],
                "category": category,
            },
            headers=federation.keys["treasurer"],
        )
        assert paid.status_code == 201, paid.text

    def found(category: str) -> list[str]:
        items = client.get("/v1/transactions", params={"category": category}, headers=fed)
        return sorted(t["category"] for t in items.json()["items"])

    assert found("%") == []
    assert found("c%") == []
    assert found("c_re") == ["c_re:y"]
    assert found("_are") == []
    assert found("care") == ["care:childcare"]
