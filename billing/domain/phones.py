"""Phone numbers as WhatsApp needs them: E.164, checked by ``phonenumbers``.

Contacts arrive typed by people (``(11) 98765-4321``, ``5511987654321``,
``11 8765-4321``), so :func:`normalize_phone` accepts the usual Brazilian ways
of writing a number and returns one canonical form, or raises
:class:`InvalidPhone` whose message is the rejection reason shown to the API
caller. Numbers of other countries are accepted when written with ``+`` and
their country code, since WhatsApp is global.

Brazilian rules on top of ``phonenumbers``:

* a mobile written without its leading 9 (8 subscriber digits starting with
  6, 7, 8 or 9) gets the 9 inserted: every Brazilian mobile has had 9 digits
  since 2016, and WhatsApp accounts are keyed on that form;
* landlines (8 digits starting with 2 to 5) are kept as they are;
* an area code (DDD) that does not exist is rejected naming the DDD.
"""
from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, ValidationResult

#: Brazil's ISO 3166 region code, as phonenumbers names regions.
BRAZIL_REGION = "BR"
#: Default region for numbers written without ``+`` and a country code.
DEFAULT_REGION = BRAZIL_REGION

#: Brazil's country calling code, as text and as the integer phonenumbers uses.
BRAZIL_COUNTRY_CODE = "55"
_BRAZIL_COUNTRY_CODE_INT = int(BRAZIL_COUNTRY_CODE)

#: Every Brazilian area code (DDD) in service, per Anatel's numbering plan.
BRAZIL_AREA_CODES = frozenset(
    "11 12 13 14 15 16 17 18 19 21 22 24 27 28 31 32 33 34 35 37 38 41 42 43 44"
    " 45 46 47 48 49 51 53 54 55 61 62 63 64 65 66 67 68 69 71 73 74 75 77 79"
    " 81 82 83 84 85 86 87 88 89 91 92 93 94 95 96 97 98 99".split()
)

#: Digits in a Brazilian area code.
DDD_LENGTH = 2
#: Subscriber digits of a landline, and of a mobile written without its 9.
SHORT_SUBSCRIBER_LENGTH = 8
#: Shortest and longest Brazilian national number: DDD + 8 or DDD + 9 digits.
BRAZIL_MIN_NATIONAL_LENGTH = DDD_LENGTH + SHORT_SUBSCRIBER_LENGTH
BRAZIL_MAX_NATIONAL_LENGTH = BRAZIL_MIN_NATIONAL_LENGTH + 1
#: First digits of an 8-digit subscriber number that mark an old-style mobile.
MOBILE_WITHOUT_NINE_FIRST_DIGITS = frozenset("6789")
#: The digit prepended to old-style 8-digit mobiles.
MOBILE_PREFIX_DIGIT = "9"

#: Input longer than this is rejected before any parsing (no number is that long
#: even with separators; it also bounds the work done on hostile input).
MAX_RAW_LENGTH = 64

#: Digits left visible at the end by :func:`mask_phone`.
MASK_VISIBLE_TAIL = 4
#: Character replacing each hidden digit in :func:`mask_phone`.
MASK_CHAR = "*"
#: Longest country calling code in the ITU plan.
MAX_COUNTRY_CODE_LENGTH = 3

#: Rejection reasons, the messages of InvalidPhone; API callers see them.
REASON_EMPTY = "phone is empty"
REASON_LETTERS = "phone has letters"
REASON_BAD_CHARACTERS = "phone has invalid characters"
REASON_NOT_TEXT = "phone must be text or an integer"
REASON_TOO_SHORT = "phone too short"
REASON_TOO_LONG = "phone too long"
REASON_BAD_COUNTRY = "invalid country code"
REASON_BAD_DDD = "invalid area code (DDD) {ddd}"
REASON_INVALID = "invalid phone number"
REASON_NOT_E164 = "phone is not in E.164 form"

