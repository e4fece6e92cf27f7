"""One poisoned draft in a group commit never changes its neighbours' answers.

A draft whose metadata PostgreSQL refuses (NaN, which the API now refuses at the edge,
handed to the ledger directly here) fails the group's shared write; the group then posts
each draft alone, so the valid ones are posted and only the poisoned one fails."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from ledger.group_commit import GroupCommit
from ledger.service import Ledger
from tests.ledger.builders import pay, village
from tests.ledger.grouping import answered, hand_over, writes_held


@pytest.fixture
def group(ledger: Ledger) -> Iterator[GroupCommit]:
    group = GroupCommit(ledger)
    yield group
    group.close()


@pytest.mark.postgres_only
def test_a_poisoned_draft_fails_alone(ledger: Ledger, engine: Engine, group: GroupCommit) -> None:
    v = village(ledger)
    with writes_held(engine):
        first = hand_over(group, pay(v.ana, v.bo, 1), first=True)
        valid = hand_over(group, pay(v.ana, v.bo, 2))
        poisoned = hand_over(group, pay(v.ana, v.bo, 3, metadata={"x": math.nan}))
        also_valid = hand_over(group, pay(v.ana, v.bo, 4))
        assert group.waiting == 3
    answered(first, valid, poisoned, also_valid)

    assert poisoned.error is not None
    assert poisoned.outcome is None
    for handed in (first, valid, also_valid):
        assert handed.outcome is not None
        assert handed.outcome.transaction is not None
    assert ledger.balance(v.bo).posted == 1 + 2 + 4
