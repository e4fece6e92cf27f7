"""The peers, measured in the same run on the same workload (``bench.generator``).

- The naive ceiling (``bench.naive``) is the benchmark's own: it always runs (its
  PostgreSQL runs when PostgreSQL answers), in the interpreter running the benchmark, and a
  run of it that fails is a failure of the benchmark.
- django-hordak (``bench.hordak``) is optional: it needs Django and django-hordak from the
  package index, in an environment of its own (``bench/.peers/venv``, made by ``make
  bench-peers``; ``HEARTLEAF_HORDAK_PYTHON`` names another interpreter that has them).
- pgledger (``bench.pgledger``) is optional: it needs pgledger's SQL, which is another
  project's, from ``HEARTLEAF_PGLEDGER_SQL`` or ``../shared/peers/pgledger`` beside the
  repository.

An optional peer whose material is not there is *absent*: the results say which and why
(``absent``), the report's summary names it, and nothing fails. One that is there but fails
shows as ``failed`` with the tail of its log. Each run is a process of its own (so one
peer's memory and imports never weigh on another's figures) writing ``OUT/<run>.json`` and
``OUT/<run>.log`` under the scratch directory's ``peers-<N>``.

``--peers-results DIR`` reads the JSON of an earlier run's ``peers-<N>`` instead of
running them; the report then says the figures are not from the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import pgledger
from bench.measure import load_average, now, say
from bench.workload import PRIVATE_DIR, REPOSITORY_DIR, Scratch

PEERS = ("naive", "hordak", "pgledger")
NAMES = {"naive": "naive ceiling", "hordak": "django-hordak", "pgledger": "pgledger"}
RUNS = {
    "naive_sqlite_single": "naive",
    "naive_sqlite_batch": "naive",
    "naive_sqlite_bulk": "naive",
    "naive_pg_single": "naive",
    "naive_pg_batch": "naive",
    "naive_pg_bulk": "naive",
    "hordak_pg_single": "hordak",
    "hordak_pg_bulk": "hordak",
    "pgledger_pg_single": "pgledger",
}
HORDAK_PYTHON = PRIVATE_DIR / "venv" / "bin" / "python"
HORDAK_IMPORTS = "import django, djmoney, hordak, mptt, psycopg2"
SHARED_PGLEDGER = REPOSITORY_DIR.parent / "shared" / "peers" / "pgledger"
TIMEOUT = 3 * 3600  # seconds for one peer run: the full N on a slow hour stays far below


@dataclass(frozen=True, slots=True)
class Setting:
    """What the peers' runs need from the benchmark's arguments."""

    n: int
    scratch: Scratch
    postgres_url: str
    prefix: str  # of the PostgreSQL databases, as the benchmark's own
    postgres_problem: str | None  # why PostgreSQL cannot be used, or None
    selected: Sequence[str] = PEERS


def hordak_python() -> Path:
    return Path(os.environ.get("HEARTLEAF_HORDAK_PYTHON") or HORDAK_PYTHON)


def pgledger_sql() -> Path:
    return Path(os.environ.get("HEARTLEAF_PGLEDGER_SQL") or SHARED_PGLEDGER)


def absence(peer: str) -> str | None:
    """Why the optional ``peer`` cannot run here (its outside material is missing), or None."""
    if peer == "hordak":
        python = hordak_python()
        if not python.exists():
            return (
                f"not installed: Django and django-hordak come from the package index, and "
                f"{python} is missing (`make bench-peers` installs them there)"
            )
        check = subprocess.run(
            [str(python), "-c", HORDAK_IMPORTS],
            cwd=REPOSITORY_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            last = (check.stderr.strip().splitlines() or ["?"])[-1]
            return f"{python} lacks its packages ({last}; `make bench-peers` installs them)"
        return None
    if peer == "pgledger":
        directory = pgledger_sql()
        missing = pgledger.missing_files(directory)
        if missing:
            return (
                f"its SQL is another project's, not Heartleaf's, and {directory} lacks "
                f"{', '.join(missing)} (HEARTLEAF_PGLEDGER_SQL names a folder that has them)"
            )
        return None
    return None


def _commands(setting: Setting, out: Path) -> dict[str, list[str]]:
    """Each run's command line, for the peers that are selected and present."""
    common = ["--n", str(setting.n), "--postgres-url", setting.postgres_url]
    commands: dict[str, list[str]] = {}
    for storage, backend in (("sqlite", "sqlite"), ("pg", "postgresql")):
        for mode in ("single", "batch", "bulk"):
            name = f"naive_{storage}_{mode}"
            commands[name] = [
                sys.executable,
                "-m",
                "bench.naive",
                "--backend",
                backend,
                "--mode",
                mode,
                "--sqlite-path",
                str(setting.scratch.sqlite / "naive.db"),
                "--database",
                f"{setting.prefix}naive",
                *common,
            ]
    for mode in ("single", "bulk"):
        commands[f"hordak_pg_{mode}"] = [
            str(hordak_python()),
            "-m",
            "bench.hordak",
            "--mode",
            mode,
            "--database",
            f"{setting.prefix}hordak",
            *common,
        ]
    commands["pgledger_pg_single"] = [
        sys.executable,
        "-m",
        "bench.pgledger",
        "--sql-dir",
        str(pgledger_sql()),
        "--database",
        f"{setting.prefix}pgledger",
        *common,
    ]
    return commands


