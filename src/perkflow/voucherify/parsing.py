"""Reading /v1 request bodies the way Voucherify's clients send them.

The SDK sends JSON (and an empty body on some POSTs). Braze Connected Content turns a `k=v&...` body
into a JSON object of strings when the content type is JSON; older set-ups send it form-encoded, or as
the raw `k=v&...` text under a JSON content type. All of these are accepted.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Request

from perkflow.api.routing import _has_nul
from perkflow.promotions.service import PromotionError

BRACKETED = re.compile(r"^([A-Za-z0-9_]+)\[([A-Za-z0-9_]+)\]$")


def parse_form(text: str) -> dict[str, Any]:
    """`a=1&b=2&c[d]=3` -> {"a": "1", "b": "2", "c": {"d": "3"}} (the last value of a repeated key wins)."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        nested = BRACKETED.match(key)
        if nested:
            parent = out.get(nested.group(1))
            if not isinstance(parent, dict):
                parent = out[nested.group(1)] = {}
            parent[nested.group(2)] = value
        else:
            out[key] = value
    return out


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    media = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromotionError("invalid_payload", "the request body is not UTF-8") from exc
    if "\x00" in text:
        raise PromotionError("invalid_payload", "the request body may not contain NUL characters")
    if media == "application/x-www-form-urlencoded":
        return parse_form(text)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[", '"')):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PromotionError(
                "invalid_payload",
                f"the request body is not valid JSON: {exc}",
                details={"hint": "numbers must fit in 64 bits"},
            ) from exc
        if _has_nul(value):
            raise PromotionError("invalid_payload", "text may not contain NUL characters")
        if isinstance(value, str) and "=" in value:
            return parse_form(value)
        if not isinstance(value, dict):
            raise PromotionError("invalid_payload", "the request body must be a JSON object")
        return value
    if "=" in text:
        return parse_form(text.strip())
    raise PromotionError("invalid_payload", "the request body must be a JSON object or key=value pairs")


async def read_payload(request: Request) -> dict[str, Any]:
    return parse_body(await request.body(), request.headers.get("content-type", ""))


async def read_list_payload(request: Request) -> list[Any]:
    """A body that is a JSON list (reward assignments); an object is taken as a list of one."""
    body = await request.body()
    if not body.strip():
        return []
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PromotionError("invalid_payload", f"the request body is not valid JSON: {exc}") from exc
    if _has_nul(value):
        raise PromotionError("invalid_payload", "text may not contain NUL characters")
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise PromotionError("invalid_payload", "the request body must be a JSON list")
    return value
