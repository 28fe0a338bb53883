"""Request shapes for rewards, coupon pools and claims."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from perkflow.core.limits import MAX_AMOUNT, MAX_POINTS, storable_utc

Expiry = Annotated[AwareDatetime, AfterValidator(storable_utc)]

MAX_CODE_LENGTH = 100  # the coupons.code and vouchers.code columns


def is_code(code: str) -> bool:
    """A code a person can read out and type back: no control characters, no surrounding spaces."""
    return 1 <= len(code) <= MAX_CODE_LENGTH and code == code.strip() and all(ch.isprintable() for ch in code)


def _code(code: str) -> str:
    if not is_code(code):
        raise ValueError("a code has no control characters and no leading or trailing spaces")
    return code


class RewardCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    program_id: str | None = None
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    points_cost: int = Field(ge=0, le=MAX_POINTS)
    uses_coupons: bool = False
    active: bool = True


class RewardUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None
    points_cost: int | None = Field(default=None, ge=0, le=MAX_POINTS)
    active: bool | None = None


class CouponIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, AfterValidator(_code)] = Field(min_length=1, max_length=MAX_CODE_LENGTH)
    value: int | None = Field(
        default=None, ge=0, le=MAX_AMOUNT, description="Minor units of the program currency"
    )
    expires_at: Expiry | None = None


class CouponUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    coupons: list[CouponIn] = Field(min_length=1, max_length=100_000)


class CouponGenerate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=1_000_000)
    length: int | None = Field(default=None, ge=1, le=64)
    charset: str | None = Field(default=None, description="A preset name or the literal characters")
    prefix: str | None = None
    postfix: str | None = None
    pattern: str | None = Field(default=None, description="'#' marks a random character, e.g. GIFT-####")
    value: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    expires_at: Expiry | None = None


class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    free: bool = Field(default=False, description="Give the reward without spending points")
