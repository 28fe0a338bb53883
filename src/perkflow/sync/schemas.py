"""Request shapes of the integrations and deliveries APIs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from perkflow.core.errors import InvalidInput
from perkflow.members.fields import MEMBER_ID_PATTERN


class EventSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        max_length=100,
        description="Activity type, e.g. tier_up, checkout, reward_claim or a custom event type",
    )
    name: str | None = Field(
        default=None, max_length=255, description="Event name on the platform (default: type)"
    )


class SyncSettings(BaseModel):
    """Per-integration delivery settings; every value is checked here so the worker can trust them."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["delta", "full"] = Field(
        default="delta",
        description="delta: only values that differ from what the platform acknowledged; full: every field",
    )
    events: list[EventSelection] = Field(default_factory=list)
    flush_age_ms: int = Field(
        default=500, ge=0, le=3_600_000, description="Send a part-full batch once its oldest item is this old"
    )
    max_attempts: int = Field(default=8, ge=1, le=100, description="Then the item goes to the dead letters")
    backoff_base_s: float = Field(default=1.0, ge=0, le=3600)
    backoff_max_s: float = Field(default=300.0, ge=0, le=86_400)
    rate_limit_per_s: float | None = Field(
        default=None, gt=0, le=100_000, description="Requests per second; None: the connector's default"
    )
    braze_cap_mode: Literal["total", "per_array"] = Field(
        default="total", description="total: 75 objects per request; per_array: 75 per array (legacy)"
    )
    braze_max_objects: int = Field(default=75, ge=1, le=75)
    braze_array_max: int = Field(default=25, ge=1, le=1000, description="Your workspace's array length cap")
    bloomreach_max_commands: int = Field(default=50, ge=1, le=50)
    async_sync: bool = Field(
        default=True, description="Bloomreach: False pushes changes within the request, queues on failure"
    )
    sync_push_timeout_s: float = Field(
        default=3.0, gt=0, le=30, description="How long a push within the request may take in all"
    )


def checked_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Settings validated and completed with defaults, or a 422 naming each bad setting."""
    try:
        checked = SyncSettings.model_validate(values)
    except ValidationError as exc:
        problems = {".".join(str(p) for p in e["loc"]) or "settings": e["msg"] for e in exc.errors()}
        unknown = [k for k, e in zip(problems, exc.errors(), strict=True) if e["type"] == "extra_forbidden"]
        details: dict[str, Any] = {"errors": problems}
        if unknown:
            details["allowed"] = sorted(SyncSettings.model_fields)
        code = "unknown_setting" if unknown and len(unknown) == len(problems) else "invalid_setting"
        raise InvalidInput("some settings are invalid", code=code, details=details) from None
    settings = checked.model_dump()
    settings["events"] = [e.model_dump(exclude_none=True) for e in checked.events]
    return settings


class BrazeSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=500)


class BloomreachSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key_id: str = Field(min_length=1, max_length=500)
    api_secret: str = Field(min_length=1, max_length=500)


class WebhookSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=16, max_length=500)


SECRETS: dict[str, type[BaseModel]] = {
    "braze": BrazeSecrets,
    "bloomreach": BloomreachSecrets,
    "webhook": WebhookSecrets,
}
# Connection settings a credentials update may change, per kind (the hard ID is fixed once set).
CHANGEABLE_CONFIG: dict[str, frozenset[str]] = {
    "braze": frozenset({"instance_url", "app_id"}),
    "bloomreach": frozenset({"base_url", "project_token", "hard_id", "hard_id_field"}),
    "webhook": frozenset({"url"}),
}


def checked_secrets(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """The credentials of a kind, or a 422 naming what is missing; the values never appear in it."""
    try:
        return SECRETS[kind].model_validate(values).model_dump()
    except ValidationError as exc:
        problems = {".".join(str(p) for p in e["loc"]) or "secrets": e["msg"] for e in exc.errors()}
        raise InvalidInput(
            f"these are not {kind} credentials",
            code="invalid_credentials",
            details={"errors": problems, "expected": sorted(SECRETS[kind].model_fields)},
        ) from None


class BrazeConnect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="Braze", min_length=1, max_length=200)
    instance_url: str = Field(
        max_length=2000, description="Your Braze REST endpoint, e.g. https://rest.iad-01.braze.com"
    )
    api_key: str = Field(
        min_length=1, max_length=500, description="REST API key with the users.track permission"
    )
    app_id: str | None = Field(
        default=None, max_length=255, description="App identifier (optional, legacy for server events)"
    )
    program_id: str | None = None
    events: list[EventSelection] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


class BloomreachConnect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="Bloomreach", min_length=1, max_length=200)
    base_url: str = Field(
        max_length=2000, description="API base URL from Project settings > Access management > API"
    )
    project_token: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")
    api_key_id: str = Field(min_length=1, max_length=500)
    api_secret: str = Field(min_length=1, max_length=500)
    hard_id: str = Field(
        default="registered",
        min_length=1,
        max_length=255,
        description="Bloomreach hard ID name (case-sensitive); fixed once set",
    )
    hard_id_field: str = Field(
        default="email", description="Loyalty field sent as the hard ID; fixed once set"
    )
    async_sync: bool = Field(
        default=True, description="False: push changes within the request, queue on failure"
    )
    program_id: str | None = None
    events: list[EventSelection] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


class WebhookConnect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="Webhook", min_length=1, max_length=200)
    url: str = Field(max_length=2000)
    secret: str | None = Field(
        default=None, min_length=16, max_length=500, description="HMAC key; generated when omitted"
    )
    events: list[EventSelection] = Field(min_length=1)
    program_id: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(default_factory=dict, description="Connection settings to change")
    secrets: dict[str, Any] = Field(description="The full set of credentials")


class MappingRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loyalty_field: str = Field(min_length=1, max_length=100)
    remote_field: str = Field(min_length=1, max_length=255)


class Mappings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[MappingRow]


class Events(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventSelection]


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    integration_id: str | None = Field(default=None, max_length=64)
    item_ids: list[int] | None = Field(default=None, max_length=10_000)


class Resync(BaseModel):
    """Which members to queue again (all of the integration's program when `members` is left out)."""

    model_config = ConfigDict(extra="forbid")

    members: list[Annotated[str, StringConstraints(pattern=MEMBER_ID_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=10_000
    )
    forget_acknowledged: bool = Field(
        default=False,
        description="Also forget what the platform last acknowledged, so delta mode sends every field",
    )
