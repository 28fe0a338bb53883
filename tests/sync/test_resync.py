"""Resync over loopback: a mapping added to a live Braze integration reaches existing profiles."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.sync.worker import DeliveryWorker
from tests.conftest import event
from tests.sync.test_braze_sync import connect, map_fields

pytestmark = pytest.mark.usefixtures("demo")

MEMBERS = ["ana", "ben", "cy"]


def enrol(api: TestClient) -> None:
    for member in MEMBERS:
        body = event(member, "opt_in", email=f"{member}@example.com", favourite_store="Lyon")
        assert api.post("/api/v1/events", json=body).status_code in (200, 201)


def test_a_mapping_added_later_reaches_every_member_after_a_resync(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    map_fields(api, integration["id"], [("email", "email")])
    enrol(api)
    worker.drain()
    assert "store" not in braze.user("ana")["attributes"]
    added = api.post(
        f"/api/v1/integrations/{integration['id']}/fields",
        json={"loyalty_field": "favourite_store", "remote_field": "store"},
    )
    assert added.status_code == 201, added.text
    worker.drain()
    assert "store" not in braze.user("ana")["attributes"]  # adding a mapping alone sends nothing

    response = api.post(f"/api/v1/integrations/{integration['id']}/resync")
    assert response.status_code == 202, response.text
    assert response.json() == {"queued": len(MEMBERS), "unknown_members": []}
    before = braze.stats()["data_points"]
    worker.drain()
    for member in MEMBERS:
        assert braze.user(member)["attributes"]["store"] == "Lyon"
    # Delta mode: only the new field went out; email was acknowledged before.
    assert braze.stats()["data_points"] - before == len(MEMBERS)


def test_a_large_base_is_queued_chunk_by_chunk(
    api: TestClient, braze: Any, worker: DeliveryWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perkflow.sync import resync

    monkeypatch.setattr(resync, "CHUNK", 2)  # three members: a full chunk, then a short one
    integration = connect(api, braze)
    map_fields(api, integration["id"], [("email", "email")])
    enrol(api)
    worker.drain()
    add = {"loyalty_field": "favourite_store", "remote_field": "store"}
    assert api.post(f"/api/v1/integrations/{integration['id']}/fields", json=add).status_code == 201
    response = api.post(f"/api/v1/integrations/{integration['id']}/resync")
    assert response.json() == {"queued": len(MEMBERS), "unknown_members": []}
    worker.drain()
    assert [braze.user(m)["attributes"].get("store") for m in MEMBERS] == ["Lyon"] * len(MEMBERS)


def test_forgetting_what_was_acknowledged_sends_every_field_again(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    map_fields(api, integration["id"], [("email", "email"), ("favourite_store", "store")])
    enrol(api)
    worker.drain()
    before = braze.stats()["data_points"]
    response = api.post(
        f"/api/v1/integrations/{integration['id']}/resync",
        json={"members": ["ana", "nobody", "ana"], "forget_acknowledged": True},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"queued": 1, "unknown_members": ["nobody"]}
    worker.drain()
    assert braze.stats()["data_points"] - before == 2  # ana's email and store, nobody else's


def test_resync_refuses_what_it_cannot_do(api: TestClient, braze: Any) -> None:
    integration = connect(api, braze)
    unmapped = api.post(f"/api/v1/integrations/{integration['id']}/resync")
    assert unmapped.status_code == 409 and unmapped.json()["code"] == "nothing_to_resync"
    missing = api.post("/api/v1/integrations/nope/resync")
    assert missing.status_code == 404 and set(missing.json()) == {"code", "message", "details"}
    bad = api.post(f"/api/v1/integrations/{integration['id']}/resync", json={"members": ["bad id!"]})
    assert bad.status_code == 422
    empty = api.post(f"/api/v1/integrations/{integration['id']}/resync", json={"members": []})
    assert empty.status_code == 422
    map_fields(api, integration["id"], [("email", "email")])
    assert api.delete(f"/api/v1/integrations/{integration['id']}").status_code == 200
    gone = api.post(f"/api/v1/integrations/{integration['id']}/resync")
    assert gone.status_code == 409 and gone.json()["code"] == "integration_disconnected"
