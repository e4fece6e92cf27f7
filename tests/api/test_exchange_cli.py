"""`heartleaf exchange`: the federation's exchange settings from a shell, on both databases.

Each command runs as a real process against a database the test set up through the
service; the test then reads back through the service what the command changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from sqlalchemy import Engine

from exchange.model import ProtocolSpec, Signatory
from exchange.service import Exchange
from ledger.errors import Code, LedgerError
from ledger.model import CurrencyKind
from ledger.service import Ledger

HEARTLEAF = [sys.executable, "-m", "api.cli"]
SETUP = "key:setup"


def _heartleaf(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLEAF, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr.startswith("heartleaf: error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def environment(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "HEARTLEAF_DATA_DIR": str(tmp_path),
        "USER": "tester",
    }


@pytest.fixture
def exchange(engine: Engine) -> Exchange:
    """Riverbend and Hilltop Hearts, Leaves and krona valued in FRU; Hearts convert both
    ways (at valuation one way, at a fixed 1 the other); NOK has no valuation."""
    ledger = Ledger(engine)
    for slug in ("federation", "riverbend", "hilltop"):
        ledger.create_community(slug, slug.title())
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    for code, issuer in (("HRB", "riverbend"), ("HHT", "hilltop")):
        ledger.create_currency(
            code, kind=CurrencyKind.HEARTS, scale=2, name=code, symbol="♡", issuer=issuer
        )
    ledger.create_currency("LEAF", kind=CurrencyKind.LEAVES, scale=0, name="Leaves", symbol="🍃")
    for code in ("SEK", "NOK"):
        ledger.create_currency(code, kind=CurrencyKind.EXTERNAL, scale=2, name=code, symbol=code)
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="federation")
    for code, rate in (("FRU", "1"), ("HRB", "1"), ("HHT", "1"), ("LEAF", "4/5"), ("SEK", "9/200")):
        exchange.set_valuation(code, Fraction(rate), by=SETUP, reason="founding")
    exchange.propose(ProtocolSpec("HRB", "HHT", fee_bps=25), by=SETUP, reason="at valuation")
    exchange.propose(
        ProtocolSpec("HHT", "HRB", fixed_rate=Fraction(1), limits={"account_daily": 5_000}),
        by=SETUP,
        reason="back at par",
    )
    exchange.propose(ProtocolSpec("LEAF", "SEK", allowed=False), by=SETUP, reason="no speculation")
    return exchange


def test_valuations_list_and_change(environment: dict[str, str], exchange: Exchange) -> None:
    listed = _heartleaf(environment, "exchange", "valuations")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["LEAF"][1] == "0.8"
    assert rows["SEK"][1] == "0.045"
    assert rows["HRB"][4:] == ["key:setup", "founding"]
    assert "no valuation" in " ".join(rows["NOK"])
    assert "in FRU" in listed.stdout.splitlines()[0]

    changed = _heartleaf(
        environment, "exchange", "set-valuation", "LEAF", "9/10", "--reason", "Quarterly review"
    )
    assert changed.returncode == 0, changed.stderr
    assert "1 LEAF = 0.9 FRU" in changed.stderr
    valuation = exchange.valuation_at("LEAF")
    assert (valuation.rate, valuation.recorded_by, valuation.reason) == (
        Fraction(9, 10),
        "cli:tester",
        "Quarterly review",
    )

    _one_line_error(
        _heartleaf(environment, "exchange", "set-valuation", "LEAF", "0.1.2", "--reason", "x"),
        "not a rate",
    )
    _one_line_error(
        _heartleaf(
            environment,
            *("exchange", "set-valuation", "LEAF", "1", "--reason", "x"),
            *("--effective-from", "tomorrow"),
        ),
        "not an instant",
    )
    # Hearts at valuation one way and at par the other: valuing HRB at 2 would let value grow.
    _one_line_error(
        _heartleaf(environment, "exchange", "set-valuation", "HRB", "2", "--reason", "x"),
        "HRB",
        "would multiply value by 2",
    )
    _one_line_error(
        _heartleaf(environment, "exchange", "set-valuation", "XYZ", "1", "--reason", "x"),
        "There is no currency 'XYZ'",
    )
    assert [v.rate for v in exchange.valuation_history("HRB")] == [Fraction(1)]


def _suspended(exchange: Exchange, source: str, target: str) -> bool:
    in_force = exchange.protocol_in_force(source, target)
    assert in_force is not None
    return in_force.spec.suspended


def test_protocols_suspend_and_resume(environment: dict[str, str], exchange: Exchange) -> None:
    suspended = _heartleaf(
        environment, "exchange", "suspend", "HRB", "HHT", "--reason", "audit", "--by", "ops:kim"
    )
    assert suspended.returncode == 0, suspended.stderr
    assert "HRB -> HHT suspended (version 2" in suspended.stderr
    newest = exchange.protocol_versions("HRB", "HHT")[-1]
    assert (newest.spec.suspended, newest.proposed_by, newest.reason) == (True, "ops:kim", "audit")
    assert _suspended(exchange, "HRB", "HHT")

    listed = _heartleaf(environment, "exchange", "protocols")
    assert listed.returncode == 0, listed.stderr
    lines = {line[:16].strip(): line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {"HRB -> HHT", "HHT -> HRB", "LEAF -> SEK"}
    assert lines["HRB -> HHT"].split()[3:8] == ["v2", "v2", "active", "suspended", "valuations"]
    assert "account_daily 5000" in lines["HHT -> HRB"]
    assert " open " in lines["HHT -> HRB"]
    assert " forbidden " in lines["LEAF -> SEK"]

    # With four eyes, lifting the suspension waits for another federation key.
    exchange.configure(
        reference_unit="FRU", federation_community="federation", approvals_required=1
    )
    proposed = _heartleaf(environment, "exchange", "resume", "HRB", "HHT", "--reason", "done")
    assert proposed.returncode == 0, proposed.stderr
    assert "resumption proposed as version 3" in proposed.stderr
    assert _suspended(exchange, "HRB", "HHT")
    exchange.approve(exchange.protocol_versions("HRB", "HHT")[-1].id, by="key:2")
    assert not _suspended(exchange, "HRB", "HHT")

    _one_line_error(
        _heartleaf(environment, "exchange", "suspend", "HHT", "LEAF", "--reason", "x"),
        "No protocol for HHT to LEAF is in force",
    )


def test_exchange_commands_refuse_an_unmigrated_database(tmp_path: Path) -> None:
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    _one_line_error(_heartleaf(environment, "exchange", "protocols"), "heartleaf db upgrade")


def test_every_exchange_command_has_help() -> None:
    for command in (
        ["exchange"],
        ["exchange", "valuations"],
        ["exchange", "set-valuation"],
        ["exchange", "protocols"],
        ["exchange", "suspend"],
        ["exchange", "resume"],
        ["exchange", "proposals"],
        ["exchange", "reject"],
    ):
        result = subprocess.run(
            [*HEARTLEAF, *command, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "usage: heartleaf exchange" in result.stdout


def test_with_four_eyes_the_shell_proposes_lists_and_rejects_but_never_approves(
    environment: dict[str, str], exchange: Exchange
) -> None:
    exchange.configure(
        reference_unit="FRU", federation_community="federation", approvals_required=1
    )
    proposed = _heartleaf(
        environment, "exchange", "set-valuation", "HRB", "1.1", "--reason", "review"
    )
    assert proposed.returncode == 0, proposed.stderr
    assert "proposed as proposal" in proposed.stderr
    assert exchange.valuation_at("HRB").rate == 1
    (proposal,) = exchange.proposals()
    assert (proposal.proposed_by, proposal.proposer_role) == ("cli:tester", "operator")

    listed = _heartleaf(environment, "exchange", "proposals")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()[1:]
    assert line.split()[:6] == [
        str(proposal.id),
        "valuation",
        "HRB",
        "pending",
        "0/1",
        "cli:tester",
    ]

    # Whatever --by says is not a key: its word never counts as an approval.
    with pytest.raises(LedgerError) as raised:
        exchange.approve_proposal(proposal.id, by=Signatory("cli:someone-else", "operator"))
    assert raised.value.code == Code.APPROVER_NOT_ELIGIBLE

    rejected = _heartleaf(
        environment, "exchange", "reject", str(proposal.id), "--reason", "not yet"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert exchange.proposal(proposal.id).state == "rejected"
    assert exchange.proposals() == []
    _one_line_error(
        _heartleaf(environment, "exchange", "reject", str(proposal.id), "--reason", "again"),
        "rejected already",
    )
