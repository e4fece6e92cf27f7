"""Multilateral clearing: cancel what goes round in circles, then plan who pays whom.

The problem
-----------
Communities owe one another: ``(debtor, creditor) -> amount`` in minor units of the
reference unit. Where obligations form a circle (A owes B, B owes C, C owes A) part of
them can be cancelled without anyone paying: each party's total debt and total credit
drop by the same amount, so its *net position* (credit minus debt) is unchanged. We
want the set-off that cancels the largest total, touching only existing obligations and
never cancelling more than an obligation holds. This is the multilateral trade-credit
set-off problem. In the words of flows: choose ``x_e`` in ``[0, owed_e]`` per obligation
``e`` with in-flow equal to out-flow at every party (a circulation), maximising the sum
of ``x_e``.

A worked example
----------------
::

    a -> b 1    b -> c 1    c -> d 1    d -> a 1      (circle M, four edges)
    b -> x 1    x -> a 1                              (with a -> b: triangle P)
    d -> y 1    y -> c 1                              (with c -> d: triangle Q)

Greedy cycle cancelling takes the circle that clears most at once, M (4 units over four
edges), and then P and Q are broken, each missing the edge M used up: 4 cleared. The
optimum leaves M alone and clears P and Q: 6. No rule for picking the next circle fixes
this in general, because a circle's worth depends on which others it blocks; that is why
greedy cancelling is rejected here and the problem is solved as a flow problem instead.

The choice: a minimum-cost flow, solved exactly
-----------------------------------------------
Look at what *remains*, ``r_e = owed_e - x_e``. Whatever the set-off, the remaining
obligations still carry every party's net position from the net debtors to the net
creditors, within ``[0, owed_e]`` along each obligation's direction; and conversely every
such flow ``r`` gives a set-off ``x = owed - r`` that is a circulation. Since
``sum(x) = sum(owed) - sum(r)``, the largest set-off is the cheapest such flow when each
unit on each obligation costs 1: a minimum-cost flow from a source feeding each net
debtor its net debt to a sink draining each net creditor its net credit.

It is solved by the primal-dual form of successive shortest paths. Node potentials keep
every residual arc's reduced cost non-negative, which is the certificate of optimality
(no negative cycle in the residual graph: no circle left to cancel, not even one that
would first undo part of a chosen set-off). Each phase computes shortest distances from
the source with Dijkstra on reduced costs, shifts the potentials by them, and then pushes
a *maximum* flow (Dinic's blocking flows) through the arcs of reduced cost zero, which
are exactly the arcs on cheapest paths. Pushing along such arcs only creates reverse arcs
of reduced cost zero, so the certificate holds throughout; the phase ends when no
cheapest path is left, so the next phase's source-to-sink distance is strictly larger.
When the sink is unreachable every net position is routed (``r = owed`` is always a
feasible flow, so one exists) and the flow is optimal. The cancelled amounts decompose
into simple circles, which is how a proposal shows them.

Exactness and effort: every capacity and push is an ``int`` (bottleneck amounts, never
unit by unit), so the answer is exact for any amounts and the optimum is integral (flow
polytopes are integral). The source-to-sink cost counts obligation arcs on a simple path,
so it lies in ``1 .. n - 1`` and grows every phase: at most ``n - 1`` phases for ``n``
parties, each one Dijkstra, ``O(m log n)``, and one Dinic max flow, ``O(n^2 m)``: strongly
polynomial, independent of the amounts. 100 parties and 2,000 obligations take a small
fraction of a second.

Rejected: greedy cycle cancelling (not optimal, above); Klein's negative-cycle cancelling
(optimal, but without minimum-mean cycle selection the number of cancellations grows with
the amounts); a general LP solver (floats, and a runtime dependency we do not need).

The settlement plan
-------------------
What remains is settled by payments from net debtors to net creditors. The fewest
payments equal the number of parties with a non-zero position minus the largest number of
disjoint groups whose positions sum to zero; finding those groups contains subset-sum and
is NP-hard. We use the well-known heuristic instead: first pay every exact opposite pair
(a debtor owing exactly what a creditor is owed: one payment settles two parties), then
repeatedly let the largest debtor pay the largest creditor the smaller of the two, again
taking an exact match whenever a remainder meets one. Every payment settles at least one
party and the last settles two, so ``k`` parties with non-zero positions need at most
``k - 1`` payments.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

Obligations = Mapping[tuple[str, str], int]
"""``(debtor, creditor) -> amount owed`` in minor units, each amount > 0."""

Edge = tuple[str, str]


class ClearingInputError(ValueError):
    """Obligations or positions that the clearing cannot take (a programmer's mistake:
    the service builds them from the ledger)."""


@dataclass(frozen=True)
class SetOff:
    """A set-off: what is cancelled per obligation, what remains, and the circles."""

    cleared: dict[Edge, int]
    """Per obligation, ``0 < cleared <= owed``; obligations with nothing cleared omitted."""
    remaining: dict[Edge, int]
    """``owed - cleared``; obligations cleared in full omitted."""
    cycles: list[tuple[tuple[str, ...], int]]
    """``cleared`` as simple circles: parties in order (first not repeated, the smallest
    name first) with the amount cancelled along each; the amounts per obligation sum to
    ``cleared`` exactly."""
    gross_before: int
    gross_after: int

    @property
    def total_cleared(self) -> int:
        return self.gross_before - self.gross_after


@dataclass(frozen=True)
class Payment:
    payer: str
    payee: str
    amount: int


def _check_amount(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ClearingInputError(f"{what} is an int in minor units, not {value!r}")
    return value


def _check_party(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ClearingInputError(f"a party is a non-empty string, not {value!r}")
    return value


def _checked(obligations: Obligations) -> dict[Edge, int]:
    """The obligations sorted by edge, after the guards."""
    checked: dict[Edge, int] = {}
    for edge, owed in obligations.items():
        if not isinstance(edge, tuple) or len(edge) != 2:
            raise ClearingInputError(f"an obligation is keyed (debtor, creditor), not {edge!r}")
        debtor, creditor = _check_party(edge[0]), _check_party(edge[1])
        if debtor == creditor:
            raise ClearingInputError(f"{debtor!r} cannot owe itself")
        if _check_amount(owed, "an obligation") <= 0:
            raise ClearingInputError(f"the obligation {edge!r} is more than zero, not {owed}")
        checked[debtor, creditor] = owed
    return dict(sorted(checked.items()))


def net_positions(obligations: Obligations) -> dict[str, int]:
    """Credit minus debt per party, by party name; parties at zero included."""
    positions: dict[str, int] = {}
    for (debtor, creditor), owed in _checked(obligations).items():
        positions[debtor] = positions.get(debtor, 0) - owed
        positions[creditor] = positions.get(creditor, 0) + owed
    return dict(sorted(positions.items()))


class _Network:
    """A residual graph: arc ``a`` and its reverse ``a ^ 1`` are stored side by side."""

    def __init__(self, size: int) -> None:
        self.arcs_from: list[list[int]] = [[] for _ in range(size)]
        self.head: list[int] = []
        self.capacity: list[int] = []
        self.cost: list[int] = []

    def add(self, tail: int, head: int, capacity: int, cost: int) -> int:
        arc = len(self.head)
        self.head += [head, tail]
        self.capacity += [capacity, 0]
        self.cost += [cost, -cost]
        self.arcs_from[tail].append(arc)
        self.arcs_from[head].append(arc + 1)
        return arc

    def min_cost_flow(self, source: int, sink: int) -> int:
        """Route as much as possible from ``source`` to ``sink`` at least cost (the
        costs must be non-negative); returns the amount routed."""
        size = len(self.arcs_from)
        potential = [0] * size
        routed = 0
        while True:
            distance = self._distances(source, potential)
            to_sink = distance[sink]
            if to_sink is None:
                return routed
            for node in range(size):
                # Capping at the sink's distance keeps every reduced cost non-negative
                # for nodes beyond it or out of reach (a standard argument).
                reached = distance[node]
                potential[node] += to_sink if reached is None else min(reached, to_sink)
            routed += self._max_flow_on_cheapest_arcs(source, sink, potential)

    def _distances(self, source: int, potential: list[int]) -> list[int | None]:
        """Dijkstra on reduced costs over arcs with capacity left."""
        distance: list[int | None] = [None] * len(self.arcs_from)
        distance[source] = 0
        queue = [(0, source)]
        while queue:
            reached, node = heapq.heappop(queue)
            if reached != distance[node]:
                continue
            for arc in self.arcs_from[node]:
                if self.capacity[arc] == 0:
                    continue
                head = self.head[arc]
                through = reached + self.cost[arc] + potential[node] - potential[head]
                known = distance[head]
                if known is None or through < known:
                    distance[head] = through
                    heapq.heappush(queue, (through, head))
        return distance

    def _max_flow_on_cheapest_arcs(self, source: int, sink: int, potential: list[int]) -> int:
        """Dinic's algorithm restricted to arcs of reduced cost zero."""
        head, capacity, cost = self.head, self.capacity, self.cost
        # Within a phase the potentials are fixed, and an arc has reduced cost zero exactly
        # when its reverse has, so the cheapest arcs can be listed once.
        cheapest = [
            [arc for arc in arcs if cost[arc] + potential[node] == potential[head[arc]]]
            for node, arcs in enumerate(self.arcs_from)
        ]
        routed = 0
        while True:
            level = self._levels(source, cheapest)
            if level[sink] < 0:
                return routed
            next_arc = [0] * len(cheapest)
            path: list[int] = []
            node = source
            while True:
                if node == sink:
                    pushed = min(capacity[arc] for arc in path)
                    for arc in path:
                        capacity[arc] -= pushed
                        capacity[arc ^ 1] += pushed
                    routed += pushed
                    # Back to the tail of the first arc the push saturated.
                    saturated = next(i for i, arc in enumerate(path) if capacity[arc] == 0)
                    del path[saturated:]
                    node = head[path[-1]] if path else source
                    continue
                arcs = cheapest[node]
                while next_arc[node] < len(arcs):
                    arc = arcs[next_arc[node]]
                    if capacity[arc] > 0 and level[head[arc]] == level[node] + 1:
                        break
                    next_arc[node] += 1
                else:
                    if node == source:
                        break
                    # A dead end: step back and never come here again in this round.
                    level[node] = -1
                    node = head[path.pop() ^ 1]
                    next_arc[node] += 1
                    continue
                path.append(arc)
                node = head[arc]

    def _levels(self, source: int, cheapest: list[list[int]]) -> list[int]:
        level = [-1] * len(cheapest)
        level[source] = 0
        frontier = [source]
        while frontier:
            following: list[int] = []
            for node in frontier:
                for arc in cheapest[node]:
                    head = self.head[arc]
                    if self.capacity[arc] > 0 and level[head] < 0:
                        level[head] = level[node] + 1
                        following.append(head)
            frontier = following
        return level


