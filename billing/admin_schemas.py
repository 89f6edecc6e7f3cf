"""Request bodies and query parameters of the admin API (pydantic), the
single source of its validation and of its OpenAPI document."""
from __future__ import annotations

from datetime import date, datetime
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from billing.adapters.providers import ProviderName, ProviderOptions
from billing.domain.message_types import OVERDUE
from billing.schemas import MessageTypeName, Scalar

Strategy = Literal["random", "sequential", "weighted"]
Seconds = Union[StrictInt, StrictFloat]

#: Counts (caps, limits) stop well below the database's 32-bit integers.
MAX_COUNT = 10_000_000

#: Row ids stop at the database's 64-bit integers.
MAX_ID = 2**63 - 1

#: What an instance's url may be (the outbound guard checks it; 422 otherwise).
GATEWAY_URL_DESCRIPTION = (
    "The gateway's base URL: http:// or https://, a host that resolves to public addresses, or to addresses "
    "inside the operator's GATEWAY_PRIVATE_NETWORKS (422 otherwise)."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ApiKeyCreate(_Strict):
    name: StrictStr = Field("", max_length=120, description="A label for people.")
    types: Optional[list[MessageTypeName]] = Field(
        None, description="Types the key may send (default: every type, those declared later included)."
    )
    allowed_ips: list[StrictStr] = Field(default_factory=list, description="Addresses or CIDRs (default: any).")
    expires_at: Optional[datetime] = Field(None, description="When the key stops working (UTC).")
    hourly_limit: StrictInt = Field(0, ge=0, le=MAX_COUNT, description="Requests per hour (0: the tenant's default).")


class VariationIn(_Strict):
    text: StrictStr = Field(min_length=1, max_length=4_096)
    weight: StrictInt = Field(1, ge=1, le=1_000)


class TemplateCreate(_Strict):
    type: MessageTypeName
    name: StrictStr = Field(min_length=1, max_length=120)
    strategy: Strategy = "random"
    variations: list[Union[StrictStr, VariationIn]] = Field(min_length=1, max_length=50)


class TemplatePatch(_Strict):
    name: Optional[StrictStr] = Field(None, min_length=1, max_length=120)
    strategy: Optional[Strategy] = None
    is_active: Optional[StrictBool] = None
    variations: Optional[list[Union[StrictStr, VariationIn]]] = Field(
        None, min_length=1, max_length=50, description="Replaces every variation."
    )


class PreviewRequest(_Strict):
    text: Optional[StrictStr] = Field(None, max_length=4_096, description="A template text to try.")
    template_id: Optional[StrictInt] = Field(None, ge=1, le=MAX_ID, description="Or a stored template: every variation is rendered.")
    type: MessageTypeName = Field(OVERDUE.name, description="Decides the computed due-date variables' wording.")
    variables: dict[str, Scalar] = Field(default_factory=dict, description="Sample contact fields.")


class _Pace(_Strict):
    messages_per_minute: Optional[Seconds] = Field(None, gt=0, le=60_000)
    min_interval: Optional[Seconds] = Field(None, gt=0, le=86_400)
    max_interval: Optional[Seconds] = Field(None, gt=0, le=86_400)
    rest_every: Optional[StrictInt] = Field(None, ge=0, le=MAX_COUNT)
    rest_seconds: Optional[Seconds] = Field(None, ge=0, le=86_400)
    daily_cap: Optional[StrictInt] = Field(None, ge=0, le=MAX_COUNT)
    warmup_days: Optional[StrictInt] = Field(None, ge=0, le=365)


class InstanceCreate(_Pace):
    name: StrictStr = Field(min_length=1, max_length=120)
    provider: ProviderName = Field(description="The gateway provider (the registered ones).")
    url: StrictStr = Field("", max_length=500, description=GATEWAY_URL_DESCRIPTION)
    token: StrictStr = Field("", max_length=500)
    # Declared after provider: its schema is the provider's (unknown keys and out-of-bounds values are refused).
    options: ProviderOptions = Field(default_factory=dict, description="The provider's adapter options.")


class InstancePatch(_Pace):
    url: Optional[StrictStr] = Field(None, max_length=500, description=GATEWAY_URL_DESCRIPTION)
    token: Optional[StrictStr] = Field(None, max_length=500)
    is_active: Optional[StrictBool] = None
    options: Optional[ProviderOptions] = Field(
        None, description="Replaces every adapter option; validated against the instance's provider."
    )


class SettingsPatch(_Strict):
    timezone: Optional[StrictStr] = Field(None, max_length=64)
    business_hours: Optional[StrictStr] = Field(None, max_length=500)
    holidays: Optional[StrictStr] = Field(None, max_length=20)
    extra_holidays: Optional[list[StrictStr]] = None
    recipient_timezone: Optional[StrictBool] = None
    daily_cap: Optional[StrictInt] = Field(None, ge=0, le=MAX_COUNT)
    max_attempts: Optional[StrictInt] = Field(None, ge=1, le=20)
    allow_private_callbacks: Optional[StrictBool] = None
    auto_reply: Optional[StrictBool] = None
    api_hourly_limit: Optional[StrictInt] = Field(None, ge=1, le=1_000_000)
    daily_message_limit: Optional[StrictInt] = Field(None, ge=0, le=MAX_COUNT)


class CeilingsPatch(_Strict):
    """The operator's ceilings on a tenant's limits; null: the default ceiling."""

    api_hourly_limit: Optional[StrictInt] = Field(None, ge=1, le=MAX_COUNT, description="Highest default requests per key per hour.")
    key_hourly_limit: Optional[StrictInt] = Field(None, ge=1, le=MAX_COUNT, description="Highest requests per hour of one key.")
    daily_message_limit: Optional[StrictInt] = Field(None, ge=1, le=MAX_COUNT, description="Highest contacts accepted per day.")
    daily_cap: Optional[StrictInt] = Field(None, ge=1, le=MAX_COUNT, description="Highest messages per day across instances.")


class TenantCreate(_Strict):
    name: StrictStr = Field(min_length=1, max_length=120)
    timezone: StrictStr = Field("America/Sao_Paulo", max_length=64)


class CampaignsQuery(_Strict):
    type: Optional[MessageTypeName] = None
    status: Optional[Literal["pending", "processing", "paused", "instance_down", "completed", "cancelled"]] = None
    external_id: Optional[StrictStr] = Field(None, max_length=255)
    created_from: Optional[date] = None
    created_to: Optional[date] = None
    page: int = Field(1, ge=1, le=MAX_COUNT)
    page_size: int = Field(50, ge=1, le=500)


class StatsQuery(_Strict):
    date_from: Optional[date] = Field(None, alias="from", description="First day (UTC), default 30 days ago.")
    date_to: Optional[date] = Field(None, alias="to", description="Last day (UTC), default today.")


class CallbacksQuery(_Strict):
    status: Optional[Literal["pending", "delivered", "failed", "disabled"]] = None
    limit: int = Field(50, ge=1, le=500)
