"""The integrations API refuses bad input with a 4xx naming the problem and saving nothing, and never
returns or logs a credential."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core.context import AppContext
from perkflow.sync.worker import DeliveryWorker
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")


@pytest.fixture
def lenient_api(ctx: AppContext, admin_key: str) -> Any:
    """Like `api`, but a server error comes back as a 500 response instead of an exception."""
    from perkflow.api.app import create_app

    with TestClient(
        create_app(ctx), headers={"Authorization": f"Bearer {admin_key}"}, raise_server_exceptions=False
    ) as client:
        yield client


def braze_integration(api: TestClient, braze: Any, **extra: Any) -> dict[str, Any]:
    response = api.post(
        "/api/v1/integrations/braze", json={"instance_url": braze.url, "api_key": "braze-key", **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details"} and body["code"] == code, body
    return body


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"max_attempts": "abc"}, "invalid_setting"),
        ({"max_attempts": 0}, "invalid_setting"),
        ({"flush_age_ms": -5}, "invalid_setting"),
        ({"rate_limit_per_s": "x"}, "invalid_setting"),
        ({"rate_limit_per_s": 0}, "invalid_setting"),
        ({"braze_max_objects": 0}, "invalid_setting"),
        ({"braze_max_objects": 500}, "invalid_setting"),  # Braze refuses more than 75 objects
        ({"bloomreach_max_commands": 51}, "invalid_setting"),
        ({"events": "x"}, "invalid_setting"),
        ({"events": [{"nope": 1}]}, "invalid_setting"),
        ({"mode": 3}, "invalid_setting"),
        ({"mode": "sometimes"}, "invalid_setting"),
        ({"backoff_base_s": None}, "invalid_setting"),
        ({"async_sync": "maybe"}, "invalid_setting"),
        ({"sync_push_timeout_s": 120}, "invalid_setting"),
        ({"shoe_size": 42}, "unknown_setting"),
        ({"events": [{"type": "checkout", "name": "$purchase"}]}, "invalid_event_name"),
        ({"events": [{"type": "checkout", "name": "x" * 256}]}, "invalid_setting"),
        ({"events": [{"type": "no_such_activity"}]}, "unknown_event_type"),
    ],
)
def test_bad_settings_are_refused_and_nothing_changes(
    lenient_api: TestClient, braze: Any, change: dict[str, Any], code: str
) -> None:
    integration = braze_integration(lenient_api, braze)
    response = lenient_api.patch(f"/api/v1/integrations/{integration['id']}/settings", json=change)
    assert_error(response, 422, code)
    after = lenient_api.get(f"/api/v1/integrations/{integration['id']}").json()
    assert after["settings"] == integration["settings"]


def test_connecting_with_bad_settings_saves_nothing(lenient_api: TestClient, braze: Any) -> None:
    base = {"instance_url": braze.url, "api_key": "braze-key"}
    for extra, status, code in (
        ({"settings": {"max_attempts": "x"}}, 422, "invalid_setting"),
        ({"settings": {"foo": 1}}, 422, "unknown_setting"),
        ({"events": [{"type": "checkout", "name": "$bad"}]}, 422, "invalid_event_name"),
        ({"program_id": "no-such-program"}, 404, "program_not_found"),
        ({"name": "x" * 201}, 422, "invalid_input"),
    ):
        assert_error(lenient_api.post("/api/v1/integrations/braze", json={**base, **extra}), status, code)
    for url in ("http://[::1", "http://127.0.0.1:99999", "https://", "https://bad host.com"):
        response = lenient_api.post("/api/v1/integrations/braze", json={**base, "instance_url": url})
        assert_error(response, 422, "invalid_url")
    assert lenient_api.get("/api/v1/integrations").json()["data"] == []
    created = braze_integration(lenient_api, braze, settings={"mode": "full", "max_attempts": 3})
    assert created["settings"]["mode"] == "full" and created["settings"]["max_attempts"] == 3
    assert created["settings"]["flush_age_ms"] == 500  # defaults fill the rest


def test_credentials_updates_are_checked_before_anything_is_saved(
    lenient_api: TestClient, braze: Any, bloomreach: Any
) -> None:
    integration = braze_integration(lenient_api, braze)
    url = f"/api/v1/integrations/{integration['id']}/credentials"
    for body, status, code in (
        ({"secrets": {}}, 422, "invalid_credentials"),
        ({"secrets": {"api_key": 5}}, 422, "invalid_credentials"),
        ({"secrets": {"api_secret": "x"}}, 422, "invalid_credentials"),
        ({"config": {"instance_url": 5}, "secrets": {"api_key": "braze-key"}}, 422, "invalid_config"),
        ({"config": {"base_url": "x"}, "secrets": {"api_key": "braze-key"}}, 422, "invalid_config"),
        ({"secrets": {"api_key": "wrong"}}, 422, "invalid_api_key"),
        (
            {"config": {"instance_url": braze.url + "/x"}, "secrets": {"api_key": "braze-key"}},
            422,
            "wrong_instance",
        ),
    ):
        assert_error(lenient_api.put(url, json=body), status, code)
    assert (
        lenient_api.get(f"/api/v1/integrations/{integration['id']}").json()["config"] == integration["config"]
    )
    fine = lenient_api.put(url, json={"secrets": {"api_key": "braze-key"}, "config": {"app_id": "app-2"}})
    assert fine.status_code == 200 and fine.json()["config"]["app_id"] == "app-2"


def test_the_hard_id_is_the_registered_email_by_default_and_cannot_change(
    lenient_api: TestClient, bloomreach: Any
) -> None:
    created = lenient_api.post(
        "/api/v1/integrations/bloomreach",
        json={
            "base_url": bloomreach.url,
            "project_token": "test-project",
            "api_key_id": "key-id",
            "api_secret": "key-secret",
        },
    ).json()
    assert (created["config"]["hard_id"], created["config"]["hard_id_field"]) == ("registered", "email")
    secrets = {"api_key_id": "key-id", "api_secret": "key-secret"}
    url = f"/api/v1/integrations/{created['id']}"
    for change in ({"hard_id": "Registered"}, {"hard_id_field": "member_id"}):  # case matters too
        assert_error(lenient_api.patch(url + "/settings", json=change), 409, "hard_id_immutable")
        response = lenient_api.put(url + "/credentials", json={"config": change, "secrets": secrets})
        assert_error(response, 409, "hard_id_immutable")
    assert lenient_api.get(url).json()["config"]["hard_id"] == "registered"


def test_credentials_are_never_returned_nor_logged(
    api: TestClient,
    braze: Any,
    bloomreach: Any,
    worker: DeliveryWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ["braze-key", "wrong-braze-key", "key-secret", "wrong-secret", "webhook-secret-0123456789"]
    bloomreach_body = {
        "base_url": bloomreach.url,
        "project_token": "test-project",
        "api_key_id": "key-id",
    }
    responses = [
        api.post(
            "/api/v1/integrations/braze", json={"instance_url": braze.url, "api_key": "wrong-braze-key"}
        ),
        api.post("/api/v1/integrations/bloomreach", json={**bloomreach_body, "api_secret": "wrong-secret"}),
        api.post("/api/v1/integrations/bloomreach", json={**bloomreach_body, "api_secret": "key-secret"}),
        api.post(
            "/api/v1/integrations/webhook",
            json={
                "url": braze.url + "/nowhere",
                "secret": "webhook-secret-0123456789",
                "events": [{"type": "opt_in"}],
            },
        ),
    ]
    integration = braze_integration(api, braze)
    api.put(
        f"/api/v1/integrations/{integration['id']}/fields",
        json={"fields": [{"loyalty_field": "points_balance", "remote_field": "loyalty_points"}]},
    )
    braze.config.api_keys = {"rotated": frozenset({"users.track"})}  # delivery is refused: paused, logged
    api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com"))
    worker.drain()
    responses += [
        api.get("/api/v1/integrations"),
        api.get(f"/api/v1/integrations/{integration['id']}"),
        api.get("/api/v1/deliveries"),
        api.get("/api/v1/deliveries/dead"),
        api.put(
            f"/api/v1/integrations/{integration['id']}/credentials",
            json={"secrets": {"api_key": "wrong-braze-key"}},
        ),
        api.get("/metrics"),
    ]
    assert api.get(f"/api/v1/integrations/{integration['id']}").json()["status"] == "paused"
    assert any("paused" in r.getMessage() for r in caplog.records)  # the pause was logged...
    for secret in secrets:
        assert secret not in caplog.text  # ...without a credential in any log line
        for response in responses:
            assert secret not in response.text


def test_a_worker_with_another_instance_key_pauses_the_integration_and_loses_nothing(
    api: TestClient, braze: Any, settings: Any, tmp_path: Any
) -> None:
    from perkflow.bootstrap import build_context

    integration = braze_integration(api, braze)
    api.put(
        f"/api/v1/integrations/{integration['id']}/fields",
        json={"fields": [{"loyalty_field": "points_balance", "remote_field": "loyalty_points"}]},
    )
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    other = build_context(settings.model_copy(update={"secret_key_file": tmp_path / "another.key"}))
    stranger = DeliveryWorker(other)
    try:
        assert stranger.run_once(force=True) == 0
    finally:
        stranger.close()
        other.close()
    status = api.get(f"/api/v1/integrations/{integration['id']}").json()
    assert status["status"] == "paused" and "instance key" in status["last_error"]
    assert status["deliveries"]["queued"] == 1 and braze.user("ana") is None
    resumed = api.put(
        f"/api/v1/integrations/{integration['id']}/credentials", json={"secrets": {"api_key": "braze-key"}}
    )
    assert resumed.json()["status"] == "connected"
    worker = DeliveryWorker(api.app.state.ctx)
    try:
        worker.drain()
    finally:
        worker.close()
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5


def test_event_selection_is_listed_and_replaced(api: TestClient, braze: Any, worker: DeliveryWorker) -> None:
    integration = braze_integration(api, braze, events=[{"type": "opt_in"}])
    url = f"/api/v1/integrations/{integration['id']}/events"
    assert api.get(url).json()["data"] == [{"type": "opt_in"}]
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    replaced = api.put(url, json={"events": [{"type": "point_add", "name": "loyalty_goodwill"}]})
    assert replaced.status_code == 200 and replaced.json()["data"] == [
        {"type": "point_add", "name": "loyalty_goodwill"}
    ]
    api.post("/api/v1/events", json=event("ana", "point_add", points=2))
    api.post("/api/v1/events", json=event("ben", "opt_in"))  # no longer selected
    worker.drain()
    assert [e["name"] for e in braze.events()] == ["opt_in", "loyalty_goodwill"]
    assert_error(api.put(url, json={"events": [{"type": "nope"}]}), 422, "unknown_event_type")
    assert_error(api.put(url, json={"events": [{"type": "opt_in", "name": "$x"}]}), 422, "invalid_event_name")
    assert api.get(url).json()["data"] == [{"type": "point_add", "name": "loyalty_goodwill"}]


def test_a_disconnected_platform_gets_nothing_new_until_it_is_reconnected(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = braze_integration(api, braze, events=[{"type": "point_add"}])
    url = f"/api/v1/integrations/{integration['id']}"
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    api.post("/api/v1/events", json=event("ana", "point_add", points=1))  # queued before the disconnect
    disconnected = api.delete(url)
    assert disconnected.status_code == 200 and disconnected.json()["status"] == "disconnected"
    api.post("/api/v1/events", json=event("ana", "point_add", points=2))  # not queued at all
    worker.drain()
    assert braze.events() == []
    status = api.get(url).json()
    assert status["status"] == "disconnected" and status["deliveries"]["queued"] == 1
    assert_error(api.delete("/api/v1/integrations/nope"), 404, "integration_not_found")
    reconnected = api.put(url + "/credentials", json={"secrets": {"api_key": "braze-key"}})
    assert reconnected.json()["status"] == "connected"
    worker.drain()
    assert [e["properties"]["points"] for e in braze.events()] == [1]


def test_integrations_and_deliveries_need_the_admin_scope(api: TestClient, ctx: AppContext) -> None:
    from tests.conftest import key_with

    headers = {"Authorization": f"Bearer {key_with(ctx, 'events:write', 'members:read')}"}
    for method, path in (
        ("GET", "/api/v1/integrations"),
        ("GET", "/api/v1/integrations/fields"),
        ("POST", "/api/v1/integrations/braze"),
        ("PATCH", "/api/v1/integrations/int_x/settings"),
        ("GET", "/api/v1/deliveries"),
        ("GET", "/api/v1/deliveries/dead"),
        ("POST", "/api/v1/deliveries/replay"),
    ):
        response = api.request(method, path, headers=headers, json={})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] in ("forbidden", "missing_scope", "insufficient_scope")
    anonymous = api.get("/api/v1/integrations", headers={"Authorization": ""})
    assert anonymous.status_code == 401