def set_off(obligations: Obligations) -> SetOff:
    """The set-off that cancels the largest total of obligations, leaving every party's net
    position unchanged, only along existing obligations and never beyond them."""
    owed_by_edge = _checked(obligations)
    parties = sorted({party for edge in owed_by_edge for party in edge})
    index = {party: number for number, party in enumerate(parties)}
    source, sink = len(parties), len(parties) + 1
    network = _Network(len(parties) + 2)
    arc_of = {
        edge: network.add(index[edge[0]], index[edge[1]], owed, cost=1)
        for edge, owed in owed_by_edge.items()
    }
    to_route = 0
    for party, position in net_positions(owed_by_edge).items():
        if position < 0:
            network.add(source, index[party], -position, cost=0)
            to_route -= position
        elif position > 0:
            network.add(index[party], sink, position, cost=0)
    routed = network.min_cost_flow(source, sink)
    # The obligations themselves are a flow routing every position, so one exists.
    assert routed == to_route

    cleared: dict[Edge, int] = {}
    remaining: dict[Edge, int] = {}
    for edge, owed in owed_by_edge.items():
        left = network.capacity[arc_of[edge] ^ 1]  # the flow on the arc is what remains
        assert 0 <= left <= owed
        if left < owed:
            cleared[edge] = owed - left
        if left:
            remaining[edge] = left
    return SetOff(
        cleared=cleared,
        remaining=remaining,
        cycles=_cycles(cleared, parties),
        gross_before=sum(owed_by_edge.values()),
        gross_after=sum(remaining.values()),
    )


