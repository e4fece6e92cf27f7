"""The demo federation a new user tours: what it seeds, that it seeds once, and `heartleaf demo`."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from api import keys as key_store
from api.app import build_ledger
from api.demo import MONTHS, DemoSummary, is_seeded, season_start, seed_demo
from exchange.model import Window
from exchange.reciprocity import DayWindow, Reciprocity
from exchange.service import Exchange
from ledger.errors import Code, LedgerError
from ledger.model import Account, AccountType, CurrencyKind, Transaction
from ledger.service import Ledger
from tests.conftest import Clock

COMMUNITIES = ("riverbend", "hilltop", "saltmarsh", "oakvale")
HEARTS = {"riverbend": "HRB", "hilltop": "HHT", "saltmarsh": "HSM", "oakvale": "HOV"}
HEARTLEAF = [sys.executable, "-m", "api.cli"]


@pytest.fixture
def demo_ledger(engine: Engine, clock: Clock) -> Ledger:
    """The ledger as the service builds it (with whatever follows its writes)."""
    return build_ledger(engine, clock)


@pytest.fixture
def summary(demo_ledger: Ledger) -> DemoSummary:
    return seed_demo(demo_ledger)


def _accounts(ledger: Ledger) -> dict[int, Account]:
    page = ledger.list_accounts(limit=1000)
    assert page.next_cursor is None
    return {account.id: account for account in page.items}


def _transactions(ledger: Ledger) -> list[Transaction]:
    """The demo's own transactions (the layers that follow the ledger's writes, such as
    reciprocity, may book transactions of their own beside them)."""
    found: list[Transaction] = []
    cursor = None
    while True:
        page = ledger.list_transactions(cursor=cursor, limit=1000)
        found.extend(t for t in page.items if (t.client_id or "").startswith("demo-"))
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _demo_accounts(ledger: Ledger) -> dict[int, Account]:
    """The demo's own accounts: none holds the reference unit, which only the layers
    above (reciprocity's positions) keep accounts in."""
    return {i: a for i, a in _accounts(ledger).items() if a.currency != "FRU"}


def _event_count(ledger: Ledger) -> int:
    count, after = 0, 0
    while events := ledger.events_after(after, limit=1000):
        count += len(events)
        after = events[-1].sequence
    return count


def test_the_demo_seeds_four_communities_their_currencies_accounts_and_trade(
    demo_ledger: Ledger, summary: DemoSummary
) -> None:
    assert is_seeded(demo_ledger)
    assert summary.communities == COMMUNITIES
    assert {c.slug for c in demo_ledger.list_communities()} == {*COMMUNITIES, "federation"}

    currencies = {c.code: c for c in demo_ledger.list_currencies()}
    assert set(summary.currencies) == set(currencies) == {*HEARTS.values(), "LEAF", "FRU", "SEK"}
    for community, code in HEARTS.items():
        hearts = currencies[code]
        assert (hearts.kind, hearts.scale, hearts.issuer) == (CurrencyKind.HEARTS, 2, community)
    assert (currencies["LEAF"].kind, currencies["LEAF"].scale) == (CurrencyKind.LEAVES, 0)
    assert currencies["LEAF"].issuer is None  # one Leaves for the whole federation
    assert currencies["FRU"].kind == CurrencyKind.UNIT
    assert currencies["SEK"].kind == CurrencyKind.EXTERNAL

    accounts = _demo_accounts(demo_ledger)
    assert len(accounts) == summary.accounts
    for community, code in HEARTS.items():
        types = {(a.type, a.currency) for a in accounts.values() if a.community == community}
        assert {
            (AccountType.MEMBER, code),
            (AccountType.MEMBER, "LEAF"),
            (AccountType.PROVIDER, code),
            (AccountType.PROVIDER, "SEK"),
            (AccountType.ISSUANCE, code),
            (AccountType.ISSUANCE, "LEAF"),
            (AccountType.TREASURY, code),
        } <= types
    kinds = Counter(a.type for a in accounts.values() if a.currency != "SEK")
    assert kinds[AccountType.MEMBER] == 2 * summary.members == 40
    assert kinds[AccountType.PROVIDER] == summary.providers == 8
    federation_types = {a.type for a in accounts.values() if a.community == "federation"}
    assert {AccountType.LIQUIDITY, AccountType.FEES, AccountType.ROUNDING} <= federation_types

    named = {
        summary.ana: ("riverbend", "HRB", "ana"),
        summary.bo: ("riverbend", "HRB", "bo"),
        summary.ana_leaf: ("riverbend", "LEAF", "ana"),
        summary.cai: ("hilltop", "HHT", "cai"),
        summary.cai_leaf: ("hilltop", "LEAF", "cai"),
        summary.riverbend_sek: ("riverbend", "SEK", "treasury"),
    }
    for account_id, expected in named.items():
        account = accounts[account_id]
        assert (account.community, account.currency, account.name) == expected
        assert account.balance.posted > 0 or account.currency == "SEK"

    transactions = _transactions(demo_ledger)
    assert len(transactions) == summary.transactions
    assert 200 <= len(transactions) <= 600  # "a few hundred"
    assert all(t.memo and t.category for t in transactions)
    categories = Counter(t.category for t in transactions)
    for category in ("care:childcare", "care:eldercare", "eco:wetland", "eco:tree-planting"):
        assert categories[category] >= 5, categories

    totals: Counter[str] = Counter()
    for account in _accounts(demo_ledger).values():
        totals[account.currency] += account.balance.posted
    assert set(totals.values()) == {0}, totals  # every currency sums to zero


def test_seeding_twice_writes_nothing_and_answers_the_same(
    demo_ledger: Ledger, summary: DemoSummary
) -> None:
    before = (
        len(_accounts(demo_ledger)),
        len(_transactions(demo_ledger)),
        _event_count(demo_ledger),
        len(Exchange(demo_ledger).protocols()),
    )
    assert seed_demo(demo_ledger) == summary
    assert seed_demo(demo_ledger, seed=8) == summary  # the demo that is there, not a new one
    after = (
        len(_accounts(demo_ledger)),
        len(_transactions(demo_ledger)),
        _event_count(demo_ledger),
        len(Exchange(demo_ledger).protocols()),
    )
    assert after == before


def test_a_run_that_stopped_half_way_resumes_without_doubling_anything(
    demo_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = Exchange.convert
    calls = Counter[str]()

    def convert_then_crash(self: Exchange, **arguments: Any) -> Any:
        calls["convert"] += 1
        if calls["convert"] > 10:
            raise RuntimeError("the power went out")
        return convert(self, **arguments)

    with monkeypatch.context() as patch:
        patch.setattr(Exchange, "convert", convert_then_crash)
        with pytest.raises(RuntimeError, match="power"):
            seed_demo(demo_ledger)
    assert not is_seeded(demo_ledger)
    written = len(_transactions(demo_ledger))

    summary = seed_demo(demo_ledger)
    assert is_seeded(demo_ledger)
    transactions = _transactions(demo_ledger)
    assert written < len(transactions) == summary.transactions
    client_ids = Counter(t.client_id for t in transactions)
    assert max(client_ids.values()) == 1


def _value(transaction: Transaction, accounts: dict[int, Account]) -> dict[tuple[str, str], int]:
    """Who paid whom across communities in one transaction, in minor units of what the
    payer paid (the federation's exchange accounts in between are looked through)."""
    payers = {
        accounts[p.source_account_id].community: p.amount
        for p in transaction.postings
        if accounts[p.source_account_id].community != "federation"
    }
    payees = {
        accounts[p.destination_account_id].community
        for p in transaction.postings
        if accounts[p.destination_account_id].community != "federation"
    }
    return {
        (payer, payee): amount
        for payer, amount in payers.items()
        for payee in payees
        if payer != payee
    }


def test_cross_community_trade_goes_round_in_circles(
    demo_ledger: Ledger, summary: DemoSummary
) -> None:
    accounts = _accounts(demo_ledger)
    transactions = _transactions(demo_ledger)
    paid: Counter[tuple[str, str]] = Counter()
    leaves_across = hearts_across = 0
    for transaction in transactions:
        flows = _value(transaction, accounts)
        currencies = {p.currency for p in transaction.postings}
        if flows and currencies == {"LEAF"}:
            leaves_across += 1
        if flows and len(currencies) == 2 and "SEK" not in currencies:
            hearts_across += 1
        for pair in flows:
            paid[pair] += 1
    assert leaves_across >= 30  # the shared Leaves cross communities in one currency
    assert hearts_across >= 20  # Hearts cross through the exchange

    # A's members pay B's, B's pay C's, C's pay A's: circles a clearing can cancel.
    for circle in (
        ("riverbend", "hilltop", "saltmarsh"),
        ("hilltop", "oakvale", "saltmarsh"),
    ):
        for payer, payee in zip(circle, (*circle[1:], circle[0]), strict=True):
            assert paid[payer, payee] >= 1, (payer, payee, paid)
    # oakvale's members pay the others much more often than they are paid by them.
    out_of_oakvale = sum(n for (payer, _), n in paid.items() if payer == "oakvale")
    into_oakvale = sum(n for (_, payee), n in paid.items() if payee == "oakvale")
    assert out_of_oakvale > 2 * into_oakvale > 0

    conversions = [t for t in transactions if len({p.currency for p in t.postings}) == 2]
    assert len(conversions) == summary.conversions
    exchange = Exchange(demo_ledger)
    assert all(exchange.conversion_of(t.id) is not None for t in conversions)


def _next_first_week_of_a_quarter(after: dt.datetime) -> dt.datetime:
    day = (after + dt.timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    while not (day.month in (1, 4, 7, 10) and day.day == 3):
        day += dt.timedelta(days=1)
    return day


def test_the_federations_protocols_are_in_force(
    demo_ledger: Ledger, summary: DemoSummary, clock: Clock
) -> None:
    exchange = Exchange(demo_ledger)
    assert exchange.settings().reference_unit == "FRU"
    assert exchange.settings().federation_community == "federation"
    assert exchange.valuation_at("LEAF").rate == Fraction(4, 5)
    assert len(exchange.protocols()) == summary.protocols

    for source in HEARTS.values():
        for target in HEARTS.values():
            if source != target:
                between = exchange.protocol_in_force(source, target)
                assert between is not None
                assert between.spec.allowed
                assert between.spec.fixed_rate is None  # at valuation
        leaves = exchange.protocol_in_force("LEAF", source)
        assert leaves is not None
        assert leaves.spec.windows == (Window(months=(1, 4, 7, 10), days=(1, 2, 3, 4, 5, 6, 7)),)
        redeem = exchange.protocol_in_force(source, "SEK")
        assert redeem is not None
        assert redeem.spec.fixed_rate is not None
        assert redeem.spec.eligible_account_types == (AccountType.PROVIDER,)
    forbidden = exchange.protocol_in_force("LEAF", "SEK")
    assert forbidden is not None
    assert not forbidden.spec.allowed

    # Ana pays Cai in hilltop's Hearts, worth 1.25 of riverbend's.
    paid = exchange.convert(
        payer_account_id=summary.ana, payee_account_id=summary.cai, target_amount=2_000
    )
    assert paid.transaction is not None
    assert paid.transaction.postings[0].amount == 2_500
    # Ana is a member, not a chartered provider: no kronor for her Hearts.
    with pytest.raises(LedgerError) as refused:
        exchange.convert(
            payer_account_id=summary.ana,
            payee_account_id=summary.riverbend_sek,
            source_amount=1_000,
        )
    assert refused.value.code == Code.ACCOUNT_NOT_ELIGIBLE
    # A provider may.
    accounts = _accounts(demo_ledger).values()
    daycare = {(a.currency, a.name): a.id for a in accounts if a.community == "riverbend"}
    redeemed = exchange.convert(
        payer_account_id=daycare["HRB", "sunflower-daycare"],
        payee_account_id=daycare["SEK", "sunflower-daycare"],
        source_amount=1_000,
    )
    assert redeemed.transaction is not None
    assert redeemed.transaction.postings[-1].amount == 21_780  # ♡10 at 22 kr, less 1 %
    # Leaves never turn into kronor.
    with pytest.raises(LedgerError) as forbidden_error:
        exchange.convert(
            payer_account_id=summary.ana_leaf,
            payee_account_id=summary.riverbend_sek,
            source_amount=5,
        )
    assert forbidden_error.value.code == Code.CONVERSION_FORBIDDEN

    # Leaves buy Hearts in the first week of a quarter, and not in the second.
    opening = _next_first_week_of_a_quarter(clock())
    clock.advance((opening - clock()).total_seconds())
    bought = exchange.convert(
        payer_account_id=summary.ana_leaf, payee_account_id=summary.ana, source_amount=5
    )
    assert bought.transaction is not None
    assert bought.transaction.postings[-1].amount == 400  # 5 Leaves at 0.80 = ♡4.00
    clock.advance(dt.timedelta(days=7).total_seconds())
    with pytest.raises(LedgerError) as closed:
        exchange.convert(
            payer_account_id=summary.ana_leaf, payee_account_id=summary.ana, source_amount=5
        )
    assert closed.value.code == Code.WINDOW_CLOSED


def test_the_demo_counts_are_what_the_database_holds(
    demo_ledger: Ledger, summary: DemoSummary, engine: Engine
) -> None:
    """The summary `heartleaf demo` prints, counted again from the stored rows."""
    with engine.connect() as connection:

        def count(sql: str) -> int:
            return int(connection.execute(text(sql)).scalar_one())

        transactions = count("SELECT count(*) FROM transactions WHERE client_id LIKE 'demo-%'")
        accounts = count(
            "SELECT count(*) FROM accounts JOIN currencies ON currencies.id = accounts.currency_id"
            " WHERE currencies.code <> 'FRU'"
        )
        communities = count("SELECT count(*) FROM communities")
        currencies = count("SELECT count(*) FROM currencies")
        multi_currency = count(
            "SELECT count(*) FROM (SELECT postings.transaction_id FROM postings"
            " JOIN transactions ON transactions.id = postings.transaction_id"
            " WHERE transactions.client_id LIKE 'demo-%'"
            " GROUP BY postings.transaction_id"
            " HAVING count(DISTINCT postings.currency_id) = 2) AS conversions"
        )
    assert transactions == summary.transactions
    assert accounts == summary.accounts
    assert communities == len(summary.communities) + 1  # and the federation's own
    assert currencies == len(summary.currencies)
    assert multi_currency == summary.conversions
    accounts_by_id = _accounts(demo_ledger)
    across = sum(bool(_value(t, accounts_by_id)) for t in _transactions(demo_ledger))
    assert across == summary.cross_community
    assert len(Exchange(demo_ledger).protocols()) == summary.protocols


def test_the_demo_history_spans_the_months_before_today(
    demo_ledger: Ledger, summary: DemoSummary, clock: Clock
) -> None:
    today = clock().astimezone(dt.UTC).date()
    assert summary.until == today
    assert summary.since == season_start(today) == today - dt.timedelta(days=30 * MONTHS)
    start = dt.datetime.combine(summary.since, dt.time(), dt.UTC)
    end = dt.datetime.combine(summary.until, dt.time(), dt.UTC)
    transactions = _transactions(demo_ledger)
    instants = [t.created_at for t in transactions]
    assert all(start <= instant < end for instant in instants)
    assert instants == sorted(instants)  # written in the order of the season
    assert len({instant.date() for instant in instants}) >= 100  # most days see trade

    # Each of the season's months has issuance, trade inside communities and across them.
    accounts = _accounts(demo_ledger)
    for month in range(MONTHS):
        since = start + dt.timedelta(days=30 * month)
        inside = [t for t in transactions if since <= t.created_at < since + dt.timedelta(30)]
        assert len(inside) >= 60, month
        assert sum(bool(_value(t, accounts)) for t in inside) >= 15, month
        assert sum(len({p.currency for p in t.postings}) == 2 for t in inside) >= 5, month

    # The free-rider report's window and the one before it both hold trade; oakvale takes
    # in both, and more in the last one.
    reciprocity = Reciprocity(demo_ledger)
    tomorrow = today + dt.timedelta(days=1)
    report = reciprocity.free_riders(DayWindow.of(tomorrow - dt.timedelta(days=30), tomorrow))
    lines = {line.community: line for line in report.lines}
    assert sum(line.figures.given for line in report.lines) > 0
    assert sum(line.previous.given for line in report.lines) > 0
    assert 0 < -lines["oakvale"].previous.net < lines["oakvale"].net_intake
    # Windows differ from all time, and add up to it.
    months = [
        reciprocity.matrix(
            DayWindow.of(
                summary.since + dt.timedelta(30 * m), summary.since + dt.timedelta(30 * (m + 1))
            )
        )
        for m in range(MONTHS)
    ]
    whole = reciprocity.matrix()
    given = {t.community: t.figures.given for t in whole.totals}
    assert all(0 < sum(t.figures.given for t in m.totals) < sum(given.values()) for m in months)
    for community, total in given.items():
        assert total == sum(
            t.figures.given for m in months for t in m.totals if t.community == community
        )

    # As-of reads: Ana's balance moved over the season, and each instant reads what it was.
    ana = [
        t
        for t in transactions
        if any(summary.ana in (p.source_account_id, p.destination_account_id) for p in t.postings)
    ]
    assert len({t.created_at.date() for t in ana}) >= 8
    balances = {demo_ledger.balance(summary.ana, as_of=t.created_at).posted for t in ana}
    assert len(balances) >= 5
    assert demo_ledger.balance(summary.ana, as_of=start).posted == 0
    assert (
        demo_ledger.balance(summary.ana, as_of=end).posted == accounts[summary.ana].balance.posted
    )


def _heartleaf(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTLEAF, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def environment(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "HEARTLEAF_DATA_DIR": str(tmp_path)}


EXPORT_ACCOUNTS = re.compile(
    r"^  export ANA=(\d+) BO=(\d+) ANA_LEAF=(\d+) CAI=(\d+) CAI_LEAF=(\d+) RIVERBEND_SEK=(\d+)$",
    re.MULTILINE,
)


KEY_LINE = re.compile(r"^  export (FEDERATION_KEY|TREASURER_KEY)=(hl_\S+) ", re.MULTILINE)


def _key_rows(environment: dict[str, str]) -> list[list[str]]:
    listed = _heartleaf(environment, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    return [line.split() for line in listed.stdout.splitlines()[1:]]


def test_heartleaf_demo_prints_keys_and_the_accounts_of_the_tour(
    environment: dict[str, str], engine: Engine
) -> None:
    first = _heartleaf(environment, "demo", "--server", "http://127.0.0.1:8080/")
    assert first.returncode == 0, first.stderr
    assert re.search(r"seeded the demo federation: \d+ transactions from ", first.stderr)
    assert "  export HEARTLEAF=http://127.0.0.1:8080\n" in first.stdout
    assert re.search(r"^  export FEDERATION_KEY=hl_\S+ ", first.stdout, re.MULTILINE)
    assert re.search(
        r"^  export TREASURER_KEY=hl_\S+ .*treasurer of riverbend$", first.stdout, re.MULTILINE
    )
    first_keys = dict(KEY_LINE.findall(first.stdout))
    exported = EXPORT_ACCOUNTS.search(first.stdout)
    assert exported is not None, first.stdout
    assert "  communities: riverbend, hilltop, saltmarsh, oakvale" in first.stdout

    summary = seed_demo(build_ledger(engine))  # already there: answers without writing
    assert tuple(map(int, exported.groups())) == (
        summary.ana,
        summary.bo,
        summary.ana_leaf,
        summary.cai,
        summary.cai_leaf,
        summary.riverbend_sek,
    )
    assert f"  transactions: {summary.transactions}\n" in first.stdout
    assert f"  since: {summary.since}\n" in first.stdout

    # Again, and as `make run` calls it: nothing written, no key minted, the rest printed.
    again = _heartleaf(environment, "demo")
    assert again.returncode == 0, again.stderr
    assert "already there; nothing written" in again.stderr
    assert EXPORT_ACCOUNTS.findall(again.stdout) == [exported.groups()]
    assert "  export HEARTLEAF=http://127.0.0.1:8000\n" in again.stdout
    assert KEY_LINE.findall(again.stdout) == []
    assert "heartleaf demo --reissue-keys" in again.stdout
    quiet = _heartleaf(environment, "demo", "--if-empty")
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert EXPORT_ACCOUNTS.findall(quiet.stdout) == [exported.groups()]
    assert KEY_LINE.findall(quiet.stdout) == []
    assert [(row[0], row[2]) for row in _key_rows(environment)] == [
        ("1", "federation"),
        ("2", "treasurer"),
    ]
    assert [k.revoked_at for k in key_store.list_keys(engine)] == [None, None]

    # On purpose: the tour's keys are revoked and new ones printed (they cannot be shown
    # again, being stored hashed); the old ones stop working, the new ones work.
    reissued = _heartleaf(environment, "demo", "--reissue-keys")
    assert reissued.returncode == 0, reissued.stderr
    assert "keys 1, 2 revoked" in reissued.stdout
    new_keys = dict(KEY_LINE.findall(reissued.stdout))
    assert set(new_keys) == {"FEDERATION_KEY", "TREASURER_KEY"}
    assert not set(new_keys.values()) & set(first_keys.values())
    assert EXPORT_ACCOUNTS.findall(reissued.stdout) == [exported.groups()]
    assert [row[0] for row in _key_rows(environment)] == ["1", "2", "3", "4"]
    stored = key_store.list_keys(engine)
    assert [k.id for k in stored if k.revoked_at is not None] == [1, 2]
    assert [(k.role, k.community) for k in stored if k.revoked_at is None] == [
        ("federation", None),
        ("treasurer", "riverbend"),
    ]
    now = dt.datetime.now(dt.UTC)
    assert key_store.authenticate(engine, first_keys["FEDERATION_KEY"], now) is None
    assert key_store.authenticate(engine, first_keys["TREASURER_KEY"], now) is None
    fresh = key_store.authenticate(engine, new_keys["TREASURER_KEY"], now)
    assert fresh is not None
    assert fresh.principal.community == "riverbend"
    assert len(_transactions(build_ledger(engine))) == summary.transactions  # nothing reseeded

    verified = _heartleaf(environment, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
