"""The demo federation: four communities and a season of their trade, for a new user to tour.

``heartleaf demo`` calls ``seed_demo``. What it seeds:

- four communities (riverbend, hilltop, saltmarsh, oakvale), each issuing its own Hearts
  (scale 2), and a ``federation`` community that owns the federation's own accounts;
- the federation-wide Leaves (scale 0), the reference unit (kind ``unit``) and SEK
  (external money);
- in each community: an issuance account per currency it issues (Hearts and Leaves, for
  care and for verified ecological work), a Hearts treasury, a kronor treasury, five
  members with a Hearts and a Leaves account, and two chartered providers with a Hearts
  and a kronor account;
- the exchange: valuations in the reference unit, Hearts between communities at
  valuation, Leaves -> Hearts only in the first week of each quarter, Hearts -> SEK for
  providers only at a fixed rate (1 % fee), Leaves -> SEK forbidden;
- a season of trade, a few hundred transactions over the four months (of 30 days) before
  today: each month, issuance for care and ecological work, payments inside each
  community, Leaves paid across communities, Hearts paid across communities through the
  exchange, and, at its end, providers redeeming Hearts for kronor. Cross-community trade
  goes round in circles (riverbend's members pay hilltop's, hilltop's pay saltmarsh's,
  saltmarsh's pay riverbend's), and oakvale takes noticeably more than it gives, so
  reciprocity and clearing have something to find.

Everything comes from ``random.Random(seed)`` and a balance kept beside the plan, so the
plan is the same on every run and never overdraws an account. The history is backdated
through the ledger's clock: the demo writes through a ``Ledger`` whose clock it sets to
each step's instant (the federation is founded at midnight UTC 120 days before the day it
is seeded, its last payment is made before that day begins), so windows, as-of reads and
the free-rider report's "previous window" have something in them, and today is left to
the tour.

Running it twice writes nothing the second time. Every step is get-or-create (communities,
currencies, accounts by name, settings, valuations and protocols when the pair has none),
every transaction carries a client id in the ``demo`` idempotency scope, and the very last
write marks the federation's kronor reserve account as complete. So a run that stopped
half-way resumes where it stopped (the transactions already written are replayed, not
posted again), and a completed demo is recognised by its mark without rereading the plan
against the ledger.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Final

from sqlalchemy import Engine

from api import keys as key_store
from api.keys import KeyRecord
from exchange.model import ProtocolSpec, Window
from exchange.service import FEDERATION_ACCOUNTS, Exchange
from ledger.errors import Code, LedgerError
from ledger.model import AccountType, CurrencyKind, PostingDraft, TransactionDraft
from ledger.service import UNSET, Ledger

SCOPE: Final = "demo"
BY: Final = "demo"
FEDERATION: Final = "federation"
REFERENCE_UNIT: Final = "FRU"
LEAVES: Final = "LEAF"
KRONOR: Final = "SEK"
RESERVE: Final = "reserve"  # the federation's kronor at the bank; carries the "complete" mark
MARK: Final = "demo"

# slug, name, Hearts code, valuation of one Heart in reference units, where its land work is
COMMUNITIES: Final = (
    ("riverbend", "Riverbend", "HRB", Fraction(1), "the river meadows"),
    ("hilltop", "Hilltop", "HHT", Fraction(5, 4), "the north slope"),
    ("saltmarsh", "Saltmarsh", "HSM", Fraction(1), "the salt marsh"),
    ("oakvale", "Oakvale", "HOV", Fraction(9, 10), "the oak pasture"),
)
MEMBERS: Final = {
    "riverbend": ("ana", "bo", "elin", "farid", "greta"),
    "hilltop": ("cai", "dag", "hanna", "ivo", "jonna"),
    "saltmarsh": ("kim", "lova", "mats", "nour", "olle"),
    "oakvale": ("pia", "rasmus", "sara", "tove", "ulf"),
}
# Chartered providers: account name and the care they are chartered for.
PROVIDERS: Final = {
    "riverbend": (("sunflower-daycare", "care:childcare"), ("willow-eldercare", "care:eldercare")),
    "hilltop": (("hilltop-clinic", "care:health"), ("little-oaks-preschool", "care:childcare")),
    "saltmarsh": (
        ("tidewater-eldercare", "care:eldercare"),
        ("marsh-music-school", "culture:music"),
    ),
    "oakvale": (("oakvale-kitchen", "community:meals"), ("birch-home-care", "care:eldercare")),
}
VALUATIONS: Final = {REFERENCE_UNIT: Fraction(1), LEAVES: Fraction(4, 5), KRONOR: Fraction(9, 200)}
KRONOR_PER_HEART: Final = 22  # what a provider gets for one Heart worth one reference unit
REDEMPTION_FEE_BPS: Final = 100
FIRST_WEEK_OF_EACH_QUARTER: Final = Window(months=(1, 4, 7, 10), days=(1, 2, 3, 4, 5, 6, 7))
RESERVE_DEPOSIT: Final = 10_000_000  # 100,000.00 kr for provider redemptions

# Who pays whom across communities, by weight: circles (riverbend -> hilltop -> saltmarsh ->
# riverbend the strongest, hilltop -> oakvale -> saltmarsh -> hilltop among the others), and
# oakvale paying out far more than it earns.
CROSS_WEIGHTS: Final = {
    ("riverbend", "hilltop"): 6,
    ("hilltop", "saltmarsh"): 6,
    ("saltmarsh", "riverbend"): 6,
    ("hilltop", "riverbend"): 2,
    ("riverbend", "saltmarsh"): 1,
    ("saltmarsh", "hilltop"): 2,
    ("oakvale", "riverbend"): 4,
    ("oakvale", "hilltop"): 3,
    ("oakvale", "saltmarsh"): 4,
    ("hilltop", "oakvale"): 1,
    ("saltmarsh", "oakvale"): 1,
}
CROSS_LEAVES_ROUNDS: Final = 2  # times through the weights: 72 payments in Leaves
CROSS_HEARTS_ROUNDS: Final = 1  # 36 payments in Hearts, through the exchange
LOCAL_PAYMENTS_PER_COMMUNITY_PER_MONTH: Final = 7
MONTHS: Final = 4  # the season: the cross-community trade is dealt out evenly over them
MONTH: Final = dt.timedelta(days=30)

DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CARE_MEMOS: Final = {
    "care:childcare": (
        "Childcare, {day} afternoon",
        "School pick-up and dinner, {day}",
        "Babysitting while the parents worked a night shift",
    ),
    "care:eldercare": (
        "Eldercare visit, {day}",
        "Groceries and company for an elder neighbour",
        "Night watch at the eldercare home",
    ),
    "care:health": ("Physiotherapy session", "Home visit after surgery"),
    "culture:music": ("Choir rehearsal, led", "Guitar lessons for the youth group"),
    "culture:festival": ("Midsummer festival crew", "Harvest festival stage and sound"),
    "community:meals": ("Community kitchen, {day} lunch", "Cooking for the shared supper"),
    "community:repair": ("Repair café: bicycles and lamps", "Fixing the meeting-house roof"),
}
ECO_MEMOS: Final = {
    "eco:wetland": ("Wetland workday at {place}", "Clearing reed beds at {place}"),
    "eco:tree-planting": ("Planting alder and willow at {place}", "Tree nursery day at {place}"),
    "eco:composting": ("Turning the shared compost at {place}", "Compost course at {place}"),
    "eco:biodiversity": ("Bird count at {place}", "Mowing the pollinator meadow at {place}"),
}
REDEMPTION_MEMOS: Final = (
    "Redeemed for the rent of the premises",
    "Redeemed to pay the electricity bill",
    "Redeemed for supplies bought in town",
)

AccountKey = tuple[str, str, str]  # community, currency, account name


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What the demo holds; the same on every run with the same seed."""

    communities: tuple[str, ...]  # the first one's treasurer gets the demo treasurer key
    federation_community: str
    currencies: tuple[str, ...]
    accounts: int
    members: int
    providers: int
    transactions: int  # the demo's own, conversions included (client ids ``demo-…``)
    conversions: int
    cross_community: int  # transactions between members of two communities
    protocols: int
    since: dt.date  # the season: the federation was founded at the start of this UTC day
    until: dt.date  # ... and its history ends before this one (the day it was seeded)
    ana: int  # riverbend member, Hearts (HRB)
    bo: int  # riverbend member, Hearts (HRB)
    ana_leaf: int  # Ana's Leaves
    cai: int  # hilltop member, Hearts (HHT)
    cai_leaf: int  # Cai's Leaves
    riverbend_sek: int  # riverbend's kronor treasury


