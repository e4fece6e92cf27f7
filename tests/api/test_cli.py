"""`heartleaf` as a tool: help, version, exit codes, stdout for scripts and stderr for people,
a clear refusal where no database is, and the treasurer's read commands.

Every command runs as the real console script (`.venv/bin/heartleaf`) in a process of its
own, against a real database (SQLite file and PostgreSQL) the test set up through the
services; what a command prints is compared with what the services answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from fractions import Fraction
from importlib import metadata
from pathlib import Path

import pytest
from sqlalchemy import Engine

from exchange.reciprocity import Reciprocity, ReciprocityObserver
from exchange.service import Exchange
from ledger.model import CurrencyKind
from ledger.service import Ledger
from tests.conftest import POSTGRES_ADMIN_URL, REQUIRE_POSTGRES, _postgres_reason
from tests.ledger.builders import Village, pay, village

HEARTLEAF = Path(sys.executable).with_name("heartleaf")  # the console script pip installed
SETUP = "key:setup"


def run(
    environment: dict[str, str], *arguments: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HEARTLEAF), *arguments],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, one line on stderr, nothing on stdout, no traceback."""
    assert result.returncode == 2, result
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith("heartleaf: error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def bare_environment(**extra: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "HEARTLEAF_DATA_DIR")
    }
    return {**environment, **extra}


# -- the tool itself ----------------------------------------------------------------------------


def test_bare_heartleaf_prints_its_help_and_exits_0(tmp_path: Path) -> None:
    result = run(bare_environment(), cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stderr == ""
    assert result.stdout.startswith("usage: heartleaf")
    for word in ("balances", "statement", "reciprocity", "db", "demo", "verify", "exchange"):
        assert f"    {word}" in result.stdout, word
    assert "exit status:" in result.stdout
    for status in ("0 ", "1 ", "2 "):
        assert f"\n  {status}" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_group_named_alone_prints_its_commands() -> None:
    for group, command in (("keys", "revoke"), ("db", "upgrade"), ("exchange", "protocols")):
        result = run(bare_environment(), group)
        assert result.returncode == 0, result
        assert result.stdout.startswith(f"usage: heartleaf {group}")
        assert command in result.stdout
    for command in ("balances", "statement", "reciprocity"):
        result = run(bare_environment(), command, "--help")
        assert result.returncode == 0, result
        assert "--json" in result.stdout


def test_version_comes_from_the_package_metadata() -> None:
    result = run(bare_environment(), "--version")
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"heartleaf {metadata.version('heartleaf')}"


def test_usage_mistakes_exit_2_on_stderr() -> None:
    for arguments in (["nonsense"], ["statement", "five"], ["balances", "x", "--limit", "0"]):
        result = run(bare_environment(), *arguments)
        assert result.returncode == 2, (arguments, result)
        assert result.stdout == ""
        assert "usage: heartleaf" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["balances", "riverbend"],
        ["statement", "1"],
        ["reciprocity", "riverbend"],
        ["verify"],
        ["keys", "list"],
        ["demo"],
        ["serve"],
        ["exchange", "protocols"],
    ],
    ids=" ".join,
)
def test_no_database_is_named_and_none_is_created(tmp_path: Path, arguments: list[str]) -> None:
    """Where no database is, a command says which one it looked for and how to make it,
    and leaves nothing behind: no SQLite file, not even the data folder."""
    result = run(bare_environment(), *arguments, cwd=tmp_path)
    refused(result, str(tmp_path / "data" / "heartleaf.db"), "heartleaf db upgrade")
    assert list(tmp_path.iterdir()) == []

    elsewhere = tmp_path / "elsewhere"
    result = run(bare_environment(HEARTLEAF_DATA_DIR=str(elsewhere)), *arguments, cwd=tmp_path)
    refused(result, str(elsewhere / "heartleaf.db"))
    assert list(tmp_path.iterdir()) == []


