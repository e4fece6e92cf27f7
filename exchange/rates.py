"""Exact exchange arithmetic: rates as fractions, amounts as integers in minor units.

A rate here is always *target minor units per source minor unit*, a ``Fraction``. Rates
come in as text (``"0.045"``, ``"22"``, ``"4/5"``) and go out as text; a float never
touches one.

Rounding, the one rule every conversion follows
-----------------------------------------------
From a source amount ``S`` and a fee of ``bps`` basis points:

    fee          = ceil(S * bps / 10_000)       the federation never undercharges
    net          = S - fee
    target       = floor(net * rate)            the payee never gets more than the rate gives
    source_used  = ceil(target / rate)          the least source that buys ``target``
    residue      = net - source_used            booked to the rounding account, never lost

So ``S = source_used + fee + residue`` exactly, and ``target <= source_used * rate``: the
liquidity account that takes ``source_used`` and pays out ``target`` never loses value at
the protocol's rate. Rounding towards the federation (rather than half to even) is what
makes the second property hold for every single conversion, and with it the absence of
arbitrage: if no circle of protocol rates multiplies value (the exchange service refuses a
protocol change that would create one, see ``find_gain_cycle``), no sequence of
conversions A -> B -> ... -> A returns more than it started with, because each step
returns at most ``amount * rate`` and the product of the rates is at most 1.

Asked for a target amount ``T`` instead, the payer pays the least ``S`` whose conversion
covers ``T``: ``source_used = ceil(T / rate)`` and ``S`` the least amount whose net after
fee is ``source_used``; the residue is then zero.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from ledger.money import is_amount

BPS = 10_000
MAX_RATE_PART = 10**18
MAX_DECIMAL_PLACES = 18
# ASCII digits only: ``\d`` would also take "１" or "١", digits to Unicode, not to a treasurer.
_DECIMAL = re.compile(r"^([0-9]{1,19})(?:\.([0-9]{1,18}))?$")  # MAX_DECIMAL_PLACES
_RATIONAL = re.compile(r"^([0-9]{1,19})/([0-9]{1,19})$")
_STORED = re.compile(r"^([0-9]+)(?:\.([0-9]+)|/([0-9]+))?$")


class AmountOutOfRangeError(ValueError):
    """An amount in or out of a conversion is not within 1 to 2^53 - 1."""


class ConversionTooSmallError(ValueError):
    """The amount converts to less than one minor unit of the target currency."""


@dataclass(frozen=True)
class Conversion:
    """How one conversion splits the payer's amount; ``source_amount`` = ``source_used``
    + ``fee`` + ``residue``, and ``target_amount`` <= ``source_used * rate``."""

    source_amount: int
    fee: int
    source_used: int
    residue: int
    target_amount: int
    rate: Fraction
    fee_bps: int


def parse_rate(text: object) -> Fraction:
    """A positive rate from a decimal (``"0.045"``) or a ratio (``"4/5"``) given as text.

    Numbers that are not text are refused, floats above all: ``0.1`` is not one tenth."""
    if not isinstance(text, str):
        raise ValueError('a rate is written as text, such as "0.80" or "4/5"')
    cleaned = text.strip()
    if decimal := _DECIMAL.match(cleaned):
        whole, fraction = decimal.group(1), decimal.group(2) or ""
        rate = Fraction(int(whole + fraction), 10 ** len(fraction))
    elif ratio := _RATIONAL.match(cleaned):
        denominator = int(ratio.group(2))
        if denominator == 0:
            raise ValueError("a rate's denominator is not zero")
        rate = Fraction(int(ratio.group(1)), denominator)
    else:
        raise ValueError(f'{text!r} is not a rate such as "0.80" or "4/5"')
    if rate <= 0:
        raise ValueError("a rate is more than zero")
    if rate.numerator > MAX_RATE_PART or rate.denominator > MAX_RATE_PART:
        raise ValueError("a rate's numerator and denominator are at most 10^18")
    return rate


def format_rate(rate: Fraction) -> str:
    """Exact text for a rate: a decimal when one is exact in at most 18 places (what
    ``parse_rate`` reads back), else ``numerator/denominator``."""
    denominator = rate.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    places = max(twos, fives)
    if denominator != 1 or places > MAX_DECIMAL_PLACES:
        return f"{rate.numerator}/{rate.denominator}"
    if places == 0:
        return str(rate.numerator)
    scaled = rate.numerator * 10**places // rate.denominator
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def read_stored_rate(text: str) -> Fraction:
    """A rate as ``format_rate`` stored it, without ``parse_rate``'s bounds: a minor rate
    derived from two valuations and two scales can outgrow 10^18 in either part."""
    match = _STORED.match(text)
    if match is None or (match.group(3) is not None and int(match.group(3)) == 0):
        raise ValueError(f"{text!r} is not a stored rate")
    whole, fraction, denominator = match.groups()
    if fraction is not None:
        return Fraction(int(whole + fraction), 10 ** len(fraction))
    return Fraction(int(whole), int(denominator or 1))


def minor_rate_from_major(rate: Fraction, scale_from: int, scale_to: int) -> Fraction:
    """Target minor units per source minor unit, from a rate between major units."""
    return rate * Fraction(10) ** (scale_to - scale_from)


def minor_rate(
    valuation_from: Fraction, scale_from: int, valuation_to: Fraction, scale_to: int
) -> Fraction:
    """The rate between two currencies valued in the same reference unit."""
    return minor_rate_from_major(valuation_from / valuation_to, scale_from, scale_to)


def convert_source(source_amount: int, rate: Fraction, fee_bps: int) -> Conversion:
    """Convert all of ``source_amount``; see the module's rounding rule."""
    _check_amount(source_amount)
    fee = _fee(source_amount, fee_bps)
    net = source_amount - fee
    target = math.floor(net * rate)
    if target < 1:
        raise ConversionTooSmallError(source_amount)
    _check_amount(target)
    source_used = math.ceil(target / rate)
    return Conversion(
        source_amount=source_amount,
        fee=fee,
        source_used=source_used,
        residue=net - source_used,
        target_amount=target,
        rate=rate,
        fee_bps=fee_bps,
    )


