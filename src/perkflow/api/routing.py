"""Routers whose requests parse JSON with orjson, which is faster and refuses what storage cannot hold.

json.loads accepts integers of any size and then fails later, deep in a write; orjson refuses
integers beyond 64 bits, NaN and Infinity at the door, which FastAPI reports as invalid JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perkflow.api.responses import JSON, error_body


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = orjson.loads(body)
            if b"\\u0000" in body and _has_nul(value):
                # PostgreSQL cannot store NUL in text or jsonb; refuse it here rather than fail later.
                raise json.JSONDecodeError("text may not contain NUL characters (\\u0000)", "", 0)
            self._json = value
        return self._json


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    return False


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return route_handler


def api_router(**kwargs: Any) -> APIRouter:
    return APIRouter(route_class=OrjsonRoute, **kwargs)


class BodySizeLimit:
    """Refuse request bodies larger than `max_bytes` with a 413 before reading them into memory,
    and URLs carrying NUL characters (which no database column can hold) with a 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            response = _error(scope, 400, "invalid_input", "the URL may not contain NUL characters", {})
            await response(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(
            scope,
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_bytes} bytes",
            {"max_bytes": self.max_bytes},
        )
        await response(scope, receive, send)


def _error(scope: Scope, status: int, code: str, message: str, details: dict[str, Any]) -> JSON:
    """An error answered before routing, in the shape of the API the path belongs to."""
    from perkflow.voucherify import errors as compat

    if compat.is_compatible_path(scope.get("path", "")):
        return compat.http_response(status, message)
    return JSON(error_body(code, message, details), status_code=status)


class BodyTooLarge(Exception):
    pass
