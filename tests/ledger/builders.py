"""Small builders so a test row stays one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.authority import HeldIn
from ledger.model import AccountStatus, AccountType, CurrencyKind, PostingDraft, TransactionDraft
from ledger.service import Ledger


def pay(
    source: int, destination: int, amount: Any, currency: str = "HRB", **fields: Any
) -> TransactionDraft:
    return TransactionDraft(
        postings=(PostingDraft(source, destination, amount, currency),), **fields
    )


def hold(
    source: int, destination: int, amount: int, currency: str = "HRB", **fields: Any
) -> TransactionDraft:
    return pay(source, destination, amount, currency, pending=True, **fields)


@dataclass(frozen=True)
class Village:
    """Two communities: Riverbend with Hearts (HRB, scale 2, held anywhere) and Leaves
    (LVS, scale 0) shared across the federation, and Hilltop. Account ids by role."""

    issuance: int
    ana: int
    bo: int
    capped: int
    frozen: int
    closed: int
    leaves_issuance: int
    leaves_ana: int
    hilltop_member: int


def village(ledger: Ledger) -> Village:
    ledger.create_community("riverbend", "Riverbend")
    ledger.create_community("hilltop", "Hilltop")
    ledger.create_currency(
        "HRB",
        kind=CurrencyKind.HEARTS,
        scale=2,
        name="Riverbend Hearts",
        symbol="♡",
        issuer="riverbend",
        held_in=HeldIn.ALL,  # Riverbend lets its Hearts be held across the federation
    )
    ledger.create_currency("LVS", kind=CurrencyKind.LEAVES, scale=0, name="Leaves", symbol="🍃")

    def open_(
        community: str, currency: str, name: str, type_: AccountType = AccountType.MEMBER, **kw: Any
    ) -> int:
        return ledger.open_account(
            community=community, currency=currency, type=type_, name=name, **kw
        ).id

    issuance = open_("riverbend", "HRB", "issuance", AccountType.ISSUANCE)
    ana = open_("riverbend", "HRB", "ana")
    bo = open_("riverbend", "HRB", "bo")
    capped = open_("riverbend", "HRB", "capped", max_balance=5_000)
    frozen = open_("riverbend", "HRB", "frozen")
    closed = open_("riverbend", "HRB", "closed")
    leaves_issuance = open_("riverbend", "LVS", "leaves-issuance", AccountType.ISSUANCE)
    leaves_ana = open_("riverbend", "LVS", "ana")
    hilltop_member = open_("hilltop", "HRB", "cai")
    ledger.post_transaction(pay(issuance, ana, 10_000))
    ledger.update_account(frozen, status=AccountStatus.FROZEN)
    ledger.update_account(closed, status=AccountStatus.CLOSED)
    return Village(
        issuance, ana, bo, capped, frozen, closed, leaves_issuance, leaves_ana, hilltop_member
    )
