"""Platform encodings and request packing, checked without a network: the pure half of the connectors."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import orjson
import pytest

from perkflow.connectors.base import EventPart, FieldError, MemberUnit, UnitError
from perkflow.connectors.bloomreach.connector import BloomreachConnector
from perkflow.connectors.bloomreach.encoding import encode_property
from perkflow.connectors.braze.connector import BrazeConnector, parse_rate
from perkflow.connectors.braze.encoding import check_remote_field, encode_attribute, event_properties
from perkflow.connectors.urls import normalize_base_url

MOMENT = datetime(2026, 3, 14, 9, 30, 5, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field_type", "value", "encoded"),
    [
        ("integer", 42, 42),
        ("float", 3, 3.0),
        ("string", "gold", "gold"),
        ("boolean", False, False),
        ("date", date(1990, 4, 1), "1990-04-01"),
        ("datetime", MOMENT, "2026-03-14T09:30:05.123Z"),
        ("array", ["a", "b"], ["a", "b"]),
        (
            "object",
            {"since": "2026-01-01T00:00:00Z", "level": 2, "born": "1990-04-01", "code": "2026-13-45"},
            {
                "since": {"$time": "2026-01-01T00:00:00.000Z"},
                "level": 2,
                "born": {"$time": "1990-04-01"},
                "code": "2026-13-45",  # not a date: an invalid $time would drop every nested update
            },
        ),
        (
            "array_of_objects",
            [{"id": 1, "at": "2026-01-01T00:00:00+01:00", "when": MOMENT}],
            [
                {
                    "id": 1,
                    "at": {"$time": "2025-12-31T23:00:00.000Z"},
                    "when": {"$time": "2026-03-14T09:30:05.123Z"},
                }
            ],
        ),
        ("datetime", datetime(2026, 3, 14, 9, 30), "2026-03-14T09:30:00.000Z"),  # naive is UTC
        ("datetime", "2026-03-14T10:30:00+01:00", "2026-03-14T09:30:00.000Z"),
        ("string", None, None),
    ],
)
def test_braze_encodes_every_attribute_type(field_type: str, value: object, encoded: object) -> None:
    result = encode_attribute(field_type, value)
    assert result == encoded
    assert type(result) is type(encoded)


@pytest.mark.parametrize(
    ("field_type", "value", "reason"),
    [
        ("string", "x" * 256, "255"),
        ("array", list(range(26)), "25"),
        ("object", {"bad key": 1}, "spaces"),
        ("object", {"$x": 1}, "start with"),
        ("object", {"a": None}, "null"),
        ("object", {"blob": "x" * 300}, "255"),
        ("array_of_objects", [{"k": "v" * 200} for _ in range(600)], "100 KB"),
        ("integer", True, "integer"),
        ("date", "01/04/1990", "not an ISO-8601 date"),
        ("datetime", "tomorrow", "not an ISO-8601 date and time"),
        ("datetime", datetime(3001, 1, 1, tzinfo=UTC), "3000"),
        ("object", {"at": datetime(3001, 1, 1, tzinfo=UTC)}, "3000"),
        ("array", [{"a": 1}], "strings, numbers or booleans"),
    ],
)
def test_braze_refuses_values_it_would_reject(field_type: str, value: object, reason: str) -> None:
    with pytest.raises(FieldError, match=reason):
        encode_attribute(field_type, value)


def test_braze_remote_field_names() -> None:
    check_remote_field("loyalty_tier")
    for bad in ("", "$tier", "x" * 256, "external_id", "_merge_objects"):
        with pytest.raises(FieldError):
            check_remote_field(bad)


def test_braze_event_properties_rename_reserved_and_drop_what_braze_refuses() -> None:
    clean, dropped = event_properties(
        {
            "time": "noon",
            "ok": 1,
            "$bad": 2,
            "none": None,
            "long": "x" * 300,
            "items": [{"sku": "A", "at": "2026-01-01T00:00:00Z", "gone": None}],
            "nested": {"$op": 1},
        }
    )
    # ISO strings stay strings in event properties (Braze reads them as times; $time is for attributes).
    assert clean == {"time_": "noon", "ok": 1, "items": [{"sku": "A", "at": "2026-01-01T00:00:00Z"}]}
    assert len(dropped) == 3 and any("long" in reason and "255" in reason for reason in dropped)


@pytest.mark.parametrize(
    ("field_type", "value", "encoded"),
    [
        ("date", date(1990, 4, 1), 638928000),
        ("datetime", datetime(2026, 3, 14, 9, 30, tzinfo=UTC), 1773480600),
        ("float", 2, 2.0),
        ("object", {"a": [1, 2]}, {"a": [1, 2]}),
    ],
)
def test_bloomreach_encodes_dates_as_unix_seconds(field_type: str, value: object, encoded: object) -> None:
    assert encode_property(field_type, value) == encoded


def test_bloomreach_refuses_values_of_16_kb() -> None:
    with pytest.raises(FieldError, match="16 KB"):
        encode_property("string", "x" * 16_384)


def braze(**settings: object) -> BrazeConnector:
    return BrazeConnector({"instance_url": "https://rest.iad-01.braze.com"}, {"api_key": "k"}, dict(settings))


def unit(member: str, attributes: int, events: int, first_item: int = 1) -> MemberUnit:
    return MemberUnit(
        member,
        {"external_id": member},
        {f"a{i}": i for i in range(attributes)} if attributes else {},
        [first_item] if attributes else [],
        [EventPart(first_item + 1 + e, "evt", MOMENT, {"n": e}, f"act_{e}") for e in range(events)],
    )


def test_braze_packs_75_objects_per_request_and_keeps_a_members_events_in_order() -> None:
    units = [unit(f"m{i}", 1, 2, first_item=i * 10) for i in range(40)]  # 120 objects
    requests = braze().pack(units)
    assert [r.objects for r in requests] == [75, 45]
    bodies = [orjson.loads(r.content) for r in requests]
    assert len(bodies[0]["attributes"]) + len(bodies[0]["events"]) == 75
    legacy = braze(braze_cap_mode="per_array").pack(units)
    assert [r.objects for r in legacy] == [111, 9]  # 75 per array; a member's objects travel together
    first = orjson.loads(legacy[0].content)
    assert len(first["events"]) == 74 and len(first["attributes"]) == 37
    for request in [*requests, *legacy]:
        members = [p.member_id for p in request.parts]
        assert all(members.count(m) == 3 for m in members)  # never split across requests


def test_braze_maps_partial_errors_back_to_the_exact_item() -> None:
    request = braze().pack([unit("m1", 1, 2), unit("m2", 1, 0, first_item=10)])[0]
    response = httpx.Response(
        201,
        json={
            "message": "success",
            "errors": [
                {"type": "'external_id' is required", "input_array": "events", "index": 1},
                {"type": "bad value", "input_array": "attributes", "index": 1},
            ],
        },
    )
    verdict = braze().classify(request, response)
    assert verdict.kind == "ok"
    failed = {tuple(request.parts[i].item_ids): reason for i, reason in verdict.part_errors.items()}
    assert failed == {(3,): "'external_id' is required", (10,): "bad value"}


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, {"message": "rate"}, "retry"),
        (408, {"message": "Request Timeout"}, "retry"),
        (500, {}, "retry"),
        (502, {}, "retry"),
        (503, {}, "retry"),
        (504, {}, "retry"),
        (404, {}, "pause"),
        (415, {"message": "Unsupported Media Type"}, "permanent"),
        (409, {}, "permanent"),
        (400, {"message": "Max Input Length Exceeded"}, "split"),
        (413, {}, "split"),
        (401, {"message": "Invalid API Key"}, "pause"),
        (403, {"message": "Access Denied"}, "pause"),
        (400, {"message": "Error while parsing request body"}, "permanent"),
        (202, {"message": "queued"}, "ok"),
    ],
)
def test_braze_status_codes(status: int, body: dict[str, object], kind: str) -> None:
    request = braze().pack([unit("m1", 1, 0)])[0]
    assert braze().classify(request, httpx.Response(status, json=body)).kind == kind


def test_braze_rate_headers_in_both_reset_forms() -> None:
    epoch = parse_rate(
        httpx.Response(200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1773480600"}),
        now_epoch=1773480000,
    )
    assert (epoch.remaining, epoch.reset_epoch) == (0, 1773480600)
    relative = parse_rate(httpx.Response(200, headers={"X-RateLimit-Reset": "30"}), now_epoch=1000.0)
    assert relative.reset_epoch == 1030.0
    mau = parse_rate(httpx.Response(429, headers={"X-Ratelimit-Retry-After": "7"}))
    assert mau.retry_after_s == 7.0


def bloomreach() -> BloomreachConnector:
    return BloomreachConnector(
        {
            "base_url": "https://api.exponea.com",
            "project_token": "t",
            "hard_id": "registered",
            "hard_id_field": "email",
        },
        {"api_key_id": "id", "api_secret": "s"},
        {},
    )


def test_bloomreach_hard_id_is_the_lower_cased_email_and_is_required() -> None:
    assert bloomreach().identify("m1", {"email": "Ann@Example.com"}) == {
        "customer_ids": {"registered": "ann@example.com"}
    }
    with pytest.raises(UnitError, match="hard ID"):
        bloomreach().identify("m1", {"email": None})
    by_member_id = BloomreachConnector(
        {"base_url": "https://api.exponea.com", "project_token": "t", "hard_id": "customer_id"},
        {"api_key_id": "id", "api_secret": "s"},
        {},
    )
    by_member_id.hard_id_field = "member_id"
    # Hard IDs are case-sensitive: only emails are lower-cased, anything else goes as it is.
    assert by_member_id.identify("Ana-01", {}) == {"customer_ids": {"customer_id": "Ana-01"}}


def test_bloomreach_batches_50_commands_and_matches_results_by_command_id() -> None:
    units = [
        MemberUnit(f"m{i}", {"customer_ids": {"registered": f"m{i}@x.io"}}, {"tier": "gold"}, [i], [])
        for i in range(60)
    ]
    requests = bloomreach().pack(units)
    assert [r.objects for r in requests] == [50, 10]
    results = [{"success": True, "command_id": str(i)} for i in range(50)]
    results[7] = {
        "success": False,
        "command_id": "7",
        "errors": ["not authorized to update specified customer properties"],
    }
    verdict = bloomreach().classify(
        requests[0], httpx.Response(200, json={"success": True, "results": results})
    )
    assert verdict.kind == "ok" and list(verdict.part_errors) == [7]
    auth = bloomreach().classify(
        requests[0], httpx.Response(400, json={"success": False, "error": "Invalid project id"})
    )
    assert auth.kind == "pause"


def test_pasted_urls_are_normalised() -> None:
    assert (
        normalize_base_url("rest.iad-01.braze.com/users/track/", strip_paths=("/users/track",))
        == "https://rest.iad-01.braze.com"
    )
    assert normalize_base_url("http://127.0.0.1:9100") == "http://127.0.0.1:9100"
    with pytest.raises(Exception, match="https"):
        normalize_base_url("http://rest.iad-01.braze.com")
