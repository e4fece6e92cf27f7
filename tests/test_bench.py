"""The benchmark cannot rot: its quickest path runs end to end and writes every section.

``python -m bench --sizes tiny`` posts a few hundred transfers in-process and through real
``heartleaf serve`` processes, reads, verifies, seeds the demo, converts, reads a
reciprocity matrix and proposes a clearing (the tiny sizes: 20 communities, and 400
obligations between 40), and runs the peers, into a scratch directory and PostgreSQL
databases of its own. It runs in a copy of the repository with nothing beside it (no
``../shared``), on this interpreter with the copy first on its path: so the benchmark
stands on the repository alone, the naive ceiling runs from ``bench/``, and the optional
peers whose material lives outside (django-hordak, pgledger) are reported absent without
failing the run. These tests check the JSON is well formed and complete and that the run's
own correctness checks held. Nothing here is about time: the benchmark reports, it
asserts nothing about speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import generator, naive, peers, report
from tests.conftest import POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, _postgres_reason

# One xdist worker takes every test here (make test runs --dist loadgroup), so the tiny run
# and the copy it runs in are made once per test run, not once per worker.
pytestmark = pytest.mark.xdist_group("bench")
REPOSITORY = Path(__file__).resolve().parent.parent
SHARED_PEERS = REPOSITORY.parent / "shared" / "peers"
# Not part of a clone: the virtual environment, caches, and the benchmark's own scratch.
LEFT_OUT = {".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"}
LEFT_OUT_PATHS = ("bench/.peers", "bench/results", "data")
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


def _repository_files() -> list[Path]:
    """The files a clone would have: git's tracked and new unignored files, as they are now."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPOSITORY,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        listed = ""
    if listed:
        files = [Path(name) for name in listed.split("\0") if name]
    else:  # not a git checkout: everything but the environment, caches and scratch
        files = [path.relative_to(REPOSITORY) for path in REPOSITORY.rglob("*") if path.is_file()]
    return [
        path
        for path in files
        if not LEFT_OUT & set(path.parts)
        and "__pycache__" not in path.parts
        and not any(path.as_posix().startswith(f"{left}/") for left in LEFT_OUT_PATHS)
        and (REPOSITORY / path).is_file()
    ]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository in a folder of its own: nothing beside it, no ``../shared``."""
    copy = tmp_path_factory.mktemp("clone") / "heartleaf"
    for path in _repository_files():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPOSITORY / path, copy / path)
    assert (copy / "bench" / "__main__.py").exists()
    assert not (copy.parent / "shared").exists()
    assert not (copy / "bench" / ".peers").exists()
    return copy


def _environment(copy: Path) -> dict[str, str]:
    """This interpreter's environment with the copy first on its path, and nothing pointing
    at peers' material elsewhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"HEARTLEAF_HORDAK_PYTHON", "HEARTLEAF_PGLEDGER_SQL", "PYTHONPATH"}
    }
    return {**env, "PYTHONPATH": str(copy)}


