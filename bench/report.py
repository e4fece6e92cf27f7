"""Tables for people and the targets of issue 7, from one run's figures.

Every comparison reads "Heartleaf ÷ peer" as a speed: for rates it is Heartleaf's rate over
the peer's, for durations the peer's duration over Heartleaf's, so above 1 always means
Heartleaf was faster on this run. Where issue 7 sets a target on that ratio, the row shows
it and whether this run met it. Absolute figures on a shared two-core machine are noisy;
the ratios from one run are what the issue compares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

TARGET_READS = ("balance", "balance_as_of", "statement_page")
READS = (
    "balance",
    "balance_as_of",
    "statement_page",
    "statement_next_page",
    "community_accounts",
    "all_accounts",
)
BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PEER_BACKEND = {"sqlite": "sqlite", "postgresql": "pg"}
TWO_WORKERS_NOTE = (
    "Two workers: uvicorn's supervisor binds the socket with proto 0, under which asyncio "
    "would leave TCP_NODELAY off (uvicorn issue #3149, ~40 ms per keep-alive request); "
    "the server runs on uvloop, which sets TCP_NODELAY itself, so these rows do not pay it."
)


def dig(figures: Any, *path: str) -> Any:
    """``figures[a][b]…`` or None when any step is missing."""
    value: Any = figures
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def number(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def milliseconds(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, aligned for the terminal and pasteable into the README."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _spread(figures: dict[str, Any]) -> str:
    return f"{milliseconds(figures.get('p50_ms'))} / {milliseconds(figures.get('p99_ms'))}"


def _ratio(ours: Any, theirs: Any, *, duration: bool = False) -> float | None:
    if not ours or not theirs:
        return None
    return float(theirs / ours if duration else ours / theirs)


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _why_not(value: Any) -> str | None:
    """The reason a part has no figures (skipped, error, not built), or None."""
    if not isinstance(value, dict):
        return "not run"
    for key in ("skipped", "error", "not_built"):
        if key in value:
            return f"{key.replace('_', ' ')}: {value[key]}"
    return None


# -- comparisons -------------------------------------------------------------------------


def comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each Heartleaf figure beside the comparable peer figure, with issue 7's target."""
    peers = dig(results, "peers", "runs") or {}
    rows: list[dict[str, Any]] = []

    def add(
        figure: str,
        ours: Any,
        unit: str,
        peer: str,
        field: str,
        *,
        duration: bool = False,
        target: float | None = None,
    ) -> None:
        theirs = dig(peers, peer, field)
        if ours is None and theirs is None:
            return
        speed = _ratio(ours, theirs, duration=duration)
        rows.append(
            {
                "figure": figure,
                "heartleaf": ours,
                "unit": unit,
                "peer": peer,
                "peer_value": theirs,
                "speed_vs_peer": speed,
                "target": target,
                "met": None if target is None or speed is None else speed >= target,
            }
        )

    for backend, name in BACKEND_NAMES.items():
        short = PEER_BACKEND[backend]
        single = dig(results, "posting", backend, "single", "tps")
        batch = dig(results, "posting", backend, "batch", "tps")
        add(
            f"in-process single, {name}",
            single,
            "transfers/s",
            f"naive_{short}_single",
            "post_tps",
            target=0.8,
        )
        if backend == "postgresql":
            add(
                f"in-process single, {name}",
                single,
                "transfers/s",
                "hordak_pg_single",
                "post_tps",
                target=2.0,
            )
            add(
                f"in-process single, {name}",
                single,
                "transfers/s",
                "pgledger_pg_single",
                "post_tps",
            )
        batch_label = f"in-process batches of {number(_batch_size(results))}, {name}"
        add(batch_label, batch, "transfers/s", f"naive_{short}_bulk", "post_tps", target=0.6)
        add(batch_label, batch, "transfers/s", f"naive_{short}_batch", "post_tps")
        if backend == "postgresql":
            add(batch_label, batch, "transfers/s", "hordak_pg_bulk", "post_tps", target=1.5)
    for http in (dig(results, "http") or {}).values():
        if not isinstance(http, dict) or "phases" not in http:
            continue
        short = PEER_BACKEND[http["backend"]]
        label = f"HTTP {BACKEND_NAMES[http['backend']]} {http['workers']}w"
        for clients in (1, 8, 32):
            add(
                f"{label}, single, {clients} clients",
                dig(http, "phases", f"single_{clients}_clients", "tps"),
                "transfers/s",
                f"naive_{short}_single",
                "post_tps",
            )
        add(
            f"{label}, batches of {number(dig(http, 'phases', 'batch', 'batch_size'))}",
            dig(http, "phases", "batch", "tps"),
            "transfers/s",
            f"naive_{short}_bulk",
            "post_tps",
        )
    for backend, name in BACKEND_NAMES.items():
        short = PEER_BACKEND[backend]
        large = dig(results, "reads", backend, "large", "in_process")
        if not large:
            continue
        size = number(dig(results, "reads", backend, "large", "postings"))
        balance = dig(large, "balance", "p50_ms")
        pg_peers = ("hordak_pg_single", "pgledger_pg_single") if backend != "sqlite" else ()
        for peer in (f"naive_{short}_single", *pg_peers):
            add(
                f"one balance p50, {name}, {size} postings",
                balance,
                "ms",
                peer,
                "lookup_median_ms",
                duration=True,
            )
        everyone = dig(large, "all_accounts", "p50_ms")
        community = dig(large, "community_accounts", "p50_ms")
        add(
            f"all 1,010 balances p50, {name}",
            everyone,
            "ms",
            f"naive_{short}_single",
            "all_balances_ms",
            duration=True,
        )
        for peer in ("hordak_pg_single", "hordak_pg_bulk"):
            add(
                f"all 1,010 balances p50, {name}",
                everyone,
                "ms",
                peer,
                "all_balances_ms",
                duration=True,
            )
            add(
                f"a community's 101 balances p50, {name}",
                community,
                "ms",
                peer,
                "all_balances_ms",
                duration=True,
            )
    return rows


