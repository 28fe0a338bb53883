"""Perkflow-native promotion routes: campaigns, code generation with progress, the CSV export of codes
for Braze promotion-code lists, vouchers, gift credits and distributions."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Response
from fastapi.responses import StreamingResponse

from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON, no_content
from perkflow.api.routing import api_router
from perkflow.core.uow import UnitOfWork
from perkflow.promotions import distribution, service
from perkflow.promotions.schemas import (
    CampaignCreate,
    CampaignUpdate,
    DistributionCreate,
    GenerateBody,
    GiftCredits,
)

router = api_router(tags=["promotions"])


@router.post("/campaigns", status_code=201, dependencies=[require("campaigns:write")])
def create_campaign(body: CampaignCreate, ctx: Ctx) -> JSON:
    """Create a campaign; up to 10,000 codes are generated at once, more in the background
    (follow `generation` on GET /campaigns/{id})."""
    spec = body.model_dump(exclude_none=True)
    for key in ("discount", "code_config", "referral"):
        if getattr(body, key) is not None:
            spec[key] = getattr(body, key).model_dump(exclude_none=True)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        campaign = service.create_campaign(uow, spec)
        if campaign.generation_status == "IN_PROGRESS":
            uow.after_commit(lambda: service.start_background_generation(ctx, campaign.id))
        return campaign.to_public()

    return JSON(write(ctx, work), status_code=201)


@router.get("/campaigns", dependencies=[require("vouchers:read")])
def list_campaigns(ctx: Ctx, after: str = "", limit: int = Query(default=100, ge=1, le=1000)) -> JSON:
    found = read(
        ctx, lambda uow: [c.to_public() for c in service.list_campaigns(uow, limit=limit, after=after)]
    )
    return JSON({"data": found})


@router.get("/campaigns/{campaign_id}", dependencies=[require("vouchers:read")])
def get_campaign(campaign_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: service.get_campaign(uow, campaign_id).to_public()))


@router.patch("/campaigns/{campaign_id}", dependencies=[require("campaigns:write")])
def update_campaign(campaign_id: str, body: CampaignUpdate, ctx: Ctx) -> JSON:
    changes = body.model_dump(exclude_unset=True)
    return JSON(write(ctx, lambda uow: service.update_campaign(uow, campaign_id, changes).to_public()))


@router.delete("/campaigns/{campaign_id}", status_code=204, dependencies=[require("campaigns:write")])
def delete_campaign(campaign_id: str, ctx: Ctx) -> Response:
    write(ctx, lambda uow: service.delete_campaign(uow, campaign_id))
    return no_content()


@router.post(
    "/campaigns/{campaign_id}/codes/generate", status_code=202, dependencies=[require("campaigns:write")]
)
def generate(campaign_id: str, body: GenerateBody, ctx: Ctx) -> JSON:
    """Add codes in the background; the campaign's `generation` shows progress."""
    campaign = write(ctx, lambda uow: service.request_codes(uow, campaign_id, body.count))
    service.start_background_generation(ctx, campaign.id)
    return JSON(campaign.to_public(), status_code=202)


@router.get("/campaigns/{campaign_id}/codes.csv", dependencies=[require("vouchers:read")])
def export_codes(campaign_id: str, ctx: Ctx, unpublished: bool = False) -> StreamingResponse:
    """The codes as a Braze promotion-code list: one column, no header, streamed."""
    stream = service.export_codes(ctx, campaign_id, unpublished=unpublished)
    first = next(stream, "")  # resolves the campaign (404) before the response starts

    def body() -> Any:
        yield first
        yield from stream

    return StreamingResponse(
        body(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{campaign_id}-codes.csv"'},
    )


@router.get("/vouchers/{code}", dependencies=[require("vouchers:read")])
def get_voucher(code: str, ctx: Ctx) -> JSON:
    def work(uow: UnitOfWork) -> dict[str, Any]:
        voucher = service.find_voucher(uow, code)
        return service.voucher_to_public(uow, service.campaign_of(uow, voucher), voucher)

    return JSON(read(ctx, work))


@router.post("/vouchers/{code}/credits", dependencies=[require("vouchers:write")])
def add_credits(code: str, body: GiftCredits, ctx: Ctx) -> JSON:
    def work(uow: UnitOfWork) -> dict[str, Any]:
        voucher = service.add_gift_credits(uow, code, body.amount, source_id=body.source_id)
        return service.voucher_to_public(uow, service.campaign_of(uow, voucher), voucher)

    return JSON(write(ctx, work))


@router.post("/distributions", status_code=201, dependencies=[require("campaigns:write")])
def create_distribution(body: DistributionCreate, ctx: Ctx) -> JSON:
    spec = body.model_dump()
    return JSON(
        write(ctx, lambda uow: distribution.create_distribution(uow, spec).to_public()), status_code=201
    )


@router.get("/distributions", dependencies=[require("vouchers:read")])
def list_distributions(ctx: Ctx) -> JSON:
    return JSON(
        {"data": read(ctx, lambda uow: [d.to_public() for d in distribution.list_distributions(uow)])}
    )


@router.get("/distributions/{distribution_id}", dependencies=[require("vouchers:read")])
def get_distribution(distribution_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: distribution.get_distribution(uow, distribution_id).to_public()))


@router.delete("/distributions/{distribution_id}", status_code=204, dependencies=[require("campaigns:write")])
def delete_distribution(distribution_id: str, ctx: Ctx) -> Response:
    write(ctx, lambda uow: distribution.delete_distribution(uow, distribution_id))
    return no_content()


@router.post("/distributions/{distribution_id}/run", dependencies=[require("campaigns:write")])
def run_distribution(distribution_id: str, ctx: Ctx) -> JSON:
    """Manual distribution: a code for every member of the segment, written to their profiles."""
    return JSON(distribution.run_manual(ctx, distribution_id))
