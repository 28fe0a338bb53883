"""Request shapes for programs, earning rules and tiers, with the checks their combinations need."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from perkflow.core.limits import MAX_AMOUNT, MAX_THRESHOLD


class ExpiryPolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "rolling", "end_of_period"] = "none"
    days: int | None = Field(default=None, ge=1, le=36_500)
    period: Literal["month", "quarter", "year"] | None = None
    periods_after: int = Field(default=0, ge=0, le=10)

    @model_validator(mode="after")
    def _consistent(self) -> ExpiryPolicyIn:
        if self.kind == "rolling" and self.days is None:
            raise ValueError("a rolling expiry needs `days`")
        if self.kind == "end_of_period" and self.period is None:
            raise ValueError("an end_of_period expiry needs `period` (month, quarter or year)")
        return self


class EarningRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: str = Field(min_length=1, max_length=200)
    event: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="The action that earns, e.g. checkout")
    kind: Literal["per_amount", "fixed"]
    points: int = Field(ge=1, le=1_000_000)
    amount_unit: int | None = Field(
        default=None, ge=1, le=MAX_AMOUNT, description="Minor units per `points` (per_amount)"
    )
    amount_field: str = "total"
    min_amount: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    pending_days: int = Field(default=0, ge=0, le=365)
    conditions: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    once_per: Literal["day", "year", "lifetime"] | None = None
    active: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> EarningRuleIn:
        if self.kind == "per_amount" and self.amount_unit is None:
            raise ValueError("a per_amount rule needs `amount_unit` (minor units per `points`)")
        return self


class TierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    name: str = Field(min_length=1, max_length=100)
    threshold: int = Field(ge=0, le=MAX_THRESHOLD, description="Qualifying points needed")


class ProgramCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])
    expiry_policy: ExpiryPolicyIn = Field(default_factory=ExpiryPolicyIn)
    tier_window_days: int | None = Field(default=None, ge=1, le=3650, description="None: lifetime points")
    is_default: bool = False
    earning_rules: list[EarningRuleIn] = Field(default_factory=list)
    tiers: list[TierIn] = Field(default_factory=list)


class ProgramUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    expiry_policy: ExpiryPolicyIn | None = None
    tier_window_days: int | None = Field(default=None, ge=1, le=3650)
    is_default: bool | None = None
    status: Literal["active", "archived"] | None = None


class TiersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: list[TierIn]


class RuleActive(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=False)
