"""Request bodies, validated by pydantic; the OpenAPI document is generated
from these same classes, so the contract has one source.

Structural problems (a field of the wrong type, a missing ``telefone``) reject
the whole request with the contact's index and field. Problems with the data
itself (a phone that is not a number, a date that does not exist, a variable
the template needs) reject only that contact, with its reason.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictStr, ValidationError, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from billing.domain import message_types
from billing.errors import InvalidRequest


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _scalar(value):
    # A template variable is printed in a WhatsApp message: lists and objects cannot be.
    if value is None or isinstance(value, (str, int, float, bool)):
        return _strip(value)
    raise ValueError("must be text, a number, true/false or null")


def _amount(value):
    if value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool)):
        return _strip(value)
    raise ValueError("must be a number or text")


def _phone(value):
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return _strip(value)
    raise ValueError("must be text or a number")


# One validator per kind gives one clear error per field (a Union would give
# one error per member), and the JSON Schema still says what is accepted.
Scalar = Annotated[Any, PlainValidator(_scalar), WithJsonSchema({"type": ["string", "number", "boolean", "null"]})]
Amount = Annotated[Any, PlainValidator(_amount), WithJsonSchema({"type": ["string", "number", "null"]})]
Phone = Annotated[Any, PlainValidator(_phone), WithJsonSchema({"type": ["string", "integer"]})]



def _message_type(value):
    # Checked against the registry when a request is validated, not when this
    # module is imported: a type declared later is accepted too.
    if isinstance(value, str) and value in message_types.MESSAGE_TYPES:
        return value
    quoted = [f"'{name}'" for name in message_types.names()]
    expected = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    # The error a Literal of the names gives, so the answer reads the same.
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


class _DeclaredNamesSchema:
    """The JSON Schema of a message type's name: every declared name as an
    enum, read when the schema is generated, so OpenAPI lists them all."""

    def __get_pydantic_json_schema__(self, schema, handler) -> dict:
        return {"type": "string", "enum": list(message_types.names())}


#: A declared message type's name (billing/domain/message_types.py), as a field.
MessageTypeName = Annotated[str, PlainValidator(_message_type), _DeclaredNamesSchema()]

MAX_EXTERNAL_ID_LENGTH = 255
MAX_URL_LENGTH = 2_000
MAX_TEXT_LENGTH = 4_096


class ContactIn(BaseModel):
    """One customer to notify. Fields beyond these become template variables."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)
    __pydantic_extra__: dict[str, Scalar]

    telefone: Phone = Field(
        description="Phone: E.164 (+5511987654321) or Brazilian national form ((11) 98765-4321)."
    )
    nome_cliente: Optional[StrictStr] = Field(None, max_length=255, description="Customer name.")
    nome: Optional[StrictStr] = Field(None, max_length=255, description="Alias of nome_cliente.")
    valor: Amount = Field(None, description="Amount: a number is shown as R$ 1.234,56; text is kept.")
    valor_total: Amount = Field(None, description="Total amount (same rules as valor).")
    data_vencimento: Optional[StrictStr] = Field(None, description="Due date, YYYY-MM-DD or DD/MM/YYYY.")
    codigo_pix: Optional[StrictStr] = Field(None, max_length=1_024, description="PIX copy-and-paste code.")
    link_pagamento: Optional[StrictStr] = Field(None, max_length=MAX_URL_LENGTH, description="Payment link.")
    numero_fatura: Optional[StrictStr] = Field(None, max_length=120, description="Invoice number.")
    titulo: Optional[StrictStr] = Field(None, max_length=200, description="Title (notifications).")
    mensagem: Optional[StrictStr] = Field(None, max_length=MAX_TEXT_LENGTH, description="Free text (notifications).")


class SendRequest(BaseModel):
    """The body of ``POST send/<type>``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_id: StrictStr = Field(
        min_length=1, max_length=MAX_EXTERNAL_ID_LENGTH, description="The caller's id; unique per tenant."
    )
    contacts: list[ContactIn] = Field(min_length=1, description="The customers to notify.")
    callback_url: Optional[StrictStr] = Field(
        None, max_length=MAX_URL_LENGTH, description="Where contact events are posted (http or https)."
    )
    metadata: Optional[dict[str, Any]] = Field(None, description="Kept with the campaign and echoed in callbacks.")
    template_type: Optional[MessageTypeName] = Field(
        None, description="Accepted for compatibility; must match the URL's type when given."
    )

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value


class ControlRequest(BaseModel):
    """The body of ``POST queue/<id>/control``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: Literal["pause", "resume", "cancel"]
    reason: Optional[StrictStr] = Field(None, max_length=255, description="Shown as pause_reason.")


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "body"


def parse(model: type[BaseModel], payload: Any) -> BaseModel:
    """Validate ``payload`` against ``model``.

    Raises:
      InvalidRequest: with one ``{field, message}`` (and ``index`` for a
        contact) per problem.
    """
    if isinstance(payload, model):
        return payload
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = error["loc"]
            item = {"field": _location(loc), "message": error["msg"]}
            if len(loc) >= 2 and loc[0] == "contacts" and isinstance(loc[1], int):
                item["index"] = loc[1]
            errors.append(item)
        first = errors[0]
        raise InvalidRequest(f"invalid request: {first['field']}: {first['message']}", errors=errors) from None
