"""The peers, run by their own script in the same run: ``../shared/peers/run.sh OUT N``.

Their virtual environment lives in ``bench/.peers/venv`` (``VENV``), so after the first run
the install is a quick no-op; their workload files go to the scratch directory's ``data``
(``PEERS_DATA``), the same files Heartleaf's runs checked their stream against. Each peer
run writes ``OUT/<run>.json``; a run that failed leaves no JSON and shows up as missing.
What ``run.sh`` prints (pip's notes included) goes to ``OUT/run.log``.

``--peers-results DIR`` reads the JSON of an earlier ``run.sh DIR N`` instead of running
them; the report then says the figures are not from the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench.measure import load_average, now, say
from bench.workload import PEERS_DIR, PRIVATE_DIR, Scratch

RUNS = (
    "naive_sqlite_single",
    "naive_sqlite_batch",
    "naive_sqlite_bulk",
    "naive_pg_single",
    "naive_pg_batch",
    "naive_pg_bulk",
    "hordak_pg_single",
    "hordak_pg_bulk",
)


def run(n: int, scratch: Scratch) -> dict[str, Any]:
    out = scratch.root / f"peers-{n}"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.json"):
        stale.unlink()
    env = {**os.environ, "VENV": str(PRIVATE_DIR / "venv"), "PEERS_DATA": str(scratch.data)}
    log = out / "run.log"
    say(f"peers: {PEERS_DIR / 'run.sh'} {out} {n} (naive ceiling and django-hordak; log {log})")
    started = now()
    with log.open("w") as output:
        done = subprocess.run(
            ["bash", str(PEERS_DIR / "run.sh"), str(out), str(n)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    results = collect(out)
    results.update(
        {
            "n": n,
            "seconds": now() - started,
            "exit_status": done.returncode,
            "same_run": True,
            "load_average_after": load_average(),
        }
    )
    if done.returncode != 0:
        results["log_tail"] = log.read_text(errors="replace").splitlines()[-5:]
    return results


def collect(out: Path) -> dict[str, Any]:
    """The figures of each peer run found in ``out``."""
    runs: dict[str, Any] = {}
    for name in RUNS:
        path = out / f"{name}.json"
        if path.exists():
            figures = json.loads(path.read_text())
            figures.pop("lookup_samples_ms", None)
            runs[name] = figures
        else:
            runs[name] = {"missing": f"no {path.name}; see {out / (name + '.log')}"}
    ns = {figures.get("n") for figures in runs.values() if "n" in figures}
    return {
        "out": str(out),
        "runs": runs,
        "n": ns.pop() if len(ns) == 1 else None,
        "same_run": False,
    }
