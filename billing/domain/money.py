"""Amounts of money written the Brazilian way: ``R$ 1.234,56``.

Arithmetic is done in :class:`~decimal.Decimal` and rounded half up, as people
and banks round, never in binary floating point.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

#: Currency symbol and the space that follows it.
CURRENCY_PREFIX = "R$ "
#: Sign written before the currency symbol for negative amounts.
NEGATIVE_SIGN = "-"
#: Amounts are shown with this many decimal places (centavos).
CENTS = Decimal("0.01")

# format() writes "1,234.56"; Brazil swaps the two separators.
_SWAP_SEPARATORS = str.maketrans({",": ".", ".": ","})


class InvalidAmount(ValueError):
    """A value that cannot be shown as money; ``str(exc)`` is the reason."""


def format_brl(value: int | float | Decimal | str | None) -> str:
    """Return ``value`` formatted as Brazilian reais, e.g. ``R$ 1.234,56``.

    Two decimals, ``.`` between thousands, ``,`` before the centavos, rounded
    half up (``Decimal("1.005")`` -> ``R$ 1,01``); negatives are ``-R$ 10,00``.
    A float is read through ``str()`` so ``0.1 + 0.2`` shows as ``R$ 0,30``.

    Parameters:
      value: a number; or text, which is returned stripped but otherwise as
        given (the caller already wrote the amount the way they want it);
        or None, which gives ``""``.

    Raises:
      InvalidAmount: for a bool, a non-finite or absurdly large number, or any
        other type.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    # bool is an int subclass, but True is a flag, not R$ 1,00.
    if isinstance(value, bool):
        raise InvalidAmount("amount must be a number, not a boolean")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(str(value))
    else:
        raise InvalidAmount(f"amount must be a number or text, not {type(value).__name__}")

    if not amount.is_finite():
        raise InvalidAmount("amount is not a finite number")

    try:
        rounded = amount.quantize(CENTS, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        # More digits than the decimal context holds (28 by default).
        raise InvalidAmount("amount is too large") from None
    text = format(abs(rounded), ",.2f").translate(_SWAP_SEPARATORS)
    # Compare the rounded value so -0.001 shows as R$ 0,00, not -R$ 0,00.
    if rounded < 0:
        return f"{NEGATIVE_SIGN}{CURRENCY_PREFIX}{text}"
    return f"{CURRENCY_PREFIX}{text}"
