"""HTTP routes for the reward catalogue, coupon pools and claiming."""

from __future__ import annotations

from typing import Any

from fastapi import Header

from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON
from perkflow.api.routing import api_router
from perkflow.codes.generator import CodeConfig, CodeConfigError
from perkflow.core.errors import InvalidInput
from perkflow.core.uow import UnitOfWork
from perkflow.members.schemas import MemberIdPath
from perkflow.rewards import service
from perkflow.rewards.schemas import ClaimBody, CouponGenerate, CouponUpload, RewardCreate, RewardUpdate

router = api_router(tags=["rewards"])


def _with_stock(uow: UnitOfWork, rewards: list[service.Reward]) -> list[dict[str, Any]]:
    stock = service.coupon_stock(uow, [r.id for r in rewards])
    return [r.to_public(stock[r.id] if r.uses_coupons else None) for r in rewards]


@router.get("/rewards", dependencies=[require("rewards:read")])
def list_rewards(ctx: Ctx, program: str | None = None) -> JSON:
    return JSON({"data": read(ctx, lambda uow: _with_stock(uow, service.list_rewards(uow, program)))})


@router.post("/rewards", status_code=201, dependencies=[require("rewards:write")])
def create_reward(body: RewardCreate, ctx: Ctx) -> JSON:
    spec = body.model_dump(mode="json")
    return JSON(
        write(ctx, lambda uow: _with_stock(uow, [service.create_reward(uow, spec)])[0]), status_code=201
    )


@router.get("/rewards/{reward_id}", dependencies=[require("rewards:read")])
def get_reward(reward_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: _with_stock(uow, [service.get_reward(uow, reward_id)])[0]))


@router.patch("/rewards/{reward_id}", dependencies=[require("rewards:write")])
def update_reward(reward_id: str, body: RewardUpdate, ctx: Ctx) -> JSON:
    changes = body.model_dump(mode="json", exclude_unset=True)
    return JSON(write(ctx, lambda uow: _with_stock(uow, [service.update_reward(uow, reward_id, changes)])[0]))


@router.post("/rewards/{reward_id}/coupons", status_code=201, dependencies=[require("rewards:write")])
def upload_coupons(reward_id: str, body: CouponUpload, ctx: Ctx) -> JSON:
    items = [c.model_dump() for c in body.coupons]
    added = write(ctx, lambda uow: service.add_coupons(uow, reward_id, items))
    return JSON({"added": added}, status_code=201)


@router.post(
    "/rewards/{reward_id}/coupons/generate", status_code=201, dependencies=[require("rewards:write")]
)
def generate_coupons(reward_id: str, body: CouponGenerate, ctx: Ctx) -> JSON:
    try:
        config = CodeConfig.build(
            length=body.length,
            charset=body.charset,
            prefix=body.prefix,
            postfix=body.postfix,
            pattern=body.pattern,
        )
    except CodeConfigError as exc:
        raise InvalidInput(str(exc), code="invalid_code_config") from exc
    made = write(
        ctx,
        lambda uow: service.generate_coupons(
            uow, reward_id, count=body.count, config=config, value=body.value, expires_at=body.expires_at
        ),
    )
    return JSON({"added": made}, status_code=201)


@router.post(
    "/members/{member_id}/rewards/{reward_id}/claim", status_code=201, dependencies=[require("members:write")]
)
def claim(
    member_id: MemberIdPath,
    reward_id: str,
    ctx: Ctx,
    body: ClaimBody | None = None,
    idempotency_key: str | None = Header(default=None, max_length=200),
) -> JSON:
    """Spend the reward's points and assign a coupon; `Idempotency-Key` makes retries safe."""
    free = body.free if body else False
    activity = write(
        ctx,
        lambda uow: service.claim_reward(
            uow, member_id=member_id, reward_id=reward_id, free=free, idempotency_key=idempotency_key
        ),
    )
    return JSON(activity.to_public(), status_code=201)
