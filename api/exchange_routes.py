"""Exchange endpoints: settings, valuations, protocols (versioned, ETag), quotes, conversions,
and the governance of policy: proposals, approvals, rejections.

A change of policy (settings, a valuation, a protocol version, a credit line) that the
federation's rule lets apply at once answers as before (200 or 201 with what changed);
one that waits for approvals answers 202 with its proposal (``exchange.governance``).
Anyone may read proposals, except a community credit line's, which only its community,
the federation, auditors and (when communities are represented) treasurers see.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import JSONResponse

from api import keys as key_store
from api.app import (
    PROBLEM_RESPONSES,
    IdempotencyKey,
    InstantQuery,
    PrincipalDep,
    StateDep,
    _actor,
    _client_id,
    _instant,
    _json,
    _require,
    _sources_allowed,
    _transaction_view,
    _visible_account,
)
from api.exchange_schemas import (
    ApprovalPublic,
    ConversionCreate,
    ConversionPublic,
    ExchangeSettingsPublic,
    ExchangeSettingsUpdate,
    ProposalPublic,
    ProposalReject,
    ProtocolAction,
    ProtocolCreate,
    ProtocolPublic,
    QuoteCreate,
    QuotePublic,
    ValuationCreate,
    ValuationPublic,
    WindowSpec,
)
from api.keys import Principal, Role
from exchange import rates
from exchange.model import (
    Proposal,
    ProtocolSpec,
    ProtocolVersion,
    Settings,
    Signatory,
    Valuation,
    Window,
)
from exchange.service import Exchange
from ledger.errors import Code, LedgerError, proposal_not_found

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES, tags=["exchange"])
CodePath = Annotated[str, Path(max_length=32, description="Currency code.")]
ProposalPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Proposal id.")]
WAITING: dict[int | str, dict[str, Any]] = {
    202: {"model": ProposalPublic, "description": "The change waits for approvals."}
}


def _exchange(state: Any) -> Exchange:
    return Exchange(state.ledger)


def _by(principal: Principal) -> Signatory:
    """The key as governance records it: ``key:<id>``, its role and its community."""
    return Signatory(
        key_store.signatory(principal.key_id), str(principal.role), principal.community
    )


def _proposal_view(proposal: Proposal) -> ProposalPublic:
    return ProposalPublic(
        id=proposal.id,
        kind=proposal.kind,  # type: ignore[arg-type]
        subject=proposal.subject,
        change=proposal.change,
        state=proposal.state,  # type: ignore[arg-type]
        reason=proposal.reason,
        proposed_at=proposal.proposed_at,
        proposed_by=proposal.proposed_by,
        proposer_role=proposal.proposer_role,
        proposer_community=proposal.proposer_community,
        approvers=proposal.approvers,
        approvals_required=proposal.approvals_required,
        approvals_counted=proposal.approvals_counted,
        approvals=[
            ApprovalPublic(
                key=a.key,
                role=a.role,
                community=a.community,
                seat=a.seat,
                at=a.at,
                withdrawn_at=a.withdrawn_at,
            )
            for a in proposal.approvals
        ],
        expires_at=proposal.expires_at,
        closed_at=proposal.closed_at,
        closed_by=proposal.closed_by,
        close_reason=proposal.close_reason,
    )


def waiting(proposal: Proposal) -> JSONResponse:
    """202: the change was proposed and waits for approvals."""
    return JSONResponse(_json(_proposal_view(proposal)), status_code=202)


def _settings_view(settings: Settings) -> ExchangeSettingsPublic:
    return ExchangeSettingsPublic(
        **{f: getattr(settings, f) for f in ExchangeSettingsPublic.model_fields}
    )


def sees_proposal(principal: Principal, proposal: Proposal, settings: Settings | None) -> bool:
    """A credit line's proposal concerns one community's position: like the line itself,
    only that community sees it, besides keys that read everything and, when communities
    are represented, the treasurers asked to approve it."""
    if principal.reads_everything or proposal.kind != "credit_line":
        return True
    if proposal.subject == principal.community:
        return True
    return (
        principal.role == Role.TREASURER
        and settings is not None
        and settings.approvers == "communities"
    )


def _rate(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return rates.parse_rate(text)
    except ValueError as error:
        raise LedgerError(
            Code.RATE_INVALID,
            f"rate {text!r} is not a positive exact number; give one such as 0.045 or 9/200.",
            field="rate",
        ) from error


def _valuation_view(valuation: Valuation) -> ValuationPublic:
    return ValuationPublic(
        currency=valuation.currency,
        rate=rates.format_rate(valuation.rate),
        effective_from=valuation.effective_from,
        recorded_at=valuation.recorded_at,
        recorded_by=valuation.recorded_by,
        reason=valuation.reason,
        proposal_id=valuation.proposal_id,
    )


def _protocol_view(version: ProtocolVersion) -> ProtocolPublic:
    spec = version.spec
    return ProtocolPublic(
        id=version.id,
        from_currency=spec.from_currency,
        to_currency=spec.to_currency,
        version=version.version,
        state=version.state,  # type: ignore[arg-type]
        allowed=spec.allowed,
        suspended=spec.suspended,
        rate=None if spec.fixed_rate is None else rates.format_rate(spec.fixed_rate),
        fee_bps=spec.fee_bps,
        fee_account_id=spec.fee_account_id,
        eligible_account_types=None
        if spec.eligible_account_types is None
        else [str(t) for t in spec.eligible_account_types],
        eligible_account_ids=None
        if spec.eligible_account_ids is None
        else list(spec.eligible_account_ids),
        windows=None
        if spec.windows is None
        else [
            WindowSpec(
                months=list(w.months),
                days=list(w.days),
                weekdays=list(w.weekdays),
                hours=list(w.hours),
            )
            for w in spec.windows
        ],
        limits=dict(spec.limits),
        effective_from=version.effective_from,
        effective_until=spec.effective_until,
        proposed_at=version.proposed_at,
        proposed_by=version.proposed_by,
        reason=version.reason,
        approvals=list(version.approvals),
        activated_at=version.activated_at,
        proposal_id=version.proposal_id,
    )


@router.put("/exchange/settings", response_model=ExchangeSettingsPublic, responses=WAITING)
def configure(body: ExchangeSettingsUpdate, state: StateDep, principal: PrincipalDep) -> Any:
    """Set the reference unit, the federation's own community and the approval rule.
    Governed like every change of policy: changing `approvals_required` (down or up) or
    `approvers` needs the approvals the settings in force ask for."""
    _require(principal, Role.FEDERATION)
    outcome = _exchange(state).configure(
        reference_unit=body.reference_unit,
        federation_community=body.federation_community,
        approvals_required=body.approvals_required,
        approvers=body.approvers,
        quote_seconds=body.quote_seconds,
        proposal_seconds=body.proposal_seconds,
        by=_by(principal),
        reason=body.reason,
    )
    if isinstance(outcome, Proposal):
        return waiting(outcome)
    return _settings_view(outcome)


@router.get("/exchange/settings", response_model=ExchangeSettingsPublic)
def read_settings(state: StateDep, principal: PrincipalDep) -> ExchangeSettingsPublic:
    return _settings_view(_exchange(state).settings())


@router.post("/valuations", status_code=201, response_model=ValuationPublic, responses=WAITING)
def set_valuation(body: ValuationCreate, state: StateDep, principal: PrincipalDep) -> Any:
    """Value a currency in the reference unit from now (or `effective_from`, never before
    the valuation in force) on: at once, or once approved (202 and the proposal)."""
    _require(principal, Role.FEDERATION)
    outcome = _exchange(state).set_valuation(
        body.currency,
        _rate(body.rate),
        by=_by(principal),
        reason=body.reason,
        effective_from=body.effective_from,
    )
    if isinstance(outcome, Proposal):
        return waiting(outcome)
    return _valuation_view(outcome)


@router.get("/valuations/{code}", response_model=ValuationPublic)
def valuation_at(
    code: CodePath, state: StateDep, principal: PrincipalDep, at: InstantQuery = None
) -> ValuationPublic:
    """The valuation in force now, or at `at`."""
    return _valuation_view(_exchange(state).valuation_at(code, _instant(at, "at")))


@router.get("/valuations/{code}/history", response_model=list[ValuationPublic])
def valuation_history(
    code: CodePath, state: StateDep, principal: PrincipalDep
) -> list[ValuationPublic]:
    return [_valuation_view(v) for v in _exchange(state).valuation_history(code)]


@router.get("/protocols", response_model=list[ProtocolPublic])
def list_protocols(state: StateDep, principal: PrincipalDep) -> list[ProtocolPublic]:
    """The newest version of every pair's protocol."""
    return [_protocol_view(v) for v in _exchange(state).protocols()]


