"""The HTTP face of the fake Braze: /users/track, /users/export/ids and unauthenticated /sandbox routes."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from perkflow.sandbox.braze.config import EXPORT_PERMISSION, TRACK_PERMISSION
from perkflow.sandbox.braze.faults import Fault, fault_body
from perkflow.sandbox.braze.ratelimit import RateWindow
from perkflow.sandbox.braze.sandbox import BrazeSandbox, ExportRejected, RequestRecord
from perkflow.sandbox.braze.track import TrackOutcome

AUTH_MESSAGES = {401: "Invalid API Key", 403: "Access Denied"}
PARSE_ERROR_MESSAGE = "Error while parsing request body"


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class DeliberateDrop(Exception):
    """Raised after the response head is sent so uvicorn closes the socket mid-response."""


class DroppedConnection(Response):
    """Starts a response that promises a body and never sends it: the client sees a transport error."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        raise DeliberateDrop("connection dropped by an injected fault")


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs every exception escaping the app with a traceback; drops are intended, not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DeliberateDrop))


def _install_drop_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _HideDeliberateDrops) for existing in logger.filters):
        logger.addFilter(_HideDeliberateDrops())


class FaultSettings(BaseModel):
    """Body of POST /sandbox/faults; the same parameters as `BrazeSandbox.set_faults`."""

    model_config = ConfigDict(extra="forbid")

    queue: list[int | str] = Field(default_factory=list)
    error_rate: float = 0.0
    slow_ms: int = 0
    drop_rate: float = 0.0
    retry_after_s: int = 1
    seed: int | None = None


class _LoggedRequest:
    """One Braze API request on its way to the request log and the stats."""

    def __init__(self, sandbox: BrazeSandbox, request: Request, fault: Fault) -> None:
        self.sandbox = sandbox
        self.request = request
        self.fault = fault
        self.started = time.perf_counter()
        self.outcome: TrackOutcome | None = None

    def finish(self, status: int | None, result: str) -> None:
        outcome = self.outcome
        received = outcome.received if outcome is not None else {}
        self.sandbox.record_request(
            RequestRecord(
                time=self.sandbox.timestamp(),
                method=self.request.method,
                path=self.request.url.path,
                status=status,
                outcome=result,
                attribute_objects=received.get("attributes", 0),
                event_objects=received.get("events", 0),
                purchase_objects=received.get("purchases", 0),
                data_points=outcome.data_points if outcome is not None and outcome.status == 201 else 0,
                item_errors=len(outcome.errors) if outcome is not None else 0,
                fault=None if self.fault.label == "none" else self.fault.label,
                duration_ms=round((time.perf_counter() - self.started) * 1000, 3),
            )
        )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None when it exceeds `max_bytes`; the excess is drained so the client can read the 413."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > max_bytes
    body = bytearray()
    async for chunk in request.stream():
        if not too_large:
            body += chunk
            too_large = len(body) > max_bytes
    return None if too_large else bytes(body)


