"""An app over each real database, a federation key, and a small federation to call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api import keys as key_store
from api.app import create_app
from ledger.model import AccountStatus, AccountType, CurrencyKind
from ledger.service import Ledger, utc_now
from tests.conftest import Clock
from tests.ledger.builders import pay


@pytest.fixture
def client(engine: Engine, clock: Clock) -> Iterator[TestClient]:
    app = create_app(engine, clock=clock, expire_in_background=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass(frozen=True)
class Federation:
    """Two communities with Hearts each and shared Leaves; a key for every role."""

    keys: dict[str, dict[str, str]]  # role name -> headers: federation, auditor, treasurer, viewer,
    # other_treasurer, other_viewer (the other_* keys belong to hilltop)
    riverbend_issuance: int
    ana: int
    bo: int
    ana_leaves: int
    leaves_issuance: int
    hilltop_member: int
    hilltop_leaves: int
    frozen: int
    transaction: int  # issuance -> ana, touches riverbend only
    pending: int  # ana -> bo, held


@pytest.fixture
def federation(engine: Engine, clock: Clock) -> Federation:
    ledger = Ledger(engine, clock=clock)
    ledger.create_community("riverbend", "Riverbend")
    ledger.create_community("hilltop", "Hilltop")
    ledger.create_currency(
        "HRB",
        kind=CurrencyKind.HEARTS,
        scale=2,
        name="Riverbend Hearts",
        symbol="♡",
        issuer="riverbend",
    )
    ledger.create_currency(
        "HHT",
        kind=CurrencyKind.HEARTS,
        scale=2,
        name="Hilltop Hearts",
        symbol="♡",
        issuer="hilltop",
    )
    ledger.create_currency("LEAF", kind=CurrencyKind.LEAVES, scale=0, name="Leaves", symbol="🍃")

    def open_(
        community: str, currency: str, name: str, kind: AccountType = AccountType.MEMBER
    ) -> int:
        return ledger.open_account(community=community, currency=currency, type=kind, name=name).id

    issuance = open_("riverbend", "HRB", "issuance", AccountType.ISSUANCE)
    ana, bo = open_("riverbend", "HRB", "ana"), open_("riverbend", "HRB", "bo")
    frozen = open_("riverbend", "HRB", "frozen")
    leaves_issuance = open_("riverbend", "LEAF", "leaves-issuance", AccountType.ISSUANCE)
    ana_leaves = open_("riverbend", "LEAF", "ana")
    hilltop_member = open_("hilltop", "HHT", "cai")
    hilltop_leaves = open_("hilltop", "LEAF", "cai")
    hilltop_issuance = open_("hilltop", "LEAF", "leaves-issuance", AccountType.ISSUANCE)
    transaction = ledger.post_transaction(pay(issuance, ana, 10_000)).transaction
    ledger.post_transaction(pay(leaves_issuance, ana_leaves, 500, "LEAF"))
    ledger.post_transaction(pay(hilltop_issuance, hilltop_leaves, 500, "LEAF"))
    pending = ledger.post_transaction(pay(ana, bo, 1_000, pending=True)).transaction
    ledger.update_account(frozen, status=AccountStatus.FROZEN)
    assert transaction is not None
    assert pending is not None

    def key(role: key_store.Role, community: str | None) -> dict[str, str]:
        _, secret = key_store.create_key(
            engine, role=role, community=community, label=f"{role}", now=utc_now()
        )
        return bearer(secret)

    keys = {
        "federation": key(key_store.Role.FEDERATION, None),
        "auditor": key(key_store.Role.AUDITOR, None),
        "treasurer": key(key_store.Role.TREASURER, "riverbend"),
        "viewer": key(key_store.Role.VIEWER, "riverbend"),
        "other_treasurer": key(key_store.Role.TREASURER, "hilltop"),
        "other_viewer": key(key_store.Role.VIEWER, "hilltop"),
    }
    return Federation(
        keys,
        issuance,
        ana,
        bo,
        ana_leaves,
        leaves_issuance,
        hilltop_member,
        hilltop_leaves,
        frozen,
        transaction.id,
        pending.id,
    )