@router.get("/protocols/{from_currency}/{to_currency}", response_model=ProtocolPublic)
def protocol_in_force(
    from_currency: CodePath,
    to_currency: CodePath,
    state: StateDep,
    principal: PrincipalDep,
    response: Response,
    at: InstantQuery = None,
) -> ProtocolPublic:
    """The version in force now (or at `at`); its ETag is the pair's newest version."""
    exchange = _exchange(state)
    version = exchange.protocol_in_force(from_currency, to_currency, _instant(at, "at"))
    if version is None:
        raise LedgerError(
            Code.PROTOCOL_NOT_FOUND,
            f"No protocol for {from_currency} to {to_currency} is in force at that time; GET "
            "/v1/protocols lists the pairs that have one.",
        )
    response.headers["ETag"] = (
        f'"{exchange.protocol_versions(from_currency, to_currency)[-1].version}"'
    )
    return _protocol_view(version)


@router.get(
    "/protocols/{from_currency}/{to_currency}/versions", response_model=list[ProtocolPublic]
)
def protocol_history(
    from_currency: CodePath, to_currency: CodePath, state: StateDep, principal: PrincipalDep
) -> list[ProtocolPublic]:
    """Every version, proposed or active, oldest first: who changed what, when and why."""
    return [
        _protocol_view(v) for v in _exchange(state).protocol_versions(from_currency, to_currency)
    ]


