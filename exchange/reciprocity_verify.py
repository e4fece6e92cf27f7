"""The reciprocity layer's invariants, checked from the stored rows.

``exchange.reciprocity`` maintains figures so that no report sums history: per (giver,
receiver) what was given and what clearing set off (``reciprocity_pairs``), per (giver, UTC
day, receiver) what was given that day (``reciprocity_days``), and per community a
position account whose balance is what it gave minus what it received. This module trusts
none of them. It recomputes each from what they are maintained from and names every
figure that differs:

- ``reciprocity_pairs``: a pair's ``given`` is the sum of its recorded flows
  (``reciprocity_flows``, a reversal's rows negated), and its ``cleared`` is what the
  executed clearing proposals set off on that pair;
- ``reciprocity_days``: a day row is the sum of that UTC day's flows of the pair;
- ``reciprocity_position``: a position account's balance is its community's flows given
  minus received, less what clearing set off of its claims plus what it set off of its
  debts (each clearing books creditor -> debtor between the position accounts).

The ledger's own checker (``ledger.verify``) already holds each position account's balance
to its postings and history, so together they tie the positions to the flows. The CLI's
``verify`` runs both; each reads one consistent snapshot.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Engine, func, select, text

from exchange.reciprocity import (
    POSITION_ACCOUNT_NAME,
    POSITION_ACCOUNT_TYPE,
    _context,
    _from_json,
    _slugs,
    days_table,
    flows_table,
    pairs_table,
    proposals_table,
)
from ledger import repository as ledger_repository
from ledger.database import unit_of_work
from ledger.verify import Violation

MICROS_PER_DAY = 86_400 * 1_000_000
EPOCH_DAY = dt.date(1970, 1, 1)

Pair = tuple[int, int]


def verify(engine: Engine) -> list[Violation]:
    """Every reciprocity figure that differs from its recomputation, in one snapshot."""
    with unit_of_work(engine, write=False, snapshot=True) as connection:
        return verify_within(connection)


def verify_within(connection: Connection) -> list[Violation]:
    slugs = _slugs(connection)

    def name(community_id: int) -> str:
        return slugs.get(community_id, f"community {community_id}")

    def pair_name(pair: Pair) -> str:
        return f"{name(pair[0])} -> {name(pair[1])}"

    violations: list[Violation] = []
    given = _flows_by_pair(connection)
    cleared = _cleared_by_pair(connection, {slug: id_ for id_, slug in slugs.items()})
    stored = {
        (g, r): (int(given_), int(cleared_))
        for g, r, given_, cleared_ in connection.execute(
            select(
                pairs_table.c.giver_community_id,
                pairs_table.c.receiver_community_id,
                pairs_table.c.given,
                pairs_table.c.cleared,
            )
        )
    }
    for pair in sorted(set(given) | set(cleared) | set(stored)):
        stored_given, stored_cleared = stored.get(pair, (0, 0))
        if stored_given != given.get(pair, 0):
            violations.append(
                Violation(
                    "reciprocity_pairs",
                    f"{pair_name(pair)}: given {stored_given} but its flows sum to "
                    f"{given.get(pair, 0)}",
                )
            )
        if stored_cleared != cleared.get(pair, 0):
            violations.append(
                Violation(
                    "reciprocity_pairs",
                    f"{pair_name(pair)}: cleared {stored_cleared} but executed clearings set "
                    f"off {cleared.get(pair, 0)}",
                )
            )

    by_day = _flows_by_day(connection)
    stored_days = {
        (g, day, r): int(amount)
        for g, day, r, amount in connection.execute(
            select(
                days_table.c.giver_community_id,
                days_table.c.day,
                days_table.c.receiver_community_id,
                days_table.c.amount,
            )
        )
    }
    for key in sorted(set(by_day) | set(stored_days)):
        giver, day, receiver = key
        if stored_days.get(key, 0) != by_day.get(key, 0):
            violations.append(
                Violation(
                    "reciprocity_days",
                    f"{pair_name((giver, receiver))} on {day.isoformat()}: "
                    f"{stored_days.get(key, 0)} but that day's flows sum to {by_day.get(key, 0)}",
                )
            )

    context = _context(connection)
    if context is None:
        return violations
    expected: dict[int, int] = {}
    for (giver, receiver), amount in given.items():
        expected[giver] = expected.get(giver, 0) + amount
        expected[receiver] = expected.get(receiver, 0) - amount
    for (creditor, debtor), amount in cleared.items():  # booked creditor -> debtor
        expected[creditor] = expected.get(creditor, 0) - amount
        expected[debtor] = expected.get(debtor, 0) + amount
    accounts = ledger_repository.accounts
    positions = {
        community_id: (account_id, int(balance))
        for community_id, account_id, balance in connection.execute(
            select(accounts.c.community_id, accounts.c.id, accounts.c.balance_posted).where(
                accounts.c.currency_id == context.unit_id,
                accounts.c.name == POSITION_ACCOUNT_NAME,
                accounts.c.type == str(POSITION_ACCOUNT_TYPE),
            )
        )
    }
    for community_id in sorted(set(expected) | set(positions)):
        account_id, balance = positions.get(community_id, (None, 0))
        if balance != expected.get(community_id, 0):
            violations.append(
                Violation(
                    "reciprocity_position",
                    f"{name(community_id)}: position {balance} but its flows and clearings "
                    f"net {expected.get(community_id, 0)}",
                    account_id=account_id,
                )
            )
    return violations


def _flows_by_pair(connection: Connection) -> dict[Pair, int]:
    statement = select(
        flows_table.c.giver_community_id,
        flows_table.c.receiver_community_id,
        func.sum(flows_table.c.amount),
    ).group_by(flows_table.c.giver_community_id, flows_table.c.receiver_community_id)
    return {(g, r): int(total) for g, r, total in connection.execute(statement)}


# Grouped by UTC day in the database (instants are integer microseconds since the epoch;
# flows are never before it), so the check reads one row per pair and day, not per flow.
_FLOWS_BY_DAY_SQL = text(
    "SELECT giver_community_id, receiver_community_id, at / :per_day AS day_number, "
    "SUM(amount) FROM reciprocity_flows "
    "GROUP BY giver_community_id, receiver_community_id, at / :per_day"
)


def _flows_by_day(connection: Connection) -> dict[tuple[int, dt.date, int], int]:
    found: dict[tuple[int, dt.date, int], int] = {}
    for giver, receiver, day_number, total in connection.execute(
        _FLOWS_BY_DAY_SQL, {"per_day": MICROS_PER_DAY}
    ):
        day = EPOCH_DAY + dt.timedelta(days=int(day_number))
        found[giver, day, receiver] = found.get((giver, day, receiver), 0) + int(total)
    return found


def _cleared_by_pair(connection: Connection, ids: dict[str, int]) -> dict[Pair, int]:
    """Per (creditor, receiver = debtor), as ``reciprocity_pairs`` keys what clearing set
    off: the executed proposals' ``cleared``, in their own words."""
    found: dict[Pair, int] = {}
    statement = select(proposals_table.c.cleared).where(proposals_table.c.status == "executed")
    for (cleared,) in connection.execute(statement):
        for (debtor, creditor), amount in _from_json(cleared).items():
            if amount > 0:
                key = (ids[creditor], ids[debtor])
                found[key] = found.get(key, 0) + amount
    return found
