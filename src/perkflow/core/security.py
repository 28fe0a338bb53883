"""Secrets at rest and signatures: the instance key, encryption of stored credentials, HMAC signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from perkflow.core.errors import PerkflowError
from perkflow.core.settings import Settings


class SecretsUnreadable(PerkflowError):
    status = 500
    code = "secrets_unreadable"


def load_instance_key(settings: Settings) -> bytes:
    """The key that encrypts stored credentials: PERKFLOW_SECRET_KEY, or a key file made on first run.

    Any string works as PERKFLOW_SECRET_KEY (it is stretched to a Fernet key with SHA-256); the key
    file holds a random key and is created readable by its owner only.
    """
    if settings.secret_key:
        return base64.urlsafe_b64encode(hashlib.sha256(settings.secret_key.encode()).digest())
    path = Path(settings.secret_key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return path.read_bytes().strip()


class Vault:
    """Encrypts small JSON documents (integration credentials) with the instance key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(orjson.dumps(value)).decode()

    def open(self, token: str) -> dict[str, Any]:
        try:
            opened: dict[str, Any] = orjson.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise SecretsUnreadable(
                "stored credentials cannot be decrypted: the instance key (PERKFLOW_SECRET_KEY or its key "
                "file) is not the one they were saved with; reconnect the integration"
            ) from exc
        return opened


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of a raw body: what outbound webhooks carry and receivers recompute."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, signature: str) -> bool:
    expected = sign(secret, body)
    return hmac.compare_digest(expected, signature.removeprefix("sha256="))


def random_secret() -> str:
    return secrets.token_urlsafe(32)
