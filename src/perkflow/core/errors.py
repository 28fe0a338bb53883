"""Errors that reach users: each carries a stable code, a message, details and an HTTP status."""

from __future__ import annotations

from typing import Any


class PerkflowError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(PerkflowError):
    status = 422
    code = "invalid_input"


class NotFound(PerkflowError):
    status = 404
    code = "not_found"


class Conflict(PerkflowError):
    status = 409
    code = "conflict"


class Unauthorized(PerkflowError):
    status = 401
    code = "unauthorized"


class Forbidden(PerkflowError):
    status = 403
    code = "forbidden"


class PayloadTooLarge(PerkflowError):
    status = 413
    code = "payload_too_large"


class InvalidCursor(PerkflowError):
    """A pagination cursor this API did not hand out (tampered, truncated, or from elsewhere)."""

    status = 400
    code = "invalid_cursor"

    def __init__(self, message: str = "the cursor is not one this API returned", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
