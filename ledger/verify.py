"""The invariant checker: everything the ledger promises, checked from the stored rows.

It trusts nothing maintained: each account's balance is compared with its last history
row and with a recomputation from the postings, and every history row must follow from
the one before it. The CLI's ``verify``, the hypothesis state machine and the test
database fixture all call ``verify``. History is streamed in chunks, so memory stays flat
on a large ledger; ``progress`` hears (rows checked, rows in all) as it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from ledger import authority, money
from ledger import repository as repo
from ledger.database import unit_of_work
from ledger.tables import to_micros

STREAM_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class Violation:
    check: str
    detail: str
    account_id: int | None = None
    transaction_id: int | None = None

    def __str__(self) -> str:
        where = []
        if self.account_id is not None:
            where.append(f"account {self.account_id}")
        if self.transaction_id is not None:
            where.append(f"transaction {self.transaction_id}")
        return f"{self.check}: {self.detail}" + (f" ({', '.join(where)})" if where else "")


def verify(engine: Engine, progress: Callable[[int, int], None] | None = None) -> list[Violation]:
    """Every violated invariant, in one consistent snapshot of the store; [] when sound."""
    with unit_of_work(engine, write=False, snapshot=True) as connection:
        violations = _sums_per_currency(repo.currency_sums(connection))
        accounts = repo.all_accounts(connection)
        recomputed = repo.posting_totals_by_account(connection)
        held = repo.hold_totals_by_account(connection)
        for account in accounts:
            violations += _account_checks(account, recomputed, held)
        for transaction_id, index in repo.postings_with_wrong_currency(connection):
            violations.append(
                Violation(
                    "currency",
                    f"posting {index} moves a currency an account does not hold",
                    transaction_id=transaction_id,
                )
            )
        for (transaction_id,) in repo.broken_reversal_links(connection):
            violations.append(
                Violation(
                    "reversal",
                    "the reversal and its original do not point at each other",
                    transaction_id=transaction_id,
                )
            )
        violations += _authority_checks(connection)
        total = repo.count_entries(connection)
        newest: dict[int, tuple[int, int, int, int]] = {}
        violations += _walk_history(connection, total, newest, progress)
        for account in accounts:
            violations += _matches_history(account, newest.get(account.id))
    return violations


def _authority_checks(connection: Connection) -> list[Violation]:
    """Issuance nobody authorized, and circulation past a cap: every issuance account and
    every floor below zero (or none) outside the system accounts must have been given by
    the currency's issuer (or the operator), and no capped currency circulates more."""
    violations: list[Violation] = []
    for account_id, code, issuer_id, authorized_by in repo.powered_accounts(connection):
        if authorized_by not in (authority.issuer_scope(issuer_id), "operator"):
            violations.append(
                Violation(
                    "issuance_authority",
                    f"a {code} account issues or runs below zero without its issuer's "
                    f"authority (authorized by {authorized_by or 'nobody on record'})",
                    account_id=account_id,
                )
            )
    for currency_id, code, cap in repo.capped_currencies(connection):
        circulating = repo.circulation(connection, currency_id)
        if circulating > cap:
            violations.append(
                Violation("circulation_cap", f"{code} circulates {circulating}, above {cap}")
            )
    return violations


