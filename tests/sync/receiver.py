"""A webhook receiver for tests: records every request and answers with the statuses it is told to."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                self.received.append(Received(body, {k.lower(): v for k, v in request.headers.items()}))
                status = self.statuses.pop(0) if self.statuses else 200
            return JSONResponse({"ok": status < 300}, status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def bodies(self) -> list[Any]:
        import orjson

        with self.lock:
            return [orjson.loads(r.body) for r in self.received]