def convert_target(target_amount: int, rate: Fraction, fee_bps: int) -> Conversion:
    """The least payment whose conversion delivers ``target_amount``."""
    _check_amount(target_amount)
    source_used = math.ceil(target_amount / rate)
    # net(S) = S - ceil(S * bps / BPS) = floor(S * (BPS - bps) / BPS) grows by at most one
    # per unit of S, so the least S with net(S) >= source_used has net(S) == source_used.
    source_amount = math.ceil(Fraction(source_used * BPS, BPS - fee_bps))
    _check_amount(source_amount)
    fee = _fee(source_amount, fee_bps)
    return Conversion(
        source_amount=source_amount,
        fee=fee,
        source_used=source_used,
        residue=source_amount - fee - source_used,
        target_amount=target_amount,
        rate=rate,
        fee_bps=fee_bps,
    )


def find_gain_cycle(
    edges: dict[tuple[str, str], Fraction],
) -> tuple[Fraction, tuple[str, ...]] | None:
    """A circle of conversions whose rates multiply to more than 1, or None if there is none.

    Bellman-Ford on products instead of sums of logarithms, so the answer is exact: with
    every node starting at 1, a rate that still improves a node after ``n`` rounds proves
    a gain cycle, and the predecessor chain leads into one."""
    nodes = sorted({node for edge in edges for node in edge})
    best = dict.fromkeys(nodes, Fraction(1))
    previous: dict[str, str] = {}
    improved: str | None = None
    for _ in range(len(nodes)):
        improved = None
        for (source, target), rate in edges.items():
            if best[source] * rate > best[target]:
                best[target] = best[source] * rate
                previous[target] = source
                improved = target
        if improved is None:
            return None
    if improved is None:
        return None
    node = improved
    for _ in range(len(nodes)):
        node = previous[node]
    cycle = [node]
    while (step := previous[cycle[-1]]) != node:
        cycle.append(step)
    cycle.reverse()
    gain = math.prod(
        (edges[cycle[index], cycle[(index + 1) % len(cycle)]] for index in range(len(cycle))),
        start=Fraction(1),
    )
    return gain, (*cycle, cycle[0])


def _fee(amount: int, fee_bps: int) -> int:
    return -(-amount * fee_bps // BPS)


def _check_amount(amount: int) -> None:
    if not is_amount(amount):
        raise AmountOutOfRangeError(amount)
