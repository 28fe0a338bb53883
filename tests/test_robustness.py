"""Whatever a client sends, the answer is never a 500, and errors always have {code, message, details}."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perkflow.core.context import AppContext
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


# -- every loyalty-core endpoint, with payloads shaped like its schema and hostile values ------------------

# Values at and past every bound the loyalty core has: 32- and 64-bit edges, money and points limits,
# absurd or naive times, strings past column widths, and wrong JSON types.
hostile = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31 - 1,
        2**31,
        2**53 + 1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        -(2**63),
        10**9,
        10**9 + 1,
        10**12 + 1,
        10**15 + 1,
        1.5,
        -0.0,
        1e308,
        True,
        False,
        None,
        "",
        " ",
        "x" * 300,
        "é✓",
        "a\nb",
        "ana",
        "demo",
        "checkout",
        "tier_up",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-10:00",
        "2026-01-01T00:00:00",
        "2026-02-30",
        "2026-03-14T09:30:00Z",
        [],
        {},
        [{}],
        {"a": 1},
    ]
)


def spoil(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `body` with some paths ("data.points", "tiers.1.threshold") set, or removed
    where the change is the marker DROP."""
    out = copy.deepcopy(body)
    for path, change in changes.items():
        # `hostile` hands out the same list and dict objects to every example: copy them too.
        new = change if change is DROP else copy.deepcopy(change)
        *parents, last = path.split(".")
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
        if isinstance(target, list):
            if new is DROP:
                del target[int(last)]
            else:
                target[int(last)] = new
        elif new is DROP:
            target.pop(last, None)
        else:
            target[last] = new
    return out


DROP = object()
RULE = {"name": "Fuzz", "event": "checkout", "kind": "per_amount", "points": 1, "amount_unit": 100}
LADDER = {"tiers": [{"name": "A", "threshold": 0}, {"name": "B", "threshold": 10}]}
# Valid requests for every loyalty-core write, and the paths one example spoils (one or two of them,
# so the rest of the request is valid and the hostile value reaches the code behind its field).
# Counts come from `hostile` alone: a legitimate large count would generate a million codes.
SHAPED: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "post",
        "/api/v1/members",
        {"id": "m-1", "email": "m@example.com", "fields": {"age": 3}, "identities": []},
        [
            "id",
            "email",
            "first_name",
            "birth_date",
            "status",
            "fields.age",
            "fields.seen",
            "fields.nick",
            "fields.tags",
            "fields.nope",
            "identities",
            "identities.0",
        ],
    ),
    (
        "patch",
        "/api/v1/members/ana",
        {"first_name": "Ana"},
        ["email", "last_name", "birth_date", "status", "fields.age", "fields.seen", "fields.tags"],
    ),
    (
        "post",
        "/api/v1/members/ana/identities",
        {"external_source": "pos", "external_source_id": "9"},
        ["external_source", "external_source_id"],
    ),
    (
        "post",
        "/api/v1/events",
        {"customer": "ana", "action": "point_add", "data": {"points": 5}},
        ["customer", "action", "id", "occurred_at", "data.points", "data.expires_at", "data.expires_in_days"],
    ),
    (
        "post",
        "/api/v1/events",
        {"customer": "ana", "action": "checkout", "data": {"transaction_id": "T-9", "total": 1000}},
        ["data.transaction_id", "data.total", "data.currency", "data.items", "id", "occurred_at"],
    ),
    (
        "post",
        "/api/v1/events",
        {"customer": "ana", "action": "refund", "data": {"transaction_id": "T-1", "amount": 100}},
        ["data.amount", "data.transaction_id"],
    ),
    (
        "post",
        "/api/v1/events",
        {"customer": "ana", "action": "review_written", "data": {"product_id": "p", "rating": 5}},
        ["data.rating", "data.product_id", "data.extra"],
    ),
    (
        "post",
        "/api/v1/events/bulk",
        {"events": [{"customer": "ana", "action": "point_add", "data": {"points": 1}}]},
        ["events", "events.0", "events.0.data"],
    ),
    (
        "post",
        "/api/v1/programs",
        {"name": "P", "currency": "EUR", "earning_rules": [RULE], **LADDER},
        [
            "id",
            "name",
            "currency",
            "expiry_policy",
            "tier_window_days",
            "earning_rules.0.points",
            "earning_rules.0.amount_unit",
            "earning_rules.0.min_amount",
            "tiers.1.threshold",
            "tiers.0.name",
        ],
    ),
    (
        "patch",
        "/api/v1/programs/demo",
        {"description": "d"},
        ["name", "tier_window_days", "expiry_policy", "expiry_policy.days"],
    ),
    (
        "post",
        "/api/v1/programs/demo/earning-rules",
        RULE,
        [
            "points",
            "amount_unit",
            "min_amount",
            "pending_days",
            "amount_field",
            "conditions",
            "once_per",
            "event",
        ],
    ),
    (
        "put",
        "/api/v1/programs/demo/tiers",
        LADDER,
        ["tiers.1.threshold", "tiers.0.threshold", "tiers.1.name", "tiers.1.id"],
    ),
    (
        "post",
        "/api/v1/rewards",
        {"name": "R", "points_cost": 10},
        ["id", "name", "points_cost", "program_id", "uses_coupons"],
    ),
    ("patch", "/api/v1/rewards/rew_coffee", {"description": "d"}, ["name", "points_cost", "active"]),
    (
        "post",
        "/api/v1/rewards/rew_coffee/coupons",
        {"coupons": [{"code": "FUZZ-1", "value": 100}]},
        ["coupons.0.code", "coupons.0.value", "coupons.0.expires_at", "coupons"],
    ),
    (
        "post",
        "/api/v1/rewards/rew_coffee/coupons/generate",
        {"count": 1, "length": 8},
        ["count", "length", "charset", "prefix", "pattern", "value", "expires_at"],
    ),
    ("post", "/api/v1/members/ana/rewards/rew_coffee/claim", {}, ["free"]),
    (
        "post",
        "/api/v1/event-types",
        {"name": "fuzz_type", "attributes": {"n": "integer"}},
        ["name", "attributes", "attributes.n", "description"],
    ),
    ("post", "/api/v1/fields", {"key": "fuzz_field", "type": "integer"}, ["key", "type", "label"]),
]
query_text = st.sampled_from(
    [
        "",
        "0",
        "-1",
        "1.5",
        "abc",
        str(2**63),
        str(2**64),
        "true",
        "2026-02-30",
        "%%%",
        "A" * 3000,
        "eyJtZW1iZXIiOnRydWV9",
        "bTotMQ",
    ]
) | st.text(max_size=12)
QUERIES = [
    (
        "/api/v1/members",
        [
            "limit",
            "cursor",
            "email",
            "status",
            "program",
            "opted_in",
            "tier",
            "field.age",
            "field.seen",
            "field.nick",
            "field.tags",
            "field.nope",
        ],
    ),
    ("/api/v1/members/ana/activities", ["limit", "cursor", "type"]),
    ("/api/v1/members/ana/ledger", ["limit", "cursor", "program"]),
    ("/api/v1/members/ana/points", ["program"]),
    ("/api/v1/members/lookup", ["external_source", "external_source_id"]),
    ("/api/v1/activities", ["after", "type", "member", "limit"]),
    ("/api/v1/rewards", ["program"]),
    ("/api/v1/programs", []),
    ("/api/v1/event-types", []),
    ("/api/v1/fields", []),
]
path_ids = st.sampled_from(
    ["ana", "a b", "-x", "x" * 200, "act_1", "act_" + "9" * 30, "é", "ana.b@c+d:e"]
) | st.text(min_size=1, max_size=12)
ID_PATHS = [
    "/api/v1/members/{}",
    "/api/v1/members/{}/points",
    "/api/v1/members/{}/ledger",
    "/api/v1/members/{}/activities",
    "/api/v1/activities/{}",
    "/api/v1/rewards/{}",
    "/api/v1/programs/{}",
]


