"""What the exchange layer takes and gives: frozen values, rates as exact Fractions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ledger.model import AccountType, Transaction

LIMIT_NAMES = ("account_daily", "account_monthly", "community_daily", "community_monthly")


PROPOSAL_SECONDS_DEFAULT = 7 * 86_400


@dataclass(frozen=True, slots=True)
class Settings:
    reference_unit: str
    federation_community: str
    approvals_required: int
    quote_seconds: int
    # Whose approvals count: "federation" (federation keys) or "communities" (one seat per
    # member community, its treasurers; one for the federation's keys). See governance.
    approvers: str = "federation"
    proposal_seconds: int = PROPOSAL_SECONDS_DEFAULT


@dataclass(frozen=True, slots=True)
class Valuation:
    currency: str
    rate: Fraction  # reference units per one major unit
    effective_from: dt.datetime
    recorded_at: dt.datetime
    recorded_by: str
    reason: str
    proposal_id: int | None = None  # the governance proposal that put it in force


@dataclass(frozen=True, slots=True)
class Window:
    """Open when every given field matches the instant (UTC). Empty fields match anything.

    ``{"months": [1, 4, 7, 10], "days": [1, 2, 3, 4, 5, 6, 7]}`` is the first week of each
    quarter; ``{"weekdays": [0, 1, 2, 3, 4], "hours": [8, 9, …, 17]}`` is office hours
    (weekday 0 is Monday)."""

    months: tuple[int, ...] = ()
    days: tuple[int, ...] = ()
    weekdays: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()

    def is_open(self, at: dt.datetime) -> bool:
        at = at.astimezone(dt.UTC)
        return (
            (not self.months or at.month in self.months)
            and (not self.days or at.day in self.days)
            and (not self.weekdays or at.weekday() in self.weekdays)
            and (not self.hours or at.hour in self.hours)
        )

    def next_opening(self, after: dt.datetime) -> dt.datetime | None:
        """The first whole hour (UTC) after ``after`` that opens the window, or None if it
        never opens (30 February). The calendar of months, days and weekdays
        repeats within 28 years (between 1901 and 2099), so looking that far is enough."""
        start = after.astimezone(dt.UTC)
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        for _ in range(WINDOW_SEARCH_DAYS):
            if (
                (not self.months or day.month in self.months)
                and (not self.days or day.day in self.days)
                and (not self.weekdays or day.weekday() in self.weekdays)
            ):
                for hour in sorted(self.hours) if self.hours else range(24):
                    opening = day + dt.timedelta(hours=hour)
                    if opening > start:
                        return opening
            try:
                day += dt.timedelta(days=1)
            except OverflowError:  # past the year 9999
                return None
        return None

    def describe(self) -> str:
        """``months 1, 4, 7, 10 and days 1-7`` (hours and weekdays as given; 0 is Monday)."""
        parts = [
            f"{name} {_spans(values)}"
            for name, values in (
                ("months", self.months),
                ("days", self.days),
                ("weekdays", self.weekdays),
                ("hours", self.hours),
            )
            if values
        ]
        return " and ".join(parts) or "always"


WINDOW_SEARCH_DAYS = 28 * 366 + 1


def _spans(values: tuple[int, ...]) -> str:
    """``(1, 2, 3, 5)`` -> ``1-3, 5``."""
    runs: list[list[int]] = []
    for value in sorted(set(values)):
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(
        f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs
    )


def next_opening(windows: tuple[Window, ...], after: dt.datetime) -> dt.datetime | None:
    """When the first of these windows opens next after ``after``; None: none ever does."""
    openings = [o for o in (window.next_opening(after) for window in windows) if o is not None]
    return min(openings, default=None)


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A proposed rule for converting ``from_currency`` into ``to_currency``."""

    from_currency: str
    to_currency: str
    allowed: bool = True
    # Target major units per source major unit; None derives the rate from valuations.
    fixed_rate: Fraction | None = None
    fee_bps: int = 0
    fee_account_id: int | None = None
    eligible_account_types: tuple[AccountType, ...] | None = None
    eligible_account_ids: tuple[int, ...] | None = None
    windows: tuple[Window, ...] | None = None
    limits: dict[str, int] = field(default_factory=dict)
    effective_from: dt.datetime | None = None
    effective_until: dt.datetime | None = None
    suspended: bool = False


@dataclass(frozen=True, slots=True)
class ProtocolVersion:
    id: int
    version: int
    state: str  # proposed, active, rejected or expired
    spec: ProtocolSpec
    proposed_at: dt.datetime
    proposed_by: str
    reason: str
    approvals: tuple[str, ...]
    activated_at: dt.datetime | None
    proposal_id: int | None = None  # the governance proposal that decides it

    @property
    def effective_from(self) -> dt.datetime:
        assert self.spec.effective_from is not None
        return self.spec.effective_from


@dataclass(frozen=True, slots=True)
class Quote:
    id: str
    protocol_version_id: int
    payer_account_id: int
    from_currency: str
    to_currency: str
    source_amount: int
    fee: int
    source_used: int
    residue: int
    target_amount: int
    rate: Fraction  # target minor units per source minor unit
    created_at: dt.datetime
    expires_at: dt.datetime
    transaction_id: int | None


@dataclass(frozen=True, slots=True)
class ConversionRecord:
    transaction: Transaction
    protocol_version_id: int
    quote_id: str | None
    source_amount: int
    fee: int
    residue: int
    target_amount: int
    rate: Fraction
    valuation_from: Fraction | None
    valuation_to: Fraction | None
    replayed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# -- governance (exchange/governance.py) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signatory:
    """Who proposes, approves or rejects a change of policy: a key (``key:7``, or what the
    shell names with ``--by``), the role it acts in and the community it belongs to.

    Roles are the API's (``federation``, ``treasurer``, ``viewer``, ``auditor``) plus
    ``operator``: whoever holds the database itself (the CLI), who may propose but whose
    word, being unauthenticated, never counts as an approval."""

    key: str
    role: str = "federation"
    community: str | None = None


@dataclass(frozen=True, slots=True)
class Approval:
    key: str
    role: str
    community: str | None
    seat: str  # what it counts as: the key, or the community it represents
    at: dt.datetime
    withdrawn_at: dt.datetime | None = None  # its key was revoked before the change applied


@dataclass(frozen=True, slots=True)
class Proposal:
    """A change of policy on its way: pending, then applied, rejected or expired.

    ``approvals_required`` is what applies it now (the stricter of the rule when proposed
    and the rule in force); ``approvals_counted`` how many of ``approvals`` count under that
    rule."""

    id: int
    kind: str
    subject: str
    change: dict[str, Any]
    state: str
    reason: str
    proposed_at: dt.datetime
    proposed_by: str
    proposer_role: str
    proposer_community: str | None
    approvers: str
    approvals_required: int
    approvals_counted: int
    approvals: tuple[Approval, ...]
    expires_at: dt.datetime
    closed_at: dt.datetime | None
    closed_by: str | None
    close_reason: str | None
