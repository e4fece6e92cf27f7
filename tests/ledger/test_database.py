"""The engine's pooled PostgreSQL connections: replaced after the server dropped them."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from ledger import database
from ledger.database import unit_of_work
from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.postgres_only


def _backend(engine: Engine) -> int:
    with unit_of_work(engine, write=False) as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(backend: int) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))


def test_an_idle_connection_the_server_dropped_is_replaced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = _backend(engine)
    _terminate(dropped)
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert _backend(engine) != dropped  # pinged, found dead, replaced: the request succeeds
    with unit_of_work(engine, write=True) as connection:  # and writes work on it
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_a_connection_in_steady_use_is_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 3600.0)
    dropped = _backend(engine)
    _terminate(dropped)
    # No round trip before use: the loss shows on the first statement, as it would for a
    # connection dropped mid-request, and the pool then starts afresh.
    with pytest.raises(OperationalError):
        _backend(engine)
    assert _backend(engine) != dropped
