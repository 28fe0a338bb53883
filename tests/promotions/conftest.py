"""Fixtures for promotion tests: a live Perkflow server on loopback, keys in X-App form, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core.context import AppContext
from perkflow.sandbox.server import ServerThread
from tests.conftest import key_with
from tests.sync.conftest import braze, worker  # noqa: F401 - the sandbox Braze and a delivery worker


@pytest.fixture
def server(ctx: AppContext) -> Iterator[ServerThread]:
    """Perkflow's API served by uvicorn on loopback (real HTTP, real concurrency)."""
    from perkflow.api.app import create_app

    with ServerThread(create_app(ctx)) as running:
        yield running


def app_headers(key: str) -> dict[str, str]:
    """A Perkflow key `<key id>.<secret>` in Voucherify's X-App-Id / X-App-Token form."""
    key_id, _, secret = key.partition(".")
    return {"X-App-Id": key_id, "X-App-Token": secret}


@pytest.fixture
def admin_app_headers(admin_key: str) -> dict[str, str]:
    return app_headers(admin_key)


def publisher_key(ctx: AppContext) -> str:
    return key_with(ctx, "publications:write")


def create_campaign(api: TestClient, **spec: Any) -> dict[str, Any]:
    body = {
        "name": spec.pop("name", "Spring sale"),
        "campaign_type": "DISCOUNT_COUPONS",
        "discount": {"type": "AMOUNT", "amount_off": 500},
        "vouchers_count": 5,
        **spec,
    }
    response = api.post("/api/v1/campaigns", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def publish(api: TestClient, campaign: str, customer: str, source_id: str | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"campaign": campaign, "customer": customer, **extra}
    if source_id is not None:
        body["source_id"] = source_id
    return api.post("/v1/publications", json=body)


def redeem(api: TestClient, code: str, customer: str, amount: int = 10_000, **redeemable: Any) -> Any:
    return api.post(
        "/v1/redemptions",
        json={
            "redeemables": [{"object": "voucher", "id": code, **redeemable}],
            "customer": {"source_id": customer},
            "order": {"amount": amount},
        },
    )