@pytest.fixture
def catalogue(api: TestClient) -> None:
    for key, kind in [("age", "integer"), ("seen", "datetime"), ("nick", "string"), ("tags", "array")]:
        assert api.post("/api/v1/fields", json={"key": key, "type": kind}).status_code == 201
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    api.post("/api/v1/events", json=event("ana", "checkout", transaction_id="T-1", total=6000))
    api.post("/api/v1/members/ana/identities", json={"external_source": "pos", "external_source_id": "1"})


def activity_count(ctx: AppContext) -> int:
    """Read from the table itself: on PostgreSQL the feed may hold back rows while unrelated
    transactions on the server are still open, which would hide a half-write."""
    with ctx.uow(write=False) as uow:
        return int(uow.conn.exec_driver_sql("SELECT COUNT(*) FROM activities").scalar_one())


@pytest.mark.usefixtures("demo", "catalogue")
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.integers(0, len(SHAPED) - 1), data=st.data())
def test_schema_shaped_hostile_payloads_never_cause_a_500_or_half_writes(
    api: TestClient, ctx: AppContext, route: int, data: st.DataObject
) -> None:
    method, path, valid, paths = SHAPED[route]
    keys = st.lists(st.sampled_from(paths), min_size=1, max_size=2, unique=True)
    changes = {key: data.draw(hostile | json_values | st.just(DROP)) for key in data.draw(keys)}
    try:
        body = spoil(valid, changes)
    except (IndexError, TypeError, AttributeError, ValueError, KeyError):
        body = valid  # a path into a value the other change replaced; send the valid request
    before = activity_count(ctx)
    response = api.request(method, path, json=body)
    assert_clean(response)
    if response.status_code >= 400:
        # A refused request leaves the activity stream (every member change writes to it) as it was.
        assert activity_count(ctx) == before, (path, body, response.text)


@pytest.mark.usefixtures("demo", "catalogue")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.integers(0, len(QUERIES) - 1), data=st.data())
def test_hostile_query_strings_never_cause_a_500(api: TestClient, route: int, data: st.DataObject) -> None:
    path, names = QUERIES[route]
    params = data.draw(st.dictionaries(st.sampled_from(names), query_text, max_size=3)) if names else {}
    assert_clean(api.get(path, params=params))


@pytest.mark.usefixtures("demo", "catalogue")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(ID_PATHS), ident=path_ids)
def test_hostile_ids_in_paths_never_cause_a_500(api: TestClient, template: str, ident: str) -> None:
    from urllib.parse import quote

    assert_clean(api.get(template.format(quote(ident, safe=""))))
