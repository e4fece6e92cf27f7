"""Reads at two history sizes, in-process and over HTTP, to show their cost does not grow.

One database per backend is grown through the service in batches of 8,190 (the real
write path) to the small size, measured, grown to the large size (the build time is
reported), and measured again. A history size counts postings of the shared workload
(one posting, two history rows per transfer), on top of the 1,000 funding postings.

The workload spreads its transfers over 1,000 accounts, so at 10,000 postings an account
has about 21 history rows: a statement page "from a random point" then holds fewer than
50 rows, while at 1,000,000 it is full. ``rows_mean`` records the rows per page at each
size, and the report prints it beside the ratio of the two sizes.

Each read is timed on random member accounts (fixed seed):
- ``balance``: the current balance;
- ``balance_as_of``: the balance at a random instant of the history so far;
- ``statement_page``: 50 lines from a random instant (``since``);
- ``statement_next_page``: the 50 after those, following the page's cursor;
- ``community_accounts``: a community's 101 accounts with their balances;
- ``all_accounts``: all 1,010 accounts with balances (two pages of at most 1,000).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from typing import Any

from api.app import build_ledger
from bench.databases import Databases
from bench.measure import latency, now, rate, say
from bench.server import Client, Server, create_key
from bench.workload import Federation, chunks
from ledger import repository as repo
from ledger.database import make_engine, unit_of_work
from ledger.service import Ledger, utc_now

STATEMENT_LIMIT = 50
COMMUNITY_LIMIT = 200
WARMUP = 20
READS = (
    "balance",
    "balance_as_of",
    "statement_page",
    "statement_next_page",
    "community_accounts",
    "all_accounts",
)


def run(
    databases: Databases,
    backend: str,
    federation: Federation,
    sizes: dict[str, int],
    samples: int,
    http_samples: int,
    batch_size: int,
    measure: bool = True,
) -> tuple[dict[str, Any], str]:
    """Grow and measure; returns the figures and the URL of the grown database."""
    url = databases.clone(backend, "reads")
    engine = make_engine(url)
    ledger = build_ledger(engine)
    key = create_key(url) if measure and http_samples else None
    server: Server | None = None  # one server for both sizes; it idles while history grows
    result: dict[str, Any] = {}
    history_start = utc_now()
    posted = 0
    try:
        for label, size in sizes.items():
            say(
                f"reads {backend}: growing history to {size:,} postings in batches of "
                f"{batch_size:,}"
            )
            build = _grow(ledger, federation, posted, size, batch_size)
            posted = size
            window = (history_start, utc_now())
            with unit_of_work(engine, write=False) as connection:
                build["history_rows"] = repo.count_entries(connection)
            build["database_bytes"] = databases.size_bytes(backend, "reads")
            figures: dict[str, Any] = {"postings": size, "build": build}
            if measure:
                plan = _plan(federation, window, samples, random.Random(size))
                say(f"reads {backend} at {size:,}: {samples:,} samples per read in-process")
                figures["in_process"] = _in_process(ledger, plan)
                if key is not None:
                    say(f"reads {backend} at {size:,}: {http_samples:,} samples per read over HTTP")
                    server = server or Server(url, 1, databases.scratch, f"reads_{backend}")
                    figures["http"] = _over_http(server.port, key, plan[: http_samples + WARMUP])
                    figures["server_memory"] = server.peak_memory()
            result[label] = figures
    finally:
        if server is not None:
            server.stop()
        engine.dispose()
    return result, url


def _grow(
    ledger: Ledger, federation: Federation, start: int, stop: int, batch_size: int
) -> dict[str, Any]:
    refused, elapsed = 0, 0.0
    for chunk in chunks(start, stop, batch_size):
        drafts = [federation.draft(transfer) for transfer in chunk]
        before = now()
        refused += sum(o.error is not None for o in ledger.post_transactions(drafts))
        elapsed += now() - before
    return {
        "transfers": stop - start,
        "seconds": elapsed,
        "tps": rate(stop - start, elapsed),
        "refused": refused,
    }


def _plan(
    federation: Federation, window: tuple[dt.datetime, dt.datetime], count: int, rng: random.Random
) -> list[dict[str, Any]]:
    """The arguments of every sample, drawn before anything is timed."""
    first, last = window
    span = (last - first).total_seconds()

    def instant(fraction: float) -> dt.datetime:
        return first + dt.timedelta(seconds=span * fraction)

    return [
        {
            "account_id": rng.choice(federation.member_ids),
            "as_of": instant(rng.random()),
            # Early enough that a full page usually follows it.
            "since": instant(rng.random() * 0.95),
            "community": rng.choice(federation.communities),
        }
        for _ in range(count + WARMUP)
    ]


def _timed(
    samples: dict[str, list[float]], name: str, call: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    before = now()
    value = call(*args, **kwargs)
    samples[name].append(now() - before)
    return value


def _in_process(ledger: Ledger, plan: list[dict[str, Any]]) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in READS}
    rows = 0
    for number, p in enumerate(plan):
        if number == WARMUP:
            samples = {name: [] for name in READS}
            rows = 0
        account = p["account_id"]
        _timed(samples, "balance", ledger.balance, account)
        _timed(samples, "balance_as_of", ledger.balance, account, as_of=p["as_of"])
        page = _timed(
            samples,
            "statement_page",
            ledger.statement,
            account,
            since=p["since"],
            limit=STATEMENT_LIMIT,
        )
        rows += len(page.items)
        if page.next_cursor is not None:
            _timed(
                samples,
                "statement_next_page",
                ledger.statement,
                account,
                cursor=page.next_cursor,
                limit=STATEMENT_LIMIT,
            )
        _timed(
            samples,
            "community_accounts",
            ledger.list_accounts,
            community=p["community"],
            limit=COMMUNITY_LIMIT,
        )
        if number % 10 == 0:  # the whole federation is slower; fewer samples do
            _timed(samples, "all_accounts", _all_accounts, ledger)
    figures = {name: latency(values) for name, values in samples.items()}
    figures["statement_page"]["rows_mean"] = rows / max(1, len(samples["statement_page"]))
    return figures


def _all_accounts(ledger: Ledger) -> int:
    page = ledger.list_accounts(limit=1000)
    count = len(page.items)
    while page.next_cursor is not None:
        page = ledger.list_accounts(cursor=page.next_cursor, limit=1000)
        count += len(page.items)
    return count


def _rfc3339(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _over_http(port: int, key: str, plan: list[dict[str, Any]]) -> dict[str, Any]:
    client = Client(port, key)
    samples: dict[str, list[float]] = {name: [] for name in READS}
    failures: list[str] = []

    def get(name: str, path: str) -> Any:
        status, payload = _timed(samples, name, client.call, "GET", path)
        if status != 200:
            failures.append(f"{name}: {status} {payload[:200]!r}")
            return {}
        return json.loads(payload)

    for number, p in enumerate(plan):
        if number == WARMUP:
            samples = {name: [] for name in READS}
        account = p["account_id"]
        base = f"/v1/accounts/{account}"
        get("balance", f"{base}/balance")
        get("balance_as_of", f"{base}/balance?as_of={_rfc3339(p['as_of'])}")
        page = get(
            "statement_page",
            f"{base}/statement?since={_rfc3339(p['since'])}&limit={STATEMENT_LIMIT}",
        )
        if page.get("next_cursor"):
            get(
                "statement_next_page",
                f"{base}/statement?cursor={page['next_cursor']}&limit={STATEMENT_LIMIT}",
            )
        get(
            "community_accounts",
            f"/v1/accounts?community={p['community']}&limit={COMMUNITY_LIMIT}",
        )
        if number % 10 == 0:
            _timed(samples, "all_accounts", _all_accounts_http, client, failures)
    client.close()
    figures: dict[str, Any] = {name: latency(values) for name, values in samples.items()}
    figures["failures"] = len(failures)
    figures["first_failure"] = failures[0] if failures else None
    return figures


def _all_accounts_http(client: Client, failures: list[str]) -> int:
    path, count = "/v1/accounts?limit=1000", 0
    while True:
        status, payload = client.call("GET", path)
        if status != 200:
            failures.append(f"all_accounts: {status} {payload[:200]!r}")
            return count
        page = json.loads(payload)
        count += len(page["items"])
        if not page["next_cursor"]:
            return count
        path = f"/v1/accounts?limit=1000&cursor={page['next_cursor']}"
