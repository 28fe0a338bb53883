"""Segment rules, inbound webhook bodies and signatures, and run scheduling, with no database."""

from __future__ import annotations

import hashlib
import hmac
from base64 import b64encode
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perkflow.conditions import MISSING, ConditionError, check, lookup, parse_condition
from perkflow.core.errors import InvalidInput, PerkflowError
from perkflow.core.settings import Settings
from perkflow.segments.inbound import parse_body, read_reference, signature_matches
from perkflow.segments.rules import (
    changed_keys,
    compile_condition,
    compile_rules,
    holds,
    matches,
    may_change,
    parse_rules,
)
from perkflow.segments.runs import due_reason

NOW = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
CUSTOM = {"favourite_store": {"type": "string"}, "address": {"type": "object"}}


def cond(attribute: str, operator: str, value: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"attribute": attribute, "operator": operator}
    if value is not None:
        out["value"] = value
    return out


def satisfied(rules: dict[str, Any], view: dict[str, Any]) -> bool:
    parsed = parse_rules(rules, CUSTOM)
    return holds(parsed.root, lambda c: lookup(view, c.path), NOW)


LAPSED = {
    "match": "all",
    "conditions": [
        cond("tier", "in", ["Gold", "Platinum"]),
        {
            "match": "any",
            "conditions": [
                cond("activity.checkout.last_at", "before", "now-30d"),
                cond("activity.checkout.last_at", "exists", False),
            ],
        },
    ],
}


@pytest.mark.parametrize(
    ("_case", "view", "expected"),
    [
        (
            "gold, last checkout 40 days ago",
            {"tier": "Gold", "activity": {"checkout": {"last_at": NOW - timedelta(days=40)}}},
            True,
        ),
        (
            "gold, never checked out",
            {"tier": "Gold", "activity": {"checkout": {"count": 0, "last_at": None}}},
            True,
        ),
        (
            "gold, checked out yesterday",
            {"tier": "Gold", "activity": {"checkout": {"last_at": NOW - timedelta(days=1)}}},
            False,
        ),
        (
            "silver, lapsed",
            {"tier": "Silver", "activity": {"checkout": {"last_at": NOW - timedelta(days=40)}}},
            False,
        ),
        ("no standing at all", {}, False),
    ],
)
def test_nested_groups_combine_and_with_or(_case: str, view: dict[str, Any], expected: bool) -> None:
    assert satisfied(LAPSED, view) is expected


def test_parsing_works_out_dependencies_and_time_relativity() -> None:
    rules = parse_rules(LAPSED, CUSTOM)
    assert rules.depends_on == {"tier", "activity.checkout"}
    assert rules.time_relative and rules.needs_program and not rules.needs_profile and not rules.needs_dates
    profile = parse_rules(
        {"conditions": [cond("address.city", "eq", "Lyon"), cond("email", "exists")]}, CUSTOM
    )
    assert profile.depends_on == {"address", "email"} and profile.needs_profile and not profile.needs_program
    assert not profile.time_relative
    dated = parse_rules({"conditions": [cond("opted_in_at", "after", "2026-01-01")]}, CUSTOM)
    assert dated.needs_dates and not dated.time_relative
    birthday = parse_rules({"conditions": [cond("birth_date", "in_date", "today")]}, CUSTOM)
    assert birthday.time_relative
    window = parse_rules({"conditions": [cond("tier_since", "between", ["now-7d", "now"])]}, CUSTOM)
    assert window.time_relative
    assert parse_rules(LAPSED, CUSTOM).to_dict() == LAPSED


