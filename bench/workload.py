"""The benchmark's workload and how it maps into Heartleaf.

``bench.generator`` defines the work Heartleaf and every peer do: 1,000 accounts in 10
communities, transfers between random distinct accounts, amounts of 1..100,000 minor
units, seed 42, drawn as a stream so the history builds can go past N (to a million
postings) on the same transfers.

The mapping: community ``i // 100`` becomes community ``c0i``; one federation-wide currency
(Leaves, the currency the federation shares across communities, so cross-community
transfers are ordinary); workload account ``i`` becomes a member account with the default
floor of 0 (no overdraft); each community gets an issuance account that funds each of its
members with ``FUNDING`` before any measured transfer. The floor is still checked on every
transfer; the funding only makes sure the workload, which ignores funds, is never refused
in whatever order concurrent clients happen to post it. Every transfer carries a client id
(``t0000042``), so idempotency is recorded for each one, and every posting writes its two
history rows.

The federation runs as a real one does, with its exchange configured (``configure_exchange``):
a reference unit, Leaves valued in it and a credit line for every community. So the
reciprocity observer that ``api.app.build_ledger`` installs does its real work on every
cross-community transfer (nine in ten of the workload's): it values the movement, checks
the communities' credit lines and books the flow between their position accounts, inside
the posting's unit of work. ``--bare-ledger`` leaves the exchange unconfigured, and the
observer then records nothing: the ledger core alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from bench.generator import Transfer, generate, stream
from exchange.reciprocity import Reciprocity
from exchange.service import Exchange
from ledger.model import AccountType, CurrencyKind, PostingDraft, TransactionDraft
from ledger.service import Ledger

BENCH_DIR = Path(__file__).resolve().parent
REPOSITORY_DIR = BENCH_DIR.parent
PRIVATE_DIR = BENCH_DIR / ".peers"  # gitignored: databases, logs, the peers' venv


@dataclass(frozen=True, slots=True)
class Scratch:
    """Where one run keeps its files: workload, SQLite databases, server logs.

    The default is ``bench/.peers`` (gitignored); the test of the benchmark passes a
    temporary directory so it never touches a real run's databases."""

    root: Path

    @property
    def data(self) -> Path:  # the peers' files
        return self.root / "data"

    @property
    def sqlite(self) -> Path:
        return self.root / "db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def heartleaf_data(self) -> Path:  # HEARTLEAF_DATA_DIR of the commands we start
        return self.root / "data-dir"

    def make(self) -> Scratch:
        for path in (self.data, self.sqlite, self.logs, self.heartleaf_data):
            path.mkdir(parents=True, exist_ok=True)
        return self


CURRENCY = "LEAF"
SCALE = 2
# 100 million Leaves per member: far above what any member sends in ten million transfers
# (about 50,000 minor units a transfer, one in 500 transfers from a given member).
FUNDING = 10_000_000_000
FEDERATION = "federation"  # the community that owns the federation's own accounts
UNIT = "FRU"  # the reference unit
# What each community may owe the rest of the network, in minor units of the unit: checked
# on every cross-community transfer, far above what the workload's random walk reaches.
CREDIT_LIMIT = 10**15


def load_workload(n: int) -> dict[str, Any]:
    """The workload of ``n`` transfers (``bench.generator.generate``)."""
    return generate(n)


def chunks(start: int, stop: int, size: int) -> Iterator[list[Transfer]]:
    chunk: list[Transfer] = []
    for transfer in stream(start, stop):
        chunk.append(transfer)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True, slots=True)
