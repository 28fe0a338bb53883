"""Request and response shapes of the members API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from perkflow.members.fields import MEMBER_ID_PATTERN, MEMBER_ID_RULE

MemberId = Field(pattern=MEMBER_ID_PATTERN, description=f"The loyalty member id: {MEMBER_ID_RULE}")
# The same rule on URL paths: a malformed id is a 422 naming the rule, not a lookup that finds nothing.
MemberIdPath = Annotated[
    str, Path(pattern=MEMBER_ID_PATTERN, description=f"The loyalty member id: {MEMBER_ID_RULE}")
]


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_source: str = Field(min_length=1, max_length=100, examples=["customer_id"])
    external_source_id: str = Field(min_length=1, max_length=255, examples=["556644557788334412"])


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = MemberId
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    status: Literal["active", "blocked"] = "active"
    fields: dict[str, Any] = Field(
        default_factory=dict, description="Custom loyalty fields from the catalogue"
    )
    identities: list[Identity] = Field(default_factory=list)


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    status: Literal["active", "blocked"] | None = None
    fields: dict[str, Any] = Field(default_factory=dict, description="Fields to set; null removes a field")


class ProgramStanding(BaseModel):
    program_id: str
    status: str
    opted_in: bool
    opted_in_at: datetime | None
    opted_out_at: datetime | None
    tier: str | None
    tier_id: str | None
    tier_since: datetime | None
    points: dict[str, Any]


class MemberOut(BaseModel):
    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    birth_date: date | None
    status: str
    fields: dict[str, Any]
    identities: list[Identity]
    programs: list[ProgramStanding]
    created_at: datetime
    updated_at: datetime


class MemberPage(BaseModel):
    data: list[MemberOut]
    next_cursor: str | None


class FieldCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    type: Literal[
        "string", "integer", "float", "boolean", "date", "datetime", "array", "object", "array_of_objects"
    ]
    label: str | None = None
    description: str = ""
