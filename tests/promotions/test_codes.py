"""Code generation (patterns, charsets, project-wide uniqueness, impossible requests), background
generation with progress, and the streamed CSV export (API and CLI) for Braze promotion-code lists."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.core.context import AppContext
from perkflow.promotions import service
from perkflow.promotions.tables import campaigns, vouchers
from tests.promotions.conftest import create_campaign, publish


def codes_of(api: TestClient, campaign_id: str, *, unpublished: bool = False) -> list[str]:
    response = api.get(f"/api/v1/campaigns/{campaign_id}/codes.csv", params={"unpublished": unpublished})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.text.endswith("\n") or response.text == ""
    return response.text.splitlines()


@pytest.mark.parametrize(
    ("config", "shape"),
    [
        ({"pattern": "10OFF-####-??", "charset": "0123456789"}, r"^10OFF-\d{4}-\?\?$"),
        (
            {"length": 12, "charset": "alphabetic_uppercase", "prefix": "SUMMER-", "postfix": "-26"},
            r"^SUMMER-[A-Z]{12}-26$",
        ),
        ({"length": 6, "charset": "numbers"}, r"^\d{6}$"),
        ({"length": 8, "charset": "ab"}, r"^[ab]{8}$"),
        ({}, r"^[0-9a-zA-Z]{8}$"),
    ],
)
def test_patterns_and_charsets(api: TestClient, config: dict[str, object], shape: str) -> None:
    campaign = create_campaign(api, code_config=config, vouchers_count=200)
    codes = codes_of(api, campaign["id"])
    assert len(codes) == len(set(codes)) == 200
    assert all(re.match(shape, code) for code in codes), codes[:3]


def test_codes_are_unique_across_the_project_and_fill_small_spaces(api: TestClient, ctx: AppContext) -> None:
    # 4 x 2^... : a two-letter charset over 8 positions has 256 codes; two campaigns take them all.
    first = create_campaign(api, name="First", code_config={"length": 8, "charset": "xy"}, vouchers_count=200)
    second = create_campaign(
        api, name="Second", code_config={"length": 8, "charset": "xy"}, vouchers_count=56
    )
    everything = codes_of(api, first["id"]) + codes_of(api, second["id"])
    assert len(set(everything)) == 256
    refused = api.post(f"/api/v1/campaigns/{first['id']}/codes/generate", json={"count": 57})
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_code_config"
    # The pattern allows one more code for the second campaign, but the first took the space: the
    # background generation stops with the reason instead of looping.
    assert api.post(f"/api/v1/campaigns/{second['id']}/codes/generate", json={"count": 1}).status_code == 202
    deadline = time.monotonic() + 30
    while api.get(f"/api/v1/campaigns/{second['id']}").json()["generation"]["status"] == "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    generation = api.get(f"/api/v1/campaigns/{second['id']}").json()["generation"]
    assert generation["status"] == "FAILED" and "exhausted" in generation["error"]
    with ctx.uow() as uow, pytest.raises(Exception, match=r"UNIQUE|unique|duplicate"):
        uow.conn.execute(vouchers.insert().values(campaign_pk=1, code=everything[0]))


def test_impossible_requests_are_refused_up_front(api: TestClient) -> None:
    for config, count in (
        ({"pattern": "AB-##", "charset": "0123456789"}, 101),
        ({"length": 3, "charset": "ab"}, 9),
    ):
        response = api.post(
            "/api/v1/campaigns",
            json={
                "name": "Too many",
                "discount": {"type": "AMOUNT", "amount_off": 1},
                "code_config": config,
                "vouchers_count": count,
            },
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_code_config" and "capacity" in response.json()["details"]
    for config in ({"pattern": "NOHASH"}, {"charset": "a"}, {"charset": "aab"}, {"length": 200}):
        response = api.post(
            "/api/v1/campaigns",
            json={"name": "Bad", "discount": {"type": "AMOUNT", "amount_off": 1}, "code_config": config},
        )
        assert response.status_code in (400, 422), (config, response.text)
    assert api.get("/api/v1/campaigns").json()["data"] == []  # nothing half-written


def test_large_campaigns_generate_in_the_background_with_progress(api: TestClient) -> None:
    campaign = create_campaign(api, vouchers_count=service.SYNC_GENERATION_LIMIT + 5000)
    assert campaign["generation"]["status"] == "IN_PROGRESS"
    deadline = time.monotonic() + 60
    while True:
        found = api.get(f"/api/v1/campaigns/{campaign['id']}").json()["generation"]
        if found["status"] != "IN_PROGRESS" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found == {"status": "DONE", "requested": 15000, "generated": 15000, "error": None}
    compatible = api.get(f"/v1/campaigns/{campaign['id']}").json()
    assert compatible["vouchers_generation_status"] == "DONE" and compatible["vouchers_count"] == 15000


def test_export_streams_codes_and_can_skip_published_ones(
    api: TestClient, ctx: AppContext, tmp_path: Path
) -> None:
    campaign = create_campaign(api, vouchers_count=30)
    taken = {publish(api, campaign["id"], f"m{n}").json()["voucher"]["code"] for n in range(4)}
    everything = codes_of(api, campaign["id"])
    free = codes_of(api, campaign["id"], unpublished=True)
    assert len(everything) == 30 and len(free) == 26 and not taken & set(free)
    chunks = list(service.export_codes(ctx, campaign["id"], unpublished=True, chunk=7))
    assert len(chunks) == 4 and "".join(chunks).splitlines() == free
    assert api.get("/api/v1/campaigns/nope/codes.csv").status_code == 404
    output = tmp_path / "codes.csv"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "perkflow",
            "codes",
            "export",
            campaign["name"],
            "--unpublished",
            "--output",
            str(output),
        ],
        env={"PERKFLOW_DATABASE_URL": ctx.settings.database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert output.read_text().splitlines() == free and "26 codes exported" in cli.stderr
    with ctx.uow(write=False) as uow:
        total = uow.conn.execute(select(func.count()).select_from(vouchers)).scalar_one()
    assert total == 30


@pytest.mark.parametrize(
    "config",
    [
        {"charset": " ab"},
        {"charset": 'a,"\n'},
        {"charset": "ab'"},
        {"charset": "äöüß"},
        {"charset": "😀😃"},
        {"prefix": "SUMMER SALE-"},
        {"postfix": "-\t26"},
        {"prefix": "A,B"},
        {"prefix": "#"},
        {"pattern": "GIFT-##\n"},
        {"pattern": 'GIFT-"##"'},
        {"pattern": "ÄÄ-####"},
        {"length": 1.5},
        {"length": 10**15},
    ],
)
def test_codes_are_refused_characters_a_code_list_cannot_carry(
    api: TestClient, config: dict[str, object]
) -> None:
    native = api.post(
        "/api/v1/campaigns",
        json={
            "name": "Odd",
            "discount": {"type": "AMOUNT", "amount_off": 1},
            "code_config": config,
            "vouchers_count": 3,
        },
    )
    assert native.status_code in (400, 422), native.text
    assert native.json()["code"] in ("invalid_code_config", "invalid_input")
    compatible = api.post(
        "/v1/campaigns",
        json={
            "name": "Odd",
            "vouchers_count": 3,
            "voucher": {
                "type": "DISCOUNT_VOUCHER",
                "discount": {"type": "AMOUNT", "amount_off": 1},
                "code_config": config,
            },
        },
    )
    assert compatible.status_code == 400 and compatible.json()["key"] == "invalid_code_config", (
        compatible.text
    )
    assert api.get("/api/v1/campaigns").json()["data"] == []


def test_export_quotes_codes_that_need_it(api: TestClient, ctx: AppContext) -> None:
    import csv
    import io

    campaign = create_campaign(api, vouchers_count=2)
    with ctx.uow() as uow:  # codes made before their characters were checked (or imported)
        pk = uow.conn.execute(select(campaigns.c.pk).where(campaigns.c.id == campaign["id"])).scalar_one()
        uow.conn.execute(
            vouchers.insert(), [{"campaign_pk": pk, "code": 'A,"B'}, {"campaign_pk": pk, "code": "C\nD"}]
        )
        uow.commit()
    text = api.get(f"/api/v1/campaigns/{campaign['id']}/codes.csv").text
    rows = list(csv.reader(io.StringIO(text)))
    assert all(len(row) == 1 for row in rows) and len(rows) == 4
    assert [row[0] for row in rows][2:] == ['A,"B', "C\nD"]
