"""django-hordak on PostgreSQL: a maintained double-entry library, on the benchmark's workload.

    bench/.peers/venv/bin/python -m bench.hordak --mode single --n 1000 --out hordak.json

An optional peer. It needs Django and django-hordak (``bench/peers-requirements.txt``),
which Heartleaf does not depend on: ``make bench-peers`` installs them from the package
index into ``bench/.peers/venv``, and ``bench.peers`` runs this module with that
environment's interpreter when it is there (the report says the peer is absent when not).
It imports nothing of Heartleaf: the workload comes from ``bench.generator``, which uses
the standard library only.

Accounts: one root asset account per community (hordak types root accounts only; their
children inherit the type), 100 child accounts each. Modes: ``single`` is hordak's
documented ``transfer_to`` (atomic: one database transaction, with hordak's deferred
zero-sum trigger, per transfer); ``bulk`` creates 1,000 transactions and their legs per
``bulk_create`` (the Python checks of ``Leg.save`` are skipped, the database's triggers
still run). Then one balance lookup per lookup account, all balances through
``Account.objects.with_balances()``, each checked against the workload's expected
balances.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bench.generator import COMMUNITY_COUNT, CURRENCY, generate

CHUNK = 1000
REQUIREMENTS = Path(__file__).resolve().parent / "peers-requirements.txt"


def _module(name: str) -> Any:
    return importlib.import_module(name)


def _admin(admin_url: str, statements: Sequence[str]) -> None:
    connection = _module("psycopg2").connect(admin_url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def setup_django(admin_url: str, database: str) -> float:
    """Django configured on a fresh ``database`` and migrated; the seconds migration took."""
    _admin(
        admin_url,
        [f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'CREATE DATABASE "{database}"'],
    )
    parts = urlsplit(admin_url)
    settings = _module("django.conf").settings
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "mptt", "hordak"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": database,
                "USER": unquote(parts.username or "postgres"),
                "PASSWORD": unquote(parts.password or ""),
                "HOST": parts.hostname or "127.0.0.1",
                "PORT": str(parts.port or 5432),
            }
        },
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEBUG=False,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        HORDAK_CURRENCIES=[CURRENCY],
        DEFAULT_CURRENCY=CURRENCY,
        CURRENCIES=[CURRENCY],
        HORDAK_INTERNAL_CURRENCY=CURRENCY,
        LOGGING_CONFIG=None,
    )
    _module("django").setup()
    started = time.perf_counter()
    _module("django.core.management").call_command("migrate", verbosity=0)
    return time.perf_counter() - started


def money(minor: int) -> Any:
    """``minor`` hundredths as django-money's Money (hordak's amounts are decimals)."""
    return _module("djmoney.money").Money(Decimal(minor).scaleb(-2), CURRENCY)


def to_minor(balance: Any) -> int:
    total = sum((m.amount for m in balance.monies()), Decimal(0))
    return int(total.scaleb(2))


def _median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000.0


def run(mode: str, n: int, admin_url: str, database: str) -> dict[str, Any]:
    warnings.simplefilter("ignore", DeprecationWarning)
    workload = generate(n)
    migrate_seconds = setup_django(admin_url, database)
    models = _module("hordak.models")
    atomic = _module("django.db").transaction.atomic
    started = time.perf_counter()
    roots = [
        models.Account.objects.create(
            name=f"Community {c}",
            code=f"C{c}",
            type=models.AccountType.asset,
            currencies=[CURRENCY],
        )
        for c in range(COMMUNITY_COUNT)
    ]
    children = [
        models.Account.objects.create(
            name=a["name"],
            parent=roots[a["community"]],
            code=f"{a['id']:04d}",
            currencies=[CURRENCY],
        )
        for a in workload["accounts"]
    ]
    accounts_seconds = time.perf_counter() - started
    transfers = workload["transfers"]

    started = time.perf_counter()
    if mode == "single":
        for key, source, destination, amount in transfers:
            children[source].transfer_to(
                children[destination], money(amount), description=f"t{key:06d}"
            )
    else:
        for start in range(0, len(transfers), CHUNK):
            chunk = transfers[start : start + CHUNK]
            with atomic():
                made = models.Transaction.objects.bulk_create(
                    [models.Transaction(description=f"t{row[0]:06d}") for row in chunk]
                )
                legs = []
                for transaction, (_key, source, destination, amount) in zip(
                    made, chunk, strict=True
                ):
                    legs.append(
                        models.Leg(
                            transaction=transaction, account=children[source], credit=money(amount)
                        )
                    )
                    legs.append(
                        models.Leg(
                            transaction=transaction,
                            account=children[destination],
                            debit=money(amount),
                        )
                    )
                models.Leg.objects.bulk_create(legs)
    post_seconds = time.perf_counter() - started

    expected: list[int] = workload["expected_balances"]
    lookups = []
    looked_up = {}
    for index in workload["lookups"]:
        started = time.perf_counter()
        looked_up[index] = to_minor(children[index].get_balance())
        lookups.append(time.perf_counter() - started)
    index_of = {account.pk: i for i, account in enumerate(children)}
    found: dict[int, int] = {}
    every = []
    for _ in range(5):
        started = time.perf_counter()
        found = {
            index_of[account.pk]: to_minor(account.balance)
            for account in models.Account.objects.with_balances()
            if account.pk in index_of
        }
        every.append(time.perf_counter() - started)
    correct = [found.get(i, 0) for i in range(len(expected))] == expected and all(
        looked_up[i] == expected[i] for i in looked_up
    )
    return {
        "peer": "django-hordak",
        "storage": "PostgreSQL",
        "mode": mode,
        "n": len(transfers),
        "post_seconds": post_seconds,
        "post_tps": len(transfers) / post_seconds,
        "migrate_seconds": migrate_seconds,
        "create_accounts_seconds": accounts_seconds,
        "lookup_median_ms": _median_ms(lookups),
        "all_balances_ms": _median_ms(every),
        "balances_correct": correct,
        "django": _module("django").get_version(),
        "python": sys.version.split()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hordak", description=__doc__)
    parser.add_argument("--mode", choices=("single", "bulk"), required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_hordak")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        figures = run(args.mode, args.n, args.postgres_url, args.database)
    finally:
        if "django.db" in sys.modules:
            with contextlib.suppress(Exception):  # Django may not have got as far as a connection
                sys.modules["django.db"].connections.close_all()
        _admin(args.postgres_url, [f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'])
    rendered = json.dumps(figures, indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(rendered)
    print(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
