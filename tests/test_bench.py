"""The benchmark cannot rot: its quickest path runs end to end and writes every section.

``python -m bench --sizes tiny --no-peers`` posts a few hundred transfers in-process and
through real ``heartleaf serve`` processes, reads, verifies, seeds the demo, converts,
reads a reciprocity matrix and proposes a clearing (the tiny sizes: 20 communities, and
400 obligations between 40), into a scratch directory and PostgreSQL databases of its
own. These tests check the JSON is well formed and complete and that the run's own
correctness checks held. Nothing here is about time: the benchmark reports, it asserts
nothing about speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import peers, report
from tests.conftest import POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, _postgres_reason

REPOSITORY = Path(__file__).resolve().parent.parent
SECTIONS = (
    "meta",
    "config",
    "posting",
    "http",
    "reads",
    "verify",
    "demo",
    "conversions",
    "reciprocity",
    "peers",
    "comparisons",
    "targets",
)
READS = ("balance", "balance_as_of", "statement_page", "community_accounts", "all_accounts")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reason = _postgres_reason()
    if reason is not None and REQUIRE_POSTGRES:
        pytest.fail(f"PostgreSQL is required here (HEARTLEAF_REQUIRE_POSTGRES=1). {reason}")
    backends = ["sqlite"] if reason else ["sqlite", "postgresql"]
    directory = tmp_path_factory.mktemp("bench")
    output = directory / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--sizes",
            "tiny",
            "--no-peers",
            "--backends",
            ",".join(backends),
            "--postgres-url",
            POSTGRES_ADMIN_URL,
            "--database-prefix",
            f"bench_test_{os.getpid()}_",
            "--scratch",
            str(directory / "scratch"),
            "--output",
            str(output),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert output.with_suffix(".md").read_text().startswith("# Heartleaf benchmark")
    results: dict[str, Any] = json.loads(output.read_text())
    results["test_backends"] = backends
    return results


def _errors(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "error":
                yield f"{path}: {item}"
            yield from _errors(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _errors(item, f"{path}[{index}]")


def test_every_section_is_there_and_nothing_failed(tiny: dict[str, Any]) -> None:
    assert [s for s in SECTIONS if s not in tiny] == []
    assert list(_errors(tiny)) == []
    assert tiny["meta"]["sizes"] == "tiny"
    assert tiny["config"]["exchange_configured"] is True
    assert "skipped" in tiny["peers"]


def test_posting_was_measured_with_every_rule_on(tiny: dict[str, Any]) -> None:
    for backend in tiny["test_backends"]:
        posting = tiny["posting"][backend]
        for mode in ("single", "batch"):
            assert posting[mode]["tps"] > 0
            assert posting[mode]["balances_correct"] is True
        rules = posting["single"]["rules"]
        assert rules["replay_answered_without_writing"] is True
        assert rules["reused_client_id_refused"] is True
        assert rules["overdraft_refused"] is True
        assert rules["history_rows"] == rules["history_rows_expected"]
        assert rules["reciprocity_flows"] == rules["cross_community_transfers"] > 0
    assert tiny["posting"]["sqlite"]["single"]["rules"]["sqlite_synchronous"] == "FULL"


def test_http_runs_posted_everything_through_real_servers(tiny: dict[str, Any]) -> None:
    expected = {"sqlite_1w"} | (
        {"postgresql_1w", "postgresql_2w"} if "postgresql" in tiny["test_backends"] else set()
    )
    assert set(tiny["http"]) == expected
    for config in tiny["http"].values():
        assert set(config["phases"]) == {
            "single_1_clients",
            "single_8_clients",
            "single_32_clients",
            "batch",
        }
        assert all(phase["failures"] == 0 for phase in config["phases"].values())
        assert config["balances_correct"] is True
        assert config["server_memory"]["max_process_mib"] > 0


def test_reads_verify_demo_and_conversions(tiny: dict[str, Any]) -> None:
    reads = tiny["reads"]["sqlite"]
    for size in ("small", "large"):
        for where in ("in_process", "http"):
            for read in READS:
                assert reads[size][where][read]["n"] > 0, (size, where, read)
        assert reads[size]["http"]["failures"] == 0
    assert tiny["verify"]["sqlite"]["sound"] is True
    assert tiny["verify"]["sqlite"]["progress_updates"] > 0
    if importlib.util.find_spec("api.demo") is not None:
        assert tiny["demo"]["seconds"] > 0, tiny["demo"]
    for backend in tiny["test_backends"]:
        conversions = tiny["conversions"][backend]
        assert conversions["failures"] == 0, conversions["first_failure"]
        assert conversions["sound"] is True
        assert conversions["per_second"] > 0


def test_the_report_sets_heartleaf_beside_the_peers(tiny: dict[str, Any], tmp_path: Path) -> None:
    """The peers' path without running them: their JSON files, collected and compared."""
    for name in peers.RUNS:
        figures = {"n": 200, "post_tps": 500.0, "lookup_median_ms": 0.5}
        figures |= {"all_balances_ms": 20.0, "balances_correct": True}
        (tmp_path / f"{name}.json").write_text(json.dumps(figures))
    results = {**tiny, "peers": peers.collect(tmp_path)}
    assert results["peers"]["n"] == 200
    rows = report.comparisons(results)
    single = next(r for r in rows if r["figure"] == "in-process single, SQLite")
    assert single["speed_vs_peer"] == pytest.approx(single["heartleaf"] / 500.0)
    assert single["target"] == 0.8
    results["comparisons"], results["targets"] = rows, report.targets(results)
    measured = {t["target"]: t["measured"] for t in results["targets"]}
    assert measured["in-process single ≥ 0.8 × naive single, SQLite"] == single["speed_vs_peer"]
    assert "NOT this run" in report.render(results)


