"""Gateway adapters, chosen by an instance's ``provider``."""
from __future__ import annotations

from typing import Callable

from billing.errors import InvalidRequest
from billing.adapters.models import Instance
from billing.adapters.providers.base import ConnectionStatus, Gateway, GatewayError, LookupUnavailable, SendResult
from billing.adapters.providers.evolution import EvolutionGateway
from billing.adapters.providers.sandbox import SandboxGateway
from billing.adapters.providers.waha import WahaGateway

#: provider name -> adapter factory. Real gateways register here too.
ADAPTERS: dict[str, Callable[[Instance], Gateway]] = {
    "sandbox": SandboxGateway,
    "evolution": EvolutionGateway,
    "waha": WahaGateway,
}

#: Every provider an instance may name (adapters for the real gateways are
#: added as they are built; an instance of one without an adapter cannot send).
PROVIDERS = ("sandbox", "evolution", "waha")


def gateway_for(instance: Instance) -> Gateway:
    """The adapter that talks to ``instance``'s gateway."""
    factory = ADAPTERS.get(instance.provider)
    if factory is None:
        raise GatewayError(f"no adapter for provider '{instance.provider}' yet", transient=False)
    return factory(instance)


#: Where each provider's gateway posts its webhooks; the secret in the path
#: authenticates them (neither Evolution nor WAHA Core signs its bodies).
WEBHOOK_PATHS = {
    "evolution": "/webhooks/evolution/{id}/{secret}",
    "waha": "/webhooks/waha/{id}/{secret}",
}


def webhook_url(instance: Instance, *, base_url: str = "") -> str:
    """The URL to configure as the instance's webhook on its gateway ("" for
    providers without webhooks).

    Parameters:
      instance: has ``provider``, ``id`` and ``webhook_secret``.
      base_url: where gateways reach this service (``PUBLIC_URL``); "" gives the path alone.
    """
    template = WEBHOOK_PATHS.get(instance.provider)
    if template is None:
        return ""
    return base_url.rstrip("/") + template.format(id=instance.id, secret=instance.webhook_secret)


def check_provider(name: str) -> str:
    if name not in PROVIDERS:
        raise InvalidRequest(f"provider must be one of {', '.join(PROVIDERS)}, got '{name}'")
    return name


__all__ = [
    "ADAPTERS", "PROVIDERS", "WEBHOOK_PATHS", "ConnectionStatus", "Gateway", "GatewayError", "LookupUnavailable",
    "SendResult", "gateway_for", "check_provider", "webhook_url",
]
