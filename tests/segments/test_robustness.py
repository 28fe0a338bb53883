"""Whatever a client sends to the segments API, the answer is never a 500 and errors have
{code, message, details}; refused definitions leave nothing behind."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import event
from tests.test_robustness import assert_clean, json_values

attributes = st.sampled_from(
    [
        "tier",
        "points_balance",
        "points_pending",
        "points_earned",
        "opted_in_at",
        "birth_date",
        "email",
        "favourite_store",
        "newsletter",
        "activity.checkout.count",
        "activity.checkout.last_at",
        "activity.x",
        "segments",
        "nope",
        "",
    ]
)
operators = st.sampled_from(
    [
        "eq",
        "ne",
        "gt",
        "gte",
        "lt",
        "lte",
        "between",
        "contains",
        "in",
        "exists",
        "before",
        "after",
        "in_date",
        "??",
    ]
)
values = st.one_of(
    json_values,
    st.sampled_from(
        ["now-30d", "today", "today+1d", "2026-01-01", "2026-01-01T00:00:00Z", "Gold", ["now-7d", "now"]]
    ),
)
conditions = st.fixed_dictionaries(
    {"attribute": attributes, "operator": operators}, optional={"value": values}
)
rule_sets = st.recursive(
    st.lists(conditions, min_size=0, max_size=4),
    lambda inner: st.lists(
        st.one_of(
            conditions,
            st.fixed_dictionaries({"match": st.sampled_from(["all", "any", "x"]), "conditions": inner}),
        ),
        max_size=3,
    ),
    max_leaves=8,
).map(lambda items: {"match": "all", "conditions": items})


@pytest.fixture
def members(api: TestClient) -> None:
    for member in ("ana", "ben"):
        api.post(
            "/api/v1/events",
            json=event(member, "opt_in", email=f"{member}@example.com", birth_date="1990-03-14"),
        )
    api.post("/api/v1/events", json=event("ana", "checkout", transaction_id="T-1", total=6000))


@pytest.mark.usefixtures("demo", "members")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=rule_sets | json_values, program=st.sampled_from([None, "demo", "nope", 7]))
def test_arbitrary_rules_never_cause_a_500(api: TestClient, rules: Any, program: Any) -> None:
    body: dict[str, Any] = {"name": "fuzz", "rules": rules}
    if program is not None:
        body["program_id"] = program
    created = api.post("/api/v1/segments", json=body)
    assert_clean(created)
    assert_clean(api.post("/api/v1/segments/preview", json=body | {"name": None}))
    if created.status_code == 201:
        segment_id = created.json()["id"]
        assert_clean(api.patch(f"/api/v1/segments/{segment_id}", json={"rules": rules}))
        assert_clean(
            api.post(
                "/api/v1/events", json=event("ben", "checkout", transaction_id=f"T-{segment_id}", total=100)
            )
        )
        assert api.delete(f"/api/v1/segments/{segment_id}").status_code == 204
    else:
        assert api.get("/api/v1/segments").json()["data"] == []


bodies = st.one_of(
    json_values.map(lambda v: ("application/json", v)),
    st.binary(max_size=60).map(lambda b: ("application/json", b)),
    st.text(max_size=60).map(lambda t: ("application/x-www-form-urlencoded", t.encode())),
    st.dictionaries(
        st.sampled_from(["user_id", "email", "member_ids", "custom_segment_id", "x"]), json_values, max_size=3
    ).map(lambda d: ("application/json", d)),
)


@pytest.mark.usefixtures("demo", "members")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=bodies,
    signature=st.one_of(
        st.none(),
        st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=70).map(
            lambda t: t.encode("latin-1")
        ),
    ),
    path=st.sampled_from(["vip", "nope", "rules"]),
)
def test_arbitrary_inbound_webhooks_never_cause_a_500(
    api: TestClient, body: tuple[str, Any], signature: bytes | None, path: str
) -> None:
    api.post("/api/v1/segments", json={"id": "vip", "name": "VIP", "generate_webhook_secret": True})
    api.post(
        "/api/v1/segments",
        json={
            "id": "rules",
            "name": "Rules",
            "rules": {"conditions": [{"attribute": "tier", "operator": "exists"}]},
        },
    )
    content_type, payload = body
    raw = payload if isinstance(payload, bytes) else None
    for headers in (
        ({}, {"Authorization": ""})
        if signature is None
        else ({"X-Perkflow-Signature": signature, "Authorization": ""},)
    ):
        kwargs: dict[str, Any] = {"headers": {"Content-Type": content_type, **headers}}
        if raw is not None:
            kwargs["content"] = raw
        elif content_type == "application/json":
            kwargs["json"] = payload
        else:
            kwargs["content"] = payload
        for url in (f"/api/v1/segments/{path}/members", f"/api/v1/segments/{path}/members/remove"):
            assert_clean(api.post(url, **kwargs))


@pytest.mark.usefixtures("demo")
def test_odd_segment_requests_get_json_errors(api: TestClient) -> None:
    assert_clean(api.get("/api/v1/segments", params={"limit": 0}))
    assert_clean(api.get("/api/v1/segments", params={"kind": "both"}))
    assert_clean(api.get("/api/v1/segments/x/members", params={"cursor": "!!!"}))
    assert_clean(api.post("/api/v1/segments/x/evaluate", params={"max_seconds": -1}))
    assert_clean(api.post("/api/v1/segments/x/evaluate"))
    assert_clean(api.post("/api/v1/segments/sweep", json={"force": "maybe"}))
    assert_clean(api.delete("/api/v1/segments/x/members/y"))
    assert_clean(api.post("/api/v1/segments/x/webhook-secret"))
    long_id = "x" * 500
    assert_clean(api.get(f"/api/v1/segments/{long_id}"))
    assert_clean(api.post(f"/api/v1/segments/{long_id}/members", json={"user_id": "ana"}))
