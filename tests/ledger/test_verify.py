"""``verify`` finds what it promises to find: each kind of damage to the stored rows is
reported, by its check, on both databases; undoing the damage makes the books sound again
(the ``engine`` fixture verifies them once more after each test)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from ledger.service import Ledger
from ledger.verify import verify
from tests.ledger.builders import hold, pay, village

# (what is damaged, the statement that damages it, the one that undoes it, the checks that
# must report it). :account is bo, whose three history rows are :first, :middle and :last;
# :transaction wrote the last; :issuance is Riverbend's HRB issuance account.
DAMAGE: list[tuple[str, str, str, set[str]]] = [
    (
        "a history row's running balance",
        "UPDATE entries SET balance_posted = balance_posted + 1 WHERE id = :first",
        "UPDATE entries SET balance_posted = balance_posted - 1 WHERE id = :first",
        {"running_balance"},
    ),
    (
        "a history row's pending total",
        "UPDATE entries SET debits_pending = debits_pending + 7 WHERE id = :last",
        "UPDATE entries SET debits_pending = debits_pending - 7 WHERE id = :last",
        {"running_balance", "history"},
    ),
    (
        "a history row's instant, no later than the transaction before it",
        "UPDATE entries SET at = (SELECT at FROM entries WHERE id = :middle) WHERE id = :last",
        "UPDATE entries SET at = :last_at WHERE id = :last",
        {"ordering", "history"},
    ),
    (
        "an account's balance",
        "UPDATE accounts SET balance_posted = balance_posted + 5 WHERE id = :account",
        "UPDATE accounts SET balance_posted = balance_posted - 5 WHERE id = :account",
        {"zero_sum", "recomputation", "history"},
    ),
    (
        "an account's newest instant",
        "UPDATE accounts SET last_entry_at = last_entry_at + 1 WHERE id = :account",
        "UPDATE accounts SET last_entry_at = last_entry_at - 1 WHERE id = :account",
        {"history"},
    ),
    (
        "a posting's amount",
        "UPDATE postings SET amount = amount + 3 WHERE transaction_id = :transaction",
        "UPDATE postings SET amount = amount - 3 WHERE transaction_id = :transaction",
        {"recomputation"},
    ),
    (
        "an issuance account its issuer never authorized",
        "UPDATE accounts SET authorized_by = 'community:999' WHERE id = :issuance",
        "UPDATE accounts SET authorized_by = 'operator' WHERE id = :issuance",
        {"issuance_authority"},
    ),
    (
        "a credit line nobody granted",
        "UPDATE accounts SET min_balance = -1 WHERE id = :account",
        "UPDATE accounts SET min_balance = 0 WHERE id = :account",
        {"issuance_authority"},
    ),
    (
        "a currency circulating past its cap",
        "UPDATE currencies SET circulation_cap = 1 WHERE code = 'HRB'",
        "UPDATE currencies SET circulation_cap = NULL WHERE code = 'HRB'",
        {"circulation_cap"},
    ),
]


@pytest.mark.parametrize(
    ("damaged", "damage", "repair", "checks"), DAMAGE, ids=[row[0] for row in DAMAGE]
)
def test_verify_reports_damage_by_its_check(
    ledger: Ledger, engine: Engine, damaged: str, damage: str, repair: str, checks: set[str]
) -> None:
    v = village(ledger)
    for draft in (pay(v.ana, v.bo, 100), pay(v.ana, v.bo, 200), hold(v.bo, v.ana, 50)):
        outcome = ledger.post_transaction(draft)  # a hold: pending totals move too
        assert outcome.transaction is not None
    with engine.begin() as connection:
        rows = connection.execute(
            text("SELECT id, at FROM entries WHERE account_id = :account ORDER BY at, id"),
            {"account": v.bo},
        ).all()
    first, middle, last = rows
    where: dict[str, Any] = {
        "account": v.bo,
        "issuance": v.issuance,
        "first": first.id,
        "middle": middle.id,
        "last": last.id,
        "last_at": last.at,
        "transaction": outcome.transaction.id,
    }
    assert verify(engine) == []

    with engine.begin() as connection:
        connection.execute(text(damage), where)
    found = verify(engine)
    with engine.begin() as connection:
        connection.execute(text(repair), where)

    assert {violation.check for violation in found} == checks, damaged
    assert verify(engine) == []


def test_verify_reports_progress_up_to_every_history_row(ledger: Ledger, engine: Engine) -> None:
    v = village(ledger)
    for _ in range(5):
        ledger.post_transaction(pay(v.ana, v.bo, 1))
    heard: list[tuple[int, int]] = []

    assert verify(engine, lambda checked, total: heard.append((checked, total))) == []

    assert heard
    assert heard[-1][0] == heard[-1][1] == 2 + 5 * 2  # the funding and five transfers
