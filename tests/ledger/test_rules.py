"""Every rule of posting, one row per rejection, in the order the validator checks them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import Engine, func, select

from ledger import repository as repo
from ledger.errors import Code, LedgerError
from ledger.model import PostingDraft, TransactionDraft
from ledger.service import BATCH_MAX, POSTINGS_MAX, Ledger
from tests.ledger.builders import Village, pay, village

Case = Callable[[Village], TransactionDraft]

REJECTIONS: list[tuple[str, Case, Code, str | None]] = [
    ("no postings", lambda v: TransactionDraft(postings=()), Code.POSTINGS_EMPTY, None),
    (
        "too many postings",
        lambda v: TransactionDraft(
            postings=(PostingDraft(v.ana, v.bo, 1, "HRB"),) * (POSTINGS_MAX + 1)
        ),
        Code.POSTINGS_TOO_MANY,
        None,
    ),
    ("zero amount", lambda v: pay(v.ana, v.bo, 0), Code.AMOUNT_OUT_OF_RANGE, None),
    ("negative amount", lambda v: pay(v.ana, v.bo, -5), Code.AMOUNT_OUT_OF_RANGE, None),
    ("amount above 2^53-1", lambda v: pay(v.ana, v.bo, 2**53), Code.AMOUNT_OUT_OF_RANGE, None),
    ("float amount", lambda v: pay(v.ana, v.bo, 1.5), Code.AMOUNT_OUT_OF_RANGE, None),
    ("bool amount", lambda v: pay(v.ana, v.bo, True), Code.AMOUNT_OUT_OF_RANGE, None),
    ("same account", lambda v: pay(v.ana, v.ana, 1), Code.SAME_ACCOUNT, "ana"),
    (
        "timeout on a posted transaction",
        lambda v: pay(v.ana, v.bo, 1, timeout_seconds=60),
        Code.TIMEOUT_OUT_OF_RANGE,
        None,
    ),
    (
        "timeout too long",
        lambda v: pay(v.ana, v.bo, 1, pending=True, timeout_seconds=10**9),
        Code.TIMEOUT_OUT_OF_RANGE,
        None,
    ),
    ("memo too long", lambda v: pay(v.ana, v.bo, 1, memo="x" * 501), Code.INVALID_REQUEST, None),
    ("unknown source", lambda v: pay(999_999, v.bo, 1), Code.ACCOUNT_NOT_FOUND, None),
    ("unknown destination", lambda v: pay(v.ana, 999_999, 1), Code.ACCOUNT_NOT_FOUND, None),
    (
        "posting currency is not the accounts'",
        lambda v: pay(v.ana, v.bo, 1, "LVS"),
        Code.CURRENCY_MISMATCH,
        "ana",
    ),
    (
        "accounts of two currencies",
        lambda v: pay(v.ana, v.leaves_ana, 1),
        Code.CURRENCY_MISMATCH,
        "leaves_ana",
    ),
    ("into a closed account", lambda v: pay(v.ana, v.closed, 1), Code.ACCOUNT_CLOSED, "closed"),
    ("out of a frozen account", lambda v: pay(v.frozen, v.ana, 1), Code.ACCOUNT_FROZEN, "frozen"),
    ("into a frozen account", lambda v: pay(v.ana, v.frozen, 1), Code.ACCOUNT_FROZEN, "frozen"),
    ("overdraw", lambda v: pay(v.ana, v.bo, 10_001), Code.INSUFFICIENT_FUNDS, "ana"),
    (
        "overdraw by a second posting",
        lambda v: TransactionDraft(
            postings=(
                PostingDraft(v.ana, v.bo, 6_000, "HRB"),
                PostingDraft(v.ana, v.bo, 6_000, "HRB"),
            )
        ),
        Code.INSUFFICIENT_FUNDS,
        "ana",
    ),
    (
        "hold more than available",
        lambda v: pay(v.ana, v.bo, 10_001, pending=True),
        Code.INSUFFICIENT_FUNDS,
        "ana",
    ),
    ("above the ceiling", lambda v: pay(v.ana, v.capped, 5_001), Code.CEILING_EXCEEDED, "capped"),
    (
        "pending above the ceiling",
        lambda v: pay(v.ana, v.capped, 5_001, pending=True),
        Code.CEILING_EXCEEDED,
        "capped",
    ),
]


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (repo.transactions, repo.postings, repo.entries, repo.holds, repo.events)
        }


@pytest.mark.parametrize(
    ("case", "build", "code", "account"), REJECTIONS, ids=[row[0] for row in REJECTIONS]
)
def test_rejection_has_its_code_and_leaves_nothing(
    ledger: Ledger, engine: Engine, case: str, build: Case, code: Code, account: str | None
) -> None:
    v = village(ledger)  # ana holds 10,000
    before = _row_counts(engine)
    balances = [ledger.balance(a) for a in (v.ana, v.bo, v.capped)]

    with pytest.raises(LedgerError) as raised:
        ledger.post_transaction(replace(build(v), client_id=f"rejected-{case}"))

    assert raised.value.code == code
    assert raised.value.detail  # a sentence for the treasurer
    if account is not None:
        assert raised.value.account_id == getattr(v, account)
    assert _row_counts(engine) == before
    assert [ledger.balance(a) for a in (v.ana, v.bo, v.capped)] == balances


def test_codes_are_listed_once_with_a_sentence() -> None:
    from ledger.errors import CATALOGUE  # noqa: PLC0415

    assert list(CATALOGUE) == list(Code)
    assert all(
        rule.sentence.endswith(".") and 400 <= rule.http_status < 600 for rule in CATALOGUE.values()
    )


def test_batch_larger_than_tigerbeetles_is_refused(ledger: Ledger) -> None:
    v = village(ledger)
    with pytest.raises(LedgerError) as raised:
        ledger.post_transactions([pay(v.issuance, v.ana, 1)] * (BATCH_MAX + 1))
    assert raised.value.code == Code.BATCH_TOO_LARGE


def test_balance_beyond_64_bits_is_refused(ledger: Ledger) -> None:
    v = village(ledger)
    largest = PostingDraft(v.issuance, v.bo, 2**53 - 1, "HRB")
    for count in (POSTINGS_MAX,) * 7 + (POSTINGS_MAX - 1,):  # 1023 x (2^53 - 1): still fits
        ledger.post_transaction(TransactionDraft(postings=(largest,) * count))
    with pytest.raises(LedgerError) as raised:
        ledger.post_transaction(pay(v.issuance, v.bo, 2**53 - 1))
    assert raised.value.code == Code.BALANCE_OUT_OF_RANGE
    assert raised.value.account_id == v.issuance  # it issued 10,000 before: it would pass -2^63
