"""Twins: concurrent requests with one client id, against a real ``heartleaf serve``.

Sixteen copies of a create (a community, a key) arrive at once; exactly one creates and
every other gets its answer back, the same status and body (for a key, its secret only to
the twin that made it: secrets are never stored), never "name taken" or a second
resource. Both databases.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine, text

from tests.api.test_server import _call, _heartleaf, environment, server

__all__ = ["environment", "server"]  # the fixtures this module borrows
TWINS = 16


def _at_once(url: str, body: dict[str, Any], key: str) -> list[tuple[int, Any]]:
    with ThreadPoolExecutor(TWINS) as pool:
        return list(pool.map(lambda _: _call(url, "POST", body, key), range(TWINS)))


def test_twins_of_a_create_get_one_outcome(
    server: str, environment: dict[str, str], engine: Engine
) -> None:
    made = _heartleaf(environment, "keys", "create", "--role", "federation", "--label", "twins")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    cases = [
        ("/v1/communities", {"slug": "twinvale", "name": "Twinvale", "client_id": "c-1"}),
        ("/v1/keys", {"role": "auditor", "label": "books", "client_id": "k-1"}),
    ]
    for url, body in cases:
        answers = _at_once(server + url, body, key)
        assert {status for status, _ in answers} == {201}, answers
        if url == "/v1/keys":
            # The secret is shown once: to the twin that created the key. Its replays are
            # the same key without it, since a secret is never stored.
            secrets = [answer.pop("secret") for _, answer in answers]
            assert sum(secret is not None for secret in secrets) == 1, secrets
        assert len({repr(answer) for _, answer in answers}) == 1, answers
    with engine.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM communities WHERE slug = 'twinvale'")
            ).scalar_one()
            == 1
        )
        assert (
            connection.execute(
                text("SELECT count(*) FROM api_keys WHERE label = 'books'")
            ).scalar_one()
            == 1
        )