def test_db_upgrade_creates_the_database_the_others_then_use(tmp_path: Path) -> None:
    environment = bare_environment()
    created = run(environment, "db", "upgrade", cwd=tmp_path)
    assert created.returncode == 0, created
    assert created.stdout == ""
    assert str(tmp_path / "data" / "heartleaf.db") in created.stderr
    listing = run(environment, "keys", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing
    assert listing.stdout.split()[:2] == ["id", "prefix"]
    verified = run(environment, "verify", cwd=tmp_path)
    assert (verified.returncode, verified.stdout) == (0, "")


def test_an_empty_sqlite_file_is_told_to_migrate(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = run(bare_environment(DATABASE_URL=f"sqlite:///{empty}"), "balances", "riverbend")
    refused(result, "no Heartleaf schema", "heartleaf db upgrade")


def test_a_missing_postgresql_database_is_named_with_how_to_create_it() -> None:
    reason = _postgres_reason()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"heartleaf_absent_{uuid.uuid4().hex[:8]}"
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    result = run(bare_environment(DATABASE_URL=url), "balances", "riverbend")
    refused(result, name, "does not exist", f"createdb {name}", "heartleaf db upgrade")


# -- the treasurer's reads ----------------------------------------------------------------------


@pytest.fixture
def environment(database_url: str, tmp_path: Path) -> dict[str, str]:
    return bare_environment(DATABASE_URL=database_url, HEARTLEAF_DATA_DIR=str(tmp_path))


@pytest.fixture
def trade(engine: Engine) -> Village:
    """Riverbend's village, valued in FRU, where Ana pays Bo ♡12.50 and Cai of Hilltop
    ♡25.00 (the second crosses communities: reciprocity counts it)."""
    ledger = Ledger(engine, observers=[ReciprocityObserver()])
    built = village(ledger)
    ledger.create_community("federation", "The Federation")
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="federation")
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("LVS", "4/5")):
        exchange.set_valuation(code, Fraction(rate), by=SETUP, reason="founding")
    ledger.post_transaction(pay(built.ana, built.bo, 1_250, memo="Childcare", category="care"))
    ledger.post_transaction(pay(built.ana, built.hilltop_member, 2_500, memo="Eldercare"))
    ledger.post_transaction(pay(built.leaves_issuance, built.leaves_ana, 7, "LVS"))
    return built


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result
    answer: dict[str, object] = json.loads(result.stdout)  # stdout holds the JSON alone
    return answer


def test_balances_in_their_currency_and_as_json(
    environment: dict[str, str], engine: Engine, trade: Village
) -> None:
    table = run(environment, "balances", "riverbend")
    assert table.returncode == 0, table
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "♡62.50" in lines[str(trade.ana)]  # 100.00 - 12.50 - 25.00
    assert "-♡100.00" in lines[str(trade.issuance)]
    assert "♡12.50" in lines[str(trade.bo)]
    assert "🍃7" in lines[str(trade.leaves_ana)]
    assert str(trade.hilltop_member) not in lines  # Cai is Hilltop's

    answer = _json(run(environment, "balances", "riverbend", "--json"))
    ledger = Ledger(engine)
    expected = ledger.list_accounts(community="riverbend", limit=1000).items
    items = answer["items"]
    assert isinstance(items, list)
    assert [item["id"] for item in items] == [a.id for a in expected]
    ana = next(item for item in items if item["id"] == trade.ana)
    assert ana["currency"] == "HRB"
    assert ana["balance"] == {
        "posted": 6_250,
        "debits_pending": 0,
        "credits_pending": 0,
        "available": 6_250,
    }
    assert answer["next_cursor"] is None

    only = _json(run(environment, "balances", "riverbend", "--currency", "LVS", "--json"))
    assert {item["currency"] for item in only["items"]} == {"LVS"}  # type: ignore[union-attr]


