"""Durability: a writer killed with SIGKILL loses nothing it acknowledged, invents nothing.

A child process posts in a loop (payments, a payment of Hearts and Leaves together, holds
posted right after, and payments the rules refuse) and prints a line for each outcome the
moment the ledger returns it, flushing: that line is the acknowledgement a client would
have had. The parent kills the child with SIGKILL after a number of acknowledgements, so
the child dies in the middle of its next write, then opens the database afresh and checks:
every acknowledged transaction is there with the status acknowledged; at most the one
write in flight landed without its acknowledgement; no refused request left a row;
``verify`` finds nothing wrong; every currency sums to zero. Then it starts another child
on the same database (a restart after the crash) and kills that one too.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ledger import repository as repo
from ledger.model import TransactionStatus
from ledger.service import Ledger
from ledger.verify import verify
from tests.ledger.builders import village

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6
ACKNOWLEDGEMENTS_BEFORE_KILL = (10, 40)  # drawn from this range each round
# After the last acknowledgement it waits for, the parent lets the child run on for a
# random moment (about one write) before the signal, so the kill lands at a different
# point of a write each time: before it, inside it, between its commit and its line.
KILL_DELAY_SECONDS_MAX = 0.004
CHILD_TIMEOUT_SECONDS = 120

CHILD = """
import itertools
import sys

from ledger.database import make_engine
from ledger.errors import LedgerError
from ledger.model import PostingDraft, TransactionDraft
from ledger.service import Ledger

url, round_ = sys.argv[1], sys.argv[2]
issuance, ana, bo, leaves_issuance, leaves_ana = map(int, sys.argv[3:8])
ledger = Ledger(make_engine(url))


def pay(*postings, **fields):
    return TransactionDraft(postings=tuple(PostingDraft(*p) for p in postings), **fields)


for step in itertools.count():
    client_id = f"r{round_}-{step}"
    kind = step % 4
    if kind == 0:
        draft = pay((issuance, ana, 500, "HRB"), client_id=client_id)
    elif kind == 1:  # Hearts and Leaves in one transaction
        hearts, leaves = (ana, bo, 7, "HRB"), (leaves_issuance, leaves_ana, 3, "LVS")
        draft = pay(hearts, leaves, client_id=client_id)
    elif kind == 2:
        draft = pay((ana, bo, 50, "HRB"), client_id=client_id, pending=True)
    else:  # more than Bo has: refused
        draft = pay((bo, ana, 10**12, "HRB"), client_id=client_id)
    try:
        transaction = ledger.post_transaction(draft).transaction
    except LedgerError as error:
        print("refused", client_id, error.code, flush=True)
        continue
    if kind == 2:
        print("pending", transaction.id, flush=True)
        ledger.post_pending(transaction.id)
    print("posted", transaction.id, flush=True)
"""


@dataclass
class Acknowledged:
    posted: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)  # held; its post may not have returned
    refused: set[str] = field(default_factory=set)  # client ids

    def read(self, lines: list[str]) -> None:
        for line in lines:
            kind, value, *_code = line.split()
            if kind == "posted":
                self.posted.add(int(value))
            elif kind == "pending":
                self.pending.add(int(value))
            else:
                assert kind == "refused", line
                self.refused.add(value)


def _run_and_kill(
    url: str, round_: int, arguments: list[int], kill_after: int, delay: float
) -> list[str]:
    """Start a child, read ``kill_after`` acknowledgements, SIGKILL it; every line it got
    out before it died."""
    command = [sys.executable, "-c", CHILD, url, str(round_), *map(str, arguments)]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        watchdog = threading.Timer(CHILD_TIMEOUT_SECONDS, child.kill)
        watchdog.start()
        try:
            lines = []
            for line in child.stdout:
                lines.append(line)
                if len(lines) == kill_after:
                    time.sleep(delay)  # fault injection, not waiting: see KILL_DELAY_SECONDS_MAX
                    child.send_signal(signal.SIGKILL)
                    break
            lines += child.stdout.readlines()  # what it flushed before the signal landed
            child.wait()
        finally:
            watchdog.cancel()
        errors = child.stderr.read()
    assert child.returncode == -signal.SIGKILL, f"the child ended on its own:\n{errors}"
    assert len(lines) >= kill_after
    return lines


def _check_after_crash(engine: Engine, ledger: Ledger, acknowledged: Acknowledged) -> None:
    engine.dispose()  # read as a process starting after the crash would: fresh connections
    with engine.connect() as connection:
        stored = dict(
            connection.execute(select(repo.transactions.c.id, repo.transactions.c.status)).all()
        )
        refused_rows = connection.execute(
            select(func.count())
            .select_from(repo.transactions)
            .where(repo.transactions.c.client_id.in_(sorted(acknowledged.refused)))
        ).scalar_one()
    for transaction_id in acknowledged.posted:
        assert stored.get(transaction_id) == TransactionStatus.POSTED, transaction_id
    for transaction_id in acknowledged.pending - acknowledged.posted:
        # Held and acknowledged; killed before or during its post.
        assert stored.get(transaction_id) in (TransactionStatus.PENDING, TransactionStatus.POSTED)
    assert refused_rows == 0, "a refused request left a transaction behind"
    assert verify(engine) == []
    accounts = ledger.list_accounts(limit=1000).items
    for currency in ("HRB", "LVS"):
        assert sum(a.balance.posted for a in accounts if a.currency == currency) == 0


@pytest.mark.slow
def test_a_killed_writer_loses_no_acknowledged_transaction(
    database_url: str, ledger: Ledger, engine: Engine
) -> None:
    v = village(ledger)
    arguments = [v.issuance, v.ana, v.bo, v.leaves_issuance, v.leaves_ana]
    with engine.connect() as connection:
        before = set(connection.execute(select(repo.transactions.c.id)).scalars())
    acknowledged = Acknowledged()
    rng = random.Random(2031)
    for round_ in range(ROUNDS):
        kill_after = rng.randint(*ACKNOWLEDGEMENTS_BEFORE_KILL)
        delay = rng.uniform(0, KILL_DELAY_SECONDS_MAX)
        lines = _run_and_kill(database_url, round_, arguments, kill_after, delay)
        acknowledged.read(lines)
        _check_after_crash(engine, ledger, acknowledged)
        with engine.connect() as connection:
            stored = set(connection.execute(select(repo.transactions.c.id)).scalars())
        # Each child died with at most one write in flight: nothing else is unaccounted for.
        unacknowledged = stored - before - acknowledged.posted - acknowledged.pending
        assert len(unacknowledged) <= round_ + 1
    assert acknowledged.refused, "the children never tried a payment the rules refuse"
    assert acknowledged.pending, "the children never held anything"
