"""Gateway adapters, chosen by an instance's ``provider``."""
from __future__ import annotations

from typing import Callable

from billing.errors import InvalidRequest
from billing.models import Instance
from billing.providers.base import Gateway, GatewayError, SendResult
from billing.providers.evolution import EvolutionGateway
from billing.providers.sandbox import SandboxGateway
from billing.providers.waha import WahaGateway

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


def check_provider(name: str) -> str:
    if name not in PROVIDERS:
        raise InvalidRequest(f"provider must be one of {', '.join(PROVIDERS)}, got '{name}'")
    return name


__all__ = ["ADAPTERS", "PROVIDERS", "Gateway", "GatewayError", "SendResult", "gateway_for", "check_provider"]
