"""Request shapes of the integrations and deliveries APIs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        description="Activity type, e.g. tier_up, checkout, reward_claim or a custom event type"
    )
    name: str | None = Field(
        default=None, max_length=255, description="Event name on the platform (default: type)"
    )


class BrazeConnect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "Braze"
    instance_url: str = Field(description="Your Braze REST endpoint, e.g. https://rest.iad-01.braze.com")
    api_key: str = Field(min_length=1, description="REST API key with the users.track permission")
    app_id: str | None = Field(
        default=None, description="App identifier (optional, legacy for server events)"
    )
    program_id: str | None = None
    events: list[EventSelection] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


class BloomreachConnect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "Bloomreach"
    base_url: str = Field(description="API base URL from Project settings > Access management > API")
    project_token: str = Field(min_length=1)
    api_key_id: str = Field(min_length=1)
    api_secret: str = Field(min_length=1)
    hard_id: str = Field(
        default="registered", min_length=1, description="Bloomreach hard ID name (case-sensitive)"
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

    name: str = "Webhook"
    url: str
    secret: str | None = Field(default=None, min_length=16, description="HMAC key; generated when omitted")
    events: list[EventSelection] = Field(min_length=1)
    program_id: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(default_factory=dict, description="Connection settings to change")
    secrets: dict[str, Any] = Field(description="The full set of credentials")


class MappingRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loyalty_field: str
    remote_field: str


class Mappings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[MappingRow]


class Events(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventSelection]


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    integration_id: str | None = None
    item_ids: list[int] | None = None
