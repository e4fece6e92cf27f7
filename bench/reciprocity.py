"""Reciprocity and clearing, in-process: the matrix for 50 communities, and a clearing
proposal on 100 communities with 2,000 obligations (issue 7, item 5).

Each part builds its own federation in a fresh database (migrated, empty), through the
ledger the service runs (``api.app.build_ledger``; on ``Databases.setup_engine``, which
does not wait for the disk: setup is not measured, and every measured call then runs on
the engine exactly as ``make_engine`` builds it), so the reciprocity observer records
every flow inside the writes as it does in production: a federation community, the
reference unit FRU, one shared currency (Leaves, LEAF, scale 2, valued at one unit, so a
flow's value is the payment's amount) and one funded member per community. The funding is
posted before the exchange is configured, so it records nothing; every payment after it is
a member of one community paying a member of another, in batch calls
(``Ledger.post_transactions``), each with a client id.

Sizes are issue 7's unless the run passes others (``--reciprocity-communities``,
``--clearing-communities``, ``--clearing-obligations``; the test's tiny run is smaller).

The matrix: 50 communities; first one payment for every ordered pair of communities (so
every cell of the matrix has a flow), then seeded random payments, spread evenly over the
last ``days`` UTC days (the build runs on a clock set in the past, a day at a time), so the
day rows a window reads are there. Measured: ``Reciprocity.matrix`` over the last seven
days and over all time (as of now), each call one read unit of work, p50/p99 over several
calls after one warm-up call. Checked: every cell is there and the cells sum to what was
paid, in the window and in all.

Clearing: 100 communities and 2,000 obligations between them: 2,000 distinct unordered
pairs drawn at random (seeded), each with one payment of a random amount in a random
direction, so each pair nets to one obligation. Measured: ``Reciprocity.propose_clearing``
end to end (read the obligations from the pair rows, solve, store the proposal: one write
unit of work), p50 over a few calls; separately the pure solver ``exchange.clearing.set_off``
on the same obligations; and, once, ``execute_clearing`` of the last proposal, after which
the obligations left must be exactly the proposal's ``remaining``.
"""

from __future__ import annotations

import datetime as dt
import gc
import random
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from api.app import build_ledger
from bench.databases import Databases
from bench.measure import latency, now, say
from exchange import clearing
from exchange.reciprocity import DayWindow, Reciprocity
from exchange.service import Exchange
from ledger.database import make_engine
from ledger.model import AccountType, CurrencyKind, PostingDraft, TransactionDraft
from ledger.service import Ledger

MATRIX_COMMUNITIES = 50  # issue 7's sizes; the test's tiny run passes smaller ones
CLEARING_COMMUNITIES = 100
OBLIGATIONS = 2_000
WINDOW_DAYS = 7
SEED = 7
CURRENCY = "LEAF"
UNIT = "FRU"
FEDERATION = "federation"
FUNDING = 10**15  # minor units per member: far above anything it pays
AMOUNT_MAX = 100_000  # payments of 1..100,000 minor units, as in the shared workload
BY = "bench"


