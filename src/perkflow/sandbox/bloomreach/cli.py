"""`perkflow sandbox bloomreach`: run the fake Bloomreach Engagement Tracking API in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from perkflow.sandbox.bloomreach.app import create_app
from perkflow.sandbox.bloomreach.config import BloomreachSandboxConfig
from perkflow.sandbox.bloomreach.sandbox import BloomreachSandbox
from perkflow.sandbox.server import serve_forever


def _parse_api_keys(values: list[str] | None) -> dict[str, str]:
    if not values:
        return {"key-id": "key-secret"}
    keys: dict[str, str] = {}
    for value in values:
        key_id, sep, secret = value.partition(":")
        if not sep or not key_id or not secret:
            raise typer.BadParameter(f"expected KEYID:SECRET, got {value!r}", param_hint="--api-key")
        keys[key_id] = secret
    return keys


def serve_bloomreach_sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9200,
    project_token: Annotated[
        str, typer.Option(help="Project token accepted in the URL path.")
    ] = "test-project",  # noqa: S107 - a project token is an identifier, not a secret
    api_key: Annotated[
        list[str] | None,
        typer.Option(help="Private API key as KEYID:SECRET; repeatable. Default: key-id:key-secret."),
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(help="Requests per second per source IP; 0 disables the limit.")
    ] = 100,
    error_rate: Annotated[
        float, typer.Option(help="Share of requests answered with a random 500/503.")
    ] = 0.0,
    slow_ms: Annotated[int, typer.Option(help="Delay added to every tracking request, in milliseconds.")] = 0,
    drop_rate: Annotated[float, typer.Option(help="Share of requests whose connection is cut.")] = 0.0,
    error_mode: Annotated[
        str, typer.Option(help="Single-route errors: '200' (HTTP 200 + success:false) or '4xx' (HTTP 400).")
    ] = "200",
) -> None:
    """Serve a fake Bloomreach Engagement Tracking API (with /sandbox debug routes) until interrupted."""
    if error_mode not in ("200", "4xx"):
        raise typer.BadParameter("must be '200' or '4xx'", param_hint="--error-mode")
    config = BloomreachSandboxConfig(
        project_token=project_token,
        api_keys=_parse_api_keys(api_key),
        rate_limit_per_s=rate_limit or None,
        error_mode="200" if error_mode == "200" else "4xx",
    )
    sandbox = BloomreachSandbox(config)
    try:
        sandbox.set_faults(error_rate=error_rate, slow_ms=slow_ms, drop_rate=drop_rate)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    base = f"http://{host}:{port}"
    keys = ", ".join(config.api_keys)
    typer.echo(f"Bloomreach sandbox on {base}/track/v2/projects/{project_token}/ (API keys: {keys})")
    typer.echo(f"Debug routes: {base}/sandbox/stats, /sandbox/customers, /sandbox/events, /sandbox/requests")
    serve_forever(create_app(sandbox), host, port)
