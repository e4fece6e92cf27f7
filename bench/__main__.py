"""``python -m bench``: run the benchmark, print the tables, write the JSON.

    python -m bench                      # full: N = 100,000, reads at 10,000 and 1,000,000
    python -m bench --quick              # small sizes, peers at N = 1,000; under two minutes
    python -m bench --sizes tiny --no-peers --output /tmp/b.json   # seconds: what the test runs
    python -m bench --no-peers --only posting,http
    python -m bench --peers naive                                  # no optional peer
    python -m bench --peers-results bench/.peers/peers-100000      # peers of an earlier run
    python -m bench --history-large 200000 --reads-backends sqlite

Sections: posting (in-process), http, reads, verify (needs the large history, built as in
reads), demo, conversions, reciprocity (the matrix for 50 communities and a clearing proposal
on 100 communities with 2,000 obligations), peers (the naive ceiling, which is the
benchmark's own, and the optional django-hordak and pgledger: see ``bench.peers``; the
summary names an optional peer that is absent, and why). Every section appears in the
JSON, with ``skipped`` when it did not run.
Figures go to bench/results/<timestamp>-<sizes>.json (gitignored) with the printed tables
beside it as .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench import checks, conversions, over_http, peers, posting, reads, reciprocity, report
from bench.databases import BACKENDS, DEFAULT_PREFIX, Databases
from bench.measure import load_average, now, say
from bench.workload import BENCH_DIR, PRIVATE_DIR, REPOSITORY_DIR, Scratch, load_workload
from ledger.service import BATCH_MAX

SECTIONS = (
    "posting",
    "http",
    "reads",
    "verify",
    "demo",
    "conversions",
    "reciprocity",
    "peers",
)
HTTP_CONFIGS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))
NOT_SELECTED = {"skipped": "not selected (--only)"}
# Sizes: full is issue 7's; quick runs in CI in under two minutes; tiny is for the test.
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "n": 100_000,
        "batch_size": BATCH_MAX,
        "history_small": 10_000,
        "history_large": 1_000_000,
        "http_singles": 8_000,
        "http_batches": 4,
        "samples": 2_000,
        "http_samples": 500,
        "conversions": 2_000,
        "reciprocity_communities": 50,
        "reciprocity_payments": 50_000,
        "reciprocity_days": 30,
        "reciprocity_samples": 200,
        "clearing_samples": 10,
        "clearing_communities": 100,
        "clearing_obligations": 2_000,
        "reads_backends": "sqlite,postgresql",
    },
    "quick": {
        "n": 1_000,
        "batch_size": BATCH_MAX,
        "history_small": 2_000,
        "history_large": 20_000,
        "http_singles": 120,
        "http_batches": 1,
        "samples": 200,
        "http_samples": 50,
        "conversions": 50,
        "reciprocity_communities": 50,
        "reciprocity_payments": 4_900,
        "reciprocity_days": 10,
        "reciprocity_samples": 50,
        "clearing_samples": 5,
        "clearing_communities": 100,
        "clearing_obligations": 2_000,
        "reads_backends": "sqlite",
    },
    "tiny": {
        "n": 200,
        "batch_size": 100,
        "history_small": 200,
        "history_large": 1_000,
        "http_singles": 24,
        "http_batches": 1,
        "samples": 20,
        "http_samples": 10,
        "conversions": 10,
        "reciprocity_communities": 20,
        "reciprocity_payments": 380,
        "reciprocity_days": 3,
        "reciprocity_samples": 10,
        "clearing_samples": 2,
        "clearing_communities": 40,
        "clearing_obligations": 400,
        "reads_backends": "sqlite",
    },
}


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Heartleaf's benchmark beside the peers' (issue 7). Reports; asserts "
        "nothing about time.",
    )
    parser.add_argument(
        "--sizes", choices=sorted(SIZES), help="preset sizes (default full; --quick is quick)"
    )
    parser.add_argument("--quick", action="store_true", help="the same as --sizes quick (CI)")
    parser.add_argument("--no-peers", action="store_true", help="run no peer at all")
    parser.add_argument(
        "--peers",
        default=",".join(peers.PEERS),
        help=f"the peers to run, comma-separated (default {','.join(peers.PEERS)}); an "
        "optional one whose material is missing is reported absent",
    )
    parser.add_argument(
        "--peers-results",
        type=Path,
        metavar="DIR",
        help="read the peers' JSON from an earlier run's peers-N folder instead of running them",
    )
    parser.add_argument(
        "--n", type=int, help="workload transfers for posting and the peers (full 100,000)"
    )
    parser.add_argument(
        "--single-n", type=int, help="cap on in-process single transfers (default: N)"
    )
    parser.add_argument(
        "--batch-size", type=int, help=f"transfers per batch call (default {BATCH_MAX:,})"
    )
    parser.add_argument("--history-small", type=int, help="small read history, postings")
    parser.add_argument("--history-large", type=int, help="large read history, postings")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SECTION",
        help=f"run only these sections (comma-separated or repeated): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="databases for posting, HTTP, exchange"
    )
    parser.add_argument("--reads-backends", help="databases for reads and verify")
    parser.add_argument(
        "--http-singles",
        type=int,
        help="transfers per single-transfer HTTP phase for 8 and 32 clients; 1 client "
        "posts a quarter",
    )
    parser.add_argument("--http-batches", type=int, help="batches per HTTP server")
    parser.add_argument("--samples", type=int, help="in-process samples per read")
    parser.add_argument("--http-samples", type=int, help="HTTP samples per read")
    parser.add_argument("--conversions", type=int, help="conversions per backend")
    parser.add_argument(
        "--reciprocity-communities", type=int, help="communities of the matrix (full 50)"
    )
    parser.add_argument(
        "--reciprocity-payments",
        type=int,
        help="payments between the matrix's communities (at least one per ordered pair)",
    )
    parser.add_argument(
        "--reciprocity-days", type=int, help="UTC days the matrix's payments are spread over"
    )
    parser.add_argument("--reciprocity-samples", type=int, help="matrix calls per figure")
    parser.add_argument(
        "--clearing-samples", type=int, help="clearing proposals (and set-offs) per backend"
    )
    parser.add_argument("--clearing-communities", type=int, help="communities to clear (100)")
    parser.add_argument(
        "--clearing-obligations", type=int, help="obligations between them (full 2,000)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "HEARTLEAF_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an administrative PostgreSQL URL; the bench databases are made beside it",
    )
    parser.add_argument(
        "--database-prefix",
        default=DEFAULT_PREFIX,
        help=f"name prefix of the PostgreSQL databases (default {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=PRIVATE_DIR,
        help="directory for SQLite databases, peers' figures and logs (default bench/.peers)",
    )
    parser.add_argument("--output", type=Path, help="the JSON file to write")
    parser.add_argument(
        "--bare-ledger",
        action="store_true",
        help="leave the federation's exchange unconfigured: no reciprocity recorded on posts",
    )
    parser.add_argument(
        "--keep-databases", action="store_true", help="leave the bench databases behind"
    )
    args = parser.parse_args(argv)
    if args.quick and args.sizes not in (None, "quick"):
        parser.error("--quick is --sizes quick")
    args.sizes = "quick" if args.quick else (args.sizes or "full")
    args.quick = args.sizes != "full"
    for name, value in SIZES[args.sizes].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.single_n = min(args.single_n or args.n, args.n)
    args.sections = set(_list(",".join(args.only))) if args.only else set(SECTIONS)
    if args.no_peers:
        args.sections.discard("peers")
    unknown = args.sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    named = _list(args.peers)
    if set(named) - set(peers.PEERS):
        parser.error(f"unknown peer(s): {', '.join(sorted(set(named) - set(peers.PEERS)))}")
    args.peers = [] if args.no_peers else [p for p in peers.PEERS if p in named]
    if not args.peers:
        args.sections.discard("peers")
    args.backends = [b for b in _list(args.backends) if b in BACKENDS]
    args.reads_backends = [b for b in _list(args.reads_backends) if b in BACKENDS]
    return args


def _git() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPOSITORY_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPOSITORY_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{f' + {len(changed)} changed files' if changed else ''}"


def _guarded(results: dict[str, Any], path: Sequence[str], work: Callable[[], Any]) -> Any:
    """Run one part; a failure is recorded where its figures would be and the run goes on."""
    try:
        value = work()
    except Exception as error:
        traceback.print_exc()
        value = {"error": f"{type(error).__name__}: {error}"}
    _put(results, path, value)
    return value


def _put(results: dict[str, Any], path: Sequence[str], value: Any) -> None:
    target = results
    for step in path[:-1]:
        target = target.setdefault(step, {})
    target[path[-1]] = value


class _Timer:
    """Wall time and load average per section, so a noisy stretch shows where it was."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.sections: dict[str, Any] = results["meta"].setdefault("sections", {})

    def __call__(self, name: str, work: Callable[[], None]) -> None:
        started = now()
        try:
            work()
        finally:
            self.sections[name] = {
                "seconds": round(now() - started, 1),
                "load_average_after": load_average(),
            }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    # A terminated run still drops its databases: SIGTERM unwinds like an exception.
    signal.signal(signal.SIGTERM, lambda _number, _frame: sys.exit(143))
    started = now()
    scratch = Scratch(args.scratch.resolve()).make()
    databases = Databases(
        args.postgres_url, scratch, args.database_prefix, exchange=not args.bare_ledger
    )
    postgres_problem = databases.postgres_problem()
    results: dict[str, Any] = {
        "meta": {
            "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "sizes": args.sizes,
            "quick": args.quick,
            "argv": list(argv if argv is not None else sys.argv[1:]),
            "cpus": os.cpu_count(),
            "load_average_start": load_average(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "postgresql": postgres_problem or databases.server_version(),
            "git": _git(),
            "machine": platform.platform(),
        },
        "config": {
            "n": args.n,
            "single_n": args.single_n,
            "batch_size": args.batch_size,
            "history_small": args.history_small,
            "history_large": args.history_large,
            "http_singles": args.http_singles,
            "http_batches": args.http_batches,
            "samples": args.samples,
            "http_samples": args.http_samples,
            "conversions": args.conversions,
            "reciprocity_communities": args.reciprocity_communities,
            "reciprocity_payments": args.reciprocity_payments,
            "reciprocity_days": args.reciprocity_days,
            "reciprocity_samples": args.reciprocity_samples,
            "clearing_samples": args.clearing_samples,
            "clearing_communities": args.clearing_communities,
            "clearing_obligations": args.clearing_obligations,
            "sections": sorted(args.sections),
            "backends": args.backends,
            "reads_backends": args.reads_backends,
            "exchange_configured": not args.bare_ledger,
            "peers": args.peers if "peers" in args.sections else [],
        },
    }
    if postgres_problem is not None:
        say(f"{postgres_problem}; PostgreSQL runs are skipped")
    timer = _Timer(results)
    workload = load_workload(args.n)
    try:
        _heartleaf(args, databases, workload, results, timer, postgres_problem)
    finally:
        if not args.keep_databases:
            databases.drop_all()
    timer("peers", lambda: _peers(args, scratch, results, postgres_problem))
    results["comparisons"] = report.comparisons(results)
    results["targets"] = report.targets(results)
    results["meta"]["load_average_end"] = load_average()
    results["meta"]["seconds"] = round(now() - started, 1)
    output = args.output or (
        BENCH_DIR / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.sizes}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1, default=str))
    rendered = report.render(results)
    output.with_suffix(".md").write_text(rendered + "\n")
    print(rendered)
    print(
        f"\nFigures written to {_shown(output)} (tables: {_shown(output.with_suffix('.md'))}); "
        f"the run took {results['meta']['seconds']:.0f} s."
    )
    broken = _errors(results)
    if broken:
        # The benchmark's own parts must not rot (CI runs --quick): say which broke and fail.
        # That includes the naive ceiling; an optional peer that failed is marked "failed"
        # rather than "error", and shows in the report only.
        print(f"\nParts of the benchmark failed: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


def _errors(value: Any, path: str = "") -> list[str]:
    """Where the run recorded an error (a part that raised), as dotted paths."""
    if not isinstance(value, dict):
        return []
    found = [path.lstrip(".")] if "error" in value else []
    for key, item in value.items():
        found += _errors(item, f"{path}.{key}")
    return found


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPOSITORY_DIR))
    except ValueError:
        return str(path)


