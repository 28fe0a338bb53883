"""Graph validation and compilation, with no database: every refusal names the node it concerns."""

from __future__ import annotations

from typing import Any

import pytest

from perkflow.workflows.graph import NODE_TYPES, Catalog, GraphErrors, node_catalogue, parse_graph
from tests.workflows.conftest import chain, node, on, where

CATALOG = Catalog(
    event_types={"opt_in", "checkout", "tier_up", "reward_claim", "segment_entered", "review_written"},
    event_attributes={
        "checkout": None,
        "opt_in": None,
        "tier_up": {"tier", "from_tier", "to_tier"},
        "review_written": {"rating", "product_id"},
        "reward_claim": None,
    },
    customer_attributes={"email", "first_name", "birth_date", "tier", "points_balance", "activity"},
    rewards={"rew_coffee"},
    tiers={"Gold", "tier_gold"},
    segments={"seg_vip"},
    integrations={"int_braze": "braze", "int_hook": "webhook"},
    member_fields={"email", "first_name", "favourite_store"},
)


def errors(graph: Any, catalog: Catalog = CATALOG) -> list[dict[str, Any]]:
    with pytest.raises(GraphErrors) as caught:
        parse_graph(graph, catalog)
    return caught.value.errors


def only_error(graph: Any) -> dict[str, Any]:
    found = errors(graph)
    assert len(found) == 1, found
    return found[0]


def test_a_valid_graph_compiles_with_its_trigger_and_edges() -> None:
    graph = parse_graph(
        chain(
            on(["checkout", "review_written"]),
            where("big", "event", ("total", "gte", 1000)),
            node("bonus", "action.add_points", points=10),
        ),
        CATALOG,
    )
    assert graph.trigger_type == "event" and graph.trigger_keys == ["checkout", "review_written"]
    assert graph.next("trigger", "success") == ["big"] and graph.next("big", "success") == ["bonus"]
    assert graph.next("big", "fail") == []


@pytest.mark.parametrize(
    ("graph", "node_id", "fragment"),
    [
        ({"nodes": []}, None, "non-empty"),
        ("not a graph", None, "object"),
        (chain(node("bonus", "action.add_points", points=1)), None, "exactly one trigger"),
        (
            chain(on("checkout"), node("t2", "trigger.event", event="opt_in")),
            None,
            "exactly one trigger",
        ),
        (chain(on("checkout"), node("x", "action.teleport")), "x", "unknown node type"),
        (chain(on("checkout"), node("p", "action.add_points", points=-5)), "p", "between 1"),
        (chain(on("checkout"), node("p", "action.add_points", points="ten")), "p", "template"),
        (chain(on("checkout"), node("p", "action.add_points", points=1, colour="red")), "p", "Extra"),
        (chain(on("nothing_like_this")), "trigger", "unknown event type"),
        (chain(on("checkout"), node("r", "action.reward_claim", reward="rew_nope")), "r", "does not exist"),
        (chain(on("checkout"), node("t", "action.set_tier", tier="Diamond")), "t", "does not exist"),
        (chain(on("checkout"), node("m", "action.modify_field", field="tier", value=1)), "m", "member field"),
        (
            chain(on("checkout"), node("s", "action.sync_event", integration="int_hook", name="x")),
            "s",
            "Braze or Bloomreach",
        ),
        (
            chain(on("checkout"), node("w", "action.webhook", integration="int_braze")),
            "w",
            "webhook integration",
        ),
        (chain(on("checkout"), node("w", "action.wait", minutes=0)), "w", "at least one minute"),
        (
            chain(node("d", "trigger.date", cron="every day"), node("a", "action.add_points", points=1)),
            "d",
            "cron",
        ),
        (chain(node("d", "trigger.date", cron="0 0 31 2 *")), "d", "never happens"),
        (
            chain(node("d", "trigger.date", cron="0 9 * * *", at="2026-01-01T00:00:00Z")),
            "d",
            "either at",
        ),
        (chain(node("s", "trigger.segment_entered", segment="seg_nope")), "s", "does not exist"),
        (
            chain(on("checkout"), where("f", "event", ("total", "roughly", 3))),
            "f",
            "unknown operator",
        ),
        (chain(on("checkout"), where("f", "event", ("total", "between", [1]))), "f", "between takes"),
        (
            chain(on("checkout"), where("f", "customer", ("frist_name", "eq", "Ana"))),
            "f",
            "no such member attribute",
        ),
        (chain(on("tier_up"), where("f", "event", ("teir", "eq", "Gold"))), "f", "no attribute 'teir'"),
        (
            chain(
                on("checkout"),
                node("s", "action.sync_event", name="x", properties={"c": "{{ coupon.code }}"}),
            ),
            "s",
            "coupon.* needs",
        ),
        (
            chain(
                on("checkout"),
                node("s", "action.sync_event", name="x", properties={"v": "{{ order.total }}"}),
            ),
            "s",
            "unknown name 'order'",
        ),
        (
            chain(
                on("checkout"), node("s", "action.sync_event", name="x", properties={"v": "{{ event.total "})
            ),
            "s",
            "syntax",
        ),
        (
            chain(
                node("d", "trigger.date", cron="0 9 * * *"),
                where("f", "event", ("total", "gt", 1)),
            ),
            "f",
            "no event",
        ),
        (chain(on("checkout"), node("i", "action.interrupt", code="store_closed")), "i", "modifier"),
        (chain(on("checkout"), node("i", "action.interrupt", code="12")), "i", "five-digit"),
    ],
)
def test_invalid_graphs_are_refused_naming_the_node(graph: Any, node_id: str | None, fragment: str) -> None:
    found = errors(graph)
    assert any(e["node"] == node_id and fragment in e["message"] for e in found), found


