"""The Braze sandbox over real HTTP on loopback: auth, caps, validation, attributes, limits and faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from perkflow.sandbox.braze import BrazeSandbox, BrazeSandboxConfig, create_app
from perkflow.sandbox.braze.cli import braze_sandbox_config, parse_api_keys, serve_braze_sandbox
from perkflow.sandbox.braze.times import OutOfRangeYear, format_time, parse_time
from perkflow.sandbox.server import ServerThread

KEY = "braze-key"
TRACK_ONLY_KEY = "track-only"
EXPORT_ONLY_KEY = "export-only"
API_KEYS = {
    KEY: {"users.track", "users.export.ids"},
    TRACK_ONLY_KEY: {"users.track"},
    EXPORT_ONLY_KEY: {"users.export.ids"},
}
VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
WHEN = "2025-06-01T12:00:00Z"


class WallClock:
    """A settable stand-in for time.time, so rate-limit windows are the same on every run."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Braze:
    sandbox: BrazeSandbox
    client: httpx.Client

    def track(self, body: Any, *, key: str = KEY, path: str = "/users/track") -> httpx.Response:
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})

    def export(self, body: Any, *, key: str = KEY) -> httpx.Response:
        return self.client.post("/users/export/ids", json=body, headers={"Authorization": f"Bearer {key}"})


@contextmanager
def braze_server(config: BrazeSandboxConfig) -> Iterator[Braze]:
    sandbox = BrazeSandbox(config)
    with ServerThread(create_app(sandbox)) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        yield Braze(sandbox, client)


@pytest.fixture(scope="module")
def braze_shared_server() -> Iterator[Braze]:
    with braze_server(BrazeSandboxConfig(api_keys=API_KEYS)) as braze:
        yield braze


@pytest.fixture
def braze(braze_shared_server: Braze) -> Braze:
    braze_shared_server.sandbox.reset()
    return braze_shared_server


def attrs(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": list(objects)}


def event(external_id: str, name: str = "reward_redeemed", **extra: Any) -> dict[str, Any]:
    return {"external_id": external_id, "name": name, "time": WHEN, **extra}


def assert_rate_headers(response: httpx.Response) -> None:
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert header in response.headers, header


# -- auth, envelope and caps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("_case", "headers", "path", "status", "message"),
    [
        ("no key", {}, "/users/track", 401, "Invalid API Key"),
        ("unknown key", {"Authorization": "Bearer nope"}, "/users/track", 401, "Invalid API Key"),
        ("not bearer", {"Authorization": f"Basic {KEY}"}, "/users/track", 401, "Invalid API Key"),
        (
            "no permission",
            {"Authorization": f"Bearer {EXPORT_ONLY_KEY}"},
            "/users/track",
            403,
            "Access Denied",
        ),
        ("trailing slash", {"Authorization": f"Bearer {KEY}"}, "/users/track/", 403, "Access Denied"),
    ],
)
def test_track_refuses_bad_credentials_and_the_trailing_slash(
    braze: Braze, _case: str, headers: dict[str, str], path: str, status: int, message: str
) -> None:
    response = braze.client.post(path, json=attrs({"external_id": "u1", "tier": "gold"}), headers=headers)
    assert response.status_code == status
    assert response.json() == {"message": message}
    assert_rate_headers(response)
    assert braze.sandbox.user("u1") is None


