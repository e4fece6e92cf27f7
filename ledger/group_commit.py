"""Group commit: concurrent single postings share one unit of work, and so one commit.

A commit that is on disk costs a flush (``synchronous=FULL`` on SQLite, a WAL flush on
PostgreSQL), and on SQLite every writer of a process queues for the one write lock: eight
clients each posting one transfer at a time wait for eight flushes in a row. Databases
answer this with group commit, and so does ``GroupCommit``: callers hand their draft to
one writer thread, which takes every draft waiting at that moment (up to ``GROUP_MAX``),
posts them with ``Ledger.post_transactions`` as one non-atomic batch, and hands each
caller its own outcome. A caller alone pays one thread hand-off; callers that arrive
while a group is being written share the next group's commit.

Nothing a caller sees changes. Each draft is judged on the balances the drafts before it
left, exactly as if it had been posted alone in that order; its refusal is its own; a
retry with the same client id while the first attempt is still in the same group is
answered as a replay of it, as after a commit. Drafts of different idempotency scopes go
in separate batches of the same group, each in its own unit of work.

Two things can refuse a whole batch rather than one draft: an observer's refusal (a
reciprocity credit line, which is judged per write) and an error of the database. The
group is then posted again one draft at a time, so each caller gets the answer it would
have had alone.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from ledger.errors import LedgerError
from ledger.model import Outcome, TransactionDraft
from ledger.service import Ledger

GROUP_MAX = 512


@dataclass(slots=True)
class _Waiting:
    draft: TransactionDraft
    scope: str
    answer: Future[Outcome] = field(default_factory=Future)


class GroupCommit:
    """Posts single drafts for many threads through one writer thread (see the module)."""

    def __init__(self, ledger: Ledger, *, group_max: int = GROUP_MAX) -> None:
        self.ledger = ledger
        self.group_max = group_max
        self.batches_written = 0  # units of work the groups took (one per scope per group)
        self._waiting: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._start = threading.Lock()
        self._writer: threading.Thread | None = None

    def post_transaction(self, draft: TransactionDraft, *, scope: str = "") -> Outcome:
        """``Ledger.post_transaction``, sharing its commit with concurrent callers."""
        waiting = _Waiting(draft, scope)
        self._ensure_writer()
        self._waiting.put(waiting)
        outcome = waiting.answer.result()
        if outcome.error is not None:
            raise outcome.error
        return outcome

    @property
    def waiting(self) -> int:
        """Drafts handed over that the writer has not taken yet."""
        return self._waiting.qsize()

    def close(self) -> None:
        """Stop the writer once the drafts handed over so far are written."""
        with self._start:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._waiting.put(None)
            writer.join()

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._start:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_groups, name="heartleaf-group-commit", daemon=True
                )
                self._writer.start()

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
                    self._write_answering(group)
                    return
                group.append(more)
            self._write_answering(group)

    def _write_answering(self, group: list[_Waiting]) -> None:
        try:
            self._write(group)
        except Exception as error:  # noqa: BLE001 - a bug here must not strand the callers
            for waiting in group:
                if not waiting.answer.done():
                    waiting.answer.set_exception(error)

    def _write(self, group: list[_Waiting]) -> None:
        by_scope: dict[str, list[_Waiting]] = {}
        for waiting in group:
            by_scope.setdefault(waiting.scope, []).append(waiting)
        for scope, batch in by_scope.items():
            self.batches_written += 1
            if len(batch) > 1:
                outcomes = self._together(batch, scope)
                if outcomes is not None:
                    for waiting, outcome in zip(batch, outcomes, strict=True):
                        waiting.answer.set_result(outcome)
                    continue
            for waiting in batch:
                _answer_alone(self.ledger, waiting, scope)

    def _together(self, batch: list[_Waiting], scope: str) -> list[Outcome] | None:
        """The batch's outcomes, or None when something refused the whole write."""
        try:
            return self.ledger.post_transactions([w.draft for w in batch], scope=scope)
        except (LedgerError, DBAPIError):
            return None


def _answer_alone(ledger: Ledger, waiting: _Waiting, scope: str) -> None:
    try:
        waiting.answer.set_result(ledger.post_transaction(waiting.draft, scope=scope))
    except LedgerError as error:
        waiting.answer.set_result(Outcome(None, error))
    except Exception as error:  # noqa: BLE001 - the caller raises it: none is left waiting
        waiting.answer.set_exception(error)
