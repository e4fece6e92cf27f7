"""Reciprocity: who gave what to whom, credit lines between communities, and clearing.

The problem
-----------
The federation watches that communities give about as much as they take. What a community
gives is what its members deliver to members of other communities, measured by what those
pay for it: when riverbend's members pay saltmarsh's members, saltmarsh gave to riverbend.
Payments arrive in many currencies (a shared Leaf, riverbend's Hearts converted into
saltmarsh's), so every flow is valued in the federation's reference unit (a currency of
kind ``unit``) at the valuation in force when the value moved.

Flows
-----
The ledger tells ``ReciprocityObserver`` of every ``Movement``: value that moved for real
between accounts of two communities (a posted transaction, the posted part of a hold, a
reversal), inside the unit of work that moves it. One transaction's movements become flows
in three steps:

1. Value each movement (``amount / 10^scale * valuation * 10^unit_scale``, an exact
   ``Fraction`` of reference-unit minor units) and net them per community, leaving out the
   federation's own community: a conversion passes through the federation's liquidity
   accounts (payer -> liquidity[from], liquidity[to] -> payee), and netting per community
   without the federation turns it into one flow between payer's and payee's communities.
   What stays with the federation (fees, rounding residue, the spread) is no flow.
2. Round each community's net half to even, to whole minor units of the reference unit.
3. Pair the communities that paid (negative net) with those that were paid (positive net),
   in community-id order, greedily (the north-west corner rule): each pair's flow is the
   smaller of what is left on either side, so the flows total ``min(paid, received)``.

Worked example: ana (riverbend) converts 1,000 Leaves (scale 0, valued 0.8) to pay cai
(hilltop) in Hilltop Hearts (scale 2, valued 1) with a 0.5% fee: riverbend's net is
-1,000 * 0.8 * 100 = -80,000; hilltop's is +79,600 (995 Leaves' worth arrived); the
federation keeps the fee. One flow: hilltop gave riverbend 79,600 minor units of the unit.

Each flow is booked twice, both inside the writing unit of work: as a ledger transaction
between the two communities' *position accounts* (one per community, in the reference
unit, type ``clearing``, named ``reciprocity position``: receiver -> giver, so a position's
balance is what the community gave minus what it received, and all positions sum to zero
like every currency), and in ``reciprocity_flows`` beside the transaction that caused it,
with the aggregates per (giver, receiver) and per (giver, receiver, UTC day) that the
reports read. No report sums history.

A reversal reads the flows recorded for its original and books them negated, on the
reversal's own day: it undoes exactly what was recorded, with the original valuation and
rounding, never a revaluation. Holds move nothing (only their posted part counts when they
are posted); voids and expiries move nothing. Movements in the reference unit itself are
not flows (the position accounts hold it; a write that would move a position account by
hand is refused).

Without a configured exchange there is no reference unit, so nothing is recorded and the
reports answer ``exchange_not_configured``; payments are never refused for it. When a
currency moved has no valuation in force, the transaction records no flow but a row in
``reciprocity_unvalued`` per community involved, and the reports count those
(``unvalued_transactions``) so nothing is hidden.

Settlements
-----------
A settlement counts the other way round from a purchase: it pays a debt between
communities rather than buying anything, so the paying community is the one that gives
(its position rises, the payee's falls). What makes a payment a settlement is what it
pays, not its label: it is categorised ``settlement`` *and* names, in its own
transaction's metadata, the obligation it pays::

    "category": "settlement",
    "metadata": {"settles": {"debtor": "riverbend", "creditor": "hilltop",
                             "basis": "settlement_plan"}}

``basis`` is ``"settlement_plan"`` (a line of the settlement plan in force: the plan
computed from the positions as they stand when the payment posts) or the id of the latest
executed clearing proposal (``"clr_…"``: an obligation that clearing left remaining; two
executed in the same microsecond are both the latest). The
reference stays with the payment, immutable like it, so an auditor reads from the
transaction alone what it settled and on what basis. Inside the writing unit of work, after
locking every position account (the plan depends on all of them), the observer checks:

- the reference has exactly those three keys, names two communities of the federation
  and a basis as above, else ``settlement_reference_invalid``;
- the payment moves value from the debtor's community to the creditor's and between no
  other communities, valued (an unvalued currency would settle nothing), else
  ``settlement_reference_invalid``;
- something is outstanding, else ``settlement_obligation_not_found``: on the plan, the
  line debtor -> creditor; on a clearing, that proposal is the latest executed one and
  its remaining obligation of debtor to creditor, less what earlier settlements naming
  it paid (reversed ones not counted), and never more than the debtor owes the creditor
  now (trade since can have lowered it);
- the payment's value is at most what is outstanding, else
  ``settlement_exceeds_outstanding``, which names the outstanding amount. A settlement is
  refused rather than capped: the payment moves its whole amount, and counting only part
  of it as settling would leave the rest a purchase nobody made.

Within a write, each settlement is judged on what the transactions before it left, like
the credit lines below; a refusal refuses that payment alone in a batch. A payment
categorised ``settlement`` without ``settles`` is a purchase like any other (the label is
just a label), and ``settles`` on a payment of another category means nothing to
reciprocity: the observer reads the metadata only of payments categorised settlement, so
other payments pay nothing for the check. A settlement's reversal undoes its flow exactly,
as any reversal does, and the debt it paid is outstanding again.

Credit lines
------------
The federation sets, per community, the most it may owe the rest of the network: its
position may not fall below ``-credit_limit``. The observer locks the position accounts of
the communities a write moves and refuses with ``community_credit_limit_exceeded`` any
write that lowers a community's position below its floor. The lock order is global: the
write's own accounts (the ledger, ascending id), the position accounts (ascending id), then
the event feed's counter row, which the ledger takes last in every write, after telling its
observers. So concurrent writes queue and cannot pass a floor jointly, and never deadlock. A write
that raises a position (or a clearing, which moves none) is never refused, even when a
tightened line leaves the position below the floor. Within a batch, each payment is judged
on the positions the ones before it left, and a refusal refuses that payment alone (the
ledger judges the rest again without it), as the ledger's own rules do.

Obligations and clearing
------------------------
Between two communities a and b, with ``G(a, b)`` what a gave b in all and ``K(a, b)`` what
clearing set off of b's obligation to a, the bilateral net
``n(a, b) = (G(a, b) - K(a, b)) - (G(b, a) - K(b, a))`` is an obligation of b to a when
positive (and of a to b when negative). A community's obligations owed to it minus those it
owes equal its position, always: clearing removes the same amount from a community's debts
as from its claims. ``exchange.clearing`` computes the optimal set-off; executing a
proposal books it between the position accounts (creditor -> debtor per cleared
obligation, zero in total per community) and adds it to ``K``, all in one unit of work that
first checks the obligations still have the fingerprint the proposal was computed from.

Verifying
---------
``exchange.reciprocity_verify`` recomputes every maintained figure (pairs, days, positions)
from the flows and the executed clearings and names each one that differs; ``heartleaf
verify`` runs it after the ledger's own checks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, NoReturn, TypeVar, cast

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from exchange import repository as exchange_repository
from exchange.service import protocol_version_from_row
from exchange.tables import (
    ClearingProposalRow,
    CreditLineRow,
    ReciprocityDayRow,
    ReciprocityFlowRow,
    ReciprocityPairRow,
    ReciprocitySettingsRow,
    ReciprocityUnvaluedRow,
)
from ledger import money
from ledger import repository as ledger_repository
from ledger.database import run_in_transaction
from ledger.errors import Code, LedgerError, TransactionRefusedError, community_not_found
from ledger.model import (
    AccountStatus,
    AccountType,
    EventKind,
    PostingDraft,
    TransactionDraft,
)
from ledger.service import POSTINGS_MAX as LEDGER_POSTINGS_MAX
from ledger.service import Ledger, Movement, record_events
from ledger.tables import to_micros
from ledger.verify import Violation

T = TypeVar("T")
Value = Fraction | int  # reference-unit minor units, exact

POSITION_ACCOUNT_NAME: Final = "reciprocity position"
# The ledger has no account type for it yet; ``clearing`` is the closest of its types.
POSITION_ACCOUNT_TYPE: Final = AccountType.CLEARING
SETTLEMENT_CATEGORY: Final = "settlement"
SETTLES_KEY: Final = "settles"  # the metadata key of a settlement's reference
PLAN_BASIS: Final = "settlement_plan"
CLEARING_BASIS_PREFIX: Final = "clr_"
CATEGORY: Final = "reciprocity"
WINDOW_DAYS_MAX: Final = 3_660
FREE_RIDER_WINDOW_DAYS: Final = 30

flows_table = cast(Table, ReciprocityFlowRow.__table__)
days_table = cast(Table, ReciprocityDayRow.__table__)
pairs_table = cast(Table, ReciprocityPairRow.__table__)
unvalued_table = cast(Table, ReciprocityUnvaluedRow.__table__)
credit_lines_table = cast(Table, CreditLineRow.__table__)
settings_table = cast(Table, ReciprocitySettingsRow.__table__)
proposals_table = cast(Table, ClearingProposalRow.__table__)
accounts = ledger_repository.accounts
communities = ledger_repository.communities
currencies = ledger_repository.currencies


# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayWindow:
    """UTC days ``[since, until)``."""

    since: dt.date
    until: dt.date

    @classmethod
    def of(cls, since: dt.date, until: dt.date) -> DayWindow:
        if not since < until:
            raise LedgerError(
                Code.INVALID_REQUEST, "A window's 'from' comes before its 'to'.", field="from"
            )
        if (until - since).days > WINDOW_DAYS_MAX:
            raise LedgerError(
                Code.INVALID_REQUEST,
                f"A window spans at most {WINDOW_DAYS_MAX:,} days.",
                field="to",
            )
        return cls(since, until)

    @property
    def days(self) -> int:
        return (self.until - self.since).days

    def previous(self) -> DayWindow:
        """The window of the same length that ends where this one starts (cut short at
        the first day a date can name)."""
        room = (self.since - dt.date.min).days
        return DayWindow(self.since - dt.timedelta(days=min(self.days, room)), self.since)


@dataclass(frozen=True, slots=True)
class Figures:
    """What one community gave and received, in reference-unit minor units."""

    given: int
    received: int

    @property
    def net(self) -> int:
        return self.given - self.received

    def as_json(self) -> dict[str, Any]:
        """As the API and the CLI's ``--json`` show them: minor units, the index as exact
        text (null when nothing moved)."""
        index = self.index
        return {
            "given": self.given,
            "received": self.received,
            "net": self.net,
            "index": None if index is None else exact_text(index),
        }

    @property
    def index(self) -> Fraction | None:
        """(given - received) / (given + received): 1 only gives, -1 only takes."""
        volume = self.given + self.received
        return None if volume == 0 else Fraction(self.net, volume)


@dataclass(frozen=True, slots=True)
class Counterparty:
    community: str
    figures: Figures


@dataclass(frozen=True, slots=True)
class CommunityReciprocity:
    community: str
    reference_unit: str
    window: DayWindow | None  # None: all time, as of now
    figures: Figures
    counterparties: tuple[Counterparty, ...]
    unvalued_transactions: int


@dataclass(frozen=True, slots=True)
class MatrixCell:
    giver: str
    receiver: str
    amount: int


@dataclass(frozen=True, slots=True)
class Matrix:
    reference_unit: str
    window: DayWindow | None
    communities: tuple[str, ...]
    cells: tuple[MatrixCell, ...]
    totals: tuple[Counterparty, ...]
    unvalued_transactions: int


@dataclass(frozen=True, slots=True)
class Thresholds:
    absolute: int | None  # net intake, reference-unit minor units
    relative: Fraction | None  # (received - given) / (received + given)
    updated_at: dt.datetime | None
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class FreeRiderLine:
    community: str
    figures: Figures
    previous: Figures
    flagged: bool
    flagged_previous: bool

    @property
    def net_intake(self) -> int:
        return -self.figures.net

    @property
    def change(self) -> int:
        return self.net_intake - (-self.previous.net)


@dataclass(frozen=True, slots=True)
class FreeRiderReport:
    reference_unit: str
    window: DayWindow
    previous_window: DayWindow
    thresholds: Thresholds
    lines: tuple[FreeRiderLine, ...]


@dataclass(frozen=True, slots=True)
class CreditLine:
    community: str
    credit_limit: int | None
    position: int
    updated_at: dt.datetime | None
    updated_by: str | None

    @property
    def headroom(self) -> int | None:
        """How much more the community may take in before it reaches its floor."""
        return None if self.credit_limit is None else max(self.position + self.credit_limit, 0)


@dataclass(frozen=True, slots=True)
class Obligation:
    debtor: str
    creditor: str
    amount: int


@dataclass(frozen=True, slots=True)
class CommunityEffect:
    community: str
    owes_before: int
    owes_after: int
    owed_before: int
    owed_after: int

    @property
    def net(self) -> int:
        """Owed minus owes: the same before and after a clearing."""
        return self.owed_before - self.owes_before


@dataclass(frozen=True, slots=True)
class PaymentCurrency:
    """A way to pay: in ``from_currency`` from the payer's accounts, arriving in
    ``to_currency`` (the same code when both hold it; else a protocol converts)."""

    from_currency: str
    to_currency: str
    protocol_version: int | None


@dataclass(frozen=True, slots=True)
class PlannedPayment:
    payer: str
    payee: str
    amount: int
    currencies: tuple[PaymentCurrency, ...]


@dataclass(frozen=True, slots=True)
class ClearingProposal:
    id: str
    status: str  # proposed or executed
    fingerprint: str
    reference_unit: str
    obligations: tuple[Obligation, ...]
    cleared: tuple[Obligation, ...]
    remaining: tuple[Obligation, ...]
    cycles: tuple[tuple[tuple[str, ...], int], ...]
    gross_before: int
    gross_after: int
    effects: tuple[CommunityEffect, ...]
    settlement: tuple[PlannedPayment, ...]
    created_at: dt.datetime
    created_by: str
    executed_at: dt.datetime | None
    executed_by: str | None
    transaction_ids: tuple[int, ...]

    @property
    def total_cleared(self) -> int:
        return self.gross_before - self.gross_after


# -- the observer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    """The exchange settings a write needs, read once per write (they can change)."""

    unit_id: int
    unit_code: str
    unit_scale: int
    federation_id: int


@dataclass(frozen=True, slots=True)
class _Flow:
    transaction_id: int
    giver: int  # community ids
    receiver: int
    amount: int  # reference-unit minor units; negative when a reversal undoes a flow
    at: dt.datetime


class ReciprocityObserver:
    """Turns the ledger's cross-community movements into flows, inside the writing unit of
    work; refuses a transaction that would take a community past its credit line.

    Per process it remembers only what never changes: currency scales and the ids of
    position accounts already committed. Settings and valuations are read per write."""

    def __init__(self) -> None:
        self._scales: dict[int, int] = {}
        self._positions: dict[tuple[int, int], int] = {}  # (community, unit) -> account id

    def observe(
        self, connection: Connection, ledger: Ledger, movements: Sequence[Movement]
    ) -> None:
        context = _context(connection)
        if context is None:
            return  # no reference unit, nothing to value in: see the module's essay
        reversals: dict[int, tuple[int, dt.datetime]] = {}
        by_transaction: dict[int, list[Movement]] = {}
        in_unit: list[Movement] = []
        for movement in movements:
            if movement.currency_id == context.unit_id:
                in_unit.append(movement)
            if movement.reverses_id is not None:
                reversals.setdefault(movement.transaction_id, (movement.reverses_id, movement.at))
            elif movement.currency_id != context.unit_id:
                by_transaction.setdefault(movement.transaction_id, []).append(movement)
        if in_unit:
            _refuse_moving_positions(connection, context, in_unit)
        flows: list[_Flow] = []
        unvalued: list[dict[str, Any]] = []
        if by_transaction:
            valued = self._value(connection, context, by_transaction)
            for transaction_id, group in by_transaction.items():
                nets = valued[transaction_id]
                at = group[0].at
                if isinstance(nets, int):  # the id of a currency without a valuation
                    unvalued += _unvalued_rows(context, transaction_id, group, nets)
                    continue
                flows += [
                    _Flow(transaction_id, giver, receiver, amount, at)
                    for giver, receiver, amount in pair_flows(nets)
                ]
            settling = [
                t for t, group in by_transaction.items() if group[0].category == SETTLEMENT_CATEGORY
            ]
            if settling:  # the payer gives, if the payment names what it settles: see the essay
                flows = _settle(connection, context, list(by_transaction), settling, flows)
        if reversals:
            flows += _undo(connection, reversals)
        if unvalued:
            connection.execute(_INSERT_UNVALUED, unvalued)
        if flows:
            self._book(connection, ledger, context, flows)

    # -- valuing -------------------------------------------------------------------------------

    def _value(
        self,
        connection: Connection,
        context: _Context,
        by_transaction: Mapping[int, list[Movement]],
    ) -> dict[int, dict[int, Value] | int]:
        """Each transaction's net value per community (federation left out), or the id of
        a currency it moved that had no valuation in force."""
        instants: dict[int, set[dt.datetime]] = {}
        for group in by_transaction.values():
            for movement in group:
                instants.setdefault(movement.currency_id, set()).add(movement.at)
        scales = self._scales_of(connection, instants)
        # Reference-unit minor units per minor unit, per (currency, instant): an int when
        # exact (a batch in one currency at one valuation is then integer arithmetic).
        factors: dict[tuple[int, dt.datetime], Value | None] = {}
        for currency_id, ats in instants.items():
            by_rate: dict[Fraction, Value] = {}
            for at, rate in _rates_at(connection, currency_id, ats).items():
                if rate is not None and rate not in by_rate:
                    by_rate[rate] = unit_factor(rate, scales[currency_id], context.unit_scale)
                factors[currency_id, at] = None if rate is None else by_rate[rate]
        federation = context.federation_id
        result: dict[int, dict[int, Value] | int] = {}
        for transaction_id, group in by_transaction.items():
            nets: dict[int, Value] = {}
            for movement in group:
                factor = factors[movement.currency_id, movement.at]
                if factor is None:
                    result[transaction_id] = movement.currency_id
                    break
                value = movement.amount * factor
                if movement.source_community_id != federation:
                    source = movement.source_community_id
                    nets[source] = nets.get(source, 0) - value
                if movement.destination_community_id != federation:
                    destination = movement.destination_community_id
                    nets[destination] = nets.get(destination, 0) + value
            else:
                result[transaction_id] = nets
        return result

    def _scales_of(self, connection: Connection, currency_ids: Iterable[int]) -> dict[int, int]:
        missing = [c for c in currency_ids if c not in self._scales]
        if missing:
            statement = select(currencies.c.id, currencies.c.scale).where(
                currencies.c.id.in_(bindparam("ids", expanding=True))
            )
            for currency_id, scale in connection.execute(statement, {"ids": missing}):
                self._scales[currency_id] = scale  # a currency's scale never changes
        return self._scales

    # -- booking -------------------------------------------------------------------------------

    def _book(
        self, connection: Connection, ledger: Ledger, context: _Context, flows: list[_Flow]
    ) -> None:
        by_pair: dict[tuple[int, int], int] = {}
        by_day: dict[tuple[int, dt.date, int], int] = {}
        for flow in flows:
            pair = (flow.giver, flow.receiver)
            by_pair[pair] = by_pair.get(pair, 0) + flow.amount
            day = (flow.giver, flow.at.astimezone(dt.UTC).date(), flow.receiver)
            by_day[day] = by_day.get(day, 0) + flow.amount
        communities = sorted({c for flow in flows for c in (flow.giver, flow.receiver)})
        positions = self._position_accounts(connection, ledger, context, communities)
        _check_credit_lines(connection, positions, flows)

        postings: list[tuple[tuple[int, int], PostingDraft]] = []
        for (giver, receiver), total in sorted(by_pair.items()):
            source, destination = positions[receiver], positions[giver]
            if total < 0:
                source, destination = destination, source
            amount = abs(total)
            while amount > 0:  # a posting carries at most AMOUNT_MAX
                part = min(amount, money.AMOUNT_MAX)
                postings.append(
                    ((giver, receiver), PostingDraft(source, destination, part, context.unit_code))
                )
                amount -= part
        transaction_ids = sorted({f.transaction_id for f in flows})
        booked_by: dict[tuple[int, int], int] = {}
        for start in range(0, len(postings), LEDGER_POSTINGS_MAX):
            chunk = postings[start : start + LEDGER_POSTINGS_MAX]
            booked = ledger.post_within(connection, _position_draft(chunk, transaction_ids))
            for pair, _posting in chunk:
                booked_by.setdefault(pair, booked.id)

        ledger_repository.raw(connection).run_many(
            _INSERT_FLOWS_SQL,
            [
                {
                    "transaction_id": f.transaction_id,
                    "giver_community_id": f.giver,
                    "receiver_community_id": f.receiver,
                    "amount": f.amount,
                    "at": to_micros(f.at),
                    "position_transaction_id": booked_by.get((f.giver, f.receiver)),
                }
                for f in flows
            ],
        )
        _add_to_pairs(
            connection,
            [
                {"giver_community_id": g, "receiver_community_id": r, "given": a, "cleared": 0}
                for (g, r), a in by_pair.items()
            ],
        )
        _add_to_days(
            connection,
            [
                {"giver_community_id": g, "day": d, "receiver_community_id": r, "amount": a}
                for (g, d, r), a in by_day.items()
            ],
        )

    def _position_accounts(
        self, connection: Connection, ledger: Ledger, context: _Context, community_ids: list[int]
    ) -> dict[int, int]:
        """Each community's position account in the reference unit, opened on first use
        inside this unit of work (a concurrent first use waits on the unique key, then
        finds the other's)."""
        found: dict[int, int] = {}
        missing: list[int] = []
        for community_id in community_ids:
            known = self._positions.get((community_id, context.unit_id))
            if known is None:
                missing.append(community_id)
            else:
                found[community_id] = known
        if not missing:
            return found
        committed = _position_account_ids(connection, context.unit_id, missing)
        for community_id, account_id in committed.items():
            self._positions[community_id, context.unit_id] = account_id
        found.update(committed)
        opening = [c for c in missing if c not in committed]
        if opening:
            now = ledger.clock()
            opened = _open_position_accounts(connection, context.unit_id, opening, now)
            found.update(_position_account_ids(connection, context.unit_id, opening))
            if opened:  # not remembered: this unit of work may still roll back
                record_events(
                    connection,
                    now,
                    [
                        (EventKind.ACCOUNT_CREATED, None, account_id, (community_id,))
                        for community_id, account_id in sorted(opened.items())
                    ],
                )
        return found


def unit_factor(rate: Fraction, scale: int, unit_scale: int) -> Value:
    """Reference-unit minor units per minor unit of a currency of ``scale`` worth ``rate``
    reference units per major unit, exactly: an ``int`` when that is exact."""
    factor = rate * Fraction(10) ** (unit_scale - scale)
    return factor.numerator if factor.denominator == 1 else factor


def pair_flows(nets: Mapping[int, Value]) -> list[tuple[int, int, int]]:
    """(giver, receiver, amount) from one transaction's net value per community.

    Each net is rounded half to even to whole minor units; payers (negative) and payees
    (positive) are matched in id order, each flow the smaller remainder of the two."""
    if len(nets) == 2:  # the usual case: one payer, one payee
        (first, first_net), (second, second_net) = nets.items()
        first_rounded, second_rounded = round(first_net), round(second_net)
        if first_rounded == -second_rounded:
            if first_rounded > 0:
                return [(first, second, first_rounded)]
            if first_rounded < 0:
                return [(second, first, second_rounded)]
            return []
    rounded = {community: round(net) for community, net in nets.items()}
    payers = sorted((c, -n) for c, n in rounded.items() if n < 0)
    payees = sorted((c, n) for c, n in rounded.items() if n > 0)
    flows: list[tuple[int, int, int]] = []
    i = j = 0
    paid_left = payers[0][1] if payers else 0
    received_left = payees[0][1] if payees else 0
    while i < len(payers) and j < len(payees):
        amount = min(paid_left, received_left)
        flows.append((payees[j][0], payers[i][0], amount))
        paid_left -= amount
        received_left -= amount
        if paid_left == 0:
            i += 1
            paid_left = payers[i][1] if i < len(payers) else 0
        if received_left == 0:
            j += 1
            received_left = payees[j][1] if j < len(payees) else 0
    return flows


def _position_draft(
    chunk: list[tuple[tuple[int, int], PostingDraft]], transaction_ids: list[int]
) -> TransactionDraft:
    if len(transaction_ids) == 1:
        memo = f"Reciprocity flows of transaction {transaction_ids[0]}"
    else:
        memo = (
            f"Reciprocity flows of {len(transaction_ids)} transactions, "
            f"{transaction_ids[0]} to {transaction_ids[-1]}"
        )
    shown = transaction_ids if len(transaction_ids) <= 64 else transaction_ids[:64]
    return TransactionDraft(
        postings=tuple(posting for _pair, posting in chunk),
        memo=memo,
        category=CATEGORY,
        metadata={"reciprocity_of": shown, "reciprocity_of_count": len(transaction_ids)},
    )


def _unvalued_rows(
    context: _Context, transaction_id: int, group: list[Movement], currency_id: int
) -> list[dict[str, Any]]:
    involved = sorted(
        {
            c
            for m in group
            for c in (m.source_community_id, m.destination_community_id)
            if c != context.federation_id
        }
    )
    if len(involved) < 2:  # only the federation's other side: it would be no flow anyway
        return []
    at = group[0].at
    return [
        {
            "transaction_id": transaction_id,
            "community_id": community_id,
            "currency_id": currency_id,
            "day": at.astimezone(dt.UTC).date(),
            "at": at,
        }
        for community_id in involved
    ]


def _undo(connection: Connection, reversals: Mapping[int, tuple[int, dt.datetime]]) -> list[_Flow]:
    """The flows recorded for each reversed transaction, negated, on the reversal's day."""
    originals = sorted({original for original, _at in reversals.values()})
    statement = (
        select(
            flows_table.c.transaction_id,
            flows_table.c.giver_community_id,
            flows_table.c.receiver_community_id,
            flows_table.c.amount,
        )
        .where(flows_table.c.transaction_id.in_(bindparam("ids", expanding=True)))
        .order_by(flows_table.c.id)
    )
    recorded: dict[int, list[Any]] = {}
    for row in connection.execute(statement, {"ids": originals}):
        recorded.setdefault(row.transaction_id, []).append(row)
    return [
        _Flow(reversal_id, row.giver_community_id, row.receiver_community_id, -row.amount, at)
        for reversal_id, (original, at) in sorted(reversals.items())
        for row in recorded.get(original, [])
    ]


# -- settlements ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reference:
    """What a settlement says it pays: ``debtor``'s obligation to ``creditor`` (community
    ids, and their slugs as written), from the settlement plan or a clearing result."""

    debtor: int
    creditor: int
    debtor_slug: str
    creditor_slug: str
    basis: str  # PLAN_BASIS or a clearing proposal's id


def _settle(
    connection: Connection,
    context: _Context,
    order: list[int],
    settling: list[int],
    flows: list[_Flow],
) -> list[_Flow]:
    """The write's flows with each settlement turned round (its payer gives), after
    judging it against what is outstanding; a payment categorised ``settlement`` that
    names nothing is a purchase like any other. See the module's essay."""
    references = _settlement_references(connection, settling)
    if not references:
        return flows
    slugs = _slugs(connection)
    ids = {slug: community_id for community_id, slug in slugs.items()}
    parsed = {
        transaction_id: _parse_reference(transaction_id, raw, ids, context.federation_id)
        for transaction_id, raw in references.items()
    }
    by_transaction: dict[int, list[_Flow]] = {}
    for flow in flows:
        by_transaction.setdefault(flow.transaction_id, []).append(flow)
    ledger_state = _Outstanding(connection, context, slugs)
    result: list[_Flow] = []
    for transaction_id in order:  # each judged on what the ones before it left
        mine = by_transaction.get(transaction_id, [])
        reference = parsed.get(transaction_id)
        if reference is not None:
            mine = ledger_state.settle(transaction_id, reference, mine)
        ledger_state.apply(mine)
        result += mine
    return result


def _settlement_references(connection: Connection, transaction_ids: list[int]) -> dict[int, Any]:
    """Each transaction's ``settles`` reference, for those whose metadata has one."""
    transactions = ledger_repository.transactions
    statement = select(transactions.c.id, transactions.c.metadata).where(
        transactions.c.id.in_(bindparam("ids", expanding=True))
    )
    return {
        transaction_id: metadata[SETTLES_KEY]
        for transaction_id, metadata in connection.execute(statement, {"ids": transaction_ids})
        if isinstance(metadata, dict) and SETTLES_KEY in metadata
    }


def _parse_reference(
    transaction_id: int, raw: Any, ids: Mapping[str, int], federation_id: int
) -> _Reference:
    shape = (
        isinstance(raw, dict)
        and set(raw) == {"debtor", "creditor", "basis"}
        and all(isinstance(value, str) for value in raw.values())
    )
    if not shape:
        _refuse_settlement(
            transaction_id,
            Code.SETTLEMENT_REFERENCE_INVALID,
            'metadata.settles is {"debtor": <community>, "creditor": <community>, "basis": '
            f'"{PLAN_BASIS}" or a clearing proposal\'s id}}, nothing else.',
        )
    debtor, creditor, basis = raw["debtor"], raw["creditor"], raw["basis"]
    if basis != PLAN_BASIS and not basis.startswith(CLEARING_BASIS_PREFIX):
        _refuse_settlement(
            transaction_id,
            Code.SETTLEMENT_REFERENCE_INVALID,
            f'A settlement\'s basis is "{PLAN_BASIS}" or the id of an executed clearing '
            f"proposal ({CLEARING_BASIS_PREFIX}…), not {basis!r}.",
        )
    for slug in (debtor, creditor):
        if ids.get(slug) in (None, federation_id):
            _refuse_settlement(
                transaction_id,
                Code.SETTLEMENT_OBLIGATION_NOT_FOUND,
                f"No community {slug!r} owes or is owed anything in reciprocity.",
                {"debtor": debtor, "creditor": creditor, "basis": basis},
            )
    if debtor == creditor:
        _refuse_settlement(
            transaction_id,
            Code.SETTLEMENT_REFERENCE_INVALID,
            "A settlement's debtor and creditor are two different communities.",
        )
    return _Reference(ids[debtor], ids[creditor], debtor, creditor, basis)


class _Outstanding:
    """What is owed, as it stands inside the writing unit of work: positions, each pair's
    open figures (given less cleared) and the latest executed clearing, moved along by the
    write's flows as they are judged.

    The settlement plan depends on every community's position, so every position account
    is locked first (ascending id, the global order; the credit-line check locks a subset
    of them again later, which changes nothing): concurrent writes that move positions
    queue behind a settlement, and two settlements cannot both pay the same outstanding."""

    def __init__(self, connection: Connection, context: _Context, slugs: Mapping[int, str]):
        self.connection = connection
        self.slugs = slugs
        held = _position_account_ids(connection, context.unit_id, list(slugs))
        community_of = {account_id: community for community, account_id in held.items()}
        self.positions = {
            community_of[row.id]: row.balance_posted
            for row in _lock_positions(connection, sorted(held.values()))
        }
        self.open: dict[tuple[int, int], int] = {
            (giver, receiver): int(given) - int(cleared)
            for giver, receiver, given, cleared in connection.execute(
                select(
                    pairs_table.c.giver_community_id,
                    pairs_table.c.receiver_community_id,
                    pairs_table.c.given,
                    pairs_table.c.cleared,
                )
            )
        }
        self.paid: dict[tuple[str, int, int], int] = {}  # in this write, per clearing reference
        self._latest: dict[str, RowMapping] | None = None  # read on first use

    def apply(self, flows: Iterable[_Flow]) -> None:
        for flow in flows:
            pair = (flow.giver, flow.receiver)
            self.open[pair] = self.open.get(pair, 0) + flow.amount
            self.positions[flow.giver] = self.positions.get(flow.giver, 0) + flow.amount
            self.positions[flow.receiver] = self.positions.get(flow.receiver, 0) - flow.amount

    def owed(self, debtor: int, creditor: int) -> int:
        """What ``debtor`` owes ``creditor`` bilaterally (0 when it owes nothing)."""
        net = self.open.get((creditor, debtor), 0) - self.open.get((debtor, creditor), 0)
        return max(net, 0)

    def settle(self, transaction_id: int, reference: _Reference, flows: list[_Flow]) -> list[_Flow]:
        """The settlement's one flow, turned round; or a refusal."""
        purchase = (reference.creditor, reference.debtor)  # how the payment reads as trade
        if len(flows) != 1 or (flows[0].giver, flows[0].receiver) != purchase:
            moved = ", ".join(
                f"{self.slugs[f.receiver]} paid {self.slugs[f.giver]} {f.amount}" for f in flows
            )
            _refuse_settlement(
                transaction_id,
                Code.SETTLEMENT_REFERENCE_INVALID,
                f"A settlement of {reference.debtor_slug}'s obligation to "
                f"{reference.creditor_slug} moves value from {reference.debtor_slug} to "
                f"{reference.creditor_slug} alone; this payment moves "
                f"{moved or 'no valued amount between communities'}.",
            )
        (flow,) = flows
        if reference.basis == PLAN_BASIS:
            outstanding = self._plan_line(reference)
            where = "the settlement plan in force"
        else:
            outstanding = self._clearing_remainder(transaction_id, reference)
            where = f"clearing {reference.basis}"
        extra = {
            "debtor": reference.debtor_slug,
            "creditor": reference.creditor_slug,
            "basis": reference.basis,
            "outstanding": max(outstanding, 0),
        }
        if outstanding <= 0:
            _refuse_settlement(
                transaction_id,
                Code.SETTLEMENT_OBLIGATION_NOT_FOUND,
                f"{where.capitalize()} leaves nothing for {reference.debtor_slug} to pay "
                f"{reference.creditor_slug}.",
                extra,
            )
        if flow.amount > outstanding:
            _refuse_settlement(
                transaction_id,
                Code.SETTLEMENT_EXCEEDS_OUTSTANDING,
                f"{where.capitalize()} leaves {outstanding} (reference-unit minor units) for "
                f"{reference.debtor_slug} to pay {reference.creditor_slug}; this payment is "
                f"worth {flow.amount}.",
                {**extra, "required": flow.amount},
            )
        if reference.basis != PLAN_BASIS:
            key = (reference.basis, reference.debtor, reference.creditor)
            self.paid[key] = self.paid.get(key, 0) + flow.amount
        return [_Flow(transaction_id, reference.debtor, reference.creditor, flow.amount, flow.at)]

    def _plan_line(self, reference: _Reference) -> int:
        """What the settlement plan, computed from the positions as they stand, has the
        debtor pay the creditor."""
        from exchange import clearing  # noqa: PLC0415 - the solver is loaded only to settle

        positions = {self.slugs[c]: p for c, p in self.positions.items() if p}
        return sum(
            payment.amount
            for payment in clearing.settlement_plan(positions)
            if (payment.payer, payment.payee) == (reference.debtor_slug, reference.creditor_slug)
        )

    def _clearing_remainder(self, transaction_id: int, reference: _Reference) -> int:
        """What the latest executed clearing left of the obligation, less what settlements
        naming it have paid (reversed ones not counted), and never more than the debtor
        owes the creditor now."""
        latest = self._latest_clearings().get(reference.basis)
        if latest is None:
            _refuse_settlement(
                transaction_id,
                Code.SETTLEMENT_OBLIGATION_NOT_FOUND,
                f"{reference.basis} is not the latest executed clearing, so its result is not "
                "what is owed now; settle against the latest one or the settlement plan.",
                {"basis": reference.basis},
            )
        pair = (reference.debtor_slug, reference.creditor_slug)
        left = _from_json(latest["remaining"]).get(pair, 0)
        if left <= 0:
            return 0
        left -= self._paid_against(latest, reference)
        left -= self.paid.get((reference.basis, reference.debtor, reference.creditor), 0)
        return min(left, self.owed(reference.debtor, reference.creditor))

    def _latest_clearings(self) -> dict[str, RowMapping]:
        """The executed clearings with the latest execution time, by id: one, unless two
        were executed in the same microsecond (then either's result is current)."""
        if self._latest is None:
            executed = proposals_table.c.status == "executed"
            newest = (
                select(func.max(proposals_table.c.executed_at)).where(executed).scalar_subquery()
            )
            statement = select(
                proposals_table.c.id, proposals_table.c.remaining, proposals_table.c.executed_at
            ).where(executed, proposals_table.c.executed_at == newest)
            self._latest = {row["id"]: row for row in self.connection.execute(statement).mappings()}
        return self._latest

    def _paid_against(self, clearing_row: RowMapping, reference: _Reference) -> int:
        """What earlier settlements naming this clearing and pair paid, reversals undone:
        the payments categorised settlement since its execution (the category's index),
        read back from their own metadata."""
        transactions = ledger_repository.transactions
        statement = select(transactions.c.id, transactions.c.metadata).where(
            transactions.c.category == SETTLEMENT_CATEGORY,
            transactions.c.created_at >= clearing_row["executed_at"],
            transactions.c.reversed_by_id.is_(None),
        )
        wanted = {
            "debtor": reference.debtor_slug,
            "creditor": reference.creditor_slug,
            "basis": reference.basis,
        }
        naming = [
            transaction_id
            for transaction_id, metadata in self.connection.execute(statement)
            if isinstance(metadata, dict) and metadata.get(SETTLES_KEY) == wanted
        ]
        if not naming:
            return 0
        paid = self.connection.execute(
            select(func.coalesce(func.sum(flows_table.c.amount), 0)).where(
                flows_table.c.transaction_id.in_(bindparam("ids", expanding=True)),
                flows_table.c.giver_community_id == reference.debtor,
                flows_table.c.receiver_community_id == reference.creditor,
            ),
            {"ids": naming},
        ).scalar_one()
        return int(paid)


def _refuse_settlement(
    transaction_id: int, code: Code, detail: str, extra: dict[str, Any] | None = None
) -> NoReturn:
    raise TransactionRefusedError(transaction_id, code, detail, extra=extra)


def _refuse_moving_positions(
    connection: Connection, context: _Context, movements: list[Movement]
) -> None:
    """Position accounts move only with the flows they book (through ``post_within``,
    which observers never see); a write that moves one otherwise is refused."""
    ids = sorted({a for m in movements for a in (m.source_account_id, m.destination_account_id)})
    statement = select(accounts.c.id).where(
        accounts.c.id.in_(bindparam("ids", expanding=True)),
        accounts.c.currency_id == context.unit_id,
        accounts.c.name == POSITION_ACCOUNT_NAME,
        accounts.c.type == str(POSITION_ACCOUNT_TYPE),
    )
    positions = set(connection.execute(statement, {"ids": ids}).scalars())
    for movement in movements:  # the write's first transaction that moves one
        for account_id in (movement.source_account_id, movement.destination_account_id):
            if account_id in positions:
                raise TransactionRefusedError(
                    movement.transaction_id,
                    Code.FORBIDDEN,
                    "A reciprocity position account moves only with the flows it books; "
                    "correct a flow by reversing the payment that caused it.",
                    account_id=account_id,
                )


def _check_credit_lines(
    connection: Connection, positions: Mapping[int, int], flows: Sequence[_Flow]
) -> None:
    """Lock the position accounts (ascending id, after the write's own accounts) and refuse
    if a transaction would take a community whose position it lowers below its floor.

    Transactions are judged in the write's order, each on the positions the ones before it
    left, as the ledger judges balances: a batch (or a group commit) refuses what its
    drafts posted one by one would, even when later drafts would bring the total back."""
    changes: dict[int, dict[int, int]] = {}  # transaction -> community -> change
    for flow in flows:
        change = changes.setdefault(flow.transaction_id, {})
        change[flow.giver] = change.get(flow.giver, 0) + flow.amount
        change[flow.receiver] = change.get(flow.receiver, 0) - flow.amount
    community_of = {account_id: community for community, account_id in positions.items()}
    running: dict[int, int] = {}
    limits: dict[int, int | None] = {}
    for row in _lock_positions(connection, sorted(positions.values())):
        running[community_of[row.id]] = row.balance_posted
        limits[community_of[row.id]] = row.credit_limit
    for transaction_id, change in changes.items():
        for community, delta in sorted(change.items()):
            limit = limits[community]
            if delta < 0 and limit is not None and running[community] + delta < -limit:
                _refuse_past_credit_line(
                    connection, transaction_id, community, running[community], limit, -delta
                )
        for community, delta in change.items():
            running[community] += delta


def _refuse_past_credit_line(
    connection: Connection,
    transaction_id: int,
    community_id: int,
    position: int,
    credit_limit: int,
    required: int,
) -> NoReturn:
    community = ledger_repository.community_by_id(connection, community_id)
    slug = community["slug"] if community is not None else str(community_id)
    headroom = max(position + credit_limit, 0)
    raise TransactionRefusedError(
        transaction_id,
        Code.COMMUNITY_CREDIT_LIMIT_EXCEEDED,
        f"{slug} may owe the rest of the network at most {credit_limit} (reference-unit minor "
        f"units); its position is {position}, so {headroom} of headroom is left and this needs "
        f"{required}.",
        extra={
            "community": slug,
            "headroom": headroom,
            "credit_limit": credit_limit,
            "position": position,
            "required": required,
        },
    )


# -- the service ------------------------------------------------------------------------------


class Reciprocity:
    """Reports, credit lines, free-rider thresholds and clearing over what the observer
    records. Each method is one unit of work."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.engine: Engine = ledger.engine
        self.clock = ledger.clock

    def _read(self, work: Callable[[Connection], T]) -> T:
        return run_in_transaction(self.engine, work, write=False)

    def _write(self, work: Callable[[Connection], T]) -> T:
        return run_in_transaction(self.engine, work, write=True)

    # -- reports ---------------------------------------------------------------------------------

    def community(self, slug: str, window: DayWindow | None = None) -> CommunityReciprocity:
        """What ``slug`` gave and received, per counterparty: over ``window`` or all time."""

        def work(connection: Connection) -> CommunityReciprocity:
            context = _require_context(connection)
            community_id = _community_id(connection, slug)
            slugs = _slugs(connection)
            given: dict[int, int] = {}
            received: dict[int, int] = {}
            for giver, receiver, amount in _pair_amounts(connection, window, community_id):
                if giver == community_id:
                    given[receiver] = given.get(receiver, 0) + amount
                if receiver == community_id:
                    received[giver] = received.get(giver, 0) + amount
            counterparties = tuple(
                sorted(
                    (
                        Counterparty(
                            slugs[other], Figures(given.get(other, 0), received.get(other, 0))
                        )
                        for other in set(given) | set(received)
                        if given.get(other, 0) or received.get(other, 0)
                    ),
                    key=lambda c: c.community,
                )
            )
            return CommunityReciprocity(
                community=slug,
                reference_unit=context.unit_code,
                window=window,
                figures=Figures(sum(given.values()), sum(received.values())),
                counterparties=counterparties,
                unvalued_transactions=_unvalued_count(connection, window, community_id),
            )

        return self._read(work)

    def matrix(self, window: DayWindow | None = None) -> Matrix:
        """Community x community: what each gave each other, over ``window`` or all time."""
        return self._read(lambda connection: _matrix(connection, window))

    def free_riders(self, window: DayWindow) -> FreeRiderReport:
        """Every community's net intake over ``window`` and the window before it, flagged
        against the federation's thresholds (see ``is_free_riding``)."""

        def work(connection: Connection) -> FreeRiderReport:
            current = _matrix(connection, window)
            previous_window = window.previous()
            previous = {t.community: t.figures for t in _matrix(connection, previous_window).totals}
            thresholds = _thresholds(connection)
            lines = []
            for total in current.totals:
                before = previous.get(total.community, Figures(0, 0))
                lines.append(
                    FreeRiderLine(
                        community=total.community,
                        figures=total.figures,
                        previous=before,
                        flagged=is_free_riding(total.figures, thresholds),
                        flagged_previous=is_free_riding(before, thresholds),
                    )
                )
            lines.sort(key=lambda line: (-line.net_intake, line.community))
            return FreeRiderReport(
                current.reference_unit, window, previous_window, thresholds, tuple(lines)
            )

        return self._read(work)

    def thresholds(self) -> Thresholds:
        return self._read(_thresholds)

    def set_thresholds(
        self, *, absolute: int | None, relative: Fraction | None, by: str
    ) -> Thresholds:
        """Flag a community whose net intake over a window is at least ``absolute`` minor
        units and at least ``relative`` of its volume (either may be None: not applied)."""
        if absolute is not None and not money.is_amount(absolute):
            raise LedgerError(
                Code.INVALID_REQUEST,
                "The absolute threshold is a whole number of minor units, at least 1.",
                field="absolute",
            )
        if relative is not None and not 0 < relative <= 1:
            raise LedgerError(
                Code.INVALID_REQUEST,
                "The relative threshold is more than 0 and at most 1.",
                field="relative",
            )
        now = self.clock()
        values = {
            "free_rider_absolute": absolute,
            "free_rider_relative": None if relative is None else exact_text(relative),
            "updated_at": now,
            "updated_by": by,
        }

        def work(connection: Connection) -> None:
            if connection.execute(select(settings_table.c.id)).first() is None:
                connection.execute(insert(settings_table), {"id": 1, **values})
            else:
                connection.execute(update(settings_table).values(**values))

        self._write(work)
        return Thresholds(absolute, relative, now, by)

    # -- credit lines ----------------------------------------------------------------------------

    def credit_lines(self) -> list[CreditLine]:
        """Every community's line and position (federation's own community left out)."""

        def work(connection: Connection) -> list[CreditLine]:
            context = _require_context(connection)
            federation = _slug_of(connection, context.federation_id)
            return [
                line
                for line in _credit_lines(connection, context, None)
                if line.community != federation
            ]

        return self._read(work)

    def credit_line(self, slug: str) -> CreditLine:
        def work(connection: Connection) -> CreditLine:
            context = _require_context(connection)
            return _credit_lines(connection, context, _community_id(connection, slug))[0]

        return self._read(work)

    def set_credit_line(self, slug: str, credit_limit: int | None, *, by: str) -> CreditLine:
        """Let ``slug`` owe the network at most ``credit_limit`` (None: no line, no floor).
        A line below the current debt stops further intake; it moves nothing."""
        if credit_limit is not None and (
            isinstance(credit_limit, bool)
            or not isinstance(credit_limit, int)
            or not 0 <= credit_limit <= money.BALANCE_MAX
        ):
            raise LedgerError(
                Code.INVALID_REQUEST,
                "A credit limit is a whole number of minor units, 0 or more.",
                field="credit_limit",
            )

        def work(connection: Connection) -> CreditLine:
            context = _require_context(connection)
            community_id = _community_id(connection, slug)
            # Lock the position row first, so the change queues behind payments in flight.
            _lock_positions(
                connection,
                list(_position_account_ids(connection, context.unit_id, [community_id]).values()),
            )
            connection.execute(
                delete(credit_lines_table).where(credit_lines_table.c.community_id == community_id)
            )
            if credit_limit is not None:
                connection.execute(
                    insert(credit_lines_table),
                    {
                        "community_id": community_id,
                        "credit_limit": credit_limit,
                        "updated_at": self.clock(),
                        "updated_by": by,
                    },
                )
            return _credit_lines(connection, context, community_id)[0]

        return self._write(work)

    # -- clearing --------------------------------------------------------------------------------

    def obligations(self) -> list[Obligation]:
        """Who owes whom now: the bilateral net of each pair's flows, less what clearing set
        off (see the module's essay)."""

        def work(connection: Connection) -> list[Obligation]:
            _require_context(connection)
            return _as_obligations(_obligations(connection))

        return self._read(work)

    def settlement_plan(self) -> list[PlannedPayment]:
        """Payments that settle every net position, labelled with the ways to pay."""

        def work(connection: Connection) -> list[PlannedPayment]:
            _require_context(connection)
            return _settlement(connection, _obligations(connection), self.clock())

        return self._read(work)

    def propose_clearing(self, *, by: str) -> ClearingProposal:
        """Compute the set-off of the obligations as they stand and keep it for execution."""
        from exchange import clearing  # noqa: PLC0415 - the solver is loaded only to clear

        def work(connection: Connection) -> ClearingProposal:
            context = _require_context(connection)
            current = _obligations(connection)
            result = clearing.set_off(current)
            proposal_id = "clr_" + secrets.token_urlsafe(18)
            connection.execute(
                insert(proposals_table),
                {
                    "id": proposal_id,
                    "fingerprint": fingerprint(context.unit_code, current),
                    "status": "proposed",
                    "reference_currency_id": context.unit_id,
                    "obligations": _to_json(current),
                    "cleared": _to_json(result.cleared),
                    "remaining": _to_json(result.remaining),
                    "cycles": [[list(cycle), amount] for cycle, amount in result.cycles],
                    "gross_before": result.gross_before,
                    "gross_after": result.gross_after,
                    "created_at": self.clock(),
                    "created_by": by,
                    "executed_at": None,
                    "executed_by": None,
                    "transaction_ids": [],
                },
            )
            return self._proposal(connection, proposal_id)

        return self._write(work)

    def clearing(self, proposal_id: str) -> ClearingProposal:
        return self._read(lambda connection: self._proposal(connection, proposal_id))

    def execute_clearing(self, proposal_id: str, *, by: str) -> ClearingProposal:
        """Book the proposal's set-off between the position accounts, atomically. Executing
        it again answers the same; it is refused if the obligations changed since."""

        def work(connection: Connection) -> ClearingProposal:
            row = _proposal_row(connection, proposal_id)
            if row is None:
                raise LedgerError(Code.NOT_FOUND, "There is no such clearing proposal.")
            if row["status"] == "executed":
                return self._proposal(connection, proposal_id)
            context = _require_context(connection)
            stored = _from_json(row["obligations"])
            slugs = {slug for pair in stored for slug in pair}
            ids = _community_ids(connection, slugs)
            positions = _position_account_ids(connection, context.unit_id, list(ids.values()))
            # The position rows, then the proposal's own row (the feed comes last, in the
            # ledger): the global order.
            _lock_positions(connection, sorted(positions.values()))
            row = _proposal_row(connection, proposal_id, lock=True)
            assert row is not None
            if row["status"] == "executed":  # a concurrent execution got there first
                return self._proposal(connection, proposal_id)
            current = _obligations(connection)
            if fingerprint(context.unit_code, current) != row["fingerprint"]:
                raise LedgerError(
                    Code.CLEARING_OBLIGATIONS_CHANGED,
                    f"Payments since clearing proposal {proposal_id} changed what the "
                    "communities owe each other; ask for a new proposal and execute that.",
                    extra={"proposal_id": proposal_id},
                )
            cleared = _from_json(row["cleared"])
            postings = [
                PostingDraft(
                    positions[ids[creditor]], positions[ids[debtor]], amount, context.unit_code
                )
                for (debtor, creditor), amount in sorted(cleared.items())
                if amount > 0
            ]
            transaction_ids = []
            for start in range(0, len(postings), LEDGER_POSTINGS_MAX):
                booked = self.ledger.post_within(
                    connection,
                    TransactionDraft(
                        postings=tuple(postings[start : start + LEDGER_POSTINGS_MAX]),
                        memo=f"Multilateral clearing {proposal_id}",
                        category=CATEGORY,
                        metadata={"clearing_proposal": proposal_id},
                    ),
                )
                transaction_ids.append(booked.id)
            _add_to_pairs(
                connection,
                [
                    {
                        "giver_community_id": ids[creditor],
                        "receiver_community_id": ids[debtor],
                        "given": 0,
                        "cleared": amount,
                    }
                    for (debtor, creditor), amount in sorted(cleared.items())
                    if amount > 0
                ],
            )
            connection.execute(
                update(proposals_table)
                .where(proposals_table.c.id == proposal_id)
                .values(
                    status="executed",
                    executed_at=self.clock(),
                    executed_by=by,
                    transaction_ids=transaction_ids,
                )
            )
            return self._proposal(connection, proposal_id)

        return self._write(work)

    def _proposal(self, connection: Connection, proposal_id: str) -> ClearingProposal:
        row = _proposal_row(connection, proposal_id)
        if row is None:
            raise LedgerError(Code.NOT_FOUND, "There is no such clearing proposal.")
        unit = connection.execute(
            select(currencies.c.code).where(currencies.c.id == row["reference_currency_id"])
        ).scalar_one()
        before = _from_json(row["obligations"])
        after = _from_json(row["remaining"])
        return ClearingProposal(
            id=row["id"],
            status=row["status"],
            fingerprint=row["fingerprint"],
            reference_unit=unit,
            obligations=tuple(_as_obligations(before)),
            cleared=tuple(_as_obligations(_from_json(row["cleared"]))),
            remaining=tuple(_as_obligations(after)),
            cycles=tuple((tuple(cycle), amount) for cycle, amount in row["cycles"]),
            gross_before=row["gross_before"],
            gross_after=row["gross_after"],
            effects=tuple(_effects(before, after)),
            settlement=tuple(_settlement(connection, after, self.clock())),
            created_at=row["created_at"],
            created_by=row["created_by"],
            executed_at=row["executed_at"],
            executed_by=row["executed_by"],
            transaction_ids=tuple(row["transaction_ids"]),
        )

    # -- audit -----------------------------------------------------------------------------------

    def recorded_flows(self, transaction_id: int) -> list[tuple[str, str, int]]:
        """(giver, receiver, amount) as recorded for one ledger transaction."""

        def work(connection: Connection) -> list[tuple[str, str, int]]:
            slugs = _slugs(connection)
            statement = (
                select(
                    flows_table.c.giver_community_id,
                    flows_table.c.receiver_community_id,
                    flows_table.c.amount,
                )
                .where(flows_table.c.transaction_id == transaction_id)
                .order_by(flows_table.c.id)
            )
            return [(slugs[g], slugs[r], a) for g, r, a in connection.execute(statement)]

        return self._read(work)

    def verify(self) -> list[Violation]:
        """The reciprocity layer's invariants (``exchange.reciprocity_verify``); [] when
        sound."""
        from exchange.reciprocity_verify import verify  # noqa: PLC0415 - it imports this module

        return verify(self.engine)


def is_free_riding(figures: Figures, thresholds: Thresholds) -> bool:
    """Flagged when it took in more than it gave, by at least the absolute threshold and by
    at least the relative share of its volume; a threshold that is not set does not
    apply, and with neither set nobody is flagged."""
    if thresholds.absolute is None and thresholds.relative is None:
        return False
    intake = figures.received - figures.given
    if intake <= 0:
        return False
    if thresholds.absolute is not None and intake < thresholds.absolute:
        return False
    share = Fraction(intake, figures.received + figures.given)
    return thresholds.relative is None or share >= thresholds.relative


def exact_text(value: Fraction) -> str:
    """A decimal when one is exact ("0.25", "-1"), else ``numerator/denominator``."""
    denominator = value.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    sign = "-" if value < 0 else ""
    scaled = abs(value.numerator) * 10**places // value.denominator
    if places == 0:
        return f"{sign}{scaled}"
    digits = str(scaled).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def parse_exact(text: str) -> Fraction:
    """What ``exact_text`` wrote (or a plain decimal or ``n/d`` a caller sent), exactly."""
    match = _EXACT.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an exact number such as 0.25 or 1/3")
    sign, whole, fraction, denominator = match.groups()
    if denominator is not None:
        if int(denominator) == 0:
            raise ValueError("a denominator is not zero")
        value = Fraction(int(whole), int(denominator))
    else:
        value = Fraction(int(whole + (fraction or "")), 10 ** len(fraction or ""))
    return -value if sign else value


_EXACT = re.compile(r"^(-?)([0-9]{1,30})(?:\.([0-9]{1,30})|/([0-9]{1,30}))?$")


def fingerprint(unit: str, obligations: Mapping[tuple[str, str], int]) -> str:
    """SHA-256 of the obligations (and the unit they are in), in a canonical order."""
    canonical = json.dumps([unit, _to_json(obligations)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- helpers ----------------------------------------------------------------------------------


def _to_json(obligations: Mapping[tuple[str, str], int]) -> list[list[Any]]:
    return [[d, c, int(a)] for (d, c), a in sorted(obligations.items()) if a]


def _from_json(rows: Iterable[Sequence[Any]]) -> dict[tuple[str, str], int]:
    return {(str(d), str(c)): int(a) for d, c, a in rows}


def _as_obligations(obligations: Mapping[tuple[str, str], int]) -> list[Obligation]:
    return [Obligation(d, c, a) for (d, c), a in sorted(obligations.items()) if a]


def _effects(
    before: Mapping[tuple[str, str], int], after: Mapping[tuple[str, str], int]
) -> list[CommunityEffect]:
    figures: dict[str, list[int]] = {}
    for index, obligations in ((0, before), (1, after)):
        for (debtor, creditor), amount in obligations.items():
            figures.setdefault(debtor, [0, 0, 0, 0])[index] += amount
            figures.setdefault(creditor, [0, 0, 0, 0])[2 + index] += amount
    return [CommunityEffect(slug, *values) for slug, values in sorted(figures.items())]


def _settlement(
    connection: Connection, obligations: Mapping[tuple[str, str], int], now: dt.datetime
) -> list[PlannedPayment]:
    from exchange import clearing  # noqa: PLC0415 - the solver is loaded only to clear

    if not obligations:
        return []
    plan = clearing.settlement_plan(clearing.net_positions(obligations))
    ways = _payment_currencies(connection, {c for p in plan for c in (p.payer, p.payee)}, now)
    return [
        PlannedPayment(p.payer, p.payee, p.amount, ways(p.payer, p.payee))
        for p in plan
        if p.amount > 0
    ]


def _payment_currencies(
    connection: Connection, slugs: set[str], now: dt.datetime
) -> Callable[[str, str], tuple[PaymentCurrency, ...]]:
    """How ``payer``'s members can pay ``payee``'s: a currency both hold accounts in, or a
    pair of theirs that a protocol in force now converts for a member (allowed, not
    suspended, open now, members eligible)."""
    context = _require_context(connection)
    statement = (
        select(communities.c.slug, currencies.c.code)
        .distinct()
        .join(accounts, accounts.c.community_id == communities.c.id)
        .join(currencies, currencies.c.id == accounts.c.currency_id)
        .where(
            communities.c.slug.in_(bindparam("slugs", expanding=True)),
            accounts.c.currency_id != context.unit_id,
            accounts.c.status != str(AccountStatus.CLOSED),
            accounts.c.name != POSITION_ACCOUNT_NAME,
        )
    )
    held: dict[str, set[str]] = {}
    for slug, code in connection.execute(statement, {"slugs": sorted(slugs)}):
        held.setdefault(slug, set()).add(code)
    codes = {row["id"]: row["code"] for row in ledger_repository.list_currencies(connection)}
    protocols: dict[tuple[str, str], int] = {}
    for from_id, to_id in exchange_repository.protocol_pairs(connection):
        row = exchange_repository.protocol_in_force(connection, from_id, to_id, now)
        if row is None:
            continue
        spec = protocol_version_from_row(connection, row).spec
        if (
            spec.allowed
            and not spec.suspended
            and row["effective_from"] <= now
            and (spec.effective_until is None or now < spec.effective_until)
            and (spec.windows is None or any(window.is_open(now) for window in spec.windows))
            and (
                spec.eligible_account_types is None
                or AccountType.MEMBER in spec.eligible_account_types
            )
            and spec.eligible_account_ids is None
        ):
            protocols[codes[from_id], codes[to_id]] = row["version"]

    def ways(payer: str, payee: str) -> tuple[PaymentCurrency, ...]:
        mine, theirs = held.get(payer, set()), held.get(payee, set())
        found = [PaymentCurrency(code, code, None) for code in sorted(mine & theirs)]
        found += [
            PaymentCurrency(source, target, protocols[source, target])
            for source in sorted(mine)
            for target in sorted(theirs)
            if source != target and (source, target) in protocols
        ]
        return tuple(found)

    return ways


def _context(connection: Connection) -> _Context | None:
    rows = ledger_repository.raw(connection).fetch(_CONTEXT_SQL, {})
    if not rows:
        return None
    unit_id, code, scale, federation_id = rows[0]
    return _Context(unit_id, code, scale, federation_id)


# The posting path's statements run on the driver's cursor (see ``ledger.repository.Raw``):
# the observer runs on nearly every write, and SQLAlchemy's per-statement work would cost
# more than the statements themselves.
_CONTEXT_SQL = (
    "SELECT exchange_settings.reference_currency_id, currencies.code, currencies.scale, "
    "exchange_settings.federation_community_id FROM exchange_settings "
    "JOIN currencies ON currencies.id = exchange_settings.reference_currency_id"
)


def _require_context(connection: Connection) -> _Context:
    context = _context(connection)
    if context is None:
        raise LedgerError(
            Code.EXCHANGE_NOT_CONFIGURED,
            "Reciprocity is valued in the reference unit, which the federation has not set; "
            "nothing is recorded until it does.",
        )
    return context


def _rates_at(
    connection: Connection, currency_id: int, instants: set[dt.datetime]
) -> dict[dt.datetime, Fraction | None]:
    """The valuation in force at each instant, as ``exchange`` looks it up. Which one is in
    force only moves forward in time (the candidates grow, the latest wins), so when the
    oldest and the newest instant find the same one, so does every instant between: one or
    two lookups per currency and write, one per instant only when a valuation changed
    in between."""
    oldest, newest = min(instants), max(instants)
    first = _valuation_at(connection, currency_id, oldest)
    last = first if oldest == newest else _valuation_at(connection, currency_id, newest)
    if first is None and last is None:
        return dict.fromkeys(instants)
    if first is not None and last is not None and first[0] == last[0]:
        return dict.fromkeys(instants, _rate_of(first))
    return {
        instant: _rate_of(_valuation_at(connection, currency_id, instant)) for instant in instants
    }


def _valuation_at(
    connection: Connection, currency_id: int, at: dt.datetime
) -> tuple[int, int, int] | None:
    """(id, numerator, denominator) of the valuation in force at ``at`` by
    ``exchange.repository.valuation_at``'s rule (the latest to take effect among those
    recorded by then), for the posting path. The brute-force test values every flow
    through ``Exchange.valuation_at``, so the two cannot drift apart unnoticed."""
    rows = ledger_repository.raw(connection).fetch(
        _VALUATION_AT_SQL, {"currency_id": currency_id, "at": to_micros(at)}
    )
    return tuple(rows[0]) if rows else None


_VALUATION_AT_SQL = (
    "SELECT id, rate_numerator, rate_denominator FROM valuations "
    "WHERE currency_id = :currency_id AND effective_from <= :at AND recorded_at <= :at "
    "ORDER BY effective_from DESC, id DESC LIMIT 1"
)


def _rate_of(row: tuple[int, int, int] | None) -> Fraction | None:
    return None if row is None else Fraction(row[1], row[2])


def _position_account_ids(
    connection: Connection, unit_id: int, community_ids: list[int]
) -> dict[int, int]:
    if not community_ids:
        return {}
    statement = select(accounts.c.community_id, accounts.c.id).where(
        accounts.c.community_id.in_(bindparam("ids", expanding=True)),
        accounts.c.currency_id == unit_id,
        accounts.c.name == POSITION_ACCOUNT_NAME,
    )
    return {row[0]: row[1] for row in connection.execute(statement, {"ids": community_ids})}


def _open_position_accounts(
    connection: Connection, unit_id: int, community_ids: list[int], now: dt.datetime
) -> dict[int, int]:
    """Insert the missing position accounts; those this unit of work opened, by community."""
    rows = [
        {
            "community_id": community_id,
            "currency_id": unit_id,
            "type": str(POSITION_ACCOUNT_TYPE),
            "name": POSITION_ACCOUNT_NAME,
            "status": str(AccountStatus.OPEN),
            "min_balance": None,
            "max_balance": None,
            "metadata": {"reciprocity": "position"},
            "balance_posted": 0,
            "debits_pending": 0,
            "credits_pending": 0,
            "last_entry_at": None,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for community_id in community_ids
    ]
    statement = (
        _dialect_insert(connection, accounts)
        .on_conflict_do_nothing(index_elements=["community_id", "currency_id", "name"])
        .returning(accounts.c.id, accounts.c.community_id)
    )
    # One by one: RETURNING over executemany is not portable.
    return {
        community_id: account_id
        for row in rows
        for account_id, community_id in connection.execute(statement, row)
    }


class _LockedPosition:
    __slots__ = ("balance_posted", "credit_limit", "id")

    def __init__(self, account_id: int, balance_posted: int, credit_limit: int | None) -> None:
        self.id = account_id
        self.balance_posted = balance_posted
        self.credit_limit = credit_limit


def _lock_positions(connection: Connection, account_ids: Sequence[int]) -> list[_LockedPosition]:
    """Lock position accounts in ascending id order (FOR UPDATE on PostgreSQL; SQLite's
    BEGIN IMMEDIATE already serializes writers), each with its community's credit limit."""
    if not account_ids:
        return []
    listed, parameters = ledger_repository.in_list("id", sorted(set(account_ids)))
    lock = " FOR UPDATE OF accounts" if connection.dialect.name == "postgresql" else ""
    return [
        _LockedPosition(account_id, balance, limit)
        for account_id, balance, limit in ledger_repository.raw(connection).fetch(
            f"{_LOCK_POSITIONS_SQL}{listed} ORDER BY accounts.id{lock}", parameters
        )
    ]


_LOCK_POSITIONS_SQL = (
    "SELECT accounts.id, accounts.balance_posted, community_credit_lines.credit_limit "
    "FROM accounts LEFT OUTER JOIN community_credit_lines "
    "ON community_credit_lines.community_id = accounts.community_id WHERE accounts.id IN "
)
_INSERT_FLOWS_SQL = (
    "INSERT INTO reciprocity_flows (transaction_id, giver_community_id, "
    "receiver_community_id, amount, at, position_transaction_id) VALUES (:transaction_id, "
    ":giver_community_id, :receiver_community_id, :amount, :at, :position_transaction_id)"
)
_ADD_TO_PAIRS_SQL = (
    "INSERT INTO reciprocity_pairs (giver_community_id, receiver_community_id, given, cleared) "
    "VALUES (:giver_community_id, :receiver_community_id, :given, :cleared) "
    "ON CONFLICT (giver_community_id, receiver_community_id) DO UPDATE SET "
    "given = reciprocity_pairs.given + excluded.given, "
    "cleared = reciprocity_pairs.cleared + excluded.cleared"
)
_ADD_TO_DAYS_SQL = (
    "INSERT INTO reciprocity_days (giver_community_id, day, receiver_community_id, amount) "
    "VALUES (:giver_community_id, :day, :receiver_community_id, :amount) "
    "ON CONFLICT (giver_community_id, day, receiver_community_id) DO UPDATE SET "
    "amount = reciprocity_days.amount + excluded.amount"
)
_INSERT_UNVALUED = insert(unvalued_table)


def _dialect_insert(connection: Connection, table: Table) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _add_to_pairs(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        ledger_repository.raw(connection).run_many(_ADD_TO_PAIRS_SQL, rows)


def _add_to_days(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Rows with ``day`` a date; stored as ISO text, which both databases read as a date."""
    if rows:
        ledger_repository.raw(connection).run_many(
            _ADD_TO_DAYS_SQL, [{**row, "day": row["day"].isoformat()} for row in rows]
        )


def _pair_amounts(
    connection: Connection, window: DayWindow | None, community_id: int | None
) -> list[tuple[int, int, int]]:
    """(giver, receiver, amount) over the window (from the day rows) or all time (from the
    pair rows), for one community's pairs or for all."""
    if window is None:
        statement = select(
            pairs_table.c.giver_community_id,
            pairs_table.c.receiver_community_id,
            pairs_table.c.given,
        )
        if community_id is not None:
            statement = statement.where(
                or_(
                    pairs_table.c.giver_community_id == community_id,
                    pairs_table.c.receiver_community_id == community_id,
                )
            )
        return [(g, r, int(a)) for g, r, a in connection.execute(statement)]
    in_window = and_(days_table.c.day >= window.since, days_table.c.day < window.until)
    found: list[tuple[int, int, int]] = []
    sides = (
        [days_table.c.giver_community_id, days_table.c.receiver_community_id]
        if community_id is not None
        else [None]
    )
    for side in sides:
        statement = (
            select(
                days_table.c.giver_community_id,
                days_table.c.receiver_community_id,
                func.sum(days_table.c.amount),
            )
            .where(in_window)
            .group_by(days_table.c.giver_community_id, days_table.c.receiver_community_id)
        )
        if side is not None:
            statement = statement.where(side == community_id)
        # A community never gives to itself, so no row is found from both sides.
        found += [(g, r, int(a)) for g, r, a in connection.execute(statement)]
    return found


def _matrix(connection: Connection, window: DayWindow | None) -> Matrix:
    context = _require_context(connection)
    slugs = _slugs(connection)
    members = sorted(slug for id_, slug in slugs.items() if id_ != context.federation_id)
    cells = []
    totals = {slug: [0, 0] for slug in members}
    for giver, receiver, amount in _pair_amounts(connection, window, None):
        if amount == 0:
            continue
        cells.append(MatrixCell(slugs[giver], slugs[receiver], amount))
        totals.setdefault(slugs[giver], [0, 0])[0] += amount
        totals.setdefault(slugs[receiver], [0, 0])[1] += amount
    return Matrix(
        reference_unit=context.unit_code,
        window=window,
        communities=tuple(members),
        cells=tuple(sorted(cells, key=lambda c: (c.giver, c.receiver))),
        totals=tuple(Counterparty(slug, Figures(*totals[slug])) for slug in sorted(totals)),
        unvalued_transactions=_unvalued_count(connection, window, None),
    )


def _thresholds(connection: Connection) -> Thresholds:
    row = connection.execute(select(settings_table)).mappings().first()
    if row is None:
        return Thresholds(None, None, None, None)
    relative = row["free_rider_relative"]
    return Thresholds(
        row["free_rider_absolute"],
        None if relative is None else parse_exact(relative),
        row["updated_at"],
        row["updated_by"],
    )


def _unvalued_count(
    connection: Connection, window: DayWindow | None, community_id: int | None
) -> int:
    statement = select(func.count(func.distinct(unvalued_table.c.transaction_id)))
    if community_id is not None:
        statement = statement.where(unvalued_table.c.community_id == community_id)
    if window is not None:
        statement = statement.where(
            unvalued_table.c.day >= window.since, unvalued_table.c.day < window.until
        )
    return int(connection.execute(statement).scalar_one())


def _obligations(connection: Connection) -> dict[tuple[str, str], int]:
    slugs = _slugs(connection)
    open_: dict[tuple[int, int], int] = {}
    statement = select(
        pairs_table.c.giver_community_id,
        pairs_table.c.receiver_community_id,
        pairs_table.c.given,
        pairs_table.c.cleared,
    )
    for giver, receiver, given, cleared in connection.execute(statement):
        open_[giver, receiver] = int(given) - int(cleared)
    result: dict[tuple[str, str], int] = {}
    for (a, b), amount in open_.items():
        if a > b and (b, a) in open_:
            continue  # the pair is taken up from its other side
        net = amount - open_.get((b, a), 0)
        if net > 0:
            result[slugs[b], slugs[a]] = net
        elif net < 0:
            result[slugs[a], slugs[b]] = -net
    return result


def _credit_lines(
    connection: Connection, context: _Context, community_id: int | None
) -> list[CreditLine]:
    statement = (
        select(
            communities.c.id,
            communities.c.slug,
            credit_lines_table.c.credit_limit,
            credit_lines_table.c.updated_at,
            credit_lines_table.c.updated_by,
            accounts.c.balance_posted,
        )
        .outerjoin(credit_lines_table, credit_lines_table.c.community_id == communities.c.id)
        .outerjoin(
            accounts,
            and_(
                accounts.c.community_id == communities.c.id,
                accounts.c.currency_id == context.unit_id,
                accounts.c.name == POSITION_ACCOUNT_NAME,
            ),
        )
        .order_by(communities.c.slug)
    )
    if community_id is not None:
        statement = statement.where(communities.c.id == community_id)
    return [
        CreditLine(slug, limit, position or 0, updated_at, updated_by)
        for _id, slug, limit, updated_at, updated_by, position in connection.execute(statement)
    ]


def _proposal_row(
    connection: Connection, proposal_id: str, *, lock: bool = False
) -> RowMapping | None:
    statement = select(proposals_table).where(proposals_table.c.id == proposal_id)
    if lock:
        statement = statement.with_for_update()
    return connection.execute(statement).mappings().first()


def _slugs(connection: Connection) -> dict[int, str]:
    return {row["id"]: row["slug"] for row in ledger_repository.list_communities(connection)}


def _slug_of(connection: Connection, community_id: int) -> str:
    row = ledger_repository.community_by_id(connection, community_id)
    return "" if row is None else str(row["slug"])


def _community_id(connection: Connection, slug: str) -> int:
    row = ledger_repository.community_by_slug(connection, slug)
    if row is None:
        raise community_not_found(slug)
    return int(row["id"])


def _community_ids(connection: Connection, slugs: Iterable[str]) -> dict[str, int]:
    return {slug: _community_id(connection, slug) for slug in sorted(slugs)}
