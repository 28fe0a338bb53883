"""Publications: the seed's Braze Connected Content request, source_id idempotency (also under
concurrent duplicates, on both databases), join_once, scopes, and the voucher_published activity."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from fastapi.testclient import TestClient

from perkflow.core.context import AppContext
from perkflow.sandbox.server import ServerThread
from tests.conftest import key_with
from tests.promotions.conftest import app_headers, create_campaign, publish


def test_the_seed_snippet_request_gets_a_code(api: TestClient, ctx: AppContext, server: ServerThread) -> None:
    campaign = create_campaign(api)
    headers = {**app_headers(key_with(ctx, "publications:write")), "Content-Type": "application/json"}
    url = f"{server.url}/v1/publications?cache_id=cmp_api_id_1user-1"
    # Braze turns `campaign=...&customer=...` into a JSON object of strings under a JSON content type.
    as_json = {
        "campaign": campaign["id"],
        "customer": "user-1",
        "channel": "Braze",
        "source_id": "cmp1user-1",
    }
    first = httpx.post(url, headers=headers, content=json.dumps(as_json))
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    code = first.json()["voucher"]["code"]
    assert first.json()["channel"] == "API" and first.json()["customer"]["source_id"] == "user-1"
    # The raw body as written in the snippet, and a form-encoded one: the same publication each time.
    raw = f"campaign={campaign['id']}&customer=user-1&channel=Braze&source_id=cmp1user-1"
    again = httpx.post(url, headers=headers, content=raw)
    form = httpx.post(
        url, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}, content=raw
    )
    assert again.status_code == form.status_code == 200, (again.text, form.text)
    assert again.json()["voucher"]["code"] == form.json()["voucher"]["code"] == code
    assert again.json()["id"] == first.json()["id"]
    # The campaign may also be named instead of given by id; a GET works too (cacheable by Braze).
    by_name = httpx.get(
        f"{server.url}/v1/publications/create",
        params={"campaign": campaign["name"], "customer": "user-2", "source_id": "cmp1user-2", "c": "1"},
        headers=headers,
    )
    assert by_name.status_code == 200 and by_name.json()["voucher"]["code"] != code
    member = api.get("/api/v1/members/user-1")
    assert member.status_code == 200 and member.json()["status"] == "active"


def test_a_publish_only_key_can_publish_and_nothing_else(api: TestClient, ctx: AppContext) -> None:
    campaign = create_campaign(api)
    publisher = app_headers(key_with(ctx, "publications:write"))
    body = {"campaign": campaign["id"], "customer": "ana", "source_id": "s1"}
    assert (
        api.post("/v1/publications", json=body, headers={**publisher, "Authorization": ""}).status_code == 200
    )
    bearer = {"Authorization": f"Bearer {key_with(ctx, 'publications:write')}"}
    assert api.post("/v1/publications", json={**body}, headers=bearer).status_code == 200
    refused = api.post(
        "/v1/redemptions",
        json={"redeemables": [{"object": "voucher", "id": "X"}]},
        headers={**publisher, "Authorization": ""},
    )
    assert refused.status_code == 403
    error = refused.json()
    assert error["code"] == 403 and error["key"] == "forbidden" and error["request_id"].startswith("v-")
    assert isinstance(error["details"], str)
    wrong = api.post(
        "/v1/publications",
        json=body,
        headers={"X-App-Id": "key_x", "X-App-Token": "nope", "Authorization": ""},
    )
    assert wrong.status_code == 401 and wrong.json()["key"] == "unauthorized"


def test_source_id_replays_and_conflicts(api: TestClient, ctx: AppContext) -> None:
    campaign = create_campaign(api)
    other = create_campaign(api, name="Other")
    first = publish(api, campaign["id"], "ana", "src-1").json()
    assert publish(api, campaign["id"], "ana", "src-1").json()["voucher"]["code"] == first["voucher"]["code"]
    for customer, camp in (("ben", campaign["id"]), ("ana", other["id"])):
        conflict = publish(api, camp, customer, "src-1")
        assert conflict.status_code == 400 and conflict.json()["key"] == "duplicate_source_id"
    second = publish(api, campaign["id"], "ana", "src-2").json()
    assert second["voucher"]["code"] != first["voucher"]["code"]
    listed = api.get("/v1/publications", params={"source_id": "src-1"}).json()
    assert listed["publications"][0]["id"] == first["id"]
    timeline = api.get("/api/v1/members/ana/activities").json()["data"]
    published = [a for a in timeline if a["type"] == "voucher_published"]
    assert len(published) == 2
    assert published[0]["data"]["campaign_id"] == campaign["id"] and published[0]["data"]["value"] == 500


def test_join_once_gives_a_customer_one_code_ever(api: TestClient) -> None:
    campaign = create_campaign(api, join_once=True)
    codes = {publish(api, campaign["id"], "ana", f"src-{n}").json()["voucher"]["code"] for n in range(3)}
    assert len(codes) == 1
    plain = create_campaign(api, name="Plain")
    one = publish(api, plain["id"], "ana").json()["voucher"]["code"]
    again = api.post("/v1/publications?join_once=true", json={"campaign": plain["id"], "customer": "ana"})
    assert again.json()["voucher"]["code"] == one


def test_a_static_campaign_runs_out_and_auto_update_makes_codes(api: TestClient) -> None:
    static = create_campaign(api, vouchers_count=1)
    assert publish(api, static["id"], "ana").status_code == 200
    empty = publish(api, static["id"], "ben")
    assert empty.status_code == 400 and empty.json()["key"] == "no_voucher_suitable_for_publication"
    auto = create_campaign(
        api, name="Auto", type="AUTO_UPDATE", vouchers_count=0, code_config={"pattern": "A-####"}
    )
    made = {publish(api, auto["id"], f"m{n}").json()["voucher"]["code"] for n in range(3)}
    assert len(made) == 3 and all(c.startswith("A-") for c in made)


def test_bad_publication_requests_get_voucherify_errors(api: TestClient) -> None:
    campaign = create_campaign(api)
    cases: list[tuple[Any, int, str]] = [
        ({"customer": "ana"}, 400, "invalid_payload"),
        ({"campaign": campaign["id"]}, 400, "invalid_payload"),
        ({"campaign": "nope", "customer": "ana"}, 404, "not_found"),
        ({"campaign": campaign["id"], "customer": {"name": "no id"}}, 400, "invalid_payload"),
        ({"campaign": campaign["id"], "customer": "x" * 129}, 400, "invalid_payload"),
        ({"campaign": {"name": campaign["id"], "count": 5}, "customer": "ana"}, 400, "invalid_payload"),
        ({"campaign": campaign["id"], "customer": "ana", "metadata": "x"}, 400, "invalid_payload"),
    ]
    for body, status, key in cases:
        response = api.post("/v1/publications", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["key"] == key and response.json()["code"] == status
    for raw in (b"[1,2]", b'{"campaign": 1e999}', b"not a body", b"\xff\xfe"):
        response = api.post("/v1/publications", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["key"] == "invalid_payload", raw


def test_concurrent_duplicate_publications_return_one_code(
    api: TestClient, ctx: AppContext, server: ServerThread, admin_key: str
) -> None:
    """Braze may call two or three times per recipient at once: every call gets the same code."""
    campaign = create_campaign(api, vouchers_count=50)
    headers = app_headers(admin_key)
    results: dict[str, list[str]] = {}
    lock = threading.Lock()

    def call(source: str, customer: str) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            response = client.post(
                "/v1/publications",
                json={"campaign": campaign["id"], "customer": customer, "source_id": source},
            )
        with lock:
            results.setdefault(source, []).append(
                response.json()["voucher"]["code"] if response.status_code == 200 else response.text
            )

    threads = [
        threading.Thread(target=call, args=(f"send-{n}", f"new-user-{n}")) for n in range(6) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(set(codes)) == 1 and len(codes) == 3 for codes in results.values()), results
    codes = [found[0] for found in results.values()]
    assert len(set(codes)) == 6
    used = api.get("/v1/vouchers", params={"campaign_id": campaign["id"], "limit": 100}).json()["vouchers"]
    assert sum(1 for v in used if v["holder_id"]) == 6