def _batch_size(results: dict[str, Any]) -> Any:
    return dig(results, "config", "batch_size")


# -- targets ---------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's targets: what was measured, the bar, and whether it was cleared."""
    peers = dig(results, "peers", "runs") or {}
    rows: list[dict[str, Any]] = []

    def add(
        target: str,
        measured: Any,
        bar: float,
        *,
        at_most: bool = False,
        unit: str = "",
        note: str = "",
    ) -> None:
        met = None if measured is None else (measured <= bar if at_most else measured >= bar)
        rows.append(
            {
                "target": target,
                "measured": measured,
                "bar": bar,
                "at_most": at_most,
                "unit": unit,
                "met": met,
                "note": note,
            }
        )

    for backend, name in BACKEND_NAMES.items():
        short = PEER_BACKEND[backend]
        single = dig(results, "posting", backend, "single", "tps")
        batch = dig(results, "posting", backend, "batch", "tps")
        add(
            f"in-process single ≥ 0.8 × naive single, {name}",
            _ratio(single, dig(peers, f"naive_{short}_single", "post_tps")),
            0.8,
            unit="×",
        )
        add(
            f"in-process batches ≥ 0.6 × naive bulk, {name}",
            _ratio(batch, dig(peers, f"naive_{short}_bulk", "post_tps")),
            0.6,
            unit="×",
        )
        if backend == "sqlite":
            add("in-process batches ≥ 30,000/s, SQLite", batch, 30_000, unit="/s")
        else:
            add(
                "in-process single ≥ 2 × django-hordak single, PostgreSQL",
                _ratio(single, dig(peers, "hordak_pg_single", "post_tps")),
                2.0,
                unit="×",
            )
            add(
                "in-process batches ≥ 1.5 × django-hordak bulk, PostgreSQL",
                _ratio(batch, dig(peers, "hordak_pg_bulk", "post_tps")),
                1.5,
                unit="×",
            )
    http = dig(results, "http", "sqlite_1w") or {}
    add(
        "HTTP SQLite, 8 clients ≥ 1,000 transfers/s",
        dig(http, "phases", "single_8_clients", "tps"),
        1000,
        unit="/s",
    )
    add(
        "HTTP SQLite, 8 clients p99 < 50 ms",
        dig(http, "phases", "single_8_clients", "latency", "p99_ms"),
        50,
        at_most=True,
        unit="ms",
    )
    add(
        "HTTP SQLite, batches ≥ 20,000 transfers/s",
        dig(http, "phases", "batch", "tps"),
        20_000,
        unit="/s",
    )
    for backend, name in BACKEND_NAMES.items():
        reads = dig(results, "reads", backend)
        if not isinstance(reads, dict) or "large" not in reads:
            continue
        for where in ("in_process", "http"):
            add(
                f"a community's balances p99 < 50 ms, {name}, {where.replace('_', '-')}, large",
                dig(reads, "large", where, "community_accounts", "p99_ms"),
                50,
                at_most=True,
                unit="ms",
            )
        for read in TARGET_READS:
            for size in ("small", "large"):
                add(
                    f"{read} p99 in-process < 2 ms, {name}, {size} "
                    f"({number(dig(reads, size, 'postings'))} postings)",
                    dig(reads, size, "in_process", read, "p99_ms"),
                    2.0,
                    at_most=True,
                    unit="ms",
                )
            note = ""
            if read == "statement_page":
                note = (
                    f"rows per page {number(_rows(reads, 'small'), 1)} → "
                    f"{number(_rows(reads, 'large'), 1)}"
                )
            add(
                f"{read} p99 in-process, large ≤ 1.5 × small, {name}",
                _ratio(
                    dig(reads, "large", "in_process", read, "p99_ms"),
                    dig(reads, "small", "in_process", read, "p99_ms"),
                ),
                1.5,
                at_most=True,
                unit="×",
                note=note,
            )
    for backend, name in BACKEND_NAMES.items():
        checked = dig(results, "verify", backend)
        if isinstance(checked, dict) and "seconds" in checked:
            add(
                f"verify {number(checked['postings'])} postings < 30 s, {name}",
                checked["seconds"],
                30,
                at_most=True,
                unit="s",
                note=f"progress bar: {number(checked['progress_updates'] > 0)}, "
                f"sound: {number(checked['sound'])}",
            )
    add(
        "server peak memory < 300 MB (largest process, any HTTP run)",
        _peak_server_memory(results),
        300 * 1000**2 / 2**20,
        at_most=True,
        unit="MiB",
        note="300 MB = 286 MiB",
    )
    return rows


