"""Reciprocity and clearing endpoints: reports, free riders, credit lines, clearing.

Who sees what: federation and auditor keys read everything; a treasurer or viewer key reads
its own community's reciprocity and credit line, and another community's answer as if it
did not exist (404). Network-wide reports (matrix, free riders, obligations, settlement,
clearing) are for federation and auditor keys; only federation keys change anything.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.app import PROBLEM_RESPONSES, PrincipalDep, StateDep, _require
from api.exchange_routes import WAITING, waiting
from api.exchange_routes import _by as exchange_by
from api.keys import Principal, Role
from api.reciprocity_schemas import (
    ClearingProposalPublic,
    CommunityEffectPublic,
    CommunityReciprocityPublic,
    CounterpartyPublic,
    CreditLinePublic,
    CreditLineUpdate,
    CycleClearedPublic,
    FreeRiderLinePublic,
    FreeRiderReportPublic,
    MatrixCellPublic,
    MatrixPublic,
    ObligationPublic,
    PaymentCurrencyPublic,
    PlannedPaymentPublic,
    ThresholdsPublic,
    ThresholdsUpdate,
    WindowPublic,
)
from exchange.model import Proposal
from exchange.reciprocity import (
    FREE_RIDER_WINDOW_DAYS,
    ClearingProposal,
    CreditLine,
    DayWindow,
    Obligation,
    PlannedPayment,
    Reciprocity,
    Thresholds,
    exact_text,
    parse_exact,
)
from exchange.service import Exchange
from ledger.errors import Code, LedgerError, community_not_found

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)
DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
FromQuery = Annotated[
    str | None,
    Query(
        alias="from",
        pattern=DAY_PATTERN,
        description="The window's first UTC day, YYYY-MM-DD (with `to`).",
        examples=["2026-11-01"],
    ),
]
ToQuery = Annotated[
    str | None,
    Query(
        alias="to",
        pattern=DAY_PATTERN,
        description="The first UTC day after the window, YYYY-MM-DD (with `from`).",
        examples=["2026-12-01"],
    ),
]
CommunityPath = Annotated[
    str, Path(max_length=64, description="Community slug.", examples=["riverbend"])
]
ProposalPath = Annotated[
    str, Path(max_length=40, description="Clearing proposal id.", examples=["clr_4kVb…"])
]


def _reciprocity(state: Any) -> Reciprocity:
    return Reciprocity(state.ledger)


def _by(principal: Principal) -> str:
    return f"key:{principal.key_id}"


def _readable(principal: Principal, community: str) -> None:
    """A key of one community reads only its own: any other looks missing."""
    if not principal.reads_everything and community != principal.community:
        raise community_not_found(community)


def _day(text: str | None, name: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise LedgerError(
            Code.INVALID_REQUEST, f"'{name}' is not a day: {error}.", field=name
        ) from error


def _window(since: str | None, until: str | None) -> DayWindow | None:
    start, end = _day(since, "from"), _day(until, "to")
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise LedgerError(
            Code.INVALID_REQUEST,
            "Give both 'from' and 'to' for a window, or neither for all time.",
            field="from" if start is None else "to",
        )
    return DayWindow.of(start, end)


# -- views -------------------------------------------------------------------------------------


def _window_view(window: DayWindow | None) -> WindowPublic | None:
    if window is None:
        return None
    return WindowPublic.model_validate({"from": window.since, "to": window.until})


def _thresholds_view(thresholds: Thresholds) -> ThresholdsPublic:
    return ThresholdsPublic(
        absolute=thresholds.absolute,
        relative=None if thresholds.relative is None else exact_text(thresholds.relative),
        updated_at=thresholds.updated_at,
        updated_by=thresholds.updated_by,
    )


def _credit_line_view(line: CreditLine) -> CreditLinePublic:
    return CreditLinePublic(
        community=line.community,
        credit_limit=line.credit_limit,
        position=line.position,
        headroom=line.headroom,
        updated_at=line.updated_at,
        updated_by=line.updated_by,
    )


def _obligation_views(obligations: tuple[Obligation, ...] | list[Obligation]) -> list[Any]:
    return [
        ObligationPublic(debtor=o.debtor, creditor=o.creditor, amount=o.amount) for o in obligations
    ]


def _plan_views(plan: tuple[PlannedPayment, ...] | list[PlannedPayment]) -> list[Any]:
    return [
        PlannedPaymentPublic(
            payer=p.payer,
            payee=p.payee,
            amount=p.amount,
            currencies=[
                PaymentCurrencyPublic(
                    from_currency=c.from_currency,
                    to_currency=c.to_currency,
                    protocol_version=c.protocol_version,
                )
                for c in p.currencies
            ],
        )
        for p in plan
    ]


def _proposal_view(proposal: ClearingProposal) -> ClearingProposalPublic:
    return ClearingProposalPublic(
        id=proposal.id,
        status=proposal.status,  # type: ignore[arg-type]
        fingerprint=proposal.fingerprint,
        reference_unit=proposal.reference_unit,
        obligations=_obligation_views(proposal.obligations),
        cleared=_obligation_views(proposal.cleared),
        remaining=_obligation_views(proposal.remaining),
        cycles=[
            CycleClearedPublic(communities=list(cycle), amount=amount)
            for cycle, amount in proposal.cycles
        ],
        gross_before=proposal.gross_before,
        gross_after=proposal.gross_after,
        total_cleared=proposal.total_cleared,
        effects=[
            CommunityEffectPublic(
                community=e.community,
                owes_before=e.owes_before,
                owes_after=e.owes_after,
                owed_before=e.owed_before,
                owed_after=e.owed_after,
                net=e.net,
            )
            for e in proposal.effects
        ],
        settlement=_plan_views(proposal.settlement),
        created_at=proposal.created_at,
        created_by=proposal.created_by,
        executed_at=proposal.executed_at,
        executed_by=proposal.executed_by,
        transaction_ids=list(proposal.transaction_ids),
    )


# -- reports -----------------------------------------------------------------------------------


@router.get(
    "/reciprocity/communities/{community}",
    response_model=CommunityReciprocityPublic,
    tags=["reciprocity"],
)
def community_reciprocity(
    community: CommunityPath,
    state: StateDep,
    principal: PrincipalDep,
    since: FromQuery = None,
    until: ToQuery = None,
) -> CommunityReciprocityPublic:
    """What a community gave and received, per counterparty, in the reference unit: over
    the UTC days [from, to), or all time as of now when neither is given."""
    _readable(principal, community)
    report = _reciprocity(state).community(community, _window(since, until))
    return CommunityReciprocityPublic(
        community=report.community,
        reference_unit=report.reference_unit,
        window=_window_view(report.window),
        counterparties=[
            CounterpartyPublic(community=c.community, **c.figures.as_json())
            for c in report.counterparties
        ],
        unvalued_transactions=report.unvalued_transactions,
        **report.figures.as_json(),
    )


@router.get("/reciprocity/matrix", response_model=MatrixPublic, tags=["reciprocity"])
def reciprocity_matrix(
    state: StateDep,
    principal: PrincipalDep,
    since: FromQuery = None,
    until: ToQuery = None,
) -> MatrixPublic:
    """Community x community: what each gave each other, over [from, to) or all time."""
    _require(principal, Role.FEDERATION, Role.AUDITOR)
    matrix = _reciprocity(state).matrix(_window(since, until))
    return MatrixPublic(
        reference_unit=matrix.reference_unit,
        window=_window_view(matrix.window),
        communities=list(matrix.communities),
        cells=[
            MatrixCellPublic(giver=c.giver, receiver=c.receiver, amount=c.amount)
            for c in matrix.cells
        ],
        totals=[
            CounterpartyPublic(community=t.community, **t.figures.as_json()) for t in matrix.totals
        ],
        unvalued_transactions=matrix.unvalued_transactions,
    )


@router.get("/reciprocity/free-riders", response_model=FreeRiderReportPublic, tags=["reciprocity"])
def free_riders(
    state: StateDep,
    principal: PrincipalDep,
    since: FromQuery = None,
    until: ToQuery = None,
) -> FreeRiderReportPublic:
    """Net intake per community over [from, to) (default: the last 30 UTC days, today
    included) against the federation's thresholds, with the change against the window
    before of the same length."""
    _require(principal, Role.FEDERATION, Role.AUDITOR)
    window = _window(since, until)
    if window is None:
        tomorrow = state.clock().astimezone(dt.UTC).date() + dt.timedelta(days=1)
        window = DayWindow.of(tomorrow - dt.timedelta(days=FREE_RIDER_WINDOW_DAYS), tomorrow)
    report = _reciprocity(state).free_riders(window)
    lines = [
        FreeRiderLinePublic(
            community=line.community,
            given=line.figures.given,
            received=line.figures.received,
            net_intake=line.net_intake,
            intake_share=None if line.figures.index is None else exact_text(-line.figures.index),
            flagged=line.flagged,
            previous_net_intake=-line.previous.net,
            previous_flagged=line.flagged_previous,
            change=line.change,
        )
        for line in report.lines
    ]
    previous = _window_view(report.previous_window)
    current = _window_view(report.window)
    assert previous is not None
    assert current is not None
    return FreeRiderReportPublic(
        reference_unit=report.reference_unit,
        window=current,
        previous_window=previous,
        thresholds=_thresholds_view(report.thresholds),
        communities=lines,
        flagged=[line.community for line in report.lines if line.flagged],
    )


@router.get("/reciprocity/thresholds", response_model=ThresholdsPublic, tags=["reciprocity"])
def read_thresholds(state: StateDep, principal: PrincipalDep) -> ThresholdsPublic:
    """The federation's free-rider thresholds."""
    return _thresholds_view(_reciprocity(state).thresholds())