@pytest.fixture(scope="module")
def tiny(standalone: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
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
        cwd=standalone,
        env=_environment(standalone),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rendered = output.with_suffix(".md").read_text()
    assert rendered.startswith("# Heartleaf benchmark")
    results: dict[str, Any] = json.loads(output.read_text())
    results["test_backends"] = backends
    results["test_rendered"] = rendered
    results["test_stdout"] = done.stdout
    results["test_copy"] = str(standalone)
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


def test_it_ran_from_the_copy_with_nothing_beside_it(tiny: dict[str, Any]) -> None:
    """The run's SQLite files, server logs and peers' figures are the copy's run's; the
    optional peers were looked for in the copy and its parent, and found absent."""
    copy = Path(tiny["test_copy"])
    absent = tiny["peers"]["absent"]
    assert set(absent) == {"django-hordak", "pgledger"}
    assert str(copy / "bench" / ".peers" / "venv") in absent["django-hordak"]
    assert str(copy.parent / "shared" / "peers" / "pgledger") in absent["pgledger"]
    for name, run in tiny["peers"]["runs"].items():
        if name.startswith(("hordak_", "pgledger_")):
            assert "absent" in run, (name, run)


def test_the_summary_names_the_absent_optional_peers(tiny: dict[str, Any]) -> None:
    """The report's opening lines (printed, and in the .md) say which peers ran and which
    optional ones are absent, and why."""
    for text in (tiny["test_rendered"], tiny["test_stdout"]):
        summary = next(line for line in text.splitlines() if line.startswith("Peers:"))
        assert summary.startswith("Peers: naive ceiling ran; absent: "), summary
        assert "django-hordak (not installed:" in summary
        assert "pgledger (its SQL is another project's" in summary
        head = text.split("\n## ", 1)[0]
        assert summary in head  # the summary, before the first table


def test_the_naive_ceiling_ran_from_the_benchmark_itself(tiny: dict[str, Any]) -> None:
    storages = ["sqlite"] + (["pg"] if "postgresql" in tiny["test_backends"] else [])
    runs = tiny["peers"]["runs"]
    for storage in storages:
        for mode in ("single", "batch", "bulk"):
            run = runs[f"naive_{storage}_{mode}"]
            assert run["n"] == tiny["config"]["n"], run
            assert run["post_tps"] > 0
            assert run["balances_correct"] is True
            assert run["peer"].startswith("naive ceiling")
    single = next(r for r in tiny["comparisons"] if r["peer"] == "naive_sqlite_single")
    assert single["speed_vs_peer"] == pytest.approx(
        single["heartleaf"] / runs["naive_sqlite_single"]["post_tps"]
    )


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


def test_profiling_counts_the_pages_each_commit_writes(standalone: Path) -> None:
    """``python -m bench.profiling --pages`` names the tables and indexes a single
    transfer's commit writes to SQLite's log; posted payments write neither an index of
    events beside the feed nor the index of unposted transactions. It runs in the copy
    with nothing beside it, as ``make bench-profile`` would in a clone."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.profiling", "--pages", "--n", "20"],
        cwd=standalone,
        env=_environment(standalone),
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


# -- the workload and the peers, without a benchmark run -------------------------------------


def test_the_workload_is_deterministic_and_well_formed() -> None:
    workload = generator.generate(500)
    assert workload == generator.generate(500)
    transfers = workload["transfers"]
    assert [t[0] for t in transfers] == list(range(500))
    assert all(s != d and 0 <= s < 1000 and 0 <= d < 1000 for _, s, d, _ in transfers)
    assert all(isinstance(a, int) and 1 <= a <= generator.AMOUNT_MAX for *_, a in transfers)
    assert [list(t) for t in generator.stream(0, 500)] == transfers
    assert [list(t) for t in generator.stream(200, 300)] == transfers[200:300]
    assert generator.generate(800)["transfers"][:500] == transfers  # a prefix of longer runs
    assert workload["expected_balances"] == generator.expected_deltas(0, 500)
    assert sum(workload["expected_balances"]) == 0
    assert len(workload["lookups"]) == generator.LOOKUP_COUNT
    accounts = workload["accounts"]
    assert [a["community"] for a in accounts[::100]] == list(range(generator.COMMUNITY_COUNT))
    assert accounts[137]["name"] == "Assets:C01:A0137"
    # the draws spread over every account, and over both same- and cross-community pairs
    assert len({s for _, s, _, _ in transfers} | {d for _, _, d, _ in transfers}) > 300
    crossing = sum(s // 100 != d // 100 for _, s, d, _ in transfers)
    assert 0.8 * 500 < crossing < 500


@pytest.mark.skipif(
    not (SHARED_PEERS / "gen_workload.py").exists(),
    reason="no ../shared/peers/gen_workload.py beside the repository to compare with",
)
def test_the_workload_is_the_one_the_peers_were_first_measured_on() -> None:
    """Where the federation's shared peer folder is at hand, its generator and ours draw
    the same workload, so figures measured with it then and with ours now are comparable."""
    spec = importlib.util.spec_from_file_location("gen_workload", SHARED_PEERS / "gen_workload.py")
    assert spec is not None
    assert spec.loader is not None
    theirs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theirs)
    assert theirs.generate(3000) == generator.generate(3000)


@pytest.mark.parametrize("mode", ["single", "batch", "bulk"])
def test_the_naive_ceiling_ends_on_the_expected_balances(mode: str, tmp_path: Path) -> None:
    engine = naive.sqlite_engine(tmp_path / "naive.db")
    try:
        figures = naive.run(engine, mode, 1_200)  # more than one chunk of 1,000
        with engine.connect() as connection:
            rows = connection.execute(naive.postings.select()).fetchall()
            entries = connection.execute(naive.entries.select()).fetchall()
    finally:
        engine.dispose()
    assert figures["n"] == 1_200
    assert figures["balances_correct"] is True
    assert len(entries) == 1_200
    assert len(rows) == 2_400
    assert sum(row.amount for row in rows) == 0


def test_absent_optional_peers_say_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTLEAF_PGLEDGER_SQL", str(tmp_path))
    (tmp_path / "pgledger.sql").write_text("-- one of three\n")
    reason = peers.absence("pgledger")
    assert reason is not None
    assert "ulid-ulid-to-uuid.sql, ulid-uuid-to-ulid.sql" in reason
    assert "pgledger.sql" not in reason.split("lacks", 1)[1]
    for name in ("ulid-ulid-to-uuid.sql", "ulid-uuid-to-ulid.sql"):
        (tmp_path / name).write_text("-- here\n")
    assert peers.absence("pgledger") is None

    monkeypatch.setenv("HEARTLEAF_HORDAK_PYTHON", str(tmp_path / "no-such-python"))
    reason = peers.absence("hordak")
    assert reason is not None
    assert "not installed" in reason
    assert "no-such-python" in reason
    if importlib.util.find_spec("hordak") is None:  # this interpreter lacks Django's peer
        monkeypatch.setenv("HEARTLEAF_HORDAK_PYTHON", sys.executable)
        reason = peers.absence("hordak")
        assert reason is not None
        assert "lacks its packages" in reason
    assert peers.absence("naive") is None  # the naive ceiling is never absent