# Separators people type inside numbers (any whitespace, including the
# non-breaking space spreadsheets paste, dashes, dots, slashes, parentheses).
_SEPARATORS = re.compile(r"[\s\-()./]+")
# "0xx11 ..." is how Brazilian numbers were printed when the caller picked the
# long-distance carrier; the "xx" is a placeholder, not letters in the number.
_CARRIER_PLACEHOLDER = re.compile(r"0\s*xx", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")
_ALLOWED = re.compile(r"[\d\s+\-()./]+")
# Only plain ASCII digits with an optional "+" take the hand-made Brazilian
# fast path; anything else goes through phonenumbers.parse.
_PLAIN_DIGITS = re.compile(r"\+?[0-9]+", re.ASCII)
_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)

_TOO_SHORT_ERRORS = frozenset(
    (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD)
)
_POSSIBILITY_REASONS = {
    ValidationResult.TOO_SHORT: REASON_TOO_SHORT,
    ValidationResult.TOO_LONG: REASON_TOO_LONG,
    ValidationResult.INVALID_COUNTRY_CODE: REASON_BAD_COUNTRY,
    ValidationResult.INVALID_LENGTH: REASON_INVALID,
}


class InvalidPhone(ValueError):
    """A phone number that cannot be sent to; ``str(exc)`` is the reason."""


def normalize_phone(raw: str | int | None, *, default_region: str = DEFAULT_REGION) -> str:
    """Return ``raw`` as an E.164 phone number such as ``+5511987654321``.

    Parameters:
      raw: the number as typed: text with spaces, dashes, dots, parentheses,
        an optional leading ``+``, trunk ``0`` or ``0xx`` carrier prefix; or
        an integer holding the digits.
      default_region: ISO 3166 region assumed for numbers written without
        ``+`` and a country code.

    Returns:
      The number in E.164 form.

    Raises:
      InvalidPhone: with the reason as its message.
    """
    text = _as_text(raw)
    if len(text) > MAX_RAW_LENGTH:
        raise InvalidPhone(REASON_TOO_LONG)

    compact = _SEPARATORS.sub("", text)
    if _PLAIN_DIGITS.fullmatch(compact):
        national = _brazilian_national_number(compact, default_region=default_region)
        if national is not None:
            return _finish_brazilian(national)

    return _normalize_general(text, default_region=default_region)


def mask_phone(e164: str) -> str:
    """Return ``e164`` with all but its country code, DDD and last digits hidden.

    The format is ``+<country code> <DDD> <one * per hidden digit>-<last 4>``
    for Brazil (``+55 11 *****-4321``, landline ``+55 11 ****-4444``) and
    ``+<country code> <one * per hidden digit>-<last 4>`` elsewhere
    (``+351 *****-5678``).

    Parameters:
      e164: a number as returned by :func:`normalize_phone`.

    Raises:
      InvalidPhone: if ``e164`` is not in E.164 form.
    """
    digits = whatsapp_digits(e164)
    country = _country_code_prefix(digits)
    rest = digits[len(country):]
    hidden = MASK_CHAR * (len(rest) - MASK_VISIBLE_TAIL)
    tail = rest[-MASK_VISIBLE_TAIL:]
    if country == BRAZIL_COUNTRY_CODE and len(rest) >= BRAZIL_MIN_NATIONAL_LENGTH:
        hidden = MASK_CHAR * (len(rest) - DDD_LENGTH - MASK_VISIBLE_TAIL)
        return f"+{country} {rest[:DDD_LENGTH]} {hidden}-{tail}"
    return f"+{country} {hidden}-{tail}"


def whatsapp_digits(e164: str) -> str:
    """Return the digits of ``e164`` without ``+``, as WhatsApp APIs take them.

    Parameters:
      e164: a number as returned by :func:`normalize_phone`.

    Raises:
      InvalidPhone: if ``e164`` is not in E.164 form.
    """
    if not isinstance(e164, str) or not _E164.fullmatch(e164):
        raise InvalidPhone(REASON_NOT_E164)
    return e164[1:]


def _as_text(raw: object) -> str:
    # bool is an int subclass, but True is never a phone number.
    if raw is None:
        raise InvalidPhone(REASON_EMPTY)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidPhone(REASON_NOT_TEXT)
    text = str(raw).strip()
    if not text:
        raise InvalidPhone(REASON_EMPTY)
    return text