@pytest.mark.parametrize(
    ("_case", "raw", "where"),
    [
        ("not an object", [], "rules"),
        ("no conditions", {"match": "all", "conditions": []}, "rules.conditions"),
        ("bad match", {"match": "some", "conditions": [cond("tier", "eq", "Gold")]}, "rules.match"),
        ("unknown key", {"conditions": [cond("tier", "eq", "Gold")], "extra": 1}, "rules"),
        (
            "unknown attribute",
            {"conditions": [cond("tier", "eq", "Gold"), cond("shoe_size", "gt", 40)]},
            "rules.conditions[1].attribute",
        ),
        (
            "segments refused",
            {"conditions": [cond("segments", "contains", "vip")]},
            "rules.conditions[0].attribute",
        ),
        (
            "bad activity path",
            {"conditions": [cond("activity.checkout", "gt", 1)]},
            "rules.conditions[0].attribute",
        ),
        (
            "bad activity stat",
            {"conditions": [cond("activity.checkout.total", "gt", 1)]},
            "rules.conditions[0].attribute",
        ),
        (
            "parts of a scalar",
            {"conditions": [cond("tier.name", "eq", "Gold")]},
            "rules.conditions[0].attribute",
        ),
        ("unknown operator", {"conditions": [cond("tier", "like", "G%")]}, "rules.conditions[0].operator"),
        ("missing value", {"conditions": [cond("points_balance", "gt")]}, "rules.conditions[0].value"),
        (
            "nested error",
            {
                "conditions": [
                    cond("tier", "eq", "Gold"),
                    {"match": "any", "conditions": [cond("tier", "between", [1])]},
                ]
            },
            "rules.conditions[1].conditions[0].value",
        ),
    ],
)
def test_malformed_rules_name_the_condition(_case: str, raw: Any, where: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_rules(raw, CUSTOM)
    assert caught.value.where == where


def test_depth_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"conditions": [cond("tier", "eq", "Gold")]}
    for _ in range(4):
        deep = {"match": "any", "conditions": [deep]}
    with pytest.raises(ConditionError, match="nest at most"):
        parse_rules(deep, CUSTOM)
    many = {"conditions": [cond("points_balance", "gt", n) for n in range(101)]}
    with pytest.raises(ConditionError, match="at most 100"):
        parse_rules(many, CUSTOM)


def test_stored_rules_stay_usable_after_their_field_is_deleted() -> None:
    raw = {"conditions": [cond("favourite_store", "eq", "Lyon")]}
    with pytest.raises(ConditionError):
        parse_rules(raw, {})
    assert parse_rules(raw, None).depends_on == {"favourite_store"}


def test_which_activities_can_change_which_rules() -> None:
    on_points = parse_rules({"conditions": [cond("points_balance", "gte", 100)]}, CUSTOM)
    on_checkouts = parse_rules({"conditions": [cond("activity.checkout.count", "gte", 3)]}, CUSTOM)
    on_tier = parse_rules({"conditions": [cond("tier", "eq", "Gold")]}, CUSTOM)
    on_store = parse_rules({"conditions": [cond("favourite_store", "eq", "Lyon")]}, CUSTOM)
    checkout = changed_keys("checkout", {}, 42, 0, True)
    assert may_change(on_points, checkout) and may_change(on_checkouts, checkout)
    assert not may_change(on_tier, checkout) and not may_change(on_store, checkout)
    assert may_change(on_tier, changed_keys("tier_up", {}, 0, 0, True))
    assert not may_change(on_points, changed_keys("review_written", {}, 0, 0, True))
    assert may_change(on_points, changed_keys("points_expired", {}, 0, 0, True))
    assert not may_change(on_points, changed_keys("checkout", {}, 42, 0, False))  # another program
    assert all(may_change(r, changed_keys("profile", {}, 0, 0, False)) for r in (on_points, on_store))


@pytest.mark.parametrize(
    ("_case", "body", "content_type", "expected"),
    [
        ("json", b'{"user_id": "ana"}', "application/json", {"user_id": "ana"}),
        (
            "form",
            b"user_id=ana&custom_segment_id=vip",
            "application/x-www-form-urlencoded",
            {"user_id": "ana", "custom_segment_id": "vip"},
        ),
        ("raw pairs under a json content type", b"user_id=ana", "application/json", {"user_id": "ana"}),
        (
            "pairs as a json string",
            b'"email=ana%40example.com"',
            "application/json",
            {"email": "ana@example.com"},
        ),
        ("no content type", b"user_id=ben", "", {"user_id": "ben"}),
    ],
)
def test_inbound_bodies_in_every_form_braze_sends(
    _case: str, body: bytes, content_type: str, expected: dict[str, Any]
) -> None:
    assert parse_body(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"", "application/json", "invalid_input"),
        (b"{not json", "application/json", "invalid_body"),
        (b"[1, 2]", "application/json", "invalid_body"),
        (b"\xff\xfe", "application/json", "invalid_body"),
        (b"just text", "text/plain", "invalid_body"),
    ],
)
def test_unreadable_inbound_bodies_are_client_errors(body: bytes, content_type: str, code: str) -> None:
    with pytest.raises(PerkflowError) as caught:
        parse_body(body, content_type)
    assert caught.value.code == code and 400 <= caught.value.status < 500


