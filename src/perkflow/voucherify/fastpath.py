"""Publications answered in front of the FastAPI router: Braze Connected Content's hot path.

Routing a request through FastAPI (matching it against every route, solving dependencies, building a
Request, a thread-pool hop, a Response and its send wrappers) costs more than the publication itself.
This ASGI middleware recognises exactly `POST /v1/publications` and `GET /v1/publications/create`
and does the same steps as their routes in `perkflow.voucherify.router`, with the same functions:
authentication and the scope check, the body parsing of `parsing.parse_body` (or `query_payload`),
the payload checks of `publish_work`, the publication run through `groupcommit.run_write`, and
Voucherify's error shape for every refusal. Everything else, including the routes' OpenAPI
documentation, stays with FastAPI.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from perkflow.api.deps import authenticate_with
from perkflow.api.responses import OPTIONS
from perkflow.api.routing import BodyTooLarge
from perkflow.core import groupcommit
from perkflow.core.context import AppContext
from perkflow.core.errors import PerkflowError
from perkflow.voucherify import errors as compat
from perkflow.voucherify.parsing import parse_body
from perkflow.voucherify.router import publish_work, query_payload

log = logging.getLogger("perkflow.api")
ROUTES = {("POST", "/v1/publications"), ("GET", "/v1/publications/create")}
SCOPE = "publications:write"


class PublicationFastPath:
    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in ROUTES:
            await self.app(scope, receive, send)
            return
        try:
            status, body = 200, await self._publish(scope, receive)
        except ClientGone:
            return
        except PerkflowError as exc:
            status, payload = compat.from_perkflow_error(exc)
            body = orjson.dumps(payload, option=OPTIONS)
        except BodyTooLarge:
            raise  # the body-size guard around this handler answers it
        except Exception as exc:
            log.exception("unhandled error", exc_info=exc)
            status = 500
            body = orjson.dumps(
                compat.error_body(500, "internal_error", "an unexpected error occurred; it has been logged"),
                option=OPTIONS,
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _publish(self, scope: Scope, receive: Receive) -> bytes:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of repeated headers, as Starlette's .get

        def header(name: bytes) -> str | None:
            value = headers.get(name)
            return value.decode("latin-1") if value is not None else None

        verifier = scope["app"].state.key_verifier
        principal = authenticate_with(
            self.ctx, verifier, header(b"authorization"), header(b"x-app-id"), header(b"x-app-token")
        )
        principal.require(SCOPE)
        query: bytes = scope.get("query_string", b"")
        # Starlette's query_params: latin-1, blank values kept, the last of a repeated key wins.
        get = scope["method"] == "GET"
        wanted = get or b"join_once" in query  # Braze's cache_id alone is not worth parsing
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if wanted else {}
        if get:
            payload = query_payload(params)
        else:
            payload = parse_body(await _read_body(receive), header(b"content-type") or "")
        join_once = params.get("join_once", "false").lower() == "true"
        result: dict[str, Any] = await groupcommit.run_write(self.ctx, publish_work(payload, join_once))
        return orjson.dumps(result, option=OPTIONS)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class ClientGone(Exception):
    """The client disconnected before sending its whole body; nothing was written."""
