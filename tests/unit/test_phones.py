"""Tests for billing.domain.phones."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.domain.phones import InvalidPhone, mask_phone, normalize_phone, whatsapp_digits

#: Brazil's area codes (DDD) in service, copied from Anatel's numbering plan
#: (not from the code under test): 67 codes; 20, 23, 25, 26, 29, 30, 36, 39,
#: 40, 50, 52, 56-60, 70, 72, 76, 78, 80 and 90 do not exist.
ANATEL_DDDS = {
    *range(11, 20), 21, 22, 24, 27, 28, *range(31, 36), 37, 38, *range(41, 50), 51, 53, 54, 55,
    *range(61, 70), 71, 73, 74, 75, 77, 79, *range(81, 90), *range(91, 100),
}

#: Ways an ERP writes a Brazilian mobile number ({ddd}, then 9 + 8 digits).
WRITTEN_FORMS = ("{ddd}9{a}{b}", "({ddd}) 9{a}-{b}", "+55 {ddd} 9{a}-{b}", "55{ddd}9{a}{b}", "{ddd}.9{a}.{b}",
                 " 0{ddd} 9{a} {b} ")


@pytest.mark.parametrize(
    "raw, expected",
    [
        # Brazilian mobile, every usual way of writing it.
        ("11987654321", "+5511987654321"),
        ("(11) 98765-4321", "+5511987654321"),
        ("(11)98765-4321", "+5511987654321"),
        ("11 98765 4321", "+5511987654321"),
        ("11.98765.4321", "+5511987654321"),
        ("5511987654321", "+5511987654321"),
        ("55 11 98765-4321", "+5511987654321"),
        ("+5511987654321", "+5511987654321"),
        ("+55 (11) 9 8765-4321", "+5511987654321"),
        ("+55.11.98765.4321", "+5511987654321"),
        ("  +55 11 98765-4321\t", "+5511987654321"),
        ("11\u00a098765-4321", "+5511987654321"),
        (11987654321, "+5511987654321"),
        (5511987654321, "+5511987654321"),
        # Trunk prefix and carrier-selection forms.
        ("011987654321", "+5511987654321"),
        ("0 41 11 98765-4321", "+5511987654321"),
        ("0xx11 98765-4321", "+5511987654321"),
        ("(0XX11) 98765-4321", "+5511987654321"),
        # Mobile written without the leading 9: the 9 is inserted.
        ("11 8765-4321", "+5511987654321"),
        ("1187654321", "+5511987654321"),
        ("+55 11 8765-4321", "+5511987654321"),
        ("551187654321", "+5511987654321"),
        ("21 7654-3210", "+5521976543210"),
        ("31 6543-2109", "+5531965432109"),
        ("11 9876-5432", "+5511998765432"),
        # Landlines are kept as they are.
        ("11 3333-4444", "+551133334444"),
        ("+55 11 3333-4444", "+551133334444"),
        ("551133334444", "+551133334444"),
        ("21 2555-1234", "+552125551234"),
        ("(61) 4567-8901", "+556145678901"),
        ("51 5123-4567", "+555151234567"),
        # DDD 55 itself: 10/11 digits starting with 55 are a national number.
        ("55 98765-4321", "+5555987654321"),
        ("55 3333-4444", "+555533334444"),
        # Other countries with + and country code.
        ("+351 912 345 678", "+351912345678"),
        ("+1 650 253 0000", "+16502530000"),
        ("+44 7911 123456", "+447911123456"),
        # Non-ASCII digits are still digits.
        ("\u0661\u0661\u0669\u0668\u0667\u0666\u0665\u0664\u0663\u0662\u0661", "+5511987654321"),
    ],
)
def test_normalize_phone_accepts(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw, reason",
    [
        (None, "phone is empty"),
        ("", "phone is empty"),
        ("   ", "phone is empty"),
        ("abc", "phone has letters"),
        ("11 98765-432a", "phone has letters"),
        ("11 98765-4321 ramal 2", "phone has letters"),
        ("11 98765-4321 x2", "phone has letters"),
        ("0800-FLORES", "phone has letters"),
        ("11987654321#", "phone has invalid characters"),
        ("11*98765*4321", "phone has invalid characters"),
        ("1234567", "phone too short"),
        ("987654321", "phone too short"),
        ("+5511987654", "phone too short"),
        ("+55 12", "phone too short"),
        ("119876543210", "phone too long"),
        ("+55119876543210", "phone too long"),
        ("1" * 80, "phone too long"),
        ("+351 91234", "phone too short"),
        ("+351 912345678901", "phone too long"),
        ("+999 123456", "invalid country code"),
        (True, "phone must be text or an integer"),
        (11987654321.0, "phone must be text or an integer"),
        # 8 digits starting with 0 or 1 are neither mobile nor landline.
        ("+55 11 1234-5678", "invalid phone number"),
        # 9 digits must start with 9.
        ("+55 11 88765-4321", "invalid phone number"),
        ("+", "invalid phone number"),
    ],
)
def test_normalize_phone_rejects_with_reason(raw, reason):
    with pytest.raises(InvalidPhone) as caught:
        normalize_phone(raw)
    assert str(caught.value) == reason


@given(a=st.integers(0, 9999), b=st.integers(0, 9999), form=st.sampled_from(WRITTEN_FORMS))
def test_a_mobile_number_is_accepted_exactly_when_its_ddd_exists(a, b, form):
    for ddd in range(10, 100):  # every two-digit code, each time
        raw = form.format(ddd=ddd, a=f"{a:04d}", b=f"{b:04d}")
        if ddd not in ANATEL_DDDS:
            with pytest.raises(InvalidPhone, match=f"^invalid area code \\(DDD\\) {ddd}$"):
                normalize_phone(raw)
            continue

        e164 = normalize_phone(raw)

        assert e164 == f"+55{ddd}9{a:04d}{b:04d}", raw  # every written form gives the one E.164 number
        assert normalize_phone(e164) == e164  # which reads back as itself
        assert whatsapp_digits(e164) == e164[1:]


def test_invalid_phone_is_a_value_error():
    assert issubclass(InvalidPhone, ValueError)


def test_normalize_phone_with_another_default_region():
    assert normalize_phone("912 345 678", default_region="PT") == "+351912345678"
    assert normalize_phone("+55 11 8765-4321", default_region="PT") == "+5511987654321"


@pytest.mark.parametrize(
    "e164, masked",
    [
        ("+5511987654321", "+55 11 *****-4321"),
        ("+551133334444", "+55 11 ****-4444"),
        ("+351912345678", "+351 *****-5678"),
        ("+16502530000", "+1 ******-0000"),
        ("+447911123456", "+44 ******-3456"),
    ],
)
def test_mask_phone(e164, masked):
    assert mask_phone(e164) == masked


@pytest.mark.parametrize("e164, digits", [("+5511987654321", "5511987654321"), ("+16502530000", "16502530000")])
def test_whatsapp_digits(e164, digits):
    assert whatsapp_digits(e164) == digits


@pytest.mark.parametrize("bad", ["5511987654321", "+55 11 98765-4321", "", "+0123456789", None])
def test_mask_and_digits_require_e164(bad):
    with pytest.raises(InvalidPhone, match="^phone is not in E.164 form$"):
        whatsapp_digits(bad)
    with pytest.raises(InvalidPhone, match="^phone is not in E.164 form$"):
        mask_phone(bad)


def test_normalized_output_round_trips():
    e164 = normalize_phone("(11) 8765-4321")
    assert normalize_phone(e164) == e164
    assert normalize_phone(whatsapp_digits(e164)) == e164
