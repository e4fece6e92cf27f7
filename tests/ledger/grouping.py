"""Forming a group commit on purpose: hold the database's write lock from another
connection, hand drafts over one by one, then let the writer go."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine

from ledger.group_commit import GroupCommit
from ledger.model import Outcome, TransactionDraft

PATIENCE_SECONDS = 10.0


@contextmanager
def writes_held(engine: Engine) -> Iterator[None]:
    """No one else writes until the block ends: SQLite's write lock, or on PostgreSQL the
    feed's counter table, which every posting updates last."""
    if engine.dialect.name == "sqlite":
        assert engine.url.database is not None
        holder = sqlite3.connect(engine.url.database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        return
    with engine.connect() as connection, connection.begin():
        connection.exec_driver_sql("LOCK TABLE counters IN EXCLUSIVE MODE")
        yield


@dataclass
class Handed:
    """One caller's draft and what came back: an outcome, or the error it raised."""

    draft: TransactionDraft
    scope: str = ""
    outcome: Outcome | None = None
    error: Exception | None = None
    thread: threading.Thread = field(init=False)


def post(group: GroupCommit, draft: TransactionDraft, scope: str = "") -> Outcome:
    """Post through the group as ``Ledger.post_transaction`` does: wait for the outcome and
    raise its refusal."""
    outcome = group.submit(draft, scope=scope).result(timeout=PATIENCE_SECONDS)
    if outcome.error is not None:
        raise outcome.error
    return outcome


def hand_over(
    group: GroupCommit, draft: TransactionDraft, scope: str = "", *, first: bool = False
) -> Handed:
    """Post ``draft`` from a thread of its own; return once the group holds it: the
    ``first`` is taken by the idle writer, which then waits for the held database; the
    others queue behind it and go to the database together."""
    handed = Handed(draft, scope)
    waiting, written = group.waiting, group.batches_taken

    def posting() -> None:
        try:
            handed.outcome = post(group, draft, scope)
        except Exception as error:  # noqa: BLE001 - the test reads it
            handed.error = error

    handed.thread = threading.Thread(target=posting)
    handed.thread.start()
    if first:
        until(lambda: group.batches_taken > written)
    else:
        until(lambda: group.waiting > waiting)
    return handed


def answered(*handed: Handed) -> None:
    for each in handed:
        each.thread.join(PATIENCE_SECONDS)
        assert not each.thread.is_alive(), "a caller was left waiting"


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the group commit did not move"
        time.sleep(0.001)
