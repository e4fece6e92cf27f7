"""pgledger on PostgreSQL: a ledger written entirely in SQL functions, on the workload.

    python -m bench.pgledger --sql-dir ../shared/peers/pgledger --n 1000 --out pgledger.json

An optional peer. Its SQL is another project's (MIT licence) and is not part of Heartleaf:
``bench.peers`` runs this module when a folder holding ``ulid-ulid-to-uuid.sql``,
``ulid-uuid-to-ulid.sql`` and ``pgledger.sql`` is found (``HEARTLEAF_PGLEDGER_SQL``, else
``../shared/peers/pgledger`` beside the repository); without one, the report says the peer
is absent and why.

The three files are loaded, in that order and in one transaction, into a fresh database
(``<prefix>pgledger``, dropped after). Each workload account becomes
``pgledger_create_account(name, 'EUR')`` (negative balances allowed, as the naive ceiling
allows them). Mode ``single``: one ``pgledger_create_transfer(from, to, amount)`` per
transfer, each its own transaction, one round trip (the function locks both accounts in id
order, updates both balances and writes the transfer and two entries carrying the
balances before and after). Then one balance lookup per lookup account, and every
balance, checked against the workload's expected balances. psycopg 3, like Heartleaf.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench.generator import CURRENCY, generate

FILES = ("ulid-ulid-to-uuid.sql", "ulid-uuid-to-ulid.sql", "pgledger.sql")


def missing_files(directory: Path) -> list[str]:
    return [name for name in FILES if not (directory / name).is_file()]


def _database_url(admin_url: str, name: str) -> str:
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def _admin(admin_url: str, statements: Sequence[str]) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement.encode())


def _median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000.0


def run(sql_dir: Path, n: int, admin_url: str, database: str) -> dict[str, Any]:
    workload = generate(n)
    _admin(
        admin_url,
        [f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'CREATE DATABASE "{database}"'],
    )
    with psycopg.connect(_database_url(admin_url, database), autocommit=True) as connection:
        with connection.transaction():
            for name in FILES:
                connection.execute((sql_dir / name).read_bytes())
        ids = [
            str(
                connection.execute(
                    "SELECT id FROM pgledger_create_account(%s, %s)", (a["name"], CURRENCY)
                ).fetchone()[0]  # type: ignore[index]
            )
            for a in workload["accounts"]
        ]
        transfers = workload["transfers"]
        call = "SELECT id FROM pgledger_create_transfer(%s, %s, %s)"
        started = time.perf_counter()
        for _key, source, destination, amount in transfers:
            connection.execute(call, (ids[source], ids[destination], amount)).fetchone()
        post_seconds = time.perf_counter() - started

        expected: list[int] = workload["expected_balances"]
        one = "SELECT balance FROM pgledger_accounts_view WHERE id = %s"
        lookups = []
        looked_up = {}
        for index in workload["lookups"]:
            started = time.perf_counter()
            row = connection.execute(one, (ids[index],)).fetchone()
            lookups.append(time.perf_counter() - started)
            looked_up[index] = None if row is None else int(row[0])
        position = {account: index for index, account in enumerate(ids)}
        every = []
        found: dict[int, int] = {}
        for _ in range(5):
            started = time.perf_counter()
            rows = connection.execute("SELECT id, balance FROM pgledger_accounts_view").fetchall()
            every.append(time.perf_counter() - started)
            found = {position[str(account)]: int(balance) for account, balance in rows}
        version = connection.execute("SHOW server_version").fetchone()
    correct = [found.get(i, 0) for i in range(len(expected))] == expected and all(
        looked_up[i] == expected[i] for i in looked_up
    )
    return {
        "peer": "pgledger",
        "storage": f"PostgreSQL {version[0] if version else '?'}",
        "mode": "single",
        "n": len(transfers),
        "post_seconds": post_seconds,
        "post_tps": len(transfers) / post_seconds,
        "lookup_median_ms": _median_ms(lookups),
        "all_balances_ms": _median_ms(every),
        "balances_correct": correct,
        "python": sys.version.split()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pgledger", description=__doc__)
    parser.add_argument("--sql-dir", type=Path, required=True, help="the folder of its SQL")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_pgledger")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    missing = missing_files(args.sql_dir)
    if missing:
        parser.error(f"{args.sql_dir} lacks {', '.join(missing)}")
    try:
        figures = run(args.sql_dir, args.n, args.postgres_url, args.database)
    finally:
        _admin(args.postgres_url, [f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'])
    rendered = json.dumps(figures, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(rendered)
    print(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
