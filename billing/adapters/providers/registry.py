"""What a gateway provider declares about itself, and the registry of them.

Each provider module (``sandbox.py``, ``evolution.py``, ``waha.py``) ends with
one module-level ``PROVIDER = Provider(...)``: its name and label, its adapter,
the schema of its instance options, and its webhook (how a request proves it
comes from the instance's gateway, how ``instance show`` presents its URL,
what its secrets look like inside a URL). The package discovers those
declarations (``billing/adapters/providers/__init__.py``) and registers them
here; everything else (the admin API's schema, the CLI's choice, the webhook
routes, the access-log masking, ``instance show``, the OpenAPI document) reads
:data:`PROVIDERS`. Adding a provider is adding one module.

Webhook URLs have one shape for every provider: :data:`WEBHOOK_PATH`; the
instance's webhook secret in the path authenticates them (neither Evolution
nor WAHA Core signs its bodies).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from billing.adapters.providers.base import Gateway

#: Where a provider's gateway posts an instance's webhooks (also the route's shape).
WEBHOOK_PATH = "/webhooks/{provider}/{id}/{secret}"

#: What follows ``/webhooks/<provider>/<id>/`` in a URL by default: the secret
#: (and any event name appended after it). Never written to a log.
URL_SECRET_PATTERN = r"[^\s\"'<>]+"

#: What a masked secret is replaced with.
MASK = "***"


def drop_null_defaults(schema: dict, model: type) -> None:
    """JSON Schema hook: a field that may be absent is never null, so drop the
    ``default: null`` pydantic writes for it."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class GatewayOptions(BaseModel):
    """Base of every provider's option schema (an instance's ``options``).

    A key the provider does not read is refused, naming the ones it takes: a
    typo would otherwise be stored and silently ignored.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=drop_null_defaults)

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        unknown = sorted(str(key) for key in data if key not in cls.model_fields)
        if unknown:
            raise PydanticCustomError(
                "unknown_option", "unknown option {unknown}: this provider takes {known}",
                {"unknown": ", ".join(repr(key) for key in unknown), "known": ", ".join(cls.model_fields) or "none"},
            )
        return data


class WebhookBody(BaseModel):
    """Base of the models documenting a gateway's webhook envelope: gateways
    send more than we read, so extra fields are allowed (and ignored)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=drop_null_defaults)


@dataclass(frozen=True)
class WebhookDoc:
    """How one webhook URL is documented (OpenAPI operation).

    Parameters:
      summary: one line for people.
      description: what authenticates it and what it does.
    """

    summary: str
    description: str


@dataclass(frozen=True)
class SignedDelivery:
    """What a signed webhook request says about itself, to refuse replays.

    Parameters:
      sent_at: the times the request carries (naive UTC; the gateway's
        delivery time, the event's time), each checked against our clock;
        empty: it carries none.
      event_id: the event's id, stable across the gateway's retries ("": none).
    """

    sent_at: tuple[datetime, ...]
    event_id: str


@dataclass(frozen=True)
class BodySignature:
    """A signature of the raw body some of the provider's gateways send in a
    header, keyed with the instance's webhook secret.

    Parameters:
      accepts: ``(raw_body, headers, instance) -> bool`` on the secret URL:
        whether the request passes (a signature that comes must verify; one
        that does not come is fine unless the instance's options require it).
      verifies: ``(raw_body, headers, secret) -> bool``: a signature came and is right.
      error: the 401's message when it does not pass.
      headers: documents the signature headers on the secret URL.
      signed_url: documents the URL without the secret (``/webhooks/<name>/<id>``),
        which takes signed bodies only; None: there is no such URL.
      signed_headers: documents the headers on that URL (the signature is required there).
      delivery: ``(raw_body, headers) -> SignedDelivery | None``: the time and
        event id of a signed request (None when unsigned), so a signed
        request that is stale or a replay is refused; None: not checked.
    """

    accepts: Callable[[bytes, Mapping[str, str], Any], bool]
    verifies: Callable[[bytes, Mapping[str, str], str], bool]
    error: str
    headers: type[BaseModel]
    signed_url: Optional[WebhookDoc] = None
    signed_headers: Optional[type[BaseModel]] = None
    delivery: Optional[Callable[[bytes, Mapping[str, str]], Optional[SignedDelivery]]] = None


@dataclass(frozen=True)
class Webhook:
    """How the provider's gateway posts events to ``WEBHOOK_PATH``.

    A request is authenticated by the instance's secret in the URL (401 when
    it does not match), then by the :class:`BodySignature` if any; a body that
    names another instance or session than the URL's is refused (403). Bodies
    are parsed into our events by the adapter (``Gateway.parse_webhook`` and
    ``Gateway.foreign_source``).

    Parameters:
      doc: documents the secret URL.
      body: the pydantic model documenting the envelope (accepted whatever it holds).
      show: the lines ``billing instance show`` prints, formatted with ``url``
        (the webhook URL) and ``secret`` (the instance's webhook secret).
      by_event: documents ``<secret URL>/<event>`` (the gateway appends the
        event's name, handled like the plain URL); None: no such URL.
      signature: the body signature the gateway may send; None: never signs.
      secret_pattern: a regular expression of what follows
        ``/webhooks/<name>/<id>/`` in its URLs and must never be logged.
    """

    doc: WebhookDoc
    body: type[BaseModel]
    show: tuple[str, ...]
    by_event: Optional[WebhookDoc] = None
    signature: Optional[BodySignature] = None
    secret_pattern: str = URL_SECRET_PATTERN


