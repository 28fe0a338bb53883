"""The FastAPI application: routers, error handling, and the background jobs of `perkflow serve`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from perkflow import __version__
from perkflow.api.responses import JSON, error_body
from perkflow.api.routing import BodySizeLimit
from perkflow.auth.service import KeyVerifier
from perkflow.core.context import AppContext
from perkflow.core.errors import PerkflowError
from perkflow.voucherify import errors as compat

log = logging.getLogger("perkflow.api")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        details.append(
            {
                "field": ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc),
                "location": loc[0] if loc else None,
                "message": error.get("msg", ""),
            }
        )
    return details


def create_app(ctx: AppContext, *, run_background_jobs: bool = False, fast_paths: bool = True) -> FastAPI:
    """The API. `fast_paths=False` leaves every request to the FastAPI routes (tests compare the two)."""
    from perkflow.runtime import BackgroundJobs

    jobs = BackgroundJobs(ctx) if run_background_jobs else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if jobs is not None:
            jobs.start()
        try:
            yield
        finally:
            if jobs is not None:
                jobs.stop()

    app = FastAPI(
        title="Perkflow",
        version=__version__,
        description=(
            "Self-hosted loyalty and promotions engine. Authenticate with `Authorization: Bearer "
            "<key id>.<secret>` (create a key with `perkflow apikey create`). Money is in integer minor "
            "units, points are integers, times are UTC."
        ),
        default_response_class=JSON,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.key_verifier = KeyVerifier()
    if fast_paths:
        # Connected Content's POST /v1/publications is answered before routing (inside the size limit).
        from perkflow.voucherify.fastpath import PublicationFastPath

        app.add_middleware(PublicationFastPath, ctx=ctx)
    app.add_middleware(BodySizeLimit, max_bytes=ctx.settings.max_body_bytes)

    @app.exception_handler(PerkflowError)
    async def _perkflow_error(_request: Request, exc: PerkflowError) -> JSON:
        if compat.is_compatible_path(_request.url.path):
            return compat.response_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSON(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSON:
        if compat.is_compatible_path(_request.url.path):
            return compat.http_response(400, "the request does not match the API schema")
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            reasons = [
                str((e.get("ctx") or {}).get("error", "")) for e in errors if e.get("type") == "json_invalid"
            ]
            reasons = [r for r in reasons if r]
            message = "the request body is not valid JSON"
            if reasons:
                message += f": {reasons[0]}"
            hint = "numbers must fit in 64 bits; NaN and Infinity are not JSON"
            return JSON(
                error_body("invalid_json", message, {"errors": reasons, "hint": hint}), status_code=400
            )
        return JSON(
            error_body(
                "invalid_input",
                "the request does not match the API schema",
                {"errors": _validation_details(exc)},
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSON:
        if compat.is_compatible_path(_request.url.path):
            detail = exc.detail if isinstance(exc.detail, str) else "error"
            return compat.http_response(exc.status_code, detail, getattr(exc, "headers", None))
        code = HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSON(
            error_body(code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSON:
        log.exception("unhandled error", exc_info=exc)
        if compat.is_compatible_path(_request.url.path):
            return compat.http_response(500, "an unexpected error occurred; it has been logged")
        return JSON(
            error_body("internal_error", "an unexpected error occurred; it has been logged"), status_code=500
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSON:
        with ctx.uow(write=False) as uow:
            uow.conn.exec_driver_sql("SELECT 1")
        return JSON({"status": "ok", "version": __version__})

    from perkflow.activity.router import router as activity_router
    from perkflow.auth.router import router as auth_router
    from perkflow.events.router import router as events_router
    from perkflow.ledger.router import router as ledger_router
    from perkflow.members.router import router as members_router
    from perkflow.programs.router import router as programs_router
    from perkflow.promotions.router import router as promotions_router
    from perkflow.rewards.router import router as rewards_router
    from perkflow.segments.router import router as segments_router
    from perkflow.sync.router import metrics_router
    from perkflow.sync.router import router as sync_router
    from perkflow.voucherify.router import router as voucherify_router
    from perkflow.workflows.router import router as workflows_router

    for router in (
        events_router,
        members_router,
        ledger_router,
        activity_router,
        programs_router,
        rewards_router,
        sync_router,
        promotions_router,
        segments_router,
        workflows_router,
        auth_router,
    ):
        app.include_router(router, prefix="/api/v1")
    app.include_router(metrics_router)
    # The Voucherify-compatible API lives at /v1 (no /api prefix) so its SDK works with host=<base URL>.
    app.include_router(voucherify_router)
    return app
