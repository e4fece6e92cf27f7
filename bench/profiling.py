"""``python -m bench.profiling``: where a single in-process transfer's time goes.

    python -m bench.profiling                      # SQLite, 3,000 transfers, cProfile
    python -m bench.profiling --backend postgresql --n 2000
    python -m bench.profiling --batch              # one batch call of --n transfers instead
    python -m bench.profiling --plain              # no profiler (to run under py-spy)
    python -m bench.profiling --bare-ledger        # without the exchange: no reciprocity
    python -m bench.profiling --pages --n 300      # SQLite: pages each commit writes, by B-tree

Posts the first N transfers of the shared workload, one ``post_transaction`` each (or in
batches of up to 8,190), into a fresh clone of the benchmark's template, through the
ledger the service runs, exactly as ``bench.posting`` does. It prints the rate without a
profiler, then a cProfile of the same work: own time grouped by where it is spent
(SQLite's C calls, SQLAlchemy, ledger/service.py, …) and the functions with the most own
and cumulative time. cProfile inflates Python-heavy code; read the groups as proportions,
and confirm with a sampling profiler (``py-spy record -- python -m bench.profiling
--plain``) when it matters.

``--pages`` counts instead what a single transfer's commit writes on SQLite: the distinct
pages it appends to the write-ahead log, per table and index. With ``synchronous=FULL`` the
commit waits until every one of them is on disk, so on a slow disk this count, more than
any Python, sets the rate of single transfers. Counted with the log's automatic
checkpoints off, it grows the log by about 100 KiB per transfer.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sqlite3
import struct
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Engine, event

from api.app import build_ledger
from bench.databases import Databases
from bench.generator import stream
from bench.measure import now, say
from bench.workload import PRIVATE_DIR, Federation, Scratch, chunks, load_workload
from ledger.database import make_engine
from ledger.service import BATCH_MAX, Ledger

# Own time is grouped by the first of these that the function's file or name contains.
GROUPS = (
    ("commit (fsync)", ("'commit' of 'sqlite3", "'commit' of 'psycopg", "pq.PGconn")),
    ("driver: statements", ("of 'sqlite3.", "psycopg", "of '_sqlite3")),
    ("sqlalchemy", ("sqlalchemy",)),
    ("ledger/service.py", ("ledger/service.py",)),
    ("ledger/repository.py", ("ledger/repository.py",)),
    ("ledger/database.py", ("ledger/database.py",)),
    ("ledger/other", ("ledger/",)),
    ("exchange/ (reciprocity observer)", ("exchange/",)),
    ("hashing, json", ("hashlib", "json", "_sha256", "sha256")),
    ("datetime, dataclasses", ("datetime", "dataclasses", "replace")),
    ("the benchmark's loop", ("bench/",)),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--n", type=int, default=3_000, help="transfers (default 3,000)")
    parser.add_argument("--batch", action="store_true", help="batch calls instead of singles")
    parser.add_argument("--plain", action="store_true", help="no profiler, for py-spy")
    parser.add_argument(
        "--pages", action="store_true", help="SQLite: pages each single transfer's commit writes"
    )
    parser.add_argument(
        "--bare-ledger", action="store_true", help="no exchange configured: no reciprocity"
    )
    parser.add_argument("--top", type=int, default=25, help="functions to list (default 25)")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an administrative PostgreSQL URL",
    )
    args = parser.parse_args(argv)
    if args.pages and (args.backend != "sqlite" or args.batch):
        parser.error("--pages counts SQLite's log, one transfer per commit")
    scratch = Scratch(PRIVATE_DIR / "profiling").make()
    databases = Databases(
        args.postgres_url, scratch, "bench_profiling_", exchange=not args.bare_ledger
    )
    try:
        federation = databases.template(args.backend, load_workload(args.n))
        if args.pages:
            _print_pages(make_engine(databases.clone(args.backend, "pages")), federation, args.n)
            return 0
        runs = ("plain",) if args.plain else ("plain", "profiled")
        for run in runs:
            engine = make_engine(databases.clone(args.backend, run))
            ledger = build_ledger(engine)
            work = _work(ledger, federation, args.n, batch=args.batch)
            if run == "plain":
                started = now()
                work()
                elapsed = now() - started
                print(
                    f"{args.backend}, {args.n:,} transfers "
                    f"{'in batches' if args.batch else 'one per call'}: {elapsed:.2f} s, "
                    f"{args.n / elapsed:,.0f} transfers/s ({elapsed / args.n * 1e6:,.0f} µs "
                    "each), no profiler"
                )
            else:
                profile = cProfile.Profile()
                profile.runcall(work)
                _print_profile(profile, args.n, args.top)
            engine.dispose()
    finally:
        databases.drop_all()
    return 0


def _work(ledger: Ledger, federation: Federation, count: int, *, batch: bool) -> Callable[[], None]:
    if batch:
        batches = [[federation.draft(t) for t in chunk] for chunk in chunks(0, count, BATCH_MAX)]

        def post_batches() -> None:
            for drafts in batches:
                ledger.post_transactions(drafts)

        return post_batches
    drafts = [federation.draft(transfer) for transfer in stream(0, count)]

    def post_singles() -> None:
        for draft in drafts:
            ledger.post_transaction(draft)

    return post_singles


def _print_profile(profile: cProfile.Profile, count: int, top: int) -> None:
    stats = pstats.Stats(profile)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _calls, _primitive, own, _cumulative, _callers in entries.values())
    groups: dict[str, float] = defaultdict(float)
    for (filename, _line, function), (_c, _p, own, _cum, _callers) in entries.items():
        where = f"{filename}:{function}"
        group = next((g for g, needles in GROUPS if any(n in where for n in needles)), "other")
        groups[group] += own
    print(f"\ncProfile: {total:.2f} s of own time, {total / count * 1e6:,.0f} µs per transfer")
    print("| where the own time goes | µs per transfer | share |\n|---|---|---|")
    for group, own in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"| {group} | {own / count * 1e6:,.1f} | {own / total:.0%} |")
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(order).print_stats(top)
        lines = text.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        print(f"\nTop {top} by {order}:")
        print("\n".join(_shorten(line) for line in lines[start:] if line.strip()))


WAL_HEADER = 32
FRAME_HEADER = 24


def _print_pages(engine: Engine, federation: Federation, count: int) -> None:
    """Post ``count`` transfers one per commit and count the distinct pages each commit
    appended to the log (a frame per page; its header's first field is the page number),
    then name each page's table or index from SQLite's ``dbstat``."""
    event.listen(engine, "connect", lambda c, _record: c.execute("PRAGMA wal_autocheckpoint=0"))
    database = str(engine.url.database)
    log = database + "-wal"
    ledger = build_ledger(engine)
    with contextlib.closing(sqlite3.connect(database)) as connection:
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
    frame = FRAME_HEADER + page_size
    written: Counter[int] = Counter()
    for draft in (federation.draft(transfer) for transfer in stream(0, count)):
        start = max(os.path.getsize(log), WAL_HEADER) if os.path.exists(log) else WAL_HEADER
        ledger.post_transaction(draft)
        with open(log, "rb") as appended:
            appended.seek(start)
            frames = appended.read()
        written.update(
            {struct.unpack_from(">I", frames, at)[0] for at in range(0, len(frames), frame)}
        )
    engine.dispose()
    with contextlib.closing(sqlite3.connect(database)) as connection:
        owner = dict(connection.execute("SELECT pageno, name FROM dbstat"))
    by_tree: Counter[str] = Counter()
    for page, commits in written.items():
        by_tree[owner.get(page, "(freed since)")] += commits
    print(f"sqlite, {count:,} transfers one per commit: distinct pages each commit wrote")
    print("| table or index | pages per commit |\n|---|---|")
    for name, commits in by_tree.most_common():
        print(f"| {name} | {commits / count:.2f} |")
    print(f"| all | {sum(by_tree.values()) / count:.2f} |")


def _shorten(line: str) -> str:
    for prefix in (str(Path(__file__).resolve().parent.parent) + "/", "/usr/local/lib/python"):
        line = line.replace(prefix, "")
    return line.replace("site-packages/", "")


if __name__ == "__main__":
    say("profiling: building the template (not timed)")
    raise SystemExit(main())