def test_reciprocity_matrix_and_clearing_were_measured(tiny: dict[str, Any]) -> None:
    for backend in tiny["test_backends"]:
        matrix = tiny["reciprocity"][backend]["matrix"]
        communities = tiny["config"]["reciprocity_communities"]
        assert matrix["communities"] == communities
        assert matrix["cells"] == matrix["cells_expected"] == communities * (communities - 1)
        assert 0 < matrix["cells_in_window"] <= matrix["cells"]
        assert matrix["totals_correct"] is True
        for where in ("window", "all_time"):
            assert matrix[where]["n"] > 0, where
            assert matrix[where]["p50_ms"] > 0, where
        clearing = tiny["reciprocity"][backend]["clearing"]
        assert clearing["communities"] == tiny["config"]["clearing_communities"]
        assert clearing["obligations"] == tiny["config"]["clearing_obligations"]
        assert clearing["propose"]["p50_ms"] > 0
        assert clearing["set_off"]["p50_ms"] > 0
        assert 0 < clearing["gross_after"] < clearing["gross_before"]
        assert clearing["proposal_matches_set_off"] is True
        assert clearing["executed"] is True
        assert clearing["remaining_after_execution_correct"] is True
    rendered = report.render(tiny)
    assert "## Reciprocity matrix" in rendered
    assert "## Clearing" in rendered
    assert "Not built" not in rendered


def test_profiling_counts_the_pages_each_commit_writes() -> None:
    """``python -m bench.profiling --pages`` names the tables and indexes a single
    transfer's commit writes to SQLite's log; posted payments write neither an index of
    events beside the feed nor the index of unposted transactions."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.profiling", "--pages", "--n", "20"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(
        line.strip("|").split(" | ")
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| table")
    )
    pages = {name.strip(): float(count) for name, count in rows.items()}
    for written in ("transactions", "postings", "entries", "accounts", "events", "counters"):
        assert pages.get(written, 0) >= 1, done.stdout
    for unwritten in (
        "sqlite_autoindex_events_1",
        "ix_transactions_unposted_status_created_at",
        "(freed since)",  # a page number read off the wrong offset would land here
    ):
        assert unwritten not in pages, done.stdout
