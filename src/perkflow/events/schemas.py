"""Request and response shapes of the events API, as published in the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EventBody(BaseModel):
    """One member event, shaped like Antavo's events API."""

    model_config = ConfigDict(extra="forbid")

    customer: str = Field(description="The loyalty member id", examples=["member-1"])
    action: str = Field(description="A built-in action (opt_in, checkout, ...) or a custom event type")
    data: dict[str, Any] = Field(default_factory=dict, description="The action's attributes")
    id: str | None = Field(default=None, description="Your event id: a repeat returns the first result")
    program: str | None = Field(default=None, description="Program id; the default program when omitted")
    occurred_at: datetime | None = Field(default=None, description="When it happened (ISO-8601 with offset)")


class BulkEventsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(description="Up to 1,000 events, each shaped like a single event")


class EventResult(BaseModel):
    id: str
    seq: int
    type: str
    member_id: str
    program_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    source: str
    event_id: str | None
    points_delta: int
    pending_delta: int
    data: dict[str, Any]
    effects: dict[str, Any]


class BulkItemResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event: EventResult | None = None
    error: dict[str, Any] | None = None


class BulkResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BulkItemResult]


class EventTypeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict, description="attribute name -> field type")
