"""The one door for amounts.

Inside Heartleaf every amount is an ``int`` of minor units (a currency of scale 2 stores
12.50 as 1250). Only this module turns decimal text into minor units and back, and it
refuses floats by type: a float cannot say 0.1 exactly, so it never gets near money.
"""

from __future__ import annotations

import re
from decimal import Decimal

AMOUNT_MIN = 1
# 2^53 - 1: the largest integer every JSON client (JavaScript included) reads exactly.
AMOUNT_MAX = 2**53 - 1
# Balances and pending totals live in signed 64-bit columns.
BALANCE_MIN = -(2**63)
BALANCE_MAX = 2**63 - 1
SCALE_MAX = 8

_DECIMAL_TEXT = re.compile(r"^(?P<sign>-?)(?P<whole>\d+)(?:\.(?P<fraction>\d+))?$")


def is_amount(value: object) -> bool:
    """True for an int (not a bool) within the posting range 1 .. 2^53 - 1."""
    return (
        isinstance(value, int) and not isinstance(value, bool) and AMOUNT_MIN <= value <= AMOUNT_MAX
    )


def fits_balance(value: int) -> bool:
    return BALANCE_MIN <= value <= BALANCE_MAX


def parse(text: str, scale: int) -> int:
    """``parse("12.50", 2) == 1250``. Refuses floats, excess precision and junk."""
    if not isinstance(text, str):
        raise TypeError(f"amounts are parsed from text, not {type(text).__name__}")
    match = _DECIMAL_TEXT.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a decimal amount")
    fraction = match["fraction"] or ""
    if len(fraction) > scale:
        raise ValueError(f"{text!r} has more than {scale} decimal places")
    minor: int = int(match["whole"]) * 10**scale + int(fraction.ljust(scale, "0") or "0")
    return -minor if match["sign"] else minor


def format_minor(minor: int, scale: int) -> str:
    """``format_minor(1250, 2) == "12.50"``; exact for any int and scale."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units are int, not {type(minor).__name__}")
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**scale)
    if scale == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{scale}d}"


def to_decimal(minor: int, scale: int) -> Decimal:
    """Exact Decimal for display arithmetic; never used to store an amount."""
    return Decimal(format_minor(minor, scale))
