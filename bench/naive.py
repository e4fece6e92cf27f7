"""The naive ceiling: the benchmark's workload with nothing on top of the database.

    python -m bench.naive --backend sqlite --mode single --n 1000 --out naive.json

What the database allows when a transfer is only its rows: plain SQLAlchemy Core on a
minimal schema (accounts with a balance column, entries with a unique key, postings
indexed by account). One transfer inserts its entry, inserts its two postings and updates
the two balances in account-id order. No floors, no history, no idempotency answer, no
validation, no events: a ceiling for Heartleaf's figures, not a ledger. Modes: ``single``
(one commit per transfer), ``batch`` (the same statements, a commit every 1,000 transfers)
and ``bulk`` (per 1,000 transfers, one executemany each for entries, postings and the
summed balance changes). SQLite runs as Heartleaf's does: WAL, ``synchronous=FULL``, foreign
keys on. PostgreSQL runs in a database of its own (``<prefix>naive``), made fresh and
dropped after, through psycopg 3, the driver Heartleaf uses.

After posting it times one balance lookup (the workload's 100 lookup accounts), all 1,000
balances read from the balance column, and the same balances summed from the postings, and
checks both against the workload's expected balances. It writes one JSON object (``--out``)
that ``bench.peers`` sets beside Heartleaf's figures. It imports the workload generator and
SQLAlchemy only, so its figures carry nothing of Heartleaf.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)

from bench.generator import generate

CHUNK = 1000
metadata = MetaData()
accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("community", Integer, nullable=False),
    Column("name", String(64), nullable=False, unique=True),
    Column("balance", BigInteger, nullable=False, server_default=text("0")),
)
entries = Table(
    "journal_entry",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("idem_key", String(64), nullable=False, unique=True),
    Column("memo", String(200)),
)
postings = Table(
    "posting",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("entry_id", Integer, ForeignKey("journal_entry.id"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
)
Index("ix_posting_account", postings.c.account_id)

INSERT_ENTRY = insert(entries).returning(entries.c.id)
INSERT_ENTRIES = insert(entries).returning(entries.c.id, sort_by_parameter_order=True)
INSERT_POSTINGS = insert(postings)
ADD_TO_BALANCE = (
    update(accounts)
    .where(accounts.c.id == bindparam("account"))
    .values(balance=accounts.c.balance + bindparam("delta"))
)
Row = Sequence[int]  # [key, source, destination, amount]


def _key(key: int) -> str:
    return f"t{key:06d}"


def post_one(connection: Connection, row: Row) -> None:
    key, source, destination, amount = row
    entry = connection.execute(INSERT_ENTRY, {"idem_key": _key(key), "memo": None}).scalar_one()
    connection.execute(
        INSERT_POSTINGS,
        [
            {"entry_id": entry, "account_id": source, "amount": -amount},
            {"entry_id": entry, "account_id": destination, "amount": amount},
        ],
    )
    for account, delta in sorted(((source, -amount), (destination, amount))):
        connection.execute(ADD_TO_BALANCE, {"account": account, "delta": delta})


def post_bulk(connection: Connection, chunk: Sequence[Row]) -> None:
    ids = (
        connection.execute(
            INSERT_ENTRIES, [{"idem_key": _key(row[0]), "memo": None} for row in chunk]
        )
        .scalars()
        .all()
    )
    rows: list[dict[str, int]] = []
    deltas: defaultdict[int, int] = defaultdict(int)
    for entry, (_, source, destination, amount) in zip(ids, chunk, strict=True):
        rows.append({"entry_id": entry, "account_id": source, "amount": -amount})
        rows.append({"entry_id": entry, "account_id": destination, "amount": amount})
        deltas[source] -= amount
        deltas[destination] += amount
    connection.execute(INSERT_POSTINGS, rows)
    connection.execute(
        ADD_TO_BALANCE,
        [{"account": account, "delta": delta} for account, delta in sorted(deltas.items())],
    )


def sqlite_engine(path: Path) -> Engine:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _admin(admin_url: str, statements: Iterable[str]) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement.encode())


def postgres_database(admin_url: str, name: str) -> str:
    """A fresh database ``name`` beside ``admin_url``; its SQLAlchemy URL."""
    _admin(
        admin_url, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"']
    )
    base = admin_url.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+psycopg://{base}/{name}"


def _timed(work: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return samples


def _median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000.0


def run(engine: Engine, mode: str, n: int) -> dict[str, Any]:
    workload = generate(n)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(accounts),
            [
                {"id": a["id"], "community": a["community"], "name": a["name"]}
                for a in workload["accounts"]
            ],
        )
    transfers: list[Row] = workload["transfers"]
    started = time.perf_counter()
    with engine.connect() as connection:
        if mode == "single":
            for row in transfers:
                with connection.begin():
                    post_one(connection, row)
        else:
            for start in range(0, len(transfers), CHUNK):
                chunk = transfers[start : start + CHUNK]
                with connection.begin():
                    if mode == "batch":
                        for row in chunk:
                            post_one(connection, row)
                    else:
                        post_bulk(connection, chunk)
    post_seconds = time.perf_counter() - started

    expected: list[int] = workload["expected_balances"]
    one = select(accounts.c.balance).where(accounts.c.id == bindparam("account"))
    every = select(accounts.c.id, accounts.c.balance)
    summed = select(postings.c.account_id, func.sum(postings.c.amount)).group_by(
        postings.c.account_id
    )
    with engine.connect() as connection:
        lookups = []
        for account in workload["lookups"]:
            started = time.perf_counter()
            connection.execute(one, {"account": account}).scalar_one()
            connection.rollback()
            lookups.append(time.perf_counter() - started)
        found: dict[int, int] = {}

        def read(statement: Any) -> None:
            found.clear()
            found.update({int(i): int(b) for i, b in connection.execute(statement)})
            connection.rollback()

        columns = _timed(lambda: read(every), 5)
        columns_correct = [found.get(i, 0) for i in range(len(expected))] == expected
        sums = _timed(lambda: read(summed), 5)
        sums_correct = [found.get(i, 0) for i in range(len(expected))] == expected
    return {
        "peer": "naive ceiling (bench.naive, SQLAlchemy Core)",
        "mode": mode,
        "n": len(transfers),
        "post_seconds": post_seconds,
        "post_tps": len(transfers) / post_seconds,
        "lookup_median_ms": _median_ms(lookups),
        "all_balances_ms": _median_ms(columns),
        "all_balances_recompute_ms": _median_ms(sums),
        "balances_correct": columns_correct and sums_correct,
        "sqlalchemy": sqlalchemy.__version__,
        "python": sys.version.split()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), required=True)
    parser.add_argument("--mode", choices=("single", "batch", "bulk"), required=True)
    parser.add_argument("--n", type=int, default=100_000, help="transfers (default 100,000)")
    parser.add_argument("--sqlite-path", type=Path, default=Path("naive.db"))
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an administrative PostgreSQL URL; the peer's database is made beside it",
    )
    parser.add_argument("--database", default="bench_naive", help="its PostgreSQL database")
    parser.add_argument("--out", type=Path, help="the JSON file to write")
    args = parser.parse_args(argv)
    if args.backend == "sqlite":
        engine = sqlite_engine(args.sqlite_path)
        storage = "SQLite WAL synchronous=FULL"
    else:
        engine = create_engine(postgres_database(args.postgres_url, args.database))
        storage = "PostgreSQL"
    try:
        figures = {**run(engine, args.mode, args.n), "storage": storage}
    finally:
        engine.dispose()
        if args.backend == "postgresql":
            _admin(args.postgres_url, [f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'])
    text_ = json.dumps(figures, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text_)
    print(text_)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
