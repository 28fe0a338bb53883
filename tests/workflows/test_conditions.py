"""Filter conditions and their operators, evaluated with no database; and sandboxed expressions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perkflow.conditions import ConditionError, evaluate, lookup, parse_group
from perkflow.workflows.expressions import (
    CompiledValue,
    ExpressionError,
    RenderError,
    compile_template,
    references,
)
from perkflow.workflows.graph import compile_group

NOW = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
VIEW: dict[str, Any] = {
    "tier": "Gold",
    "points_balance": 120,
    "email": "ana@example.com",
    "tags": ["vip", "eu"],
    "birth_date": "1990-03-14",
    "opted_in_at": datetime(2026, 3, 1, tzinfo=UTC),
    "last_visit": "2026-03-13T18:00:00Z",
    "empty": "",
    "nothing": None,
    "address": {"city": "Lyon"},
    "items": [{"sku": "a"}, {"sku": "b"}],
}


def holds(
    attribute: str, operator: str, value: Any = None, *, view: dict[str, Any] = VIEW, now: datetime = NOW
) -> bool:
    condition: dict[str, Any] = {"attribute": attribute, "operator": operator}
    if value is not None:
        condition["value"] = value
    group = parse_group({"conditions": [condition]})
    return evaluate(group, lambda c: lookup(view, c.path), now)


@pytest.mark.parametrize(
    ("attribute", "operator", "value", "expected"),
    [
        ("tier", "eq", "Gold", True),
        ("tier", "equal", "Silver", False),
        ("tier", "ne", "Silver", True),
        ("tier", "not_equal", "Gold", False),
        ("missing", "ne", "Gold", True),
        ("points_balance", "gt", 100, True),
        ("points_balance", "gt", 120, False),
        ("points_balance", "gte", 120, True),
        ("points_balance", "lt", 120, False),
        ("points_balance", "lte", 120, True),
        ("points_balance", ">", 119.5, True),
        ("tier", "gt", 3, False),  # no order between a text and a number: the condition fails
        ("points_balance", "between", [100, 120], True),
        ("points_balance", "between", [121, 200], False),
        ("opted_in_at", "between", ["2026-02-01", "2026-03-02"], True),
        ("email", "contains", "@example", True),
        ("email", "contains", "@elsewhere", False),
        ("tags", "contains", "vip", True),
        ("tags", "not_contains", "vip", False),
        ("tier", "in", ["Silver", "Gold"], True),
        ("tier", "in_list", ["Silver", "Bronze"], False),
        ("tier", "not_in", ["Silver", "Bronze"], True),
        ("email", "exists", True, True),
        ("empty", "exists", True, False),
        ("nothing", "exists", False, True),
        ("missing", "exists", True, False),
        ("opted_in_at", "before", "2026-03-02", True),
        ("opted_in_at", "after", "2026-03-02", False),
        ("last_visit", "after", "now-1d", True),
        ("last_visit", "after", "now-12h", False),
        ("last_visit", "before", "today", True),
        ("birth_date", "in_date", "today", True),
        ("birth_date", "in_date", "today+1d", False),
        ("opted_in_at", "in_date", "today-13d", True),
        ("address.city", "eq", "Lyon", True),
        ("items.1.sku", "eq", "b", True),
        ("missing", "gt", 1, False),
    ],
)
def test_every_operator(attribute: str, operator: str, value: Any, expected: bool) -> None:
    assert holds(attribute, operator, value) is expected


def test_in_date_is_the_birthday_case_including_29_february() -> None:
    leapling = {"birth_date": date(2000, 2, 29)}
    assert holds("birth_date", "in_date", "today", view=leapling, now=datetime(2027, 2, 28, tzinfo=UTC))
    assert not holds("birth_date", "in_date", "today", view=leapling, now=datetime(2028, 2, 28, tzinfo=UTC))
    assert holds("birth_date", "in_date", "today", view=leapling, now=datetime(2028, 2, 29, tzinfo=UTC))


def test_all_is_and_any_is_or() -> None:
    conditions = [
        {"attribute": "tier", "operator": "eq", "value": "Gold"},
        {"attribute": "points_balance", "operator": "gt", "value": 1000},
    ]
    resolve = lambda c: lookup(VIEW, c.path)  # noqa: E731
    assert not evaluate(parse_group({"match": "all", "conditions": conditions}), resolve, NOW)
    assert evaluate(parse_group({"match": "any", "conditions": conditions}), resolve, NOW)


@pytest.mark.parametrize(
    ("condition", "where"),
    [
        ({"attribute": "tier", "operator": "eq"}, "value"),
        ({"attribute": "9x", "operator": "eq", "value": 1}, "attribute"),
        ({"attribute": "tier", "operator": "between", "value": [1, "x"]}, "value"),
        ({"attribute": "tier", "operator": "in", "value": []}, "value"),
        ({"attribute": "tier", "operator": "before", "value": "soon"}, "value"),
        ({"attribute": "tier", "operator": "in_date", "value": "2026-01-01"}, "value"),
        ({"attribute": "tier", "operator": "exists", "value": "yes"}, "value"),
        ({"attribute": "tier", "operator": "eq", "value": 1, "extra": 2}, "conditions[0]"),
    ],
)
def test_malformed_conditions_say_where(condition: dict[str, Any], where: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_group({"conditions": [condition]})
    assert where in caught.value.where


# -- expressions ------------------------------------------------------------------------------------------

SCOPE = {
    "event": {"total": 4250, "items": [{"sku": "a", "quantity": 2}], "occurred_at": "2026-03-14T09:00:00Z"},
    "customer": {"first_name": "Ana", "tier": "Gold"},
    "reward": {"name": "Free coffee"},
    "coupon": {},
    "now": "2026-03-14T09:00:00Z",
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ event.total }}", 4250),
        ("{{ event.total / 100 }}", 42.5),
        ("{{ event.total // 100 }}", 42),
        ("{{ event.items }}", [{"sku": "a", "quantity": 2}]),
        ("{{ event.items.0.sku }}", "a"),
        ("{{ event['total'] }}", 4250),
        ("Hello {{ customer.first_name }}, you are {{ customer.tier | lower }}", "Hello Ana, you are gold"),
        ("{{ event.occurred_at | date('%d/%m/%Y') }}", "14/03/2026"),
        ("{{ coupon.code | default(none) }}", None),
        ("{{ reward.name ~ '!' }}", "Free coffee!"),
        ("{{ event.total > 1000 }}", True),
        ("{{ 'x' * 3 }}", "xxx"),
    ],
)
def test_templates_keep_types_when_they_are_one_expression(source: str, expected: Any) -> None:
    assert compile_template(source).render(SCOPE) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{% for i in event.items %}x{% endfor %}", "statements"),
        ("{{ range(10) }}", "call"),
        ("{{ 'x'.upper() }}", "call"),
        ("{{ event.items | map('sku') }}", "unknown filter"),
        ("{{ event.total ", "syntax"),
        ("{{ x }}" * 600, "limited"),
    ],
)
def test_templates_that_could_escape_or_stall_are_refused_on_save(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError, match=fragment):
        references(source)
    with pytest.raises(ExpressionError, match=fragment):
        compile_template(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 100000 }}",
        "{{ 9 ** 9 ** 9 }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ 2 ** 62 * 4 }}",
        "{{ event.total / 0 }}",
        "{{ customer.nickname }}",
        "{{ event.items.7.sku }}",
        "{{ event.total.__class__ }}",  # dots read dictionary keys only, never Python attributes
    ],
)
def test_templates_that_fail_or_would_be_too_large_fail_the_run_not_the_process(source: str) -> None:
    with pytest.raises(RenderError):
        compile_template(source).render(SCOPE)


def test_references_list_what_a_template_reads() -> None:
    found = references(
        "{{ event.total }} {{ customer['first_name'] }} {{ coupon.code | default('-') }} {{ now }}"
    )
    assert found.roots == {"event", "customer", "coupon", "now"}
    assert found.attributes == {("event", "total"), ("customer", "first_name"), ("coupon", "code")}


def test_compiled_values_render_nested_structures_once_compiled() -> None:
    value = CompiledValue({"total": "{{ event.total }}", "list": ["{{ customer.tier }}", 3], "static": "x"})
    assert value.render(SCOPE) == {"total": 4250, "list": ["Gold", 3], "static": "x"}
    assert CompiledValue({"a": 1}).is_static


values = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5)
    | st.sampled_from(["Gold", "gold", "", "2026-03-14", "2026-03-14T09:00:00Z", "now-1d", "3"])
    | st.lists(st.sampled_from(["Gold", 3, "x"]), max_size=2)
)
operators = st.sampled_from(
    ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "exists", "before", "after"]
)


@settings(max_examples=400)
@given(
    conditions=st.lists(
        st.tuples(st.sampled_from(["a", "b", "a.b"]), operators, values), min_size=1, max_size=3
    ),
    match=st.sampled_from(["all", "any"]),
    view=st.dictionaries(
        st.sampled_from(["a", "b"]), values | st.dictionaries(st.just("b"), values), max_size=2
    ),
)
def test_compiled_filters_answer_exactly_as_the_conditions_do(
    conditions: list[tuple[str, str, Any]], match: str, view: dict[str, Any]
) -> None:
    raw = [{"attribute": a, "operator": o, "value": v} for a, o, v in conditions]
    try:
        group = parse_group({"match": match, "conditions": raw})
    except ConditionError:
        return
    expected = evaluate(group, lambda c: lookup(view, c.path), NOW)
    assert compile_group(group)(view, NOW) is expected
