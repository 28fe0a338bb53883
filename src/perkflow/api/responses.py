"""Fast JSON responses: orjson, UTC datetimes rendered with a Z."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=OPTIONS)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details if details is not None else {}}


def no_content() -> Response:
    return Response(status_code=204)
