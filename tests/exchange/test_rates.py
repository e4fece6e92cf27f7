"""The exchange arithmetic, proved on random rates, scales 0-8 and amounts up to 2^53 - 1.

Each property is one sentence of ``exchange/rates.py``'s docstring: the text form of a rate
is exact both ways; a conversion splits the payment exactly and never lets the liquidity
account lose at the rate; asked for a target, the payer pays the least that delivers it;
round a circle of rates multiplying to at most 1, no conversion sequence gains; and the
gain-cycle finder agrees with enumerating every simple cycle.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from exchange import rates
from ledger.money import AMOUNT_MAX

amounts = st.integers(min_value=1, max_value=AMOUNT_MAX)
fees = st.integers(min_value=0, max_value=rates.BPS - 1)
scales = st.integers(min_value=0, max_value=8)
parts = st.integers(min_value=1, max_value=rates.MAX_RATE_PART)
# Rates a federation writes: a ratio of two parts of at most 10^18.
# Denominators of twos and fives alone are the rates that print as decimals: up to 2^59 or
# 5^25 they need more decimal places than a rate's text may carry.
decimal_denominators = st.builds(
    lambda twos, fives: 2**twos * 5**fives,
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=25),
).filter(lambda d: d <= rates.MAX_RATE_PART)
stored_rates = st.builds(Fraction, parts, parts) | st.builds(Fraction, parts, decimal_denominators)
# Minor rates as conversions meet them: a major rate shifted by the two currencies' scales.
minor_rates = st.builds(rates.minor_rate_from_major, stored_rates, scales, scales)
# Small rates, so a cycle of them stays exact and cheap.
small_rates = st.builds(
    Fraction, st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=50)
)


def _product(edges: dict[tuple[str, str], Fraction], cycle: tuple[str, ...]) -> Fraction:
    return math.prod((edges[a, b] for a, b in itertools.pairwise(cycle)), start=Fraction(1))


# -- text ---------------------------------------------------------------------------------------


@given(stored_rates)
def test_a_rate_survives_its_text_exactly(rate: Fraction) -> None:
    text = rates.format_rate(rate)
    assert rates.parse_rate(text) == rate
    assert rates.format_rate(rates.parse_rate(text)) == text


@given(st.integers(min_value=0, max_value=10**18 - 1), st.integers(min_value=0, max_value=18))
def test_a_decimal_reads_as_the_exact_fraction_it_writes(digits: int, places: int) -> None:
    assume(digits > 0)
    text = (
        str(digits) if places == 0 else f"{digits // 10**places}.{digits % 10**places:0{places}d}"
    )
    assert rates.parse_rate(text) == Fraction(digits, 10**places)


@given(
    st.builds(Fraction, st.integers(min_value=1, max_value=10**60), st.integers(1, 10**60))
    | st.builds(Fraction, st.integers(min_value=1, max_value=10**60), decimal_denominators)
)
def test_a_stored_rate_reads_back_exactly_at_any_size(rate: Fraction) -> None:
    """Quotes and conversions store minor rates, which can outgrow what a person may type."""
    assert rates.read_stored_rate(rates.format_rate(rate)) == rate


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.decimals() | st.none())
def test_numbers_that_are_not_text_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="written as text"):
        rates.parse_rate(value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "0",
        "0.0",
        "0/7",
        "7/0",
        "-1",
        "+1",
        "1.",
        ".5",
        "1e3",
        "1E-2",
        "0x10",
        "inf",
        "nan",
        "1,5",
        "1/2/3",
        "1.5/2",
        "½",
        "\uff11",  # a fullwidth digit one: a digit to Unicode, not to a treasurer
        "\u0661",  # an Arabic-Indic digit one
        "1" * 20,  # above 10^18
        "1/" + "1" * 20,
        "0." + "0" * 18 + "1",  # more than 18 decimal places
        "1000000000000000001",  # a numerator above 10^18
        "1/1000000000000000001",
    ],
)
def test_junk_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        rates.parse_rate(text)


@given(st.text(max_size=30))
def test_any_text_is_a_rate_or_a_value_error(text: str) -> None:
    try:
        rate = rates.parse_rate(text)
    except ValueError:
        return
    assert rate > 0
    assert rate.numerator <= rates.MAX_RATE_PART
    assert rate.denominator <= rates.MAX_RATE_PART
    assert rates.parse_rate(rates.format_rate(rate)) == rate


# -- converting a source amount -----------------------------------------------------------------


@given(amounts, minor_rates, fees)
def test_a_conversion_splits_the_payment_exactly(
    source_amount: int, rate: Fraction, fee_bps: int
) -> None:
    try:
        conversion = rates.convert_source(source_amount, rate, fee_bps)
    except rates.ConversionTooSmallError:
        net = source_amount - math.ceil(Fraction(source_amount * fee_bps, rates.BPS))
        assert net * rate < 1
        return
    except rates.AmountOutOfRangeError:
        net = source_amount - math.ceil(Fraction(source_amount * fee_bps, rates.BPS))
        assert math.floor(net * rate) > AMOUNT_MAX
        return
    c = conversion
    assert (c.source_amount, c.rate, c.fee_bps) == (source_amount, rate, fee_bps)
    assert c.source_amount == c.source_used + c.fee + c.residue
    assert min(c.fee, c.source_used, c.residue) >= 0
    assert 1 <= c.target_amount <= AMOUNT_MAX
    # The fee is the basis points of the payment, rounded up, and never more than it.
    assert c.fee == math.ceil(Fraction(source_amount * fee_bps, rates.BPS))
    net = c.source_amount - c.fee
    # The liquidity account takes source_used and pays target: never a loss at the rate.
    assert c.target_amount <= c.source_used * rate
    # The payee gets the most the net amount buys ...
    assert c.target_amount <= net * rate < c.target_amount + 1
    # ... and source_used is the least that buys it; the rest is residue.
    assert (c.source_used - 1) * rate < c.target_amount
    # The residue is less than one target unit's worth of source.
    assert c.residue * rate < 1


@given(amounts, minor_rates)
def test_without_a_fee_nothing_is_taken_beyond_rounding(source_amount: int, rate: Fraction) -> None:
    try:
        conversion = rates.convert_source(source_amount, rate, 0)
    except (rates.ConversionTooSmallError, rates.AmountOutOfRangeError):
        return
    assert conversion.fee == 0
    assert source_amount * rate - conversion.target_amount < 1


@given(amounts, minor_rates, fees)
def test_a_conversion_refuses_amounts_out_of_range(
    amount: int, rate: Fraction, fee_bps: int
) -> None:
    for outside in (0, -amount, AMOUNT_MAX + amount):
        with pytest.raises(rates.AmountOutOfRangeError):
            rates.convert_source(outside, rate, fee_bps)
        with pytest.raises(rates.AmountOutOfRangeError):
            rates.convert_target(outside, rate, fee_bps)


# -- converting to a target amount --------------------------------------------------------------


@given(amounts, minor_rates, fees)
def test_a_target_is_delivered_exactly_for_the_least_payment(
    target_amount: int, rate: Fraction, fee_bps: int
) -> None:
    try:
        c = rates.convert_target(target_amount, rate, fee_bps)
    except rates.AmountOutOfRangeError:
        # Only when even the least payment is beyond the largest amount.
        least_used = math.ceil(target_amount / rate)
        assert (
            least_used > AMOUNT_MAX
            or math.ceil(Fraction(least_used * rates.BPS, rates.BPS - fee_bps)) > AMOUNT_MAX
        )
        return
    assert c.target_amount == target_amount
    assert c.source_amount == c.source_used + c.fee + c.residue
    assert c.residue == 0
    assert min(c.fee, c.source_used) >= 0
    assert c.fee == math.ceil(Fraction(c.source_amount * fee_bps, rates.BPS))
    assert c.target_amount <= c.source_used * rate
    assert (c.source_used - 1) * rate < target_amount
    # Paying the whole source amount delivers at least the target ...
    try:
        paid = rates.convert_source(c.source_amount, rate, fee_bps)
    except rates.AmountOutOfRangeError:
        assert math.floor(c.source_used * rate) > AMOUNT_MAX  # more than a ledger can pay
        return
    assert paid.target_amount >= target_amount
    assert paid.source_used + paid.residue == c.source_used
    # ... and one minor unit less would not.
    if c.source_amount > 1:
        try:
            short = rates.convert_source(c.source_amount - 1, rate, fee_bps)
        except rates.ConversionTooSmallError:
            return
        assert short.target_amount < target_amount


# -- rates between currencies -------------------------------------------------------------------


@given(stored_rates, stored_rates, scales, scales)
def test_a_minor_rate_prices_one_major_unit_at_the_valuations(
    valuation_from: Fraction, valuation_to: Fraction, scale_from: int, scale_to: int
) -> None:
    rate = rates.minor_rate(valuation_from, scale_from, valuation_to, scale_to)
    # One major unit of the source, in target minor units, is worth the same in the unit.
    in_target_minor = 10**scale_from * rate
    assert in_target_minor / 10**scale_to * valuation_to == valuation_from
    back = rates.minor_rate(valuation_to, scale_to, valuation_from, scale_from)
    assert rate * back == 1


# -- no arbitrage -------------------------------------------------------------------------------


@st.composite
def losing_circles(draw: st.DrawFn) -> tuple[list[Fraction], list[int]]:
    """Rates round a circle of 2-5 currencies (scales 0-8) whose product is at most 1: each
    the valuations' rate, fixed rates below it by a random factor, and the fee of each step."""
    size = draw(st.integers(min_value=2, max_value=5))
    valuations = draw(st.lists(stored_rates, min_size=size, max_size=size))
    currency_scales = draw(st.lists(scales, min_size=size, max_size=size))
    discounts = draw(
        st.lists(
            st.one_of(
                st.just(Fraction(1)),
                st.builds(
                    lambda n, d: Fraction(min(n, d), max(n, d)),
                    st.integers(min_value=1, max_value=10**6),
                    st.integers(min_value=1, max_value=10**6),
                ),
            ),
            min_size=size,
            max_size=size,
        )
    )
    circle = [
        rates.minor_rate(
            valuations[i],
            currency_scales[i],
            valuations[(i + 1) % size],
            currency_scales[(i + 1) % size],
        )
        * discounts[i]
        for i in range(size)
    ]
    step_fees = draw(st.lists(fees | st.just(0), min_size=size, max_size=size))
    return circle, step_fees


