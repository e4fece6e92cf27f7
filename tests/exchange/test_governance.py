"""Governed policy: every change goes proposal -> approvals -> in force, on both databases.

The approval rule is the one in ``exchange.governance``: the rule in force before a change
decides it, the proposer never approves its own, each key (or, when communities are
represented, each community) counts once, and the last approval applies the change in
the unit of work that records it (PostgreSQL runs concurrent approvals for real)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

import migrations
from exchange.governance import approvals_table, proposals_table
from exchange.model import Proposal, ProtocolSpec, Settings, Signatory
from exchange.reciprocity import Reciprocity
from exchange.service import Exchange
from ledger.errors import Code, LedgerError
from ledger.model import CurrencyKind
from ledger.service import Ledger
from tests.conftest import Clock

SETUP = "key:setup"
ONE, TWO, THREE = "key:1", "key:2", "key:3"
WEEK = 7 * 86_400


def treasurer(key: str, community: str) -> Signatory:
    return Signatory(key, "treasurer", community)


@pytest.fixture
def exchange(ledger: Ledger) -> Exchange:
    """A federation of riverbend, hilltop and saltmarsh; currencies A and B valued at 1, A
    -> B at valuation; no approvals asked yet."""
    ledger.create_community("federation", "The federation")
    for slug in ("riverbend", "hilltop", "saltmarsh"):
        ledger.create_community(slug, slug.title())
    ledger.create_currency("FRU", kind=CurrencyKind.UNIT, scale=2, name="Unit", symbol="¤")
    exchange = Exchange(ledger)
    exchange.configure(reference_unit="FRU", federation_community="federation")
    for code in "AB":
        ledger.create_currency(code, kind=CurrencyKind.EXTERNAL, scale=2, name=code, symbol=code)
        exchange.set_valuation(code, Fraction(1), by=SETUP, reason="founding")
    exchange.propose(ProtocolSpec("A", "B"), by=SETUP, reason="founding")
    return exchange


def rule(exchange: Exchange, approvals: int, approvers: str = "federation", **more: Any) -> Any:
    return exchange.configure(
        reference_unit="FRU",
        federation_community="federation",
        approvals_required=approvals,
        approvers=approvers,
        **more,
    )


def code_of(change: Callable[[], object]) -> Code | None:
    try:
        change()
    except LedgerError as error:
        return error.code
    return None


def counts(engine: Engine) -> tuple[int, ...]:
    """Rows of every table a governed change writes: nothing written leaves these alone."""
    tables = (
        "governance_proposals",
        "governance_approvals",
        "valuations",
        "protocol_versions",
        "exchange_settings",
        "community_credit_lines",
    )
    applied = select(func.count()).where(proposals_table.c.state == "applied")
    with engine.connect() as connection:
        return (
            *(
                connection.execute(select(func.count()).select_from(text(table))).scalar_one()
                for table in tables
            ),
            connection.execute(applied).scalar_one(),
        )


def pending(outcome: object) -> Proposal:
    assert isinstance(outcome, Proposal), outcome
    assert outcome.state == "pending"
    return outcome


# -- the rule in force before the change ---------------------------------------------------------


def test_one_federation_key_cannot_lower_the_approvals_and_then_act_alone(
    exchange: Exchange,
) -> None:
    rule(exchange, 1)
    lowering = pending(rule(exchange, 0, by=ONE, reason="fewer eyes"))
    assert exchange.settings().approvals_required == 1
    # Still one approval needed, so its own protocol change waits too.
    version = exchange.propose(ProtocolSpec("A", "B", fee_bps=10), by=ONE, reason="a fee")
    assert version.state == "proposed"
    assert code_of(lambda: exchange.approve_proposal(lowering.id, by=ONE)) == Code.APPROVAL_INVALID
    assert code_of(lambda: exchange.approve(version.id, by=ONE)) == Code.APPROVAL_INVALID
    assert exchange.protocol_in_force("A", "B").spec.fee_bps == 0  # type: ignore[union-attr]
    # A second key's approval applies the lowering, in force from then on.
    applied = exchange.approve_proposal(lowering.id, by=TWO)
    assert (applied.state, applied.closed_by) == ("applied", TWO)
    assert [(a.key, a.role) for a in applied.approvals] == [(TWO, "federation")]
    assert exchange.settings().approvals_required == 0


def test_raising_the_approvals_also_needs_the_approvals_in_force(exchange: Exchange) -> None:
    rule(exchange, 2)
    raising = pending(rule(exchange, 3, by=ONE, reason="more eyes"))
    assert exchange.approve_proposal(raising.id, by=TWO).state == "pending"
    assert exchange.settings().approvals_required == 2
    assert exchange.approve_proposal(raising.id, by=THREE).state == "applied"
    assert exchange.settings().approvals_required == 3


def test_settings_equal_to_those_in_force_change_nothing(exchange: Exchange) -> None:
    rule(exchange, 1)
    before = counts(exchange.engine)
    assert isinstance(rule(exchange, 1, by=ONE), Settings)
    assert counts(exchange.engine) == before


def test_a_proposal_comes_into_force_under_the_stricter_rule(exchange: Exchange) -> None:
    rule(exchange, 1)
    waiting = pending(exchange.set_valuation("A", Fraction(11, 10), by=ONE, reason="up"))
    raising = pending(rule(exchange, 2, by=ONE))
    exchange.approve_proposal(raising.id, by=TWO)  # two approvals from now on
    # The valuation was proposed under one approval; it now needs two.
    assert exchange.approve_proposal(waiting.id, by=TWO).state == "pending"
    assert exchange.valuation_at("A").rate == 1
    done = exchange.approve_proposal(waiting.id, by=THREE)
    assert (done.state, done.approvals_required, done.approvals_counted) == ("applied", 2, 2)
    # And lowering the bar later does not let an old proposal through with fewer.
    old = pending(exchange.set_valuation("B", Fraction(9, 10), by=ONE, reason="down"))
    lowering = pending(rule(exchange, 1, by=ONE))
    exchange.approve_proposal(lowering.id, by=TWO)
    exchange.approve_proposal(lowering.id, by=THREE)
    assert exchange.settings().approvals_required == 1
    assert exchange.approve_proposal(old.id, by=TWO).state == "pending"


# -- valuations ---------------------------------------------------------------------------------


def test_a_valuation_waits_for_its_approvals_then_records_who_and_when(
    exchange: Exchange, clock: Clock
) -> None:
    rule(exchange, 1)
    proposal = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    assert proposal.change == {"currency": "A", "rate": "0.9", "effective_from": None}
    assert (proposal.approvals_required, proposal.approvals_counted) == (1, 0)
    assert exchange.valuation_at("A").rate == 1
    assert [p.id for p in exchange.proposals()] == [proposal.id]
    clock.advance(60)
    applied = exchange.approve_proposal(proposal.id, by=TWO)
    assert applied.state == "applied"
    valuation = exchange.valuation_at("A")
    assert (valuation.rate, valuation.recorded_by, valuation.reason) == (
        Fraction(9, 10),
        ONE,
        "review",
    )
    assert valuation.proposal_id == proposal.id
    # Without effective_from it takes effect when it comes into force, not when proposed.
    assert valuation.effective_from == applied.closed_at
    assert applied.approvals[0].at == applied.closed_at
    assert exchange.proposals() == []
    newest = exchange.proposals(state="applied", kind="valuation")[0]
    assert newest.id == proposal.id


def test_a_valuation_dated_before_the_one_in_force_is_refused(
    exchange: Exchange, clock: Clock
) -> None:
    founded = exchange.valuation_at("A").effective_from
    clock.advance(10)
    before = counts(exchange.engine)
    with pytest.raises(LedgerError) as raised:
        exchange.set_valuation(
            "A",
            Fraction(2),
            by=ONE,
            reason="backdated",
            effective_from=founded - dt.timedelta(seconds=1),
        )
    assert raised.value.code == Code.VALUATION_BACKDATED
    assert raised.value.extra["in_force_from"] == founded.isoformat()
    assert counts(exchange.engine) == before
    # At or after the one in force is fine (from when it is recorded on).
    exchange.set_valuation("A", Fraction(2), by=ONE, reason="same instant", effective_from=founded)


def test_a_valuation_overtaken_while_waiting_is_refused_on_approval(
    exchange: Exchange, clock: Clock
) -> None:
    rule(exchange, 1)
    soon = clock() + dt.timedelta(minutes=5)
    waiting = pending(
        exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="soon", effective_from=soon)
    )
    later = pending(
        exchange.set_valuation(
            "A", Fraction(8, 10), by=ONE, reason="later", effective_from=soon + dt.timedelta(1)
        )
    )
    exchange.approve_proposal(later.id, by=TWO)
    clock.advance(86_400 + 600)  # the later one is in force now
    before = counts(exchange.engine)
    assert code_of(lambda: exchange.approve_proposal(waiting.id, by=TWO)) == (
        Code.VALUATION_BACKDATED
    )
    assert counts(exchange.engine) == before
    assert exchange.proposal(waiting.id).approvals == ()


def test_approving_a_change_that_would_close_a_gaining_circle_is_refused(
    exchange: Exchange,
) -> None:
    exchange.propose(ProtocolSpec("B", "A", fixed_rate=Fraction(1)), by=SETUP, reason="back")
    rule(exchange, 1)
    dearer = pending(exchange.set_valuation("A", Fraction(11, 10), by=ONE, reason="up"))
    before = counts(exchange.engine)
    assert code_of(lambda: exchange.approve_proposal(dearer.id, by=TWO)) == Code.ARBITRAGE_CYCLE
    assert counts(exchange.engine) == before
    assert exchange.proposal(dearer.id).state == "pending"


# -- who approves --------------------------------------------------------------------------------


def test_the_proposer_never_approves_and_each_key_approves_once(exchange: Exchange) -> None:
    rule(exchange, 2)
    proposal = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    assert code_of(lambda: exchange.approve_proposal(proposal.id, by=ONE)) == Code.APPROVAL_INVALID
    exchange.approve_proposal(proposal.id, by=TWO)
    before = counts(exchange.engine)
    assert code_of(lambda: exchange.approve_proposal(proposal.id, by=TWO)) == Code.APPROVAL_INVALID
    assert counts(exchange.engine) == before
    assert exchange.approve_proposal(proposal.id, by=THREE).state == "applied"


def test_every_other_role_is_refused_its_stable_code_and_nothing_is_written(
    exchange: Exchange,
) -> None:
    rule(exchange, 1)
    proposal = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    others = [
        treasurer("key:t", "riverbend"),
        Signatory("key:v", "viewer", "riverbend"),
        Signatory("key:a", "auditor"),
    ]
    before = counts(exchange.engine)
    for signatory in others:
        assert (
            code_of(
                lambda s=signatory: exchange.set_valuation("A", Fraction(2), by=s, reason="mine")
            )
            == Code.FORBIDDEN
        )
        assert (
            code_of(
                lambda s=signatory: exchange.propose(ProtocolSpec("B", "A"), by=s, reason="mine")
            )
            == Code.FORBIDDEN
        )
        assert code_of(lambda s=signatory: rule(exchange, 0, by=s)) == Code.FORBIDDEN
        assert (
            code_of(
                lambda s=signatory: exchange.set_credit_line("riverbend", 0, by=s, reason="mine")
            )
            == Code.FORBIDDEN
        )
        assert code_of(lambda s=signatory: exchange.approve_proposal(proposal.id, by=s)) == (
            Code.APPROVER_NOT_ELIGIBLE
        )
        assert (
            code_of(lambda s=signatory: exchange.reject_proposal(proposal.id, by=s, reason="no"))
            == Code.APPROVER_NOT_ELIGIBLE
        )
    # The operator at the shell proposes, but its word is no approval.
    operator = Signatory("cli:alice", "operator")
    assert code_of(lambda: exchange.approve_proposal(proposal.id, by=operator)) == (
        Code.APPROVER_NOT_ELIGIBLE
    )
    assert counts(exchange.engine) == before


def test_representatives_of_distinct_communities_make_the_quorum(exchange: Exchange) -> None:
    rule(exchange, 2, "communities")
    proposal = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    assert proposal.approvers == "communities"
    first = exchange.approve_proposal(proposal.id, by=treasurer("key:r1", "riverbend"))
    assert (first.state, first.approvals_counted, first.approvals[0].seat) == (
        "pending",
        1,
        "community:riverbend",
    )
    before = counts(exchange.engine)
    # riverbend counted already; the proposer's seat is the federation's, for all its keys
    # and the treasurers of the federation's own community.
    for again in (
        treasurer("key:r2", "riverbend"),
        Signatory(TWO),
        treasurer("key:f", "federation"),
    ):
        assert code_of(lambda s=again: exchange.approve_proposal(proposal.id, by=s)) == (
            Code.APPROVAL_SEAT_TAKEN
        )
    assert (
        code_of(
            lambda: exchange.approve_proposal(
                proposal.id, by=Signatory("key:v", "viewer", "hilltop")
            )
        )
        == Code.APPROVER_NOT_ELIGIBLE
    )
    assert counts(exchange.engine) == before
    done = exchange.approve_proposal(proposal.id, by=treasurer("key:h", "hilltop"))
    assert (done.state, done.approvals_counted) == ("applied", 2)
    assert exchange.valuation_at("A").rate == Fraction(9, 10)


def test_a_treasurer_counts_only_when_the_settings_say_communities_are_represented(
    exchange: Exchange,
) -> None:
    rule(exchange, 1)
    proposal = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    with pytest.raises(LedgerError) as raised:
        exchange.approve_proposal(proposal.id, by=treasurer("key:h", "hilltop"))
    assert raised.value.code == Code.APPROVER_NOT_ELIGIBLE
    assert "federation keys" in raised.value.detail


def test_a_community_never_approves_its_own_credit_line(exchange: Exchange) -> None:
    rule(exchange, 1, "communities")
    line = pending(exchange.set_credit_line("riverbend", 50_000, by=ONE, reason="a line"))
    own = treasurer("key:r", "riverbend")
    before = counts(exchange.engine)
    assert code_of(lambda: exchange.approve_proposal(line.id, by=own)) == (
        Code.APPROVER_NOT_ELIGIBLE
    )
    assert code_of(lambda: exchange.reject_proposal(line.id, by=own, reason="mine")) == (
        Code.APPROVER_NOT_ELIGIBLE
    )
    assert counts(exchange.engine) == before
    exchange.approve_proposal(line.id, by=treasurer("key:h", "hilltop"))
    (riverbend,) = [
        c for c in Reciprocity(exchange.ledger).credit_lines() if c.community == "riverbend"
    ]
    assert (riverbend.credit_limit, riverbend.updated_by) == (50_000, ONE)


def test_without_approvals_a_credit_line_applies_at_once_and_is_kept_in_history(
    exchange: Exchange,
) -> None:
    line = exchange.set_credit_line("hilltop", 1_000, by=ONE, reason="a line")
    assert line.credit_limit == 1_000  # type: ignore[union-attr]
    (kept,) = exchange.proposals(state="applied", kind="credit_line")
    assert (kept.subject, kept.proposed_by, kept.change) == (
        "hilltop",
        ONE,
        {"community": "hilltop", "credit_limit": 1_000},
    )


# -- expiry and rejection ------------------------------------------------------------------------


def test_an_unapproved_proposal_expires(exchange: Exchange, clock: Clock) -> None:
    rule(exchange, 1, proposal_seconds=3_600)
    version = exchange.propose(ProtocolSpec("A", "B", fee_bps=10), by=ONE, reason="a fee")
    valuation = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    clock.advance(3_600)
    assert exchange.proposals() == []
    assert {p.id for p in exchange.proposals(state="expired")} == {
        version.proposal_id,
        valuation.id,
    }
    assert exchange.protocol_versions("A", "B")[-1].state == "expired"
    before = counts(exchange.engine)
    with pytest.raises(LedgerError) as raised:
        exchange.approve_proposal(valuation.id, by=TWO)
    assert raised.value.code == Code.PROPOSAL_EXPIRED
    assert code_of(lambda: exchange.approve(version.id, by=TWO)) == Code.PROPOSAL_EXPIRED
    assert counts(exchange.engine) == before
    # The next governed write records the expiry in the rows themselves.
    exchange.set_valuation("B", Fraction(9, 10), by=ONE, reason="next")
    with exchange.engine.connect() as connection:
        states = dict(
            connection.execute(select(proposals_table.c.id, proposals_table.c.state)).all()
        )
        version_state = connection.execute(
            text("SELECT state FROM protocol_versions WHERE id = :id"), {"id": version.id}
        ).scalar_one()
    assert states[valuation.id] == states[version.proposal_id] == "expired"
    assert version_state == "expired"
    assert exchange.valuation_at("A").rate == 1


def test_a_rejected_proposal_never_comes_into_force(exchange: Exchange) -> None:
    rule(exchange, 1)
    version = exchange.propose(ProtocolSpec("A", "B", fee_bps=10), by=ONE, reason="a fee")
    assert version.proposal_id is not None
    rejected = exchange.reject_proposal(version.proposal_id, by=TWO, reason="too dear")
    assert (rejected.state, rejected.closed_by, rejected.close_reason) == (
        "rejected",
        TWO,
        "too dear",
    )
    assert exchange.protocol_versions("A", "B")[-1].state == "rejected"
    assert code_of(lambda: exchange.approve_proposal(rejected.id, by=THREE)) == (
        Code.PROPOSAL_NOT_FOUND
    )
    # The proposer may withdraw its own.
    mine = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    assert exchange.reject_proposal(mine.id, by=ONE, reason="withdrawn").state == "rejected"
    assert exchange.valuation_at("A").rate == 1


def test_an_emergency_suspension_is_in_force_at_once_and_kept_as_one(exchange: Exchange) -> None:
    rule(exchange, 2)
    suspended = exchange.suspend("A", "B", by=ONE, reason="fraud")
    assert (suspended.state, suspended.spec.suspended) == ("active", True)
    assert suspended.proposal_id is not None
    kept = exchange.proposal(suspended.proposal_id)
    assert (kept.state, kept.close_reason) == ("applied", "emergency: in force at once")
    resumed = exchange.resume("A", "B", by=ONE, reason="cleared")
    assert resumed.state == "proposed"


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.postgres_only
def test_concurrent_approvals_apply_the_change_once(engine: Engine, exchange: Exchange) -> None:
    rule(exchange, 1)
    proposal = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    codes = _race(
        engine, exchange, 8, lambda mine, i: mine.approve_proposal(proposal.id, by=f"key:{i + 10}")
    )
    assert sorted(codes, key=str) == [None] + [Code.PROPOSAL_NOT_FOUND] * 7
    assert [v.rate for v in exchange.valuation_history("A")] == [1, Fraction(9, 10)]
    done = exchange.proposal(proposal.id)
    assert (done.state, len(done.approvals)) == ("applied", 1)


@pytest.mark.postgres_only
def test_one_key_approving_twice_at_once_counts_once(engine: Engine, exchange: Exchange) -> None:
    rule(exchange, 2)
    proposal = pending(exchange.set_valuation("A", Fraction(9, 10), by=ONE, reason="review"))
    codes = _race(engine, exchange, 6, lambda mine, i: mine.approve_proposal(proposal.id, by=TWO))
    assert sorted(codes, key=str) == [None] + [Code.APPROVAL_INVALID] * 5
    with engine.connect() as connection:
        rows = connection.execute(
            select(func.count()).where(approvals_table.c.proposal_id == proposal.id)
        ).scalar_one()
    assert rows == 1
    assert exchange.proposal(proposal.id).state == "pending"


def _race(
    engine: Engine, exchange: Exchange, count: int, act: Callable[[Exchange, int], object]
) -> list[Code | None]:
    start = threading.Barrier(count)
    codes: list[Code | None] = []

    def run(index: int) -> None:
        mine = Exchange(Ledger(engine, clock=exchange.clock))
        start.wait()
        codes.append(code_of(lambda: act(mine, index)))

    workers = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return codes


# -- the migration -------------------------------------------------------------------------------


def test_pending_protocol_versions_migrate_to_pending_proposals(
    database_url: str, engine: Engine, exchange: Exchange
) -> None:
    rule(exchange, 2)
    waiting = exchange.propose(ProtocolSpec("A", "B", fee_bps=10), by=ONE, reason="a fee")
    exchange.approve(waiting.id, by=TWO)
    migrations.downgrade(database_url, "2026_12_04_0006")
    with engine.begin() as connection:
        row = connection.execute(
            text("SELECT state, approvals FROM protocol_versions WHERE id = :id"),
            {"id": waiting.id},
        ).one()
    assert row.state == "proposed"
    migrations.upgrade(database_url)
    migrated = Exchange(Ledger(engine, clock=exchange.clock))
    version = migrated.protocol_versions("A", "B")[-1]
    assert (version.id, version.state, version.approvals) == (waiting.id, "proposed", (TWO,))
    assert version.proposal_id is not None
    proposal = migrated.proposal(version.proposal_id)
    assert (proposal.kind, proposal.subject, proposal.proposed_by, proposal.state) == (
        "protocol_version",
        "A->B",
        ONE,
        "pending",
    )
    assert [a.key for a in proposal.approvals] == [TWO]
    # The rule in force at the upgrade (federation keys, as before): one more approval.
    assert migrated.approve(waiting.id, by=THREE).state == "active"
    assert migrated.protocol_in_force("A", "B").spec.fee_bps == 10  # type: ignore[union-attr]