class _Clock:
    """A settable clock: the build writes its history in the past, a day at a time."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def run(
    databases: Databases,
    backend: str,
    *,
    payments: int,
    days: int,
    samples: int,
    clearing_samples: int,
    batch_size: int,
    communities: int = MATRIX_COMMUNITIES,
    clearing_communities: int = CLEARING_COMMUNITIES,
    obligations: int = OBLIGATIONS,
) -> dict[str, Any]:
    return {
        "matrix": _matrix(databases, backend, communities, payments, days, samples, batch_size),
        "clearing": _clearing(
            databases, backend, clearing_communities, obligations, clearing_samples, batch_size
        ),
    }


def _federation(ledger: Ledger, count: int, batch_size: int) -> tuple[list[str], list[int]]:
    """``count`` communities with one funded member each, then the exchange configured."""
    ledger.create_community(FEDERATION, "The federation")
    slugs = [f"r{index:03d}" for index in range(count)]
    for index, slug in enumerate(slugs):
        ledger.create_community(slug, f"Community {index}")
    ledger.create_currency(UNIT, kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    ledger.create_currency(CURRENCY, kind=CurrencyKind.LEAVES, scale=2, name="Leaves", symbol="🍃")
    issuance = ledger.open_account(
        community=FEDERATION, currency=CURRENCY, type=AccountType.ISSUANCE, name="issuance"
    ).id
    members = [
        ledger.open_account(
            community=slug, currency=CURRENCY, type=AccountType.MEMBER, name="member"
        ).id
        for slug in slugs
    ]
    _post(
        ledger,
        [
            TransactionDraft(
                postings=(PostingDraft(issuance, member, FUNDING, CURRENCY),),
                client_id=f"funding-{member}",
            )
            for member in members
        ],
        batch_size,
    )
    exchange = Exchange(ledger)
    exchange.configure(reference_unit=UNIT, federation_community=FEDERATION)
    for code in (UNIT, CURRENCY):
        exchange.set_valuation(code, Fraction(1), by=BY, reason="bench reciprocity")
    return slugs, members


def _post(ledger: Ledger, drafts: list[TransactionDraft], batch_size: int) -> None:
    for start in range(0, len(drafts), batch_size):
        outcomes = ledger.post_transactions(drafts[start : start + batch_size])
        refused = [o.error for o in outcomes if o.error is not None]
        if refused:
            raise RuntimeError(f"a bench payment was refused: {refused[0]}")


def _payment(payer: int, payee: int, amount: int, key: str) -> TransactionDraft:
    return TransactionDraft(postings=(PostingDraft(payer, payee, amount, CURRENCY),), client_id=key)


def _timed(call: Callable[[], Any], count: int) -> tuple[dict[str, Any], Any]:
    """One warm-up call, then ``count`` timed calls; the latency and the last answer.

    The latency counts the process's full (generation 2) garbage collections during the
    timed calls: one that lands in a call is that call's slowest moment, and it is real
    (the service runs in the same kind of process), so it is kept and shown, not hidden."""
    answer = call()
    samples = []
    collections = gc.get_stats()[2]["collections"]
    for _ in range(count):
        before = now()
        answer = call()
        samples.append(now() - before)
    full_collections = gc.get_stats()[2]["collections"] - collections
    return {**latency(samples), "full_gc_collections": full_collections}, answer


def _matrix(
    databases: Databases,
    backend: str,
    communities: int,
    payments: int,
    days: int,
    samples: int,
    batch_size: int,
) -> dict[str, Any]:
    url = databases.fresh(backend, "reciprocity_matrix")
    setup = databases.setup_engine(url)
    try:
        started = now()
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        clock = _Clock(today - dt.timedelta(days=days))
        ledger = build_ledger(setup, clock)
        say(f"reciprocity {backend}: {communities} communities")
        _slugs, members = _federation(ledger, communities, batch_size)
        count = len(members)
        pairs = [(a, b) for a in range(count) for b in range(count) if a != b]
        rng = random.Random(SEED)
        plan = pairs + [tuple(rng.sample(range(count), 2)) for _ in range(payments - len(pairs))]
        rng.shuffle(plan)
        say(f"reciprocity {backend}: {len(plan):,} payments over {days} days, in batches")
        paid_total = paid_in_window = 0
        window = DayWindow.of((today - dt.timedelta(days=WINDOW_DAYS)).date(), today.date())
        per_day = -(-len(plan) // days)
        for day in range(days):
            clock.at = today - dt.timedelta(days=days - day) + dt.timedelta(hours=12)
            drafts = []
            for index in range(day * per_day, min(len(plan), (day + 1) * per_day)):
                payer, payee = plan[index]
                amount = rng.randint(1, AMOUNT_MAX)
                drafts.append(_payment(members[payer], members[payee], amount, f"p{index:07d}"))
                paid_total += amount
                if window.since <= clock.at.date() < window.until:
                    paid_in_window += amount
            _post(ledger, drafts, batch_size)
        build_seconds = now() - started
    finally:
        setup.dispose()
    engine = make_engine(url)  # measured as the service runs it, on the real clock
    try:
        say(f"reciprocity {backend}: the matrix, {samples} calls each way")
        reciprocity = Reciprocity(build_ledger(engine))
        in_window, windowed = _timed(lambda: reciprocity.matrix(window), samples)
        all_time, everything = _timed(reciprocity.matrix, samples)
        return {
            "communities": communities,
            "payments": len(plan),
            "days": days,
            "window_days": WINDOW_DAYS,
            "build_seconds": build_seconds,
            "window": in_window,
            "all_time": all_time,
            "cells": len(everything.cells),
            "cells_expected": len(pairs),
            "cells_in_window": len(windowed.cells),
            "totals_correct": sum(c.amount for c in everything.cells) == paid_total
            and sum(c.amount for c in windowed.cells) == paid_in_window,
        }
    finally:
        engine.dispose()


def _clearing(
    databases: Databases,
    backend: str,
    communities: int,
    obligations: int,
    samples: int,
    batch_size: int,
) -> dict[str, Any]:
    url = databases.fresh(backend, "reciprocity_clearing")
    setup = databases.setup_engine(url)
    try:
        started = now()
        ledger = build_ledger(setup)
        say(f"clearing {backend}: {communities} communities, {obligations:,} obligations")
        _slugs, members = _federation(ledger, communities, batch_size)
        rng = random.Random(SEED)
        count = len(members)
        pairs = rng.sample([(a, b) for a in range(count) for b in range(a + 1, count)], obligations)
        drafts = []
        for index, (a, b) in enumerate(pairs):
            payer, payee = (a, b) if rng.random() < 0.5 else (b, a)
            amount = rng.randint(1, AMOUNT_MAX)
            drafts.append(_payment(members[payer], members[payee], amount, f"o{index:07d}"))
        _post(ledger, drafts, batch_size)
        build_seconds = now() - started
    finally:
        setup.dispose()
    engine = make_engine(url)  # measured as the service runs it
    try:
        reciprocity = Reciprocity(build_ledger(engine))
        owed = {(o.debtor, o.creditor): o.amount for o in reciprocity.obligations()}

        say(f"clearing {backend}: propose_clearing {samples} times, set_off {samples} times")
        proposing, proposal = _timed(lambda: reciprocity.propose_clearing(by=BY), samples)
        solving, solved = _timed(lambda: clearing.set_off(owed), samples)
        before = now()
        executed = reciprocity.execute_clearing(proposal.id, by=BY)
        execute_seconds = now() - before
        left = {(o.debtor, o.creditor): o.amount for o in reciprocity.obligations()}
        remaining = {(o.debtor, o.creditor): o.amount for o in proposal.remaining}
        return {
            "communities": communities,
            "obligations": len(owed),
            "obligations_expected": obligations,
            "build_seconds": build_seconds,
            "propose": proposing,
            "set_off": solving,
            "execute_ms": execute_seconds * 1000,
            "gross_before": proposal.gross_before,
            "gross_after": proposal.gross_after,
            "cleared_share": proposal.total_cleared / proposal.gross_before,
            "cycles": len(proposal.cycles),
            "proposal_matches_set_off": proposal.total_cleared == solved.total_cleared
            and dict(solved.remaining) == remaining,
            "executed": executed.status == "executed",
            "remaining_after_execution_correct": left == remaining,
        }
    finally:
        engine.dispose()