def _brazilian_national_number(compact: str, *, default_region: str) -> str | None:
    """Return the national number of a plain Brazilian number, else None.

    This covers the common shapes (``11987654321``, ``5511987654321``,
    ``+5511987654321``) without phonenumbers.parse, which costs ~50 µs a call;
    validity is still decided by phonenumbers in :func:`_finish_brazilian`.
    None sends the input to the general path (other countries, trunk ``0``).

    Parameters:
      compact: ``+`` and ASCII digits only.
      default_region: region assumed for numbers without ``+``.
    """
    if compact.startswith("+"):
        if compact.startswith(BRAZIL_COUNTRY_CODE, 1):
            return compact[1 + len(BRAZIL_COUNTRY_CODE):]
        return None
    if default_region != BRAZIL_REGION or compact.startswith("0"):
        return None
    if len(compact) <= BRAZIL_MAX_NATIONAL_LENGTH:
        return compact
    # 12 or 13 digits cannot be a national number: it is 55 + DDD + subscriber.
    if compact.startswith(BRAZIL_COUNTRY_CODE):
        return compact[len(BRAZIL_COUNTRY_CODE):]
    return None


def _normalize_general(text: str, *, default_region: str) -> str:
    text = _CARRIER_PLACEHOLDER.sub("0", text)
    if _LETTER.search(text):
        raise InvalidPhone(REASON_LETTERS)
    if not _ALLOWED.fullmatch(text):
        raise InvalidPhone(REASON_BAD_CHARACTERS)

    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        raise InvalidPhone(_parse_error_reason(exc)) from None

    if number.country_code == _BRAZIL_COUNTRY_CODE_INT:
        return _finish_brazilian(str(number.national_number))
    if phonenumbers.is_valid_number(number):
        return f"+{number.country_code}{number.national_number}"
    reason = _POSSIBILITY_REASONS.get(
        phonenumbers.is_possible_number_with_reason(number), REASON_INVALID
    )
    raise InvalidPhone(reason)


def _finish_brazilian(national: str) -> str:
    """Apply the Brazilian rules to a national number and return E.164.

    Parameters:
      national: DDD followed by the subscriber number, digits only.

    Raises:
      InvalidPhone: for a wrong length, an unknown DDD or an invalid number.
    """
    if len(national) < BRAZIL_MIN_NATIONAL_LENGTH:
        raise InvalidPhone(REASON_TOO_SHORT)
    if len(national) > BRAZIL_MAX_NATIONAL_LENGTH:
        raise InvalidPhone(REASON_TOO_LONG)

    ddd = national[:DDD_LENGTH]
    if ddd not in BRAZIL_AREA_CODES:
        raise InvalidPhone(REASON_BAD_DDD.format(ddd=ddd))

    subscriber = national[DDD_LENGTH:]
    if (
        len(subscriber) == SHORT_SUBSCRIBER_LENGTH
        and subscriber[0] in MOBILE_WITHOUT_NINE_FIRST_DIGITS
    ):
        national = ddd + MOBILE_PREFIX_DIGIT + subscriber

    number = PhoneNumber(country_code=_BRAZIL_COUNTRY_CODE_INT, national_number=int(national))
    # The region is known, so skip is_valid_number's region lookup (~1/3 of its cost).
    if not phonenumbers.is_valid_number_for_region(number, BRAZIL_REGION):
        raise InvalidPhone(REASON_INVALID)
    return f"+{BRAZIL_COUNTRY_CODE}{national}"


def _parse_error_reason(exc: NumberParseException) -> str:
    if exc.error_type in _TOO_SHORT_ERRORS:
        return REASON_TOO_SHORT
    if exc.error_type == NumberParseException.TOO_LONG:
        return REASON_TOO_LONG
    if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        return REASON_BAD_COUNTRY
    return REASON_INVALID


def _country_code_prefix(digits: str) -> str:
    # Country calling codes are a prefix code: at most one prefix is assigned.
    for length in range(1, MAX_COUNTRY_CODE_LENGTH + 1):
        if int(digits[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return digits[:length]
    raise InvalidPhone(REASON_BAD_COUNTRY)
