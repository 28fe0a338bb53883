"""API keys: `<key id>.<secret>`, stored as a SHA-256 of the secret, each with a set of scopes.

The secret is 32 random bytes, so a fast hash is safe (no password-style stretching is needed) and
verification costs microseconds, which matters for Connected Content traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from perkflow.auth.tables import api_keys
from perkflow.core.clock import isoformat_z
from perkflow.core.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from perkflow.core.ids import new_id
from perkflow.core.uow import UnitOfWork

# Every scope a key can carry. `admin` grants all of them.
SCOPES = {
    "admin": "everything, including configuration and API keys",
    "events:write": "send member events",
    "members:read": "read members, their points and activity",
    "members:write": "create and update members, claim rewards",
    "rewards:read": "read the reward catalogue",
    "rewards:write": "manage rewards and coupon pools",
    "programs:read": "read programs, earning rules and tiers",
    "publications:write": "publish codes to customers (enough for Braze Connected Content)",
    "vouchers:read": "read codes, campaigns and publications",
    "vouchers:write": "validate, redeem and roll back codes; change gift and loyalty card balances",
    "campaigns:write": "manage campaigns, code generation, distributions, rewards and loyalty programs",
    "segments:read": "read segments, their members and previews",
    "segments:write": "add and remove members of static segments (enough for Braze webhook campaigns)",
    "workflows:read": "read workflows, their versions and runs",
    "workflows:write": "create, edit, activate, test and delete workflows; install templates",
}


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(
                f"this API key lacks the {scope!r} scope",
                code="insufficient_scope",
                details={"required": scope, "granted": sorted(self.scopes)},
            )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - SCOPES.keys())
    if unknown or not scopes:
        raise InvalidInput(
            "unknown or missing scopes" if scopes else "a key needs at least one scope",
            code="invalid_scopes",
            details={"unknown": unknown, "allowed": sorted(SCOPES)},
        )
    return sorted(set(scopes))


def create_api_key(uow: UnitOfWork, name: str, scopes: list[str]) -> tuple[dict[str, Any], str]:
    """Create a key; returns its description and the full key, which is shown only this once."""
    scopes = validate_scopes(scopes)
    key_id = new_id("key")
    secret = secrets.token_urlsafe(32)
    uow.conn.execute(
        insert(api_keys).values(
            id=key_id, name=name, secret_hash=hash_secret(secret), scopes=scopes, created_at=uow.now
        )
    )
    return {
        "id": key_id,
        "name": name,
        "scopes": scopes,
        "created_at": isoformat_z(uow.now),
    }, f"{key_id}.{secret}"


def list_api_keys(uow: UnitOfWork) -> list[dict[str, Any]]:
    rows = uow.conn.execute(select(api_keys).order_by(api_keys.c.created_at))
    return [
        {
            "id": r.id,
            "name": r.name,
            "scopes": r.scopes,
            "created_at": isoformat_z(r.created_at),
            "revoked_at": isoformat_z(r.revoked_at) if r.revoked_at else None,
        }
        for r in rows
    ]


def revoke_api_key(uow: UnitOfWork, key_id: str) -> None:
    result = uow.conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=uow.now)
    )
    if result.rowcount == 0:
        raise NotFound(f"no active API key {key_id!r}", code="api_key_not_found")


class KeyVerifier:
    """Checks presented keys against the database, remembering good ones for a few seconds.

    The short cache keeps hot endpoints from reading the key table on every request; a revoked key
    stops working within `ttl_s`.
    """

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str, Principal]] = {}
        self._lock = threading.Lock()

    def verify(self, uow_factory: Any, key_id: str, secret: str) -> Principal:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is not None and hit[0] > now:
            if hmac.compare_digest(hit[1], hash_secret(secret)):
                return hit[2]
            raise Unauthorized("the API key is not valid", code="invalid_api_key")
        with uow_factory(write=False) as uow:
            row = uow.conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if (
            row is None
            or row.revoked_at is not None
            or not hmac.compare_digest(row.secret_hash, hash_secret(secret))
        ):
            raise Unauthorized("the API key is not valid", code="invalid_api_key")
        principal = Principal(row.id, row.name, frozenset(row.scopes))
        with self._lock:
            self._cache[key_id] = (now + self.ttl_s, row.secret_hash, principal)
        return principal

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def split_key(raw: str) -> tuple[str, str]:
    key_id, sep, secret = raw.strip().partition(".")
    if not sep or not key_id or not secret:
        raise Unauthorized("an API key has the form <key id>.<secret>", code="invalid_api_key")
    return key_id, secret