@dataclass(frozen=True)
class Provider:
    """Everything about one gateway provider, declared in its module.

    Parameters:
      name: stored in ``Instance.provider`` and used in URLs and commands.
      label: the gateway's name for people.
      adapter: builds the :class:`Gateway` of an instance.
      options: the schema of an instance's ``options`` (bounds included);
        validated when an instance is created or updated.
      needs_url: whether an instance needs the gateway's base URL.
      webhook: how its gateway posts events; None: it posts none.
    """

    name: str
    label: str
    adapter: Callable[[Any], Gateway]
    options: type[GatewayOptions]
    needs_url: bool = True
    webhook: Optional[Webhook] = None

    def parse_options(self, options: Mapping[str, Any]) -> dict:
        """The options as stored: validated, normalized, only the keys given.

        Parameters:
          options: an instance's options as sent.

        Raises:
          pydantic.ValidationError: an unknown key, a wrong type, a value out of bounds.
        """
        return self.options.model_validate(options).model_dump(exclude_unset=True)


#: provider name -> its declaration: the one list of providers.
PROVIDERS: dict[str, Provider] = {}

#: The compiled masking expression, rebuilt when the registry changes.
_masking: dict[str, re.Pattern] = {}


def register(provider: Provider) -> Provider:
    """Add a provider's declaration (the package does this for each module's
    ``PROVIDER``); registering the same declaration again is harmless.

    Parameters:
      provider: the declaration.

    Raises:
      ValueError: another declaration already has the name, or the name
        cannot be one URL segment.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", provider.name):
        raise ValueError(f"provider name {provider.name!r} must be lowercase letters, digits, '-' or '_'")
    known = PROVIDERS.get(provider.name)
    if known is not None and known is not provider:
        raise ValueError(f"provider {provider.name!r} is declared twice")
    PROVIDERS[provider.name] = provider
    _masking.clear()
    return provider


def unregister(name: str) -> None:
    """Remove a provider (a test's throwaway one).

    Parameters:
      name: the provider's name; unknown names are ignored.
    """
    PROVIDERS.pop(name, None)
    _masking.clear()


def webhook_url(instance: Any, *, base_url: str = "") -> str:
    """The URL to configure as the instance's webhook on its gateway ("" for
    providers without webhooks).

    Parameters:
      instance: has ``provider``, ``id`` and ``webhook_secret``.
      base_url: where gateways reach this service (``PUBLIC_URL``); "" gives the path alone.
    """
    provider = PROVIDERS.get(instance.provider)
    if provider is None or provider.webhook is None:
        return ""
    path = WEBHOOK_PATH.format(provider=provider.name, id=instance.id, secret=instance.webhook_secret)
    return base_url.rstrip("/") + path


def webhook_lines(instance: Any, *, base_url: str) -> list[str]:
    """What ``billing instance show`` prints about the instance's webhook
    (nothing for providers without webhooks).

    Parameters:
      instance: has ``provider``, ``id`` and ``webhook_secret``.
      base_url: where gateways reach this service.
    """
    provider = PROVIDERS.get(instance.provider)
    if provider is None or provider.webhook is None:
        return []
    url = webhook_url(instance, base_url=base_url)
    return [line.format(url=url, secret=instance.webhook_secret) for line in provider.webhook.show]


def mask_webhook_secrets(text: str) -> str:
    """``text`` with the secret of every webhook URL in it replaced by ``***``
    (``/webhooks/waha/7/<secret>`` -> ``/webhooks/waha/7/***``).

    Parameters:
      text: a request path or any logged text.
    """
    if "/webhooks/" not in text:
        return text
    pattern = _masking.get("pattern")
    if pattern is None:
        pattern = _masking["pattern"] = _secret_expression()
    return pattern.sub(lambda match: next(group for group in match.groups() if group) + MASK, text)


def _secret_expression() -> re.Pattern:
    """One expression with a group per provider with webhooks: the part of its
    URL that may be logged, followed by its secret pattern."""
    branches = [
        rf"(/webhooks/{re.escape(p.name)}/\d+/)(?:{p.webhook.secret_pattern})"
        for p in PROVIDERS.values() if p.webhook is not None
    ]
    return re.compile("|".join(branches) or r"(?!)")


# --- pydantic types of the admin API's instance fields ---------------------------

def _registered(name: str) -> str:
    if name not in PROVIDERS:
        raise PydanticCustomError(
            "provider", "provider must be one of {known}, got '{name}'", {"known": ", ".join(PROVIDERS), "name": name}
        )
    return name


class _RegisteredNamesSchema:
    """The JSON Schema of a provider name: an enum of the registered providers,
    read when the schema is generated (the registry is the one list)."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict:
        return {"type": "string", "enum": list(PROVIDERS)}


def _options_for_provider(value: dict, info: ValidationInfo) -> dict:
    """Validate ``options`` against the schema of the model's ``provider``
    (errors nest under ``options``). A model without a valid provider (a
    patch) leaves it to the code that knows the instance's provider."""
    provider = PROVIDERS.get(info.data.get("provider", ""))
    return value if provider is None else provider.parse_options(value)


class _OptionSchemas:
    """The JSON Schema of ``options``: one of the registered providers' option
    schemas, read when the schema is generated."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict:
        models = list(dict.fromkeys(p.options for p in PROVIDERS.values()))
        # The generator itself (not the handler, which inlines) gives each model a $ref and a definition.
        generator = handler.generate_json_schema
        return {"anyOf": [generator.generate_inner(model.__pydantic_core_schema__) for model in models]}


#: A registered provider's name (admin API field; an enum in the OpenAPI document).
ProviderName = Annotated[str, AfterValidator(_registered), _RegisteredNamesSchema()]

#: An instance's options, validated against its provider's schema when the
#: model has a ``provider`` field declared before it.
ProviderOptions = Annotated[dict[str, Any], AfterValidator(_options_for_provider), _OptionSchemas()]
