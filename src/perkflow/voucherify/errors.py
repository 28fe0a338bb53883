"""Voucherify's error shape for /v1 routes: `{code, key, message, details, request_id}`."""

from __future__ import annotations

import os
from typing import Any

import orjson

from perkflow.api.responses import JSON
from perkflow.core.errors import PerkflowError

PREFIX = "/v1"
# Perkflow error codes that have a Voucherify key of their own.
KEYS = {
    "invalid_input": "invalid_payload",
    "invalid_json": "invalid_payload",
    "invalid_api_key": "unauthorized",
    "insufficient_scope": "forbidden",
    "insufficient_points": "loyalty_card_points_exceeded",
    "concurrent_update": "multiple_requests",
    "database_busy": "multiple_requests",
}


def is_compatible_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def request_id() -> str:
    return "v-" + os.urandom(9).hex()


def error_body(
    status: int,
    key: str,
    message: str,
    details: Any = None,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> dict[str, Any]:
    """Voucherify's error object; `details` is a string there, so structured details are JSON text."""
    if isinstance(details, str):
        detail_text = details
    elif details:
        detail_text = orjson.dumps(details, default=str).decode()
    else:
        detail_text = message
    body: dict[str, Any] = {
        "code": status,
        "key": key,
        "message": message,
        "details": detail_text,
        "request_id": request_id(),
    }
    if resource_type is not None:
        body["resource_type"] = resource_type
    if resource_id is not None:
        body["resource_id"] = resource_id
    return body


def from_perkflow_error(exc: PerkflowError) -> tuple[int, dict[str, Any]]:
    """Status and body for any Perkflow error raised on a /v1 route (422 becomes Voucherify's 400)."""
    status = 400 if exc.status == 422 else exc.status
    key = KEYS.get(exc.code, exc.code)
    resource_type = getattr(exc, "resource_type", None)
    resource_id = getattr(exc, "resource_id", None)
    if status == 404:
        if resource_type is None and exc.code.endswith("_not_found"):
            resource_type = exc.code[: -len("_not_found")]
        key = "not_found"
    return status, error_body(
        status, key, exc.message, exc.details, resource_type=resource_type, resource_id=resource_id
    )


def response_for(exc: PerkflowError) -> JSON:
    status, body = from_perkflow_error(exc)
    return JSON(body, status_code=status)


HTTP_KEYS = {
    400: "invalid_payload",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "duplicate_found",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_payload",
    429: "too_many_requests",
    500: "internal_error",
}


def http_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSON:
    status = 400 if status == 422 else status
    key = HTTP_KEYS.get(status, "error")
    return JSON(error_body(status, key, message), status_code=status, headers=headers)
