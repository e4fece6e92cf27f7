"""The benchmark's workload: the same deterministic transfers for Heartleaf and every peer.

1,000 accounts in 10 communities (100 each, account ``i`` in community ``i // 100``),
``n`` transfers between random distinct accounts, integer amounts of 1..100,000 minor
units, one currency, seed 42; then 100 accounts drawn for balance lookups, and the balance
each account ends with. It is the workload the peer baselines of the federation's shared
folder were first measured on, draw for draw, so figures measured then and now are of the
same work (``tests/test_bench.py`` checks that, when that folder is there to compare).

This module uses the standard library only: the peers that run in a virtual environment
of their own (``bench.hordak``) import it without Heartleaf installed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

SEED = 42
ACCOUNT_COUNT = 1000
COMMUNITY_COUNT = 10
AMOUNT_MAX = 100_000  # minor units: 0.01 .. 1,000.00
LOOKUP_COUNT = 100
CURRENCY = "EUR"  # a label for the peers; Heartleaf maps the workload into Leaves
Transfer = tuple[int, int, int, int]  # (key, source index, destination index, amount)


def community_of(index: int) -> int:
    return index // (ACCOUNT_COUNT // COMMUNITY_COUNT)


def account_name(index: int) -> str:
    return f"Assets:C{community_of(index):02d}:A{index:04d}"


def _draw(rng: random.Random, key: int) -> Transfer:
    source = rng.randrange(ACCOUNT_COUNT)
    destination = rng.randrange(ACCOUNT_COUNT - 1)
    if destination >= source:  # any account but the source, each equally likely
        destination += 1
    return key, source, destination, rng.randint(1, AMOUNT_MAX)


def stream(start: int, stop: int) -> Iterator[Transfer]:
    """Transfers ``start .. stop - 1`` (a prefix of every longer workload)."""
    rng = random.Random(SEED)
    for key in range(stop):
        transfer = _draw(rng, key)
        if key >= start:
            yield transfer


def expected_deltas(start: int, stop: int) -> list[int]:
    """What transfers ``start .. stop - 1`` do to each account's balance."""
    deltas = [0] * ACCOUNT_COUNT
    for _key, source, destination, amount in stream(start, stop):
        deltas[source] -= amount
        deltas[destination] += amount
    return deltas


def generate(n: int) -> dict[str, Any]:
    """The workload of ``n`` transfers: accounts, transfers, lookups, expected balances."""
    rng = random.Random(SEED)
    transfers = [list(_draw(rng, key)) for key in range(n)]
    lookups = [rng.randrange(ACCOUNT_COUNT) for _ in range(LOOKUP_COUNT)]
    balances = [0] * ACCOUNT_COUNT
    for _key, source, destination, amount in transfers:
        balances[source] -= amount
        balances[destination] += amount
    return {
        "seed": SEED,
        "currency": CURRENCY,
        "accounts": [
            {"id": i, "community": community_of(i), "name": account_name(i)}
            for i in range(ACCOUNT_COUNT)
        ],
        "transfers": transfers,  # [key, source, destination, amount in minor units]
        "lookups": lookups,
        "expected_balances": balances,
    }
