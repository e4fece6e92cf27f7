"""Group commit (ledger/group_commit.py): callers that arrive together share one unit of
work, and each still gets exactly the answer it would have had alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest
from sqlalchemy import Connection, Engine

from ledger.errors import Code, LedgerError
from ledger.group_commit import GroupCommit
from ledger.model import Outcome, TransactionDraft
from ledger.service import Ledger, Movement
from tests.ledger.builders import pay, village
from tests.ledger.grouping import (
    PATIENCE_SECONDS,
    answered,
    hand_over,
    post,
    until,
    writes_held,
)


@pytest.fixture
def group(ledger: Ledger) -> Iterator[GroupCommit]:
    group = GroupCommit(ledger)
    yield group
    group.close()


def test_callers_arriving_together_share_a_commit_and_keep_their_own_answers(
    ledger: Ledger, engine: Engine, group: GroupCommit
) -> None:
    v = village(ledger)
    with writes_held(engine):
        alone = hand_over(group, pay(v.ana, v.bo, 1), first=True)
        first = hand_over(group, pay(v.ana, v.bo, 100, client_id="rent"))
        overdraw = hand_over(group, pay(v.bo, v.hilltop_member, 1_000_000))
        retry = hand_over(group, pay(v.ana, v.bo, 100, client_id="rent"))
        clash = hand_over(group, pay(v.ana, v.bo, 999, client_id="rent"))
        elsewhere = hand_over(group, pay(v.ana, v.bo, 5, client_id="rent"), scope="key:2")
        assert group.waiting == 5
    answered(alone, first, overdraw, retry, clash, elsewhere)

    # One unit of work for the first, then one per scope for the five that queued.
    assert group.batches_taken == 3
    assert alone.outcome is not None
    assert first.outcome is not None
    assert first.outcome.transaction is not None
    assert not first.outcome.replayed
    assert isinstance(overdraw.error, LedgerError)
    assert overdraw.error.code == Code.INSUFFICIENT_FUNDS
    assert retry.outcome is not None
    assert retry.outcome.replayed
    assert retry.outcome.transaction == first.outcome.transaction
    assert isinstance(clash.error, LedgerError)
    assert clash.error.code == Code.IDEMPOTENCY_CONFLICT
    assert elsewhere.outcome is not None
    assert elsewhere.outcome.transaction is not None
    assert elsewhere.outcome.transaction.id != first.outcome.transaction.id
    assert ledger.balance(v.bo).posted == 1 + 100 + 5
    assert ledger.balance(v.ana).posted == 10_000 - 106


class _RefusesThirteen:
    """An observer that refuses any whole write moving 13 between communities."""

    def observe(
        self, connection: Connection, ledger: Ledger, movements: Sequence[Movement]
    ) -> None:
        if any(m.amount == 13 for m in movements):
            raise LedgerError(Code.FORBIDDEN, "Thirteen never crosses.")


def test_a_refusal_of_the_whole_write_reaches_only_the_caller_it_concerns(
    ledger: Ledger, engine: Engine
) -> None:
    """An observer that refuses a group's whole write rather than one transaction of it:
    the group is posted again one draft at a time, so each caller gets its own answer."""
    v = village(ledger)
    group = GroupCommit(Ledger(engine, clock=ledger.clock, observers=[_RefusesThirteen()]))
    try:
        with writes_held(engine):
            alone = hand_over(group, pay(v.ana, v.bo, 1), first=True)
            before = hand_over(group, pay(v.ana, v.hilltop_member, 12))
            thirteen = hand_over(group, pay(v.ana, v.hilltop_member, 13))
            after = hand_over(group, pay(v.ana, v.hilltop_member, 14))
        answered(alone, before, thirteen, after)
    finally:
        group.close()

    assert before.outcome is not None
    assert after.outcome is not None
    assert isinstance(thirteen.error, LedgerError)
    assert thirteen.error.code == Code.FORBIDDEN
    assert ledger.balance(v.hilltop_member).posted == 12 + 14


def test_a_caller_alone_is_answered_as_by_the_ledger(ledger: Ledger, group: GroupCommit) -> None:
    v = village(ledger)
    posted = post(group, pay(v.ana, v.bo, 250, client_id="one"))
    again = post(group, pay(v.ana, v.bo, 250, client_id="one"))
    with pytest.raises(LedgerError) as refused:
        post(group, pay(v.frozen, v.bo, 1))

    assert again.replayed
    assert again.transaction == posted.transaction
    assert refused.value.code == Code.ACCOUNT_FROZEN
    assert ledger.balance(v.bo).posted == 250


def test_closing_writes_what_was_handed_over(
    ledger: Ledger, engine: Engine, group: GroupCommit
) -> None:
    v = village(ledger)
    with writes_held(engine):
        handed = [hand_over(group, pay(v.ana, v.bo, 10), first=True)]
        handed += [hand_over(group, pay(v.ana, v.bo, 10)) for _ in range(3)]
    group.close()
    answered(*handed)

    assert all(h.outcome is not None and h.outcome.transaction is not None for h in handed)
    assert ledger.balance(v.bo).posted == 40


def test_after_closing_a_caller_posts_alone(ledger: Ledger, group: GroupCommit) -> None:
    v = village(ledger)
    post(group, pay(v.ana, v.bo, 7))
    group.close()

    posted = post(group, pay(v.ana, v.bo, 3))

    assert posted.transaction is not None
    assert ledger.balance(v.bo).posted == 10


def test_submit_returns_while_the_writer_waits_and_answers_through_the_future(
    ledger: Ledger, engine: Engine, group: GroupCommit
) -> None:
    """What an event loop relies on: handing a draft over never waits for the database, and
    a refusal arrives as the outcome's error instead of being raised."""
    v = village(ledger)
    with writes_held(engine):
        taken = hand_over(group, pay(v.ana, v.bo, 1), first=True)
        paid, refused = _submitted_at_once(
            group, pay(v.ana, v.bo, 20, client_id="dues"), pay(v.frozen, v.bo, 1)
        )
        assert not paid.done()
        assert not refused.done()
    answered(taken)

    outcome = paid.result(timeout=PATIENCE_SECONDS)
    assert outcome.transaction is not None
    assert outcome.transaction.client_id == "dues"
    refusal = refused.result(timeout=PATIENCE_SECONDS).error
    assert refusal is not None
    assert refusal.code == Code.ACCOUNT_FROZEN
    assert ledger.balance(v.bo).posted == 21