def test_balances_page_by_cursor(
    environment: dict[str, str], engine: Engine, trade: Village
) -> None:
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        arguments = ["balances", "riverbend", "--limit", "3", "--json"]
        answer = _json(run(environment, *arguments, *(["--cursor", cursor] if cursor else [])))
        seen += [item["id"] for item in answer["items"]]  # type: ignore[union-attr]
        pages += 1
        cursor = answer["next_cursor"]  # type: ignore[assignment]
        if cursor is None:
            break
    expected = [a.id for a in Ledger(engine).list_accounts(community="riverbend").items]
    assert seen == expected
    assert pages == -(-len(expected) // 3)

    first = run(environment, "balances", "riverbend", "--limit", "3")
    assert first.returncode == 0, first
    assert len(first.stdout.splitlines()) == 4  # the header and three accounts
    assert "--cursor " in first.stderr  # told how to go on, apart from the table


def test_statement_names_the_other_side_and_pages(
    environment: dict[str, str], trade: Village
) -> None:
    table = run(environment, "statement", str(trade.ana))
    assert table.returncode == 0, table
    rows = table.stdout.splitlines()[1:]
    assert len(rows) == 3
    assert "♡100.00" in rows[0]  # issued to her
    assert "-♡12.50" in rows[1]
    assert "riverbend/bo" in rows[1]
    assert "Childcare" in rows[1]
    assert "-♡25.00" in rows[2]
    assert "♡62.50" in rows[2]  # the balance after
    assert "hilltop/cai" in rows[2]
    assert "ana of riverbend" in table.stderr

    lines = []
    cursor: str | None = None
    while True:
        arguments = ["statement", str(trade.ana), "--limit", "2", "--json"]
        answer = _json(run(environment, *arguments, *(["--cursor", cursor] if cursor else [])))
        lines += answer["items"]  # type: ignore[arg-type]
        cursor = answer["next_cursor"]  # type: ignore[assignment]
        if cursor is None:
            break
    assert [line["amount"] for line in lines] == [10_000, -1_250, -2_500]
    assert [line["balance"]["posted"] for line in lines] == [10_000, 8_750, 6_250]
    assert lines[2]["counterparty"] == {"community": "hilltop", "name": "cai"}
    assert lines[2]["counterparty_account_id"] == trade.hilltop_member

    future = run(environment, "statement", str(trade.ana), "--since", "2999-01-01", "--json")
    assert _json(future)["items"] == []
    refused(run(environment, "statement", "999999"), "no account 999999")
    refused(run(environment, "statement", str(trade.ana), "--since", "soon"), "2026-12-01")


def test_reciprocity_of_a_community(
    environment: dict[str, str], engine: Engine, trade: Village
) -> None:
    report = Reciprocity(Ledger(engine)).community("riverbend")
    (hilltop,) = report.counterparties
    assert hilltop.figures.given + hilltop.figures.received == 2_500

    answer = _json(run(environment, "reciprocity", "riverbend", "--json"))
    assert answer["reference_unit"] == "FRU"
    assert answer["window"] is None
    assert (answer["given"], answer["received"]) == (report.figures.given, report.figures.received)
    assert answer["counterparties"] == [
        {
            "community": "hilltop",
            "given": hilltop.figures.given,
            "received": hilltop.figures.received,
            "net": hilltop.figures.net,
            "index": "1" if hilltop.figures.net > 0 else "-1",
        }
    ]
    assert answer["credit_line"]["credit_limit"] is None  # type: ignore[index]

    table = run(environment, "reciprocity", "riverbend")
    assert table.returncode == 0, table
    assert "¤25.00" in table.stdout
    assert "hilltop" in table.stdout
    assert "all time" in table.stderr

    today = Ledger(engine).clock().date()
    window = ["--from", str(today), "--to", str(today.replace(year=today.year + 1))]
    windowed = _json(run(environment, "reciprocity", "riverbend", *window, "--json"))
    assert windowed["window"] == {"from": window[1], "to": window[3]}
    refused(run(environment, "reciprocity", "riverbend", "--from", str(today)), "--to")
    refused(run(environment, "reciprocity", "atlantis"), "no community 'atlantis'", "riverbend")


def test_an_unknown_community_is_refused_by_name(
    environment: dict[str, str], trade: Village
) -> None:
    refused(run(environment, "balances", "atlantis"), "'atlantis'", "hilltop, riverbend")