@router.post(
    "/protocols/{from_currency}/{to_currency}", status_code=201, response_model=ProtocolPublic
)
def propose_protocol(
    from_currency: CodePath,
    to_currency: CodePath,
    body: ProtocolCreate,
    state: StateDep,
    principal: PrincipalDep,
    if_match: Annotated[str | None, Header(max_length=64, description="The ETag you read.")] = None,
) -> ProtocolPublic:
    """A new version of the pair's protocol (versions are never edited). In force at once,
    or after the approvals the federation requires."""
    _require(principal, Role.FEDERATION)
    exchange = _exchange(state)
    expected = None
    if if_match is not None:
        tag = if_match.strip().removeprefix("W/").strip('"')
        readable = tag.isascii() and tag.isdigit() and len(tag) <= 9
        expected = int(tag) if readable else -1  # -1 matches no version
    spec = ProtocolSpec(
        from_currency=from_currency,
        to_currency=to_currency,
        allowed=body.allowed,
        fixed_rate=_rate(body.rate),
        fee_bps=body.fee_bps,
        fee_account_id=body.fee_account_id,
        eligible_account_types=None
        if body.eligible_account_types is None
        else tuple(body.eligible_account_types),
        eligible_account_ids=None
        if body.eligible_account_ids is None
        else tuple(body.eligible_account_ids),
        windows=None
        if body.windows is None
        else tuple(
            Window(tuple(w.months), tuple(w.days), tuple(w.weekdays), tuple(w.hours))
            for w in body.windows
        ),
        limits={
            name: value for name, value in body.limits.model_dump().items() if value is not None
        },
        effective_from=body.effective_from,
        effective_until=body.effective_until,
    )
    return _protocol_view(
        exchange.propose(spec, by=_by(principal), reason=body.reason, expected_version=expected)
    )


@router.post(
    "/protocols/{from_currency}/{to_currency}/suspend",
    status_code=201,
    response_model=ProtocolPublic,
)
def suspend_protocol(
    from_currency: CodePath,
    to_currency: CodePath,
    body: ProtocolAction,
    state: StateDep,
    principal: PrincipalDep,
) -> ProtocolPublic:
    """Suspend the pair at once (no approvals needed in an emergency)."""
    _require(principal, Role.FEDERATION)
    return _protocol_view(
        _exchange(state).suspend(from_currency, to_currency, by=_by(principal), reason=body.reason)
    )