def test_edges_are_checked_against_the_outputs_nodes_have() -> None:
    base = [
        on("checkout"),
        node("a", "action.add_points", points=1),
        node("b", "action.add_points", points=2),
    ]
    cases = [
        ([{"from": "trigger", "to": "a", "branch": "sideways"}], "trigger", "no 'sideways' output"),
        ([{"from": "trigger", "to": "a"}, {"from": "a", "to": "nowhere"}], "a", "unknown node"),
        ([{"from": "trigger", "to": "a"}, {"from": "a", "to": "trigger"}], "a", "back to the trigger"),
        ([{"from": "trigger", "to": "a"}, {"from": "a", "to": "a"}], "a", "itself"),
        ([{"from": "trigger", "to": "a"}], "b", "no path from the trigger"),
    ]
    for edges, node_id, fragment in cases:
        found = errors({"nodes": base, "edges": edges})
        assert any(e["node"] == node_id and fragment in e["message"] for e in found), (edges, found)


def test_cycles_are_refused_with_the_loop_spelled_out() -> None:
    graph = {
        "nodes": [
            on("checkout"),
            node("a", "action.add_points", points=1),
            node("b", "action.add_points", points=1),
            node("c", "action.add_points", points=1),
        ],
        "edges": [
            {"from": "trigger", "to": "a"},
            {"from": "a", "to": "b"},
            {"from": "b", "to": "c", "branch": "fail"},
            {"from": "c", "to": "a"},
        ],
    }
    found = only_error(graph)
    assert "cycle" in found["message"] and "a -> b -> c -> a" in found["message"]


def test_every_problem_is_reported_at_once() -> None:
    graph = chain(
        on("checkout"),
        node("a", "action.add_points", points=0),
        node("b", "action.reward_claim", reward=""),
    )
    assert {e["node"] for e in errors(graph)} == {"a", "b"}


def test_the_modifier_branch_holds_only_filters_and_interrupts() -> None:
    graph = {
        "nodes": [
            on("checkout"),
            where("blocked", "event", ("store", "eq", "closed")),
            node("stop", "action.interrupt", code=40001, message="this store is closed"),
            node("bonus", "action.add_points", points=1),
        ],
        "edges": [
            {"from": "trigger", "to": "blocked", "branch": "modifier"},
            {"from": "blocked", "to": "stop"},
            {"from": "blocked", "to": "bonus", "branch": "fail"},
        ],
    }
    found = only_error(graph)
    assert found["node"] == "bonus" and "modifier branch" in found["message"]
    graph["nodes"].pop()
    graph["edges"].pop()
    compiled = parse_graph(graph, CATALOG)
    assert compiled.has_modifier and compiled.modifier_nodes == {"blocked", "stop"}
    assert compiled.nodes["stop"].params.code == "40001"


def test_references_follow_the_graph_reward_and_coupon_need_a_claim_before() -> None:
    claim_then_sync = chain(
        on("checkout"),
        node("claim", "action.reward_claim", reward="rew_coffee", free=True),
        node("sync", "action.sync_event", name="gift", properties={"code": "{{ coupon.code }}"}),
    )
    parse_graph(claim_then_sync, CATALOG)
    on_claim = chain(
        on("reward_claim"), node("sync", "action.sync_event", properties={"r": "{{ reward.name }}"}, name="x")
    )
    parse_graph(on_claim, CATALOG)
    typo = chain(
        on("reward_claim"), node("sync", "action.sync_event", properties={"r": "{{ reward.nmae }}"}, name="x")
    )
    assert "reward.nmae" in only_error(typo)["message"]


def test_sync_actions_may_target_every_connected_platform_of_a_kind() -> None:
    for target in ("*", "braze", "bloomreach", "int_braze"):
        parse_graph(
            chain(on("checkout"), node("s", "action.sync_event", integration=target, name="x")), CATALOG
        )


def test_the_first_event_filter_becomes_an_index_key_when_it_decides_alone() -> None:
    indexed = parse_graph(
        chain(
            on("checkout"),
            where("store", "event", ("store", "eq", "Lyon")),
            node("a", "action.add_points", points=1),
        ),
        CATALOG,
    )
    assert indexed.discriminator == (("store",), frozenset({"Lyon"}))
    listed = parse_graph(
        chain(
            on("checkout"),
            where("s", "event", ("store", "in", ["A", "B"])),
            node("a", "action.add_points", points=1),
        ),
        CATALOG,
    )
    assert listed.discriminator == (("store",), frozenset({"A", "B"}))
    with_fail_branch = {
        "nodes": [
            on("checkout"),
            where("s", "event", ("store", "eq", "Lyon")),
            node("a", "action.add_points", points=1),
        ],
        "edges": [{"from": "trigger", "to": "s"}, {"from": "s", "to": "a", "branch": "fail"}],
    }
    assert parse_graph(with_fail_branch, CATALOG).discriminator is None
    any_of = chain(
        on("checkout"),
        where("s", "event", ("store", "eq", "Lyon"), ("total", "gt", 5), match="any"),
        node("a", "action.add_points", points=1),
    )
    assert parse_graph(any_of, CATALOG).discriminator is None
    a_date = chain(
        on("checkout"),
        where("s", "event", ("day", "eq", "2026-03-14")),
        node("a", "action.add_points", points=1),
    )
    assert parse_graph(a_date, CATALOG).discriminator is None


def test_the_node_catalogue_describes_every_type_with_its_parameters() -> None:
    described = {entry["type"]: entry for entry in node_catalogue()}
    assert set(described) == set(NODE_TYPES)
    assert described["filter.event_attribute"]["outputs"] == ["success", "fail"]
    assert "points" in described["action.add_points"]["params"]["properties"]
