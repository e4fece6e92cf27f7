"""Many writers at once, on real databases with real commits.

Each worker thread owns a ``Ledger`` on the test's engine (so its own pooled connection)
and starts at a barrier, so the threads really do collide. Whatever the database does to
keep them apart (PostgreSQL row locks taken in ascending id order, SQLite's
BEGIN IMMEDIATE and busy timeout, the one retry loop for 40001/40P01) must stay inside
the ledger: a worker sees either its outcome or the ``LedgerError`` of a rule, never a
``DBAPIError``. A worker lets anything else propagate, and ``Future.result`` re-raises it
in the test.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError

from ledger import database
from ledger import repository as repo
from ledger.database import unit_of_work
from ledger.errors import Code, LedgerError
from ledger.model import (
    AccountType,
    Balance,
    Event,
    EventKind,
    PostingDraft,
    TransactionDraft,
    TransactionStatus,
)
from ledger.service import Ledger
from ledger.verify import verify
from tests.ledger.builders import hold, pay, village
from tests.ledger.grouping import writes_held

T = TypeVar("T")

WORKERS = 8
BARRIER_TIMEOUT_SECONDS = 30


def _together(count: int, work: Callable[[int, threading.Barrier], T]) -> list[T]:
    """Run ``work(index, barrier)`` on ``count`` threads at once; their results in order.

    Every thread is joined before any failure is re-raised, so none outlives the test.
    """
    barrier = threading.Barrier(count, timeout=BARRIER_TIMEOUT_SECONDS)
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(work, index, barrier) for index in range(count)]
    return [future.result() for future in futures]


@contextmanager
def _database_errors(engine: Engine) -> Iterator[list[str]]:
    """Every error the database raised on ``engine`` meanwhile, retried or not.

    The retry loop would turn a deadlock into a slow success, so "no error reached the
    caller" alone cannot tell a lock order that prevents deadlocks from one that merely
    survives them. This can: with one global lock order there is nothing to retry.

    Two taps, because one is not enough: SQLAlchemy's ``handle_error`` event hears the
    statements run through ``Connection.execute``, but the posting path's statements
    (``repository.Raw``: the account locks, the inserts, the feed counter) run on the
    driver's cursor and never reach it; so the retry loop's own judgement
    (``ledger.database._is_retryable``, which sees every failed attempt but the last,
    and the last reaches the caller anyway) is recorded too.
    """
    seen: list[str] = []

    def describe(error: BaseException) -> str:
        code = getattr(error, "sqlstate", None) or getattr(
            getattr(error, "orig", None), "sqlstate", None
        )
        return f"{type(error).__name__} {code or ''}: {str(error).strip()[:200]}"

    def record(context: ExceptionContext) -> None:
        seen.append(describe(context.original_exception))

    judge = database._is_retryable

    def recording_judge(error: DBAPIError) -> bool:
        seen.append(describe(error))
        return judge(error)

    event.listen(engine, "handle_error", record)
    database._is_retryable = recording_judge
    try:
        yield seen
    finally:
        database._is_retryable = judge
        event.remove(engine, "handle_error", record)


def _open_members(ledger: Ledger, names: list[str], funds: int, issuance: int) -> list[int]:
    ids = []
    for name in names:
        account = ledger.open_account(
            community="riverbend", currency="HRB", type=AccountType.MEMBER, name=name
        )
        if funds:
            ledger.post_transaction(pay(issuance, account.id, funds))
        ids.append(account.id)
    return ids


def _all_lines(ledger: Ledger, account_id: int) -> list[Balance]:
    balances, cursor = [], None
    while True:
        page = ledger.statement(account_id, cursor=cursor, limit=1000)
        balances += [line.balance for line in page.items]
        if page.next_cursor is None:
            return balances
        cursor = page.next_cursor


# -- the spend race: many spenders, one no-overdraft account ------------------------------

FUNDS = 1_000
ATTEMPTS = 30
AMOUNT_MAX = 40

Paid = tuple[int, int, bool]  # destination, amount, whether it went as a hold then a post


def test_spenders_racing_for_one_account_never_overdraw_it(ledger: Ledger, engine: Engine) -> None:
    """Demand (~8 x 30 x 20 units) far exceeds the 1,000 units there are: every payment
    that got through is in the balance, none more, and the rest were refused for the one
    honest reason. Every third attempt is a hold posted right after, so the two-phase path
    races too. Runs on both backends: on SQLite this is BEGIN IMMEDIATE under contention."""
    v = village(ledger)
    (spender,) = _open_members(ledger, ["spender"], FUNDS, v.issuance)
    destinations = [v.bo, *_open_members(ledger, ["dee", "eli", "fay"], 0, v.issuance)]

    def spend(worker: int, barrier: threading.Barrier) -> tuple[list[Paid], list[Code]]:
        own = Ledger(engine)
        rng = random.Random(worker)
        paid: list[Paid] = []
        refused: list[Code] = []
        barrier.wait()
        for attempt in range(ATTEMPTS):
            amount = rng.randint(1, AMOUNT_MAX)
            destination = rng.choice(destinations)
            client_id = f"spend-{worker}-{attempt}"
            two_phase = attempt % 3 == 2
            draft = (hold if two_phase else pay)(spender, destination, amount, client_id=client_id)
            try:
                outcome = own.post_transaction(draft)
            except LedgerError as error:
                refused.append(error.code)
                continue
            assert outcome.transaction is not None
            if two_phase:
                posted = own.post_pending(outcome.transaction.id)
                assert posted.status == TransactionStatus.POSTED
            paid.append((destination, amount, two_phase))
        return paid, refused

    with _database_errors(engine) as errors:
        results = _together(WORKERS, spend)
    assert errors == [], "writers collided in the database instead of queueing on locks"

    paid = [p for worker_paid, _ in results for p in worker_paid]
    refused = Counter(code for _, worker_refused in results for code in worker_refused)
    spent = sum(amount for _, amount, _ in paid)
    assert len(paid) + refused.total() == WORKERS * ATTEMPTS
    assert spent <= FUNDS
    assert set(refused) == {Code.INSUFFICIENT_FUNDS}, "demand exceeded funds, so some must fail"
    assert ledger.balance(spender) == Balance(FUNDS - spent, 0, 0)
    for destination in destinations:
        received = sum(amount for d, amount, _ in paid if d == destination)
        assert ledger.balance(destination) == Balance(received, 0, 0)
    # Not just at the end: no line of the spender's history was ever below the floor.
    history = _all_lines(ledger, spender)
    holds_posted = sum(two_phase for _, _, two_phase in paid)
    assert len(history) == 1 + len(paid) + holds_posted  # a hold leaves two lines
    assert all(line.posted - line.debits_pending >= 0 for line in history)
    assert verify(engine) == []


# -- deadlock bait: the same pairs, paid in opposite directions ---------------------------

ROUNDS = 25


def _crossing_draft(
    rng: random.Random, members: list[int], worker: int, round_: int
) -> TransactionDraft:
    """Two or three members, money flowing both ways between them, postings in a random
    order: the lock order must come from the ledger, not from the draft."""
    x, y, z = rng.sample(members, 3)
    postings = [
        PostingDraft(x, y, rng.randint(1, 50), "HRB"),
        PostingDraft(y, x, rng.randint(1, 50), "HRB"),
    ]
    if rng.random() < 0.5:
        postings.append(PostingDraft(y, z, rng.randint(1, 50), "HRB"))
    rng.shuffle(postings)
    return TransactionDraft(postings=tuple(postings), client_id=f"cross-{worker}-{round_}")


def test_payments_crossing_between_the_same_accounts_never_deadlock(
    ledger: Ledger, engine: Engine
) -> None:
    """Workers pay A->B and B->A inside one transaction, in batches whose drafts cross,
    and reverse what they posted. If any writer took its locks in draft order, PostgreSQL
    would answer 40P01 here; every call must instead succeed (funds are ample)."""
    v = village(ledger)
    funds = 100_000
    members = _open_members(ledger, ["amy", "ben", "cat", "dan"], funds, v.issuance)

    def cross(worker: int, barrier: threading.Barrier) -> Counter[int]:
        own = Ledger(engine)
        rng = random.Random(1000 + worker)
        net: Counter[int] = Counter()

        def book(draft: TransactionDraft, sign: int = 1) -> None:
            for posting in draft.postings:
                net[posting.source_account_id] -= sign * posting.amount
                net[posting.destination_account_id] += sign * posting.amount

        barrier.wait()
        for round_ in range(ROUNDS):
            if round_ % 4 == 3:
                # A batch of two drafts crossing each other, in one unit of work.
                drafts = [
                    _crossing_draft(rng, members, worker, round_),
                    _crossing_draft(rng, members, worker, -round_),
                ]
                outcomes = own.post_transactions(drafts)
                assert [o.error for o in outcomes] == [None, None]
                for draft in drafts:
                    book(draft)
                continue
            draft = _crossing_draft(rng, members, worker, round_)
            outcome = own.post_transaction(draft)
            assert outcome.transaction is not None
            book(draft)
            if round_ % 5 == 4:
                reversal = own.reverse(outcome.transaction.id)
                assert reversal.error is None
                book(draft, sign=-1)
        return net

    with _database_errors(engine) as errors:
        nets = _together(WORKERS, cross)
    assert errors == [], "a deadlock (or other conflict) was retried away, not prevented"

    expected = Counter(dict.fromkeys(members, funds))
    for net in nets:
        expected.update(net)
    for member in members:
        assert ledger.balance(member) == Balance(expected[member], 0, 0)
    assert sum(ledger.balance(member).posted for member in members) == len(members) * funds
    assert verify(engine) == []


# -- the event feed under concurrent commits -------------------------------------------------

WRITERS = 4
PAYMENTS_PER_WRITER = 40
FEED_PAGE = 7
JITTER_SECONDS_MAX = 0.002


@pytest.mark.postgres_only
def test_a_follower_of_the_feed_sees_every_event_once_in_commit_order(
    ledger: Ledger, engine: Engine
) -> None:
    """Writers on disjoint accounts commit concurrently (nothing but the feed counter makes
    them queue) while a reader follows ``events_after(cursor)`` in small pages. If a
    sequence ever became visible before a smaller one, the reader would step its cursor
    past the smaller one and never see it: the sequences it saw would have a gap."""
    v = village(ledger)
    pairs = [
        tuple(_open_members(ledger, [f"payer-{w}", f"payee-{w}"], 0, v.issuance))
        for w in range(WRITERS)
    ]
    for payer, _payee in pairs:
        ledger.post_transaction(pay(v.issuance, payer, 1_000_000))
    writers_done = threading.Event()

    def follow() -> list[Event]:
        reader = Ledger(engine)
        seen: list[Event] = []
        cursor = 0
        while True:
            finished = writers_done.is_set()  # read before the poll: then it sees them all
            page = reader.events_after(cursor, limit=FEED_PAGE)
            if page:
                seen += page
                cursor = page[-1].sequence
            elif finished:
                return seen

    def write(writer: int, barrier: threading.Barrier) -> list[int]:
        own = Ledger(engine)
        payer, payee = pairs[writer]
        committed: list[int] = []
        barrier.wait()
        sent = 0
        while sent < PAYMENTS_PER_WRITER:
            size = 1 if sent % 5 else 3  # some units of work emit several events at once
            outcomes = own.post_transactions([pay(payer, payee, 1 + sent)] * size)
            for outcome in outcomes:
                assert outcome.transaction is not None
                committed.append(outcome.transaction.id)
            sent += size
        return committed

    with _commit_jitter(engine), ThreadPoolExecutor(max_workers=1) as reader_pool:
        reading = reader_pool.submit(follow)
        per_writer: list[list[int]] = []
        try:
            per_writer = _together(WRITERS, write)
        finally:
            writers_done.set()
        seen = reading.result()

    sequences = [event.sequence for event in seen]
    assert sequences == list(range(1, len(seen) + 1)), "a gap, a repeat or a step back"
    with unit_of_work(engine, write=False) as connection:
        assert sequences[-1] == repo.last_event_sequence(connection)
    posted_events = [e.transaction_id for e in seen if e.kind == EventKind.TRANSACTION_POSTED]
    assert len(posted_events) == len(set(posted_events))
    everything = _all_transaction_ids(ledger)
    assert set(posted_events) == everything
    committed = {t for ids in per_writer for t in ids}
    assert committed <= everything
    assert len(committed) == WRITERS * PAYMENTS_PER_WRITER
    # Commit order, not just no gaps: each writer committed its payments one after the
    # other, so the feed must show each writer's payments in the order it made them.
    position = {transaction_id: i for i, transaction_id in enumerate(posted_events)}
    for ids in per_writer:
        assert sorted(ids, key=position.__getitem__) == ids, "the feed reorders a writer's commits"


@contextmanager
def _commit_jitter(engine: Engine) -> Iterator[None]:
    """Hold each writing unit of work open a little longer, at random, just before COMMIT.

    Fault injection, not waiting: it widens the window in which one writer has taken a
    feed position but not yet committed while another commits. With positions handed out
    under the counter row's lock the others simply queue behind it; with positions drawn
    from anything that does not wait for the commit (a sequence, a separate connection)
    the follower steps past the slow one's events, and the test sees the gap. Without the
    jitter that window is a few microseconds and the hazard goes unnoticed.
    """
    rng = random.Random(7)
    lock = threading.Lock()

    def before_commit(connection: Connection) -> None:
        if connection.get_execution_options().get("heartleaf_write"):
            with lock:
                pause = rng.uniform(0, JITTER_SECONDS_MAX)
            time.sleep(pause)

    event.listen(engine, "commit", before_commit)
    try:
        yield
    finally:
        event.remove(engine, "commit", before_commit)


def _all_transaction_ids(ledger: Ledger) -> set[int]:
    ids, cursor = set(), None
    while True:
        page = ledger.list_transactions(cursor=cursor, limit=1000)
        ids |= {t.id for t in page.items}
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


# -- SQLite's write lock held by another process past the busy timeout ----------------------


def test_a_sqlite_write_lock_held_past_the_busy_timeout_is_retryable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN IMMEDIATE runs on the driver; when another process holds the write lock past
    the busy timeout, its error must still reach the retry loop as SQLAlchemy's."""
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 50)
    engine = database.make_engine(f"sqlite:///{tmp_path / 'locked.db'}")
    try:
        with engine.connect():  # the file, in WAL mode, before another connection locks it
            pass
        with (
            writes_held(engine),
            pytest.raises(OperationalError) as raised,
            unit_of_work(engine, write=True),
        ):
            pytest.fail("the write lock was granted while another connection held it")
        assert database._is_retryable(raised.value)
        with unit_of_work(engine, write=True) as connection:  # free again: granted
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