def _rows(reads: dict[str, Any], size: str) -> Any:
    return dig(reads, size, "in_process", "statement_page", "rows_mean")


def _peak_server_memory(results: dict[str, Any]) -> float | None:
    peaks = [
        dig(http, "server_memory", "max_process_mib")
        for http in (dig(results, "http") or {}).values()
        if isinstance(http, dict)
    ]
    for reads in (dig(results, "reads") or {}).values():
        if isinstance(reads, dict):
            peaks += [dig(stage, "server_memory", "max_process_mib") for stage in reads.values()]
    known = [p for p in peaks if p is not None]
    return max(known) if known else None


# -- the printed report ----------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    parts = [_heading(results)]
    parts += [_posting(results), _http(results), _reads(results), _conversions(results)]
    parts += [_checks(results), _reciprocity(results), _peers(results)]
    parts += [_comparisons(results), _targets(results), _run(results)]
    return "\n\n".join(part for part in parts if part)


def _heading(results: dict[str, Any]) -> str:
    meta = results["meta"]
    return (
        f"# Heartleaf benchmark {meta['started_at']} ({meta.get('sizes', '?')} sizes)\n"
        f"{meta['cpus']} CPUs, load average {meta['load_average_start']} at start, "
        f"{meta.get('load_average_end')} at end; Python {meta['python']}, SQLite "
        f"{meta['sqlite']}, PostgreSQL {meta['postgresql']}; git {meta['git']}.\n"
        "Every figure goes through the ledger the service runs (api.app.build_ledger) or a "
        "real `heartleaf serve`, every rule on: floors checked, client id on every transfer, "
        "history rows written, SQLite synchronous=FULL"
        + (
            "; the federation's exchange configured, so every cross-community transfer is "
            "valued, checked against credit lines and booked as a reciprocity flow."
            if dig(results, "config", "exchange_configured")
            else "; --bare-ledger: no exchange configured, so no reciprocity is recorded."
        )
        + _peers_summary(results)
    )


