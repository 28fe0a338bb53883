"""Request shapes for the Perkflow-native promotion routes (campaigns, generation, distributions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from perkflow.promotions.domain import MAX_AMOUNT


class CodeConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length: int | None = Field(default=None, ge=1, le=64)
    charset: str | None = Field(default=None, description="A preset name or the literal characters")
    prefix: str | None = Field(default=None, max_length=50)
    postfix: str | None = Field(default=None, max_length=50)
    pattern: str | None = Field(default=None, max_length=100, description="'#' marks a random character")


class DiscountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["AMOUNT", "PERCENT", "FIXED"]
    amount_off: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    percent_off: int | float | None = Field(default=None, gt=0, le=100)
    amount_limit: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    fixed_amount: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)


class ReferralIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int | None = Field(default=None, ge=1, le=10**9, description="Points the referrer earns")
    program_id: str | None = None
    campaign_id: str | None = Field(default=None, description="A campaign the referrer gets a code from")


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    campaign_type: Literal["DISCOUNT_COUPONS", "GIFT_VOUCHERS", "LOYALTY_PROGRAM", "REFERRAL_PROGRAM"] = (
        "DISCOUNT_COUPONS"
    )
    type: Literal["AUTO_UPDATE", "STATIC"] = "STATIC"
    discount: DiscountIn | None = None
    gift_amount: int | None = Field(
        default=None, ge=1, le=MAX_AMOUNT, description="Minor units per gift card"
    )
    redemption_quantity: int | None = Field(
        default=None, ge=1, le=MAX_AMOUNT, description="Uses per code; none = unlimited"
    )
    code_config: CodeConfigIn | None = None
    vouchers_count: int = Field(default=0, ge=0, le=10_000_000)
    start_date: AwareDatetime | None = None
    expiration_date: AwareDatetime | None = None
    max_redemptions: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    max_redemptions_per_customer: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    min_order_amount: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    segment_id: str | None = Field(default=None, max_length=64)
    join_once: bool = False
    active: bool = True
    program_id: str | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    referral: ReferralIn | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class CampaignUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool | None = None
    description: str | None = None
    start_date: AwareDatetime | None = None
    expiration_date: AwareDatetime | None = None
    max_redemptions: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    max_redemptions_per_customer: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    min_order_amount: int | None = Field(default=None, ge=0, le=MAX_AMOUNT)
    segment_id: str | None = Field(default=None, max_length=64)


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=10_000_000)


class GiftCredits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=1, le=MAX_AMOUNT)
    source_id: str | None = Field(default=None, max_length=300)


class DistributionAttributes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=255)
    value: str | None = Field(default=None, max_length=255)
    expiry: str | None = Field(default=None, max_length=255)
    wallet_url: str | None = Field(default=None, max_length=255)


class DistributionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    integration_id: str = Field(min_length=1, max_length=64)
    campaign_id: str = Field(min_length=1, max_length=64)
    trigger: str = Field(description="manual, or the activity type that triggers it")
    segment_id: str | None = Field(default=None, max_length=64)
    attributes: DistributionAttributes
    active: bool = True
