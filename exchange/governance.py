"""Governed policy: every change of policy goes proposal -> approvals -> in force.

What is governed
----------------
The exchange settings (including the approval rule itself), valuations, protocol versions
and community credit lines. Each kind has a ``Policy``: how to check a proposed change
early, how to apply it, and what to do when its proposal ends without applying. The
policies live beside what they change (``exchange.service``); this module holds the one
path and the one approval rule they all share.

The path
--------
``submit`` records a proposal inside the caller's unit of work. When the rule in force
asks for no approvals (``approvals_required`` 0, as when a federation starts), it applies
at once, in that same unit of work, and is kept as an applied proposal: history shows who
changed what and when either way. Otherwise it waits, until it expires
(``proposal_seconds`` after it was proposed; the settings say how long), is rejected, or
collects its approvals: ``decide`` records one approval and, when it is the last one
needed, applies the change, all in one unit of work that first locks the settings row and
then the proposal's row (``FOR UPDATE`` on PostgreSQL; SQLite's writers are serial). So
two concurrent approvals are counted one after the other, and the change applies once; a
key's second approval also meets a unique constraint. If applying fails (say a valuation
would now close a gaining circle), the approval is refused with that code and nothing is
written: the proposal stays pending.

The approval rule (decided as a federation's auditor would want)
----------------------------------------------------------------
- *The rule in force before the change decides.* Lowering ``approvals_required`` needs as
  many approvals as it says now; so does raising it, or changing whose approvals count.
  A proposal comes into force under the stricter of the rule when it was proposed and the
  rule when its last approval arrives (``approvals_required`` is the larger of the two;
  whose approvals count is the rule now), so lowering the bar never lets an old proposal
  through with fewer approvals than it was proposed under.
- *Who proposes.* Federation keys (and the operator at the shell). Treasurers, viewers
  and auditors do not.
- *Who approves.* ``approvers`` "federation": N distinct federation keys. ``approvers``
  "communities" (representation of member communities, as the founding manual asks): N
  distinct *seats*, where each member community's treasurer keys are one seat and the
  federation's keys (with the treasurers of the federation's own community) are one seat;
  so N communities must agree, not N keys of one. Viewers and auditors never approve (an
  auditor that approves is no longer independent); the operator's ``--by`` is not
  authenticated, so it never counts as an approval either.
- *Never one's own.* The proposer never approves its own proposal, and in "communities"
  mode neither does another key of the proposer's seat. Each key approves once, and each
  seat counts once.
- *No interested party.* A community's keys do not approve that community's own credit
  line: in "communities" mode its seat does not count for it.
- *Rejecting.* The proposer may withdraw its proposal, and any key whose approval could
  count (or the operator at the shell) may reject it: a rejection keeps the policy as it
  is, so one suffices, and the record says who and why. A rejected or expired proposal is
  final; propose it again.
- *Emergencies.* Suspending a protocol is the one change in force at once whatever the
  rule (it only stops conversions); it is recorded as an applied proposal marked as an
  emergency, and lifting it is an ordinary proposal.

Expiry is a matter of time: a pending proposal past ``expires_at`` is shown as expired
and refused with ``proposal_expired``; the next governed write also records it so
(``state`` 'expired'), so the table itself tells the truth to anyone reading it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, cast

from sqlalchemy import Connection, RowMapping, Table, insert, select, update

from exchange import repository as repo
from exchange.model import Approval, Proposal, Signatory
from exchange.tables import GovernanceApprovalRow, GovernanceProposalRow
from ledger.errors import Code, LedgerError, proposal_not_found

proposals_table = cast(Table, GovernanceProposalRow.__table__)
approvals_table = cast(Table, GovernanceApprovalRow.__table__)

FEDERATION = "federation"
TREASURER = "treasurer"
OPERATOR = "operator"
FEDERATION_SEAT = "federation"
PROPOSER_ROLES = (FEDERATION, OPERATOR)
PROPOSAL_SECONDS_MIN = 3_600
PROPOSAL_SECONDS_MAX = 90 * 86_400


class Kind(StrEnum):
    EXCHANGE_SETTINGS = "exchange_settings"
    VALUATION = "valuation"
    PROTOCOL_VERSION = "protocol_version"
    CREDIT_LINE = "credit_line"


class Approvers(StrEnum):
    FEDERATION = "federation"  # N distinct federation keys
    COMMUNITIES = "communities"  # N distinct seats: member communities, and the federation


class State(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Rule:
    approvals_required: int
    approvers: Approvers
    federation_community: str | None = None  # its treasurers sit in the federation's seat

    def stricter(self, proposed_under: Rule) -> Rule:
        """The rule a pending proposal comes into force under: at least as many approvals
        as when it was proposed, counted the way the rule in force counts them."""
        return Rule(
            max(self.approvals_required, proposed_under.approvals_required),
            self.approvers,
            self.federation_community,
        )


NO_RULE = Rule(0, Approvers.FEDERATION)


class Policy(Protocol):
    """How one kind of policy changes. Every method runs inside the governed unit of work."""

    def check(self, connection: Connection, change: dict[str, Any], now: dt.datetime) -> None:
        """Refuse, when it is proposed, a change that could never apply."""

    def apply(self, connection: Connection, proposal: Proposal, now: dt.datetime) -> Any:
        """Put the change in force; refuse (``LedgerError``) if it cannot be now. Returns
        what the change made (a valuation, a protocol version, a credit line…)."""

    def noted(self, connection: Connection, proposal: Proposal) -> None:
        """The proposal's approvals or state changed (a copy to keep in step)."""