# -- what a read sees while others commit --------------------------------------------------


def test_a_snapshot_read_sees_the_store_as_it_was_when_it_began(
    ledger: Ledger, engine: Engine
) -> None:
    """``verify`` checks sums, balances and history against each other: all of them must
    come from one state of the store, even while payments commit meanwhile."""
    v = village(ledger)
    with unit_of_work(engine, write=False, snapshot=True) as connection:
        before = repo.count_entries(connection)
        ledger.post_transaction(pay(v.ana, v.bo, 100))
        assert repo.count_entries(connection) == before
    with unit_of_work(engine, write=False) as connection:
        assert repo.count_entries(connection) == before + 2


@pytest.mark.postgres_only
def test_a_plain_read_on_postgresql_opens_no_transaction(engine: Engine) -> None:
    """At READ COMMITTED a transaction gives a read nothing but BEGIN and COMMIT, two round
    trips of the few a balance costs; plain reads run without one."""
    with unit_of_work(engine, write=False) as connection:
        connection.exec_driver_sql("SELECT 1").scalar()
        driver = connection.connection.driver_connection
        assert driver is not None
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with unit_of_work(engine, write=True) as connection:  # writes still do
        connection.exec_driver_sql("SELECT 1").scalar()
        driver = connection.connection.driver_connection
        assert driver is not None
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
