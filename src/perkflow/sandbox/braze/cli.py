"""`perkflow sandbox braze`: run the fake Braze in the foreground (registered by the main CLI)."""

from __future__ import annotations

from typing import Annotated

import typer

from perkflow.sandbox.braze.app import create_app
from perkflow.sandbox.braze.config import ALL_PERMISSIONS, BrazeSandboxConfig
from perkflow.sandbox.braze.sandbox import BrazeSandbox
from perkflow.sandbox.server import serve_forever

DEFAULT_API_KEY = "braze-key"


def parse_api_keys(values: list[str] | None) -> dict[str, frozenset[str]]:
    """`KEY` grants every permission; `KEY:users.track+users.export.ids` grants just those listed."""
    if not values:
        return {DEFAULT_API_KEY: ALL_PERMISSIONS}
    keys: dict[str, frozenset[str]] = {}
    for value in values:
        key, separator, permissions = value.partition(":")
        if not key:
            raise ValueError(f"--api-key {value!r} has no key")
        granted = frozenset(p for p in permissions.split("+") if p) if separator else ALL_PERMISSIONS
        unknown = granted - ALL_PERMISSIONS
        if unknown:
            raise ValueError(f"--api-key {value!r}: unknown permissions {sorted(unknown)}")
        keys[key] = granted
    return keys


def braze_sandbox_config(
    *,
    api_key: list[str] | None = None,
    rate_limit: int | None = 3000,
    rate_window: float = 3.0,
    cap_mode: str = "total",
    mau_mode: bool = False,
    reset_header_mode: str = "epoch",
) -> BrazeSandboxConfig:
    """The config the command line describes; a rate limit of 0 (or None) disables limiting."""
    return BrazeSandboxConfig(
        api_keys=parse_api_keys(api_key),
        rate_limit=rate_limit or None,
        rate_window_s=rate_window,
        cap_mode=cap_mode,  # type: ignore[arg-type]  # validated by the config itself
        mau_mode=mau_mode,
        reset_header_mode=reset_header_mode,  # type: ignore[arg-type]
    )


def serve_braze_sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 9100,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="Accepted REST key, repeatable: KEY (all permissions) or KEY:users.track+users.export.ids",
        ),
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(help="/users/track requests per window; 0 disables limiting")
    ] = 3000,
    rate_window: Annotated[
        float, typer.Option(help="Rate-limit window in seconds, aligned on the clock")
    ] = 3.0,
    cap_mode: Annotated[
        str, typer.Option(help="Object cap: 'total' (75 across arrays) or 'per_array' (75 per array)")
    ] = "total",
    error_rate: Annotated[float, typer.Option(help="Share of requests answered with a random 5xx")] = 0.0,
    slow_ms: Annotated[int, typer.Option(help="Latency added to every /users/track request (ms)")] = 0,
    drop_rate: Annotated[float, typer.Option(help="Share of requests whose connection is dropped")] = 0.0,
    mau_mode: Annotated[
        bool, typer.Option(help="MAU-plan 429s: X-Ratelimit-Retry-After instead of X-RateLimit-*")
    ] = False,
    reset_header_mode: Annotated[
        str, typer.Option(help="X-RateLimit-Reset as 'epoch' seconds or 'seconds' until reset")
    ] = "epoch",
) -> None:
    """Run a fake Braze REST API (/users/track, /users/export/ids, /sandbox/*) until interrupted."""
    try:
        config = braze_sandbox_config(
            api_key=api_key,
            rate_limit=rate_limit,
            rate_window=rate_window,
            cap_mode=cap_mode,
            mau_mode=mau_mode,
            reset_header_mode=reset_header_mode,
        )
        sandbox = BrazeSandbox(config)
        sandbox.set_faults(error_rate=error_rate, slow_ms=slow_ms, drop_rate=drop_rate)
    except ValueError as invalid:
        raise typer.BadParameter(str(invalid)) from invalid
    keys = ", ".join(f"{key} ({'+'.join(sorted(perms))})" for key, perms in config.api_keys.items())
    typer.echo(f"Braze sandbox on http://{host}:{port} — keys: {keys}; debug routes under /sandbox/")
    serve_forever(create_app(sandbox), host, port)