def peer_summary(results: dict[str, Any]) -> str:
    """One sentence: which peers ran, and each absent optional peer with why it is absent."""
    peers = results.get("peers")
    reason = _why_not(peers)
    if reason is not None or not isinstance(peers, dict):
        return f"Peers: none ({reason})."
    ran = sorted(
        {
            str(run.get("peer", name)).split(" (")[0]
            for name, run in peers.get("runs", {}).items()
            if isinstance(run, dict) and "post_tps" in run
        }
    )
    parts = [f"Peers: {', '.join(ran) if ran else 'none'} ran"]
    absent = peers.get("absent") or {}
    if absent:
        parts.append(
            "absent: " + "; ".join(f"{peer} ({why})" for peer, why in sorted(absent.items()))
        )
    failed = [
        name
        for name, run in peers.get("runs", {}).items()
        if isinstance(run, dict) and ("failed" in run or "error" in run)
    ]
    if failed:
        parts.append(f"failed: {', '.join(failed)}")
    return "; ".join(parts) + "."


def _peers_summary(results: dict[str, Any]) -> str:
    return "\n" + peer_summary(results)


def _posting(results: dict[str, Any]) -> str:
    rows = []
    for backend, name in BACKEND_NAMES.items():
        figures = dig(results, "posting", backend)
        if figures is None:
            continue
        reason = _why_not(figures) if "single" not in figures else None
        if reason:
            rows.append([name, reason[:90], "", "", "", "", ""])
            continue
        for mode in ("single", "batch"):
            run = figures.get(mode)
            reason = _why_not(run) if not isinstance(run, dict) or "tps" not in run else None
            if reason:
                rows.append([name, mode, reason[:90], "", "", "", ""])
                continue
            spread = run.get("latency") or run.get("latency_per_batch") or {}
            rows.append(
                [
                    name,
                    "one per call"
                    if mode == "single"
                    else f"{number(run.get('batch_size'))} per call",
                    number(run["transfers"]),
                    number(run["tps"]),
                    milliseconds(spread.get("p50_ms")),
                    milliseconds(spread.get("p99_ms")),
                    number(run["balances_correct"]),
                ]
            )
    if not rows:
        return _section_reason("Posting in-process", results.get("posting"))
    headers = ["database", "posting", "transfers", "transfers/s", "p50 ms", "p99 ms", "balances ok"]
    probe = dig(results, "posting", "sqlite", "single", "rules") or dig(
        results, "posting", "postgresql", "single", "rules"
    )
    note = ""
    if probe:
        replayed = number(probe["replay_answered_without_writing"])
        written, expected = number(probe["history_rows"]), number(probe["history_rows_expected"])
        synchronous = probe.get("sqlite_synchronous")
        note = (
            f"\nRules probe: replay answered without writing {replayed}, reused client id "
            f"refused {number(probe['reused_client_id_refused'])}, overdraft refused "
            f"{number(probe['overdraft_refused'])}, history rows {written} (expected {expected})"
            + f", reciprocity flows {number(probe.get('reciprocity_flows'))} for "
            f"{number(probe.get('cross_community_transfers'))} cross-community transfers"
            + (f", SQLite synchronous={synchronous}" if synchronous else "")
            + "."
        )
    return "## Posting in-process (latency per call)\n" + table(headers, rows) + note


def _section_reason(title: str, value: Any) -> str:
    reason = _why_not(value)
    return f"## {title}\n{reason}" if reason else ""


def _http(results: dict[str, Any]) -> str:
    configs = dig(results, "http")
    if not isinstance(configs, dict) or _why_not(configs):
        return _section_reason("Posting over HTTP", configs)
    rows = []
    for name, config in configs.items():
        label = (
            f"{BACKEND_NAMES.get(config.get('backend', ''), '?')} {config.get('workers', '?')}w"
            if isinstance(config, dict) and "backend" in config
            else name
        )
        reason = (
            _why_not(config) if not isinstance(config, dict) or "phases" not in config else None
        )
        if reason:
            rows.append([label, reason[:90], "", "", "", "", "", "", ""])
            continue
        memory = config.get("server_memory", {})
        for phase_name, phase in config["phases"].items():
            spread = phase.get("latency") or phase.get("latency_per_batch") or {}
            rows.append(
                [
                    label,
                    f"batches of {number(phase['batch_size'])}"
                    if phase_name == "batch"
                    else f"single, {phase['clients']} clients",
                    number(phase["transfers"]),
                    number(phase["tps"]),
                    milliseconds(spread.get("p50_ms")),
                    milliseconds(spread.get("p99_ms")),
                    number(phase["failures"]),
                    number(config.get("balances_correct")),
                    f"{number(memory.get('max_process_mib'))} / {number(memory.get('total_mib'))}",
                ]
            )
    headers = [
        "server",
        "posting",
        "transfers",
        "transfers/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "balances ok",
        "peak RSS MiB (largest / all)",
    ]
    note = f"\n{TWO_WORKERS_NOTE}" if any(name.endswith("_2w") for name in configs) else ""
    return (
        "## Posting over HTTP (heartleaf serve; latency per request as the client sees it)\n"
        + table(headers, rows)
        + note
    )


