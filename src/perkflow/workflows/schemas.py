"""Request shapes for workflows, dry runs and template installs; graphs are checked by `graph.parse_graph`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from perkflow.members.fields import MEMBER_ID_PATTERN

WORKFLOW_ID = r"^[A-Za-z0-9_\-]{1,64}$"
MEMBER_ID = MEMBER_ID_PATTERN
GRAPH_HELP = (
    '{"nodes": [{"id", "type", "params"}], "edges": [{"from", "to", "branch"}]} with one trigger; '
    "GET /api/v1/workflows/nodes lists the node types and their parameters"
)


class WorkflowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=WORKFLOW_ID)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    kind: Literal["general", "campaign"] = "general"
    program_id: str | None = Field(default=None, min_length=1, max_length=64)
    priority: int = Field(
        default=0, ge=-1000, le=1000, description="Lower runs first among workflows on a trigger"
    )
    starts_at: AwareDatetime | None = Field(default=None, description="Campaigns: first moment it runs")
    ends_at: AwareDatetime | None = Field(default=None, description="Campaigns: it stops at this moment")
    bonus_cap: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="Campaigns: most bonus points one member can get"
    )
    run_log: Literal["acted", "all"] = Field(
        default="acted",
        description="acted: store the runs that did something; all: also those stopped by a filter",
    )
    graph: dict[str, Any] = Field(description=GRAPH_HELP)


class WorkflowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    kind: Literal["general", "campaign"] | None = None
    program_id: str | None = Field(default=None, min_length=1, max_length=64)
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    bonus_cap: int | None = Field(default=None, ge=1, le=1_000_000_000)
    run_log: Literal["acted", "all"] | None = None
    graph: dict[str, Any] | None = Field(default=None, description=GRAPH_HELP)

    @model_validator(mode="after")
    def _no_nulls_where_a_value_is_needed(self) -> WorkflowUpdate:
        for name in ("name", "kind", "graph", "run_log"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class SampleEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The activity type; default: the trigger's first",
    )
    data: dict[str, Any] = Field(default_factory=dict)
    effects: dict[str, Any] = Field(
        default_factory=dict, description="e.g. {'points': 42} as ingestion noted"
    )
    occurred_at: AwareDatetime | None = None
    program: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _action_is_type(cls, data: Any) -> Any:
        # The events API calls it `action`; either name is accepted.
        if isinstance(data, dict) and "action" in data and "type" not in data:
            data = {**data, "type": data["action"]}
            data.pop("action")
        return data


class DryRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: str = Field(pattern=MEMBER_ID)
    event: SampleEvent | None = Field(
        default=None, description="Event and segment triggers: the triggering event"
    )
    member: dict[str, Any] | None = Field(
        default=None,
        description="A profile (email, birth_date, fields...) for a member that does not exist: it is "
        "enrolled for the dry run only",
    )
    version: int | None = Field(default=None, ge=1, le=1_000_000, description="Default: the latest version")
    at: AwareDatetime | None = Field(default=None, description="Date triggers: run as of this moment")


class TemplateInstall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict, description="The template's parameters")
    program_id: str | None = Field(default=None, min_length=1, max_length=64)
    activate: bool = Field(default=False, description="Activate it at once (templates install inactive)")
