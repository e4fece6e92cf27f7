"""Small measuring tools: latency summaries, peak memory of processes, progress lines."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

now = time.perf_counter


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with ``fraction`` of them at or below."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency(samples_seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p99/mean/max in milliseconds of a list of durations in seconds."""
    if not samples_seconds:
        return {"n": 0}
    return {
        "n": len(samples_seconds),
        "p50_ms": percentile(samples_seconds, 0.50) * 1000,
        "p99_ms": percentile(samples_seconds, 0.99) * 1000,
        "mean_ms": sum(samples_seconds) / len(samples_seconds) * 1000,
        "max_ms": max(samples_seconds) * 1000,
    }


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def status_kib(pid: int, field: str) -> int | None:
    """A ``VmHWM``/``VmRSS``-style field of /proc/<pid>/status, in KiB (None if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (uvicorn's workers are children of its supervisor)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        ppid = status_kib(int(entry.name), "PPid")
        if ppid is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(parents.get(pid, []))
    return found


def peak_rss_mib(pids: Sequence[int]) -> dict[str, Any]:
    """Peak resident memory (VmHWM) per process of a tree: the largest and the sum."""
    peaks = {pid: status_kib(pid, "VmHWM") for pid in pids}
    known = {pid: kib / 1024 for pid, kib in peaks.items() if kib is not None}
    return {
        "per_process_mib": {str(pid): round(mib, 1) for pid, mib in known.items()},
        "max_process_mib": round(max(known.values()), 1) if known else None,
        "total_mib": round(sum(known.values()), 1) if known else None,
    }


def say(message: str) -> None:
    """Progress for whoever watches; the tables go to stdout at the end."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