def _reads(results: dict[str, Any]) -> str:
    all_reads = dig(results, "reads")
    if not isinstance(all_reads, dict) or _why_not(all_reads):
        return _section_reason("Reads", all_reads)
    parts = []
    for backend, name in BACKEND_NAMES.items():
        reads = all_reads.get(backend)
        if reads is None:
            continue
        reason = _why_not(reads)
        if reason:
            parts.append(f"## Reads, {name}\n{reason}")
            continue
        sizes = [s for s in ("small", "large") if isinstance(reads.get(s), dict)]
        rows = []
        for read in READS:
            row = [read]
            for where in ("in_process", "http"):
                for size in sizes:
                    spread = dig(reads, size, where, read) or {}
                    row.append(_spread(spread))
            if len(sizes) == 2:
                row.append(
                    _times(
                        _ratio(
                            dig(reads, "large", "in_process", read, "p99_ms"),
                            dig(reads, "small", "in_process", read, "p99_ms"),
                        )
                    )
                )
            rows.append(row)
        headers = ["read (p50 / p99 ms)"]
        for where in ("in-process", "HTTP"):
            headers += [f"{where} {number(dig(reads, size, 'postings'))}" for size in sizes]
        if len(sizes) == 2:
            headers.append("p99 large ÷ small")
        builds = "; ".join(
            f"{number(dig(reads, size, 'postings'))} postings: built "
            f"{number(dig(reads, size, 'build', 'transfers'))} transfers in "
            f"{number(dig(reads, size, 'build', 'seconds'), 1)} s "
            f"({number(dig(reads, size, 'build', 'tps'))}/s in batch calls), "
            f"{number(dig(reads, size, 'build', 'history_rows'))} history rows, "
            f"{number((dig(reads, size, 'build', 'database_bytes') or 0) / 2**20)} MiB"
            for size in sizes
        )
        pages = ", ".join(
            f"{number(_rows(reads, size), 1)} at {number(dig(reads, size, 'postings'))}"
            for size in sizes
        )
        failures = sum(dig(reads, size, "http", "failures") or 0 for size in sizes)
        parts.append(
            f"## Reads, {name}\n"
            + table(headers, rows)
            + f"\n{builds}.\nRows per 50-row statement page, on average: {pages} (the workload "
            "spreads its postings over 1,000 accounts, so short histories give short pages). "
            f"HTTP read failures: {failures}."
        )
    return "\n\n".join(parts)


def _conversions(results: dict[str, Any]) -> str:
    section = dig(results, "conversions")
    if not isinstance(section, dict) or _why_not(section):
        return _section_reason("Exchange conversions", section)
    rows = []
    for backend, name in BACKEND_NAMES.items():
        run = section.get(backend)
        if run is None:
            continue
        reason = _why_not(run)
        if reason:
            rows.append([name, reason[:90], "", "", "", "", ""])
            continue
        rows.append(
            [
                name,
                number(run["conversions"]),
                number(run["per_second"]),
                milliseconds(dig(run, "latency", "p50_ms")),
                milliseconds(dig(run, "latency", "p99_ms")),
                number(run["postings_per_conversion"], 1),
                f"{number(run['failures'])} / {number(run['sound'])}",
            ]
        )
    headers = [
        "database",
        "conversions",
        "conversions/s",
        "p50 ms",
        "p99 ms",
        "postings each",
        "failed / verify sound",
    ]
    return (
        "## Exchange conversions in-process (Exchange.convert, HRB → HHT at valuation, "
        "0.5 % fee, one call each)\n" + table(headers, rows)
    )


