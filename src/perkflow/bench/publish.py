"""`perkflow bench publish`: Braze Connected Content traffic against `POST /v1/publications`.

A `perkflow serve` process (embedded SQLite) serves the API; this process drives it over loopback with
concurrent keep-alive HTTP/1.1 connections (asyncio streams, no client library in the way), each
request in the seed snippet's shape: `X-App-Id`/`X-App-Token`, a `?cache_id=` query, and a JSON body
`{campaign, customer, channel: Braze, source_id}` with a new source_id, so every request takes a new code.
Errors count non-200 answers, answers without a code, and codes handed out twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from sqlalchemy import insert

from perkflow.auth.service import create_api_key
from perkflow.bootstrap import build_context, upgrade_database
from perkflow.core import transactions
from perkflow.core.uow import UnitOfWork
from perkflow.members.tables import members
from perkflow.promotions.service import create_campaign, generate_codes
from perkflow.sandbox.server import free_port


def _prepare(url: str, *, codes: int, customers: int) -> tuple[str, str]:
    upgrade_database(url)
    ctx = build_context(database_url=url)
    campaign = transactions.run(
        ctx,
        lambda uow: create_campaign(
            uow,
            {
                "name": "Connected Content",
                "type": "STATIC",
                "discount": {"type": "AMOUNT", "amount_off": 1000},
                "code_config": {"length": 10, "charset": "readable"},
            },
        ),
    )
    generate_codes(ctx, campaign.id, codes, chunk=100_000)

    def add_members(uow: UnitOfWork) -> None:
        now = uow.now
        rows = [
            {"id": f"user-{n:06d}", "status": "active", "fields": {}, "created_at": now, "updated_at": now}
            for n in range(customers)
        ]
        uow.conn.execute(insert(members), rows)

    transactions.run(ctx, add_members)
    _, key = transactions.run(ctx, lambda uow: create_api_key(uow, "braze", ["publications:write"]))
    ctx.close()
    return campaign.id, key


async def _client(
    port: int,
    headers: bytes,
    campaign: str,
    counter: list[int],
    deadline: float,
    latencies: list[float],
    codes: list[str],
    errors: list[int],
    customers: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            n = counter[0]
            counter[0] += 1
            user = f"user-{n % customers:06d}"
            source_id = f"cmp-{campaign}-{n}"
            body = orjson.dumps(
                {"campaign": campaign, "customer": user, "channel": "Braze", "source_id": source_id}
            )
            request = (
                f"POST /v1/publications?cache_id={source_id} HTTP/1.1\r\n".encode()
                + headers
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = status_line.split(b" ", 2)[1] if status_line else b"000"
            if status != b"200":
                errors.append(n)
                continue
            code = orjson.loads(payload).get("voucher", {}).get("code")
            if not code:
                errors.append(n)
            else:
                codes.append(code)
    finally:
        writer.close()


async def _drive(
    port: int, key: str, campaign: str, *, seconds: float, clients: int, customers: int
) -> dict[str, Any]:
    key_id, _, secret = key.partition(".")
    headers = (
        f"Host: 127.0.0.1:{port}\r\nX-App-Id: {key_id}\r\nX-App-Token: {secret}\r\n"
        "Content-Type: application/json\r\nAccept: */*\r\nUser-Agent: Braze Sender bench\r\n"
    ).encode()
    counter = [0]
    latencies: list[float] = []
    codes: list[str] = []
    errors: list[int] = []
    # A short warm-up so connection set-up and first-request caches are not measured.
    warm = time.perf_counter() + 1.0
    await asyncio.gather(
        *(_client(port, headers, campaign, counter, warm, [], [], errors, customers) for _ in range(clients))
    )
    latencies.clear()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _client(port, headers, campaign, counter, deadline, latencies, codes, errors, customers)
            for _ in range(clients)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    duplicates = len(codes) - len(set(codes))

    def pct(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 2) if latencies else 0.0
        )

    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": len(errors) + duplicates,
        "requests": len(latencies),
        "clients": clients,
    }


def run_publish_bench(*, seconds: float, clients: int, customers: int, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="perkflow-bench-publish-"))
    url = f"sqlite:///{workdir / 'perkflow.db'}"
    codes = int(max(50_000, seconds * 4_000))
    console.print(f"preparing {codes} codes and {customers} members in {workdir}")
    campaign, key = _prepare(url, codes=codes, customers=customers)
    port = free_port()
    env = {
        **os.environ,
        "PERKFLOW_DATABASE_URL": url,
        "PERKFLOW_SERVE_RUNS_JOBS": "false",
        "PERKFLOW_LOG_LEVEL": "warning",
        "PERKFLOW_SECRET_KEY_FILE": str(workdir / "secret.key"),
    }
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "perkflow", "serve", "--port", str(port), "--no-migrate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        console.print(f"driving http://127.0.0.1:{port} for {seconds:g} s with {clients} clients")
        result = asyncio.run(
            _drive(port, key, campaign, seconds=seconds, clients=clients, customers=customers)
        )
    finally:
        server.terminate()
        server.wait(10)
    console.print(f"{result['requests']} requests; database: {workdir}")
    line = {k: result[k] for k in ("requests_per_s", "p50_ms", "p99_ms", "errors")}
    print(json.dumps(line))
    return line