def test_track_needs_json_content_type_and_valid_json(braze: Braze) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    wrong_type = braze.client.post(
        "/users/track", content=b"{}", headers={**auth, "Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    assert_rate_headers(wrong_type)
    bad_json = braze.client.post(
        "/users/track", content=b'{"attributes": [', headers={**auth, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json() == {"message": "Error while parsing request body"}
    with_charset = braze.client.post(
        "/users/track",
        content=b'{"attributes":[{"external_id":"u1","tier":"gold"}]}',
        headers={**auth, "Content-Type": "application/json; charset=utf-8"},
    )
    assert with_charset.status_code == 201
    assert braze.sandbox.stats()["rejected_requests"] == 2


def test_empty_request_and_unknown_top_level_keys(braze: Braze) -> None:
    empty = braze.track({"partner": "RudderStack"})
    assert empty.status_code == 400
    assert empty.json() == {"message": VALID_DATA, "errors": []}
    tagged = braze.track({"partner": "RudderStack", **attrs({"external_id": "u1", "tier": "gold"})})
    assert tagged.status_code == 201
    assert braze.sandbox.user("u1")["attributes"] == {"tier": "gold"}  # type: ignore[index]


def test_total_cap_counts_objects_across_arrays(braze: Braze) -> None:
    at_cap = {
        "attributes": [{"external_id": f"u{i}", "n": i} for i in range(50)],
        "events": [event("u0")] * 25,
    }
    assert braze.track(at_cap).status_code == 201
    over = {
        **at_cap,
        "purchases": [{"external_id": "u0", "product_id": "p", "currency": "EUR", "price": 1.0}],
    }
    response = braze.track(over)
    assert response.status_code == 400
    assert response.json() == {"message": "Max Input Length Exceeded"}
    assert braze.sandbox.stats()["objects"] == 75


def test_per_array_cap_allows_75_in_each_array() -> None:
    config = BrazeSandboxConfig(cap_mode="per_array", rate_limit=None)
    with braze_server(config) as braze:
        full = {
            "attributes": [{"external_id": f"u{i}", "n": i} for i in range(75)],
            "events": [event("u0")] * 75,
            "purchases": [
                {"external_id": "u0", "product_id": "p", "currency": "EUR", "price": 1.5, "time": WHEN}
            ]
            * 75,
        }
        response = braze.track(full)
        assert response.status_code == 201
        assert response.json()["purchases_processed"] == 75
        assert "X-RateLimit-Limit" not in response.headers  # limiting disabled
        over = braze.track({"attributes": [{"external_id": f"u{i}"} for i in range(76)]})
        assert over.status_code == 400
        assert over.json() == {"message": "Max Input Length Exceeded"}


def test_body_over_four_megabytes_is_413(braze: Braze) -> None:
    filler = "x" * 250
    big = {"attributes": [{"external_id": "u1", f"k{i}": filler} for i in range(17_000)]}
    response = braze.track(big)
    assert response.status_code == 413
    assert_rate_headers(response)
    assert braze.sandbox.stats()["users"] == 0


# -- per-object validation -----------------------------------------------------------------------


def test_partial_errors_name_the_array_and_index_and_the_rest_is_applied(braze: Braze) -> None:
    response = braze.track(
        {
            "attributes": [
                {"external_id": "ok", "tier": "gold"},
                {"tier": "silver"},
                {"external_id": "a", "braze_id": "b", "tier": "x"},
                {"external_id": "é" * 494},
            ],
            "events": [
                event("ok"),
                {"external_id": "ok", "time": WHEN},
                event("ok", properties={"time": "now"}),
                {"external_id": "ok", "name": "late"},
            ],
            "purchases": [
                {
                    "external_id": "ok",
                    "product_id": "p",
                    "currency": "EUR",
                    "price": 2.5,
                    "quantity": 101,
                    "time": WHEN,
                }
            ],
        }
    )
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "success"
    assert (body["attributes_processed"], body["events_processed"], body["purchases_processed"]) == (1, 1, 0)
    assert [(e["input_array"], e["index"]) for e in body["errors"]] == [
        ("attributes", 1),
        ("attributes", 2),
        ("attributes", 3),
        ("events", 1),
        ("events", 2),
        ("events", 3),
        ("purchases", 0),
    ]
    types = [e["type"] for e in body["errors"]]
    assert types[0] == "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
    assert types[2] == "'external_id' must be fewer than 988 bytes"
    assert types[3] == "'name' is required"
    assert "reserved key 'time'" in types[4]
    assert types[5] == "'time' is required"
    assert types[6] == "'quantity' is not valid"
    user = braze.sandbox.user("ok")
    assert user is not None and user["attributes"] == {"tier": "gold"} and len(user["events"]) == 1
    assert braze.sandbox.user("a") is None
    assert braze.sandbox.stats()["item_errors"] == 7


def test_all_invalid_objects_answer_400_with_the_errors(braze: Braze) -> None:
    response = braze.track(
        {"attributes": [{"tier": "gold"}], "events": [{"external_id": "u1", "time": WHEN}]}
    )
    assert response.status_code == 400
    assert response.json() == {
        "message": VALID_DATA,
        "errors": [
            {
                "type": "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required",
                "input_array": "attributes",
                "index": 0,
            },
            {"type": "'name' is required", "input_array": "events", "index": 0},
        ],
    }
    assert braze.sandbox.stats()["users"] == 0
    assert braze.sandbox.stats()["accepted_requests"] == 0


def test_external_id_may_be_987_bytes(braze: Braze) -> None:
    assert braze.track(attrs({"external_id": "x" * 987, "n": 1})).status_code == 201
    assert braze.sandbox.user("x" * 987) is not None


def test_aliases_update_existing_users_only_unless_told_otherwise(braze: Braze) -> None:
    alias = {"alias_name": "anon-1", "alias_label": "perkflow"}
    skipped = braze.track(attrs({"user_alias": alias, "tier": "gold"}))
    assert skipped.status_code == 201
    assert braze.sandbox.user_by_alias("anon-1", "perkflow") is None
    assert braze.sandbox.stats()["skipped_objects"] == 1
    braze.track(attrs({"user_alias": alias, "_update_existing_only": False, "tier": "gold"}))
    created = braze.sandbox.user_by_alias("anon-1", "perkflow")
    assert (
        created is not None and created["external_id"] is None and created["attributes"] == {"tier": "gold"}
    )
    braze.track(attrs({"external_id": "u2", "_update_existing_only": True, "tier": "gold"}))
    assert braze.sandbox.user("u2") is None


def test_email_fallback_prefers_the_identified_profile_and_creates_otherwise(braze: Braze) -> None:
    braze.track(attrs({"external_id": "m1", "email": "ada@example.com"}))
    braze.track(attrs({"email": "ada@example.com", "tier": "gold"}))
    assert braze.sandbox.user("m1")["attributes"] == {"tier": "gold"}  # type: ignore[index]
    braze.track(attrs({"email": "new@example.com", "tier": "silver"}))
    stranger = [u for u in braze.sandbox.users() if u["standard"].get("email") == "new@example.com"]
    assert len(stranger) == 1 and stranger[0]["external_id"] is None
    # A primary id unknown to Braze makes a new profile even though the email is taken.
    braze.track(attrs({"external_id": "m2", "email": "ada@example.com"}))
    assert braze.sandbox.stats()["users"] == 3


def test_standard_fields_are_validated_and_kept_apart(braze: Braze) -> None:
    response = braze.track(
        attrs(
            {
                "external_id": "u1",
                "first_name": "Ada",
                "dob": "1990-02-30",
                "gender": "f",
                "country": "Narnia",
                "email_subscribe": "opted_in",
                "bio": "ignored",
                "email": "not-an-email",
            }
        )
    )
    assert response.status_code == 201
    assert [e["type"] for e in response.json()["errors"]] == [
        "'dob' must be a date in YYYY-MM-DD format",
        "'email' is not a valid email address",
    ]
    user = braze.sandbox.user("u1")
    assert user is not None
    assert user["standard"] == {"first_name": "Ada", "gender": "F", "email_subscribe": "opted_in"}
    assert user["attributes"] == {}


# -- attribute types and operations --------------------------------------------------------------


def test_every_scalar_type_round_trips(braze: Braze) -> None:
    response = braze.track(
        attrs(
            {
                "external_id": "u1",
                "points": 120,
                "ratio": 0.75,
                "tier": "gold",
                "vip": True,
                "joined": "2024-03-01T10:00:00+02:00",
                "renewal": "12/1/2021",
                "birthday_party": "2024-07-04",
                "far_future": "3001-01-01",
                "note": "  spaces matter ",
            }
        )
    )
    assert response.status_code == 201 and "errors" not in response.json()
    assert braze.sandbox.user("u1")["attributes"] == {  # type: ignore[index]
        "points": 120,
        "ratio": 0.75,
        "tier": "gold",
        "vip": True,
        "joined": "2024-03-01T08:00:00.000Z",
        "renewal": "2021-12-01T00:00:00.000Z",
        "birthday_party": "2024-07-04T00:00:00.000Z",
        "far_future": "3001-01-01",
        "note": "  spaces matter ",
    }
    assert braze.sandbox.attribute_types()["joined"] == "time"
    assert braze.sandbox.attribute_types()["far_future"] == "string"
    over_http = braze.client.get("/sandbox/users/u1").json()
    assert over_http["attributes"]["points"] == 120


def test_increment_and_null_removal(braze: Braze) -> None:
    braze.track(attrs({"external_id": "u1", "points": {"inc": 10}, "tier": "gold"}))
    braze.track(attrs({"external_id": "u1", "points": {"inc": -3}, "tier": None}))
    assert braze.sandbox.user("u1")["attributes"] == {"points": 7}  # type: ignore[index]
    refused = braze.track(attrs({"external_id": "u1", "points": {"inc": 1.5}}))
    assert (
        refused.json()["errors"][0]["type"]
        == "Custom attribute 'points' can only be incremented by an integer"
    )


def test_strings_and_keys_are_limited(braze: Braze) -> None:
    response = braze.track(
        attrs({"external_id": "u1", "long": "x" * 256, "$op": 1, "k" * 256: 1, "ok": "x" * 255})
    )
    assert response.status_code == 201
    assert len(response.json()["errors"]) == 3
    assert braze.sandbox.user("u1")["attributes"] == {"ok": "x" * 255}  # type: ignore[index]


def test_first_value_decides_the_type(braze: Braze) -> None:
    braze.track(attrs({"external_id": "u1", "points": 10, "ratio": 1.5}))
    response = braze.track(attrs({"external_id": "u2", "tier": "gold", "points": "10", "ratio": 2}))
    assert response.status_code == 201
    assert response.json()["errors"] == [
        {
            "type": "Custom attribute 'points' is of type integer, so the string value was not applied",
            "input_array": "attributes",
            "index": 0,
        },
        {
            "type": "Custom attribute 'ratio' is of type float, so the integer value was not applied",
            "input_array": "attributes",
            "index": 0,
        },
    ]
    assert braze.sandbox.user("u2")["attributes"] == {"tier": "gold"}  # type: ignore[index]
    conflict = braze.track(attrs({"external_id": "u1", "points": {"add": ["x"]}}))
    assert "is of type integer" in conflict.json()["errors"][0]["type"]


def test_forced_types_coerce_documented_strings() -> None:
    config = BrazeSandboxConfig(forced_types={"vip": "boolean", "visits": "integer"}, rate_limit=None)
    with braze_server(config) as braze:
        braze.track(attrs({"external_id": "u1", "vip": "t", "visits": "12"}))
        assert braze.sandbox.user("u1")["attributes"] == {"vip": True, "visits": 12}  # type: ignore[index]
        refused = braze.track(attrs({"external_id": "u1", "vip": "maybe"}))
        assert "is of type boolean" in refused.json()["errors"][0]["type"]


def test_arrays_are_capped_sets(braze: Braze) -> None:
    braze.track(attrs({"external_id": "u1", "badges": ["a", "b", "a", "c"]}))
    assert braze.sandbox.user("u1")["attributes"]["badges"] == ["a", "b", "c"]  # type: ignore[index]
    braze.track(attrs({"external_id": "u1", "badges": {"add": ["a", "d"], "remove": ["b", "zz"]}}))
    assert braze.sandbox.user("u1")["attributes"]["badges"] == ["c", "a", "d"]  # type: ignore[index]
    braze.track(attrs({"external_id": "u1", "badges": {"add": [f"n{i}" for i in range(23)]}}))
    badges = braze.sandbox.user("u1")["attributes"]["badges"]  # type: ignore[index]
    assert len(badges) == 25 and badges[:2] == ["a", "d"] and badges[-1] == "n22"  # "c", the oldest, dropped
    braze.track(attrs({"external_id": "u2", "badges": [f"v{i}" for i in range(30)]}))
    assert braze.sandbox.user("u2")["attributes"]["badges"] == [f"v{i}" for i in range(5, 30)]  # type: ignore[index]
    refused = braze.track(attrs({"external_id": "u1", "badges": ["ok", None]}))
    assert refused.json()["errors"][0]["input_array"] == "attributes"


def test_nested_objects_replace_or_merge_and_take_time(braze: Braze) -> None:
    tier = {"name": "gold", "since": {"$time": "2024-01-01"}, "perks": {"lounge": True, "shipping": "free"}}
    braze.track(attrs({"external_id": "u1", "tier": tier}))
    stored = braze.sandbox.user("u1")["attributes"]["tier"]  # type: ignore[index]
    assert stored == {
        "name": "gold",
        "since": "2024-01-01T00:00:00.000Z",
        "perks": {"lounge": True, "shipping": "free"},
    }
    braze.track(attrs({"external_id": "u1", "tier": {"name": "platinum"}}))
    assert braze.sandbox.user("u1")["attributes"]["tier"] == {"name": "platinum"}  # type: ignore[index]
    braze.track(attrs({"external_id": "u1", "tier": tier}))
    braze.track(
        attrs(
            {
                "external_id": "u1",
                "_merge_objects": True,
                "tier": {"perks": {"shipping": "express"}, "until": {"$time": "2025-01-01T00:00:00+01:00"}},
            }
        )
    )
    assert braze.sandbox.user("u1")["attributes"]["tier"] == {  # type: ignore[index]
        "name": "gold",
        "since": "2024-01-01T00:00:00.000Z",
        "perks": {"lounge": True, "shipping": "express"},
        "until": "2024-12-31T23:00:00.000Z",
    }


def test_an_invalid_nested_value_drops_every_nested_update_of_the_request(braze: Braze) -> None:
    braze.track(
        attrs(
            {"external_id": "u1", "tier": {"name": "gold"}}, {"external_id": "u2", "tier": {"name": "gold"}}
        )
    )
    response = braze.track(
        attrs(
            {"external_id": "u1", "tier": {"name": "platinum"}, "points": 5},
            {"external_id": "u2", "tier": {"name": "silver", "since": {"$time": "not a date"}}, "visits": 3},
        )
    )
    assert response.status_code == 201
    errors = response.json()["errors"]
    assert [(e["input_array"], e["index"]) for e in errors] == [("attributes", 1)]
    assert "tier" in errors[0]["type"] and "dropped" in errors[0]["type"]
    assert braze.sandbox.user("u1")["attributes"] == {"tier": {"name": "gold"}, "points": 5}  # type: ignore[index]
    assert braze.sandbox.user("u2")["attributes"] == {"tier": {"name": "gold"}, "visits": 3}  # type: ignore[index]
    null_inside = braze.track(attrs({"external_id": "u1", "tier": {"name": None}}))
    assert "null" in null_inside.json()["errors"][0]["type"]


def test_arrays_of_objects_support_add_remove_and_update(braze: Braze) -> None:
    rewards = [{"id": 1, "title": "Coffee", "left": 2}, {"id": 2, "title": "Cake", "left": 1}]
    braze.track(attrs({"external_id": "u1", "rewards": rewards}))
    braze.track(
        attrs({"external_id": "u1", "rewards": {"$add": [{"id": 3, "title": "Tea", "left": 5}, {"id": 2}]}})
    )
    braze.track(
        attrs(
            {
                "external_id": "u1",
                "_merge_objects": True,
                "rewards": {
                    "$remove": [{"$identifier_key": "id", "$identifier_value": 2}],
                    "$update": [
                        {"$identifier_key": "id", "$identifier_value": 1, "$new_object": {"left": 1}}
                    ],
                },
            }
        )
    )
    assert braze.sandbox.user("u1")["attributes"]["rewards"] == [  # type: ignore[index]
        {"id": 1, "title": "Coffee", "left": 1},
        {"id": 3, "title": "Tea", "left": 5},
    ]
    braze.track(
        attrs(
            {
                "external_id": "u1",
                "rewards": {
                    "$update": [{"$identifier_key": "id", "$identifier_value": 3, "$new_object": {"left": 0}}]
                },
            }
        )
    )
    # Without _merge_objects the matched element is overwritten by $new_object.
    assert braze.sandbox.user("u1")["attributes"]["rewards"][1] == {"left": 0}  # type: ignore[index]


# -- events and purchases ------------------------------------------------------------------------


def test_events_are_never_deduplicated_and_future_times_are_clamped(braze: Braze) -> None:
    same = event("u1", properties={"perkflow_event_id": "evt-1"}, app_id="app-1")
    assert braze.track({"events": [same, same]}).json()["events_processed"] == 2
    braze.track({"events": [same, event("u1", time="2999-01-01T00:00:00Z")]})
    events = braze.sandbox.events("u1")
    assert len(events) == 4 and len({e["id"] for e in events}) == 4
    assert events[0] | {"id": "-"} == {
        "id": "-",
        "external_id": "u1",
        "braze_id": events[0]["braze_id"],
        "name": "reward_redeemed",
        "time": "2025-06-01T12:00:00.000Z",
        "properties": {"perkflow_event_id": "evt-1"},
        "app_id": "app-1",
    }
    assert events[3]["time"] < "2999"
    assert [e["name"] for e in braze.sandbox.user("u1")["events"]] == ["reward_redeemed"] * 4  # type: ignore[index]
    over_http = braze.client.get("/sandbox/events", params={"external_id": "u1"}).json()["events"]
    assert len(over_http) == 4


def test_event_properties_are_checked(braze: Braze) -> None:
    response = braze.track(
        {
            "events": [
                event("u1", properties={"event_name": "x"}),
                event("u1", properties={"$bad": 1}),
                event("u1", properties={"blob": ["x" * 200] * 300}),
                event("u1", time="yesterday"),
                event("u1", properties={"nested": {"a": [1, 2]}, "n": 1.5}),
            ]
        }
    )
    assert response.status_code == 201
    assert [e["index"] for e in response.json()["errors"]] == [0, 1, 2, 3]
    assert "50 KB" in response.json()["errors"][2]["type"]


# -- rate limiting -------------------------------------------------------------------------------


def test_rate_limit_uses_clock_aligned_windows_and_reports_epoch_reset() -> None:
    clock = WallClock(1_000_000.5)  # window [999_999, 1_000_002)
    with braze_server(BrazeSandboxConfig(rate_limit=3, rate_window_s=3.0, clock=clock)) as braze:
        remaining = [
            braze.track(attrs({"external_id": "u1", "n": i})).headers["X-RateLimit-Remaining"]
            for i in range(3)
        ]
        assert remaining == ["2", "1", "0"]
        limited = braze.track(attrs({"external_id": "u1", "n": 99}))
        assert limited.status_code == 429
        assert limited.json() == {"message": "Rate Limit Exceeded"}
        assert limited.headers["X-RateLimit-Limit"] == "3"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert limited.headers["X-RateLimit-Reset"] == "1000002"
        assert braze.sandbox.user("u1")["attributes"]["n"] == 2  # type: ignore[index]
        assert braze.sandbox.stats()["rate_limited"] == 1
        clock.now = 1_000_002.0
        fresh = braze.track(attrs({"external_id": "u1", "n": 3}))
        assert fresh.status_code == 201
        assert fresh.headers["X-RateLimit-Remaining"] == "2"
        assert fresh.headers["X-RateLimit-Reset"] == "1000005"


def test_rate_limit_reset_header_in_seconds_mode() -> None:
    clock = WallClock(1_000_000.5)
    config = BrazeSandboxConfig(rate_limit=1, rate_window_s=3.0, reset_header_mode="seconds", clock=clock)
    with braze_server(config) as braze:
        assert braze.track(attrs({"external_id": "u1"})).headers["X-RateLimit-Reset"] == "2"
        limited = braze.track(attrs({"external_id": "u1"}))
        assert limited.status_code == 429
        assert limited.headers["X-RateLimit-Reset"] == "2"


def test_mau_mode_429_carries_retry_after_instead_of_the_trio() -> None:
    clock = WallClock(1_000_000.5)
    config = BrazeSandboxConfig(rate_limit=1, rate_window_s=3.0, mau_mode=True, clock=clock)
    with braze_server(config) as braze:
        ok = braze.track(attrs({"external_id": "u1"}))
        assert_rate_headers(ok)
        limited = braze.track(attrs({"external_id": "u1"}))
        assert limited.status_code == 429
        assert limited.headers["X-Ratelimit-Retry-After"] == "2"
        assert "X-RateLimit-Limit" not in limited.headers
        assert "X-RateLimit-Reset" not in limited.headers


# -- faults --------------------------------------------------------------------------------------


def test_queued_429_and_503_apply_nothing(braze: Braze) -> None:
    braze.sandbox.set_faults(queue=[429, 503], retry_after_s=2)
    throttled = braze.track(attrs({"external_id": "u1", "n": 1}))
    assert throttled.status_code == 429
    assert throttled.json() == {"message": "Rate Limit Exceeded"}
    assert "Retry-After" not in throttled.headers  # not documented for /users/track
    assert throttled.headers["X-RateLimit-Remaining"] == "0"
    assert int(throttled.headers["X-RateLimit-Reset"]) - time.time() == pytest.approx(2, abs=1.5)
    unavailable = braze.track(attrs({"external_id": "u1", "n": 2}))
    assert unavailable.status_code == 503
    assert unavailable.json() == {"message": "Service Unavailable"}
    assert_rate_headers(unavailable)
    assert braze.sandbox.user("u1") is None
    assert braze.track(attrs({"external_id": "u1", "n": 3})).status_code == 201
    stats = braze.sandbox.stats()
    assert (stats["injected_faults"], stats["server_errors"], stats["accepted_requests"]) == (2, 1, 1)


def test_an_injected_429_carries_the_headers_asked_for() -> None:
    config = BrazeSandboxConfig(mau_mode=True)
    with braze_server(config) as braze:
        braze.sandbox.set_faults(queue=[429, "429:retry-after"], retry_after_s=7)
        mau = braze.track(attrs({"external_id": "u1"}))
        assert mau.status_code == 429 and mau.headers["X-Ratelimit-Retry-After"] == "7"
        assert "Retry-After" not in mau.headers and "X-RateLimit-Reset" not in mau.headers
        plain = braze.track(attrs({"external_id": "u1"}))
        assert plain.status_code == 429 and plain.headers["Retry-After"] == "7"
        assert "X-Ratelimit-Retry-After" not in plain.headers and "X-RateLimit-Reset" not in plain.headers
        assert braze.sandbox.user("u1") is None


def test_drop_is_a_transport_error_and_applies_nothing(braze: Braze) -> None:
    response = braze.client.post("/sandbox/faults", json={"queue": ["drop", "drop_after_apply"]})
    assert response.json()["queue"] == ["drop", "drop_after_apply"]
    with pytest.raises(httpx.TransportError):
        braze.track({"events": [event("u1")]})
    assert braze.sandbox.events() == []
    with pytest.raises(httpx.TransportError):
        braze.track({"events": [event("u1")]})
    assert len(braze.sandbox.events()) == 1  # the client cannot tell; a replay would duplicate it
    assert braze.sandbox.stats()["dropped"] == 2
    assert braze.track({"events": [event("u1")]}).status_code == 201


def test_slow_fault_delays_then_processes(braze: Braze) -> None:
    braze.sandbox.set_faults(queue=["slow:300"])
    started = time.perf_counter()
    response = braze.track(attrs({"external_id": "u1", "n": 1}))
    assert time.perf_counter() - started >= 0.3
    assert response.status_code == 201
    assert braze.sandbox.user("u1") is not None


def test_queued_202_is_maintenance_mode_and_keeps_the_data(braze: Braze) -> None:
    braze.sandbox.set_faults(queue=[202])
    response = braze.track(attrs({"external_id": "u1", "n": 1}))
    assert (response.status_code, response.json()) == (202, {"message": "queued"})
    assert braze.sandbox.user("u1") is not None


def test_random_errors_are_reproducible_with_a_seed(braze: Braze) -> None:
    braze.sandbox.set_faults(error_rate=1.0, seed=7)
    first = [braze.track(attrs({"external_id": "u1"})).status_code for _ in range(6)]
    braze.sandbox.set_faults(error_rate=1.0, seed=7)
    second = [braze.track(attrs({"external_id": "u1"})).status_code for _ in range(6)]
    assert first == second and set(first) <= {500, 502, 503, 504}
    assert braze.sandbox.user("u1") is None
    bad = braze.client.post("/sandbox/faults", json={"queue": ["explode"]})
    assert bad.status_code == 400


# -- export --------------------------------------------------------------------------------------


def test_export_ids_returns_profiles_events_and_unknown_ids(braze: Braze) -> None:
    braze.track(
        {
            "attributes": [{"external_id": "u1", "first_name": "Ada", "dob": "1990-02-01", "points": 40}],
            "events": [event("u1"), event("u1", time="2025-07-01T00:00:00Z")],
        }
    )
    response = braze.export({"external_ids": ["u1", "ghost"]})
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "success" and body["invalid_user_ids"] == ["ghost"]
    [user] = body["users"]
    assert user["external_id"] == "u1" and user["first_name"] == "Ada" and user["dob"] == "1990-02-01"
    assert user["custom_attributes"] == {"points": 40}
    assert user["custom_events"] == [
        {
            "name": "reward_redeemed",
            "count": 2,
            "first": "2025-06-01T12:00:00.000Z",
            "last": "2025-07-01T00:00:00.000Z",
        }
    ]
    narrowed = braze.export({"external_ids": ["u1"], "fields_to_export": ["custom_attributes"]}).json()
    assert narrowed["users"] == [{"external_id": "u1", "custom_attributes": {"points": 40}}]
    assert braze.export({"external_ids": ["u1"]}, key=TRACK_ONLY_KEY).status_code == 403
    assert braze.export({"external_ids": ["u1"]}, key="nope").status_code == 401
    assert braze.export({"external_ids": "u1"}).status_code == 400


# -- data points ---------------------------------------------------------------------------------


ONE_PURCHASE_OF_THREE = {
    "external_id": "u1",
    "product_id": "p",
    "currency": "EUR",
    "price": 2.0,
    "quantity": 3,
    "time": WHEN,
}
DATA_POINT_CASES = [
    (
        "scalar, billable and free standard fields",
        attrs(
            {
                "external_id": "u1",
                "first_name": "A",
                "email_subscribe": "opted_in",
                "points": 10,
                "tier": None,
            }
        ),
        3,
    ),
    (
        "array set is 1, add/remove 1 per value",
        attrs(
            {"external_id": "u1", "tags": ["a", "b", "c"], "badges": {"add": ["x", "y"], "remove": ["gone"]}}
        ),
        4,
    ),
    (
        "nested object costs its leaves",
        attrs(
            {
                "external_id": "u1",
                "tier": {"name": "g", "since": {"$time": "2024-01-01"}, "perks": {"a": 1, "b": 2}},
            }
        ),
        4,
    ),
    (
        "array of objects costs keys per object",
        attrs({"external_id": "u1", "rewards": [{"id": 1, "t": "x"}, {"id": 2, "t": "y"}]}),
        4,
    ),
    (
        "events 1 each, purchases per quantity",
        {"events": [event("u1"), event("u1")], "purchases": [ONE_PURCHASE_OF_THREE]},
        5,
    ),
    (
        "refused values and nested drops are free",
        attrs(
            {"external_id": "u1", "n": 1, "$x": 2},
            {"external_id": "u2", "o": {"a": {"$time": "no"}}, "p": {"b": 1}},
        ),
        1,
    ),
]


@pytest.mark.parametrize(("_case", "body", "points"), DATA_POINT_CASES)
def test_data_point_meter(braze: Braze, _case: str, body: dict[str, Any], points: int) -> None:
    assert braze.track(body).status_code == 201
    assert braze.sandbox.stats()["data_points"] == points


def test_rejected_requests_cost_no_data_points(braze: Braze) -> None:
    braze.sandbox.set_faults(queue=[503])
    braze.track(attrs({"external_id": "u1", "n": 1}))
    braze.track({"attributes": [{"external_id": f"u{i}", "n": 1} for i in range(76)]})
    assert braze.sandbox.stats()["data_points"] == 0


# -- debug routes, concurrency, CLI, time parsing ------------------------------------------------


def test_debug_routes(braze: Braze) -> None:
    braze.track(attrs({"external_id": "u1", "n": 1}))
    assert braze.client.get("/sandbox/users/ghost").status_code == 404
    assert braze.client.get("/sandbox/stats").json()["accepted_requests"] == 1
    [last] = braze.client.get("/sandbox/requests", params={"limit": 1}).json()["requests"]
    assert (last["path"], last["status"], last["attribute_objects"], last["data_points"]) == (
        "/users/track",
        201,
        1,
        1,
    )
    assert braze.client.post("/sandbox/reset").status_code == 200
    assert braze.sandbox.user("u1") is None and braze.sandbox.stats()["requests"] == 0


def test_concurrent_increments_are_not_lost(braze: Braze) -> None:
    url = str(braze.client.base_url)

    def increment_many() -> None:
        with httpx.Client(base_url=url, timeout=5) as client:
            for _ in range(20):
                client.post(
                    "/users/track",
                    json=attrs({"external_id": "u1", "points": {"inc": 1}}),
                    headers={"Authorization": f"Bearer {KEY}"},
                )

    threads = [threading.Thread(target=increment_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert braze.sandbox.user("u1")["attributes"]["points"] == 120  # type: ignore[index]


def test_cli_options_build_the_config() -> None:
    assert parse_api_keys(None) == {"braze-key": frozenset({"users.track", "users.export.ids"})}
    assert parse_api_keys(["a", "b:users.track"]) == {
        "a": frozenset({"users.track", "users.export.ids"}),
        "b": frozenset({"users.track"}),
    }
    with pytest.raises(ValueError, match="unknown permissions"):
        parse_api_keys(["c:users.delete"])
    config = braze_sandbox_config(rate_limit=0, cap_mode="per_array")
    assert config.rate_limit is None and config.cap_mode == "per_array"
    with pytest.raises(ValueError, match="cap_mode"):
        braze_sandbox_config(cap_mode="lots")
    cli = typer.Typer()
    cli.command("braze")(serve_braze_sandbox)
    cli.command("other")(lambda: None)
    result = CliRunner().invoke(cli, ["braze", "--help"])
    assert result.exit_code == 0 and "--api-key" in result.output and "--mau-mode" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", "2024-01-01T00:00:00.000Z"),
        ("2024-01-01T10:00:00", "2024-01-01T10:00:00.000Z"),
        ("2024-01-01 10:00:00", "2024-01-01T10:00:00.000Z"),
        ("2024-01-01T10:00:00.123+02:00", "2024-01-01T08:00:00.123Z"),
        ("2024-01-01T10:00:00:456Z", "2024-01-01T10:00:00.456Z"),
        ("12/1/2021", "2021-12-01T00:00:00.000Z"),
        ("Wed 01 15 10:00:00.+0100 2025", "2025-01-15T09:00:00.000Z"),
        ("Wed Jan 15 10:00:00 UTC 2025", "2025-01-15T10:00:00.000Z"),
    ],
)
def test_braze_date_formats(text: str, expected: str) -> None:
    moment = parse_time(text)
    assert moment is not None and format_time(moment) == expected


def test_not_dates_and_out_of_range_years() -> None:
    assert parse_time("gold") is None
    assert parse_time("2024-13-01") is None
    with pytest.raises(OutOfRangeYear):
        parse_time("3001-01-01")
