"""The ledger's behaviour through ``Ledger``, on SQLite and PostgreSQL.

The rejection table lives in ``test_rules.py``; here each concern (replay, batches,
two-phase, expiry, reversal, account life, history reads, the event feed) reads as a short
ledger: who paid whom, what the books say afterwards, and what was written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from ledger import repository as repo
from ledger.database import unit_of_work
from ledger.errors import Code, LedgerError
from ledger.model import (
    AccountStatus,
    AccountType,
    Balance,
    CommunityStatus,
    CurrencyKind,
    EntryKind,
    EventKind,
    Outcome,
    Page,
    PostingDraft,
    Transaction,
    TransactionDraft,
    TransactionStatus,
)
from ledger.service import Ledger
from ledger.verify import verify
from tests.conftest import Clock
from tests.ledger.builders import Village, hold, pay, village

MICROSECOND = dt.timedelta(microseconds=1)


# -- small helpers -----------------------------------------------------------------------------


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (repo.transactions, repo.postings, repo.entries, repo.holds, repo.events)
        }


def _codes(outcomes: list[Outcome]) -> list[Code | None]:
    return [None if o.error is None else o.error.code for o in outcomes]


def _code_of(action: Callable[[], object]) -> Code:
    with pytest.raises(LedgerError) as raised:
        action()
    return raised.value.code


def _code_of_or_outcome(action: Callable[[], Outcome]) -> Outcome | Code:
    """The outcome, or the code of the error raised instead (so a failure shows which)."""
    try:
        return action()
    except LedgerError as error:
        return error.code


def _posted(ledger: Ledger, draft: TransactionDraft, **kwargs: Any) -> Transaction:
    transaction = ledger.post_transaction(draft, **kwargs).transaction
    assert transaction is not None
    return transaction


def _all_lines(ledger: Ledger, account_id: int) -> list[Any]:
    return list(ledger.statement(account_id, limit=1000).items)


def _open(
    ledger: Ledger, name: str, community: str = "riverbend", currency: str = "HRB", **limits: Any
) -> int:
    return ledger.open_account(
        community=community, currency=currency, type=AccountType.MEMBER, name=name, **limits
    ).id


# -- idempotent replay ------------------------------------------------------------------------


def test_replay_returns_the_original_and_writes_nothing(ledger: Ledger, engine: Engine) -> None:
    v = village(ledger)
    first = ledger.post_transaction(pay(v.ana, v.bo, 1_200, client_id="rent-march", memo="rent"))
    before = _row_counts(engine)

    again = ledger.post_transaction(pay(v.ana, v.bo, 1_200, client_id="rent-march", memo="rent"))

    assert (first.replayed, again.replayed) == (False, True)
    assert again.transaction == first.transaction
    assert _row_counts(engine) == before
    assert ledger.balance(v.ana).posted == 8_800
    assert ledger.balance(v.bo).posted == 1_200


def _rent(v: Village, amount: int = 1_200, destination: int | None = None, **fields: Any) -> Any:
    """The request every idempotency test first sends; keywords vary one field of it."""
    fields = {"client_id": "rent-march", "memo": "rent", "category": "care", **fields}
    return pay(v.ana, v.bo if destination is None else destination, amount, **fields)


OTHER_CONTENT: list[tuple[str, Callable[[Village], TransactionDraft]]] = [
    ("another amount", lambda v: _rent(v, amount=1_201)),
    ("another destination", lambda v: _rent(v, destination=v.capped)),
    ("another memo", lambda v: _rent(v, memo="rent, April")),
    ("no category", lambda v: _rent(v, category=None)),
    ("another external ref", lambda v: _rent(v, external_ref="invoice-7")),
    ("other metadata", lambda v: _rent(v, metadata={"week": 12})),
    ("another effective date", lambda v: _rent(v, effective_date=dt.date(2026, 3, 1))),
    ("pending instead of posted", lambda v: _rent(v, pending=True)),
    # A reused id is answered as a reused id, whatever else is wrong with the new request.
    ("an amount the payer lacks", lambda v: _rent(v, amount=50_000)),
    ("into a frozen account", lambda v: _rent(v, destination=v.frozen)),
    ("into an unknown account", lambda v: _rent(v, destination=999_999)),
]


@pytest.mark.parametrize(("case", "other"), OTHER_CONTENT, ids=[row[0] for row in OTHER_CONTENT])
def test_same_client_id_with_other_content_conflicts(
    ledger: Ledger, engine: Engine, case: str, other: Callable[[Village], TransactionDraft]
) -> None:
    v = village(ledger)
    original = _posted(ledger, _rent(v))
    before = _row_counts(engine)

    in_a_batch = ledger.post_transactions([other(v), pay(v.issuance, v.bo, 1)], atomic=True)
    with pytest.raises(LedgerError) as raised:
        ledger.post_transaction(other(v))

    assert _codes(in_a_batch) == [Code.IDEMPOTENCY_CONFLICT, Code.BATCH_ITEM_FAILED]
    assert raised.value.code == Code.IDEMPOTENCY_CONFLICT
    assert raised.value.extra == {"transaction_id": original.id}
    assert _row_counts(engine) == before


def _spend_the_rest(ledger: Ledger, v: Village) -> None:
    _posted(ledger, pay(v.ana, v.hilltop_member, 8_800))


def _freeze_the_payee(ledger: Ledger, v: Village) -> None:
    ledger.update_account(v.bo, status=AccountStatus.FROZEN)


def _close_the_payer(ledger: Ledger, v: Village) -> None:
    _spend_the_rest(ledger, v)
    ledger.update_account(v.ana, status=AccountStatus.CLOSED)


LATER_CHANGES: list[tuple[str, Callable[[Ledger, Village], None]]] = [
    ("the payer spent the rest", _spend_the_rest),
    ("the payee was frozen", _freeze_the_payee),
    ("the payer was closed", _close_the_payer),
]


@pytest.mark.parametrize(("case", "change"), LATER_CHANGES, ids=[row[0] for row in LATER_CHANGES])
def test_a_retry_replays_even_after_the_books_moved_on(
    ledger: Ledger, engine: Engine, case: str, change: Callable[[Ledger, Village], None]
) -> None:
    v = village(ledger)
    original = _posted(ledger, _rent(v))
    change(ledger, v)  # now posting the same request afresh would be refused
    before = _row_counts(engine)

    (in_a_batch,) = ledger.post_transactions([_rent(v)])
    retried = _code_of_or_outcome(lambda: ledger.post_transaction(_rent(v)))

    assert (in_a_batch.error, in_a_batch.replayed, in_a_batch.transaction) == (None, True, original)
    assert retried == Outcome(original, None, replayed=True)
    assert _row_counts(engine) == before


def test_scopes_isolate_client_ids(ledger: Ledger) -> None:
    v = village(ledger)
    riverbend = _posted(ledger, pay(v.ana, v.bo, 100, client_id="tx-1"), scope="riverbend")
    hilltop = _posted(ledger, pay(v.ana, v.hilltop_member, 300, client_id="tx-1"), scope="hilltop")

    assert riverbend.id != hilltop.id
    replay = ledger.post_transaction(pay(v.ana, v.bo, 100, client_id="tx-1"), scope="riverbend")
    assert (replay.replayed, replay.transaction) == (True, riverbend)
    conflict = _code_of(
        lambda: ledger.post_transaction(pay(v.ana, v.bo, 100, client_id="tx-1"), scope="hilltop")
    )
    assert conflict == Code.IDEMPOTENCY_CONFLICT
    assert ledger.balance(v.ana).posted == 10_000 - 100 - 300


def test_a_refused_request_leaves_its_client_id_free(ledger: Ledger) -> None:
    v = village(ledger)
    refused = _code_of(lambda: ledger.post_transaction(pay(v.ana, v.bo, 20_000, client_id="c-9")))

    outcome = ledger.post_transaction(pay(v.ana, v.bo, 2_000, client_id="c-9"))

    assert refused == Code.INSUFFICIENT_FUNDS
    assert outcome.replayed is False
    assert ledger.balance(v.bo).posted == 2_000


def test_duplicates_inside_one_batch(ledger: Ledger, engine: Engine) -> None:
    v = village(ledger)
    before = _row_counts(engine)

    outcomes = ledger.post_transactions(
        [
            pay(v.ana, v.bo, 500, client_id="dup"),
            pay(v.ana, v.bo, 500, client_id="dup"),  # the same request twice: one transfer
            pay(v.ana, v.bo, 999, client_id="dup"),  # the same id, another request
            pay(v.ana, v.bo, 100, client_id="other"),
        ]
    )

    assert _codes(outcomes) == [None, None, Code.IDEMPOTENCY_CONFLICT, None]
    assert [o.replayed for o in outcomes] == [False, True, False, False]
    assert outcomes[1].transaction == outcomes[0].transaction
    assert ledger.balance(v.bo).posted == 600
    assert _row_counts(engine)["transactions"] == before["transactions"] + 2


def test_a_batch_replays_what_an_earlier_call_stored(ledger: Ledger) -> None:
    v = village(ledger)
    stored = _posted(ledger, pay(v.ana, v.bo, 500, client_id="a"))

    outcomes = ledger.post_transactions(
        [pay(v.ana, v.bo, 500, client_id="a"), pay(v.ana, v.bo, 700, client_id="b")]
    )

    assert [(o.replayed, o.error) for o in outcomes] == [(True, None), (False, None)]
    assert outcomes[0].transaction == stored
    assert ledger.balance(v.bo).posted == 1_200


# -- batches ----------------------------------------------------------------------------------


def test_a_batch_answers_each_item(ledger: Ledger) -> None:
    v = village(ledger)

    outcomes = ledger.post_transactions(
        [
            pay(v.ana, v.bo, 1_000),
            pay(v.ana, v.frozen, 1),
            pay(v.ana, v.bo, 50_000),
            pay(v.ana, v.capped, 2_000),
        ]
    )

    assert _codes(outcomes) == [None, Code.ACCOUNT_FROZEN, Code.INSUFFICIENT_FUNDS, None]
    assert [o.transaction is None for o in outcomes] == [False, True, True, False]
    assert ledger.balance(v.ana).posted == 7_000
    assert ledger.balance(v.capped).posted == 2_000


def test_later_items_see_the_balances_earlier_items_left(ledger: Ledger) -> None:
    v = village(ledger)  # ana 10,000; bo 0

    outcomes = ledger.post_transactions(
        [
            pay(v.ana, v.bo, 3_000),
            pay(v.bo, v.hilltop_member, 2_000),  # spends what the first item brought
            pay(v.bo, v.hilltop_member, 1_001),  # one more than is left
            pay(v.ana, v.bo, 7_000),
            pay(v.ana, v.bo, 1),  # ana is empty now
        ]
    )

    assert _codes(outcomes) == [None, None, Code.INSUFFICIENT_FUNDS, None, Code.INSUFFICIENT_FUNDS]
    assert [line.balance.posted for line in _all_lines(ledger, v.bo)] == [3_000, 1_000, 8_000]
    assert ledger.balance(v.hilltop_member).posted == 2_000


def test_atomic_batch_with_one_refusal_writes_nothing(ledger: Ledger, engine: Engine) -> None:
    v = village(ledger)
    before = _row_counts(engine)

    outcomes = ledger.post_transactions(
        [
            pay(v.ana, v.bo, 1_000, client_id="a1"),
            hold(v.ana, v.bo, 1_000, client_id="a2"),
            pay(v.bo, v.capped, 6_000, client_id="a3"),  # bo only got 1,000
            pay(v.ana, v.hilltop_member, 10, client_id="a4"),
        ],
        atomic=True,
    )

    assert _codes(outcomes) == [
        Code.BATCH_ITEM_FAILED,
        Code.BATCH_ITEM_FAILED,
        Code.INSUFFICIENT_FUNDS,
        Code.BATCH_ITEM_FAILED,
    ]
    assert all(o.transaction is None for o in outcomes)
    assert _row_counts(engine) == before
    assert ledger.balance(v.ana) == Balance(10_000, 0, 0)
    # Nothing was stored, so the same ids are free for a corrected batch.
    retried = ledger.post_transactions([pay(v.ana, v.bo, 1_000, client_id="a1")], atomic=True)
    assert _codes(retried) == [None]


def test_atomic_batch_that_passes_writes_everything(ledger: Ledger) -> None:
    v = village(ledger)

    outcomes = ledger.post_transactions(
        [pay(v.ana, v.bo, 1_000), pay(v.bo, v.capped, 1_000)], atomic=True
    )

    assert _codes(outcomes) == [None, None]
    assert ledger.balance(v.bo).posted == 0
    assert ledger.balance(v.capped).posted == 1_000


# -- two-phase --------------------------------------------------------------------------------


def test_a_hold_counts_against_the_floor_and_its_credit_is_not_spendable(ledger: Ledger) -> None:
    v = village(ledger)

    _posted(ledger, hold(v.ana, v.bo, 7_000))

    assert ledger.balance(v.ana) == Balance(10_000, 7_000, 0)
    assert ledger.balance(v.ana).available == 3_000
    assert ledger.balance(v.bo) == Balance(0, 0, 7_000)
    assert _code_of(lambda: ledger.post_transaction(pay(v.ana, v.bo, 3_001))) == (
        Code.INSUFFICIENT_FUNDS
    )
    assert _code_of(lambda: ledger.post_transaction(pay(v.bo, v.hilltop_member, 1))) == (
        Code.INSUFFICIENT_FUNDS
    )
    _posted(ledger, pay(v.ana, v.bo, 3_000))
    assert ledger.balance(v.ana) == Balance(7_000, 7_000, 0)


def test_post_a_hold_in_full(ledger: Ledger) -> None:
    v = village(ledger)
    pending = _posted(ledger, hold(v.ana, v.bo, 7_000))

    posted = ledger.post_pending(pending.id)

    assert posted.status == TransactionStatus.POSTED
    assert [p.amount_posted for p in posted.postings] == [7_000]
    assert posted.resolved_at is not None
    assert posted.resolved_at > posted.created_at
    assert ledger.balance(v.ana) == Balance(3_000, 0, 0)
    assert ledger.balance(v.bo) == Balance(7_000, 0, 0)
    assert [line.kind for line in _all_lines(ledger, v.bo)] == [
        EntryKind.PENDING,
        EntryKind.PENDING_POSTED,
    ]


def test_a_partial_post_releases_the_remainder(ledger: Ledger) -> None:
    v = village(ledger)
    pending = _posted(
        ledger,
        TransactionDraft(
            postings=(
                PostingDraft(v.ana, v.bo, 4_000, "HRB"),
                PostingDraft(v.ana, v.capped, 3_000, "HRB"),
            ),
            pending=True,
        ),
    )

    posted = ledger.post_pending(pending.id, [2_500, 0])

    assert [(p.amount, p.amount_posted) for p in posted.postings] == [(4_000, 2_500), (3_000, 0)]
    assert ledger.balance(v.ana) == Balance(7_500, 0, 0)
    assert ledger.balance(v.bo) == Balance(2_500, 0, 0)
    assert ledger.balance(v.capped) == Balance(0, 0, 0)


def test_void_releases_the_hold(ledger: Ledger) -> None:
    v = village(ledger)
    pending = _posted(ledger, hold(v.ana, v.bo, 7_000))

    voided = ledger.void_pending(pending.id)

    assert voided.status == TransactionStatus.VOIDED
    assert ledger.balance(v.ana) == Balance(10_000, 0, 0)
    assert ledger.balance(v.bo) == Balance(0, 0, 0)
    assert _all_lines(ledger, v.bo)[-1].kind == EntryKind.PENDING_VOIDED


Resolution = Callable[[Ledger, int], object]


def _post(ledger: Ledger, transaction_id: int) -> object:
    return ledger.post_pending(transaction_id)


def _void(ledger: Ledger, transaction_id: int) -> object:
    return ledger.void_pending(transaction_id)


def _nothing(ledger: Ledger, transaction_id: int) -> object:
    return None


RESOLUTION_REFUSALS: list[tuple[str, bool, Resolution, Resolution, Code]] = [
    ("post twice", True, _post, _post, Code.PENDING_ALREADY_POSTED),
    ("void after post", True, _post, _void, Code.PENDING_ALREADY_POSTED),
    ("post after void", True, _void, _post, Code.PENDING_ALREADY_VOIDED),
    ("void twice", True, _void, _void, Code.PENDING_ALREADY_VOIDED),
    ("post a transaction posted straight away", False, _nothing, _post, Code.NOT_PENDING),
    ("void a transaction posted straight away", False, _nothing, _void, Code.NOT_PENDING),
    (
        "post more than is held",
        True,
        _nothing,
        lambda ledger, transaction_id: ledger.post_pending(transaction_id, [7_001]),
        Code.POST_AMOUNT_EXCEEDS_PENDING,
    ),
    (
        "post a negative amount",
        True,
        _nothing,
        lambda ledger, transaction_id: ledger.post_pending(transaction_id, [-1]),
        Code.AMOUNT_OUT_OF_RANGE,
    ),
    (
        "post one amount too many",
        True,
        _nothing,
        lambda ledger, transaction_id: ledger.post_pending(transaction_id, [1, 1]),
        Code.INVALID_REQUEST,
    ),
    (
        "post an unknown transaction",
        True,
        _nothing,
        lambda ledger, transaction_id: ledger.post_pending(transaction_id + 1_000),
        Code.TRANSACTION_NOT_FOUND,
    ),
]


@pytest.mark.parametrize(
    ("case", "pending", "first", "second", "code"),
    RESOLUTION_REFUSALS,
    ids=[row[0] for row in RESOLUTION_REFUSALS],
)
def test_resolving_what_cannot_be_resolved(
    ledger: Ledger,
    engine: Engine,
    case: str,
    pending: bool,
    first: Resolution,
    second: Resolution,
    code: Code,
) -> None:
    v = village(ledger)
    transaction = _posted(ledger, pay(v.ana, v.bo, 7_000, pending=pending))
    first(ledger, transaction.id)
    before = _row_counts(engine)
    balances = [ledger.balance(a) for a in (v.ana, v.bo)]

    assert _code_of(lambda: second(ledger, transaction.id)) == code
    assert _row_counts(engine) == before
    assert [ledger.balance(a) for a in (v.ana, v.bo)] == balances


# -- expiry -----------------------------------------------------------------------------------


def test_a_lapsed_hold_disappears_from_reads_before_any_sweep(
    ledger: Ledger, engine: Engine, clock: Clock
) -> None:
    v = village(ledger)
    pending = _posted(ledger, hold(v.ana, v.bo, 7_000, timeout_seconds=60))
    clock.advance(61)
    before = _row_counts(engine)

    assert ledger.balance(v.ana) == Balance(10_000, 0, 0)
    assert ledger.balance(v.bo) == Balance(0, 0, 0)
    assert ledger.get_account(v.ana).balance == Balance(10_000, 0, 0)
    listed = {a.id: a for a in ledger.list_accounts(community="riverbend").items}
    assert listed[v.bo].balance == Balance(0, 0, 0)
    assert ledger.get_transaction(pending.id).status == TransactionStatus.EXPIRED
    assert _row_counts(engine) == before  # reads wrote nothing

    assert _code_of(lambda: ledger.post_pending(pending.id)) == Code.PENDING_EXPIRED
    assert _code_of(lambda: ledger.void_pending(pending.id)) == Code.PENDING_EXPIRED


def test_a_write_after_the_deadline_sees_the_hold_released(ledger: Ledger, clock: Clock) -> None:
    v = village(ledger)
    _posted(ledger, hold(v.ana, v.bo, 7_000, timeout_seconds=60))
    clock.advance(61)

    _posted(ledger, pay(v.ana, v.bo, 9_000))

    assert ledger.balance(v.ana) == Balance(1_000, 0, 0)
    assert [line.kind for line in _all_lines(ledger, v.bo)] == [
        EntryKind.PENDING,
        EntryKind.PENDING_EXPIRED,
        EntryKind.POSTED,
    ]


def test_expire_overdue_writes_the_release_at_the_deadline(
    ledger: Ledger, engine: Engine, clock: Clock
) -> None:
    v = village(ledger)
    lapsing = _posted(ledger, hold(v.ana, v.bo, 7_000, timeout_seconds=60))
    lasting = _posted(ledger, hold(v.ana, v.capped, 1_000, timeout_seconds=600))
    clock.advance(61)

    assert ledger.expire_overdue() == 1
    assert ledger.expire_overdue() == 0

    expired = ledger.get_transaction(lapsing.id)
    assert expired.status == TransactionStatus.EXPIRED
    assert expired.resolved_at == lapsing.expires_at
    assert ledger.get_transaction(lasting.id).status == TransactionStatus.PENDING
    last = _all_lines(ledger, v.bo)[-1]
    assert (last.kind, last.at, last.balance) == (
        EntryKind.PENDING_EXPIRED,
        lapsing.expires_at,
        Balance(0, 0, 0),
    )
    assert ledger.balance(v.ana) == Balance(10_000, 1_000, 0)
    with engine.connect() as connection:
        holds = connection.execute(select(repo.holds.c.transaction_id)).scalars().all()
    assert set(holds) == {lasting.id}


@pytest.mark.parametrize("swept", [False, True], ids=["before the sweep", "after the sweep"])
def test_as_of_balances_around_a_deadline(ledger: Ledger, clock: Clock, swept: bool) -> None:
    v = village(ledger)
    pending = _posted(ledger, hold(v.ana, v.bo, 7_000, timeout_seconds=60))
    assert pending.expires_at is not None
    clock.advance(120)
    if swept:
        ledger.expire_overdue()

    just_before = pending.expires_at - MICROSECOND
    assert ledger.balance(v.ana, as_of=just_before) == Balance(10_000, 7_000, 0)
    assert ledger.balance(v.bo, as_of=just_before) == Balance(0, 0, 7_000)
    assert ledger.balance(v.ana, as_of=pending.expires_at) == Balance(10_000, 0, 0)
    assert ledger.balance(v.bo, as_of=pending.expires_at + dt.timedelta(seconds=30)) == Balance(
        0, 0, 0
    )


def test_balances_read_back_as_integers_with_lapsed_holds_subtracted(
    ledger: Ledger, clock: Clock
) -> None:
    """Money is integers end to end: PostgreSQL sums BIGINT as NUMERIC, which must not
    reach a balance as a Decimal (it compares equal to the int, and breaks what uses it)."""
    v = village(ledger)
    pending = _posted(ledger, hold(v.ana, v.bo, 7_000, timeout_seconds=60))
    assert pending.expires_at is not None
    clock.advance(120)
    balances = [
        ledger.balance(v.ana),
        ledger.balance(v.ana, as_of=pending.expires_at),
        ledger.get_account(v.bo).balance,
    ]
    assert balances == [Balance(10_000, 0, 0), Balance(10_000, 0, 0), Balance(0, 0, 0)]
    for balance in balances:
        for amount in (balance.posted, balance.debits_pending, balance.credits_pending):
            assert type(amount) is int


# -- reversal ---------------------------------------------------------------------------------


def test_a_reversal_swaps_the_postings_and_links_both_ways(ledger: Ledger) -> None:
    v = village(ledger)
    original = _posted(ledger, pay(v.ana, v.bo, 1_200, category="care:childcare"))

    outcome = ledger.reverse(original.id, memo="paid twice")

    reversal = outcome.transaction
    assert reversal is not None
    assert [
        (p.source_account_id, p.destination_account_id, p.amount) for p in reversal.postings
    ] == [(v.bo, v.ana, 1_200)]
    assert reversal.reverses_id == original.id
    assert ledger.get_transaction(original.id).reversed_by_id == reversal.id
    assert (reversal.memo, reversal.category) == ("paid twice", "care:childcare")
    assert ledger.balance(v.ana) == Balance(10_000, 0, 0)
    assert ledger.balance(v.bo) == Balance(0, 0, 0)


def test_reversing_a_partly_posted_hold_reverses_what_moved(ledger: Ledger) -> None:
    v = village(ledger)
    pending = _posted(
        ledger,
        TransactionDraft(
            postings=(
                PostingDraft(v.ana, v.bo, 4_000, "HRB"),
                PostingDraft(v.ana, v.capped, 3_000, "HRB"),
            ),
            pending=True,
        ),
    )
    ledger.post_pending(pending.id, [2_500, 0])

    reversal = ledger.reverse(pending.id).transaction

    assert reversal is not None
    assert [
        (p.source_account_id, p.destination_account_id, p.amount) for p in reversal.postings
    ] == [(v.bo, v.ana, 2_500)]
    assert ledger.balance(v.ana) == Balance(10_000, 0, 0)


def test_a_transaction_is_reversed_at_most_once(ledger: Ledger, engine: Engine) -> None:
    v = village(ledger)
    original = _posted(ledger, pay(v.ana, v.bo, 1_200))
    first = ledger.reverse(original.id, client_id="undo-1")
    before = _row_counts(engine)

    replay = ledger.reverse(original.id, client_id="undo-1")
    second = _code_of(lambda: ledger.reverse(original.id))
    with_new_id = _code_of(lambda: ledger.reverse(original.id, client_id="undo-2"))

    assert (replay.replayed, replay.transaction) == (True, first.transaction)
    assert (second, with_new_id) == (Code.ALREADY_REVERSED, Code.ALREADY_REVERSED)
    assert _row_counts(engine) == before


def _spent_by_bo(ledger: Ledger, v: Village) -> int:
    original = _posted(ledger, pay(v.ana, v.bo, 5_000))
    _posted(ledger, pay(v.bo, v.hilltop_member, 4_000))
    return original.id


def _frozen_after(ledger: Ledger, v: Village) -> int:
    original = _posted(ledger, pay(v.ana, v.bo, 500))
    ledger.update_account(v.bo, status=AccountStatus.FROZEN)
    return original.id


def _capped_after(ledger: Ledger, v: Village) -> int:
    _posted(ledger, pay(v.ana, v.capped, 5_000))
    out = _posted(ledger, pay(v.capped, v.bo, 1_000))
    _posted(ledger, pay(v.ana, v.capped, 1_000))  # capped is at its ceiling again
    return out.id


def _reversal_of_a_reversal(ledger: Ledger, v: Village) -> int:
    original = _posted(ledger, pay(v.ana, v.bo, 500))
    reversal = ledger.reverse(original.id).transaction
    assert reversal is not None
    return reversal.id


def _still_pending(ledger: Ledger, v: Village) -> int:
    return _posted(ledger, hold(v.ana, v.bo, 500)).id


def _voided(ledger: Ledger, v: Village) -> int:
    pending = _posted(ledger, hold(v.ana, v.bo, 500))
    ledger.void_pending(pending.id)
    return pending.id


def _posted_for_nothing(ledger: Ledger, v: Village) -> int:
    pending = _posted(ledger, hold(v.ana, v.bo, 500))
    ledger.post_pending(pending.id, [0])
    return pending.id


REVERSAL_REFUSALS: list[tuple[str, Callable[[Ledger, Village], int], Code]] = [
    ("the payee spent it", _spent_by_bo, Code.INSUFFICIENT_FUNDS),
    ("the payee is frozen", _frozen_after, Code.ACCOUNT_FROZEN),
    ("the payer is at its ceiling", _capped_after, Code.CEILING_EXCEEDED),
    ("a reversal", _reversal_of_a_reversal, Code.NOT_REVERSIBLE),
    ("a pending transaction", _still_pending, Code.NOT_REVERSIBLE),
    ("a voided transaction", _voided, Code.NOT_REVERSIBLE),
    ("a hold posted for nothing", _posted_for_nothing, Code.NOT_REVERSIBLE),
]


@pytest.mark.parametrize(
    ("case", "arrange", "code"), REVERSAL_REFUSALS, ids=[row[0] for row in REVERSAL_REFUSALS]
)
def test_a_reversal_obeys_the_rules_of_any_transaction(
    ledger: Ledger,
    engine: Engine,
    case: str,
    arrange: Callable[[Ledger, Village], int],
    code: Code,
) -> None:
    v = village(ledger)
    transaction_id = arrange(ledger, v)
    before = _row_counts(engine)

    assert _code_of(lambda: ledger.reverse(transaction_id)) == code
    assert _row_counts(engine) == before
    assert ledger.get_transaction(transaction_id).reversed_by_id is None


# -- freezing and closing ---------------------------------------------------------------------


def test_a_frozen_account_moves_nothing_until_unfrozen(ledger: Ledger) -> None:
    v = village(ledger)
    _posted(ledger, pay(v.ana, v.bo, 2_000))
    pending = _posted(ledger, hold(v.ana, v.bo, 1_000))

    frozen = ledger.update_account(v.bo, status=AccountStatus.FROZEN)

    assert frozen.status == AccountStatus.FROZEN
    refused = [
        lambda: ledger.post_transaction(pay(v.ana, v.bo, 1)),
        lambda: ledger.post_transaction(pay(v.bo, v.ana, 1)),
        lambda: ledger.post_transaction(hold(v.bo, v.ana, 1)),
        lambda: ledger.post_pending(pending.id),
    ]
    assert [_code_of(action) for action in refused] == [Code.ACCOUNT_FROZEN] * 4
    assert ledger.balance(v.bo) == Balance(2_000, 0, 1_000)

    ledger.update_account(v.bo, status=AccountStatus.OPEN)
    ledger.post_pending(pending.id)
    _posted(ledger, pay(v.bo, v.ana, 500))
    assert ledger.balance(v.bo) == Balance(2_500, 0, 0)


def _with_posted_balance(ledger: Ledger, v: Village) -> None:
    _posted(ledger, pay(v.ana, v.bo, 1))


def _with_hold_in(ledger: Ledger, v: Village) -> None:
    _posted(ledger, hold(v.ana, v.bo, 1))


def _with_hold_out(ledger: Ledger, v: Village) -> None:
    _posted(ledger, pay(v.ana, v.bo, 5))
    _posted(ledger, hold(v.bo, v.ana, 5))


CLOSE_REFUSALS: list[tuple[str, Callable[[Ledger, Village], None]]] = [
    ("a posted balance", _with_posted_balance),
    ("a hold coming in", _with_hold_in),
    ("a hold going out", _with_hold_out),
]


@pytest.mark.parametrize(
    ("case", "arrange"), CLOSE_REFUSALS, ids=[row[0] for row in CLOSE_REFUSALS]
)
def test_only_an_empty_account_closes(
    ledger: Ledger, case: str, arrange: Callable[[Ledger, Village], None]
) -> None:
    v = village(ledger)
    arrange(ledger, v)

    refused = _code_of(lambda: ledger.update_account(v.bo, status=AccountStatus.CLOSED))

    assert refused == Code.ACCOUNT_NOT_EMPTY
    assert ledger.get_account(v.bo).status == AccountStatus.OPEN


def test_a_closed_account_stays_closed(ledger: Ledger) -> None:
    v = village(ledger)
    _posted(ledger, pay(v.ana, v.bo, 700))
    _posted(ledger, pay(v.bo, v.ana, 700))

    closed = ledger.update_account(v.bo, status=AccountStatus.CLOSED)

    assert closed.status == AccountStatus.CLOSED
    for status in (AccountStatus.OPEN, AccountStatus.FROZEN):
        refused = _code_of(lambda status=status: ledger.update_account(v.bo, status=status))
        assert refused == Code.STATUS_CHANGE_INVALID
    assert _code_of(lambda: ledger.post_transaction(pay(v.ana, v.bo, 1))) == Code.ACCOUNT_CLOSED


LAPSED_THEN_CHANGED: list[tuple[str, str, str, dict[str, Any]]] = [
    ("close the payee", "ana", "bo", {"status": AccountStatus.CLOSED}),
    ("lower the payee's ceiling", "ana", "capped", {"max_balance": 100}),
    ("raise the payer's floor", "ana", "bo", {"min_balance": 9_000}),
]


@pytest.mark.parametrize(
    ("case", "payer", "payee", "change"),
    LAPSED_THEN_CHANGED,
    ids=[row[0] for row in LAPSED_THEN_CHANGED],
)
def test_changing_an_account_after_its_hold_lapsed_leaves_sound_books(
    ledger: Ledger,
    engine: Engine,
    clock: Clock,
    case: str,
    payer: str,
    payee: str,
    change: dict[str, Any],
) -> None:
    v = village(ledger)
    _posted(ledger, hold(getattr(v, payer), getattr(v, payee), 4_000, timeout_seconds=60))
    clock.advance(61)
    changed = getattr(v, payee if "payee" in case else payer)

    ledger.update_account(changed, **change)  # reads show nothing pending: allowed
    violations = verify(engine)  # before any sweep
    ledger.expire_overdue()  # (so the fixture's own check sees the books after the sweep)

    assert violations == []


# -- limits -----------------------------------------------------------------------------------


LIMIT_REFUSALS: list[tuple[str, dict[str, Any], Code]] = [
    ("ceiling below the balance", {"max_balance": 9_999}, Code.LIMIT_BELOW_BALANCE),
    ("floor above the available balance", {"min_balance": 3_001}, Code.LIMIT_BELOW_BALANCE),
    ("floor above the ceiling", {"min_balance": 100, "max_balance": 99}, Code.LIMITS_INVALID),
    ("negative ceiling", {"max_balance": -1}, Code.LIMITS_INVALID),
    ("fractional floor", {"min_balance": 2.5}, Code.LIMITS_INVALID),
    ("boolean ceiling", {"max_balance": True}, Code.LIMITS_INVALID),
    ("floor beyond 64 bits", {"min_balance": -(2**63) - 1}, Code.LIMITS_INVALID),
]


@pytest.mark.parametrize(
    ("case", "change", "code"), LIMIT_REFUSALS, ids=[row[0] for row in LIMIT_REFUSALS]
)
def test_limit_changes_that_are_refused(
    ledger: Ledger, case: str, change: dict[str, Any], code: Code
) -> None:
    v = village(ledger)
    _posted(ledger, hold(v.ana, v.bo, 7_000))  # ana: 10,000 posted, 3,000 available
    version = ledger.get_account(v.ana).version

    assert _code_of(lambda: ledger.update_account(v.ana, **change)) == code
    after = ledger.get_account(v.ana)
    assert (after.version, after.min_balance, after.max_balance) == (version, 0, None)


def test_a_credit_line_lets_a_member_go_below_zero(ledger: Ledger) -> None:
    v = village(ledger)

    ledger.update_account(v.bo, min_balance=-500)
    _posted(ledger, pay(v.bo, v.ana, 500))

    assert ledger.balance(v.bo).posted == -500
    assert _code_of(lambda: ledger.post_transaction(pay(v.bo, v.ana, 1))) == (
        Code.INSUFFICIENT_FUNDS
    )
    assert _code_of(lambda: ledger.update_account(v.bo, min_balance=0)) == (
        Code.LIMIT_BELOW_BALANCE
    )


def test_expected_version_makes_a_change_conditional(ledger: Ledger) -> None:
    v = village(ledger)
    read = ledger.get_account(v.bo)

    changed = ledger.update_account(v.bo, expected_version=read.version, max_balance=50_000)
    with pytest.raises(LedgerError) as raised:
        ledger.update_account(v.bo, expected_version=read.version, max_balance=1)

    assert changed.version == read.version + 1
    assert raised.value.code == Code.VERSION_MISMATCH
    assert raised.value.extra == {"version": changed.version}
    assert ledger.get_account(v.bo).max_balance == 50_000


# -- as-of balances and statements ------------------------------------------------------------


def test_as_of_balances_at_past_instants(ledger: Ledger) -> None:
    v = village(ledger)
    opened = ledger.get_account(v.bo).created_at
    first = _posted(ledger, pay(v.ana, v.bo, 1_000))
    second = _posted(ledger, hold(v.ana, v.bo, 2_000))
    third = _posted(ledger, pay(v.bo, v.hilltop_member, 400))
    ledger.post_pending(second.id, [1_500])

    expected = [
        (opened - dt.timedelta(days=1), Balance(0, 0, 0)),  # before the account existed
        (first.created_at - MICROSECOND, Balance(0, 0, 0)),  # before its first entry
        (first.created_at, Balance(1_000, 0, 0)),
        (second.created_at - MICROSECOND, Balance(1_000, 0, 0)),
        (second.created_at, Balance(1_000, 0, 2_000)),
        (third.created_at, Balance(600, 0, 2_000)),
        (dt.datetime.now(dt.UTC) + dt.timedelta(days=365), Balance(2_100, 0, 0)),  # the future
    ]
    assert [ledger.balance(v.bo, as_of=at) for at, _ in expected] == [b for _, b in expected]
    assert ledger.balance(v.bo) == Balance(2_100, 0, 0)


def _payments(ledger: Ledger, v: Village, count: int) -> list[Transaction]:
    return [_posted(ledger, pay(v.ana, v.bo, 100 * (n + 1), memo=f"n{n}")) for n in range(count)]


def test_a_statement_carries_running_balances(ledger: Ledger) -> None:
    v = village(ledger)
    _posted(ledger, pay(v.ana, v.bo, 1_000, memo="groceries", category="care:food"))
    pending = _posted(ledger, hold(v.bo, v.hilltop_member, 300))
    _posted(ledger, pay(v.bo, v.ana, 200))
    ledger.post_pending(pending.id)

    lines = _all_lines(ledger, v.bo)

    assert [(line.kind, line.amount, line.balance) for line in lines] == [
        (EntryKind.POSTED, 1_000, Balance(1_000, 0, 0)),
        (EntryKind.PENDING, 0, Balance(1_000, 300, 0)),
        (EntryKind.POSTED, -200, Balance(800, 300, 0)),
        (EntryKind.PENDING_POSTED, -300, Balance(500, 0, 0)),
    ]
    assert [line.counterparty_account_id for line in lines] == [
        v.ana,
        v.hilltop_member,
        v.ana,
        v.hilltop_member,
    ]
    assert (lines[0].memo, lines[0].category) == ("groceries", "care:food")
    assert [line.at for line in lines] == sorted(line.at for line in lines)


def _walk(fetch: Callable[[str | None], Page[Any]]) -> tuple[list[Any], int]:
    """Every item of every page, following the cursors; and how many pages it took."""
    items: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = fetch(cursor)
        items += page.items
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            return items, pages


def test_statement_pages_cover_everything_once(ledger: Ledger) -> None:
    v = village(ledger)
    _payments(ledger, v, 4)
    # Three lines of one transaction share an instant: the cursor must split them cleanly.
    _posted(ledger, TransactionDraft(postings=(PostingDraft(v.ana, v.bo, 1, "HRB"),) * 3))
    everything = [line.entry_id for line in _all_lines(ledger, v.bo)]

    lines, pages = _walk(lambda cursor: ledger.statement(v.bo, cursor=cursor, limit=2))

    assert [line.entry_id for line in lines] == everything
    assert len(everything) == 7
    assert pages == 4


def test_statement_since_until(ledger: Ledger) -> None:
    v = village(ledger)
    paid = _payments(ledger, v, 5)

    window = ledger.statement(v.bo, since=paid[1].created_at, until=paid[4].created_at)

    assert [line.transaction_id for line in window.items] == [t.id for t in paid[1:4]]
    assert window.next_cursor is None


INVALID_CURSORS = {
    "not base64": "not a cursor",
    "no separator": "bm90LWEtY3Vyc29y",  # "not-a-cursor"
    "not numbers": "MTp4",  # "1:x"
    "an instant past year 9999": "OTk5OTk5OTk5OTk5OTk5OTk5OjE",  # "9999999999999999999:1"
}


def test_an_invalid_cursor_is_refused(ledger: Ledger) -> None:
    v = village(ledger)
    reads: list[Callable[[str], object]] = [
        lambda cursor: ledger.statement(v.ana, cursor=cursor),
        lambda cursor: ledger.list_transactions(cursor=cursor),
    ]

    codes = {
        (case, position): _code_of(lambda read=read, cursor=cursor: read(cursor))
        for case, cursor in INVALID_CURSORS.items()
        for position, read in enumerate(reads)
    }

    assert set(codes.values()) == {Code.CURSOR_INVALID}, codes
    listing_accounts = _code_of(lambda: ledger.list_accounts(cursor="not a cursor"))
    assert listing_accounts == Code.CURSOR_INVALID


# -- listing transactions ---------------------------------------------------------------------


@pytest.fixture
def listed(ledger: Ledger) -> dict[str, Any]:
    """A small book to filter: ids by name, and the instants between them."""
    v = village(ledger)
    ids: dict[str, Any] = {"village": v}
    ids["childcare"] = _posted(ledger, pay(v.ana, v.bo, 100, category="care:childcare")).id
    ids["care"] = _posted(ledger, pay(v.ana, v.bo, 100, category="care")).id
    ids["careful"] = _posted(ledger, pay(v.ana, v.bo, 100, category="careful")).id
    ids["hilltop"] = _posted(ledger, pay(v.ana, v.hilltop_member, 100, category="care:elders")).id
    ids["pending"] = _posted(ledger, hold(v.ana, v.capped, 100, category="ecology")).id
    # Holds that resolved: each leaves the index of unposted transactions as it resolves.
    voided = _posted(ledger, hold(v.ana, v.capped, 40, category="ecology"))
    ids["voided"] = ledger.void_pending(voided.id).id
    posted = _posted(ledger, hold(v.ana, v.capped, 30, category="ecology"))
    ids["held, posted"] = ledger.post_pending(posted.id).id
    return ids


LISTINGS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], list[str]]] = [
    ("by community", lambda x: {"community": "hilltop"}, ["hilltop"]),
    ("by account", lambda x: {"account_id": x["village"].bo}, ["childcare", "care", "careful"]),
    ("by category prefix", lambda x: {"category": "care"}, ["childcare", "care", "hilltop"]),
    ("by full category", lambda x: {"category": "care:childcare"}, ["childcare"]),
    ("by status", lambda x: {"status": TransactionStatus.PENDING}, ["pending"]),
    ("by status voided", lambda x: {"status": TransactionStatus.VOIDED}, ["voided"]),
    (
        "by status and category",
        lambda x: {"status": TransactionStatus.PENDING, "category": "ecology"},
        ["pending"],
    ),
    (
        "by status posted and category",
        lambda x: {"status": TransactionStatus.POSTED, "category": "ecology"},
        ["held, posted"],
    ),
    (
        "by account and category",
        lambda x: {"account_id": x["village"].hilltop_member, "category": "care"},
        ["hilltop"],
    ),
]


@pytest.mark.parametrize(
    ("case", "filters", "expected"), LISTINGS, ids=[row[0] for row in LISTINGS]
)
def test_list_transactions_filters(
    ledger: Ledger,
    listed: dict[str, Any],
    case: str,
    filters: Callable[[dict[str, Any]], dict[str, Any]],
    expected: list[str],
) -> None:
    page = ledger.list_transactions(**filters(listed))

    assert [t.id for t in page.items] == [listed[name] for name in expected]


def test_list_transactions_by_time_and_page(ledger: Ledger, listed: dict[str, Any]) -> None:
    since = ledger.get_transaction(listed["care"]).created_at
    until = ledger.get_transaction(listed["pending"]).created_at

    window = ledger.list_transactions(since=since, until=until)
    assert [t.id for t in window.items] == [listed[n] for n in ("care", "careful", "hilltop")]

    v = listed["village"]
    # Transactions on disjoint accounts in one batch may share an instant: ties to split.
    ledger.post_transactions(
        [pay(v.issuance, v.capped, 1), pay(v.leaves_issuance, v.leaves_ana, 1, "LVS")]
    )
    everything = [t.id for t in ledger.list_transactions(limit=1000).items]
    found, pages = _walk(lambda cursor: ledger.list_transactions(cursor=cursor, limit=2))
    assert [t.id for t in found] == everything
    assert len(set(everything)) == len(everything) == 10
    assert pages == 5


def test_effective_date_is_stored_but_never_reorders_history(ledger: Ledger) -> None:
    v = village(ledger)
    later = _posted(ledger, pay(v.ana, v.bo, 100, effective_date=dt.date(2026, 3, 10)))
    earlier = _posted(ledger, pay(v.ana, v.bo, 200, effective_date=dt.date(2026, 1, 5)))

    lines = _all_lines(ledger, v.bo)

    assert [line.transaction_id for line in lines] == [later.id, earlier.id]
    assert [line.effective_date for line in lines] == [dt.date(2026, 3, 10), dt.date(2026, 1, 5)]
    assert [line.balance.posted for line in lines] == [100, 300]
    assert ledger.get_transaction(earlier.id).effective_date == dt.date(2026, 1, 5)
    listed = [t.id for t in ledger.list_transactions(account_id=v.bo).items]
    assert listed == [later.id, earlier.id]


# -- communities, currencies, accounts --------------------------------------------------------


def _hearts(ledger: Ledger, code: str = "HRB", scale: Any = 2, issuer: str | None = None) -> Any:
    return ledger.create_currency(
        code, kind=CurrencyKind.HEARTS, scale=scale, name="Hearts", symbol="♡", issuer=issuer
    )


def _suspended(ledger: Ledger) -> Any:
    ledger.set_community_status("hilltop", CommunityStatus.SUSPENDED)
    return _open(ledger, "newcomer", community="hilltop")


CREATION_REFUSALS: list[tuple[str, Callable[[Ledger], object], Code]] = [
    (
        "community slug taken",
        lambda ledger: ledger.create_community("riverbend", "R"),
        Code.COMMUNITY_EXISTS,
    ),
    ("currency code taken", lambda ledger: _hearts(ledger, "LVS"), Code.CURRENCY_EXISTS),
    ("scale above 8", lambda ledger: _hearts(ledger, "NEW", 9), Code.SCALE_OUT_OF_RANGE),
    ("negative scale", lambda ledger: _hearts(ledger, "NEW", -1), Code.SCALE_OUT_OF_RANGE),
    ("boolean scale", lambda ledger: _hearts(ledger, "NEW", True), Code.SCALE_OUT_OF_RANGE),
    (
        "unknown issuer",
        lambda ledger: _hearts(ledger, "NEW", issuer="nowhere"),
        Code.COMMUNITY_NOT_FOUND,
    ),
    ("account name taken", lambda ledger: _open(ledger, "ana"), Code.ACCOUNT_NAME_TAKEN),
    (
        "account, unknown community",
        lambda ledger: _open(ledger, "x", "nowhere"),
        Code.COMMUNITY_NOT_FOUND,
    ),
    (
        "account, unknown currency",
        lambda ledger: _open(ledger, "x", currency="XYZ"),
        Code.CURRENCY_NOT_FOUND,
    ),
    (
        "account, floor above ceiling",
        lambda ledger: _open(ledger, "x", min_balance=5, max_balance=4),
        Code.LIMITS_INVALID,
    ),
    ("account in a suspended community", _suspended, Code.COMMUNITY_SUSPENDED),
    ("unknown community", lambda ledger: ledger.get_community("nowhere"), Code.COMMUNITY_NOT_FOUND),
    ("unknown currency", lambda ledger: ledger.get_currency("XYZ"), Code.CURRENCY_NOT_FOUND),
    ("unknown account", lambda ledger: ledger.get_account(999_999), Code.ACCOUNT_NOT_FOUND),
]


@pytest.mark.parametrize(
    ("case", "action", "code"), CREATION_REFUSALS, ids=[row[0] for row in CREATION_REFUSALS]
)
def test_reference_data_refusals(
    ledger: Ledger, engine: Engine, case: str, action: Callable[[Ledger], object], code: Code
) -> None:
    village(ledger)
    accounts = ledger.list_accounts(limit=1000).items

    assert _code_of(lambda: action(ledger)) == code
    assert ledger.list_accounts(limit=1000).items == accounts
    assert [c.code for c in ledger.list_currencies()] == ["HRB", "LVS"]


def test_reference_data_is_created_as_asked(ledger: Ledger) -> None:
    v = village(ledger)

    riverbend = ledger.get_community("riverbend")
    hearts = ledger.get_currency("HRB")
    same_name_elsewhere = [
        ledger.get_account(_open(ledger, "ana", community="hilltop")),
        ledger.get_account(_open(ledger, "bo", currency="LVS")),
    ]
    issuance = ledger.get_account(v.issuance)

    assert (riverbend.slug, riverbend.status) == ("riverbend", CommunityStatus.ACTIVE)
    assert (hearts.kind, hearts.scale, hearts.issuer, hearts.symbol) == (
        CurrencyKind.HEARTS,
        2,
        "riverbend",
        "♡",
    )
    assert ledger.get_currency("LVS").issuer is None
    assert [a.community for a in same_name_elsewhere] == ["hilltop", "riverbend"]
    assert (issuance.min_balance, issuance.balance.posted) == (None, -10_000)
    assert ledger.get_account(v.bo).min_balance == 0
    assert [c.slug for c in ledger.list_communities()] == ["hilltop", "riverbend"]


# -- the event feed ---------------------------------------------------------------------------


def test_events_after_returns_committed_events_in_order(ledger: Ledger) -> None:
    v = village(ledger)
    start = ledger.events_after(0, limit=1000)[-1].sequence

    paid = _posted(ledger, pay(v.ana, v.bo, 100))
    pending = _posted(ledger, hold(v.ana, v.hilltop_member, 100))
    _code_of(lambda: ledger.post_transaction(pay(v.ana, v.bo, 1_000_000)))  # writes no event
    ledger.post_pending(pending.id)
    reversal = ledger.reverse(paid.id).transaction
    assert reversal is not None
    ledger.update_account(v.bo, max_balance=10_000)

    events = ledger.events_after(start)

    assert [(e.kind, e.transaction_id, e.account_id) for e in events] == [
        (EventKind.TRANSACTION_POSTED, paid.id, None),
        (EventKind.TRANSACTION_PENDING, pending.id, None),
        (EventKind.PENDING_POSTED, pending.id, None),
        (EventKind.TRANSACTION_POSTED, reversal.id, None),
        (EventKind.TRANSACTION_REVERSED, paid.id, None),
        (EventKind.ACCOUNT_CHANGED, None, v.bo),
    ]
    assert [e.sequence for e in events] == list(range(start + 1, start + 7))
    riverbend, hilltop = (ledger.get_community(s).id for s in ("riverbend", "hilltop"))
    assert events[1].community_ids == (riverbend, hilltop)
    assert events[0].community_ids == (riverbend,)
    assert ledger.events_after(start, limit=2) == events[:2]
    assert ledger.events_after(events[-1].sequence) == []


def test_a_balance_as_of_a_write_stamped_ahead_of_the_clock_includes_it(ledger: Ledger) -> None:
    stopped = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    still = Ledger(ledger.engine, clock=lambda: stopped)
    v = village(still)
    first = still.post_transaction(pay(v.ana, v.bo, 3)).transaction
    second = still.post_transaction(pay(v.ana, v.bo, 5)).transaction
    assert first is not None
    assert second is not None
    assert second.created_at > stopped  # one microsecond after the first, on the same account
    assert still.balance(v.bo, as_of=second.created_at) == still.balance(v.bo)


def test_posting_within_an_open_unit_of_work_reads_its_own_answers(
    ledger: Ledger, engine: Engine
) -> None:
    """An observer's bookkeeping (``post_within``) in a unit of work that is not pipelined:
    its own writes are, and the feed's counter read after them must get the counter's
    answer, not one of theirs (``repository.raw``)."""
    v = village(ledger)
    postings = tuple(PostingDraft(v.ana, v.bo, amount, "HRB") for amount in range(1, 41))
    with unit_of_work(engine, write=True) as connection:
        posted = ledger.post_within(connection, TransactionDraft(postings=postings))

    assert len(posted.postings) == 40
    assert ledger.balance(v.bo).posted == sum(range(1, 41))
    assert ledger.events_after(0, limit=1000)[-1].transaction_id == posted.id
