"""HTTP layer of the fake Bloomreach: Tracking API routes, export-one read-back and /sandbox debug routes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perkflow.sandbox.bloomreach.auth import AuthFailure
from perkflow.sandbox.bloomreach.commands import MSG_MESSAGE_TOO_LARGE, CommandError
from perkflow.sandbox.bloomreach.sandbox import BloomreachSandbox, RequestRecord

log = logging.getLogger("perkflow.sandbox.bloomreach")

TRACK = "/track/v2/projects/{token}"
RECORD_KEY = "bloomreach_record"
MSG_NOT_FOUND = "The requested URL was not found on the server"
MSG_BAD_REQUEST = "The browser (or proxy) sent a request that this server could not understand"
# Room for a full batch of maximum-size messages; anything bigger is refused before parsing.
BODY_SLACK = 64 * 1024


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class DroppedConnection(Exception):
    """Raised after a response has started so that uvicorn closes the socket without finishing it."""


def _failure(status: int, error: str) -> JSON:
    return JSON({"success": False, "error": error}, status_code=status)


def _auth_failure(failure: AuthFailure) -> JSON:
    return _failure(failure.status, failure.error)


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return {"success": False, "error": "Too many requests"}
    if status >= 500:
        return {
            "success": False,
            "error": "Service unavailable" if status == 503 else "Internal server error",
        }
    return {"success": False, "errors": [f"Injected failure ({status})"]}


class TrackingGate:
    """ASGI middleware: request ids everywhere; on tracking routes, faults, the rate limit and the log."""

    def __init__(self, app: ASGIApp, sandbox: BloomreachSandbox):
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4()).encode()
        record: RequestRecord | None = None

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
                if record is not None:
                    record.status = message["status"]
            await send(message)

        if not scope["path"].startswith("/track/"):
            await self.app(scope, receive, send_wrapper)
            return
        client = scope.get("client")
        host = client[0] if client else "unknown"
        record = self.sandbox.begin_request(scope["method"], scope["path"], host)
        scope.setdefault("state", {})[RECORD_KEY] = record
        fault = record.fault
        try:
            if fault is not None and fault.slow_ms:
                await asyncio.sleep(fault.slow_ms / 1000)
            if fault is not None and fault.drop:
                # The raw `send` leaves record.status unset: the request is logged as dropped.
                await self._drop(receive, send)
            elif fault is not None and fault.status is not None:
                await JSON(_fault_body(fault.status), status_code=fault.status)(scope, receive, send_wrapper)
            elif record.rate_limited:
                # The Tracking API documents no Retry-After header, so none is sent.
                await _failure(429, "Too many requests")(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.sandbox.finish_request(record)

    @staticmethod
    async def _drop(receive: Receive, send: Send) -> None:
        # Reading the whole body first makes the client see a cut response, not a reset while sending.
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        raise DroppedConnection("fault injection: connection dropped")


def _record(request: Request) -> RequestRecord | None:
    record = request.scope.get("state", {}).get(RECORD_KEY)
    return record if isinstance(record, RequestRecord) else None


def create_app(sandbox: BloomreachSandbox) -> FastAPI:
    config = sandbox.config
    body_cap = config.max_message_bytes * config.max_batch_commands + BODY_SLACK
    app = FastAPI(
        title="Bloomreach Engagement sandbox",
        description="A local fake of the Bloomreach Engagement Tracking API for tests, demos and benchmarks.",
        default_response_class=JSON,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sandbox = sandbox
    app.add_middleware(TrackingGate, sandbox=sandbox)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSON:
        messages = {404: MSG_NOT_FOUND, 405: "The method is not allowed for the requested URL"}
        message = messages.get(exc.status_code, str(exc.detail))
        return _failure(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSON:
        return _failure(400, f"Invalid request: {exc.errors()[0].get('msg', '') if exc.errors() else ''}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSON:
        # A client that gave up (its timeout) or a deliberate drop is not a fault of the sandbox.
        if not isinstance(exc, DroppedConnection | ClientDisconnect):
            log.exception("unhandled error in the Bloomreach sandbox", exc_info=exc)
        return _failure(500, "Internal server error")

    def gate(request: Request, token: str, *, allow_public: bool = True) -> JSON | None:
        if token != config.project_token:
            return _failure(400, "Invalid project id")
        failure = sandbox.authenticate(
            request.headers.get("authorization"),
            request.query_params.get("access_token"),
            allow_public=allow_public,
        )
        return None if failure is None else _auth_failure(failure)

    async def read_json(request: Request) -> tuple[Any, bytes] | JSON:
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            return _failure(400, MSG_BAD_REQUEST)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > body_cap:
                return _failure(413, "Request body too large")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            return orjson.loads(body), body
        except orjson.JSONDecodeError:
            return JSON({"success": False, "message": "Invalid JSON"}, status_code=400)

    def single_response(request: Request, result: dict[str, Any]) -> JSON:
        record = _record(request)
        if record is not None:
            record.count([result])
        if result["success"]:
            if record is not None:
                record.accepted = True
            body: dict[str, Any] = {"success": True, "errors": []}
            if "time" in result:
                body["time"] = result["time"]
            return JSON(body)
        status = 200 if config.error_mode == "200" else 400
        return JSON({"success": False, "errors": result["errors"]}, status_code=status)

    async def single(request: Request, token: str, name: str) -> JSON:
        refused = gate(request, token)
        if refused is not None:
            return refused
        parsed = await read_json(request)
        if isinstance(parsed, JSON):
            return parsed
        data, body = parsed
        if len(body) >= config.max_message_bytes:
            return single_response(request, sandbox.refuse_command(MSG_MESSAGE_TOO_LARGE))
        return single_response(request, sandbox.run_single(name, data))

    # -- Tracking API -------------------------------------------------------------------------------------

    @app.get(TRACK + "/system/time")
    async def system_time(request: Request, token: str) -> JSON:
        if token != config.project_token:
            return _failure(400, "Invalid project id")
        return single_response(request, sandbox.run_single("system/time", None))

    @app.post(TRACK + "/customers")
    async def customers(request: Request, token: str) -> JSON:
        return await single(request, token, "customers")

    @app.post(TRACK + "/customers/events")
    async def customer_events(request: Request, token: str) -> JSON:
        return await single(request, token, "customers/events")

    @app.post(TRACK + "/batch")
    async def batch(request: Request, token: str) -> JSON:
        refused = gate(request, token)
        if refused is not None:
            return refused
        parsed = await read_json(request)
        if isinstance(parsed, JSON):
            return parsed
        data, _ = parsed
        commands = data.get("commands") if isinstance(data, dict) else None
        if not isinstance(commands, list):
            return _failure(400, "Invalid batch: 'commands' must be a list")
        if len(commands) > config.max_batch_commands:
            return _failure(400, f"Too many commands: {len(commands)} > {config.max_batch_commands}")
        start = sandbox.now()
        results = sandbox.run_batch(commands)
        record = _record(request)
        if record is not None:
            record.count(results)
            record.accepted = True
        return JSON({"success": True, "start_time": start, "end_time": sandbox.now(), "results": results})

    # -- Data API read-back -------------------------------------------------------------------------------

    @app.post("/data/v2/projects/{token}/customers/export-one")
    async def export_one(request: Request, token: str) -> JSON:
        refused = gate(request, token, allow_public=False)
        if refused is not None:
            return refused
        parsed = await read_json(request)
        if isinstance(parsed, JSON):
            return parsed
        data, _ = parsed
        try:
            exported = sandbox.export_one(data.get("customer_ids") if isinstance(data, dict) else None)
        except CommandError as exc:
            return JSON({"success": False, "errors": [exc.message]}, status_code=400)
        if exported is None:
            return JSON({"success": False, "errors": ["Customer not found"]}, status_code=404)
        return JSON(exported)

    # -- debug routes (not part of Bloomreach; no auth) -----------------------------------------------------

    @app.get("/sandbox/customers")
    def debug_customers() -> JSON:
        return JSON({"customers": sandbox.customers()})

    @app.get("/sandbox/customers/{id_name}/{value}")
    def debug_customer(id_name: str, value: str) -> JSON:
        customer = sandbox.customer(value, id_name)
        if customer is None:
            return JSON({"success": False, "errors": ["Customer not found"]}, status_code=404)
        return JSON(customer)

    @app.get("/sandbox/events")
    def debug_events(event_type: str | None = None) -> JSON:
        return JSON({"events": sandbox.events(event_type)})

    @app.get("/sandbox/stats")
    def debug_stats() -> JSON:
        return JSON(sandbox.stats())

    @app.get("/sandbox/requests")
    def debug_requests(limit: int = 50) -> JSON:
        return JSON({"requests": sandbox.requests(limit)})

    @app.get("/sandbox/faults")
    def debug_get_faults() -> JSON:
        return JSON(sandbox.faults())

    @app.post("/sandbox/faults")
    async def debug_set_faults(request: Request) -> JSON:
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return JSON({"success": False, "message": "Invalid JSON"}, status_code=400)
        if not isinstance(body, dict):
            return _failure(400, "The body must be a JSON object")
        allowed = {"queue", "error_rate", "slow_ms", "drop_rate", "seed"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            return _failure(400, f"Unknown fault settings: {', '.join(unknown)}")
        try:
            sandbox.set_faults(**body)
        except (TypeError, ValueError) as exc:
            return _failure(400, str(exc))
        return JSON({"success": True, "faults": sandbox.faults()})

    @app.post("/sandbox/reset")
    def debug_reset() -> JSON:
        sandbox.reset()
        return JSON({"success": True})

    @app.post("/sandbox/flush")
    def debug_flush() -> JSON:
        sandbox.flush()
        return JSON({"success": True})

    return app