def _checks(results: dict[str, Any]) -> str:
    lines = []
    for backend, name in BACKEND_NAMES.items():
        checked = dig(results, "verify", backend)
        if isinstance(checked, dict) and "seconds" in checked:
            lines.append(
                f"- verify, {name}, {number(checked['postings'])} postings: "
                f"{number(checked['seconds'], 1)} s, peak RSS "
                f"{number(checked['peak_rss_mib'])} MiB (interpreter and imports alone: "
                f"{number(checked['baseline_rss_mib'])} MiB), sound: {number(checked['sound'])}, "
                f"progress updates: {checked['progress_updates']}"
            )
        elif checked is not None:
            lines.append(f"- verify, {name}: {_why_not(checked) or checked}")
    if _why_not(dig(results, "verify")) and dig(results, "verify") is not None:
        lines.append(f"- verify: {_why_not(dig(results, 'verify'))}")
    demo = results.get("demo")
    if isinstance(demo, dict):
        if "failed" in demo:
            lines.append(
                f"- heartleaf demo: FAILED after {number(demo['seconds'], 1)} s: {demo['failed']}"
            )
        elif _why_not(demo):
            lines.append(f"- heartleaf demo: {_why_not(demo)}")
        else:
            seeded = ", ".join(f"{k} {v}" for k, v in (demo.get("seeded") or {}).items())
            lines.append(
                f"- heartleaf demo from empty: {number(demo['seconds'], 2)} s "
                f"(after db upgrade {number(demo['upgrade_seconds'], 2)} s), "
                f"peak RSS {number(demo['peak_rss_mib'])} MiB" + (f"; {seeded}" if seeded else "")
            )
    memory = _peak_server_memory(results)
    if memory is not None:
        lines.append(
            f"- server peak RSS, largest process over every HTTP run: {number(memory, 1)} MiB"
        )
    return "## Verify, demo, memory\n" + "\n".join(lines) if lines else ""


def _reciprocity(results: dict[str, Any]) -> str:
    section = dig(results, "reciprocity")
    if not isinstance(section, dict) or _why_not(section):
        return _section_reason("Reciprocity and clearing", section)
    matrix_rows, clearing_rows = [], []
    for backend, name in BACKEND_NAMES.items():
        run = section.get(backend)
        if run is None:
            continue
        reason = _why_not(run)
        if reason:
            matrix_rows.append([name, reason[:90], "", "", "", ""])
            clearing_rows.append([name, reason[:90], "", "", "", "", ""])
            continue
        matrix, clearing = run["matrix"], run["clearing"]
        matrix_rows.append(
            [
                name,
                f"{number(matrix['communities'])} / {number(matrix['payments'])}",
                f"{number(matrix['cells_in_window'])} / {number(matrix['cells'])}",
                _spread(matrix["window"]),
                _spread(matrix["all_time"]),
                number(matrix["cells"] == matrix["cells_expected"] and matrix["totals_correct"]),
            ]
        )
        clearing_rows.append(
            [
                name,
                f"{number(clearing['communities'])} / {number(clearing['obligations'])}",
                milliseconds(dig(clearing, "propose", "p50_ms")),
                milliseconds(dig(clearing, "set_off", "p50_ms")),
                milliseconds(clearing["execute_ms"]),
                f"{number(clearing['cleared_share'] * 100, 1)} % in "
                f"{number(clearing['cycles'])} cycles",
                number(
                    clearing["proposal_matches_set_off"]
                    and clearing["remaining_after_execution_correct"]
                ),
            ]
        )
    timed = [
        dig(run, "matrix", where) or {}
        for run in section.values()
        for where in ("window", "all_time")
    ]
    collections = sum(figures.get("full_gc_collections") or 0 for figures in timed)
    calls = sum(figures.get("n") or 0 for figures in timed)
    days = next(
        (
            (dig(run, "matrix", "window_days"), dig(run, "matrix", "days"))
            for run in section.values()
            if dig(run, "matrix", "days")
        ),
        (None, None),
    )
    return (
        f"## Reciprocity matrix in-process (Reciprocity.matrix; last {number(days[0])} days "
        f"of {number(days[1])}, and all time as of now; p50 / p99 ms)\n"
        + table(
            [
                "database",
                "communities / payments",
                "cells window / all",
                "window",
                "all time",
                "cells and totals ok",
            ],
            matrix_rows,
        )
        + "\n\n## Clearing in-process (p50 ms; execute: one call)\n"
        + table(
            [
                "database",
                "communities / obligations",
                "propose_clearing",
                "set_off alone",
                "execute",
                "cleared",
                "consistent",
            ],
            clearing_rows,
        )
        + "\npropose_clearing reads the obligations, solves and stores the proposal in one "
        "unit of work; set_off is exchange.clearing's solver alone on the same obligations."
        + (
            f"\nFull (generation 2) garbage collections of the process during the timed "
            f"matrix calls: {number(collections)} in {number(calls)} calls. A call that meets "
            "one is the slowest (the collector walks the whole heap), so p99 shows the "
            "collector once more than 1 % of the calls meet one; p50 shows the read."
            if collections
            else ""
        )
    )