@settings(max_examples=300)
@given(losing_circles(), amounts, st.integers(min_value=1, max_value=3))
def test_no_conversion_sequence_round_a_losing_circle_gains(
    circle: tuple[list[Fraction], list[int]], start: int, laps: int
) -> None:
    steps, step_fees = circle
    assert math.prod(steps, start=Fraction(1)) <= 1
    amount = start
    for rate, fee_bps in [*zip(steps, step_fees, strict=True)] * laps:
        try:
            amount = rates.convert_source(amount, rate, fee_bps).target_amount
        except rates.ConversionTooSmallError:
            amount = 0
            break
        except rates.AmountOutOfRangeError:
            # The step would pay out more than a ledger amount: refused, so nothing moves;
            # what the payer holds is in an intermediate currency, not a gain.
            return
    assert amount <= start


@given(st.lists(small_rates, min_size=2, max_size=6), amounts)
def test_each_step_returns_at_most_its_rate(steps: list[Fraction], start: int) -> None:
    """The induction behind no-arbitrage: after k steps one holds at most start x the rates."""
    amount, bound = start, Fraction(start)
    for rate in steps:
        try:
            amount = rates.convert_source(amount, rate, 0).target_amount
        except (rates.ConversionTooSmallError, rates.AmountOutOfRangeError):
            return
        bound *= rate
        assert amount <= bound