@router.post(
    "/protocols/{from_currency}/{to_currency}/resume",
    status_code=201,
    response_model=ProtocolPublic,
)
def resume_protocol(
    from_currency: CodePath,
    to_currency: CodePath,
    body: ProtocolAction,
    state: StateDep,
    principal: PrincipalDep,
) -> ProtocolPublic:
    """Propose lifting the suspension (approved like any change)."""
    _require(principal, Role.FEDERATION)
    return _protocol_view(
        _exchange(state).resume(from_currency, to_currency, by=_by(principal), reason=body.reason)
    )


@router.post("/protocol-versions/{version_id}/approve", response_model=ProtocolPublic)
def approve_protocol(
    version_id: Annotated[int, Path(ge=1, le=2**31 - 1)], state: StateDep, principal: PrincipalDep
) -> ProtocolPublic:
    """Approve a proposed version (its proposal) with a key whose approval counts."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    return _protocol_view(_exchange(state).approve(version_id, by=_by(principal)))


# -- governance ---------------------------------------------------------------------------------


@router.get("/governance/proposals", response_model=list[ProposalPublic], tags=["governance"])
def list_proposals(
    state: StateDep,
    principal: PrincipalDep,
    proposal_state: Annotated[
        Literal["pending", "applied", "rejected", "expired"] | None,
        Query(alias="state", description="Only these (default: pending)."),
    ] = "pending",
    kind: Annotated[
        Literal["exchange_settings", "valuation", "protocol_version", "credit_line"] | None,
        Query(description="Only this kind of policy."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 100,
) -> list[ProposalPublic]:
    """Proposed changes of policy, newest first: what is pending now (by default), or what
    was applied, rejected or expired, each with who proposed and who approved it, when."""
    exchange = _exchange(state)
    settings = _settings_or_none(exchange)
    return [
        _proposal_view(p)
        for p in exchange.proposals(state=proposal_state, kind=kind, limit=limit)
        if sees_proposal(principal, p, settings)
    ]


def _settings_or_none(exchange: Exchange) -> Settings | None:
    try:
        return exchange.settings()
    except LedgerError as error:
        if error.code != Code.EXCHANGE_NOT_CONFIGURED:
            raise
        return None


def _visible_proposal(state: Any, principal: Principal, proposal_id: int) -> Proposal:
    exchange = _exchange(state)
    proposal = exchange.proposal(proposal_id)
    if not sees_proposal(principal, proposal, _settings_or_none(exchange)):
        raise proposal_not_found(proposal_id)
    return proposal


@router.get(
    "/governance/proposals/{proposal_id}", response_model=ProposalPublic, tags=["governance"]
)
def read_proposal(
    proposal_id: ProposalPath, state: StateDep, principal: PrincipalDep
) -> ProposalPublic:
    return _proposal_view(_visible_proposal(state, principal, proposal_id))


@router.post(
    "/governance/proposals/{proposal_id}/approve",
    response_model=ProposalPublic,
    tags=["governance"],
)
def approve_proposal(
    proposal_id: ProposalPath, state: StateDep, principal: PrincipalDep
) -> ProposalPublic:
    """Approve a pending proposal; the last approval needed puts the change in force in the
    same transaction. The proposer never approves its own; each key (and, when
    communities are represented, each community) counts once."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    _visible_proposal(state, principal, proposal_id)
    proposal = _exchange(state).approve_proposal(proposal_id, by=_by(principal))
    return _proposal_view(proposal)