def _peers(
    args: argparse.Namespace,
    scratch: Scratch,
    results: dict[str, Any],
    postgres_problem: str | None,
) -> None:
    if args.peers_results is not None:
        results["peers"] = peers.collect(args.peers_results.resolve())
    elif "peers" in args.sections:
        setting = peers.Setting(
            n=args.n,
            scratch=scratch,
            postgres_url=args.postgres_url,
            prefix=args.database_prefix,
            postgres_problem=postgres_problem,
            selected=args.peers,
        )
        _guarded(results, ["peers"], lambda: peers.run(setting))
    else:
        results["peers"] = {"skipped": "peers not run (--no-peers, --peers or --only)"}


def _heartleaf(
    args: argparse.Namespace,
    databases: Databases,
    workload: dict[str, Any],
    results: dict[str, Any],
    timer: _Timer,
    postgres_problem: str | None,
) -> None:
    sections = args.sections
    unavailable = {"postgresql": postgres_problem} if postgres_problem else {}

    def template(backend: str) -> bool:
        """The backend's template, built on first use; False when it cannot be had."""
        if backend in unavailable:
            return False
        if backend not in databases.federations:
            say(f"template {backend}: migrations, 10 communities, 1,010 accounts, funding")
            built = _guarded(results, ["templates", backend], lambda: _template(databases, backend))
            if "error" in built:
                unavailable[backend] = f"the template could not be built: {built['error']}"
                return False
        return True

    def each_backend(
        section: str, work: Callable[[str], Any], *, needs_template: bool = True
    ) -> None:
        if section not in sections:
            results[section] = NOT_SELECTED
            return
        results[section] = {}
        for backend in args.backends:
            if backend in unavailable or (needs_template and not template(backend)):
                results[section][backend] = {"skipped": unavailable[backend]}
                continue
            _guarded(results, [section, backend], partial(work, backend))

    def _template(databases: Databases, backend: str) -> dict[str, Any]:
        started = now()
        federation = databases.template(backend, workload)
        return {
            "seconds": now() - started,
            "accounts": len(federation.member_ids) + len(federation.issuance_ids),
        }

    timer(
        "posting",
        lambda: each_backend(
            "posting",
            lambda b: posting.run(
                databases,
                b,
                databases.federations[b],
                args.single_n,
                max(args.n, args.batch_size),
                args.batch_size,
            ),
        ),
    )

    def http() -> None:
        if "http" not in sections:
            results["http"] = NOT_SELECTED
            return
        results["http"] = {}
        singles = {1: max(1, args.http_singles // 4), 8: args.http_singles, 32: args.http_singles}
        for backend, workers in HTTP_CONFIGS:
            if backend not in args.backends:
                continue
            name = f"{backend}_{workers}w"
            if not template(backend):
                results["http"][name] = {"skipped": unavailable[backend]}
                continue
            _guarded(
                results,
                ["http", name],
                partial(
                    over_http.run,
                    databases,
                    backend,
                    workers,
                    databases.federations[backend],
                    singles,
                    args.http_batches * args.batch_size,
                    args.batch_size,
                ),
            )

    timer("http", http)

    def reads_and_verify() -> None:
        if not sections & {"reads", "verify"}:
            results["reads"] = results["verify"] = NOT_SELECTED
            return
        results["reads"] = {} if "reads" in sections else NOT_SELECTED
        results["verify"] = {} if "verify" in sections else NOT_SELECTED
        for backend in args.reads_backends:
            if not template(backend):
                for section in ("reads", "verify"):
                    if section in sections:
                        results[section][backend] = {"skipped": unavailable[backend]}
                continue
            _guarded(
                results,
                ["reads", backend] if "reads" in sections else ["reads_build", backend],
                partial(_reads, args, databases, backend, results),
            )

    timer("reads and verify", reads_and_verify)

    def demo() -> None:
        if "demo" in sections:
            _guarded(results, ["demo"], lambda: checks.demo(databases.scratch))
        else:
            results["demo"] = NOT_SELECTED

    timer("demo", demo)
    timer(
        "conversions",
        lambda: each_backend(
            "conversions",
            lambda b: conversions.run(databases, b, args.conversions),
            needs_template=False,
        ),
    )
    timer(
        "reciprocity",
        lambda: each_backend(
            "reciprocity",
            lambda b: reciprocity.run(
                databases,
                b,
                payments=args.reciprocity_payments,
                days=args.reciprocity_days,
                samples=args.reciprocity_samples,
                clearing_samples=args.clearing_samples,
                batch_size=args.batch_size,
                communities=args.reciprocity_communities,
                clearing_communities=args.clearing_communities,
                obligations=args.clearing_obligations,
            ),
            needs_template=False,
        ),
    )


def _reads(
    args: argparse.Namespace, databases: Databases, backend: str, results: dict[str, Any]
) -> dict[str, Any]:
    measure = "reads" in args.sections
    sizes = (
        {"small": args.history_small, "large": args.history_large}
        if measure
        else {"large": args.history_large}
    )
    figures, url = reads.run(
        databases,
        backend,
        databases.federations[backend],
        sizes,
        args.samples,
        args.http_samples,
        args.batch_size,
        measure=measure,
    )
    if "verify" in args.sections:
        _guarded(
            results,
            ["verify", backend],
            lambda: checks.verify(url, args.history_large, databases.scratch),
        )
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
