"""Reading request bodies (billing/bodies.py) and the bound on rendered
messages (billing/domain/templating.py): the rules every entry point relies on."""
from __future__ import annotations

import json

import pytest

from billing.bodies import MAX_JSON_DEPTH, REPLACEMENT, MalformedBody, check_fits, check_query, clean_text, read_json, text_problem
from billing.domain.templating import MAX_MESSAGE_LENGTH, MessageTooLong, Template, render_text
from billing.errors import InvalidRequest


@pytest.mark.parametrize("raw", [b"x", b"", b"\xff", b'{"a": 1', b"[" * 5_000 + b"]" * 5_000,
                                 b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)])
def test_what_is_not_json_or_nests_too_deep_is_malformed(raw):
    with pytest.raises(MalformedBody) as caught:
        read_json(raw)
    assert caught.value.http_status == 400


def test_depth_counts_objects_and_arrays_but_not_brackets_in_text():
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert read_json(deepest.encode()) == json.loads(deepest)
    mixed = '{"a": ' * (MAX_JSON_DEPTH // 2) + "[" * (MAX_JSON_DEPTH // 2 + 1) + "]" * (MAX_JSON_DEPTH // 2 + 1) + "}" * (MAX_JSON_DEPTH // 2)
    with pytest.raises(MalformedBody):
        read_json(mixed.encode())
    brackets = json.dumps({"text": "[[[{{{" * 100 + '\\"]]', "ok": [1, {"b": "}}}"}]})
    assert read_json(brackets.encode()) == json.loads(brackets)


@pytest.mark.parametrize("raw, field, index", [
    (b'{"name": "a\\u0000b"}', "name", None),
    (b'{"contacts": [{}, {"nome": "\\ud800"}]}', "contacts.1.nome", 1),
    (b'{"meta": {"\\u0000": 1}}', "meta.\x00", None),
    (b'{"meta": {"\\udc00": 1}}', "meta.\\udc00", None),  # escaped: the answer must encode as UTF-8
])
def test_unfit_text_is_refused_naming_the_field(raw, field, index):
    with pytest.raises(InvalidRequest) as caught:
        read_json(raw)
    error = caught.value.errors[0]
    assert caught.value.http_status == 422 and error["field"] == field and error.get("index") == index
    json.dumps(caught.value.errors, ensure_ascii=False).encode("utf-8")


def test_gateway_text_is_cleaned_and_non_finite_numbers_become_null():
    raw = b'{"t": "a\\u0000b\\ud800c", "n": [1e400, NaN, -Infinity, 1.5], "\\u0000k": "\\ud83d\\ude00"}'
    assert read_json(raw, text="clean") == {"t": f"ab{REPLACEMENT}c", "n": [None, None, None, 1.5], "k": "😀"}
    assert read_json(b'{"n": 1e400}')["n"] == float("inf")  # a caller's numbers are each field's business


def test_a_surrogate_pair_is_text_not_a_problem():
    assert read_json(b'{"e": "\\ud83d\\ude00"}') == {"e": "😀"}
    assert text_problem("😀") is None and clean_text("😀") == "😀"


def test_queries_and_normal_forms():
    assert check_query({"a": "b"}) == {"a": "b"}
    with pytest.raises(InvalidRequest, match="external_id: must not contain NUL"):
        check_query({"external_id": "a\x00"})
    assert check_fits("abc", limit=3, field="f") == "abc"
    with pytest.raises(InvalidRequest) as caught:
        check_fits("abcd", limit=3, field="f")
    assert caught.value.errors == [{"field": "f", "message": "is longer than 3 characters once normalized (4)"}]


def test_a_render_stops_as_soon_as_its_output_passes_the_limit():
    template = Template("{{x}}" * 819)
    with pytest.raises(MessageTooLong) as caught:
        template.render({"x": "a" * 250_000})
    assert str(caught.value) == f"the message would be longer than {MAX_MESSAGE_LENGTH} characters"
    assert template.render({"x": "a" * 20}) == "a" * 20 * 819
    assert render_text("{{x}}", {"x": "abc"}, limit=3) == "abc"
    with pytest.raises(MessageTooLong):
        render_text("ab{{x}}", {"x": "c"}, limit=2)
    with pytest.raises(MessageTooLong):
        render_text("abcd", {}, limit=3)