@dataclass(frozen=True, slots=True)
class Decided:
    proposal: Proposal
    result: Any  # what ``Policy.apply`` returned, when this step applied the change


class Governance:
    """The one path. Callers own the unit of work and pass its connection."""

    def __init__(self, policies: Mapping[Kind, Policy]) -> None:
        self.policies = policies

    # -- proposing ----------------------------------------------------------------------------

    def submit(
        self,
        connection: Connection,
        kind: Kind,
        subject: str,
        change: dict[str, Any],
        *,
        by: Signatory,
        reason: str,
        now: dt.datetime,
        emergency: bool = False,
    ) -> Decided:
        """Record a proposed change; apply it at once when the rule in force asks for no
        approvals (or for an ``emergency``: a suspension). Locks the settings row."""
        if by.role not in PROPOSER_ROLES:
            raise LedgerError(
                Code.FORBIDDEN,
                f"A {by.role} key cannot propose a change of policy; federation keys propose, "
                "and the federation's settings say whose approvals count.",
            )
        rule, lifetime = _rule_in_force(connection)
        self._expire_due(connection, now)
        policy = self.policies[kind]
        policy.check(connection, change, now)
        immediate = emergency or rule.approvals_required == 0
        proposal_id = int(
            connection.execute(
                insert(proposals_table).returning(proposals_table.c.id),
                {
                    "kind": str(kind),
                    "subject": subject,
                    "change": change,
                    "state": str(State.PENDING),
                    "reason": reason,
                    "proposed_at": now,
                    "proposed_by": by.key,
                    "proposer_role": by.role,
                    "proposer_community": by.community,
                    "approvals_required": rule.approvals_required,
                    "approvers": str(rule.approvers),
                    "expires_at": now + dt.timedelta(seconds=lifetime),
                },
            ).scalar_one()
        )
        proposal = self._proposal(connection, proposal_id, now, rule)
        if not immediate:
            policy.noted(connection, proposal)
            return Decided(proposal, None)
        result = policy.apply(connection, proposal, now)
        self._close(
            connection,
            proposal_id,
            State.APPLIED,
            now,
            by=None,
            reason="emergency: in force at once" if emergency and rule.approvals_required else None,
        )
        applied = self._proposal(connection, proposal_id, now, rule)
        policy.noted(connection, applied)
        return Decided(applied, result)

    # -- deciding -----------------------------------------------------------------------------

    def decide(
        self,
        connection: Connection,
        proposal_id: int,
        *,
        by: Signatory,
        approve: bool,
        now: dt.datetime,
        reason: str | None = None,
    ) -> Decided:
        """Approve (applying the change with the last approval needed) or reject a pending
        proposal. Locks the settings row, then the proposal's."""
        rule, _ = _rule_in_force(connection)
        row = proposal_row(connection, proposal_id, lock=True)
        if row is None:
            raise LedgerError(
                Code.PROPOSAL_NOT_FOUND,
                f"There is no proposal {proposal_id}; GET /v1/governance/proposals lists the "
                "pending ones.",
                field="proposal_id",
            )
        if row["state"] == State.EXPIRED or (
            row["state"] == State.PENDING and row["expires_at"] <= now
        ):
            raise LedgerError(
                Code.PROPOSAL_EXPIRED,
                f"Proposal {proposal_id} expired at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC "
                "without the approvals it needed; propose the change again.",
                field="proposal_id",
                extra={"expires_at": row["expires_at"].isoformat()},
            )
        if row["state"] != State.PENDING:
            raise LedgerError(
                Code.PROPOSAL_NOT_FOUND,
                f"Proposal {proposal_id} is {row['state']} already; only a pending proposal "
                "is approved or rejected.",
                field="proposal_id",
                extra={"state": row["state"]},
            )
        self._expire_due(connection, now)
        effective = rule.stricter(_rule_of(row))
        approvals = _approvals(connection, proposal_id)
        policy = self.policies[Kind(row["kind"])]
        if not approve:
            _check_may_reject(row, by, effective)
            self._close(connection, proposal_id, State.REJECTED, now, by=by.key, reason=reason)
            rejected = self._proposal(connection, proposal_id, now, rule)
            policy.noted(connection, rejected)
            return Decided(rejected, None)
        seat = check_may_approve(row, approvals, by, effective)
        connection.execute(
            insert(approvals_table),
            {
                "proposal_id": proposal_id,
                "approved_by": by.key,
                "role": by.role,
                "community": by.community,
                "seat": seat,
                "at": now,
            },
        )
        proposal = self._proposal(connection, proposal_id, now, rule)
        if proposal.approvals_counted < proposal.approvals_required:
            policy.noted(connection, proposal)
            return Decided(proposal, None)
        result = policy.apply(connection, proposal, now)
        self._close(
            connection, proposal_id, State.APPLIED, now, by=by.key, reason=None, rule=effective
        )
        applied = self._proposal(connection, proposal_id, now, rule)
        policy.noted(connection, applied)
        return Decided(applied, result)

    # -- reading ------------------------------------------------------------------------------

    def get(self, connection: Connection, proposal_id: int, now: dt.datetime) -> Proposal:
        if proposal_row(connection, proposal_id) is None:
            raise proposal_not_found(proposal_id)
        rule, _ = _rule_in_force(connection, lock=False)
        return self._proposal(connection, proposal_id, now, rule)

    def listing(
        self,
        connection: Connection,
        now: dt.datetime,
        *,
        state: State | None = State.PENDING,
        kind: Kind | None = None,
        limit: int = 100,
    ) -> list[Proposal]:
        """Proposals, newest first: by default those pending now (not yet expired)."""
        statement = select(proposals_table.c.id).order_by(proposals_table.c.id.desc())
        if kind is not None:
            statement = statement.where(proposals_table.c.kind == str(kind))
        if state in (State.PENDING, State.EXPIRED):
            due = (proposals_table.c.state == str(State.PENDING)) & (
                proposals_table.c.expires_at <= now
            )
            if state == State.PENDING:
                statement = statement.where(
                    proposals_table.c.state == str(State.PENDING),
                    proposals_table.c.expires_at > now,
                )
            else:
                statement = statement.where((proposals_table.c.state == str(State.EXPIRED)) | due)
        elif state is not None:
            statement = statement.where(proposals_table.c.state == str(state))
        rule, _ = _rule_in_force(connection, lock=False)
        return [
            self._proposal(connection, proposal_id, now, rule)
            for proposal_id in connection.execute(statement.limit(limit)).scalars()
        ]

    # -- keys that go -------------------------------------------------------------------------

    def withdraw_key(self, connection: Connection, key: str, now: dt.datetime) -> None:
        """A key was revoked: its approvals of pending proposals stop counting (they stay
        in history, marked withdrawn), and the pending proposals it made are withdrawn, as
        no one answers for them any more. What it approved that applied stays applied.
        Locks the settings row first, as every governed write does, so an approval being
        counted and a revocation come one after the other."""
        _rule_in_force(connection)
        pending = select(proposals_table.c.id).where(
            proposals_table.c.state == str(State.PENDING), proposals_table.c.expires_at > now
        )
        given = (
            approvals_table.c.proposal_id.in_(pending.scalar_subquery())
            & (approvals_table.c.approved_by == key)
            & approvals_table.c.withdrawn_at.is_(None)
        )
        approved = list(
            connection.execute(select(approvals_table.c.proposal_id).where(given)).scalars()
        )
        connection.execute(update(approvals_table).where(given).values(withdrawn_at=now))
        own = list(
            connection.execute(pending.where(proposals_table.c.proposed_by == key)).scalars()
        )
        for proposal_id in own:
            self._close(
                connection,
                proposal_id,
                State.REJECTED,
                now,
                by=key,
                reason="withdrawn: the proposer's key was revoked",
            )
            closed = self._proposal(connection, proposal_id, now, NO_RULE)
            self.policies[Kind(closed.kind)].noted(connection, closed)
        for proposal_id in approved:  # what counts changed: keep the policies' copies in step
            proposal = self._proposal(connection, proposal_id, now, NO_RULE)
            self.policies[Kind(proposal.kind)].noted(connection, proposal)

    # -- inside -------------------------------------------------------------------------------

    def _proposal(
        self, connection: Connection, proposal_id: int, now: dt.datetime, rule: Rule
    ) -> Proposal:
        row = proposal_row(connection, proposal_id)
        assert row is not None
        approvals = _approvals(connection, proposal_id)
        state = row["state"]
        if state == State.PENDING and row["expires_at"] <= now:
            state = str(State.EXPIRED)
        recorded = replace(_rule_of(row), federation_community=rule.federation_community)
        effective = rule.stricter(recorded) if state == State.PENDING else recorded
        return Proposal(
            id=row["id"],
            kind=row["kind"],
            subject=row["subject"],
            change=dict(row["change"]),
            state=state,
            reason=row["reason"],
            proposed_at=row["proposed_at"],
            proposed_by=row["proposed_by"],
            proposer_role=row["proposer_role"],
            proposer_community=row["proposer_community"],
            approvers=str(effective.approvers),
            approvals_required=effective.approvals_required,
            approvals_counted=counted(row, approvals, effective),
            approvals=approvals,
            expires_at=row["expires_at"],
            closed_at=row["closed_at"],
            closed_by=row["closed_by"],
            close_reason=row["close_reason"],
        )

    def _close(
        self,
        connection: Connection,
        proposal_id: int,
        state: State,
        now: dt.datetime,
        *,
        by: str | None,
        reason: str | None,
        rule: Rule | None = None,
    ) -> None:
        """End a proposal; an applied one records the rule it was applied under."""
        values: dict[str, Any] = {
            "state": str(state),
            "closed_at": now,
            "closed_by": by,
            "close_reason": reason,
        }
        if rule is not None:
            values.update(approvals_required=rule.approvals_required, approvers=str(rule.approvers))
        connection.execute(
            update(proposals_table).where(proposals_table.c.id == proposal_id).values(**values)
        )

    def _expire_due(self, connection: Connection, now: dt.datetime) -> None:
        """Record as expired what expired by time, and tell its policy."""
        due = connection.execute(
            select(proposals_table.c.id, proposals_table.c.expires_at).where(
                proposals_table.c.state == str(State.PENDING),
                proposals_table.c.expires_at <= now,
            )
        ).all()
        for proposal_id, expires_at in due:
            connection.execute(
                update(proposals_table)
                .where(proposals_table.c.id == proposal_id)
                .values(state=str(State.EXPIRED), closed_at=expires_at)
            )
            expired = self._proposal(connection, proposal_id, now, NO_RULE)
            self.policies[Kind(expired.kind)].noted(connection, expired)


