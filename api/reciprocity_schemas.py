"""Bodies of the reciprocity and clearing endpoints.

Figures are JSON integers of minor units of the federation's reference unit (named beside
them as ``reference_unit``); ratios travel as exact text ("0.25", or "1/3" when no finite
decimal is exact)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt

from api.schemas import Strict
from ledger.money import AMOUNT_MAX, BALANCE_MAX

ExactText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=80,
        pattern=r"^[0-9]{1,30}(\.[0-9]{1,30}|/[0-9]{1,30})?$",
        description="An exact ratio from 0 to 1: a decimal or a fraction.",
        examples=["0.25"],
    ),
]
Reference = Annotated[
    int,
    Field(
        description="Minor units of the reference unit (negative where reversals outweigh).",
        examples=[8000],
    ),
]


class WindowPublic(BaseModel):
    from_: dt.date = Field(
        alias="from", description="First UTC day counted.", examples=["2026-11-01"]
    )
    to: dt.date = Field(description="First UTC day no longer counted.", examples=["2026-12-01"])


class FiguresPublic(BaseModel):
    given: Reference = Field(description="What it gave: others paid it this much.")
    received: Reference = Field(description="What it received: it paid others this much.")
    net: Reference = Field(description="Given minus received.", examples=[-995])
    index: str | None = Field(
        description="(given - received) / (given + received), exact: 1 only gives, -1 only "
        "takes; null when nothing moved.",
        examples=["-0.0585"],
    )


class CounterpartyPublic(FiguresPublic):
    community: str = Field(description="The other community.", examples=["hilltop"])


class CommunityReciprocityPublic(FiguresPublic):
    community: str = Field(description="The community.", examples=["riverbend"])
    reference_unit: str = Field(description="The unit of every figure.", examples=["FRU"])
    window: WindowPublic | None = Field(description="The days counted; null: all time, now.")
    counterparties: list[CounterpartyPublic] = Field(
        description="Per other community: what this one gave it and received from it."
    )
    unvalued_transactions: int = Field(
        description="Transactions with another community in the window that recorded no flow "
        "because a currency had no valuation in force.",
        examples=[0],
    )


class MatrixCellPublic(BaseModel):
    giver: str = Field(description="The community that gave.", examples=["hilltop"])
    receiver: str = Field(description="The community that received.", examples=["riverbend"])
    amount: Reference = Field(description="What the giver gave the receiver.")


class MatrixPublic(BaseModel):
    reference_unit: str = Field(description="The unit of every figure.", examples=["FRU"])
    window: WindowPublic | None = Field(description="The days counted; null: all time, now.")
    communities: list[str] = Field(
        description="Every member community (the federation's own left out).",
        examples=[["hilltop", "riverbend", "saltmarsh"]],
    )
    cells: list[MatrixCellPublic] = Field(description="Each non-zero giver -> receiver figure.")
    totals: list[CounterpartyPublic] = Field(description="Per community: its row and column sums.")
    unvalued_transactions: int = Field(
        description="Transactions in the window that recorded no flow for want of a valuation.",
        examples=[0],
    )


class ThresholdsUpdate(Strict):
    absolute: StrictInt | None = Field(
        ge=1,
        le=AMOUNT_MAX,
        description="Flag a net intake (received - given) of at least this many minor units; "
        "null: not applied.",
        examples=[50000],
    )
    relative: ExactText | None = Field(
        description="Flag a net intake of at least this share of the community's volume, "
        "(received - given) / (received + given), more than 0 and at most 1; null: not applied.",
        examples=["0.25"],
    )


class ThresholdsPublic(BaseModel):
    absolute: int | None = Field(
        description="Net intake flagged from, in minor units; null: not applied.",
        examples=[50000],
    )
    relative: str | None = Field(
        description="Share of volume taken net flagged from, exact; null: not applied.",
        examples=["0.25"],
    )
    updated_at: dt.datetime | None = Field(
        description="When last set.", examples=["2026-11-25T09:00:00Z"]
    )
    updated_by: str | None = Field(description="Which key set them.", examples=["key:1"])


class FreeRiderLinePublic(BaseModel):
    community: str = Field(description="The community.", examples=["saltmarsh"])
    given: Reference = Field(description="Given in the window.")
    received: Reference = Field(description="Received in the window.")
    net_intake: Reference = Field(description="Received minus given in the window.")
    intake_share: str | None = Field(
        description="Net intake over volume, exact; null when nothing moved.", examples=["0.4"]
    )
    flagged: bool = Field(description="Passes every threshold the federation set.", examples=[True])
    previous_net_intake: Reference = Field(
        description="Net intake in the previous window of the same length."
    )
    previous_flagged: bool = Field(
        description="Whether it was flagged in the previous window.", examples=[False]
    )
    change: Reference = Field(description="Net intake now minus in the previous window.")


class FreeRiderReportPublic(BaseModel):
    reference_unit: str = Field(description="The unit of every figure.", examples=["FRU"])
    window: WindowPublic = Field(description="The days judged.")
    previous_window: WindowPublic = Field(description="The window before, of the same length.")
    thresholds: ThresholdsPublic = Field(description="The thresholds applied.")
    communities: list[FreeRiderLinePublic] = Field(
        description="Every member community, the largest net intake first."
    )
    flagged: list[str] = Field(
        description="The communities flagged, in the same order.", examples=[["saltmarsh"]]
    )


class CreditLineUpdate(Strict):
    credit_limit: StrictInt | None = Field(
        ge=0,
        le=BALANCE_MAX,
        description="The most the community may owe the rest of the network, in minor units of "
        "the reference unit (its net position may not fall below minus this); null removes "
        "the line.",
        examples=[100000],
    )


class CreditLinePublic(BaseModel):
    community: str = Field(description="The community.", examples=["riverbend"])
    credit_limit: int | None = Field(
        description="The most it may owe; null: no line.", examples=[100000]
    )
    position: int = Field(
        description="Its net position now: given minus received, all time.", examples=[-4995]
    )
    headroom: int | None = Field(
        description="How much more it may take in before the line stops it; null: no line.",
        examples=[95005],
    )
    updated_at: dt.datetime | None = Field(
        description="When the line was set.", examples=["2026-11-25T09:00:00Z"]
    )
    updated_by: str | None = Field(description="Which key set it.", examples=["key:1"])


class ObligationPublic(BaseModel):
    debtor: str = Field(description="The community that owes.", examples=["riverbend"])
    creditor: str = Field(description="The community owed.", examples=["hilltop"])
    amount: int = Field(description="Minor units of the reference unit.", examples=[8995])


class CycleClearedPublic(BaseModel):
    communities: list[str] = Field(
        description="The circle, in order: each owes the next, the last owes the first.",
        examples=[["hilltop", "riverbend", "saltmarsh"]],
    )
    amount: int = Field(description="Cancelled along every step of it.", examples=[4000])


class CommunityEffectPublic(BaseModel):
    community: str = Field(description="The community.", examples=["riverbend"])
    owes_before: int = Field(description="What it owed others before.", examples=[8995])
    owes_after: int = Field(description="What it owes others after.", examples=[4995])
    owed_before: int = Field(description="What others owed it before.", examples=[4000])
    owed_after: int = Field(description="What others owe it after.", examples=[0])
    net: int = Field(description="Owed minus owes: unchanged by clearing.", examples=[-4995])


class PaymentCurrencyPublic(BaseModel):
    from_currency: str = Field(description="Paid from the payer's accounts in.", examples=["HRB"])
    to_currency: str = Field(description="Arrives in the payee's accounts in.", examples=["HHT"])
    protocol_version: int | None = Field(
        description="The protocol version that converts; null when no conversion is needed.",
        examples=[1],
    )


class PlannedPaymentPublic(BaseModel):
    payer: str = Field(description="The community that pays.", examples=["riverbend"])
    payee: str = Field(description="The community paid.", examples=["hilltop"])
    amount: int = Field(description="Minor units of the reference unit.", examples=[4995])
    currencies: list[PaymentCurrencyPublic] = Field(
        description="How it can pay: currencies both hold, or pairs a protocol in force "
        "converts; empty when the protocols allow no way."
    )


class ClearingProposalPublic(BaseModel):
    id: str = Field(description="Execute it by this id.", examples=["clr_4kVb…"])
    status: Literal["proposed", "executed"] = Field(
        description="executed once booked.", examples=["proposed"]
    )
    fingerprint: str = Field(
        description="SHA-256 of the obligations it was computed from.", examples=["0515ff4f…"]
    )
    reference_unit: str = Field(description="The unit of every figure.", examples=["FRU"])
    obligations: list[ObligationPublic] = Field(description="The obligations before.")
    cleared: list[ObligationPublic] = Field(description="What is cancelled of each.")
    remaining: list[ObligationPublic] = Field(description="The obligations after.")
    cycles: list[CycleClearedPublic] = Field(description="The circles the set-off runs round.")
    gross_before: int = Field(description="Sum of the obligations before.", examples=[16995])
    gross_after: int = Field(description="Sum of the obligations after.", examples=[4995])
    total_cleared: int = Field(description="Gross before minus gross after.", examples=[12000])
    effects: list[CommunityEffectPublic] = Field(description="Per community, before and after.")
    settlement: list[PlannedPaymentPublic] = Field(description="Payments that settle what remains.")
    created_at: dt.datetime = Field(description="When proposed.", examples=["2026-11-25T09:00:00Z"])
    created_by: str = Field(description="Which key proposed it.", examples=["key:1"])
    executed_at: dt.datetime | None = Field(description="When executed.", examples=[None])
    executed_by: str | None = Field(description="Which key executed it.", examples=[None])
    transaction_ids: list[int] = Field(
        description="The ledger transactions that booked it between the position accounts.",
        examples=[[57]],
    )