def _cycles(cleared: Mapping[Edge, int], parties: list[str]) -> list[tuple[tuple[str, ...], int]]:
    """Decompose a circulation into simple circles. Walking along cleared edges from a
    party with some left always closes a circle, because what enters a party leaves it;
    taking the circle's smallest amount off zeroes one of its edges, so there are at most
    as many circles as edges."""
    out: dict[str, dict[str, int]] = {party: {} for party in parties}
    for (debtor, creditor), amount in sorted(cleared.items()):
        out[debtor][creditor] = amount
    found: list[tuple[tuple[str, ...], int]] = []
    for start in parties:
        while out[start]:
            walk = [start]
            seen = {start: 0}
            while True:
                following = next(iter(out[walk[-1]]))
                if following in seen:
                    break
                seen[following] = len(walk)
                walk.append(following)
            circle = walk[seen[following] :]
            steps = list(zip(circle, circle[1:] + circle[:1], strict=True))
            amount = min(out[debtor][creditor] for debtor, creditor in steps)
            for debtor, creditor in steps:
                out[debtor][creditor] -= amount
                if out[debtor][creditor] == 0:
                    del out[debtor][creditor]
            first = circle.index(min(circle))
            found.append(((*circle[first:], *circle[:first]), amount))
    return found


def settlement_plan(positions: Mapping[str, int]) -> list[Payment]:
    """Payments that settle the given net positions (sum zero), as few as a good algorithm
    gives: exact opposite pairs first, then largest debtor pays largest creditor (see the
    module's essay; the true minimum is NP-hard). At most one fewer payment than there
    are parties with a non-zero position."""
    owing: dict[str, int] = {}  # debtor -> amount still to pay
    owed: dict[str, int] = {}  # creditor -> amount still to receive
    checked = {
        _check_party(party): _check_amount(position, "a position")
        for party, position in positions.items()
    }
    for party, position in sorted(checked.items()):
        if position < 0:
            owing[party] = -position
        elif position > 0:
            owed[party] = position
    if sum(owing.values()) != sum(owed.values()):
        raise ClearingInputError("net positions to settle sum to zero")

    # Parties by amount, for exact matches; and heaps of (-amount, party) for the largest,
    # whose entries go stale when a party's amount changes (checked when popped).
    owing_at: dict[int, set[str]] = {}
    owed_at: dict[int, set[str]] = {}
    for side, at in ((owing, owing_at), (owed, owed_at)):
        for party, amount in side.items():
            at.setdefault(amount, set()).add(party)
    owing_heap = [(-amount, party) for party, amount in owing.items()]
    owed_heap = [(-amount, party) for party, amount in owed.items()]
    heapq.heapify(owing_heap)
    heapq.heapify(owed_heap)
    plan: list[Payment] = []

    def pay(payer: str, payee: str, amount: int) -> None:
        plan.append(Payment(payer=payer, payee=payee, amount=amount))
        for side, at, heap, party in (
            (owing, owing_at, owing_heap, payer),
            (owed, owed_at, owed_heap, payee),
        ):
            before = side.pop(party)
            at[before].discard(party)
            if not at[before]:
                del at[before]
            if left := before - amount:
                side[party] = left
                at.setdefault(left, set()).add(party)
                heapq.heappush(heap, (-left, party))

    def pay_exact_match(party: str, *, debtor: bool) -> None:
        if debtor:
            amount = owing[party]
            if amount in owed_at:
                pay(party, min(owed_at[amount]), amount)
        else:
            amount = owed[party]
            if amount in owing_at:
                pay(min(owing_at[amount]), party, amount)

    for amount in sorted(set(owing_at) & set(owed_at), reverse=True):
        for payer, payee in zip(sorted(owing_at[amount]), sorted(owed_at[amount]), strict=False):
            pay(payer, payee, amount)

    while owing:
        payer = _largest(owing_heap, owing)
        payee = _largest(owed_heap, owed)
        pay(payer, payee, min(owing[payer], owed[payee]))
        # The larger of the two has a remainder; settle it at once if it meets its match.
        if payer in owing:
            pay_exact_match(payer, debtor=True)
        elif payee in owed:
            pay_exact_match(payee, debtor=False)
    assert not owed
    return plan


def _largest(heap: list[tuple[int, str]], side: dict[str, int]) -> str:
    """The party with the largest amount on its side (smallest name among equals)."""
    while True:
        negative, party = heap[0]
        if side.get(party) == -negative:
            return party
        heapq.heappop(heap)