def test_inbound_references_user_id_wins_over_email() -> None:
    assert read_reference({"user_id": "ana", "email": "x@y.z"}, "vip").describe() == {"user_id": "ana"}
    assert read_reference({"user_id": 111111111}, "vip").member_ids == ("111111111",)
    assert read_reference({"email": " Ana@Example.com "}, "vip").email == "ana@example.com"
    assert read_reference({"member_ids": ["a", "b"]}, "vip").member_ids == ("a", "b")
    assert (
        read_reference({"user_id": "", "email": "a@b.c", "custom_segment_id": "vip"}, "vip").email == "a@b.c"
    )
    huge = parse_body(b'{"user_id": 123456789012345678901234567890}', "application/json")
    for bad in (
        huge,
        {},
        {"user_id": True},
        {"user_id": ["x"]},
        {"email": "nope"},
        {"member_ids": []},
        {"user_id": "x" * 129},
    ):
        with pytest.raises(InvalidInput):
            read_reference(bad, "vip")
    with pytest.raises(InvalidInput) as caught:
        read_reference({"user_id": "ana", "custom_segment_id": 15401}, "vip")
    assert caught.value.code == "segment_mismatch"


def test_signatures_in_hex_prefixed_hex_and_base64() -> None:
    body = b'{"user_id":"ana"}'
    digest = hmac.new(b"s3cret", body, hashlib.sha256).digest()
    for presented in (
        digest.hex(),
        "sha256=" + digest.hex(),
        digest.hex().upper(),
        b64encode(digest).decode(),
    ):
        assert signature_matches("s3cret", body, presented)
    assert not signature_matches("other", body, digest.hex())
    assert not signature_matches("s3cret", body + b" ", digest.hex())
    assert not signature_matches("s3cret", body, "sha256=é" + digest.hex()[2:])
    assert not signature_matches("s3cret", body, "")


def test_runs_are_due_after_midnight_or_an_interval_for_time_rules_and_daily_for_all() -> None:
    config = Settings(segment_sweep_interval_s=3600, segment_reconcile_interval_s=86400)
    late = datetime(2026, 3, 14, 23, 30, tzinfo=UTC)

    def due(relative: bool, swept: datetime | None, now: datetime) -> str | None:
        return due_reason(time_relative=relative, swept_at=swept, now=now, settings=config)

    assert due(True, late, late + timedelta(minutes=10)) is None
    assert due(True, late, late + timedelta(minutes=40)) == "sweep"  # a new UTC day
    assert due(True, NOW, NOW + timedelta(hours=1)) == "sweep"
    assert due(False, NOW, NOW + timedelta(hours=23)) is None
    assert due(False, NOW, NOW + timedelta(hours=24)) == "reconcile"
    assert due(False, None, NOW) == "reconcile"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1000, 1000, allow_nan=False),
    st.sampled_from(["Gold", "Silver", "", "Lyon", "2026-03-01", "2026-03-14T09:00:00Z", "now-30d", "today"]),
)
expected_values = st.one_of(
    scalars, st.lists(scalars, min_size=1, max_size=3), st.sampled_from(["now", "now+2h", "today-1d"])
)
actual_values = st.one_of(
    scalars,
    st.just(MISSING),
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1)),
    st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 1, 1)),
    st.lists(scalars, max_size=3),
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
        "not_contains",
        "in",
        "not_in",
        "exists",
        "before",
        "after",
        "in_date",
    ]
)


@settings(max_examples=1000, deadline=None)
@given(operator=operators, expected=expected_values, actual=actual_values)
def test_compiled_conditions_answer_exactly_as_the_shared_language(
    operator: str, expected: Any, actual: Any
) -> None:
    try:
        condition = parse_condition({"attribute": "a", "operator": operator, "value": expected}, "c")
    except ConditionError:
        return
    assert compile_condition(condition, NOW)(actual) == check(condition, actual, NOW)


leaf = st.builds(
    lambda attribute, operator, value: {"attribute": attribute, "operator": operator, "value": value},
    st.sampled_from(["tier", "points_balance", "favourite_store"]),
    st.sampled_from(["eq", "ne", "gte", "lt", "in", "before", "after"]),
    expected_values,
)
groups = st.recursive(
    st.lists(leaf, min_size=1, max_size=3).map(lambda c: {"match": "all", "conditions": c}),
    lambda inner: st.builds(
        lambda match, items: {"match": match, "conditions": items},
        st.sampled_from(["all", "any"]),
        st.lists(st.one_of(leaf, inner), min_size=1, max_size=3),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(raw=groups, tier=scalars, balance=scalars, store=scalars)
def test_compiled_rule_sets_agree_with_plain_evaluation(
    raw: dict[str, Any], tier: Any, balance: Any, store: Any
) -> None:
    try:
        rules = parse_rules(raw, CUSTOM)
    except ConditionError:
        return
    view = {"tier": tier, "points_balance": balance, "favourite_store": store}
    values = {path: lookup(view, path) for path in rules.paths}
    assert matches(compile_rules(rules.root, NOW), values) == holds(
        rules.root, lambda c: lookup(view, c.path), NOW
    )
