"""Inbound membership requests as Braze webhook campaigns send them (Punchh's custom-segment shape).

A Braze webhook posts `{"user_id": "..."}` or `{"email": "..."}` (Punchh also sends
`custom_segment_id`; `user_id` wins when both identifiers are given). Its "key-value pairs" body
arrives form-encoded, or as the raw `user_id=...&...` text under a JSON content type; all of these are
read the same way. Requests are signed with the segment's webhook secret as an HMAC-SHA256 of the raw
body in `X-Perkflow-Signature` (hex, `sha256=<hex>` or base64, whichever the template produces).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from perkflow.api.routing import _has_nul
from perkflow.core.errors import InvalidInput, PerkflowError

SIGNATURE_HEADER = "X-Perkflow-Signature"
MAX_MEMBERS = 1000
MAX_ID_LENGTH = 128
MAX_EMAIL_LENGTH = 320


class InvalidBody(PerkflowError):
    status = 400
    code = "invalid_body"


@dataclass(frozen=True, slots=True)
class MemberReference:
    """Who a request is about: member ids, or one email address."""

    member_ids: tuple[str, ...] = ()
    email: str | None = None

    def describe(self) -> dict[str, Any]:
        if self.email is not None:
            return {"email": self.email}
        if len(self.member_ids) == 1:
            return {"user_id": self.member_ids[0]}
        return {"member_ids": list(self.member_ids)}


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The request body as a dict, whichever of JSON, form or raw key=value text it is."""
    if not body.strip():
        raise InvalidInput("the request body is empty; send user_id or email", code="invalid_input")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBody("the request body is not UTF-8 text") from exc
    if "\x00" in text:
        raise InvalidBody("the request body may not contain NUL characters")
    media = content_type.split(";")[0].strip().lower()
    stripped = text.strip()
    if media != "application/x-www-form-urlencoded" and stripped.startswith(("{", "[", '"')):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidBody(
                f"the request body is not valid JSON: {exc}", details={"hint": "numbers must fit in 64 bits"}
            ) from exc
        if _has_nul(value):
            # PostgreSQL cannot hold NUL in text; an escaped \u0000 must not reach a query.
            raise InvalidBody("text may not contain NUL characters (\\u0000)")
        if isinstance(value, str) and "=" in value:
            return dict(parse_qsl(value.strip(), keep_blank_values=True))
        if not isinstance(value, dict):
            raise InvalidBody("the request body must be a JSON object or key=value pairs")
        return value
    if "=" in stripped:
        return dict(parse_qsl(stripped, keep_blank_values=True))
    raise InvalidBody("the request body must be a JSON object or key=value pairs such as user_id=123")


def _identifier(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(
            f"{key} must be a string or an integer", code="invalid_input", details={"field": key}
        )
    text = str(value).strip()
    if not text or len(text) > MAX_ID_LENGTH or "\x00" in text:
        raise InvalidInput(
            f"{key} must be 1 to {MAX_ID_LENGTH} characters", code="invalid_input", details={"field": key}
        )
    return text


def read_reference(payload: dict[str, Any], segment_id: str) -> MemberReference:
    """The members a body names: `user_id` (or `member_id`), `email`, or `member_ids` (a list)."""
    named = payload.get("custom_segment_id", payload.get("segment_id"))
    if named is not None and str(named) != segment_id:
        raise InvalidInput(
            f"the body names segment {named!r} but the URL segment {segment_id!r}",
            code="segment_mismatch",
            details={"url": segment_id, "body": str(named)},
        )
    for key in ("user_id", "member_id", "external_id"):
        value = payload.get(key)
        if value is not None and value != "":
            return MemberReference(member_ids=(_identifier(value, key),))
    if "member_ids" in payload:
        listed = payload["member_ids"]
        if not isinstance(listed, list) or not listed or len(listed) > MAX_MEMBERS:
            raise InvalidInput(
                f"member_ids is a list of 1 to {MAX_MEMBERS} member ids",
                code="invalid_input",
                details={"field": "member_ids"},
            )
        return MemberReference(member_ids=tuple(_identifier(v, "member_ids") for v in listed))
    email = payload.get("email")
    if email is not None and email != "":
        if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH or "@" not in email or "\x00" in email:
            raise InvalidInput(
                "email must be an email address", code="invalid_input", details={"field": "email"}
            )
        return MemberReference(email=email.strip().lower())
    raise InvalidInput(
        "name the member: send user_id (the member id) or email",
        code="invalid_input",
        details={"accepted": ["user_id", "email", "member_ids"]},
    )


def signature_matches(secret: str, body: bytes, presented: str) -> bool:
    """Whether `presented` is the HMAC-SHA256 of `body` under `secret` (hex, sha256=hex or base64)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    value = presented.strip()
    value = value[len("sha256=") :] if value.lower().startswith("sha256=") else value
    if len(value) == 64:
        value = value.lower()  # hex digits in either case
    # Compared as bytes: compare_digest refuses non-ASCII text, and headers may carry any.
    presented_bytes = value.encode("utf-8", "replace")
    candidates = (digest.hex().encode(), base64.b64encode(digest))
    return any(hmac.compare_digest(presented_bytes, c) for c in candidates)
