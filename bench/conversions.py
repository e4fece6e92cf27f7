"""Conversions per second through an exchange protocol, in-process.

The market is the one of ``tests/exchange/test_conversions.py``, grown to a hundred members
a side: communities ``federation``, ``riverbend`` and ``hilltop``; the reference unit FRU;
riverbend's Hearts (HRB, valued at 1 unit) and hilltop's Hearts (HHT, valued at 5/4, so
conversions round and leave a residue); one protocol HRB → HHT at valuation with a 0.5 %
fee, in force at once (the federation asks for no approvals). A hundred riverbend members
hold HRB, funded from riverbend's issuance; a hundred hilltop members hold HHT (fewer, down
to ten, when a run converts fewer than 500 times, so the small sizes set up quickly).

Each conversion is ``Exchange.convert(payer, payee, source_amount=…)`` on the ledger the
service runs (``api.app.build_ledger``): a riverbend member pays a hilltop member in HHT.
The exchange prices it under the protocol in force, checks the protocol's rules inside the
posting's unit of work (its write hook, after the accounts are locked), and writes one
balanced transaction of up to four postings (payer → liquidity, fee, rounding residue;
liquidity → payee) with its conversion record. Payer, payee and amount come from the shared
workload's stream (indices modulo the side; 10.00 HRB added to each amount so no conversion is
too small to deliver anything), each with a client id. Afterwards ``ledger.verify`` checks
every invariant of the database.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from api.app import build_ledger
from bench.databases import Databases
from bench.generator import stream
from bench.measure import latency, now, rate, say
from exchange.model import ProtocolSpec
from exchange.service import Exchange
from ledger.database import make_engine
from ledger.model import AccountType, CurrencyKind, PostingDraft, TransactionDraft
from ledger.service import Ledger
from ledger.verify import verify

SIDE = 100  # members on each side of the market (at most)
FUNDING = 10_000_000_000  # minor HRB per payer: far above what the runs convert
MINIMUM = 1_000  # added to each workload amount: 10.00 HRB
BY = "bench"


def run(databases: Databases, backend: str, count: int) -> dict[str, Any]:
    url = databases.fresh(backend, "conversions")
    engine = make_engine(url)
    try:
        ledger = build_ledger(engine)
        say(f"conversions {backend}: a two-community market")
        started = now()
        side = min(SIDE, max(10, count // 5))
        exchange, payers, payees = _market(ledger, side)
        setup_seconds = now() - started
        say(f"conversions {backend}: {count:,} conversions HRB → HHT, one call each")
        plan = [
            (key, payers[source % side], payees[destination % side], amount + MINIMUM)
            for key, source, destination, amount in stream(0, count)
        ]
        samples, postings, failures, first_failure = [], 0, 0, None
        started = now()
        for key, payer, payee, amount in plan:
            before = now()
            try:
                outcome = exchange.convert(
                    payer_account_id=payer,
                    payee_account_id=payee,
                    source_amount=amount,
                    client_id=f"c{key:07d}",
                )
            except Exception as error:  # counted and shown, not fatal: the rate is the point
                failures += 1
                first_failure = first_failure or f"{type(error).__name__}: {error}"
                continue
            finally:
                samples.append(now() - before)
            assert outcome.transaction is not None
            postings += len(outcome.transaction.postings)
        elapsed = now() - started
        say(f"conversions {backend}: verify")
        violations = verify(engine)
        return {
            "conversions": count,
            "members_a_side": side,
            "setup_seconds": setup_seconds,
            "seconds": elapsed,
            "per_second": rate(count - failures, elapsed),
            "latency": latency(samples),
            "postings_per_conversion": postings / max(1, count - failures),
            "failures": failures,
            "first_failure": first_failure,
            "sound": not violations,
            "violations": [str(v) for v in violations[:5]],
        }
    finally:
        engine.dispose()


def _market(ledger: Ledger, side: int) -> tuple[Exchange, list[int], list[int]]:
    for slug, name in (
        ("federation", "The federation"),
        ("riverbend", "Riverbend"),
        ("hilltop", "Hilltop"),
    ):
        ledger.create_community(slug, name)
    ledger.create_currency(
        "FRU", kind=CurrencyKind.UNIT, scale=2, name="Reference unit", symbol="¤"
    )
    for code, issuer, name in (("HRB", "riverbend", "Riverbend"), ("HHT", "hilltop", "Hilltop")):
        ledger.create_currency(
            code,
            kind=CurrencyKind.HEARTS,
            scale=2,
            name=f"{name} Hearts",
            symbol="♡",
            issuer=issuer,
        )

    def open_(community: str, currency: str, name: str, kind: AccountType) -> int:
        return ledger.open_account(community=community, currency=currency, type=kind, name=name).id

    issuance = open_("riverbend", "HRB", "issuance", AccountType.ISSUANCE)
    payers = [open_("riverbend", "HRB", f"m{i:03d}", AccountType.MEMBER) for i in range(side)]
    payees = [open_("hilltop", "HHT", f"m{i:03d}", AccountType.MEMBER) for i in range(side)]
    funding = [
        TransactionDraft(
            postings=(PostingDraft(issuance, payer, FUNDING, "HRB"),),
            client_id=f"funding-{payer}",
        )
        for payer in payers
    ]
    refused = [o.error for o in ledger.post_transactions(funding) if o.error is not None]
    if refused:
        raise RuntimeError(f"funding refused: {refused[0]}")
    exchange = Exchange(ledger)
    exchange.configure(
        reference_unit="FRU", federation_community="federation", approvals_required=0
    )
    for code, value in (("FRU", "1"), ("HRB", "1"), ("HHT", "5/4")):
        exchange.set_valuation(code, Fraction(value), by=BY, reason="bench market")
    exchange.propose(
        ProtocolSpec("HRB", "HHT", fee_bps=50), by=BY, reason="Hearts at valuation, 0.5 % fee"
    )
    return exchange, payers, payees