@router.put("/reciprocity/thresholds", response_model=ThresholdsPublic, tags=["reciprocity"])
def set_thresholds(
    body: ThresholdsUpdate, state: StateDep, principal: PrincipalDep
) -> ThresholdsPublic:
    """Set the free-rider thresholds: a community is flagged when its net intake over a
    window passes every threshold that is set."""
    _require(principal, Role.FEDERATION)
    relative = None
    if body.relative is not None:
        try:
            relative = parse_exact(body.relative)
        except ValueError as error:
            raise LedgerError(Code.INVALID_REQUEST, str(error), field="relative") from error
    thresholds = _reciprocity(state).set_thresholds(
        absolute=body.absolute, relative=relative, by=_by(principal)
    )
    return _thresholds_view(thresholds)


# -- credit lines ------------------------------------------------------------------------------


@router.get(
    "/reciprocity/credit-lines", response_model=list[CreditLinePublic], tags=["reciprocity"]
)
def list_credit_lines(state: StateDep, principal: PrincipalDep) -> list[CreditLinePublic]:
    """Every community's credit line, position and headroom (a community key: its own)."""
    return [
        _credit_line_view(line)
        for line in _reciprocity(state).credit_lines()
        if principal.reads_everything or line.community == principal.community
    ]


@router.get(
    "/reciprocity/credit-lines/{community}", response_model=CreditLinePublic, tags=["reciprocity"]
)
def read_credit_line(
    community: CommunityPath, state: StateDep, principal: PrincipalDep
) -> CreditLinePublic:
    _readable(principal, community)
    return _credit_line_view(_reciprocity(state).credit_line(community))


