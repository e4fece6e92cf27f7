"""Multilateral clearing against independent optima: an LP solved by SciPy (HiGHS) for
amounts a float holds exactly, and for any amounts the optimality certificate of a
minimum-cost flow (no negative cycle in the residual graph of what remains), found by
SciPy's Bellman-Ford. No database: the algorithm is pure."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from scipy.sparse import csr_array
from scipy.sparse.csgraph import NegativeCycleError, bellman_ford

from exchange.clearing import (
    ClearingInputError,
    Payment,
    SetOff,
    net_positions,
    set_off,
    settlement_plan,
)

AMOUNT_MAX = 2**53 - 1
LP_EXACT_MAX = 10**6  # amounts whose sums a float and the LP's tolerances keep exact

Edge = tuple[str, str]


# --- builders ---------------------------------------------------------------------------


@st.composite
def obligations(
    draw: st.DrawFn, *, parties_max: int = 7, edges_max: int = 24, amount_max: int = 5
) -> dict[Edge, int]:
    """A random obligation graph; both directions between a pair may occur."""
    count = draw(st.integers(2, parties_max))
    names = [f"c{number}" for number in range(count)]
    pairs = [(debtor, creditor) for debtor in names for creditor in names if debtor != creditor]
    size = draw(st.integers(0, min(edges_max, len(pairs))))
    edges = draw(st.permutations(pairs))[:size]
    amounts = draw(st.lists(st.integers(1, amount_max), min_size=len(edges), max_size=len(edges)))
    return dict(zip(edges, amounts, strict=True))


def random_obligations(seed: int, parties: int, edges: int, amount_max: int) -> dict[Edge, int]:
    generator = random.Random(seed)
    names = [f"community-{number:03}" for number in range(parties)]
    chosen: set[Edge] = set()
    while len(chosen) < edges:
        debtor, creditor = generator.sample(names, 2)
        chosen.add((debtor, creditor))
    return {edge: generator.randint(1, amount_max) for edge in sorted(chosen)}


def lp_optimum(owed: Mapping[Edge, int]) -> int:
    """The largest set-off by linear programming: maximise the sum of x_e, 0 <= x_e <=
    owed_e, in-flow equal to out-flow at every party."""
    if not owed:
        return 0
    edges = list(owed)
    parties = sorted({party for edge in edges for party in edge})
    row = {party: number for number, party in enumerate(parties)}
    balance = np.zeros((len(parties), len(edges)))
    for column, (debtor, creditor) in enumerate(edges):
        balance[row[debtor], column] -= 1
        balance[row[creditor], column] += 1
    solution = linprog(
        c=-np.ones(len(edges)),
        A_eq=balance,
        b_eq=np.zeros(len(parties)),
        bounds=[(0, owed[edge]) for edge in edges],
        method="highs",
    )
    assert solution.status == 0, solution.message
    best: float = -solution.fun
    # The flow polytope is integral, so the optimum is a whole number of minor units.
    assert abs(best - round(best)) < 1e-6
    return round(best)


def has_negative_cycle(owed: Mapping[Edge, int], result: SetOff) -> bool:
    """Whether the residual graph of the remaining flow has a negative cycle, i.e. whether
    some other set-off clears more. Cancelling more along an obligation (arc debtor ->
    creditor backwards, cost -1) is possible where something remains; undoing a set-off
    (arc debtor -> creditor, cost +1) where something was cleared."""
    parties = sorted({party for edge in owed for party in edge})
    index = {party: number for number, party in enumerate(parties)}
    weight: dict[tuple[int, int], int] = {}
    for (debtor, creditor), amount in owed.items():
        arcs = []
        if result.cleared.get((debtor, creditor), 0) > 0:
            arcs.append((index[debtor], index[creditor], 1))
        if result.remaining.get((debtor, creditor), 0) > 0:
            arcs.append((index[creditor], index[debtor], -1))
        assert arcs or amount == 0
        for tail, head, cost in arcs:
            # A sparse matrix holds one arc per pair: the cheaper one decides the cycles.
            weight[tail, head] = min(cost, weight.get((tail, head), cost))
    if not weight:
        return False
    rows, columns = zip(*weight, strict=True)
    graph = csr_array(
        (np.array(list(weight.values()), dtype=float), (rows, columns)),
        shape=(len(parties), len(parties)),
    )
    try:
        bellman_ford(graph, directed=True)
    except NegativeCycleError:
        return True
    return False


def assert_is_set_off(owed: Mapping[Edge, int], result: SetOff) -> None:
    """Feasible: along existing obligations, within them, positions kept, circles exact."""
    assert set(result.cleared) <= set(owed)
    assert set(result.remaining) <= set(owed)
    for edge, amount in owed.items():
        cleared = result.cleared.get(edge, 0)
        left = result.remaining.get(edge, 0)
        assert cleared + left == amount
        assert edge not in result.cleared or 0 < cleared <= amount
        assert edge not in result.remaining or left > 0
    for party, position in net_positions(owed).items():
        assert net_positions(result.remaining).get(party, 0) == position
    assert result.gross_before == sum(owed.values())
    assert result.gross_after == sum(result.remaining.values())
    assert result.total_cleared == sum(result.cleared.values())

    along: Counter[Edge] = Counter()
    for circle, amount in result.cycles:
        assert amount > 0
        assert len(circle) >= 2
        assert len(set(circle)) == len(circle), "a circle is simple"
        assert circle[0] == min(circle)
        for step in zip(circle, circle[1:] + circle[:1], strict=True):
            along[step] += amount
    assert dict(along) == result.cleared


def simple_cycles(edges: list[Edge]) -> list[tuple[str, ...]]:
    """Every simple circle, each once, starting from its smallest party (brute force)."""
    following: dict[str, list[str]] = {}
    for debtor, creditor in edges:
        following.setdefault(debtor, []).append(creditor)
    found: list[tuple[str, ...]] = []

    def walk(path: list[str]) -> None:
        for step in following.get(path[-1], []):
            if step == path[0]:
                found.append(tuple(path))
            elif step > path[0] and step not in path:
                walk([*path, step])

    for start in sorted(following):
        walk([start])
    return found


def greedy_cycle_cancelling(owed: Mapping[Edge, int]) -> int:
    """The rejected heuristic: cancel the circle that clears the most at once, repeat."""
    left = dict(owed)
    total = 0
    while True:
        best: tuple[int, tuple[str, ...]] | None = None
        for circle in simple_cycles([edge for edge, amount in left.items() if amount > 0]):
            steps = list(zip(circle, circle[1:] + circle[:1], strict=True))
            worth = min(left[step] for step in steps) * len(steps)
            if best is None or worth > best[0]:
                best = (worth, circle)
        if best is None:
            return total
        steps = list(zip(best[1], best[1][1:] + best[1][:1], strict=True))
        amount = min(left[step] for step in steps)
        for step in steps:
            left[step] -= amount
        total += amount * len(steps)


def assert_settles(positions: Mapping[str, int], plan: list[Payment]) -> None:
    after = dict(positions)
    for payment in plan:
        assert payment.amount > 0
        assert payment.payer != payment.payee
        assert positions[payment.payer] < 0 < positions[payment.payee]
        after[payment.payer] += payment.amount
        after[payment.payee] -= payment.amount
    assert set(after.values()) <= {0}
    unsettled = sum(1 for position in positions.values() if position)
    assert len(plan) <= max(unsettled - 1, 0)


# --- the set-off ------------------------------------------------------------------------

# The worked example of the module's essay: circle M = a b c d, triangles P = a b x and
# Q = c d y each share one edge with M.
CIRCLE_AND_TRIANGLES = {
    ("a", "b"): 1,
    ("b", "c"): 1,
    ("c", "d"): 1,
    ("d", "a"): 1,
    ("b", "x"): 1,
    ("x", "a"): 1,
    ("d", "y"): 1,
    ("y", "c"): 1,
}


def test_greedy_cycle_cancelling_is_beaten_by_the_optimum() -> None:
    result = set_off(CIRCLE_AND_TRIANGLES)
    assert greedy_cycle_cancelling(CIRCLE_AND_TRIANGLES) == 4
    assert result.total_cleared == 6 == lp_optimum(CIRCLE_AND_TRIANGLES)
    assert result.cycles == [(("a", "b", "x"), 1), (("c", "d", "y"), 1)]
    assert result.remaining == {("b", "c"): 1, ("d", "a"): 1}
    assert_is_set_off(CIRCLE_AND_TRIANGLES, result)


def test_a_triangle_clears_down_to_its_smallest_obligation() -> None:
    owed = {("a", "b"): 500, ("b", "c"): 300, ("c", "a"): 400}
    result = set_off(owed)
    assert result.cleared == {("a", "b"): 300, ("b", "c"): 300, ("c", "a"): 300}
    assert result.remaining == {("a", "b"): 200, ("c", "a"): 100}
    assert result.cycles == [(("a", "b", "c"), 300)]
    assert (result.gross_before, result.gross_after, result.total_cleared) == (1200, 300, 900)


def test_both_directions_between_a_pair_cancel() -> None:
    result = set_off({("a", "b"): 10, ("b", "a"): 4})
    assert result.cleared == {("a", "b"): 4, ("b", "a"): 4}
    assert result.remaining == {("a", "b"): 6}
    assert result.cycles == [(("a", "b"), 4)]


def test_nothing_to_clear() -> None:
    assert set_off({}) == SetOff(cleared={}, remaining={}, cycles=[], gross_before=0, gross_after=0)
    chain = {("a", "b"): 5, ("b", "c"): 7}
    result = set_off(chain)
    assert (result.cleared, result.remaining, result.cycles) == ({}, chain, [])


def test_the_answer_does_not_depend_on_the_order_of_the_input() -> None:
    owed = random_obligations(seed=3, parties=12, edges=60, amount_max=50)
    shuffled = list(owed.items())
    random.Random(4).shuffle(shuffled)
    assert set_off(dict(shuffled)) == set_off(owed)


@settings(max_examples=200, deadline=None)
@given(obligations(amount_max=3))
def test_small_amounts_match_the_lp_optimum(owed: dict[Edge, int]) -> None:
    result = set_off(owed)
    assert_is_set_off(owed, result)
    assert result.total_cleared == lp_optimum(owed)
    assert not has_negative_cycle(owed, result)


@settings(max_examples=150, deadline=None)
@given(obligations(parties_max=10, edges_max=45, amount_max=LP_EXACT_MAX))
def test_medium_graphs_match_the_lp_optimum_to_the_minor_unit(owed: dict[Edge, int]) -> None:
    result = set_off(owed)
    assert_is_set_off(owed, result)
    assert result.total_cleared == lp_optimum(owed)
    assert not has_negative_cycle(owed, result)


@settings(max_examples=150, deadline=None)
@given(obligations(parties_max=10, edges_max=45, amount_max=AMOUNT_MAX))
def test_large_amounts_are_exact_and_optimal(owed: dict[Edge, int]) -> None:
    """Beyond a float's reach the LP cannot judge, so the flow's own certificate does."""
    result = set_off(owed)
    assert_is_set_off(owed, result)
    assert not has_negative_cycle(owed, result)


def test_the_certificate_catches_a_set_off_that_is_not_the_largest() -> None:
    """The check the large-amount test relies on, shown to bite: greedy's answer on the
    worked example (circle M cleared, triangles left) has a negative cycle."""
    owed = CIRCLE_AND_TRIANGLES
    circle = {("a", "b"): 1, ("b", "c"): 1, ("c", "d"): 1, ("d", "a"): 1}
    greedy = SetOff(
        cleared=circle,
        remaining={edge: amount for edge, amount in owed.items() if edge not in circle},
        cycles=[(("a", "b", "c", "d"), 1)],
        gross_before=8,
        gross_after=4,
    )
    assert_is_set_off(owed, greedy)
    assert has_negative_cycle(owed, greedy)


@pytest.mark.parametrize(("seed", "amount_max"), [(1, AMOUNT_MAX), (2, 3), (3, LP_EXACT_MAX)])
def test_a_hundred_parties_and_two_thousand_obligations(seed: int, amount_max: int) -> None:
    """A size sanity check, not a timing assertion (the benchmark prints figures)."""
    owed = random_obligations(seed=seed, parties=100, edges=2_000, amount_max=amount_max)
    result = set_off(owed)
    assert_is_set_off(owed, result)
    assert not has_negative_cycle(owed, result)
    assert_settles(net_positions(owed), settlement_plan(net_positions(result.remaining)))


# --- refusals, in the order the guards check them ----------------------------------------


@pytest.mark.parametrize(
    ("case", "owed"),
    [
        ("key is not a pair", {("a",): 1}),
        ("key is a list", {"ab": 1}),
        ("debtor is not text", {(1, "b"): 1}),
        ("creditor is empty", {("a", ""): 1}),
        ("owes itself", {("a", "a"): 1}),
        ("amount is a float", {("a", "b"): 1.0}),
        ("amount is a bool", {("a", "b"): True}),
        ("amount is text", {("a", "b"): "1"}),
        ("amount is zero", {("a", "b"): 0}),
        ("amount is negative", {("a", "b"): -5}),
    ],
)
def test_refused_obligations(case: str, owed: dict[object, object]) -> None:
    with pytest.raises(ClearingInputError):
        set_off(owed)  # type: ignore[arg-type]
    with pytest.raises(ClearingInputError):
        net_positions(owed)  # type: ignore[arg-type]


# --- net positions and the settlement plan ----------------------------------------------


def test_net_positions_are_credit_minus_debt() -> None:
    owed = {("b", "a"): 10, ("a", "c"): 4, ("c", "b"): 4}
    assert net_positions(owed) == {"a": 6, "b": -6, "c": 0}
    assert list(net_positions(owed)) == ["a", "b", "c"]


def test_exact_opposite_positions_pay_each_other_first() -> None:
    positions = {"a": -5, "b": 5, "c": -3, "d": -4, "e": 7}
    plan = settlement_plan(positions)
    assert plan[0] == Payment(payer="a", payee="b", amount=5)
    assert_settles(positions, plan)
    assert len(plan) == 3


def test_a_remainder_meeting_its_match_settles_both() -> None:
    # No exact pair to begin with; d1 pays c1 7 and has 3 left, exactly what c2 is owed,
    # so d1 pays c2 next although c3 is owed more.
    positions = {"d1": -10, "d2": -1, "d3": -4, "c1": 7, "c2": 3, "c3": 5}
    plan = settlement_plan(positions)
    assert plan == [
        Payment(payer="d1", payee="c1", amount=7),
        Payment(payer="d1", payee="c2", amount=3),
        Payment(payer="d3", payee="c3", amount=4),
        Payment(payer="d2", payee="c3", amount=1),
    ]


def test_largest_debtor_pays_largest_creditor() -> None:
    positions = {"a": -9, "b": -2, "c": 6, "d": 5}
    assert settlement_plan(positions) == [
        Payment(payer="a", payee="c", amount=6),
        Payment(payer="a", payee="d", amount=3),
        Payment(payer="b", payee="d", amount=2),
    ]


def test_nothing_to_settle() -> None:
    assert settlement_plan({}) == []
    assert settlement_plan({"a": 0, "b": 0}) == []


@pytest.mark.parametrize(
    ("case", "positions"),
    [
        ("party is not text", {1: 5, "b": -5}),
        ("position is a float", {"a": 5.0, "b": -5}),
        ("position is a bool", {"a": True, "b": -1}),
        ("positions do not sum to zero", {"a": 5, "b": -4}),
    ],
)
def test_refused_positions(case: str, positions: dict[object, object]) -> None:
    with pytest.raises(ClearingInputError):
        settlement_plan(positions)  # type: ignore[arg-type]


@st.composite
def positions_summing_to_zero(draw: st.DrawFn, amount_max: int) -> dict[str, int]:
    # A few amounts drawn from a small pool, so exact opposite pairs and remainders that
    # meet a match occur often; the last party balances the rest.
    pool = draw(st.lists(st.integers(1, amount_max), min_size=1, max_size=4))
    values = draw(
        st.lists(
            st.one_of(
                st.integers(-amount_max, amount_max),
                st.sampled_from(pool),
                st.sampled_from(pool).map(lambda amount: -amount),
            ),
            max_size=25,
        )
    )
    values.append(-sum(values))
    return {f"c{number}": value for number, value in enumerate(values)}


@settings(max_examples=300, deadline=None)
@given(st.one_of(positions_summing_to_zero(20), positions_summing_to_zero(AMOUNT_MAX)))
def test_settlement_plan_settles_exactly_in_fewer_payments_than_parties(
    positions: dict[str, int],
) -> None:
    assert_settles(positions, settlement_plan(positions))


@settings(max_examples=100, deadline=None)
@given(obligations(parties_max=10, edges_max=45, amount_max=AMOUNT_MAX))
def test_what_remains_after_clearing_is_settled(owed: dict[Edge, int]) -> None:
    result = set_off(owed)
    assert_is_set_off(owed, result)
    positions = net_positions(result.remaining)
    assert_settles(positions, settlement_plan(positions))