# -- the one approval rule ------------------------------------------------------------------------


def seat_of(role: str, community: str | None, key: str, rule: Rule) -> str:
    """What a signatory's approval counts as under ``rule``: its key when only federation
    keys approve; the community it represents when communities are represented."""
    if rule.approvers == Approvers.FEDERATION:
        return key
    if role in (FEDERATION, OPERATOR) or community is None:
        return FEDERATION_SEAT
    if community == rule.federation_community:
        return FEDERATION_SEAT
    return f"community:{community}"


def _approver_roles(rule: Rule) -> tuple[str, ...]:
    return (FEDERATION, TREASURER) if rule.approvers == Approvers.COMMUNITIES else (FEDERATION,)


def _interested_community(row: RowMapping) -> str | None:
    """The community a change concerns directly (a credit line's), whose keys do not
    approve it."""
    return str(row["subject"]) if row["kind"] == Kind.CREDIT_LINE else None


def counted(row: RowMapping, approvals: Sequence[Approval], rule: Rule) -> int:
    """How many of ``approvals`` count for the proposal under ``rule``: distinct keys (or
    seats) of a role that may approve, none the proposer's nor the interested community's."""
    proposer_seat = seat_of(
        row["proposer_role"], row["proposer_community"], row["proposed_by"], rule
    )
    interested = _interested_community(row)
    seats = {
        seat_of(a.role, a.community, a.key, rule)
        for a in approvals
        if a.withdrawn_at is None
        and a.role in _approver_roles(rule)
        and a.key != row["proposed_by"]
        and (interested is None or a.community != interested)
    }
    seats.discard(proposer_seat)
    return len(seats)


