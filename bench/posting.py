"""Posting in-process, through the ledger the service runs: one transfer per call, then
batches of 8,190.

The ledger is ``api.app.build_ledger(engine)``, the one the API, the CLI and the demo use,
so whatever layer above follows its writes (exchange/'s observers) is on here too. Each
mode posts the first ``count`` transfers of the shared workload into a fresh clone of the
template, with the engine ``make_engine`` builds (SQLite: WAL, ``synchronous=FULL``,
``BEGIN IMMEDIATE``), then checks every balance against the workload's expected balances
and probes that the rules were on: a replay writes nothing, a reused client id with other
content and an overdraft are refused, and two history rows were written per posting.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from api.app import build_ledger
from bench.databases import Databases
from bench.generator import expected_deltas, stream
from bench.measure import latency, now, rate, say
from bench.workload import Federation, chunks
from exchange.tables import ReciprocityFlowRow
from ledger import repository as repo
from ledger.database import make_engine, unit_of_work
from ledger.errors import Code, LedgerError
from ledger.model import PostingDraft, TransactionDraft
from ledger.service import Ledger


def run(
    databases: Databases,
    backend: str,
    federation: Federation,
    single_count: int,
    batch_count: int,
    batch_size: int,
) -> dict[str, Any]:
    return {
        "single": _single(databases, backend, federation, single_count),
        "batch": _batch(databases, backend, federation, batch_count, batch_size),
    }


def _single(
    databases: Databases, backend: str, federation: Federation, count: int
) -> dict[str, Any]:
    engine = make_engine(databases.clone(backend, "posting_single"))
    ledger = build_ledger(engine)
    say(f"in-process {backend}: {count:,} single transfers, one call and one commit each")
    samples = []
    transfers = list(stream(0, count))  # drawn before the clock starts, as the peers' are
    started = now()
    for transfer in transfers:
        draft = federation.draft(transfer)
        before = now()
        ledger.post_transaction(draft)
        samples.append(now() - before)
    elapsed = now() - started
    result = {
        "transfers": count,
        "seconds": elapsed,
        "tps": rate(count, elapsed),
        "latency": latency(samples),
        **federation.check_balances(ledger, expected_deltas(0, count)),
        "rules": _rules_probe(engine, ledger, federation, count),
    }
    engine.dispose()
    return result


def _batch(
    databases: Databases, backend: str, federation: Federation, count: int, batch_size: int
) -> dict[str, Any]:
    engine = make_engine(databases.clone(backend, "posting_batch"))
    ledger = build_ledger(engine)
    say(f"in-process {backend}: {count:,} transfers in batches of {batch_size:,}")
    samples, refused = [], 0
    # The wall time covers building the drafts too, as the peers' time covers building
    # their rows; the per-call latency is the service call alone.
    batches = list(chunks(0, count, batch_size))
    started = now()
    for chunk in batches:
        drafts = [federation.draft(transfer) for transfer in chunk]
        before = now()
        outcomes = ledger.post_transactions(drafts)
        samples.append(now() - before)
        refused += sum(outcome.error is not None for outcome in outcomes)
    elapsed = now() - started
    result = {
        "transfers": count,
        "batch_size": batch_size,
        "seconds": elapsed,
        "seconds_in_calls": sum(samples),
        "tps": rate(count - refused, elapsed),
        "latency_per_batch": latency(samples),
        "refused": refused,
        **federation.check_balances(ledger, expected_deltas(0, count)),
    }
    engine.dispose()
    return result


def _rules_probe(
    engine: Engine, ledger: Ledger, federation: Federation, count: int
) -> dict[str, Any]:
    """Evidence that every rule was on while we measured (nothing here is timed)."""
    first = federation.draft(next(stream(0, 1)))
    replay = ledger.post_transaction(first)
    changed = TransactionDraft(
        postings=(
            PostingDraft(
                first.postings[0].source_account_id,
                first.postings[0].destination_account_id,
                first.postings[0].amount + 1,
                first.postings[0].currency,
            ),
        ),
        client_id=first.client_id,
    )
    source = first.postings[0].source_account_id
    workload_accounts = [*federation.member_ids, *federation.issuance_ids]
    overdraft = TransactionDraft(
        postings=(
            PostingDraft(
                source,
                first.postings[0].destination_account_id,
                ledger.balance(source).available + 1,
                first.postings[0].currency,
            ),
        ),
        client_id="bench-overdraft-probe",
    )
    with unit_of_work(engine, write=False) as connection:
        # History of the workload's accounts (the positions' own history is the flows').
        history_rows = connection.execute(
            select(func.count())
            .select_from(repo.entries)
            .where(repo.entries.c.account_id.in_(workload_accounts))
        ).scalar_one()
        flows = connection.execute(
            select(func.count()).select_from(ReciprocityFlowRow.__table__)
        ).scalar_one()
        synchronous = (
            connection.exec_driver_sql("PRAGMA synchronous").scalar()
            if engine.dialect.name == "sqlite"
            else None
        )
    funding = len(federation.member_ids)
    crossing = sum(
        federation.community_of(source) != federation.community_of(destination)
        for _key, source, destination, _amount in stream(0, count)
    )
    return {
        "replay_answered_without_writing": replay.replayed,
        "reused_client_id_refused": _refusal(ledger, changed) == Code.IDEMPOTENCY_CONFLICT,
        "overdraft_refused": _refusal(ledger, overdraft) == Code.INSUFFICIENT_FUNDS,
        "history_rows": history_rows,
        "history_rows_expected": 2 * (count + funding),
        "reciprocity_flows": flows,
        "cross_community_transfers": crossing,
        "sqlite_synchronous": None
        if synchronous is None
        else {2: "FULL", 3: "EXTRA"}.get(int(synchronous), str(synchronous)),
    }


def _refusal(ledger: Ledger, draft: TransactionDraft) -> str | None:
    try:
        ledger.post_transaction(draft)
    except LedgerError as error:
        return str(error.code)
    return None
