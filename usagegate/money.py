"""Exact money arithmetic: rationals in, one half-even rounding to 9 places out (never a float)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction


def round_money(value: Fraction | Decimal | int, places: int = 9) -> Decimal:
    """`value` rounded half-even to `places` decimal places, exactly."""
    scaled = Fraction(value) * 10**places
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * rest
    if twice > scaled.denominator or (twice == scaled.denominator and whole % 2):
        whole += 1
    return Decimal(whole).scaleb(-places).quantize(Decimal(1).scaleb(-places))