def check_may_approve(
    row: RowMapping, approvals: Sequence[Approval], by: Signatory, rule: Rule
) -> str:
    """Refuse an approval that may not count; return the seat it takes."""
    who = (
        "federation keys"
        if rule.approvers == Approvers.FEDERATION
        else "federation keys and the treasurer keys of member communities, one per community"
    )
    if by.role not in _approver_roles(rule):
        raise LedgerError(
            Code.APPROVER_NOT_ELIGIBLE,
            f"A {by.role} key's approval does not count: the federation's settings say "
            f"changes are approved by {who}.",
            extra={"approvers": str(rule.approvers)},
        )
    if by.key == row["proposed_by"]:
        raise LedgerError(
            Code.APPROVAL_INVALID,
            f"{by.key} proposed this change, so it cannot approve it; {who} other than the "
            "proposer approve it.",
            field="proposal_id",
        )
    if any(a.key == by.key for a in approvals):
        raise LedgerError(
            Code.APPROVAL_INVALID,
            f"{by.key} approved this change already; each key approves once.",
            field="proposal_id",
        )
    interested = _interested_community(row)
    if interested is not None and by.community == interested:
        raise LedgerError(
            Code.APPROVER_NOT_ELIGIBLE,
            f"{interested}'s keys do not approve {interested}'s own credit line; keys of "
            "other communities or of the federation do.",
            extra={"approvers": str(rule.approvers)},
        )
    seat = seat_of(by.role, by.community, by.key, rule)
    if rule.approvers == Approvers.COMMUNITIES:
        proposer_seat = seat_of(
            row["proposer_role"], row["proposer_community"], row["proposed_by"], rule
        )
        taken = {
            seat_of(a.role, a.community, a.key, rule) for a in approvals if a.withdrawn_at is None
        }
        if seat == proposer_seat or seat in taken:
            whose = "the federation" if seat == FEDERATION_SEAT else seat.split(":", 1)[1]
            raise LedgerError(
                Code.APPROVAL_SEAT_TAKEN,
                f"{whose} already "
                + ("proposed" if seat == proposer_seat else "approved")
                + " this change, and each community counts once; a key of another "
                "community approves it.",
                field="proposal_id",
                extra={"seat": seat},
            )
    return seat


