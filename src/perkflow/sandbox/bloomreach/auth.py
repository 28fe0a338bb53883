"""Tracking API authentication rules: private keys over HTTP Basic, public tokens, and their error answers."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from perkflow.sandbox.bloomreach.config import BloomreachSandboxConfig


@dataclass(frozen=True)
class AuthFailure:
    status: int
    error: str


NOT_PROVIDED = AuthFailure(401, "Access key not provided")
NOT_FOUND = AuthFailure(401, "Access key not found")
INVALID_SECRET = AuthFailure(403, "invalid secret")
MALFORMED = AuthFailure(400, "Could not authenticate")
PUBLIC_NOT_ALLOWED = AuthFailure(403, "This method is not available with a public API token")
# Contract §6: a 403 also means a missing permission; clients look for "no permission" in the body.
NO_PERMISSION = AuthFailure(403, "You have no permission to access this project")


def check_auth(
    config: BloomreachSandboxConfig,
    authorization: str | None,
    access_token: str | None = None,
    *,
    allow_public: bool = True,
) -> AuthFailure | None:
    """None when the caller may proceed, else the failure Bloomreach would answer."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return MALFORMED
        key_id, _, secret = decoded.partition(":")
        # The Python SDK sends Basic auth even without credentials (`Og==`, i.e. ":").
        if not key_id:
            return NOT_PROVIDED
        expected = config.api_keys.get(key_id)
        if expected is None:
            return NOT_FOUND
        if not hmac.compare_digest(expected.encode(), secret.encode()):
            return INVALID_SECRET
        return NO_PERMISSION if key_id in config.keys_without_access else None
    token = credentials if scheme.lower() == "token" and credentials else access_token
    if token:
        if token not in config.public_tokens:
            return NOT_FOUND
        return None if allow_public else PUBLIC_NOT_ALLOWED
    return NOT_PROVIDED
