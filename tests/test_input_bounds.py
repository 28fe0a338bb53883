"""Loyalty-core input at and past its bounds: the same 4xx on SQLite and PostgreSQL, nothing half-written.

Each case here was a 500 on one database, or an answer that differed between the two, before the
bound it checks existed.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from perkflow.core.context import AppContext
from perkflow.core.limits import INT64_MAX, MAX_AMOUNT, MAX_POINTS, MAX_THRESHOLD
from perkflow.events.types import BUILTIN_ACTIONS, RESERVED, SYSTEM_ACTIVITY_TYPES
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")
SRC = Path(__file__).resolve().parents[1] / "src" / "perkflow"


def opted_in(api: TestClient, member: str = "ana") -> None:
    assert api.post("/api/v1/events", json=event(member, "opt_in")).status_code == 201


def balance(api: TestClient, member: str = "ana") -> int:
    points: int = api.get(f"/api/v1/members/{member}/points").json()["points"]["balance"]
    return points


def activity_count(api: TestClient, member: str = "ana") -> int:
    return len(api.get(f"/api/v1/members/{member}/activities", params={"limit": 200}).json()["data"])


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["message"] and "details" in body, body
    return body


# -- integers --


def test_balances_past_32_bits_are_kept_on_both_databases(api: TestClient) -> None:
    opted_in(api)
    start = balance(api)  # the demo's welcome points
    for n in range(3):
        response = api.post("/api/v1/events", json=event("ana", "point_add", points=MAX_POINTS))
        assert response.status_code == 201, (n, response.text)
    assert balance(api) == start + 3 * MAX_POINTS > 2**31
    tiers = api.put(
        "/api/v1/programs/demo/tiers",
        json={"tiers": [{"name": "Base", "threshold": 0}, {"name": "Whale", "threshold": 3 * MAX_POINTS}]},
    )
    assert tiers.status_code == 200, tiers.text
    assert api.post("/api/v1/events", json=event("ana", "point_add", points=1)).status_code == 201
    assert api.get("/api/v1/members/ana/points").json()["tier"] == "Whale"


def test_an_event_earning_past_the_bound_is_refused_and_writes_nothing(api: TestClient) -> None:
    opted_in(api)
    start = balance(api)
    rule = {"name": "Big", "event": "checkout", "kind": "per_amount", "points": 1_000_000, "amount_unit": 1}
    assert api.post("/api/v1/programs/demo/earning-rules", json=rule).status_code == 201
    before = activity_count(api)
    checkout = event("ana", "checkout", transaction_id="t-1", total=MAX_AMOUNT)
    body = error(api.post("/api/v1/events", json=checkout), 422, "points_out_of_range")
    assert body["details"]["max_points"] == MAX_POINTS
    assert balance(api) == start and activity_count(api) == before
    # Custom events earn by a rule on any integer attribute: the same bound applies.
    review = {"name": "review", "attributes": {"words": "integer"}}
    assert api.post("/api/v1/event-types", json=review).status_code == 201
    words = {**rule, "name": "Per word", "event": "review", "amount_field": "words"}
    assert api.post("/api/v1/programs/demo/earning-rules", json=words).status_code == 201
    error(api.post("/api/v1/events", json=event("ana", "review", words=2**62)), 422, "points_out_of_range")
    bulk = api.post("/api/v1/events/bulk", json={"events": [checkout, event("ana", "point_add", points=5)]})
    assert [r["status"] for r in bulk.json()["results"]] == ["rejected", "accepted"]
    assert balance(api) == start + 5


INTEGERS_PAST_BOUNDS = [
    ("/api/v1/programs/demo/earning-rules", {"amount_unit": MAX_AMOUNT + 1}),
    ("/api/v1/programs/demo/earning-rules", {"amount_unit": 1, "min_amount": MAX_AMOUNT + 1}),
    ("/api/v1/programs/demo/tiers", {"tiers": [{"name": "A", "threshold": MAX_THRESHOLD + 1}]}),
    ("/api/v1/rewards", {"name": "R", "points_cost": MAX_POINTS + 1}),
    ("/api/v1/events", event("ana", "point_add", points=MAX_POINTS + 1)),
    ("/api/v1/events", event("ana", "checkout", transaction_id="t", total=MAX_AMOUNT + 1)),
    (
        "/api/v1/events",
        event("ana", "checkout", transaction_id="t", total=1, items=[{"quantity": 10**6 + 1}]),
    ),
]


def test_integers_past_their_bound_get_the_same_4xx(api: TestClient) -> None:
    opted_in(api)
    for path, body in INTEGERS_PAST_BOUNDS:
        if path.endswith("earning-rules"):
            body = {"name": "R", "event": "checkout", "kind": "per_amount", "points": 1, **body}
        method = "put" if path.endswith("tiers") else "post"
        expected = "invalid_event_data" if path.endswith("events") else "invalid_input"
        error(api.request(method, path, json=body), 422, expected)


def test_the_bounds_themselves_are_accepted(api: TestClient) -> None:
    rule = {"name": "R", "event": "checkout", "kind": "per_amount", "points": 1}
    created = api.post(
        "/api/v1/programs/demo/earning-rules",
        json={**rule, "amount_unit": MAX_AMOUNT, "min_amount": MAX_AMOUNT},
    )
    assert created.status_code == 201, created.text
    assert created.json()["amount_unit"] == MAX_AMOUNT
    ladder = {"tiers": [{"name": "A", "threshold": 0}, {"name": "B", "threshold": MAX_THRESHOLD}]}
    assert api.put("/api/v1/programs/demo/tiers", json=ladder).status_code == 200


def test_integer_fields_hold_64_bits_and_no_more(api: TestClient) -> None:
    assert api.post("/api/v1/fields", json={"key": "visits", "type": "integer"}).status_code == 201
    ok = api.post("/api/v1/members", json={"id": "big", "fields": {"visits": INT64_MAX}})
    assert ok.status_code == 201 and ok.json()["fields"]["visits"] == INT64_MAX
    # orjson reads unsigned 64-bit numbers too; one past INT64_MAX fits no signed column.
    body = error(
        api.post("/api/v1/members", json={"id": "bigger", "fields": {"visits": INT64_MAX + 1}}),
        422,
        "invalid_fields",
    )
    assert "visits" in body["details"]
    assert api.get("/api/v1/members/bigger").status_code == 404


# -- dates --


def test_absurd_years_are_refused_everywhere_a_time_arrives(api: TestClient) -> None:
    opted_in(api)
    assert api.post("/api/v1/fields", json={"key": "seen", "type": "datetime"}).status_code == 201
    for moment in ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-10:00", "1899-12-31T23:00:00Z"]:
        absurd_year_refused(api, moment)


def absurd_year_refused(api: TestClient, moment: str) -> None:
    before = activity_count(api)
    timed = {**event("ana", "point_add", points=1), "occurred_at": moment}
    error(api.post("/api/v1/events", json=timed), 422, "invalid_event")
    expiring = event("ana", "point_add", points=1, expires_at=moment)
    error(api.post("/api/v1/events", json=expiring), 422, "invalid_event_data")
    error(api.post("/api/v1/members", json={"id": "m-1", "fields": {"seen": moment}}), 422, "invalid_fields")
    error(api.post("/api/v1/members", json={"id": "m-1", "birth_date": moment[:10]}), 422, "invalid_fields")
    assert activity_count(api) == before and api.get("/api/v1/members/m-1").status_code == 404


# -- pagination cursors --


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_TIMELINE_CURSORS = [
    "%%%",
    "A" * 5000,
    b64(orjson.dumps([1])),
    b64(orjson.dumps({})),
    b64(orjson.dumps({"member": True})),
    b64(orjson.dumps({"member": -1})),
    b64(orjson.dumps({"member": 1.5})),
    b64(orjson.dumps({"member": 2**64 - 1})),
    b64(orjson.dumps({"someone-else": 1})),
    b64(orjson.dumps({f"account:{n}": 1 for n in range(100)})),
]
BAD_MEMBER_CURSORS = [
    "%%%",
    "A" * 5000,
    b64(b"m:-1"),
    b64(f"m:{2**63}".encode()),
    b64("m:²".encode()),
    b64(b"x:1"),
]


def test_tampered_cursors_are_400_on_every_loyalty_list(api: TestClient) -> None:
    opted_in(api)
    for cursor in BAD_TIMELINE_CURSORS:
        for path in ("/api/v1/members/ana/activities", "/api/v1/members/ana/ledger"):
            error(api.get(path, params={"cursor": cursor}), 400, "invalid_cursor")
    for cursor in BAD_MEMBER_CURSORS:
        error(api.get("/api/v1/members", params={"cursor": cursor}), 400, "invalid_cursor")


def test_positions_past_64_bits_are_4xx(api: TestClient) -> None:
    error(api.get("/api/v1/activities", params={"after": 2**63}), 422, "invalid_input")
    error(api.get(f"/api/v1/activities/act_{2**70}"), 404, "activity_not_found")
    error(api.get("/api/v1/activities/act_²"), 404, "activity_not_found")
    error(api.get("/api/v1/segments/seg_x/members", params={"cursor": "%%%"}), 404, "segment_not_found")
    assert api.post("/api/v1/segments", json={"id": "seg", "name": "S", "kind": "static"}).status_code == 201
    for cursor in ["%%%", "A" * 5000, b64(b"x:1")]:
        error(api.get("/api/v1/segments/seg/members", params={"cursor": cursor}), 400, "invalid_cursor")


def test_real_cursors_still_page(api: TestClient) -> None:
    opted_in(api)
    for n in range(3):
        api.post("/api/v1/members", json={"id": f"p-{n}"})
    first = api.get("/api/v1/members", params={"limit": 2}).json()
    second = api.get("/api/v1/members", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [m["id"] for m in first["data"] + second["data"]] == ["ana", "p-0", "p-1", "p-2"]
    page = api.get("/api/v1/members/ana/activities", params={"limit": 1}).json()
    more = api.get("/api/v1/members/ana/activities", params={"limit": 1, "cursor": page["next_cursor"]})
    assert more.status_code == 200 and more.json()["data"][0]["id"] != page["data"][0]["id"]


# -- member list filters --


def test_member_filters_are_typed(api: TestClient) -> None:
    for key, kind in [("age", "integer"), ("score", "float"), ("vip", "boolean"), ("since", "date")]:
        assert api.post("/api/v1/fields", json={"key": key, "type": kind}).status_code == 201
    assert api.post("/api/v1/fields", json={"key": "nick", "type": "string"}).status_code == 201
    assert api.post("/api/v1/fields", json={"key": "tags", "type": "array"}).status_code == 201
    fields = {"age": 42, "score": 1.5, "vip": True, "since": "2020-01-02", "nick": "42"}
    assert api.post("/api/v1/members", json={"id": "m-1", "fields": fields}).status_code == 201
    assert (
        api.post("/api/v1/members", json={"id": "m-2", "fields": {"age": 7, "vip": False}}).status_code == 201
    )

    def ids(**query: str) -> list[str]:
        response = api.get("/api/v1/members", params=query)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["data"]]

    assert ids(**{"field.age": "42"}) == ["m-1"]
    assert ids(**{"field.age": "+7"}) == ["m-2"]
    assert ids(**{"field.score": "1.5"}) == ["m-1"]
    assert ids(**{"field.vip": "true"}) == ["m-1"] and ids(**{"field.vip": "false"}) == ["m-2"]
    assert ids(**{"field.since": "2020-01-02"}) == ["m-1"]
    assert ids(**{"field.nick": "42"}) == ["m-1"]  # a string field compares as text, not as 42
    assert ids(**{"field.age": "42", "field.vip": "true"}) == ["m-1"]
    assert ids(**{"field.score": ""}) == ["m-2"]  # empty: the field is not set
    for key, value in [
        ("field.age", "abc"),
        ("field.age", "4.2"),
        ("field.age", str(2**64)),
        ("field.score", "nan"),
        ("field.vip", "maybe"),
        ("field.since", "yesterday"),
        ("field.tags", "x"),
        ("field.unknown", "1"),
        ("status", "asleep"),
    ]:
        body = error(api.get("/api/v1/members", params={key: value}), 422, "invalid_filter")
        assert body["details"]["filter"] == key, body


# -- member ids --


def test_one_member_id_rule_everywhere(api: TestClient, ctx: AppContext) -> None:
    for member_id in ["ana\n", "a b", "-ana", "x" * 129, "ana/../bob", "é"]:
        member_id_refused(api, ctx, member_id)
    assert api.get("/api/v1/members").json()["data"] == []


def member_id_refused(api: TestClient, ctx: AppContext, member_id: str) -> None:
    from perkflow.core import transactions
    from perkflow.members import service

    error(api.post("/api/v1/members", json={"id": member_id}), 422, "invalid_input")
    error(api.post("/api/v1/events", json=event(member_id, "opt_in")), 422, "invalid_event")
    bulk = api.post("/api/v1/events/bulk", json={"events": [event(member_id, "opt_in")]}).json()
    assert bulk["results"][0]["error"]["code"] == "invalid_event"
    quoted = member_id.replace("/", "%2F").replace("\n", "%0A").replace(" ", "%20")
    for method, path in [
        ("get", f"/api/v1/members/{quoted}"),
        ("patch", f"/api/v1/members/{quoted}"),
        ("get", f"/api/v1/members/{quoted}/points"),
        ("get", f"/api/v1/members/{quoted}/ledger"),
        ("get", f"/api/v1/members/{quoted}/activities"),
        ("post", f"/api/v1/members/{quoted}/identities"),
    ]:
        response = api.request(method, path, json={} if method != "get" else None)
        assert 400 <= response.status_code < 500 and response.status_code != 405, (path, response.text)
    # Callers inside Perkflow (the importer, members created by promotions) meet the same rule.
    with pytest.raises(Exception, match="member id") as raised:
        transactions.run(ctx, lambda uow: service.create_member(uow, {"id": member_id}))
    assert getattr(raised.value, "code", None) == "invalid_member_id"


def test_member_id_clash_is_409(api: TestClient) -> None:
    assert api.post("/api/v1/members", json={"id": "ana"}).status_code == 201
    error(api.post("/api/v1/members", json={"id": "ana"}), 409, "member_exists")


# -- custom event types --


def test_reserved_names_cannot_be_event_types(api: TestClient) -> None:
    for name in sorted(RESERVED):
        error(api.post("/api/v1/event-types", json={"name": name}), 409, "event_type_reserved")
    registered = {t["name"] for t in api.get("/api/v1/event-types").json()["data"]}
    assert registered == {"review_written"}  # the demo's own


def test_every_activity_type_perkflow_writes_is_reserved() -> None:
    # Activity types are literals at the record call sites; a new one must join SYSTEM_ACTIVITY_TYPES,
    # or a brand could register a custom event that impersonates it in the stream.
    written = set()
    for path in SRC.rglob("*.py"):
        if "sandbox" in path.parts:
            continue
        written |= set(re.findall(r'\btype="([a-z_]+)"', path.read_text()))
    written |= {"segment_entered", "segment_left", "identity_added", "identity_removed"}
    assert written - RESERVED == set()
    assert set(BUILTIN_ACTIONS) | set(SYSTEM_ACTIVITY_TYPES) == RESERVED


# -- external identities --


def test_identity_changes_are_activities_and_clashes_are_409(api: TestClient) -> None:
    assert api.post("/api/v1/members", json={"id": "ana"}).status_code == 201
    assert api.post("/api/v1/members", json={"id": "ben"}).status_code == 201
    pair = {"external_source": "pos", "external_source_id": "1001"}
    assert api.post("/api/v1/members/ana/identities", json=pair).status_code == 201
    latest = api.get("/api/v1/members/ana/activities").json()["data"][0]
    assert latest["type"] == "identity_added" and latest["data"] == pair
    before = activity_count(api, "ben")
    clash = error(api.post("/api/v1/members/ben/identities", json=pair), 409, "identity_taken")
    assert clash["details"] == {**pair, "member_id": "ana"}
    assert activity_count(api, "ben") == before
    error(api.post("/api/v1/members", json={"id": "cid", "identities": [pair]}), 409, "identity_taken")
    assert api.get("/api/v1/members/cid").status_code == 404  # nothing half-written
    blank = {"external_source": "pos", "external_source_id": "   "}
    error(api.post("/api/v1/members/ben/identities", json=blank), 422, "invalid_identity")
    assert api.delete("/api/v1/members/ana/identities", params=pair).status_code == 204
    latest = api.get("/api/v1/members/ana/activities").json()["data"][0]
    assert latest["type"] == "identity_removed" and latest["data"] == pair
    error(api.delete("/api/v1/members/ana/identities", params=pair), 404, "identity_not_found")
    assert api.post("/api/v1/members/ben/identities", json=pair).status_code == 201
    assert api.get("/api/v1/members/lookup", params=pair).json()["id"] == "ben"
    feed = api.get("/api/v1/activities", params={"type": ["identity_added", "identity_removed"]}).json()
    assert [(a["member_id"], a["type"]) for a in feed["data"]] == [
        ("ana", "identity_added"),
        ("ana", "identity_removed"),
        ("ben", "identity_added"),
    ]


# -- the CSV importer --


def test_importer_rejects_rows_with_their_line_and_reason_and_keeps_the_rest(
    api: TestClient, ctx: AppContext, tmp_path: Path
) -> None:
    from perkflow.importer import import_members_csv

    assert api.post("/api/v1/fields", json={"key": "visits", "type": "integer"}).status_code == 201
    csv = tmp_path / "members.csv"
    csv.write_text(
        "id,email,visits,external_source,external_source_id\n"
        "m-1,m1@example.com,3,pos,1\n"  # line 2: good
        "a b,ab@example.com,,,\n"  # 3: bad id
        "m-3,m3@example.com,99999999999999999999,,\n"  # 4: past 64 bits
        f"m-4,m4@example.com,,pos,{'9' * 300}\n"  # 5: identity too long: no member either
        "m-5,m5@example.com,,pos,1\n"  # 6: identity of m-1
        '"m-6",m6@example.com,"1\n2",,\n'  # 7-8: a quoted newline, not a number
        "m-7,m7@example.com,7,pos,7\n",  # 9: good
        encoding="utf-8",
    )
    report = import_members_csv(ctx, csv)
    reasons = dict(report.rejected)
    assert (report.created, report.updated) == (2, 0), report
    assert set(reasons) == {3, 4, 5, 6, 8}, reasons
    assert "member id" in reasons[3] and "visits" in reasons[4]
    assert "external_source_id" in reasons[5] and "m-1" in reasons[6] and "visits" in reasons[8]
    for missing in ("m-3", "m-4", "m-5", "m-6"):
        assert api.get(f"/api/v1/members/{missing}").status_code == 404, missing
    assert api.get("/api/v1/members/m-7").json()["identities"] == [
        {"external_source": "pos", "external_source_id": "7"}
    ]
    # The same file again updates the good rows; their own identities are no clash.
    again = import_members_csv(ctx, csv)
    assert (again.created, again.updated) == (0, 2) and {line for line, _ in again.rejected} == {
        3,
        4,
        5,
        6,
        8,
    }
    types = [a["type"] for a in api.get("/api/v1/members/m-1/activities").json()["data"]]
    assert types.count("identity_added") == 1


# -- coupon codes --


@pytest.fixture
def pool(api: TestClient) -> str:
    created = api.post(
        "/api/v1/rewards", json={"id": "rew_pool", "name": "Pool", "points_cost": 1, "uses_coupons": True}
    )
    assert created.status_code == 201, created.text
    return "/api/v1/rewards/rew_pool/coupons"


def test_unusable_coupon_codes_are_refused(api: TestClient, pool: str) -> None:
    for code in ["", "   ", " LEAD", "TRAIL ", "TAB\tBED", "x" * 101, "NEW\nLINE"]:
        error(api.post(pool, json={"coupons": [{"code": "GOOD-1"}, {"code": code}]}), 422, "invalid_input")
    assert api.get("/api/v1/rewards/rew_pool").json()["coupons"]["available"] == 0


def test_large_uploads_check_duplicates_in_one_pass(api: TestClient, pool: str) -> None:
    # More codes than SQLite binds in one statement (32,766), and a repeat at the end.
    codes = [{"code": f"C{n:06d}"} for n in range(33_000)]
    body = error(api.post(pool, json={"coupons": [*codes, {"code": "C000007"}]}), 422, "duplicate_codes")
    assert body["details"]["codes"] == ["C000007"]
    assert api.post(pool, json={"coupons": codes}).json() == {"added": 33_000}
    taken = error(
        api.post(pool, json={"coupons": [{"code": "C032999"}, {"code": "NEW"}]}), 409, "codes_taken"
    )
    assert taken["details"]["coupon_codes"] == ["C032999"]


def test_coupons_and_vouchers_share_one_namespace(api: TestClient, pool: str) -> None:
    from tests.promotions.conftest import create_campaign

    # A one-character pattern over "xy" has two codes; a coupon holds one of them.
    assert api.post(pool, json={"coupons": [{"code": "x"}]}).status_code == 201
    campaign = create_campaign(api, code_config={"length": 1, "charset": "xy"}, vouchers_count=1)
    codes = api.get(f"/api/v1/campaigns/{campaign['id']}/codes.csv").text.split()
    assert codes == ["y"]
    taken = error(api.post(pool, json={"coupons": [{"code": "y"}]}), 409, "codes_taken")
    assert taken["details"]["voucher_codes"] == ["y"]
    # Generation draws around codes in use anywhere, and stops when none is left.
    generate = {"count": 1, "length": 1, "charset": "xy"}
    error(api.post(f"{pool}/generate", json=generate), 409, "pattern_exhausted")
    assert api.get("/api/v1/rewards/rew_pool").json()["coupons"]["available"] == 1