def _peers(results: dict[str, Any]) -> str:
    peers = results.get("peers")
    if not isinstance(peers, dict):
        return ""
    reason = _why_not(peers)
    if reason:
        return f"## Peers\n{reason}"
    rows = []
    for name, run in peers["runs"].items():
        status = next(
            (
                f"{key}: {run[key]}"
                for key in ("absent", "skipped", "failed", "error", "missing")
                if key in run
            ),
            None,
        )
        if status is not None:
            rows.append([name, status, "", "", "", ""])
            continue
        rows.append(
            [
                name,
                number(run.get("n")),
                number(run.get("post_tps")),
                milliseconds(run.get("lookup_median_ms")),
                milliseconds(run.get("all_balances_ms")),
                number(run.get("balances_correct")),
            ]
        )
    headers = [
        "peer run",
        "transfers",
        "transfers/s",
        "lookup ms",
        "all balances ms",
        "balances ok",
    ]
    where = (
        f"in this run, N = {number(peers.get('n'))}, {number(peers.get('seconds'))} s"
        if peers.get("same_run")
        else f"read from {peers.get('out')}: NOT this run, so the ratios mix two runs"
    )
    return f"## Peers ({where})\n" + table(headers, rows)


def _comparisons(results: dict[str, Any]) -> str:
    rows = []
    for c in results.get("comparisons", []):
        digits = 2 if c["unit"] == "ms" else 0
        target = c.get("target")
        verdict = "–" if c.get("met") is None else ("met" if c["met"] else "MISSED")
        rows.append(
            [
                c["figure"],
                f"{number(c['heartleaf'], digits)} {c['unit']}",
                c["peer"],
                f"{number(c['peer_value'], digits)} {c['unit']}",
                _times(c["speed_vs_peer"]),
                "" if target is None else f"≥ {target:g}×",
                "" if target is None else verdict,
            ]
        )
    if not rows:
        return ""
    headers = ["Heartleaf figure", "Heartleaf", "peer run", "peer", "÷ peer", "target", "verdict"]
    return "## Heartleaf beside the peers (÷ peer > 1: Heartleaf faster on this run)\n" + table(
        headers, rows
    )


def _targets(results: dict[str, Any]) -> str:
    rows = []
    for t in results.get("targets", []):
        digits = 0 if t["unit"] == "/s" else 2
        met = "–" if t["met"] is None else ("met" if t["met"] else "MISSED")
        bar = f"{'≤' if t.get('at_most') else '≥'} {number(t['bar'], 0 if t['bar'] >= 100 else 2)}"
        shortfall = ""
        if t["met"] is False and t["measured"]:
            shortfall = f"{t['measured'] / t['bar']:.2f}× the bar"
        rows.append(
            [
                t["target"],
                f"{number(t['measured'], digits)} {t['unit']}",
                f"{bar} {t['unit']}",
                met,
                shortfall,
                t.get("note", ""),
            ]
        )
    note = (
        "\nQuick or tiny sizes: these verdicts are indicative only; the targets are set for "
        "the full sizes."
        if results["meta"].get("quick")
        else ""
    )
    return (
        "## Targets (issue 7)\n"
        + table(["target", "measured", "bar", "verdict", "miss", "note"], rows)
        + note
    )


def _run(results: dict[str, Any]) -> str:
    sections = dig(results, "meta", "sections") or {}
    if not sections:
        return ""
    rows = [
        [name, number(figures["seconds"], 1), figures["load_average_after"]]
        for name, figures in sections.items()
    ]
    return "## Run (wall time and load average per section)\n" + table(
        ["section", "seconds", "load average after"], rows
    )