def _walk_history(
    connection: Connection,
    total: int,
    newest: dict[int, tuple[int, int, int, int]],
    progress: Callable[[int, int], None] | None,
) -> list[Violation]:
    """Check that every history row follows from the one before it on its account, and
    is later than it unless both belong to one transaction; fill ``newest`` with each
    account's last (balance_posted, debits_pending, credits_pending, at).

    One loop over plain tuples: it runs once per history row, millions of times."""
    violations: list[Violation] = []
    account: int | None = None
    transaction: int | None = None
    before_at = posted = debits = credits = 0
    checked = 0
    for chunk in repo.stream_history(connection, STREAM_CHUNK):
        for row in chunk:
            (
                entry_id,
                account_id,
                transaction_id,
                amount,
                debits_change,
                credits_change,
                row_posted,
                row_debits,
                row_credits,
                at,
            ) = row
            if account_id != account:  # an account's first row follows from nothing
                if account is not None:
                    newest[account] = (posted, debits, credits, before_at)
                account, transaction, posted, debits, credits = account_id, None, 0, 0, 0
            if (posted + amount, debits + debits_change, credits + credits_change) != (
                row_posted,
                row_debits,
                row_credits,
            ):
                violations.append(
                    Violation(
                        "running_balance",
                        f"history row {entry_id} does not follow from the row before it",
                        account_id=account_id,
                        transaction_id=transaction_id,
                    )
                )
            if transaction is not None and transaction != transaction_id and not before_at < at:
                violations.append(
                    Violation(
                        "ordering",
                        f"history row {entry_id} is not later than the transaction before it",
                        account_id=account_id,
                        transaction_id=transaction_id,
                    )
                )
            posted, debits, credits = row_posted, row_debits, row_credits
            transaction, before_at = transaction_id, at
        checked += len(chunk)
        if progress is not None:
            progress(checked, total)
    if account is not None:
        newest[account] = (posted, debits, credits, before_at)
    return violations


def _sums_per_currency(sums: Any) -> list[Violation]:
    violations = []
    for code, posted, debits_pending, credits_pending in sums:
        if posted != 0:
            violations.append(Violation("zero_sum", f"{code} balances sum to {posted}, not 0"))
        if debits_pending != credits_pending:
            violations.append(
                Violation(
                    "zero_sum",
                    f"{code} pending debits {debits_pending} != pending credits {credits_pending}",
                )
            )
    return violations


def _account_checks(
    account: Any, recomputed: dict[int, tuple[int, int, int]], held: dict[int, tuple[int, int]]
) -> list[Violation]:
    violations = []
    stored = (account.balance_posted, account.debits_pending, account.credits_pending)
    if stored != recomputed.get(account.id, (0, 0, 0)):
        violations.append(
            Violation(
                "recomputation",
                f"balance {stored} but the postings add up to "
                f"{recomputed.get(account.id, (0, 0, 0))}",
                account_id=account.id,
            )
        )
    if (account.debits_pending, account.credits_pending) != held.get(account.id, (0, 0)):
        violations.append(
            Violation("holds", "pending totals differ from the open holds", account_id=account.id)
        )
    if not all(money.fits_balance(value) for value in stored):
        violations.append(
            Violation("range", "a balance left the 64-bit range", account_id=account.id)
        )
    available = account.balance_posted - account.debits_pending
    if account.min_balance is not None and available < account.min_balance:
        violations.append(
            Violation(
                "limits",
                f"available {available} is below the floor {account.min_balance}",
                account_id=account.id,
            )
        )
    if (
        account.max_balance is not None
        and account.balance_posted + account.credits_pending > account.max_balance
    ):
        violations.append(
            Violation(
                "limits",
                f"balance is above the ceiling {account.max_balance}",
                account_id=account.id,
            )
        )
    if account.status == "closed" and stored != (0, 0, 0):
        violations.append(
            Violation("closed", "a closed account holds a balance", account_id=account.id)
        )
    return violations


def _matches_history(account: Any, newest: tuple[int, int, int, int] | None) -> list[Violation]:
    stored = (account.balance_posted, account.debits_pending, account.credits_pending)
    if newest is None:
        if stored != (0, 0, 0) or account.last_entry_at is not None:
            return [Violation("history", "a balance without any history", account_id=account.id)]
        return []
    if (
        stored != newest[:3]
        or account.last_entry_at is None
        or to_micros(account.last_entry_at) != newest[3]
    ):
        return [
            Violation(
                "history",
                "the account row differs from its newest history row",
                account_id=account.id,
            )
        ]
    return []
