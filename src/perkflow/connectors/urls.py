"""Normalising the base URLs people paste into connection forms."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from perkflow.connectors.base import ConnectionCheckFailed

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def normalize_base_url(raw: str, *, strip_paths: tuple[str, ...] = ()) -> str:
    """An https base URL without trailing slash or pasted endpoint paths; http only on loopback.

    Loopback http is allowed so the sandboxes (and a local proxy) can stand in for the platform.
    """
    text = raw.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port outside 0-65535
    except ValueError:
        raise ConnectionCheckFailed(f"{raw[:200]!r} is not a URL", code="invalid_url") from None
    if parts.scheme not in ("https", "http") or not host or any(ch.isspace() for ch in text):
        raise ConnectionCheckFailed(f"{raw[:200]!r} is not a URL", code="invalid_url")
    if parts.scheme == "http" and host not in LOOPBACK:
        raise ConnectionCheckFailed(
            "the platform URL must use https", code="invalid_url", details={"url": raw}
        )
    path = parts.path.rstrip("/")
    for suffix in strip_paths:
        if suffix and path.endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
