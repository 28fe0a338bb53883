"""Helpers for workflow tests: building graphs, creating and activating workflows, the sandboxes."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient

from tests.sync.conftest import bloomreach, braze, receiver, worker  # noqa: F401 - shared fixtures


def node(node_id: str, node_type: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "params": params}


def chain(*nodes: dict[str, Any], edges: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A graph whose nodes follow each other on their success outputs (plus any extra edges)."""
    links = [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)]
    return {"nodes": list(nodes), "edges": edges if edges is not None else links}


def on(event: str | list[str]) -> dict[str, Any]:
    return node("trigger", "trigger.event", events=[event] if isinstance(event, str) else event)


def where(node_id: str, kind: str, *conditions: tuple[str, str, Any], match: str = "all") -> dict[str, Any]:
    return node(
        node_id,
        f"filter.{kind}_attribute",
        match=match,
        conditions=[{"attribute": a, "operator": o, "value": v} for a, o, v in conditions],
    )


def create(
    api: TestClient, graph: dict[str, Any], *, activate: bool = True, **settings: Any
) -> dict[str, Any]:
    body = {"name": settings.pop("name", "test workflow"), "graph": graph, **settings}
    response = api.post("/api/v1/workflows", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    if activate:
        response = api.post(f"/api/v1/workflows/{created['id']}/activate")
        assert response.status_code == 200, response.text
        created = response.json()
    return created


def runs(api: TestClient, workflow_id: str, **query: Any) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/workflows/{workflow_id}/runs", params=query)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def points(api: TestClient, member_id: str) -> dict[str, Any]:
    return api.get(f"/api/v1/members/{member_id}").json()["programs"][0]["points"]


def send(api: TestClient, customer: str, action: str, **data: Any) -> dict[str, Any]:
    response = api.post("/api/v1/events", json={"customer": customer, "action": action, "data": data})
    assert response.status_code in (200, 201), response.text
    return response.json()


def join(api: TestClient, customer: str, **profile: Any) -> dict[str, Any]:
    return send(api, customer, "opt_in", email=f"{customer}@example.com", **profile)


def connect_braze(api: TestClient, sandbox: Any) -> dict[str, Any]:
    response = api.post(
        "/api/v1/integrations/braze", json={"instance_url": sandbox.url, "api_key": "braze-key"}
    )
    assert response.status_code == 201, response.text
    return response.json()


def connect_bloomreach(api: TestClient, sandbox: Any) -> dict[str, Any]:
    response = api.post(
        "/api/v1/integrations/bloomreach",
        json={
            "base_url": sandbox.url,
            "project_token": "test-project",
            "api_key_id": "key-id",
            "api_secret": "key-secret",
        },
    )
    assert response.status_code == 201, response.text
    return response.json()
