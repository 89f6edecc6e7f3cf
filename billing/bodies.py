"""Request bodies as the entry points receive them: bytes read as JSON,
bounded, and made of text every database can store.

Three rules hold for every body the API, the admin API and the webhooks read:

- **A body that is not JSON is a 400** (:class:`MalformedBody`): not UTF-8,
  not JSON, or nested deeper than
  :data:`MAX_JSON_DEPTH` (Python's parser would otherwise hit its recursion
  limit on a body nested ~1,000 deep, and the stored metadata would be
  unreadable).
- **Caller text holds no NUL and no lone surrogate.** PostgreSQL refuses a
  NUL in text, and neither database can encode a lone surrogate (``\\ud800``)
  as UTF-8: in what a caller sends (``refuse``) each is a 422 naming the field;
  in what a gateway sends (``clean``) NULs are removed and surrogates replaced
  with U+FFFD, so a customer's reply is stored whatever its bytes were.
- **Numbers are the fields' business.** ``NaN``, ``Infinity`` and ``1e400``
  (read as infinity) are kept in a caller's body, as Python's parser and some
  ERPs have them: each field's validation refuses them where a number must be
  finite (an amount rejects its contact), and JSON stored as text keeps them.
  In a gateway's body (``clean``) they become null: no gateway sends them, and
  a timestamp of infinity is no time.

The same checks apply to query strings (:func:`check_query`).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from billing.errors import BillingError, InvalidRequest

#: How deep objects and arrays may nest in a body. A send body needs 3 levels
#: (body, contacts, contact); metadata gets the rest.
MAX_JSON_DEPTH = 32

#: What replaces a lone surrogate in cleaned text (the Unicode replacement character).
REPLACEMENT = "\ufffd"

#: A JSON escape that can produce a NUL or a surrogate (searched in the
#: body), and, in a gateway's body, a number that may not be finite: NaN,
#: Infinity, an exponent of 3 digits or 309 digits and more (searched in the
#: body without its strings). Only a body holding one (rare) is walked value
#: by value; the usual body costs its parse and a few regex passes, all in C.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")
_BIG_EXPONENT = re.compile(r"[eE]\+?\d{3}")
_LONG_NUMBER = re.compile(r"\d{309}")
_NON_FINITE = re.compile(r"NaN|Infinity")

#: A JSON string (the body parsed, so it is well formed), then anything that
#: is not a bracket, then an innermost pair: what the depth check removes.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")

#: A lone surrogate in decoded text (a pair was already joined by the parser).
_SURROGATE = re.compile("[\ud800-\udfff]")

TextPolicy = Literal["refuse", "clean"]


class MalformedBody(BillingError):
    """The body is not JSON we read (a caller bug): 400."""

    http_status = 400


def read_json(raw: bytes, *, text: TextPolicy = "refuse") -> Any:
    """Parse a request body.

    Parameters:
      raw: the body's bytes (UTF-8 JSON).
      text: ``refuse`` a string holding a NUL or a lone surrogate (422, the
        field named), or ``clean`` it (NUL removed, surrogate replaced; a
        non-finite number becomes null too).

    Raises:
      MalformedBody: the body is not UTF-8 JSON, or nests too deep.
      InvalidRequest: a string is unfit to store (``refuse``).
    """
    try:
        decoded = raw.decode("utf-8")
        value = json.loads(decoded)
    except RecursionError:
        raise MalformedBody(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise MalformedBody("the body must be JSON (Content-Type: application/json)") from None
    skeleton = _STRING.sub("", decoded)  # the body without its strings
    if _too_deep(skeleton):
        raise MalformedBody(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    refuse = text == "refuse"
    risky = ("\\u" in decoded and _RISKY_ESCAPE.search(decoded)) or not refuse and (
        _NON_FINITE.search(skeleton) or _BIG_EXPONENT.search(skeleton) or _LONG_NUMBER.search(skeleton))
    if not risky:
        return value
    return _cleaned(value) if _inspect(value, refuse=refuse) else value


def check_query(args: dict[str, str]) -> dict[str, str]:
    """``args`` (a query string's parameters) when no value holds a NUL.

    Parameters:
      args: parameter name -> value, as decoded from the URL.

    Raises:
      InvalidRequest: a value holds a NUL (the parameter named).
    """
    for name, value in args.items():
        problem = text_problem(value)
        if problem:
            raise _invalid(name, problem)
    return args


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None.

    Parameters:
      value: any text.
    """
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    if not value.isascii() and _SURROGATE.search(value):
        return "must be valid Unicode text (a lone surrogate such as \\ud800 is not)"
    return None


def check_fits(value: str, *, limit: int, field: str) -> str:
    """``value`` when it fits a column of ``limit`` characters (PostgreSQL
    refuses a longer one; SQLite would keep it). For a value we derive from
    the caller's, such as a normal form, whose length the schema cannot bound.

    Parameters:
      value: the text to store.
      limit: the column's length.
      field: the caller's name for it, in the error.

    Raises:
      InvalidRequest: it is longer (422, the field named).
    """
    if len(value) > limit:
        raise _invalid(field, f"is longer than {limit} characters once normalized ({len(value)})")
    return value


def clean_text(value: str) -> str:
    """``value`` with NULs removed and lone surrogates replaced by U+FFFD.

    Parameters:
      value: text a gateway sent.
    """
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = _SURROGATE.sub(REPLACEMENT, value)
    return value


def _too_deep(skeleton: str) -> bool:
    """Whether JSON without its strings nests deeper than
    :data:`MAX_JSON_DEPTH`. Each pass removes the innermost pairs of
    brackets, one level: in C, not a Python loop over the values."""
    brackets = _NOT_BRACKET.sub("", skeleton)
    for _ in range(MAX_JSON_DEPTH):
        if not brackets:
            return False
        brackets = _INNERMOST.sub("", brackets)
    return bool(brackets)


def _inspect(value: Any, *, refuse: bool) -> bool:
    """Walk ``value`` (its depth is bounded) without recursion: refuse unfit
    text naming the field, or report it (and non-finite numbers) to be
    cleaned. Returns whether something must be cleaned."""
    dirty = False
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if text_problem(key):
                    dirty = _unfit(path + (key,), text_problem(key), refuse=refuse) or dirty
                stack.append((child, path + (key,)))
        elif isinstance(item, list):
            stack.extend((child, path + (index,)) for index, child in enumerate(item))
        elif isinstance(item, str):
            if text_problem(item):
                dirty = _unfit(path, text_problem(item), refuse=refuse) or dirty
        elif isinstance(item, float) and not math.isfinite(item) and not refuse:
            dirty = True
    return dirty


def _unfit(path: tuple, problem: str, *, refuse: bool) -> bool:
    if refuse:
        raise _invalid(_field(path), problem, path=path)
    return True


def _cleaned(value: Any) -> Any:
    """``value`` with every text cleaned and every non-finite number null (its
    depth is bounded already)."""
    if isinstance(value, dict):
        return {clean_text(key): _cleaned(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_cleaned(child) for child in value]
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _field(path: tuple) -> str:
    # The spelling of billing.schemas.parse: contacts.3.nome; the body itself is
    # "body". A key's lone surrogate is escaped: the answer must encode as UTF-8.
    name = ".".join(str(part) for part in path) or "body"
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _invalid(field: str, problem: str, *, path: tuple = ()) -> InvalidRequest:
    item = {"field": field, "message": problem}
    if len(path) >= 2 and path[0] == "contacts" and isinstance(path[1], int):
        item["index"] = path[1]
    return InvalidRequest(f"invalid request: {field}: {problem}", errors=[item])
