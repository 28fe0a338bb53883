"""The Voucherify-compatible routes under /v1: campaigns, publications, validations, redemptions,
rollbacks, vouchers, gift and loyalty card balances, loyalty programs and rewards."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from perkflow.api.deps import authenticate, get_ctx
from perkflow.api.responses import JSON
from perkflow.auth.service import Principal
from perkflow.core import groupcommit, transactions
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.promotions import service
from perkflow.promotions.domain import Order, RuleViolation
from perkflow.promotions.service import PromotionError, Redeemable
from perkflow.voucherify import shapes
from perkflow.voucherify.parsing import read_list_payload, read_payload

router = APIRouter(prefix="/v1", tags=["voucherify"])
T = TypeVar("T")
VOUCHER_TO_CAMPAIGN = {
    "DISCOUNT_VOUCHER": "DISCOUNT_COUPONS",
    "GIFT_VOUCHER": "GIFT_VOUCHERS",
    "LOYALTY_CARD": "LOYALTY_PROGRAM",
}


def scope(name: str) -> Any:
    """Authenticate (X-App-Id / X-App-Token or Bearer) and check one scope, on the event loop: a cached
    key costs microseconds, cheaper than a hop to the thread pool."""

    async def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        principal.require(name)
        return principal

    return Depends(dependency)


async def run_write(ctx: AppContext, work: Callable[[UnitOfWork], T]) -> T:
    return await run_in_threadpool(transactions.run, ctx, work)


async def run_read(ctx: AppContext, work: Callable[[UnitOfWork], T]) -> T:
    return await run_in_threadpool(transactions.run, ctx, work, write=False)


def _ctx(request: Request) -> AppContext:
    return get_ctx(request)


def _str(payload: dict[str, Any], key: str, *, max_length: int = 300) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise PromotionError("invalid_payload", f"{key} must be a string of at most {max_length} characters")
    return value


def _dict(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PromotionError("invalid_payload", f"{key} must be an object")
    return value


def _date(value: Any, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PromotionError("invalid_payload", f"{name} must be an ISO-8601 date-time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PromotionError("invalid_payload", f"{name} must be an ISO-8601 date-time") from exc
    if moment.tzinfo is None:
        raise PromotionError("invalid_payload", f"{name} needs a time zone (e.g. Z)")
    return service.checked_date(moment, name)


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise PromotionError("invalid_query_params", f"{name} must be an integer between {low} and {high}")
    return int(raw)


def campaign_spec(payload: dict[str, Any], *, loyalty: bool = False) -> dict[str, Any]:
    """A Voucherify campaign request as a Perkflow campaign spec. Perkflow-only settings (per-customer
    limit, minimum order, segment, program, referral reward) go in an optional `perkflow` object."""
    voucher = _dict(payload, "voucher")
    extra = _dict(payload, "perkflow")
    voucher_type = voucher.get("type") or ("LOYALTY_CARD" if loyalty else None)
    if voucher_type is not None and (
        not isinstance(voucher_type, str) or voucher_type not in VOUCHER_TO_CAMPAIGN
    ):
        raise PromotionError(
            "invalid_campaign", f"voucher.type must be one of {', '.join(VOUCHER_TO_CAMPAIGN)}"
        )
    campaign_type = payload.get("campaign_type") or VOUCHER_TO_CAMPAIGN.get(
        voucher_type or "", "DISCOUNT_COUPONS"
    )
    if loyalty and campaign_type != "LOYALTY_PROGRAM":
        raise PromotionError("invalid_campaign", "a loyalty program has campaign_type LOYALTY_PROGRAM")
    gift = _dict(voucher, "gift")
    redemption = _dict(voucher, "redemption")
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise PromotionError("invalid_payload", "metadata must be an object")
    vouchers_count = payload.get("vouchers_count")
    if vouchers_count is not None and (
        isinstance(vouchers_count, bool) or not isinstance(vouchers_count, int)
    ):
        raise PromotionError("invalid_campaign", "vouchers_count must be an integer")
    # The native API's schema checks these types; here they are checked by hand, never ignored.
    description = payload.get("description")
    if description is not None and not isinstance(description, str):
        raise PromotionError("invalid_campaign", "description must be a string")
    join_once = payload.get("join_once")
    if join_once is not None and not isinstance(join_once, bool):
        raise PromotionError("invalid_campaign", "join_once must be true or false")
    code_config = voucher.get("code_config")
    if code_config is not None and not isinstance(code_config, dict):
        raise PromotionError("invalid_code_config", "voucher.code_config must be an object")
    return {
        "name": payload.get("name"),
        "description": description or "",
        "campaign_type": campaign_type,
        "voucher_type": voucher_type,
        "type": payload.get("type") or ("STATIC" if vouchers_count else "AUTO_UPDATE"),
        "join_once": join_once is True,
        "vouchers_count": vouchers_count,
        "start_date": _date(payload.get("start_date"), "start_date"),
        "expiration_date": _date(payload.get("expiration_date"), "expiration_date"),
        "discount": voucher.get("discount"),
        "gift_amount": gift.get("amount"),
        "redemption_quantity": redemption.get("quantity"),
        "code_config": code_config,
        "metadata": metadata or {},
        "max_redemptions_per_customer": extra.get("max_redemptions_per_customer"),
        "max_redemptions": extra.get("max_redemptions"),
        "min_order_amount": extra.get("min_order_amount"),
        "segment_id": extra.get("segment_id"),
        "program_id": extra.get("program_id"),
        "currency": extra.get("currency"),
        "referral": extra.get("referral"),
    }


async def _create_campaign(request: Request, *, loyalty: bool) -> JSON:
    ctx = _ctx(request)
    spec = campaign_spec(await read_payload(request), loyalty=loyalty)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        campaign = service.create_campaign(uow, spec)
        if campaign.generation_status == "IN_PROGRESS":
            uow.after_commit(lambda: service.start_background_generation(ctx, campaign.id))
        return shapes.campaign_out(campaign)

    return JSON(await run_write(ctx, work))


@router.post("/campaigns", dependencies=[scope("campaigns:write")])
async def create_campaign(request: Request) -> JSON:
    return await _create_campaign(request, loyalty=False)


@router.post("/loyalties", dependencies=[scope("campaigns:write")])
async def create_loyalty_program(request: Request) -> JSON:
    return await _create_campaign(request, loyalty=True)


@router.get("/campaigns/{campaign_id}", dependencies=[scope("vouchers:read")])
@router.get("/loyalties/{campaign_id}", dependencies=[scope("vouchers:read")])
async def get_campaign(campaign_id: str, request: Request) -> JSON:
    return JSON(
        await run_read(_ctx(request), lambda uow: shapes.campaign_out(service.get_campaign(uow, campaign_id)))
    )


@router.delete("/campaigns/{campaign_id}", dependencies=[scope("campaigns:write")])
@router.delete("/loyalties/{campaign_id}", dependencies=[scope("campaigns:write")])
async def delete_campaign(campaign_id: str, request: Request) -> JSON:
    await run_write(_ctx(request), lambda uow: service.delete_campaign(uow, campaign_id))
    return JSON({})


# -- publications -------------------------------------------------------------------------------------


def publish_work(payload: dict[str, Any], join_once: bool) -> Callable[[UnitOfWork], dict[str, Any]]:
    raw_campaign = payload.get("campaign")
    campaign_ref: str | None
    if isinstance(raw_campaign, dict):
        campaign_ref = raw_campaign.get("id") or raw_campaign.get("name")
        count = raw_campaign.get("count", 1)
        if count not in (1, "1", None):
            raise PromotionError("invalid_payload", "campaign.count: Perkflow publishes one code per request")
    else:
        campaign_ref = raw_campaign
    if campaign_ref is not None and (not isinstance(campaign_ref, str) or len(campaign_ref) > 200):
        raise PromotionError("invalid_payload", "campaign must be a campaign id or name")
    customer_id = service.customer_id_from(payload.get("customer"))
    assert customer_id is not None
    source_id = _str(payload, "source_id")
    code = _str(payload, "voucher", max_length=100)
    channel = _str(payload, "channel", max_length=64) or "API"
    metadata = _dict(payload, "metadata")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        published = service.publish(
            uow,
            campaign_ref=campaign_ref,
            customer_id=customer_id,
            source_id=source_id,
            code=code,
            channel=channel,
            metadata=metadata,
            join_once=join_once,
        )
        return shapes.publication_out(uow, published)

    return work


def _join_once(request: Request) -> bool:
    return request.query_params.get("join_once", "false").lower() == "true"


@router.post("/publications", dependencies=[scope("publications:write")])
async def create_publication(request: Request) -> JSON:
    """Assign a code; unknown query parameters (Braze's cache_id) are ignored.

    Requests are normally answered by `perkflow.voucherify.fastpath` in front of the router, which
    does the same thing with less machinery; this route documents the endpoint and serves the rest.
    """
    work = publish_work(await read_payload(request), _join_once(request))
    return JSON(await groupcommit.run_write(_ctx(request), work))


def query_payload(params: Mapping[str, str]) -> dict[str, Any]:
    """The publication request of `GET /v1/publications/create`, from its query parameters."""
    payload = {k: v for k, v in params.items() if k not in ("join_once",)}
    if "customer[source_id]" in payload:
        payload["customer"] = payload.pop("customer[source_id]")
    return payload


@router.get("/publications/create", dependencies=[scope("publications:write")])
async def create_publication_by_get(request: Request) -> JSON:
    """The GET form (cacheable by Braze); also answered by `perkflow.voucherify.fastpath`."""
    work = publish_work(query_payload(request.query_params), _join_once(request))
    return JSON(await groupcommit.run_write(_ctx(request), work))


@router.get("/publications", dependencies=[scope("vouchers:read")])
async def list_publications(request: Request) -> JSON:
    source_id = request.query_params.get("source_id")
    if not source_id:
        raise PromotionError("invalid_query_params", "filter publications by source_id")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        try:
            found = [shapes.publication_out(uow, service.get_publication(uow, source_id=source_id))]
        except PromotionError:
            found = []
        return {"object": "list", "data_ref": "publications", "publications": found, "total": len(found)}

    return JSON(await run_read(_ctx(request), work))


# -- validations, redemptions, rollbacks -------------------------------------------------------------


def _redemption_request(payload: dict[str, Any]) -> tuple[list[Redeemable], Order, str | None, str | None]:
    redeemables = service.parse_redeemables(payload.get("redeemables"))
    try:
        order = Order.parse(payload.get("order"))
    except RuleViolation as exc:
        raise PromotionError.from_violation(exc) from exc
    customer_id = service.customer_id_from(payload.get("customer"), required=False)
    return redeemables, order, customer_id, _str(payload, "tracking_id", max_length=200)


@router.post("/validations", dependencies=[scope("vouchers:write")])
async def validate(request: Request) -> JSON:
    """HTTP 200 even when a code is not valid: each redeemable says why."""
    redeemables, order, customer_id, tracking_id = _redemption_request(await read_payload(request))

    def work(uow: UnitOfWork) -> dict[str, Any]:
        evaluation = service.validate(uow, redeemables, order, customer_id)
        return shapes.validation_out(evaluation, tracking_id)

    return JSON(await run_read(_ctx(request), work))


@router.post("/redemptions", dependencies=[scope("vouchers:write")])
async def redeem(request: Request) -> JSON:
    payload = await read_payload(request)
    redeemables, order, customer_id, tracking_id = _redemption_request(payload)
    metadata = _dict(payload, "metadata")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        redeemed = service.redeem(
            uow, redeemables, order, customer_id, tracking_id=tracking_id, metadata=metadata
        )
        return shapes.redeemed_out(uow, redeemed)

    return JSON(await run_write(_ctx(request), work))


@router.get("/redemptions/{redemption_id}", dependencies=[scope("vouchers:read")])
async def get_redemption(redemption_id: str, request: Request) -> JSON:
    def work(uow: UnitOfWork) -> dict[str, Any]:
        record = service.get_redemption(uow, redemption_id)
        if record.code is None or record.campaign_id is None:
            return shapes.redemption_out(uow, record, None, None)
        # History: a redemption still shows its code after the campaign was deleted.
        campaign = service.get_campaign(uow, record.campaign_id, include_deleted=True)
        voucher = service.get_voucher(uow, record.code, include_deleted=True)
        return shapes.redemption_out(uow, record, campaign, voucher, reward=shapes.reward_result(record))

    return JSON(await run_read(_ctx(request), work))


async def _rollback(redemption_id: str, request: Request, *, stacked: bool) -> JSON:
    await read_payload(request)  # an empty body is allowed; a malformed one is still refused
    reason = request.query_params.get("reason")
    tracking_id = request.query_params.get("tracking_id")
    if (reason and len(reason) > 2000) or (tracking_id and len(tracking_id) > 200):
        raise PromotionError("invalid_query_params", "reason or tracking_id is too long")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        done = service.rollback(uow, redemption_id, reason=reason, tracking_id=tracking_id, stacked=stacked)
        return shapes.stacked_rollback_out(uow, done) if stacked else shapes.rollback_out(uow, done)

    return JSON(await run_write(_ctx(request), work))


@router.post("/redemptions/{redemption_id}/rollback", dependencies=[scope("vouchers:write")])
async def rollback(redemption_id: str, request: Request) -> JSON:
    return await _rollback(redemption_id, request, stacked=False)


@router.post("/redemptions/{redemption_id}/rollbacks", dependencies=[scope("vouchers:write")])
async def rollback_stacked(redemption_id: str, request: Request) -> JSON:
    return await _rollback(redemption_id, request, stacked=True)


# -- vouchers ----------------------------------------------------------------------------------------


@router.get("/vouchers", dependencies=[scope("vouchers:read")])
async def list_vouchers(request: Request) -> JSON:
    limit = _int_query(request, "limit", 10, 1, 100)
    page = _int_query(request, "page", 1, 1, 99)
    customer = request.query_params.get("customer")
    campaign = request.query_params.get("campaign_id") or request.query_params.get("campaign")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        found, total = service.list_vouchers(
            uow, customer=customer, campaign=campaign, limit=limit, offset=(page - 1) * limit
        )
        by_pk = service.campaigns_by_pk(uow, {v.campaign_pk for v in found})
        return {
            "object": "list",
            "data_ref": "vouchers",
            "vouchers": [shapes.voucher_out(uow, by_pk[v.campaign_pk], v) for v in found],
            "total": total,
        }

    return JSON(await run_read(_ctx(request), work))


@router.get("/vouchers/{code}", dependencies=[scope("vouchers:read")])
@router.get("/loyalties/members/{code}", dependencies=[scope("vouchers:read")])
async def get_voucher(code: str, request: Request) -> JSON:
    def work(uow: UnitOfWork) -> dict[str, Any]:
        voucher = service.find_voucher(uow, code)
        return shapes.voucher_out(uow, service.campaign_of(uow, voucher), voucher)

    return JSON(await run_read(_ctx(request), work))


@router.post("/vouchers/{code}/balance", dependencies=[scope("vouchers:write")])
async def add_balance(code: str, request: Request) -> JSON:
    """Gift cards: add credits (`amount`, minor units). Loyalty cards: add points (`amount` points)."""
    payload = await read_payload(request)
    amount = payload.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise PromotionError("invalid_payload", "amount must be an integer")
    source_id = _str(payload, "source_id")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        voucher = service.find_voucher(uow, code)
        campaign = service.campaign_of(uow, voucher)
        if campaign.voucher_type == "LOYALTY_CARD":
            return shapes.balance_out(service.update_card_balance(uow, code, amount, source_id=source_id))
        updated = service.add_gift_credits(uow, voucher.code, amount, source_id=source_id)
        return shapes.gift_balance_out(updated, amount)

    return JSON(await run_write(_ctx(request), work))


# -- loyalty programs ----------------------------------------------------------------------------------


@router.post("/loyalties/{campaign_id}/members", dependencies=[scope("campaigns:write")])
async def add_member(campaign_id: str, request: Request) -> JSON:
    payload = await read_payload(request)
    customer_id = service.customer_id_from(payload.get("customer"))
    assert customer_id is not None
    code = _str(payload, "voucher", max_length=100)
    channel = _str(payload, "channel", max_length=64) or "API"

    def work(uow: UnitOfWork) -> dict[str, Any]:
        published = service.add_member(uow, campaign_id, customer_id, code=code, channel=channel)
        return shapes.voucher_out(uow, published.campaign, published.voucher)

    return JSON(await run_write(_ctx(request), work))


async def _card_balance(member_id: str, request: Request, campaign_id: str | None = None) -> JSON:
    payload = await read_payload(request)
    points = payload.get("points")
    if isinstance(points, bool) or not isinstance(points, int):
        raise PromotionError("invalid_payload", "points must be an integer")
    expires_at = _date(payload.get("expiration_date"), "expiration_date")
    reason = _str(payload, "reason", max_length=2000)
    source_id = _str(payload, "source_id")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        result = service.update_card_balance(
            uow,
            member_id,
            points,
            reason=reason,
            source_id=source_id,
            expires_at=expires_at,
            campaign_ref=campaign_id,
        )
        return shapes.balance_out(result)

    return JSON(await run_write(_ctx(request), work))


@router.post("/loyalties/members/{member_id}/balance", dependencies=[scope("vouchers:write")])
async def update_card_balance(member_id: str, request: Request) -> JSON:
    return await _card_balance(member_id, request)


@router.post("/loyalties/{campaign_id}/members/{member_id}/balance", dependencies=[scope("vouchers:write")])
async def update_card_balance_in_campaign(campaign_id: str, member_id: str, request: Request) -> JSON:
    return await _card_balance(member_id, request, campaign_id)


@router.post("/rewards", dependencies=[scope("campaigns:write")])
async def create_reward(request: Request) -> JSON:
    payload = await read_payload(request)
    return JSON(
        await run_write(
            _ctx(request), lambda uow: shapes.reward_out(service.create_promotion_reward(uow, payload))
        )
    )


def _assignment_points(item: dict[str, Any]) -> Any:
    parameters = item.get("parameters")
    loyalty = parameters.get("loyalty") if isinstance(parameters, dict) else None
    return loyalty.get("points") if isinstance(loyalty, dict) else None


@router.post("/loyalties/{campaign_id}/rewards", dependencies=[scope("campaigns:write")])
async def assign_rewards(campaign_id: str, request: Request) -> JSON:
    """Voucherify documents a list answer; its SDK parses one object: the first assignment is returned."""
    items = await read_list_payload(request)
    if not items or not all(isinstance(i, dict) and isinstance(i.get("reward"), str) for i in items):
        raise PromotionError("invalid_payload", "send a list of {reward, parameters: {loyalty: {points}}}")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        made = [
            service.assign_reward(uow, campaign_id, item["reward"], _assignment_points(item))
            for item in items
        ]
        return shapes.assignment_out(made[0])

    return JSON(await run_write(_ctx(request), work))


@router.post("/rewards/{reward_id}/assignments", dependencies=[scope("campaigns:write")])
async def assign_reward(reward_id: str, request: Request) -> JSON:
    payload = await read_payload(request)
    campaign = _str(payload, "campaign", max_length=200)
    if campaign is None:
        raise PromotionError("invalid_payload", "campaign is required")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        return shapes.assignment_out(
            service.assign_reward(uow, campaign, reward_id, _assignment_points(payload))
        )

    return JSON(await run_write(_ctx(request), work))


async def _redeem_reward(member_id: str, request: Request, campaign_id: str | None = None) -> JSON:
    payload = await read_payload(request)
    reward = _dict(payload, "reward")
    reward_id = reward.get("id")
    if not isinstance(reward_id, str) or not reward_id:
        raise PromotionError("missing_reward", "reward.id is required")
    try:
        order = Order.parse(payload.get("order"))
    except RuleViolation as exc:
        raise PromotionError.from_violation(exc) from exc
    metadata = _dict(payload, "metadata")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        voucher, _campaign = service.loyalty_card(uow, member_id, campaign_ref=campaign_id)
        redeemed = service.redeem(
            uow, [Redeemable(voucher.code, reward_id=reward_id)], order, None, metadata=metadata
        )
        return shapes.redeemed_out(uow, redeemed)["redemptions"][0]

    return JSON(await run_write(_ctx(request), work))


@router.post("/loyalties/members/{member_id}/redemption", dependencies=[scope("vouchers:write")])
async def redeem_reward(member_id: str, request: Request) -> JSON:
    return await _redeem_reward(member_id, request)


@router.post(
    "/loyalties/{campaign_id}/members/{member_id}/redemption", dependencies=[scope("vouchers:write")]
)
async def redeem_reward_in_campaign(campaign_id: str, member_id: str, request: Request) -> JSON:
    return await _redeem_reward(member_id, request, campaign_id)
