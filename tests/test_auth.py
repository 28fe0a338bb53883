"""API keys: missing or wrong keys are 401, missing scopes are 403, and the CLI prints a usable key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from perkflow.api.app import create_app
from perkflow.core.context import AppContext
from tests.conftest import event, key_with


@pytest.fixture
def anonymous(ctx: AppContext) -> TestClient:
    return TestClient(create_app(ctx))


def test_requests_without_a_valid_key_are_401(anonymous: TestClient, admin_key: str) -> None:
    missing = anonymous.get("/api/v1/members")
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    key_id = admin_key.split(".")[0]
    for header in (f"Bearer {key_id}.wrong", "Bearer nodot", "Basic abc", f"Bearer {key_id}."):
        response = anonymous.get("/api/v1/members", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_scopes_limit_what_a_key_can_do(anonymous: TestClient, ctx: AppContext) -> None:
    reader = {"Authorization": f"Bearer {key_with(ctx, 'members:read')}"}
    writer = {"Authorization": f"Bearer {key_with(ctx, 'events:write')}"}
    assert anonymous.get("/api/v1/members", headers=reader).status_code == 200
    refused = anonymous.post("/api/v1/events", json=event("a", "opt_in"), headers=reader)
    assert refused.status_code == 403
    assert refused.json()["details"]["required"] == "events:write"
    assert anonymous.get("/api/v1/members", headers=writer).status_code == 403
    assert anonymous.post("/api/v1/programs", json={}, headers=writer).status_code == 403


def test_x_app_headers_are_accepted_too(anonymous: TestClient, admin_key: str) -> None:
    key_id, secret = admin_key.split(".", 1)
    response = anonymous.get("/api/v1/members", headers={"X-App-Id": key_id, "X-App-Token": secret})
    assert response.status_code == 200


def test_revoked_keys_stop_working(api: TestClient, anonymous: TestClient) -> None:
    created = api.post("/api/v1/api-keys", json={"name": "temp", "scopes": ["members:read"]})
    assert created.status_code == 201
    key = created.json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert anonymous.get("/api/v1/members", headers=headers).status_code == 200
    assert api.delete(f"/api/v1/api-keys/{created.json()['id']}").status_code == 204
    assert api.get("/api/v1/api-keys").json()["data"][-1]["revoked_at"] is not None
    fresh = TestClient(create_app(anonymous.app.state.ctx))
    assert fresh.get("/api/v1/members", headers=headers).status_code == 401
    bad = api.post("/api/v1/api-keys", json={"name": "x", "scopes": ["root"]})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_scopes"


def test_cli_creates_a_key_printed_alone_on_the_last_line(database_url: str, anonymous: TestClient) -> None:
    env = {**os.environ, "PERKFLOW_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "perkflow", "apikey", "create", "--name", "ci", "--scopes", "members:read"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = done.stdout.strip().splitlines()[-1]
    assert key.count(".") == 1 and key.startswith("key_")
    response = anonymous.get("/api/v1/members", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    refused = subprocess.run(
        [sys.executable, "-m", "perkflow", "apikey", "create", "--name", "ci", "--scopes", "nope"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "unknown" in refused.stderr