@router.put(
    "/reciprocity/credit-lines/{community}",
    response_model=CreditLinePublic,
    responses=WAITING,
    tags=["reciprocity"],
)
def set_credit_line(
    community: CommunityPath, body: CreditLineUpdate, state: StateDep, principal: PrincipalDep
) -> Any:
    """Set the most a community may owe the rest of the network; payments that would take
    it further are refused with community_credit_limit_exceeded. null removes the line.
    A change of policy: at once when the federation asks for no approvals, otherwise it
    waits for them (202 and the proposal); the community's own keys never approve it."""
    _require(principal, Role.FEDERATION)
    outcome = Exchange(state.ledger).set_credit_line(
        community,
        body.credit_limit,
        by=exchange_by(principal),
        reason=f"Credit line of {community}",
    )
    if isinstance(outcome, Proposal):
        return waiting(outcome)
    return _credit_line_view(outcome)


# -- obligations and clearing ------------------------------------------------------------------


@router.get("/reciprocity/obligations", response_model=list[ObligationPublic], tags=["clearing"])
def list_obligations(state: StateDep, principal: PrincipalDep) -> list[ObligationPublic]:
    """Who owes whom now: each pair's bilateral net of flows, less what clearing set off."""
    _require(principal, Role.FEDERATION, Role.AUDITOR)
    return _obligation_views(_reciprocity(state).obligations())


@router.get(
    "/reciprocity/settlement-plan", response_model=list[PlannedPaymentPublic], tags=["clearing"]
)
def settlement_plan(state: StateDep, principal: PrincipalDep) -> list[PlannedPaymentPublic]:
    """Payments that settle every net position, each with the ways the protocols allow.
    A payment carries out a line when it has category `settlement` and names the line in
    its metadata: `{"settles": {"debtor": …, "creditor": …, "basis": "settlement_plan"}}`
    (or `"basis": "<clearing proposal id>"` for what the latest executed clearing left).
    Then its payer gives; it is refused with settlement_exceeds_outstanding above what is
    outstanding, settlement_obligation_not_found when nothing is, and
    settlement_reference_invalid when the reference does not fit the payment. A label
    without a reference is a purchase like any other."""
    _require(principal, Role.FEDERATION, Role.AUDITOR)
    return _plan_views(_reciprocity(state).settlement_plan())


@router.post(
    "/clearing/proposals",
    status_code=201,
    response_model=ClearingProposalPublic,
    tags=["clearing"],
)
def propose_clearing(state: StateDep, principal: PrincipalDep) -> ClearingProposalPublic:
    """Compute the set-off that cancels the most of the obligations going round in circles,
    leaving every net position unchanged, and keep it for execution."""
    _require(principal, Role.FEDERATION)
    return _proposal_view(_reciprocity(state).propose_clearing(by=_by(principal)))


@router.get(
    "/clearing/proposals/{proposal_id}", response_model=ClearingProposalPublic, tags=["clearing"]
)
def read_clearing(
    proposal_id: ProposalPath, state: StateDep, principal: PrincipalDep
) -> ClearingProposalPublic:
    _require(principal, Role.FEDERATION, Role.AUDITOR)
    return _proposal_view(_reciprocity(state).clearing(proposal_id))


@router.post(
    "/clearing/proposals/{proposal_id}/execute",
    response_model=ClearingProposalPublic,
    tags=["clearing"],
)
def execute_clearing(
    proposal_id: ProposalPath, state: StateDep, principal: PrincipalDep
) -> ClearingProposalPublic:
    """Book the set-off as ledger transactions between the position accounts, all or
    nothing. Executing again answers the same; refused with clearing_obligations_changed
    when the obligations moved since the proposal."""
    _require(principal, Role.FEDERATION)
    return _proposal_view(_reciprocity(state).execute_clearing(proposal_id, by=_by(principal)))