# -- finding a gain cycle -----------------------------------------------------------------------


def _simple_cycles(
    nodes: list[str], edges: dict[tuple[str, str], Fraction]
) -> list[tuple[str, ...]]:
    """Every simple cycle, as (a, b, ..., a), by brute force: each ordering of each subset."""
    found = []
    for size in range(1, len(nodes) + 1):
        for chosen in itertools.permutations(nodes, size):
            if chosen[0] != min(chosen):
                continue  # one rotation per cycle
            cycle = (*chosen, chosen[0])
            if all(pair in edges for pair in itertools.pairwise(cycle)):
                found.append(cycle)
    return found


@st.composite
def rate_graphs(draw: st.DrawFn) -> dict[tuple[str, str], Fraction]:
    nodes = [chr(ord("A") + i) for i in range(draw(st.integers(min_value=1, max_value=5)))]
    pairs = [(a, b) for a in nodes for b in nodes if a != b or draw(st.booleans())]
    if not pairs:
        return {}
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    return {pair: draw(small_rates) for pair in chosen}


@settings(max_examples=400)
@given(rate_graphs())
def test_the_gain_cycle_finder_agrees_with_enumeration(
    edges: dict[tuple[str, str], Fraction],
) -> None:
    nodes = sorted({node for edge in edges for node in edge})
    gains = [c for c in _simple_cycles(nodes, edges) if _product(edges, c) > 1]
    found = rates.find_gain_cycle(edges)
    if not gains:
        assert found is None
        return
    assert found is not None, f"missed {gains[0]} with gain {_product(edges, gains[0])}"
    gain, cycle = found
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1, "a simple cycle"
    assert gain == _product(edges, cycle)
    assert gain > 1


@given(rate_graphs())
def test_a_graph_scaled_to_lose_has_no_gain_cycle(edges: dict[tuple[str, str], Fraction]) -> None:
    """Rates derived from valuations (times a discount of at most 1) never form a gain cycle."""
    values = {node: Fraction(ord(node[0]) * 7 % 11 + 1, 3) for edge in edges for node in edge}
    derived = {(a, b): values[a] / values[b] * min(rate, 1) for (a, b), rate in edges.items()}
    assert rates.find_gain_cycle(derived) is None


def test_the_worked_example_of_the_exchange_tests() -> None:
    edges = {("HRB", "SEK"): Fraction(22), ("SEK", "HRB"): Fraction(1, 20)}
    assert rates.find_gain_cycle(edges) in (
        (Fraction(11, 10), ("HRB", "SEK", "HRB")),
        (Fraction(11, 10), ("SEK", "HRB", "SEK")),
    )
    assert rates.find_gain_cycle({**edges, ("SEK", "HRB"): Fraction(1, 22)}) is None
    assert rates.find_gain_cycle({}) is None
