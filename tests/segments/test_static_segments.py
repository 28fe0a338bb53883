"""Static segments and the Punchh-style inbound webhook, called over loopback HTTP the way a Braze
webhook campaign calls it: JSON, form-encoded and raw key=value bodies, authenticated by a narrow
`segments:write` key or an HMAC-SHA256 signature with the segment's secret."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from perkflow.api.app import create_app
from perkflow.core.context import AppContext
from perkflow.sandbox.server import ServerThread
from tests.conftest import key_with
from tests.segments.conftest import enrol, make_segment, members_of, membership_activity

pytestmark = pytest.mark.usefixtures("demo")


@pytest.fixture
def server(ctx: AppContext) -> Iterator[str]:
    with ServerThread(create_app(ctx)) as running:
        yield running.url


@pytest.fixture
def braze(server: str, ctx: AppContext) -> Iterator[httpx.Client]:
    """What a Braze webhook campaign holds: the URL and a key with only segments:write."""
    key = key_with(ctx, "segments:write")
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        yield client


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_a_braze_webhook_adds_members_by_user_id_or_email_once(api: TestClient, braze: httpx.Client) -> None:
    enrol(api, "ana", email="ana@example.com")
    enrol(api, "ben", "cleo")
    vip = make_segment(api, {"name": "VIP", "description": "filled by Braze"})
    url = f"/api/v1/segments/{vip['id']}/members"
    added = braze.post(url, json={"user_id": "ben"})
    assert added.status_code == 201, added.text
    assert added.json() == {"segment_id": vip["id"], "member_id": "ben", "status": "added"}
    again = braze.post(url, json={"user_id": "ben"})  # Braze retries: at least once
    assert again.status_code == 200 and again.json()["status"] == "already_member"
    by_email = braze.post(url, json={"email": "ANA@example.com", "custom_segment_id": vip["id"]})
    assert by_email.status_code == 201 and by_email.json()["member_id"] == "ana"
    form = braze.post(
        url, content=b"user_id=cleo", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 201, form.text
    assert members_of(api, vip["id"]) == ["ana", "ben", "cleo"]
    assert membership_activity(api, "ben") == [("segment_entered", vip["id"], "VIP")]
    sources = {m["member_id"]: m["source"] for m in api.get(f"{url}").json()["data"]}
    assert sources == {"ana": "api", "ben": "api", "cleo": "api"}
    removed = braze.post(
        f"{url}/remove", content=b"user_id=ben", headers={"Content-Type": "application/json"}
    )
    assert removed.status_code == 200 and removed.json()["status"] == "removed"
    assert braze.delete(f"{url}/cleo").status_code == 204
    gone = braze.delete(f"{url}/cleo")
    assert gone.status_code == 404 and gone.json()["code"] == "not_a_member"
    assert members_of(api, vip["id"]) == ["ana"]
    assert membership_activity(api, "ben") == [
        ("segment_entered", vip["id"], "VIP"),
        ("segment_left", vip["id"], "VIP"),
    ]


def test_raw_key_value_bodies_under_a_json_content_type(api: TestClient, braze: httpx.Client) -> None:
    enrol(api, "111111111")
    vip = make_segment(api, {"id": "15401", "name": "Braze VIP"})
    response = braze.post(
        "/api/v1/segments/15401/members",
        content=b"custom_segment_id=15401&user_id=111111111",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert members_of(api, vip["id"]) == ["111111111"]
    numeric = braze.post(
        "/api/v1/segments/15401/members", json={"custom_segment_id": 15401, "user_id": 111111111}
    )
    assert numeric.status_code == 200 and numeric.json()["status"] == "already_member"


def test_unknown_members_are_reported_never_created(api: TestClient, braze: httpx.Client) -> None:
    enrol(api, "ana")
    vip = make_segment(api, {"name": "VIP"})
    url = f"/api/v1/segments/{vip['id']}/members"
    unknown = braze.post(url, json={"user_id": "ghost"})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "code": "member_not_found",
        "message": "member 'ghost' does not exist",
        "details": {"user_id": "ghost"},
    }
    by_email = braze.post(url, content=b"email=nobody%40example.com", headers={"Content-Type": "text/plain"})
    assert by_email.status_code == 404 and by_email.json()["details"] == {"email": "nobody@example.com"}
    bulk = braze.post(url, json={"member_ids": ["ana", "ghost", "phantom"]})
    assert bulk.status_code == 404 and bulk.json()["details"]["unknown"] == ["ghost", "phantom"]
    assert members_of(api, vip["id"]) == []  # the known member of the bulk was not added either
    assert api.get("/api/v1/members/ghost").status_code == 404
    for body, code in ((b"{}", "invalid_input"), (b"nothing", "invalid_body"), (b"{bad", "invalid_body")):
        response = braze.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 422) and response.json()["code"] == code
    mismatch = braze.post(url, json={"user_id": "ana", "custom_segment_id": "other"})
    assert mismatch.status_code == 422 and mismatch.json()["code"] == "segment_mismatch"
    missing = braze.post("/api/v1/segments/nope/members", json={"user_id": "ana"})
    assert missing.status_code == 404 and missing.json()["code"] == "segment_not_found"


def test_signed_webhooks_with_the_segment_secret(api: TestClient, server: str) -> None:
    enrol(api, "ana", "ben")
    created = make_segment(api, {"name": "Signed", "generate_webhook_secret": True})
    secret = created["webhook_secret"]
    assert created["webhook"]["secret_set"] is True
    read = api.get(f"/api/v1/segments/{created['id']}").json()
    assert "webhook_secret" not in read and read["webhook"]["secret_set"] is True
    url = f"{server}/api/v1/segments/{created['id']}/members"
    body = b'{"user_id":"ana"}'
    with httpx.Client(timeout=10) as client:
        good = client.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "X-Perkflow-Signature": sign(secret, body)},
        )
        assert good.status_code == 201, good.text
        form = b"user_id=ben"
        plain_hex = sign(secret, form).removeprefix("sha256=")
        assert client.post(url, content=form, headers={"X-Perkflow-Signature": plain_hex}).status_code == 201
        forged = client.post(
            url,
            content=b'{"user_id":"ben"}',
            headers={
                "Content-Type": "application/json",
                "X-Perkflow-Signature": sign("guess", b'{"user_id":"ben"}'),
            },
        )
        assert forged.status_code == 401 and forged.json()["code"] == "invalid_signature"
        tampered = client.post(
            url, content=b'{"user_id":"ben"} ', headers={"X-Perkflow-Signature": sign(secret, body)}
        )
        assert tampered.status_code == 401
        unsigned = client.post(url, json={"user_id": "ben"})
        assert unsigned.status_code == 401 and unsigned.json()["code"] == "unauthorized"
        other = client.post(
            f"{server}/api/v1/segments/nope/members",
            content=body,
            headers={"X-Perkflow-Signature": sign(secret, body)},
        )
        assert other.status_code == 401  # no hint whether the segment exists
        rotated = api.post(f"/api/v1/segments/{created['id']}/webhook-secret")
        assert rotated.status_code == 201
        new_secret = rotated.json()["webhook_secret"]
        assert new_secret != secret
        stale = client.post(url, content=body, headers={"X-Perkflow-Signature": sign(secret, body)})
        assert stale.status_code == 401
        fresh = client.post(url, content=body, headers={"X-Perkflow-Signature": sign(new_secret, body)})
        assert fresh.status_code == 200 and fresh.json()["status"] == "already_member"
        assert api.delete(f"/api/v1/segments/{created['id']}/webhook-secret").status_code == 204
        disabled = client.post(url, content=body, headers={"X-Perkflow-Signature": sign(new_secret, body)})
        assert disabled.status_code == 401
    rows = api.get(f"/api/v1/segments/{created['id']}/members").json()["data"]
    assert {r["member_id"]: r["source"] for r in rows} == {"ana": "webhook", "ben": "webhook"}
    entered = api.get("/api/v1/members/ana/activities", params={"type": "segment_entered"}).json()["data"][0]
    assert entered["effects"] == {"via": "webhook"} and entered["source"] == "api"


def test_keys_need_the_narrow_scope(api: TestClient, ctx: AppContext, server: str) -> None:
    enrol(api, "ana")
    vip = make_segment(api, {"name": "VIP"})
    url = f"{server}/api/v1/segments/{vip['id']}/members"
    reader = key_with(ctx, "members:read")
    writer = key_with(ctx, "segments:write")
    with httpx.Client(timeout=10) as client:
        wrong_scope = client.post(url, json={"user_id": "ana"}, headers={"Authorization": f"Bearer {reader}"})
        assert wrong_scope.status_code == 403 and wrong_scope.json()["code"] == "insufficient_scope"
        bad_key = client.post(url, json={"user_id": "ana"}, headers={"Authorization": "Bearer key_x.nope"})
        assert bad_key.status_code == 401 and bad_key.json()["code"] == "invalid_api_key"
        not_bearer = client.post(url, json={"user_id": "ana"}, headers={"Authorization": "Basic abc"})
        assert not_bearer.status_code == 401
        # A narrow key adds members, but cannot define, change or read segments.
        as_writer = {"Authorization": f"Bearer {writer}"}
        assert (
            client.post(f"{server}/api/v1/segments", json={"name": "X"}, headers=as_writer).status_code == 403
        )
        assert client.delete(f"{server}/api/v1/segments/{vip['id']}", headers=as_writer).status_code == 403
        assert client.get(f"{server}/api/v1/segments", headers=as_writer).status_code == 403
        assert client.post(url, json={"user_id": "ana"}, headers=as_writer).status_code == 201
    assert members_of(api, vip["id"]) == ["ana"]


def test_rule_segments_take_no_members_by_api(api: TestClient, braze: httpx.Client) -> None:
    enrol(api, "ana")
    gold = make_segment(
        api,
        {"name": "Gold", "rules": {"conditions": [{"attribute": "tier", "operator": "eq", "value": "Gold"}]}},
    )
    response = braze.post(f"/api/v1/segments/{gold['id']}/members", json={"user_id": "ana"})
    assert response.status_code == 409 and response.json()["code"] == "segment_not_static"
    assert members_of(api, gold["id"]) == []


def test_membership_views_and_pagination(api: TestClient) -> None:
    enrol(api, *(f"m{n}" for n in range(5)))
    one = make_segment(api, {"id": "one", "name": "One"})
    two = make_segment(api, {"id": "two", "name": "Two"})
    added = api.post("/api/v1/segments/one/members", json={"member_ids": ["m3", "m1", "m4", "m0", "m2"]})
    assert added.status_code == 201 and len(added.json()["data"]) == 5
    api.post("/api/v1/segments/two/members", json={"user_id": "m1"})
    assert members_of(api, one["id"]) == ["m0", "m1", "m2", "m3", "m4"]
    assert api.get("/api/v1/segments/one/members", params={"cursor": "garbage"}).status_code == 400
    listed = api.get("/api/v1/segments", params={"limit": 1}).json()
    assert [s["id"] for s in listed["data"]] == ["one"] and listed["next_cursor"] == "one"
    rest = api.get("/api/v1/segments", params={"limit": 1, "cursor": "one"}).json()
    assert [(s["id"], s["member_count"]) for s in rest["data"]] == [("two", 1)] and rest[
        "next_cursor"
    ] is None
    of_m1 = api.get("/api/v1/members/m1/segments").json()["data"]
    assert [(s["segment_id"], s["kind"], s["source"]) for s in of_m1] == [
        ("one", "static", "api"),
        ("two", "static", "api"),
    ]
    assert api.get("/api/v1/members/ghost/segments").status_code == 404
    is_in = api.get("/api/v1/segments/two/members/m1").json()
    assert is_in["member"] is True and is_in["source"] == "api"
    assert api.get("/api/v1/segments/two/members/m2").json()["member"] is False
    assert two["member_count"] == 0


def test_concurrent_deliveries_of_one_webhook_add_the_member_once(
    api: TestClient, ctx: AppContext, server: str
) -> None:
    enrol(api, "ana")
    vip = make_segment(api, {"name": "VIP"})
    key = key_with(ctx, "segments:write")
    url = f"{server}/api/v1/segments/{vip['id']}/members"
    barrier = threading.Barrier(6)

    def deliver() -> int:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            barrier.wait()
            return client.post(url, json={"user_id": "ana"}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(lambda _: deliver(), range(6)))
    assert statuses == [200, 200, 200, 200, 200, 201]
    assert membership_activity(api, "ana") == [("segment_entered", vip["id"], "VIP")]
