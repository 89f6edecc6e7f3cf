"""Tests for billing.domain.templating."""
from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from billing.domain.templating import (
    MissingVariable,
    Template,
    TemplateSyntaxError,
    compile_template,
    render_text,
    sanitize_value,
)

BASIC = "Olá {{nome}}, sua fatura de {{ valor }} vence em {{\tvencimento }}."


def test_outputs_variables():
    values = {"nome": "Maria", "valor": "R$ 10,00", "vencimento": "10/03/2025"}
    assert render_text(BASIC, values) == "Olá Maria, sua fatura de R$ 10,00 vence em 10/03/2025."


def test_variables_lists_outputs_and_conditions():
    template = compile_template("{{a}}{{#if b}}{{c}}{{else}}{{d}}{{/if}}{{#unless e}}{{a}}{{/unless}}")
    assert template.variables == frozenset({"a", "b", "c", "d", "e"})
    assert isinstance(template.variables, frozenset)


def test_literal_text_is_output_as_written():
    text = "  Linha 1\n\n*negrito* _itálico_ ~riscado~ <b>{ chaves } R$ 5,00 100% \t\n"
    assert render_text(text, {}) == text


def test_empty_template():
    assert render_text("", {}) == ""
    assert compile_template("").variables == frozenset()


@pytest.mark.parametrize(
    "value, expected",
    [
        (42, "42"),
        (0, "0"),
        (False, "False"),
        (Decimal("10.50"), "10.50"),
        (3.5, "3.5"),
        ("  Maria  ", "Maria"),
    ],
)
def test_values_are_converted_with_str(value, expected):
    assert render_text("[{{x}}]", {"x": value}) == f"[{expected}]"


@pytest.mark.parametrize("values", [{}, {"valor": None}, {"valor": ""}, {"valor": "  \n "}, {"valor": "<b></b>"}])
def test_missing_variable_names_the_variable(values):
    with pytest.raises(MissingVariable) as caught:
        render_text("Olá {{nome}}, valor {{valor}}", {"nome": "Ana", **values})
    assert caught.value.name == "valor"
    assert str(caught.value) == "missing variable 'valor'"
    assert isinstance(caught.value, KeyError)


def test_first_missing_variable_in_order_is_reported():
    with pytest.raises(MissingVariable) as caught:
        render_text("{{b}} {{a}}", {})
    assert caught.value.name == "b"


def test_variable_guarded_by_if_is_optional():
    text = "Olá {{nome}}{{#if pix}}, PIX: {{pix}}{{/if}}."
    assert render_text(text, {"nome": "Ana"}) == "Olá Ana."
    assert render_text(text, {"nome": "Ana", "pix": "  "}) == "Olá Ana."
    assert render_text(text, {"nome": "Ana", "pix": "abc"}) == "Olá Ana, PIX: abc."


def test_variable_in_the_branch_not_taken_is_not_required():
    text = "{{#if pago}}Obrigado{{else}}Pague {{valor}}{{/if}}"
    assert render_text(text, {"pago": True}) == "Obrigado"
    with pytest.raises(MissingVariable, match="valor"):
        render_text(text, {"pago": False})


@pytest.mark.parametrize(
    "value, truthy",
    [
        (None, False),
        ("", False),
        ("   ", False),
        ("\n\t", False),
        (0, False),
        (0.0, False),
        (Decimal("0"), False),
        (False, False),
        ([], False),
        ({}, False),
        ((), False),
        ("0", True),
        ("não", True),
        (1, True),
        (-1, True),
        (True, True),
        ([0], True),
        ({"a": 1}, True),
    ],
)
def test_truthiness(value, truthy):
    values = {"x": value}
    assert render_text("{{#if x}}T{{else}}F{{/if}}", values) == ("T" if truthy else "F")
    assert render_text("{{#unless x}}F{{else}}T{{/unless}}", values) == ("T" if truthy else "F")


def test_missing_condition_variable_is_false():
    assert render_text("{{#if x}}T{{/if}}|{{#unless x}}U{{/unless}}", {}) == "|U"


