"""The small template language of WhatsApp message templates.

Syntax::

    Olá {{ nome }}, sua fatura de {{valor}} {{#if pago}}foi paga{{else}}vence
    em {{vencimento}}{{/if}}.{{#unless optout}} Responda SAIR para sair.{{/unless}}

* ``{{var}}`` outputs a variable (spaces inside the braces are allowed);
  names match ``[A-Za-z_][A-Za-z0-9_]*``.
* ``{{#if var}}...{{else}}...{{/if}}`` and ``{{#unless var}}...{{else}}...
  {{/unless}}`` choose a branch; ``{{else}}`` is optional and blocks nest to
  any depth. Missing, None, blank text, 0, False and empty collections are
  false.
* Everything else is literal text, output as written; a stray ``{{`` or
  ``}}`` is a syntax error, so a typo such as ``{nome}}`` is caught when the
  template is saved instead of reaching 10,000 customers.

An output that rendering reaches and whose value is missing, None or blank
raises :class:`MissingVariable`: that is how a contact lacking a variable its
template needs is rejected, while a variable only shown inside
``{{#if var}}`` is optional.

Values are inserted in a single pass and never parsed again, so a value
containing ``{{x}}`` appears literally. They are sanitized first (see
:func:`sanitize_value`).

A template is compiled once (:func:`compile_template`, cached) into a flat
program of text, output and jump steps; rendering walks it in a loop, which is
fast and puts no recursion limit on nesting.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping

#: The longest message a render may produce, in characters. A template holds
#: at most 4,096 characters, but a variable printed many times multiplies a
#: value's size (819 ``{{x}}`` of a 250 KB ``x`` would make 205 MB): a render
#: stops as soon as its output passes this (:class:`MessageTooLong`).
#: WhatsApp's own limit is 65,536; a billing reminder is far shorter.
MAX_MESSAGE_LENGTH = 16_384

#: How many compiled templates :func:`compile_template` keeps. A request uses a
#: handful of variations; this covers many tenants' templates at once.
TEMPLATE_CACHE_SIZE = 512

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# A whole tag, an unmatched "{{" or an unmatched "}}"; text between matches is
# literal.
_TOKEN = re.compile(r"\{\{(?P<body>[^{}]*)\}\}|(?P<open>\{\{)|(?P<close>\}\})")
# What may stand between the braces. "else" comes before the variable form so
# {{else}} is the keyword, while {{elsewhere}} still backtracks to a variable.
_BODY = re.compile(
    rf"\s*(?:(?P<else>else)|(?P<var>{_NAME})"
    rf"|#(?P<block>if|unless)\s+(?P<cond>{_NAME})|/(?P<end>if|unless))\s*"
)

# Anything sanitize_value may have to remove. Most values (names, amounts,
# dates) contain none of it, and one search is cheaper than the substitutions.
_UNSAFE = re.compile(r"[<>\x00-\x08\x0b-\x1f\x7f]")
# Something that looks like an HTML/XML tag, comment or declaration. "a < b"
# is not one; its lone "<" is removed by _UNSAFE afterwards.
_HTML_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")

# Program steps: (opcode, argument, jump target).
_TEXT = 0  # append the literal argument
_OUTPUT = 1  # append the sanitized value of the variable named by argument
_JUMP_IF_FALSE = 2  # jump to target unless the variable is truthy (#if)
_JUMP_IF_TRUE = 3  # jump to target if the variable is truthy (#unless)
_JUMP = 4  # jump to target (end of a then-branch that has an else)

_BLOCK_JUMPS = {"if": _JUMP_IF_FALSE, "unless": _JUMP_IF_TRUE}


class TemplateSyntaxError(ValueError):
    """A template that cannot be compiled.

    The message names the problem and its line, e.g. ``unclosed {{#if pago}}
    at line 2``; ``line`` holds the 1-based line number.

    Parameters:
      problem: what is wrong, naming the offending tag.
      line: the 1-based line of the tag.
      detail: text appended after the line, e.g. which block was open.
    """

    def __init__(self, problem: str, *, line: int, detail: str = "") -> None:
        super().__init__(f"{problem} at line {line}{detail}")
        self.line = line


class MissingVariable(KeyError):
    """A variable that rendering needed was missing, None or blank.

    ``name`` is the variable; ``str(exc)`` is ``missing variable 'name'``.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        # KeyError's own __str__ would show the repr of the whole args tuple.
        return f"missing variable {self.name!r}"


class MessageTooLong(ValueError):
    """A render whose output passed its limit (it was stopped there).

    Parameters:
      limit: the limit in characters.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the message would be longer than {limit} characters")
        self.limit = limit


class Template:
    """A compiled template.

    Parameters:
      text: the template source.

    Raises:
      TemplateSyntaxError: if ``text`` is not a well-formed template.

    Attributes:
      text: the source it was compiled from.
      variables: every variable name the template mentions, in outputs or in
        conditions.
    """

    __slots__ = ("text", "variables", "_program")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"template text must be str, not {type(text).__name__}")
        self.text = text
        self._program, self.variables = _compile(text)

    def render(self, values: Mapping[str, object], *, limit: int = MAX_MESSAGE_LENGTH) -> str:
        """Return the template filled in with ``values``.

        Parameters:
          values: variable name -> value; values are converted with ``str()``
            and sanitized.
          limit: the longest output, in characters (default
            :data:`MAX_MESSAGE_LENGTH`).

        Raises:
          MissingVariable: if an output reached while rendering has no value,
            or its value is None or blank once sanitized.
          MessageTooLong: the output passed ``limit``; rendering stopped there,
            so the work done is bounded by the limit, not by the values.
        """
        program = self._program
        size = len(program)
        out: list[str] = []
        append = out.append
        get = values.get
        length = 0
        pc = 0
        while pc < size:
            opcode, argument, target = program[pc]
            pc += 1
            if opcode == _TEXT:
                append(argument)
                length += len(argument)
                if length > limit:
                    raise MessageTooLong(limit)
            elif opcode == _OUTPUT:
                value = get(argument)
                text = "" if value is None else sanitize_value(value)
                if not text:
                    raise MissingVariable(argument)
                append(text)
                length += len(text)
                if length > limit:
                    raise MessageTooLong(limit)
            elif opcode == _JUMP_IF_FALSE:
                if not _truthy(get(argument)):
                    pc = target
            elif opcode == _JUMP_IF_TRUE:
                if _truthy(get(argument)):
                    pc = target
            else:
                pc = target
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def compile_template(text: str) -> Template:
    """Compile ``text`` into a :class:`Template`, reusing a cached one.

    Parameters:
      text: the template source.

    Raises:
      TemplateSyntaxError: if ``text`` is not a well-formed template.
    """
    return Template(text)


def render_text(text: str, values: Mapping[str, object], *, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """Compile ``text`` (cached) and render it with ``values``.

    Parameters:
      text: the template source.
      values: variable name -> value.
      limit: the longest output, in characters.

    Raises:
      TemplateSyntaxError: if ``text`` is not a well-formed template.
      MissingVariable, MessageTooLong: as :meth:`Template.render`.
    """
    return compile_template(text).render(values, limit=limit)


def sanitize_value(value: object) -> str:
    """Return ``value`` as text that is safe to put in a message.

    HTML/XML tags are removed (``<b>x</b>`` -> ``x``), then any remaining
    ``<`` and ``>``, then ASCII control characters other than newline and tab;
    surrounding whitespace is stripped.

    ``*``, ``_`` and ``~`` are WhatsApp formatting marks but are deliberately
    kept: PIX copy-and-paste codes contain ``***`` and URLs contain ``_``, and
    changing a single character would corrupt the payment code or link.

    Parameters:
      value: any value; non-text is converted with ``str()``.
    """
    text = value if isinstance(value, str) else str(value)
    if _UNSAFE.search(text) is None:
        return text.strip()
    return _UNSAFE.sub("", _HTML_TAG.sub("", text)).strip()


def _truthy(value: object) -> bool:
    # Text is judged as it would be output, so {{#if x}}{{x}}{{/if}} never
    # raises MissingVariable for a blank or tags-only x.
    if value is None:
        return False
    if isinstance(value, str):
        return bool(sanitize_value(value))
    return bool(value)


def _compile(text: str) -> tuple[tuple[tuple[int, object, int], ...], frozenset[str]]:
    """Parse ``text`` into a flat program and the set of variables it names.

    Parameters:
      text: the template source.

    Raises:
      TemplateSyntaxError: for a malformed tag, an unclosed or mismatched
        block, an ``{{else}}`` outside a block or repeated in one, or a stray
        ``{{`` or ``}}``.
    """
    program: list[list] = []
    variables: set[str] = set()
    # Open blocks: [keyword, variable, start offset, branch step, else step].
    blocks: list[list] = []
    literal_start = 0

    for match in _TOKEN.finditer(text):
        if match.start() > literal_start:
            program.append([_TEXT, text[literal_start:match.start()], 0])
        literal_start = match.end()
        offset = match.start()

        if match.group("open"):
            raise TemplateSyntaxError("unmatched {{", line=_line_of(text, offset))
        if match.group("close"):
            raise TemplateSyntaxError("unmatched }}", line=_line_of(text, offset))

        tag = _BODY.fullmatch(match.group("body"))
        if tag is None:
            raise TemplateSyntaxError(f"invalid tag {match.group()}", line=_line_of(text, offset))

        if tag.group("var"):
            variables.add(tag.group("var"))
            program.append([_OUTPUT, tag.group("var"), 0])
        elif tag.group("block"):
            keyword, name = tag.group("block"), tag.group("cond")
            variables.add(name)
            blocks.append([keyword, name, offset, len(program), None])
            program.append([_BLOCK_JUMPS[keyword], name, 0])
        elif tag.group("else"):
            if not blocks:
                raise TemplateSyntaxError("{{else}} outside a block", line=_line_of(text, offset))
            block = blocks[-1]
            if block[4] is not None:
                raise TemplateSyntaxError(
                    f"second {{{{else}}}} in {_block_tag(block)}", line=_line_of(text, offset)
                )
            block[4] = len(program)
            program.append([_JUMP, None, 0])
            # A false condition lands just after this jump, on the else-branch.
            program[block[3]][2] = len(program)
        else:
            keyword = tag.group("end")
            if not blocks:
                raise TemplateSyntaxError(
                    f"unexpected {{{{/{keyword}}}}}", line=_line_of(text, offset)
                )
            block = blocks.pop()
            if block[0] != keyword:
                raise TemplateSyntaxError(
                    f"unexpected {{{{/{keyword}}}}}",
                    line=_line_of(text, offset),
                    detail=f", expected {{{{/{block[0]}}}}} to close {_block_tag(block)}"
                    f" from line {_line_of(text, block[2])}",
                )
            end = len(program)
            if block[4] is None:
                program[block[3]][2] = end
            else:
                program[block[4]][2] = end

    if blocks:
        block = blocks[-1]
        raise TemplateSyntaxError(f"unclosed {_block_tag(block)}", line=_line_of(text, block[2]))
    if literal_start < len(text):
        program.append([_TEXT, text[literal_start:], 0])
    return tuple(tuple(step) for step in program), frozenset(variables)


def _block_tag(block: list) -> str:
    return f"{{{{#{block[0]} {block[1]}}}}}"


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1
