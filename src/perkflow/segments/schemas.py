"""Request shapes of the segments API (responses are built by the service as plain dicts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RULES_DESCRIPTION = (
    "A condition group {match: all|any, conditions: [...]}; a condition is {attribute, operator, value} "
    "and may itself be a group. Attributes: member attributes, custom fields, tier, points_balance, "
    "points_pending, points_earned (lifetime), opted_in, activity.<type>.count, activity.<type>.last_at."
)


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    kind: Literal["rule", "static"] | None = Field(
        default=None,
        description="rule (members follow the rules) or static (added by API); from rules if omitted",
    )
    rules: dict[str, Any] | None = Field(default=None, description=RULES_DESCRIPTION)
    program_id: str | None = Field(
        default=None, max_length=64, description="The program whose standing the rules read (default program)"
    )
    generate_webhook_secret: bool = Field(
        default=False, description="Create a secret for signed inbound webhooks (returned once)"
    )


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    rules: dict[str, Any] | None = Field(default=None, description=RULES_DESCRIPTION)
    program_id: str | None = Field(default=None, max_length=64)


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: dict[str, Any] = Field(description=RULES_DESCRIPTION)
    program_id: str | None = Field(default=None, max_length=64)
    sample_size: int = Field(default=10, ge=0, le=100)
    max_members: int = Field(default=100_000, ge=1, le=10_000_000)
    max_seconds: float = Field(default=10.0, gt=0, le=60)


class SweepBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description="Re-evaluate every rule segment, not only those due")
    max_seconds: float = Field(default=10.0, gt=0, le=300)