def test_if_without_else():
    assert render_text("a{{#if x}}b{{/if}}c", {"x": 1}) == "abc"
    assert render_text("a{{#if x}}b{{/if}}c", {"x": 0}) == "ac"


NESTED = (
    "{{#if a}}A"
    "{{#unless b}}-notB"
    "{{#if c}}-C{{else}}-notC{{/if}}"
    "{{else}}-B{{/unless}}"
    "{{else}}notA{{/if}}!"
)


@pytest.mark.parametrize(
    "a, b, c, expected",
    [
        (0, 0, 0, "notA!"),
        (0, 0, 1, "notA!"),
        (0, 1, 0, "notA!"),
        (0, 1, 1, "notA!"),
        (1, 0, 0, "A-notB-notC!"),
        (1, 0, 1, "A-notB-C!"),
        (1, 1, 0, "A-B!"),
        (1, 1, 1, "A-B!"),
    ],
)
def test_nested_if_unless_if_with_else(a, b, c, expected):
    assert render_text(NESTED, {"a": a, "b": b, "c": c}) == expected


def test_deep_nesting_has_no_recursion_limit():
    depth = 5000
    text = "{{#if x}}" * depth + "{{y}}" + "{{/if}}" * depth
    assert render_text(text, {"x": 1, "y": "fundo"}) == "fundo"
    assert render_text(text, {"x": 0}) == ""


def test_blocks_with_whitespace_in_tags_and_multiline_bodies():
    text = "{{ #if pago }}\nPago em {{ data }}\n{{ else }}\nEm aberto\n{{ /if }}"
    assert render_text(text, {"pago": 1, "data": "01/02/2025"}) == "\nPago em 01/02/2025\n"
    assert render_text(text, {}) == "\nEm aberto\n"


@pytest.mark.parametrize("tag", ["{{nome}}", "{{ nome }}", "{{\tnome\t}}", "{{\nnome\n}}", "{{  nome}}"])
def test_whitespace_inside_output_tags(tag):
    assert render_text(f"<{tag}>", {"nome": "Ana"}) == "<Ana>"


def test_keywords_as_prefixes_are_plain_variables():
    assert render_text("{{elsewhere}} {{iffy}} {{if}}", {"elsewhere": "a", "iffy": "b", "if": "c"}) == "a b c"


@pytest.mark.parametrize(
    "value",
    ["{{x}}", "{{#if a}}", "{{/if}}", "{{else}}", "{{#if a}}sim{{/if}}", "}} {{", "{{{x}}}"],
)
def test_values_are_never_parsed(value):
    assert render_text("Olá {{nome}}!", {"nome": value, "x": "INJETADO", "a": 1}) == f"Olá {value}!"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("<script>alert(1)</script>", "alert(1)"),
        ("<b>x</b>", "x"),
        ('<a href="http://evil">clique</a>', "clique"),
        ("<!-- oculto -->texto", "texto"),
        ("<img src=x onerror=alert(1)>Maria", "Maria"),
        ("a < b > c", "a  b  c"),
        ("<<b>>x", "x"),
        ("<script", "script"),
        ("Ma\x00ri\x07a\x1b", "Maria"),
        ("linha 1\r\nlinha 2", "linha 1\nlinha 2"),
        ("col1\tcol2", "col1\tcol2"),
        ("\x7fMaria", "Maria"),
        ("  \n Maria \t ", "Maria"),
        # WhatsApp formatting marks stay: PIX codes and URLs need them intact.
        ("00020126***5204000053039865802BR", "00020126***5204000053039865802BR"),
        ("https://pag.example/fatura_123?a=b&c=~d", "https://pag.example/fatura_123?a=b&c=~d"),
        ("*negrito* _itálico_ ~riscado~", "*negrito* _itálico_ ~riscado~"),
        ("Conceição & Filhos", "Conceição & Filhos"),
    ],
)
def test_values_are_sanitized(value, expected):
    assert sanitize_value(value) == expected
    assert render_text("[{{x}}]", {"x": value}) == f"[{expected}]"