def test_after_closing_submit_still_returns_before_the_database_answers(
    ledger: Ledger, engine: Engine, group: GroupCommit
) -> None:
    v = village(ledger)
    group.close()
    with writes_held(engine):
        (posted,) = _submitted_at_once(group, pay(v.ana, v.bo, 3))
        assert not posted.done()

    assert posted.result(timeout=PATIENCE_SECONDS).transaction is not None
    assert ledger.balance(v.bo).posted == 3


def test_a_draft_cancelled_before_the_writer_takes_it_is_withdrawn_and_the_others_answered(
    ledger: Ledger, engine: Engine, group: GroupCommit
) -> None:
    """An awaiting request that is cancelled cancels its future: before the writer takes
    the draft, nothing is posted; once taken, the cancel fails and the draft is posted.
    Either way the callers beside it get their own answers."""
    v = village(ledger)
    with writes_held(engine):
        taken = group.submit(pay(v.ana, v.bo, 1))
        until(taken.running)
        withdrawn = group.submit(pay(v.ana, v.bo, 20))
        kept = group.submit(pay(v.ana, v.bo, 300))
        assert not taken.cancel()
        assert withdrawn.cancel()
    outcome = kept.result(timeout=PATIENCE_SECONDS)

    assert outcome.transaction is not None
    assert taken.result(timeout=PATIENCE_SECONDS).transaction is not None
    assert withdrawn.cancelled()
    assert ledger.balance(v.bo).posted == 1 + 300


def test_after_closing_a_refusal_of_the_whole_write_is_the_outcome_not_an_exception(
    ledger: Ledger, engine: Engine
) -> None:
    v = village(ledger)
    group = GroupCommit(Ledger(engine, clock=ledger.clock, observers=[_RefusesThirteen()]))
    group.close()

    refused = group.submit(pay(v.ana, v.hilltop_member, 13)).result(timeout=PATIENCE_SECONDS)

    assert refused.error is not None
    assert refused.error.code == Code.FORBIDDEN
    assert ledger.balance(v.hilltop_member).posted == 0


def _submitted_at_once(group: GroupCommit, *drafts: TransactionDraft) -> list[Future[Outcome]]:
    """``group.submit`` each draft from another thread, failing (not hanging) if it waits."""
    futures: list[Future[Outcome]] = []
    submitter = threading.Thread(target=lambda: futures.extend(group.submit(d) for d in drafts))
    submitter.start()
    submitter.join(PATIENCE_SECONDS)
    assert not submitter.is_alive(), "submit waited for the database"
    return futures