class Federation:
    """Where the workload's accounts live in one Heartleaf database."""

    member_ids: tuple[int, ...]  # workload account index -> Heartleaf account id
    issuance_ids: tuple[int, ...]  # community index -> its issuance account id
    communities: tuple[str, ...]  # community index -> slug

    def community_of(self, index: int) -> int:
        """The community index of workload account ``index`` (100 accounts each)."""
        return index * len(self.issuance_ids) // len(self.member_ids)

    def draft(self, transfer: Transfer) -> TransactionDraft:
        key, source, destination, amount = transfer
        posting = PostingDraft(
            self.member_ids[source], self.member_ids[destination], amount, CURRENCY
        )
        return TransactionDraft(postings=(posting,), client_id=client_id(key))

    def body(self, transfer: Transfer) -> dict[str, Any]:
        """The same transfer as the REST API's ``TransactionCreate``."""
        key, source, destination, amount = transfer
        return {
            "postings": [
                {
                    "source_account_id": self.member_ids[source],
                    "destination_account_id": self.member_ids[destination],
                    "amount": amount,
                    "currency": CURRENCY,
                }
            ],
            "client_id": client_id(key),
        }

    def check_balances(self, ledger: Ledger, deltas: Sequence[int]) -> dict[str, Any]:
        """Every member's balance against funding + the workload's expected change."""
        posted: dict[int, int] = {}
        cursor = None
        while True:
            page = ledger.list_accounts(cursor=cursor, limit=1000)
            posted.update({account.id: account.balance.posted for account in page.items})
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        wrong = [
            index
            for index, account_id in enumerate(self.member_ids)
            if posted.get(account_id) != FUNDING + deltas[index]
        ]
        wrong_issuance = [
            account_id
            for account_id in self.issuance_ids
            if posted.get(account_id) != -FUNDING * (len(self.member_ids) // len(self.issuance_ids))
        ]
        return {
            "balances_correct": not wrong and not wrong_issuance,
            "mismatches": len(wrong) + len(wrong_issuance),
        }


def client_id(key: int) -> str:
    return f"t{key:07d}"


def build_federation(
    ledger: Ledger, workload: dict[str, Any], *, exchange: bool = True
) -> Federation:
    """Communities, the currency, 1,000 members and 10 issuance accounts, then funding;
    with ``exchange``, the federation's exchange and credit lines as well."""
    accounts = workload["accounts"]
    community_count = 1 + max(a["community"] for a in accounts)
    slugs = tuple(f"c{index:02d}" for index in range(community_count))
    for index, slug in enumerate(slugs):
        ledger.create_community(slug, f"Community {index}")
    ledger.create_currency(
        CURRENCY, kind=CurrencyKind.LEAVES, scale=SCALE, name="Leaves", symbol="🍃"
    )
    issuance = tuple(
        ledger.open_account(
            community=slug, currency=CURRENCY, type=AccountType.ISSUANCE, name="issuance"
        ).id
        for slug in slugs
    )
    members = tuple(
        ledger.open_account(
            community=slugs[a["community"]],
            currency=CURRENCY,
            type=AccountType.MEMBER,
            name=a["name"],
        ).id
        for a in accounts
    )
    funding = [
        TransactionDraft(
            postings=(PostingDraft(issuance[a["community"]], members[a["id"]], FUNDING, CURRENCY),),
            client_id=f"funding-{a['id']:04d}",
            memo="bench funding",
        )
        for a in accounts
    ]
    refused = [o.error for o in ledger.post_transactions(funding) if o.error is not None]
    if refused:
        raise RuntimeError(f"funding refused: {refused[0]}")
    if exchange:
        configure_exchange(ledger, slugs)
    return Federation(members, issuance, slugs)


def configure_exchange(ledger: Ledger, slugs: Sequence[str]) -> None:
    """The reference unit, Leaves valued at one unit, and a credit line per community."""
    ledger.create_community(FEDERATION, "The federation")
    ledger.create_currency(UNIT, kind=CurrencyKind.UNIT, scale=SCALE, name="Unit", symbol="¤")
    market = Exchange(ledger)
    market.configure(reference_unit=UNIT, federation_community=FEDERATION)
    for code in (UNIT, CURRENCY):
        market.set_valuation(code, Fraction(1), by="bench", reason="bench federation")
    reciprocity = Reciprocity(ledger)
    for slug in slugs:
        reciprocity.set_credit_line(slug, CREDIT_LIMIT, by="bench")