def test_sanitize_value_converts_non_text():
    class Sneaky:
        def __str__(self) -> str:
            return "<b>oi</b>"

    assert sanitize_value(Sneaky()) == "oi"
    assert sanitize_value(12) == "12"


@pytest.mark.parametrize(
    "text, message, line",
    [
        ("{{#if pago}}\n{{x}}", "unclosed {{#if pago}} at line 1", 1),
        ("Olá\n{{#if pago}}x", "unclosed {{#if pago}} at line 2", 2),
        ("{{#if a}}{{#unless b}}{{/unless}}", "unclosed {{#if a}} at line 1", 1),
        (
            "{{#if a}}\n{{#unless b}}\n{{/if}}",
            "unexpected {{/if}} at line 3, expected {{/unless}} to close {{#unless b}} from line 2",
            3,
        ),
        ("{{/unless}}", "unexpected {{/unless}} at line 1", 1),
        ("a\nb\n{{/if}}", "unexpected {{/if}} at line 3", 3),
        ("{{#if a}}x{{/if}}{{/if}}", "unexpected {{/if}} at line 1", 1),
        (
            "{{#unless b}}\n{{#if a}}\n{{/unless}}",
            "unexpected {{/unless}} at line 3, expected {{/if}} to close {{#if a}} from line 2",
            3,
        ),
        ("{{else}}", "{{else}} outside a block at line 1", 1),
        ("{{#if a}}{{/if}}\n{{else}}", "{{else}} outside a block at line 2", 2),
        ("{{#if a}}x{{else}}y\n{{else}}z{{/if}}", "second {{else}} in {{#if a}} at line 2", 2),
        ("{{foo bar}}", "invalid tag {{foo bar}} at line 1", 1),
        ("{{}}", "invalid tag {{}} at line 1", 1),
        ("{{ }}", "invalid tag {{ }} at line 1", 1),
        ("{{#if}}x{{/if}}", "invalid tag {{#if}} at line 1", 1),
        ("{{#ifpago}}x{{/if}}", "invalid tag {{#ifpago}} at line 1", 1),
        ("{{#each itens}}{{/each}}", "invalid tag {{#each itens}} at line 1", 1),
        ("{{1nome}}", "invalid tag {{1nome}} at line 1", 1),
        ("{{nome-completo}}", "invalid tag {{nome-completo}} at line 1", 1),
        ("{{else x}}", "invalid tag {{else x}} at line 1", 1),
        ("{{/if x}}", "invalid tag {{/if x}} at line 1", 1),
        ("{{ação}}", "invalid tag {{ação}} at line 1", 1),
        ("Olá {{nome}\nx", "unmatched {{ at line 1", 1),
        ("Olá\n{nome}}", "unmatched }} at line 2", 2),
        ("{{{nome}}}", "unmatched {{ at line 1", 1),
    ],
)
def test_syntax_errors(text, message, line):
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_template(text)
    assert str(caught.value) == message
    assert caught.value.line == line
    assert isinstance(caught.value, ValueError)


def test_render_text_raises_syntax_errors_too():
    with pytest.raises(TemplateSyntaxError, match=r"^unclosed \{\{#if a\}\} at line 1$"):
        render_text("{{#if a}}", {})


def test_compile_template_is_cached():
    text = "cache {{x}} " + str(id(object()))
    first = compile_template(text)
    assert compile_template(text) is first
    assert isinstance(first, Template)


def test_template_can_be_built_directly_and_rendered_many_times():
    template = Template("{{a}}-{{b}}")
    for a, b in itertools.product(["x", "y"], [1, 2]):
        assert template.render({"a": a, "b": b}) == f"{a}-{b}"


def test_template_rejects_non_text():
    with pytest.raises(TypeError):
        Template(None)  # type: ignore[arg-type]


def test_render_does_not_mutate_values():
    values = {"nome": " <b>Ana</b> "}
    render_text("{{nome}}", values)
    assert values == {"nome": " <b>Ana</b> "}