@router.post(
    "/governance/proposals/{proposal_id}/reject",
    response_model=ProposalPublic,
    tags=["governance"],
)
def reject_proposal(
    proposal_id: ProposalPath, body: ProposalReject, state: StateDep, principal: PrincipalDep
) -> ProposalPublic:
    """Reject a pending proposal (its proposer withdraws it, or a key whose approval would
    count rejects it): it never comes into force."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    _visible_proposal(state, principal, proposal_id)
    proposal = _exchange(state).reject_proposal(proposal_id, by=_by(principal), reason=body.reason)
    return _proposal_view(proposal)


@router.post("/quotes", status_code=201, response_model=QuotePublic)
def create_quote(body: QuoteCreate, state: StateDep, principal: PrincipalDep) -> QuotePublic:
    """Price a conversion for a paying account; the price holds until `expires_at`."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    _visible_account(state, principal, body.payer_account_id)
    refusal = _sources_allowed(state, principal, [body.payer_account_id])
    if refusal is not None:
        raise refusal
    quote = _exchange(state).quote(
        payer_account_id=body.payer_account_id,
        to_currency=body.to_currency,
        source_amount=body.source_amount,
        target_amount=body.target_amount,
    )
    protocol_version = _exchange(state).protocol_versions(quote.from_currency, quote.to_currency)
    number = next(v.version for v in protocol_version if v.id == quote.protocol_version_id)
    return QuotePublic(
        id=quote.id,
        protocol_version=number,
        payer_account_id=quote.payer_account_id,
        from_currency=quote.from_currency,
        to_currency=quote.to_currency,
        source_amount=quote.source_amount,
        fee=quote.fee,
        residue=quote.residue,
        target_amount=quote.target_amount,
        rate=rates.format_rate(quote.rate),
        expires_at=quote.expires_at,
    )


@router.post("/conversions", status_code=201, response_model=ConversionPublic)
def create_conversion(
    body: ConversionCreate,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Pay an account in its own currency from one in another, converting inside one
    transaction under the federation's protocol."""
    _require(principal, Role.FEDERATION, Role.TREASURER)
    # Before pricing, so another community's account looks missing rather than named by
    # a pricing refusal; the write checks it again, as the floor it is.
    refusal = _sources_allowed(state, principal, [body.payer_account_id])
    if refusal is not None:
        raise refusal
    exchange = _exchange(state)
    if body.quote_id is None and body.expected_rate is None:
        _require_expected_rate(exchange, body)
    try:
        outcome = exchange.convert(
            expected_rate=_rate(body.expected_rate),
            payer_account_id=body.payer_account_id,
            payee_account_id=body.payee_account_id,
            quote_id=body.quote_id,
            source_amount=body.source_amount,
            target_amount=body.target_amount,
            max_slippage_bps=body.max_slippage_bps,
            client_id=_client_id(body.client_id, idempotency_key),
            scope=principal.idempotency_scope,
            memo=body.memo,
            category=body.category,
            actor=_actor(principal),
        )
    except LedgerError as error:
        state.metrics.transaction_rejected(error.code)
        raise
    assert outcome.transaction is not None
    if not outcome.replayed:
        state.metrics.transactions_posted(1)
    record = exchange.conversion_of(outcome.transaction.id)
    assert record is not None
    versions = {v.id: v.version for v in exchange.protocol_versions(*_pair(outcome.transaction))}
    view = ConversionPublic(
        transaction=_transaction_view(outcome.transaction),
        protocol_version=versions[record["protocol_version_id"]],
        rate=record["rate"],
        source_amount=record["source_amount"],
        fee=record["fee"],
        residue=record["residue"],
        target_amount=record["target_amount"],
        valuation_from=record["valuation_from"],
        valuation_to=record["valuation_to"],
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(_json(view), status_code=201, headers=headers)


def _require_expected_rate(exchange: Exchange, body: ConversionCreate) -> None:
    """A conversion without a quote states the rate the client priced with, so that a
    rate that moved meanwhile is refused rather than taken. The answer names the rate in
    force; where there is none (an unknown account, a pair with no protocol) the
    conversion itself says what is wrong."""
    try:
        source = exchange.ledger.get_account(body.payer_account_id).currency
        target = exchange.ledger.get_account(body.payee_account_id).currency
        rate = exchange.rate_in_force(source, target)
    except LedgerError:
        return
    if rate is None:
        return
    raise LedgerError(
        Code.INVALID_REQUEST,
        "A conversion without a quote states expected_rate, the rate you priced with as "
        "exact text (with max_slippage_bps, how far below it you accept), or converts at a "
        f"quote's price with quote_id. The rate in force for {source}→{target} is "
        f'"{rates.format_rate(rate)}" (a quote shows it too: POST /v1/quotes).',
        field="expected_rate",
    )


def _pair(transaction: Any) -> tuple[str, str]:
    return transaction.postings[0].currency, transaction.postings[-1].currency