def create_app(sandbox: BrazeSandbox) -> FastAPI:
    """An ASGI app serving `sandbox`; run it with `perkflow.sandbox.server.ServerThread` or uvicorn."""
    config = sandbox.config
    _install_drop_log_filter()
    app = FastAPI(
        title="Braze sandbox",
        description="A local, stateful fake of Braze's /users/track and /users/export/ids.",
        default_response_class=JSONBody,
        redirect_slashes=False,
    )
    app.state.sandbox = sandbox

    def rate_headers(window: RateWindow | None, status: int) -> dict[str, str]:
        if window is None:
            return {}
        if config.mau_mode and status == 429:
            return {"X-Ratelimit-Retry-After": str(window.seconds_until_reset)}
        return window.headers(config.reset_header_mode)

    def answer(status: int, body: dict[str, Any], window: RateWindow | None) -> JSONBody:
        return JSONBody(body, status_code=status, headers=rate_headers(window, status))

    def injected_answer(fault: Fault) -> JSONBody:
        """An injected status; an injected 429 carries the rate headers the plan documents (contract §6):
        MAU plans X-Ratelimit-Retry-After, others the X-RateLimit-* trio with nothing remaining."""
        assert fault.status is not None
        window = sandbox.rate_window()
        if fault.status != 429:
            return answer(fault.status, fault_body(fault.status), window)
        retry_after = sandbox.retry_after_s
        if fault.plain_retry_after:
            headers = {"Retry-After": str(retry_after)}
        elif config.mau_mode:
            headers = {"X-Ratelimit-Retry-After": str(retry_after)}
        else:
            reset = (
                retry_after
                if config.reset_header_mode == "seconds"
                else int(sandbox.now_epoch()) + retry_after
            )
            headers = {
                "X-RateLimit-Limit": str(window.limit if window is not None else config.rate_limit or 0),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            }
        return JSONBody(fault_body(429), status_code=429, headers=headers)

    async def process_track(call: _LoggedRequest) -> tuple[JSONBody, str]:
        request = call.request
        denied = sandbox.authorize(request.headers.get("authorization"), TRACK_PERMISSION)
        if denied is not None:
            return answer(denied, {"message": AUTH_MESSAGES[denied]}, sandbox.rate_window()), "rejected"
        window = sandbox.admit_track()
        if window is not None and not window.allowed:
            return answer(429, {"message": "Rate Limit Exceeded"}, window), "rate_limited"
        if _media_type(request) != "application/json":
            return answer(415, {"message": "Content-Type must be application/json"}, window), "rejected"
        body = await _read_body(request, config.max_body_bytes)
        if body is None:
            message = f"Request body is larger than {config.max_body_bytes} bytes"
            return answer(413, {"message": message}, window), "rejected"
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return answer(400, {"message": PARSE_ERROR_MESSAGE}, window), "rejected"
        call.outcome = sandbox.track(payload)
        result = "accepted" if call.outcome.status == 201 else "rejected"
        return answer(call.outcome.status, call.outcome.body, window), result

    @app.post("/users/track")
    async def users_track(request: Request) -> Response:
        call = _LoggedRequest(sandbox, request, sandbox.next_fault())
        fault = call.fault
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.drop:
            call.finish(None, "dropped")
            return DroppedConnection()
        if fault.short_circuits:
            response = injected_answer(fault)
            call.finish(response.status_code, "fault")
            return response
        response, result = await process_track(call)
        if fault.drop_after_apply:
            call.finish(None, "accepted_then_dropped" if result == "accepted" else "dropped")
            return DroppedConnection()
        if fault.status is not None and result == "accepted":
            # Maintenance mode: Braze queues the data and answers with the injected 2xx.
            response = answer(fault.status, fault_body(fault.status), sandbox.rate_window())
        call.finish(response.status_code, result)
        return response

    @app.post("/users/track/")
    async def users_track_trailing_slash(request: Request) -> Response:
        # Braze answers a trailing slash with Access Denied, which is easy to misread as a key problem.
        call = _LoggedRequest(sandbox, request, Fault(label="none"))
        call.finish(403, "rejected")
        return answer(403, {"message": AUTH_MESSAGES[403]}, sandbox.rate_window())

    @app.post("/users/export/ids")
    async def users_export_ids(request: Request) -> Response:
        call = _LoggedRequest(sandbox, request, Fault(label="none"))
        denied = sandbox.authorize(request.headers.get("authorization"), EXPORT_PERMISSION)
        if denied is not None:
            call.finish(denied, "rejected")
            return JSONBody({"message": AUTH_MESSAGES[denied]}, status_code=denied)
        if _media_type(request) != "application/json":
            call.finish(415, "rejected")
            return JSONBody({"message": "Content-Type must be application/json"}, status_code=415)
        try:
            exported = sandbox.export_ids(orjson.loads(await request.body()))
        except orjson.JSONDecodeError:
            call.finish(400, "rejected")
            return JSONBody({"message": PARSE_ERROR_MESSAGE}, status_code=400)
        except ExportRejected as rejected:
            call.finish(400, "rejected")
            return JSONBody({"message": rejected.message}, status_code=400)
        call.finish(201, "accepted")
        return JSONBody(exported, status_code=201)

    @app.get("/sandbox/users/{external_id:path}")
    async def sandbox_user(external_id: str) -> Response:
        user = sandbox.user(external_id)
        if user is None:
            return JSONBody({"message": f"no user with external_id {external_id!r}"}, status_code=404)
        return JSONBody(user)

    @app.get("/sandbox/events")
    async def sandbox_events(external_id: str | None = None) -> Response:
        return JSONBody({"events": sandbox.events(external_id)})

    @app.get("/sandbox/stats")
    async def sandbox_stats() -> Response:
        return JSONBody(sandbox.stats())

    @app.get("/sandbox/attribute-types")
    async def sandbox_attribute_types() -> Response:
        return JSONBody(sandbox.attribute_types())

    @app.get("/sandbox/faults")
    async def sandbox_faults() -> Response:
        return JSONBody(sandbox.faults())

    @app.post("/sandbox/faults")
    async def sandbox_set_faults(request: Request) -> Response:
        try:
            settings = FaultSettings.model_validate_json(await request.body() or b"{}")
            sandbox.set_faults(**settings.model_dump())
        except (ValidationError, ValueError) as invalid:
            return JSONBody({"message": str(invalid)}, status_code=400)
        return JSONBody(sandbox.faults())

    @app.post("/sandbox/reset")
    async def sandbox_reset() -> Response:
        sandbox.reset()
        return JSONBody({"message": "reset"})

    @app.get("/sandbox/requests")
    async def sandbox_requests(limit: int = 50) -> Response:
        return JSONBody({"requests": sandbox.recent_requests(limit)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "Error"
        return JSONBody(
            {"message": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(error.get("loc", ())), "msg": error.get("msg", "")} for error in exc.errors()]
        return JSONBody({"message": "Invalid request", "errors": errors}, status_code=400)

    return app