def run(setting: Setting) -> dict[str, Any]:
    out = setting.scratch.root / f"peers-{setting.n}"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.json"):
        stale.unlink()
    absent = {
        NAMES[peer]: reason
        for peer in PEERS
        if peer in setting.selected and (reason := absence(peer)) is not None
    }
    runs: dict[str, Any] = {}
    started = now()
    for name, command in _commands(setting, out).items():
        peer = RUNS[name]
        if peer not in setting.selected:
            runs[name] = {"skipped": f"{NAMES[peer]} not selected (--peers)"}
        elif NAMES[peer] in absent:
            runs[name] = {"absent": absent[NAMES[peer]]}
        elif "_pg_" in name and setting.postgres_problem is not None:
            runs[name] = {"skipped": setting.postgres_problem}
        else:
            runs[name] = _run_one(name, [*command, "--out", str(out / f"{name}.json")], out)
    figures = {f["n"] for f in runs.values() if "n" in f}
    return {
        "out": str(out),
        "runs": runs,
        "absent": absent,
        "selected": list(setting.selected),
        "n": figures.pop() if len(figures) == 1 else setting.n,
        "seconds": now() - started,
        "same_run": True,
        "load_average_after": load_average(),
    }


def _run_one(name: str, command: list[str], out: Path) -> dict[str, Any]:
    log = out / f"{name}.log"
    say(f"peer run {name} (log {log})")
    with log.open("w") as output:
        try:
            done = subprocess.run(
                command,
                cwd=REPOSITORY_DIR,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=TIMEOUT,
                check=False,
            )
            status: int | str = done.returncode
        except subprocess.TimeoutExpired:
            status = f"timed out after {TIMEOUT} s"
    result = out / f"{name}.json"
    if status == 0 and result.exists():
        return _figures(result)
    tail = log.read_text(errors="replace").splitlines()[-5:]
    # The naive ceiling is the benchmark's own code: its failure is the benchmark's ("error").
    # An optional peer is another project's; its failure shows in the report only.
    key = "error" if RUNS[name] == "naive" else "failed"
    return {key: f"exit {status}; see {log}", "log_tail": tail}


def _figures(path: Path) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(path.read_text())
    figures.pop("lookup_samples_ms", None)
    return figures


def collect(out: Path) -> dict[str, Any]:
    """The figures of each peer run found in ``out`` (an earlier run's ``peers-<N>``)."""
    runs: dict[str, Any] = {}
    for name in RUNS:
        path = out / f"{name}.json"
        if path.exists():
            runs[name] = _figures(path)
        else:
            runs[name] = {"missing": f"no {path.name} in {out}"}
    ns = {figures.get("n") for figures in runs.values() if "n" in figures}
    return {
        "out": str(out),
        "runs": runs,
        "absent": {},
        "n": ns.pop() if len(ns) == 1 else None,
        "same_run": False,
    }
