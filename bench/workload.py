"""The shared workload and how it maps into Heartleaf.

``../shared/peers/gen_workload.py`` defines the work every peer does: 1,000 accounts in 10
communities, transfers between random distinct accounts, amounts of 1..100,000 minor
units, seed 42. We import it (never edit it), let it write its files under the scratch
directory (``bench/.peers/data`` by default, where the peers' run reads them too), and
check that our streaming copy of its generator yields exactly its transfers, so the
history builds can go past N (to a million postings) on the same stream.

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

import contextlib
import importlib.util
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

from exchange.reciprocity import Reciprocity
from exchange.service import Exchange
from ledger.model import AccountType, CurrencyKind, PostingDraft, TransactionDraft
from ledger.service import Ledger

BENCH_DIR = Path(__file__).resolve().parent
REPOSITORY_DIR = BENCH_DIR.parent
PEERS_DIR = REPOSITORY_DIR.parent / "shared" / "peers"
PRIVATE_DIR = BENCH_DIR / ".peers"  # gitignored: workload files, databases, peer venv


@dataclass(frozen=True, slots=True)
class Scratch:
    """Where one run keeps its files: workload, SQLite databases, server logs.

    The default is ``bench/.peers`` (gitignored), beside the peers' files; the test of the
    benchmark passes a temporary directory so it never touches a real run's databases."""

    root: Path

    @property
    def data(self) -> Path:  # the shared workload's files (PEERS_DATA)
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


SEED = 42  # gen_workload.SEED
ACCOUNT_COUNT = 1000  # gen_workload.N_ACCOUNTS
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
Transfer = tuple[int, int, int, int]  # (key, source index, destination index, amount)


def generator(data_dir: Path) -> ModuleType:
    """The peers' ``gen_workload`` module, writing under ``data_dir``."""
    spec = importlib.util.spec_from_file_location("gen_workload", PEERS_DIR / "gen_workload.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {PEERS_DIR / 'gen_workload.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vars(module)["DATA"] = str(data_dir)  # read by load() and main() when they run
    return module


def load_shared(n: int, data_dir: Path) -> dict[str, Any]:
    """The shared workload of ``n`` transfers, checked against our streaming generator."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # its "wrote workload" line is progress
        shared: dict[str, Any] = generator(data_dir).load(n)
    ours = [list(t) for t in stream(0, n)]
    if ours != shared["transfers"] or expected_deltas(0, n) != shared["expected_balances"]:
        raise RuntimeError("bench.workload.stream no longer matches gen_workload.py")
    return shared


def stream(start: int, stop: int) -> Iterator[Transfer]:
    """Transfers ``start .. stop - 1`` of the shared stream (gen_workload's exact draws)."""
    rng = random.Random(SEED)
    for key in range(stop):
        source = rng.randrange(ACCOUNT_COUNT)
        destination = rng.randrange(ACCOUNT_COUNT - 1)
        if destination >= source:
            destination += 1
        amount = rng.randint(1, 100_000)
        if key >= start:
            yield key, source, destination, amount


def expected_deltas(start: int, stop: int) -> list[int]:
    """What transfers ``start .. stop - 1`` do to each workload account's balance."""
    deltas = [0] * ACCOUNT_COUNT
    for _key, source, destination, amount in stream(start, stop):
        deltas[source] -= amount
        deltas[destination] += amount
    return deltas


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
    ledger: Ledger, shared: dict[str, Any], *, exchange: bool = True
) -> Federation:
    """Communities, the currency, 1,000 members and 10 issuance accounts, then funding;
    with ``exchange``, the federation's exchange and credit lines as well."""
    accounts = shared["accounts"]
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