@dataclass(frozen=True, slots=True)
class _AccountPlan:
    community: str
    currency: str
    type: AccountType
    name: str
    floor_free: bool  # no floor (issuance, the federation's own accounts)
    metadata: dict[str, Any]

    @property
    def key(self) -> AccountKey:
        return (self.community, self.currency, self.name)


@dataclass(frozen=True, slots=True)
class _Payment:
    client_id: str
    source: AccountKey
    destination: AccountKey
    amount: int  # for a conversion, the source amount
    memo: str
    category: str
    conversion: bool = False  # through the exchange (the currencies differ)
    at: dt.timedelta = dt.timedelta()  # after the season's start


@dataclass(frozen=True, slots=True)
class _Plan:
    seed: int
    accounts: tuple[_AccountPlan, ...]
    steps: tuple[_Payment, ...]  # in the order of their instants, one transaction each


class _Clock:
    """The demo's ledger clock: the instant of the step being written."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def season_start(today: dt.date) -> dt.date:
    """The day the demo federation is founded, for a demo seeded on ``today``."""
    return today - MONTHS * MONTH


def is_seeded(ledger: Ledger) -> bool:
    """True once a demo run has finished (its last write is the mark on the reserve)."""
    return _mark(ledger) is not None


def seed_demo(ledger: Ledger, seed: int = 7) -> DemoSummary:
    """Seed the demo federation, or finish seeding it; on a seeded ledger, write nothing.

    The history is written through a ledger of the same engine and observers whose clock
    walks the season (ending before the UTC day ``ledger.clock`` says it is). Returns the
    summary of the demo that is there (for a seeded ledger, of the seed and season it was
    seeded with). Finish an interrupted run with the seed it started with: another seed
    plans other transactions under the same client ids, which the ledger refuses
    (``idempotency_conflict``)."""
    mark = _mark(ledger)
    if mark is not None:
        plan = _plan(int(mark["seed"]))
        return _summary(plan, _account_ids(ledger), dt.date.fromisoformat(mark["since"]))
    plan = _plan(seed)
    since = season_start(ledger.clock().astimezone(dt.UTC).date())
    start = dt.datetime.combine(since, dt.time(), dt.UTC)
    clock = _Clock(start)
    season = Ledger(ledger.engine, clock=clock, observers=ledger.observers)
    _ensure_reference_data(season)
    ids = _ensure_accounts(season, plan)
    exchange = Exchange(season)
    _ensure_exchange(exchange)
    for step in plan.steps:
        clock.now = start + step.at
        if step.conversion:
            exchange.convert(
                payer_account_id=ids[step.source],
                payee_account_id=ids[step.destination],
                source_amount=step.amount,
                client_id=step.client_id,
                scope=SCOPE,
                memo=step.memo,
                category=step.category,
            )
        else:
            _post(season, step, ids)
    reserve = season.get_account(ids[FEDERATION, KRONOR, RESERVE])
    season.update_account(
        reserve.id,
        metadata={
            **reserve.metadata,
            MARK: {"seed": seed, "since": since.isoformat(), "complete": True},
        },
    )
    return _summary(plan, ids, since)


# -- the plan ---------------------------------------------------------------------------------


def _hearts(community: str) -> str:
    return next(code for slug, _, code, _, _ in COMMUNITIES if slug == community)


def _valuation(community: str) -> Fraction:
    return next(value for slug, _, _, value, _ in COMMUNITIES if slug == community)


def _name(community: str) -> str:
    return next(name for slug, name, _, _, _ in COMMUNITIES if slug == community)


def _place(community: str) -> str:
    return next(place for slug, _, _, _, place in COMMUNITIES if slug == community)


def _plan(seed: int) -> _Plan:
    """The season, month by month. Within a month the steps are spread evenly over its 30
    days in the order they were planned (the order the planner's balances assume), at
    whole seconds, so every instant is before the season's end."""
    planner = _Planner(random.Random(seed))
    leaves = planner.directions(CROSS_LEAVES_ROUNDS)
    hearts = planner.directions(CROSS_HEARTS_ROUNDS)
    steps: list[_Payment] = []
    for month in range(MONTHS):
        planned = [
            *(planner.founding() if month == 0 else ()),
            *planner.issuance(),
            *planner.local(),
            *planner.cross_leaves(leaves[month::MONTHS]),
            *planner.cross_hearts(hearts[month::MONTHS]),
            *planner.redemptions(),
        ]
        for index, payment in enumerate(planned):
            offset = MONTH * month + MONTH * (index + 1) / (len(planned) + 1)
            steps.append(replace(payment, at=dt.timedelta(seconds=int(offset.total_seconds()))))
    return _Plan(seed, _account_plans(), tuple(steps))


def _account_plans() -> tuple[_AccountPlan, ...]:
    plans: list[_AccountPlan] = []

    def add(
        community: str,
        currency: str,
        kind: AccountType,
        name: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        floor_free = kind == AccountType.ISSUANCE or community == FEDERATION
        plans.append(_AccountPlan(community, currency, kind, name, floor_free, metadata or {}))

    for slug, _, hearts, _, _ in COMMUNITIES:
        add(slug, hearts, AccountType.ISSUANCE, "issuance", {"issues": "Hearts for care work"})
        add(
            slug,
            LEAVES,
            AccountType.ISSUANCE,
            "leaves-issuance",
            {"issues": "Leaves for verified ecological work"},
        )
        add(slug, hearts, AccountType.TREASURY, "treasury")
        add(slug, KRONOR, AccountType.TREASURY, "treasury")
        for member in MEMBERS[slug]:
            add(slug, hearts, AccountType.MEMBER, member)
            add(slug, LEAVES, AccountType.MEMBER, member)
        for provider, charter in PROVIDERS[slug]:
            add(slug, hearts, AccountType.PROVIDER, provider, {"chartered_for": charter})
            add(slug, KRONOR, AccountType.PROVIDER, provider, {"chartered_for": charter})
    add(FEDERATION, KRONOR, AccountType.TREASURY, RESERVE, {"holds": "kronor at the bank"})
    # The exchange opens these on first use; opening them here keeps the demo's shape fixed.
    for currency in (*(code for _, _, code, _, _ in COMMUNITIES), LEAVES, KRONOR):
        for kind, name in FEDERATION_ACCOUNTS.items():
            add(FEDERATION, currency, kind, name)
    return tuple(plans)


class _Planner:
    """Draws the demo's transactions, keeping every account's balance beside them so that
    nothing it plans overdraws (incoming conversions are not counted: the payer side is
    exact, the payee side is left to the exchange's rounding)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.balances: dict[AccountKey, int] = {}
        self.count = 0

    def _payment(
        self, source: AccountKey, destination: AccountKey, amount: int, memo: str, category: str
    ) -> _Payment:
        self.count += 1
        self.balances[source] = self.balances.get(source, 0) - amount
        conversion = source[1] != destination[1]
        if not conversion:  # a conversion's payee gets what the rate gives
            self.balances[destination] = self.balances.get(destination, 0) + amount
        return _Payment(
            f"demo-{self.count:04d}", source, destination, amount, memo, category, conversion
        )

    def _can_pay(self, account: AccountKey, amount: int) -> bool:
        return self.balances.get(account, 0) >= amount

    def _care_memo(self, category: str) -> str:
        return self.rng.choice(CARE_MEMOS[category]).format(day=self.rng.choice(DAYS))

    def _eco(self, place: str) -> tuple[str, str]:
        category = self.rng.choice(sorted(ECO_MEMOS))
        return self.rng.choice(ECO_MEMOS[category]).format(place=place), category

    def _hearts_amount(self, low: int, high: int) -> int:
        """Whole and half Hearts between ``low`` and ``high``, in minor units."""
        return self.rng.randint(low * 2, high * 2) * 50

    def founding(self) -> tuple[_Payment, ...]:
        """The first day: the kronor reserve and each community's fund for the season."""
        payments = [
            self._payment(
                (FEDERATION, KRONOR, RESERVE),
                (FEDERATION, KRONOR, FEDERATION_ACCOUNTS[AccountType.LIQUIDITY]),
                RESERVE_DEPOSIT,
                "Kronor deposited at the bank for provider redemptions",
                "exchange:liquidity",
            )
        ]
        for slug, name, hearts, _, _ in COMMUNITIES:
            payments.append(
                self._payment(
                    (slug, hearts, "issuance"),
                    (slug, hearts, "treasury"),
                    500_000,
                    f"{name}'s community fund for the season",
                    "treasury:budget",
                )
            )
        return tuple(payments)

    def issuance(self) -> tuple[_Payment, ...]:
        """A month's issuance: Hearts for each member's care work, Leaves for their
        ecological work."""
        payments = []
        care = sorted(CARE_MEMOS)
        for slug, _, hearts, _, place in COMMUNITIES:
            for member in MEMBERS[slug]:
                category = self.rng.choice(care)
                payments.append(
                    self._payment(
                        (slug, hearts, "issuance"),
                        (slug, hearts, member),
                        self._hearts_amount(20, 80),
                        self._care_memo(category),
                        category,
                    )
                )
                memo, category = self._eco(place)
                payments.append(
                    self._payment(
                        (slug, LEAVES, "leaves-issuance"),
                        (slug, LEAVES, member),
                        self.rng.randint(5, 25),
                        memo,
                        category,
                    )
                )
        return tuple(payments)

    def local(self) -> tuple[_Payment, ...]:
        payments = []
        kinds = ("member", "member", "member", "provider", "provider", "treasury", "leaves")
        for slug, _, hearts, _, place in COMMUNITIES:
            members = MEMBERS[slug]
            made = 0
            while made < LOCAL_PAYMENTS_PER_COMMUNITY_PER_MONTH:
                kind = self.rng.choice(kinds)
                payer = self.rng.choice(members)
                payee = self.rng.choice([m for m in members if m != payer])
                if kind == "leaves":
                    memo, category = self._eco(place)
                    source, destination = (slug, LEAVES, payer), (slug, LEAVES, payee)
                    amount = self.rng.randint(2, 8)
                elif kind == "treasury":
                    category = self.rng.choice(("culture:festival", "community:meals"))
                    memo = self._care_memo(category)
                    source, destination = (slug, hearts, "treasury"), (slug, hearts, payee)
                    amount = self._hearts_amount(20, 80)
                elif kind == "provider":
                    provider, category = self.rng.choice(PROVIDERS[slug])
                    memo = self._care_memo(category)
                    source, destination = (slug, hearts, payer), (slug, hearts, provider)
                    amount = self._hearts_amount(10, 45)
                else:
                    category = self.rng.choice(
                        ("care:childcare", "care:eldercare", "culture:music", "community:repair")
                    )
                    memo = self._care_memo(category)
                    source, destination = (slug, hearts, payer), (slug, hearts, payee)
                    amount = self._hearts_amount(5, 40)
                if self._can_pay(source, amount):
                    payments.append(self._payment(source, destination, amount, memo, category))
                    made += 1
        return tuple(payments)

    def directions(self, rounds: int) -> list[tuple[str, str]]:
        """Each ordered pair of communities exactly as often as its weight says (times
        ``rounds``), in a shuffled order: the circles and oakvale's intake do not depend on
        the luck of the draw."""
        directions = [
            pair for pair in sorted(CROSS_WEIGHTS) for _ in range(CROSS_WEIGHTS[pair] * rounds)
        ]
        self.rng.shuffle(directions)
        return directions

    def _payer(self, community: str, currency: str, amount: int) -> AccountKey | None:
        """A member of ``community`` who can pay ``amount``, if any."""
        members = [m for m in MEMBERS[community] if self._can_pay((community, currency, m), amount)]
        return (community, currency, self.rng.choice(members)) if members else None

    def cross_leaves(self, directions: Sequence[tuple[str, str]]) -> tuple[_Payment, ...]:
        """Leaves paid across communities: one currency, no exchange."""
        payments: list[_Payment] = []
        for payer_community, payee_community in directions:
            amount = self.rng.randint(2, 10)
            payee = (payee_community, LEAVES, self.rng.choice(MEMBERS[payee_community]))
            payer = self._payer(payer_community, LEAVES, amount)
            if payer is not None:
                memo, category = self._eco(_place(payer_community))  # the help came to them
                payments.append(self._payment(payer, payee, amount, memo, category))
        return tuple(payments)

    def cross_hearts(self, directions: Sequence[tuple[str, str]]) -> tuple[_Payment, ...]:
        """Hearts paid across communities through the exchange, to members and providers.
        Amounts are drawn in reference units (4 to 40) and paid in the payer's Hearts, so
        a community's trade is worth the same whatever its Hearts' valuation."""
        payments: list[_Payment] = []
        for payer_community, payee_community in directions:
            valuation = _valuation(payer_community)
            units = Fraction(self.rng.randint(8, 80), 2)
            amount = max(int(units / valuation * 2), 1) * 50  # whole or half Hearts
            payee_hearts = _hearts(payee_community)
            if self.rng.random() < 0.4:
                provider, category = self.rng.choice(PROVIDERS[payee_community])
                payee = (payee_community, payee_hearts, provider)
            else:
                category = self.rng.choice(("care:childcare", "care:eldercare", "care:health"))
                payee = (payee_community, payee_hearts, self.rng.choice(MEMBERS[payee_community]))
            payer = self._payer(payer_community, _hearts(payer_community), amount)
            if payer is not None:
                memo = f"{self._care_memo(category)}, for a family from {_name(payer_community)}"
                payments.append(self._payment(payer, payee, amount, memo, category))
        return tuple(payments)

    def redemptions(self) -> tuple[_Payment, ...]:
        """At a month's end, providers with Hearts to spare redeem some for kronor
        (providers only may)."""
        payments = []
        for slug, _, hearts, _, _ in COMMUNITIES:
            for provider, _ in PROVIDERS[slug]:
                held = self.balances.get((slug, hearts, provider), 0)
                if held >= 5_000:
                    amount = held // 2 // 100 * 100  # whole Hearts
                    payments.append(
                        self._payment(
                            (slug, hearts, provider),
                            (slug, KRONOR, provider),
                            amount,
                            self.rng.choice(REDEMPTION_MEMOS),
                            "exchange:redemption",
                        )
                    )
        return tuple(payments)


# -- writing ----------------------------------------------------------------------------------


def _mark(ledger: Ledger) -> dict[str, Any] | None:
    try:
        page = ledger.list_accounts(
            community=FEDERATION, currency=KRONOR, type=AccountType.TREASURY
        )
    except LedgerError as error:
        if error.code in (Code.COMMUNITY_NOT_FOUND, Code.CURRENCY_NOT_FOUND):
            return None
        raise
    for account in page.items:
        if account.name == RESERVE:
            mark = account.metadata.get(MARK)
            if isinstance(mark, dict) and mark.get("complete") is True:
                return mark
    return None


def _ensure_reference_data(ledger: Ledger) -> None:
    communities = {c.slug for c in ledger.list_communities()}
    for slug, name in ((FEDERATION, "The Federation"), *((c[0], c[1]) for c in COMMUNITIES)):
        if slug not in communities:
            ledger.create_community(slug, name)
    currencies = {c.code for c in ledger.list_currencies()}
    wanted: list[tuple[str, CurrencyKind, int, str, str, str | None]] = [
        (REFERENCE_UNIT, CurrencyKind.UNIT, 2, "Federation reference unit", "¤", None),
        (LEAVES, CurrencyKind.LEAVES, 0, "Leaves", "🍃", None),
        (KRONOR, CurrencyKind.EXTERNAL, 2, "Swedish krona", "kr", None),
    ]
    wanted += [
        (code, CurrencyKind.HEARTS, 2, f"{name} Hearts", "♡", slug)
        for slug, name, code, _, _ in COMMUNITIES
    ]
    for code, kind, scale, name, symbol, issuer in wanted:
        if code not in currencies:
            ledger.create_currency(
                code, kind=kind, scale=scale, name=name, symbol=symbol, issuer=issuer
            )


def _account_ids(ledger: Ledger) -> dict[AccountKey, int]:
    ids: dict[AccountKey, int] = {}
    cursor = None
    while True:
        page = ledger.list_accounts(cursor=cursor, limit=1000)
        ids.update({(a.community, a.currency, a.name): a.id for a in page.items})
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def _ensure_accounts(ledger: Ledger, plan: _Plan) -> dict[AccountKey, int]:
    ids = _account_ids(ledger)
    for account in plan.accounts:
        if account.key not in ids:
            ids[account.key] = ledger.open_account(
                community=account.community,
                currency=account.currency,
                type=account.type,
                name=account.name,
                metadata=account.metadata,
                min_balance=None if account.floor_free else UNSET,
            ).id
    return ids


def _protocols() -> list[tuple[ProtocolSpec, str]]:
    hearts = [(slug, code, value) for slug, _, code, value, _ in COMMUNITIES]
    protocols = [
        (ProtocolSpec(source, target), "Hearts pass between communities at their valuations")
        for _, source, _ in hearts
        for _, target, _ in hearts
        if source != target
    ]
    protocols += [
        (
            ProtocolSpec(LEAVES, code, windows=(FIRST_WEEK_OF_EACH_QUARTER,)),
            "Leaves buy Hearts in the first week of each quarter",
        )
        for _, code, _ in hearts
    ]
    protocols += [
        (
            ProtocolSpec(
                code,
                KRONOR,
                fixed_rate=KRONOR_PER_HEART * value,
                fee_bps=REDEMPTION_FEE_BPS,
                eligible_account_types=(AccountType.PROVIDER,),
            ),
            "Chartered providers redeem Hearts for kronor to pay their bills",
        )
        for _, code, value in hearts
    ]
    protocols.append(
        (
            ProtocolSpec(LEAVES, KRONOR, allowed=False),
            "Leaves never turn into money: no speculation on ecological work",
        )
    )
    return protocols


def _ensure_exchange(exchange: Exchange) -> None:
    try:
        exchange.settings()
    except LedgerError as error:
        if error.code != Code.EXCHANGE_NOT_CONFIGURED:
            raise
        exchange.configure(reference_unit=REFERENCE_UNIT, federation_community=FEDERATION)
    valuations = {**VALUATIONS, **{code: value for _, _, code, value, _ in COMMUNITIES}}
    for code, value in valuations.items():
        if not exchange.valuation_history(code):
            exchange.set_valuation(code, value, by=BY, reason="The federation's founding valuation")
    for spec, reason in _protocols():
        if not exchange.protocol_versions(spec.from_currency, spec.to_currency):
            exchange.propose(spec, by=BY, reason=reason)


def _post(ledger: Ledger, payment: _Payment, ids: dict[AccountKey, int]) -> None:
    draft = TransactionDraft(
        postings=(
            PostingDraft(
                ids[payment.source], ids[payment.destination], payment.amount, payment.source[1]
            ),
        ),
        client_id=payment.client_id,
        memo=payment.memo,
        category=payment.category,
    )
    ledger.post_transaction(draft, scope=SCOPE)


def _summary(plan: _Plan, ids: dict[AccountKey, int], since: dt.date) -> DemoSummary:
    currencies = (
        *(code for _, _, code, _, _ in COMMUNITIES),
        LEAVES,
        REFERENCE_UNIT,
        KRONOR,
    )
    return DemoSummary(
        communities=tuple(slug for slug, _, _, _, _ in COMMUNITIES),
        federation_community=FEDERATION,
        currencies=currencies,
        accounts=len(plan.accounts),
        members=sum(len(members) for members in MEMBERS.values()),
        providers=sum(len(providers) for providers in PROVIDERS.values()),
        transactions=len(plan.steps),
        conversions=sum(step.conversion for step in plan.steps),
        cross_community=sum(step.source[0] != step.destination[0] for step in plan.steps),
        protocols=len(_protocols()),
        since=since,
        until=since + MONTHS * MONTH,
        ana=ids["riverbend", "HRB", "ana"],
        bo=ids["riverbend", "HRB", "bo"],
        ana_leaf=ids["riverbend", LEAVES, "ana"],
        cai=ids["hilltop", "HHT", "cai"],
        cai_leaf=ids["hilltop", LEAVES, "cai"],
        riverbend_sek=ids["riverbend", KRONOR, "treasury"],
    )


# -- the tour's keys ----------------------------------------------------------------------------

FEDERATION_KEY_LABEL: Final = "demo federation key"


def treasurer_key_label(community: str) -> str:
    return f"demo treasurer of {community}"


@dataclass(frozen=True, slots=True)
class TourKeys:
    federation: KeyRecord
    federation_secret: str
    treasurer: KeyRecord
    treasurer_secret: str
    revoked: tuple[int, ...]  # the tour keys issued before, revoked now


def issue_tour_keys(engine: Engine, summary: DemoSummary, now: dt.datetime) -> TourKeys:
    """A federation key and a treasurer key of the first community for the tour. Keys are
    stored hashed, so a key cannot be shown again: issuing the tour's keys revokes the ones
    issued for it before (by their labels), so there is only ever one pair in force."""
    community = summary.communities[0]
    labels = {FEDERATION_KEY_LABEL, treasurer_key_label(community)}
    revoked = tuple(
        key_store.revoke_key(engine, record.id, now).id
        for record in key_store.list_keys(engine)
        if record.revoked_at is None and record.label in labels
    )
    federation, federation_secret = key_store.create_key(
        engine, role=key_store.Role.FEDERATION, community=None, label=FEDERATION_KEY_LABEL, now=now
    )
    treasurer, treasurer_secret = key_store.create_key(
        engine,
        role=key_store.Role.TREASURER,
        community=community,
        label=treasurer_key_label(community),
        now=now,
    )
    return TourKeys(federation, federation_secret, treasurer, treasurer_secret, revoked)
