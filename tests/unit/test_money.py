"""Tests for billing.domain.money."""
from __future__ import annotations

from decimal import Decimal

import pytest

from billing.domain.money import InvalidAmount, format_brl


@pytest.mark.parametrize(
    "value, expected",
    [
        (1234.56, "R$ 1.234,56"),
        (0, "R$ 0,00"),
        (0.0, "R$ 0,00"),
        (1000000, "R$ 1.000.000,00"),
        (1000000.5, "R$ 1.000.000,50"),
        (999.99, "R$ 999,99"),
        (1000, "R$ 1.000,00"),
        (5, "R$ 5,00"),
        (0.5, "R$ 0,50"),
        (Decimal("1234.56"), "R$ 1.234,56"),
        (Decimal("1.005"), "R$ 1,01"),
        (Decimal("1.004"), "R$ 1,00"),
        (Decimal("2.675"), "R$ 2,68"),
        (Decimal("1E+3"), "R$ 1.000,00"),
        (Decimal("12345678.9"), "R$ 12.345.678,90"),
        # Floats are read through str(): no binary-float surprises.
        (0.1 + 0.2, "R$ 0,30"),
        (2.675, "R$ 2,68"),
        (1.005, "R$ 1,01"),
        (999.995, "R$ 1.000,00"),
        (-10, "-R$ 10,00"),
        (-1234.5, "-R$ 1.234,50"),
        (Decimal("-0.005"), "-R$ 0,01"),
        # Rounds to zero: no minus sign on R$ 0,00.
        (-0.001, "R$ 0,00"),
        (Decimal("-0"), "R$ 0,00"),
        # Text is kept as given, only stripped.
        ("R$ 10,00", "R$ 10,00"),
        ("  10 reais  ", "10 reais"),
        ("1234.56", "1234.56"),
        ("", ""),
        (None, ""),
    ],
)
def test_format_brl(value, expected):
    assert format_brl(value) == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        (True, "amount must be a number, not a boolean"),
        (False, "amount must be a number, not a boolean"),
        (float("nan"), "amount is not a finite number"),
        (float("inf"), "amount is not a finite number"),
        (Decimal("-Infinity"), "amount is not a finite number"),
        (Decimal("1E+30"), "amount is too large"),
        ([10], "amount must be a number or text, not list"),
    ],
)
def test_format_brl_rejects(value, reason):
    with pytest.raises(InvalidAmount) as caught:
        format_brl(value)
    assert str(caught.value) == reason


def test_invalid_amount_is_a_value_error():
    assert issubclass(InvalidAmount, ValueError)
