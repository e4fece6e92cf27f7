"""Group commit: concurrent single postings share one unit of work, and so one commit.

A commit that is on disk costs a flush (``synchronous=FULL`` on SQLite, a WAL flush on
PostgreSQL), and on SQLite every writer of a process queues for the one write lock: eight
clients each posting one transfer at a time wait for eight flushes in a row. Databases
answer this with group commit, and so does ``GroupCommit``: callers hand their draft to
one writer thread, which takes every draft waiting at that moment (up to ``GROUP_MAX``),
posts them with ``Ledger.post_transactions`` as one non-atomic batch, and hands each
caller its own outcome through the future ``submit`` returned (the API's event loop awaits
it; a thread may wait on it). A caller alone pays one thread hand-off; callers that arrive
while a group is being written share the next group's commit.

Nothing a caller sees changes. Each draft is judged on the balances (and the reciprocity
positions) the drafts before it left, exactly as if it had been posted alone in that
order; its refusal is its own; a retry with the same client id while the first attempt is
still in the same group is answered as a replay of it, as after a commit. Drafts of
different idempotency scopes go in separate batches of the same group, each in its own
unit of work. A caller that cancels its future before the writer takes the draft (an
awaiting request cancelled) withdraws it; once taken, the draft is posted whatever the
caller does, as a request already sent to the database would be.

An observer refuses one draft of a batch as the ledger's rules do (a reciprocity credit
line); one that refuses a whole write instead makes the batch post again one draft at a
time, so each caller gets the answer it would have had alone. Any other error of a batch
(the database's, after the retry loop) is every one of its callers' error, as it would
have been for each alone: whether a commit that lost its connection took effect is
unknown, and posting again could post twice.

One writer serves the whole process, so one slow write (a lock another process holds,
the retry loop's backoff) delays every single posting queued behind it; batches and
everything else do not go through it.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from ledger.authority import OPERATOR, Actor
from ledger.errors import LedgerError
from ledger.model import Outcome, TransactionDraft
from ledger.service import Ledger

GROUP_MAX = 512


@dataclass(slots=True)
class _Waiting:
    draft: TransactionDraft
    scope: str
    actor: Actor
    answer: Future[Outcome] = field(default_factory=Future)


class GroupCommit:
    """Posts single drafts for many threads, or an event loop's requests, through one writer
    thread (see the module)."""

    def __init__(self, ledger: Ledger, *, group_max: int = GROUP_MAX) -> None:
        self.ledger = ledger
        self.group_max = group_max
        self.batches_taken = 0  # batches the writer took: one per scope per group
        self._waiting: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _writer and _closed, and orders hand-overs
        self._writer: threading.Thread | None = None
        self._closed = False

    def submit(
        self, draft: TransactionDraft, *, scope: str = "", actor: Actor = OPERATOR
    ) -> Future[Outcome]:
        """Hand the draft to the writer and return at once; the future holds its outcome (a
        refusal is the outcome's error) or the error its batch raised. An event loop awaits
        it (``asyncio.wrap_future``) without a worker thread. Cancelling the future before
        the writer takes the draft withdraws it; after, cancelling fails and the draft is
        posted. Once closed, each draft is posted alone, on a thread of its own."""
        waiting = _Waiting(draft, scope, actor)
        with self._lock:
            if not self._closed:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_groups, name="heartleaf-group-commit", daemon=True
                    )
                    self._writer.start()
                self._waiting.put(waiting)
                return waiting.answer
        # Shutting down: post alone rather than queue behind the end, on a thread of its own
        # so that an event loop calling this never waits for the database.
        threading.Thread(target=self._write, args=([waiting],), daemon=True).start()
        return waiting.answer

    @property
    def waiting(self) -> int:
        """Drafts handed over that the writer has not taken yet."""
        return self._waiting.qsize()

    def close(self) -> None:
        """Write the drafts handed over so far, then stop the writer; later drafts are posted
        alone (``submit``)."""
        with self._lock:
            self._closed = True
            writer = self._writer
            if writer is not None:
                self._waiting.put(None)  # after every draft handed over before closing
        if writer is not None:
            writer.join()

    def _write_groups(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.group_max:
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # closing: write what was handed over, then stop
                    self._write(group)
                    return
                group.append(more)
            self._write(group)

    def _write(self, group: list[_Waiting]) -> None:
        by_scope: dict[tuple[str, Actor], list[_Waiting]] = {}
        for waiting in group:
            # A future cancelled before the writer took it (an awaiting request that was
            # cancelled) is left out: nothing was answered, nothing is posted. Once taken,
            # it can no longer be cancelled, so every answer below can be set.
            if waiting.answer.set_running_or_notify_cancel():
                by_scope.setdefault((waiting.scope, waiting.actor), []).append(waiting)
        for (scope, actor), batch in by_scope.items():
            self.batches_taken += 1
            try:
                self._write_batch(batch, scope, actor)
            except Exception as error:  # noqa: BLE001 - its callers raise it; none is left waiting
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(error)

    def _write_batch(self, batch: list[_Waiting], scope: str, actor: Actor) -> None:
        if len(batch) > 1:
            try:
                outcomes = self.ledger.post_transactions(
                    [w.draft for w in batch], scope=scope, actor=actor
                )
            except Exception:  # noqa: BLE001, S110 - refused or failed whole: each alone, so
                pass  # one draft's bad input never changes its neighbours' answers
            else:
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    waiting.answer.set_result(outcome)
                return
        for waiting in batch:
            try:
                waiting.answer.set_result(
                    self.ledger.post_transaction(waiting.draft, scope=scope, actor=actor)
                )
            except LedgerError as error:
                waiting.answer.set_result(Outcome(None, error))
            except Exception as error:  # noqa: BLE001 - this caller raises it
                waiting.answer.set_exception(error)
