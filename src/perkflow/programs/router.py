"""HTTP routes for programs, their earning rules and tier ladders."""

from __future__ import annotations

from fastapi import Response

from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON, no_content
from perkflow.api.routing import api_router
from perkflow.programs import service
from perkflow.programs.schemas import EarningRuleIn, ProgramCreate, ProgramUpdate, RuleActive, TiersIn
from perkflow.programs.service import ProgramCatalog, rule_to_public

router = api_router(tags=["programs"])


@router.get("/programs", dependencies=[require("programs:read")])
def list_programs(ctx: Ctx) -> JSON:
    programs = read(ctx, lambda uow: list(uow.component(ProgramCatalog).programs.values()))
    return JSON({"data": [p.to_public() for p in programs]})


@router.post("/programs", status_code=201, dependencies=[require("admin")])
def create_program(body: ProgramCreate, ctx: Ctx) -> JSON:
    spec = body.model_dump(mode="json")
    return JSON(write(ctx, lambda uow: service.create_program(uow, spec)).to_public(), status_code=201)


@router.get("/programs/{program_id}", dependencies=[require("programs:read")])
def get_program(program_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: uow.component(ProgramCatalog).get(program_id)).to_public())


@router.patch("/programs/{program_id}", dependencies=[require("admin")])
def update_program(program_id: str, body: ProgramUpdate, ctx: Ctx) -> JSON:
    changes = body.model_dump(mode="json", exclude_unset=True)
    return JSON(write(ctx, lambda uow: service.update_program(uow, program_id, changes)).to_public())


@router.post("/programs/{program_id}/earning-rules", status_code=201, dependencies=[require("admin")])
def add_rule(program_id: str, body: EarningRuleIn, ctx: Ctx) -> JSON:
    spec = body.model_dump(mode="json")

    def work(uow):  # type: ignore[no-untyped-def]
        uow.component(ProgramCatalog).get(program_id)
        return service.add_earning_rule(uow, program_id, spec)

    return JSON(rule_to_public(write(ctx, work)), status_code=201)


@router.patch("/programs/{program_id}/earning-rules/{rule_id}", dependencies=[require("admin")])
def set_rule_active(program_id: str, rule_id: str, body: RuleActive, ctx: Ctx) -> JSON:
    return JSON(
        rule_to_public(write(ctx, lambda uow: service.set_rule_active(uow, program_id, rule_id, body.active)))
    )


@router.delete(
    "/programs/{program_id}/earning-rules/{rule_id}", status_code=204, dependencies=[require("admin")]
)
def delete_rule(program_id: str, rule_id: str, ctx: Ctx) -> Response:
    write(ctx, lambda uow: service.delete_earning_rule(uow, program_id, rule_id))
    return no_content()


@router.put("/programs/{program_id}/tiers", dependencies=[require("admin")])
def replace_tiers(program_id: str, body: TiersIn, ctx: Ctx) -> JSON:
    """Replace the ladder; every member moves to the tier the new ladder gives them."""
    ladder = [t.model_dump(mode="json") for t in body.tiers]
    return JSON(write(ctx, lambda uow: service.replace_tiers(uow, program_id, ladder)).to_public())
