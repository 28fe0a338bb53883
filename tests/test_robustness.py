"""Whatever a client sends, the answer is never a 500, and errors always have {code, message, details}."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import event

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
actions = st.sampled_from(
    [
        "opt_in",
        "opt_out",
        "profile",
        "checkout",
        "checkout_accept",
        "checkout_reject",
        "refund",
        "point_add",
        "point_subtract",
        "birthday",
        "reward_claim",
        "review_written",
    ]
)
data_keys = st.sampled_from(
    [
        "transaction_id",
        "total",
        "amount",
        "points",
        "reward_id",
        "email",
        "birth_date",
        "expires_at",
        "expires_in_days",
        "items",
        "currency",
        "rating",
        "free",
        "favourite_store",
    ]
)
plausible_events = st.fixed_dictionaries(
    {
        "customer": st.sampled_from(["ana", "ben", "", "x" * 200, "a b"]),
        "action": actions,
        "data": st.dictionaries(data_keys, json_values, max_size=5),
    },
    optional={"id": json_values, "program": json_values, "occurred_at": json_values},
)

ENDPOINTS = [
    ("post", "/api/v1/events"),
    ("post", "/api/v1/events/bulk"),
    ("post", "/api/v1/members"),
    ("patch", "/api/v1/members/ana"),
    ("post", "/api/v1/programs"),
    ("post", "/api/v1/rewards"),
    ("post", "/api/v1/rewards/rew_coffee/coupons/generate"),
    ("post", "/api/v1/members/ana/rewards/rew_coffee/claim"),
    ("post", "/api/v1/fields"),
    ("post", "/api/v1/event-types"),
    ("put", "/api/v1/programs/demo/tiers"),
]


def assert_clean(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["code"], str) and isinstance(body["message"], str) and "details" in body


@pytest.mark.usefixtures("demo")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), body=json_values)
def test_arbitrary_json_bodies_never_cause_a_500(
    api: TestClient, endpoint: tuple[str, str], body: Any
) -> None:
    method, path = endpoint
    assert_clean(api.request(method, path, json=body))


@pytest.mark.usefixtures("demo")
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(plausible_events, min_size=1, max_size=6))
def test_plausible_but_wrong_events_never_cause_a_500(api: TestClient, events: list[dict[str, Any]]) -> None:
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    assert_clean(api.post("/api/v1/events", json=events[0]))
    response = api.post("/api/v1/events/bulk", json={"events": events})
    assert_clean(response)
    if response.status_code == 200:
        assert len(response.json()["results"]) == len(events)


@pytest.mark.usefixtures("demo")
def test_odd_requests_get_json_errors(api: TestClient) -> None:
    assert_clean(
        api.post("/api/v1/events", content=b"\xff\xfe", headers={"Content-Type": "application/json"})
    )
    assert_clean(api.post("/api/v1/events", content=b"customer=a", headers={"Content-Type": "text/plain"}))
    missing = api.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong_method = api.delete("/api/v1/events")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"
    assert_clean(api.get("/api/v1/members", params={"limit": "lots"}))
    assert_clean(api.get("/api/v1/activities/act_notanumber"))
    assert_clean(api.get("/api/v1/members/ana/activities", params={"cursor": "eyJ4IjoiYSJ9"}))


@pytest.mark.usefixtures("demo")
def test_nul_characters_are_refused_before_they_reach_the_database(api: TestClient) -> None:
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    response = api.post("/api/v1/events", json=event("ana", "profile", favourite_store="Ly\x00on"))
    assert response.status_code == 400 and "NUL" in response.json()["message"]
    in_key = api.post("/api/v1/events", json={"customer": "ana", "action": "opt_out", "data": {"\x00": 1}})
    assert in_key.status_code == 400
    assert api.get("/api/v1/members/an%00a").status_code == 400
    assert api.get("/api/v1/members", params={"email": "a\x00@b.c"}).status_code == 400
    literal = api.post("/api/v1/events", json=event("ana", "profile", favourite_store="back\\u0000slash"))
    assert literal.status_code == 201  # an escaped backslash is just text
