"""Gateway providers: each module of this package that declares a module-level
``PROVIDER`` (a :class:`~billing.adapters.providers.registry.Provider`) is
registered when the package is imported, so adding a provider is adding one
module. The rest of the code reads the registry (``PROVIDERS``) and reaches
an instance's gateway through :func:`gateway_for`.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from billing.adapters.providers.base import ConnectionStatus, Gateway, GatewayError, LookupUnavailable, SendResult
from billing.adapters.providers.registry import (
    PROVIDERS,
    Provider,
    ProviderName,
    ProviderOptions,
    mask_webhook_secrets,
    register,
    unregister,
    webhook_lines,
    webhook_url,
)
from billing.errors import InvalidRequest

#: The module-level name under which a provider module declares itself.
DECLARATION = "PROVIDER"


def _discover() -> None:
    """Register the ``PROVIDER`` of every module of this package, in name order."""
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        declaration = getattr(module, DECLARATION, None)
        if isinstance(declaration, Provider):
            register(declaration)


def gateway_for(instance: Any) -> Gateway:
    """The adapter that talks to ``instance``'s gateway.

    Raises:
      GatewayError: no adapter is registered for the instance's provider (permanent).
    """
    provider = PROVIDERS.get(instance.provider)
    if provider is None:
        raise GatewayError(f"no adapter for provider '{instance.provider}' yet", transient=False)
    return provider.adapter(instance)


def provider_of(name: str) -> Provider:
    """The registered provider called ``name``.

    Raises:
      InvalidRequest: no provider has that name.
    """
    provider = PROVIDERS.get(name)
    if provider is None:
        raise InvalidRequest(f"provider must be one of {', '.join(PROVIDERS)}, got '{name}'")
    return provider


def check_options(name: str, options: Mapping[str, Any] | None) -> dict:
    """An instance's options validated against its provider's schema, as stored.

    Parameters:
      name: the instance's provider.
      options: the options as sent (None: none).

    Raises:
      InvalidRequest: an unknown provider, an unknown option, a wrong type or
        a value out of bounds; one ``{field, message}`` per problem.
    """
    provider = provider_of(name)
    try:
        return provider.parse_options(options or {})
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(part) for part in ("options", *error["loc"])), "message": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0]
        raise InvalidRequest(f"invalid {name} options: {first['field']}: {first['message']}", errors=errors) from None


_discover()

__all__ = [
    "PROVIDERS", "ConnectionStatus", "Gateway", "GatewayError", "LookupUnavailable", "Provider",
    "ProviderName", "ProviderOptions", "SendResult", "check_options", "gateway_for",
    "mask_webhook_secrets", "provider_of", "register", "unregister", "webhook_lines", "webhook_url",
]
