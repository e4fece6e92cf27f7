"""Bodies of the exchange endpoints. Rates travel as exact text ("0.8", "9/200")."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt

from api.schemas import (
    Amount,
    ClientId,
    CurrencyCode,
    InstantText,
    Slug,
    Strict,
    TransactionPublic,
    client_id_field,
)
from ledger.model import AccountType

RateText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=60,
        pattern=r"^[0-9]+(\.[0-9]+)?(/[0-9]+)?$",
        description="An exact positive rate: a decimal or a fraction.",
        examples=["0.8"],
    ),
]
Instant = Annotated[
    InstantText,
    Field(
        description="RFC 3339 with offset, or a date meaning its start (00:00 UTC).",
        examples=["2026-12-01T00:00:00Z"],
    ),
]


class ExchangeSettingsUpdate(Strict):
    reference_unit: CurrencyCode = Field(description="A currency of kind unit.", examples=["FRU"])
    federation_community: Slug = Field(
        description="Owner of liquidity, fee and rounding accounts.", examples=["federation"]
    )
    approvals_required: StrictInt = Field(
        0,
        ge=0,
        le=10,
        description="Approvals, besides the proposer, that a change of policy needs (four eyes: "
        "1). Changing it needs the approvals in force before the change.",
        examples=[1],
    )
    approvers: Literal["federation", "communities"] = Field(
        "federation",
        description="Whose approvals count: distinct federation keys, or distinct communities "
        "(each member community's treasurer keys are one seat, the federation's keys one).",
        examples=["federation"],
    )
    quote_seconds: StrictInt = Field(
        60, ge=5, le=3600, description="How long a quote holds.", examples=[60]
    )
    proposal_seconds: StrictInt = Field(
        604800,
        ge=3600,
        le=7776000,
        description="How long a proposed change waits for its approvals before it expires.",
        examples=[604800],
    )
    reason: str = Field(
        "Exchange settings",
        min_length=1,
        max_length=500,
        description="Why: kept with the proposal.",
        examples=["Four eyes from now on"],
    )


class ExchangeSettingsPublic(BaseModel):
    reference_unit: str = Field(description="The federation's reference unit.", examples=["FRU"])
    federation_community: str = Field(
        description="Owner of the federation's own accounts.", examples=["federation"]
    )
    approvals_required: int = Field(
        description="Approvals a change of policy needs, besides the proposer.", examples=[0]
    )
    approvers: str = Field(description="Whose approvals count.", examples=["federation"])
    quote_seconds: int = Field(description="Quote lifetime.", examples=[60])
    proposal_seconds: int = Field(description="Proposal lifetime.", examples=[604800])


class ValuationCreate(Strict):
    currency: CurrencyCode
    rate: RateText
    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Why: kept in the history.",
        examples=["Quarterly review"],
    )
    effective_from: Instant | None = Field(
        None, description="From when (default: now).", examples=[None]
    )


class ValuationPublic(BaseModel):
    currency: str = Field(description="Currency.", examples=["LEAF"])
    rate: str = Field(description="Reference units per major unit, exact.", examples=["0.8"])
    effective_from: dt.datetime = Field(
        description="In force from.", examples=["2026-11-25T09:00:00Z"]
    )
    recorded_at: dt.datetime = Field(
        description="When it was recorded.", examples=["2026-11-25T09:00:00Z"]
    )
    recorded_by: str = Field(description="Which key proposed it.", examples=["key:1"])
    reason: str = Field(description="Why.", examples=["Quarterly review"])
    proposal_id: int | None = Field(
        description="The proposal that put it in force (its approvals).", examples=[12]
    )


class WindowSpec(Strict):
    months: list[Annotated[StrictInt, Field(ge=1, le=12)]] = Field(
        default_factory=list,
        max_length=12,
        description="1-12; empty: any.",
        examples=[[1, 4, 7, 10]],
    )
    days: list[Annotated[StrictInt, Field(ge=1, le=31)]] = Field(
        default_factory=list,
        max_length=31,
        description="Days of the month; empty: any.",
        examples=[[1, 2, 3, 4, 5, 6, 7]],
    )
    weekdays: list[Annotated[StrictInt, Field(ge=0, le=6)]] = Field(
        default_factory=list, max_length=7, description="0 is Monday; empty: any.", examples=[[]]
    )
    hours: list[Annotated[StrictInt, Field(ge=0, le=23)]] = Field(
        default_factory=list, max_length=24, description="UTC hours; empty: any.", examples=[[]]
    )


class LimitsSpec(Strict):
    account_daily: Amount | None = Field(
        None, description="Per paying account per UTC day, in source minor units.", examples=[50000]
    )
    account_monthly: Amount | None = Field(
        None, description="Per paying account per UTC month.", examples=[None]
    )
    community_daily: Amount | None = Field(
        None, description="Per paying community per UTC day.", examples=[None]
    )
    community_monthly: Amount | None = Field(
        None, description="Per paying community per UTC month.", examples=[2000000]
    )


class ProtocolCreate(Strict):
    allowed: StrictBool = Field(
        True, description="False forbids the pair outright.", examples=[True]
    )
    rate: RateText | None = Field(
        None,
        description="Fixed target major units per source major unit; "
        "null derives it from valuations.",
        examples=[None],
    )
    fee_bps: StrictInt = Field(
        0,
        ge=0,
        le=9999,
        description="Fee in basis points of the source amount, rounded up.",
        examples=[50],
    )
    fee_account_id: StrictInt | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="Where fees go (default: the federation's fees account).",
        examples=[None],
    )
    eligible_account_types: list[AccountType] | None = Field(
        None, description="Account types that may convert; null: all.", examples=[["provider"]]
    )
    eligible_account_ids: list[Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]] | None = Field(
        None,
        max_length=1000,
        description="Named accounts that may convert; null: all.",
        examples=[None],
    )
    windows: list[WindowSpec] | None = Field(
        None, max_length=20, description="When it is open (any window); null: always."
    )
    limits: LimitsSpec = Field(
        default=LimitsSpec.model_validate({}),
        description="Per-period limits in source minor units.",
    )
    effective_from: Instant | None = Field(
        None, description="In force from (default: when activated).", examples=[None]
    )
    effective_until: Instant | None = Field(None, description="In force until.", examples=[None])
    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Why: kept in the history.",
        examples=["Founding protocol"],
    )


class ProtocolPublic(BaseModel):
    id: int = Field(description="Version id (approve it by this id).", examples=[3])
    from_currency: str = Field(description="Source currency.", examples=["LEAF"])
    to_currency: str = Field(description="Target currency.", examples=["HRB"])
    version: int = Field(description="Version number within the pair; the ETag.", examples=[2])
    state: Literal["proposed", "active", "rejected", "expired"] = Field(
        description="proposed waits for approvals; expired lapsed without them.",
        examples=["active"],
    )
    allowed: bool = Field(description="False: the pair is forbidden.", examples=[True])
    suspended: bool = Field(description="Suspended in an emergency.", examples=[False])
    rate: str | None = Field(
        description="Fixed rate, or null for valuation-derived.", examples=[None]
    )
    fee_bps: int = Field(description="Fee in basis points.", examples=[50])
    fee_account_id: int | None = Field(description="Fee account.", examples=[None])
    eligible_account_types: list[str] | None = Field(
        description="Eligible account types.", examples=[["provider"]]
    )
    eligible_account_ids: list[int] | None = Field(
        description="Eligible accounts.", examples=[None]
    )
    windows: list[WindowSpec] | None = Field(description="Windows.")
    limits: dict[str, int] = Field(description="Limits.", examples=[{"account_daily": 50000}])
    effective_from: dt.datetime = Field(
        description="In force from.", examples=["2026-11-25T09:00:00Z"]
    )
    effective_until: dt.datetime | None = Field(description="In force until.", examples=[None])
    proposed_at: dt.datetime = Field(
        description="When proposed.", examples=["2026-11-25T09:00:00Z"]
    )
    proposed_by: str = Field(description="Which key proposed it.", examples=["key:1"])
    reason: str = Field(description="Why.", examples=["Founding protocol"])
    approvals: list[str] = Field(description="Keys that approved it.", examples=[["key:2"]])
    activated_at: dt.datetime | None = Field(
        description="When it took effect.", examples=["2026-11-25T09:00:00Z"]
    )
    proposal_id: int | None = Field(
        description="Its governance proposal (approve or reject it there too).", examples=[7]
    )


class ProtocolAction(Strict):
    reason: str = Field(
        min_length=1, max_length=500, description="Why.", examples=["Suspected fraud"]
    )


class QuoteCreate(Strict):
    payer_account_id: StrictInt = Field(
        ge=1, le=2**31 - 1, description="The account that will pay.", examples=[5]
    )
    to_currency: CurrencyCode
    source_amount: Amount | None = Field(
        None, description="What the payer pays (give this or target_amount).", examples=[1000]
    )
    target_amount: Amount | None = Field(
        None, description="What the payee should receive.", examples=[None]
    )


class QuotePublic(BaseModel):
    id: str = Field(description="Pass as quote_id to convert at this price.", examples=["q_4kVb…"])
    protocol_version: int = Field(description="The protocol version priced.", examples=[1])
    payer_account_id: int = Field(description="Paying account.", examples=[5])
    from_currency: str = Field(description="Source currency.", examples=["LEAF"])
    to_currency: str = Field(description="Target currency.", examples=["HRB"])
    source_amount: int = Field(description="Paid by the payer, fee included.", examples=[1000])
    fee: int = Field(description="Fee in source minor units.", examples=[5])
    residue: int = Field(description="Rounding residue in source minor units.", examples=[0])
    target_amount: int = Field(description="Received by the payee.", examples=[79600])
    rate: str = Field(
        description="Target minor units per source minor unit, exact.", examples=["80"]
    )
    expires_at: dt.datetime = Field(
        description="Until when the price holds.", examples=["2026-11-25T09:01:00Z"]
    )


class ConversionCreate(Strict):
    payer_account_id: StrictInt = Field(
        ge=1, le=2**31 - 1, description="The account that pays.", examples=[5]
    )
    payee_account_id: StrictInt = Field(
        ge=1, le=2**31 - 1, description="The account paid, in its own currency.", examples=[12]
    )
    quote_id: str | None = Field(
        None, max_length=40, description="Convert at a quote's price.", examples=[None]
    )
    source_amount: Amount | None = Field(
        None, description="Without a quote: what the payer pays.", examples=[1000]
    )
    target_amount: Amount | None = Field(
        None, description="Without a quote: what the payee receives.", examples=[None]
    )
    expected_rate: RateText | None = Field(
        None,
        description="Without a quote, required: the rate you priced with (target minor "
        "units per source minor unit, as a quote shows it), as exact text. Slippage is "
        "measured against it; without max_slippage_bps the rate in force may not be worse.",
        examples=["0.045"],
    )
    max_slippage_bps: StrictInt | None = Field(
        None,
        ge=0,
        le=10000,
        description="Without a quote: refuse if the all-in price (fees and rounding "
        "included) is more than this below expected_rate.",
        examples=[100],
    )
    client_id: ClientId | None = client_id_field()
    memo: str | None = Field(
        None, max_length=500, description="Memo.", examples=["Wetland day, saltmarsh"]
    )
    category: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[a-z0-9_-]+(:[a-z0-9_-]+)*$",
        description="Category.",
        examples=["eco:wetland"],
    )


class ConversionPublic(BaseModel):
    transaction: TransactionPublic = Field(description="The ledger transaction, all legs.")
    protocol_version: int = Field(description="Protocol version used.", examples=[1])
    rate: str = Field(
        description="Exact target minor units per source minor unit.", examples=["80"]
    )
    source_amount: int = Field(description="Paid, fee included.", examples=[1000])
    fee: int = Field(description="Fee.", examples=[5])
    residue: int = Field(
        description="Rounding residue booked to the rounding account.", examples=[0]
    )
    target_amount: int = Field(description="Received.", examples=[79600])
    valuation_from: str | None = Field(
        description="Source valuation used, if derived.", examples=["0.8"]
    )
    valuation_to: str | None = Field(
        description="Target valuation used, if derived.", examples=["1"]
    )


# -- governance ---------------------------------------------------------------------------------


class ApprovalPublic(BaseModel):
    key: str = Field(description="The key that approved.", examples=["key:2"])
    role: str = Field(description="Its role.", examples=["federation"])
    community: str | None = Field(description="Its community, if any.", examples=[None])
    seat: str = Field(
        description="What it counted as: the key, or the community it represents.",
        examples=["key:2"],
    )
    at: dt.datetime = Field(description="When.", examples=["2026-11-25T09:05:00Z"])
    withdrawn_at: dt.datetime | None = Field(
        None,
        description="When its key was revoked while the proposal was pending: from then on "
        "it no longer counts. Null: it counts.",
        examples=[None],
    )


class ProposalPublic(BaseModel):
    id: int = Field(description="Proposal id: approve or reject it by this id.", examples=[7])
    kind: Literal["exchange_settings", "valuation", "protocol_version", "credit_line"] = Field(
        description="What kind of policy it changes.", examples=["valuation"]
    )
    subject: str = Field(
        description="What it changes: settings, a currency, a pair, a community.",
        examples=["LEAF"],
    )
    change: dict[str, Any] = Field(
        description="The change, exactly as it would apply (rates and instants as text).",
        examples=[{"currency": "LEAF", "rate": "0.9", "effective_from": None}],
    )
    state: Literal["pending", "applied", "rejected", "expired"] = Field(
        description="pending waits for approvals until expires_at.", examples=["pending"]
    )
    reason: str = Field(description="Why it was proposed.", examples=["Quarterly review"])
    proposed_at: dt.datetime = Field(description="When.", examples=["2026-11-25T09:00:00Z"])
    proposed_by: str = Field(description="The proposing key.", examples=["key:1"])
    proposer_role: str = Field(description="Its role.", examples=["federation"])
    proposer_community: str | None = Field(description="Its community.", examples=[None])
    approvers: str = Field(
        description="Whose approvals count for it: federation or communities.",
        examples=["federation"],
    )
    approvals_required: int = Field(description="Approvals it needs to apply.", examples=[1])
    approvals_counted: int = Field(description="Approvals that count so far.", examples=[0])
    approvals: list[ApprovalPublic] = Field(description="Who approved it, and when.")
    expires_at: dt.datetime = Field(
        description="Unapproved by then, it expires.", examples=["2026-12-02T09:00:00Z"]
    )
    closed_at: dt.datetime | None = Field(
        description="When it was applied, rejected or expired.", examples=[None]
    )
    closed_by: str | None = Field(
        description="The key whose approval applied it, or that rejected it.", examples=[None]
    )
    close_reason: str | None = Field(
        description="Why it was rejected (or that it was an emergency).", examples=[None]
    )


class ProposalReject(Strict):
    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Why: kept with the proposal.",
        examples=["The review is not finished"],
    )
