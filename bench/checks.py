"""``heartleaf verify`` on the large history, and ``heartleaf demo`` from empty.

Both run as the commands a user types, in a child process, so their time and peak
memory are theirs alone. Peak memory is the child's ``VmHWM`` (its high-water resident
set), read from ``/proc`` every 20 ms until it exits: ``ru_maxrss`` from ``wait4`` would not
do, because Linux carries the parent's high-water mark across fork and exec, so every child
of this (large) process would report at least the benchmark's own size. The baseline is
the peak memory of a child that imports the same modules and does nothing, so the verify
figure can be read as "interpreter and libraries" plus "what verifying costs".
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import now, say, status_kib
from bench.server import environment, heartleaf_command
from bench.workload import Scratch


def _run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``command``; its wall time, exit status, peak RSS, stdout and stderr."""
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        started = now()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=errors)
        peak_kib = 0
        while True:
            pid, status = os.waitpid(process.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, status_kib(process.pid, "VmHWM") or 0)
            time.sleep(0.02)
        elapsed = now() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        errors.seek(0)
        return {
            "seconds": elapsed,
            "exit_status": process.returncode,
            "peak_rss_mib": peak_kib / 1024,
            "stdout": output.read().decode(errors="replace"),
            "stderr": errors.read().decode(errors="replace"),
        }


def verify(database_url: str, postings: int, scratch: Scratch) -> dict[str, Any]:
    say(f"verify: heartleaf verify --progress on {postings:,} postings")
    env = environment(database_url, scratch)
    run = _run([*heartleaf_command(), "verify", "--progress"], env)
    baseline = _baseline_rss(sys.executable)
    stderr = run.pop("stderr")
    run.pop("stdout")
    return {
        "postings": postings,
        **run,
        "sound": run["exit_status"] == 0,
        "progress_updates": stderr.count("\r"),
        "last_line": stderr.strip().splitlines()[-1] if stderr.strip() else "",
        "baseline_rss_mib": baseline,
    }


@functools.cache
def _baseline_rss(python: str) -> float:
    """Peak RSS of an interpreter that imports what ``heartleaf verify`` imports (once)."""
    command = [python, "-c", "import api.cli, ledger.verify, migrations"]
    return float(_run(command, dict(os.environ))["peak_rss_mib"])


def demo(scratch: Scratch) -> dict[str, Any]:
    """``heartleaf demo`` on an empty SQLite database (after ``heartleaf db upgrade``)."""
    if importlib.util.find_spec("api.demo") is None:
        return {"skipped": "not built yet: api/demo.py, which `heartleaf demo` runs, is missing"}
    say("demo: heartleaf db upgrade, then heartleaf demo, on an empty SQLite database")
    with tempfile.TemporaryDirectory(prefix="bench-demo-", dir=scratch.root) as directory:
        url = f"sqlite:///{Path(directory) / 'demo.db'}"
        env = {**environment(url, scratch), "HEARTLEAF_DATA_DIR": directory}
        upgrade = _run([*heartleaf_command(), "db", "upgrade"], env)
        seeded = _run([*heartleaf_command(), "demo"], env)
    if seeded["exit_status"] != 0:
        return {
            "failed": seeded["stderr"].strip().splitlines()[-1:] or ["(no output)"],
            "seconds": seeded["seconds"],
        }
    return {
        "upgrade_seconds": upgrade["seconds"],
        "seconds": seeded["seconds"],
        "peak_rss_mib": seeded["peak_rss_mib"],
        "seeded": _summary(seeded["stdout"]),
    }


def _summary(stdout: str) -> dict[str, str]:
    """The "Demo federation:" lines ``heartleaf demo`` prints (never the keys above them)."""
    _keys, _, summary = stdout.partition("Demo federation:")
    fields = (line.strip().partition(": ") for line in summary.splitlines() if ": " in line)
    return {name: value for name, _, value in fields}