def _check_may_reject(row: RowMapping, by: Signatory, rule: Rule) -> None:
    if by.key == row["proposed_by"] or by.role == OPERATOR:
        return  # withdrawing one's own proposal; the operator at the shell may stop any
    if by.role not in _approver_roles(rule):
        raise LedgerError(
            Code.APPROVER_NOT_ELIGIBLE,
            f"A {by.role} key cannot reject a change: the proposer withdraws it, or a key "
            "whose approval would count rejects it.",
            extra={"approvers": str(rule.approvers)},
        )
    interested = _interested_community(row)
    if interested is not None and by.community == interested:
        raise LedgerError(
            Code.APPROVER_NOT_ELIGIBLE,
            f"{interested}'s keys do not decide {interested}'s own credit line.",
            extra={"approvers": str(rule.approvers)},
        )


# -- rows -----------------------------------------------------------------------------------------


def _rule_in_force(connection: Connection, *, lock: bool = True) -> tuple[Rule, int]:
    """The rule in force and the proposal lifetime, from the settings row (locked: every
    governed write queues on it). Before the first configuration there is no rule: the
    first settings apply at once."""
    from exchange.model import PROPOSAL_SECONDS_DEFAULT  # noqa: PLC0415 - one default

    row = repo.settings(connection, lock=lock)
    if row is None:
        return NO_RULE, PROPOSAL_SECONDS_DEFAULT
    return (
        Rule(row["approvals_required"], Approvers(row["approvers"]), row["federation_community"]),
        int(row["proposal_seconds"]),
    )


def _rule_of(row: RowMapping) -> Rule:
    return Rule(row["approvals_required"], Approvers(row["approvers"]))


def proposal_row(
    connection: Connection, proposal_id: int, *, lock: bool = False
) -> RowMapping | None:
    statement = select(proposals_table).where(proposals_table.c.id == proposal_id)
    if lock:
        statement = statement.with_for_update()
    return connection.execute(statement).mappings().first()


def _approvals(connection: Connection, proposal_id: int) -> tuple[Approval, ...]:
    statement = (
        select(approvals_table)
        .where(approvals_table.c.proposal_id == proposal_id)
        .order_by(approvals_table.c.id)
    )
    return tuple(
        Approval(r["approved_by"], r["role"], r["community"], r["seat"], r["at"], r["withdrawn_at"])
        for r in connection.execute(statement).mappings()
    )
