"""The fake Bloomreach Engagement Tracking API, exercised over real HTTP on loopback."""

from __future__ import annotations

import base64
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from perkflow.sandbox.bloomreach import BloomreachSandbox, BloomreachSandboxConfig, Permissions, create_app
from perkflow.sandbox.bloomreach.cli import serve_bloomreach_sandbox
from perkflow.sandbox.server import ServerThread

TRACK = "/track/v2/projects/test-project"
EXPORT = "/data/v2/projects/test-project/customers/export-one"
AUTH = ("key-id", "key-secret")


class ManualClock:
    """A monotonic clock that only moves when told, so rate-limit windows never roll over mid-test."""

    def __init__(self, start: float = 1000.0):
        self.value = start

    def __call__(self) -> float:
        return self.value


@dataclass
class Fake:
    sandbox: BloomreachSandbox
    client: httpx.Client

    def customers(
        self, ids: dict[str, Any], properties: dict[str, Any] | None = None, **extra: Any
    ) -> httpx.Response:
        return self.client.post(
            f"{TRACK}/customers", json={"customer_ids": ids, "properties": properties, **extra}
        )

    def event(self, ids: dict[str, Any], event_type: str, **extra: Any) -> httpx.Response:
        return self.client.post(
            f"{TRACK}/customers/events", json={"customer_ids": ids, "event_type": event_type, **extra}
        )

    def batch(self, commands: list[Any]) -> httpx.Response:
        return self.client.post(f"{TRACK}/batch", json={"commands": commands})


@pytest.fixture
def serve() -> Iterator[Callable[..., Fake]]:
    running: list[tuple[ServerThread, httpx.Client]] = []

    def start(monotonic: Callable[[], float] = time.monotonic, **config: Any) -> Fake:
        sandbox = BloomreachSandbox(BloomreachSandboxConfig(**config), monotonic=monotonic)
        server = ServerThread(create_app(sandbox)).start()
        client = httpx.Client(base_url=server.url, auth=AUTH, timeout=10)
        running.append((server, client))
        return Fake(sandbox, client)

    yield start
    for server, client in running:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def default_fake() -> Iterator[Fake]:
    # Starting uvicorn costs ~0.2 s, so tests on the default config share one server and reset its state.
    sandbox = BloomreachSandbox(BloomreachSandboxConfig())
    with (
        ServerThread(create_app(sandbox)) as server,
        httpx.Client(base_url=server.url, auth=AUTH, timeout=10) as client,
    ):
        yield Fake(sandbox, client)


@pytest.fixture
def fake(default_fake: Fake) -> Fake:
    default_fake.sandbox.reset()
    return default_fake


def customer_cmd(ids: dict[str, Any], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "customers", "data": {"customer_ids": ids, "properties": properties, **extra}}


def event_cmd(ids: dict[str, Any], event_type: str, **extra: Any) -> dict[str, Any]:
    return {"name": "customers/events", "data": {"customer_ids": ids, "event_type": event_type, **extra}}


def failed(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["success"] is False
    return list(body["errors"])


# -- project token and authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/track/v2/projects/wrong/customers"),
        ("POST", "/track/v2/projects/wrong/customers/events"),
        ("POST", "/track/v2/projects/wrong/batch"),
        ("GET", "/track/v2/projects/wrong/system/time"),
        ("POST", "/data/v2/projects/wrong/customers/export-one"),
    ],
)
def test_unknown_project_token_is_refused(fake: Fake, method: str, path: str) -> None:
    response = fake.client.request(method, path, json={"customer_ids": {"registered": "ann"}})
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "Invalid project id"}


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "Access key not provided"),
        ({"Authorization": "Basic " + base64.b64encode(b":").decode()}, 401, "Access key not provided"),
        ({"Authorization": "Basic " + base64.b64encode(b"nobody:x").decode()}, 401, "Access key not found"),
        ({"Authorization": "Basic " + base64.b64encode(b"key-id:wrong").decode()}, 403, "invalid secret"),
        ({"Authorization": "Token not-a-token"}, 401, "Access key not found"),
        ({"Authorization": "Basic %%%"}, 400, "Could not authenticate"),
    ],
)
def test_authentication_failures_answer_documented_messages(
    fake: Fake, headers: dict[str, str], status: int, error: str
) -> None:
    body = {"customer_ids": {"registered": "ann"}, "properties": {"tier": "gold"}}
    for path in ("/customers", "/batch"):
        payload = {"commands": [{"name": "customers", "data": body}]} if path == "/batch" else body
        response = httpx.post(f"{fake.client.base_url}{TRACK}{path}", json=payload, headers=headers)
        assert response.status_code == status
        assert response.json() == {"success": False, "error": error}
    assert fake.sandbox.customers() == []


def test_public_token_is_accepted_as_header_or_query(serve: Callable[..., Fake]) -> None:
    fake = serve(public_tokens={"pub-token"})
    base = str(fake.client.base_url)
    body = {"customer_ids": {"registered": "ann"}, "event_type": "app_open"}
    response = httpx.post(
        f"{base}{TRACK}/customers/events", json=body, headers={"Authorization": "Token pub-token"}
    )
    assert response.json() == {"success": True, "errors": []}
    response = httpx.post(f"{base}{TRACK}/customers/events?access_token=pub-token", json=body)
    assert response.json() == {"success": True, "errors": []}
    assert len(fake.sandbox.events("app_open")) == 2


def test_system_time_needs_no_auth_and_answers_seconds(fake: Fake) -> None:
    before = time.time()
    response = httpx.get(f"{fake.client.base_url}{TRACK}/system/time")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["errors"] == []
    assert isinstance(body["time"], float)
    assert before - 1 <= body["time"] <= time.time() + 1
    assert response.headers["x-request-id"]


# -- single routes ----------------------------------------------------------------------------------------


def test_single_routes_update_properties_and_append_events(fake: Fake) -> None:
    ids = {"registered": "ann@example.com"}
    assert fake.customers(ids, {"tier": "gold", "points": 1250}, update_timestamp=1714000000).json() == {
        "success": True,
        "errors": [],
    }
    assert fake.event(ids, "points_earned", timestamp=1714000000.5, properties={"points": 120}).json()[
        "success"
    ]
    # The Python SDK sends explicit nulls; the same event twice is two events (no deduplication).
    assert fake.event(ids, "app_open", timestamp=None, properties=None).json()["success"]
    assert fake.event(ids, "app_open").json()["success"]
    assert fake.event(ids, "iso", timestamp="2024-04-25T00:00:00Z").json()["success"]
    assert fake.event(ids, "integer", timestamp=1714000000).json()["success"]

    customer = fake.sandbox.customer("ann@example.com")
    assert customer is not None
    assert customer["ids"] == {"registered": "ann@example.com"}
    assert customer["properties"] == {"tier": "gold", "points": 1250}
    types = [e["event_type"] for e in customer["events"]]
    assert types == ["points_earned", "app_open", "app_open", "iso", "integer"]
    events = customer["events"]
    assert events[0] == {
        "event_type": "points_earned",
        "timestamp": 1714000000.5,
        "properties": {"points": 120},
    }
    assert events[1]["properties"] == {}
    assert abs(events[1]["timestamp"] - time.time()) < 60  # a missing timestamp means "received now"
    assert events[3]["timestamp"] == 1714003200.0
    assert isinstance(events[4]["timestamp"], float) and events[4]["timestamp"] == 1714000000.0
    assert [e["event_type"] for e in fake.sandbox.events("app_open")] == ["app_open", "app_open"]
    assert fake.sandbox.events("app_open")[0]["ids"] == {"registered": "ann@example.com"}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"customer_ids": {"registered": "ann"}}, "Event type must be specified"),
        ({"customer_ids": {"registered": "ann"}, "event_type": ""}, "Event type must be specified"),
        (
            {"customer_ids": {"registered": "ann"}, "event_type": "x", "timestamp": "yesterday"},
            "Invalid timestamp",
        ),
        ({"customer_ids": {"registered": "ann"}, "event_type": "x", "timestamp": True}, "Invalid timestamp"),
        (
            {"customer_ids": {"registered": "ann"}, "event_type": "x", "properties": [1]},
            "Properties must be an object",
        ),
    ],
)
def test_event_validation(fake: Fake, body: dict[str, Any], error: str) -> None:
    response = fake.client.post(f"{TRACK}/customers/events", json=body)
    assert response.status_code == 200
    assert failed(response) == [error]
    assert fake.sandbox.customers() == []


# -- ids --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [
        {"registered": "null"},
        {"registered": "undefined"},
        {"registered": "NULL"},
        {"registered": "--- @"},
        {"registered": ""},
        {"registered": None},
        {"unconfigured": "ann"},
        {},
        None,
        "ann",
    ],
)
def test_at_least_one_valid_configured_id_is_required(fake: Fake, ids: Any) -> None:
    for response in (fake.customers(ids, {"tier": "gold"}), fake.event(ids, "app_open")):
        assert failed(response) == ["At least one valid id should be specified"]
    assert fake.sandbox.customers() == []


def test_invalid_ids_next_to_a_valid_one_are_ignored(fake: Fake) -> None:
    assert fake.customers({"registered": "ann", "cookie": "undefined", "other": "x"}, {"a": 1}).json()[
        "success"
    ]
    assert fake.customers({"registered": 42}, {"a": 1}).json()["success"]  # numbers are ids as strings
    customer = fake.sandbox.customer("ann")
    assert customer is not None and customer["ids"] == {"registered": "ann"}
    assert fake.sandbox.customer("42") is not None


def test_hard_ids_are_case_sensitive(fake: Fake) -> None:
    fake.customers({"registered": "Ann@x.com"}, {"tier": "gold"})
    fake.customers({"registered": "ann@x.com"}, {"tier": "silver"})
    assert len(fake.sandbox.customers()) == 2
    assert fake.sandbox.customer("Ann@x.com")["properties"] == {"tier": "gold"}  # type: ignore[index]
    assert fake.sandbox.customer("ann@x.com")["properties"] == {"tier": "silver"}  # type: ignore[index]


def test_a_customer_holds_one_value_per_hard_id_type(serve: Callable[..., Fake]) -> None:
    fake = serve(id_types={"registered": "hard", "email_id": "hard", "cookie": "soft"})
    fake.customers({"registered": "u1"}, {"a": 1})
    fake.customers({"registered": "u1", "email_id": "one@x.com"}, {"b": 2})
    # A second value for a held type is not attached: hard ids are immutable.
    assert fake.customers({"registered": "u1", "email_id": "two@x.com"}, {"c": 3}).json()["success"]
    customer = fake.sandbox.customer("u1")
    assert customer is not None
    assert customer["ids"] == {"registered": "u1", "email_id": "one@x.com"}
    assert customer["properties"] == {"a": 1, "b": 2, "c": 3}
    assert fake.sandbox.customer("two@x.com", "email_id") is None
    assert fake.sandbox.customer("one@x.com", "email_id") == customer
    assert len(fake.sandbox.customers()) == 1


def test_soft_ids_keep_64_values_with_lru_eviction(fake: Fake) -> None:
    ann = {"registered": "ann"}
    first = [customer_cmd({**ann, "cookie": f"c{i}"}, {}) for i in range(50)]
    assert all(r["success"] for r in fake.batch(first).json()["results"])
    second = [customer_cmd({**ann, "cookie": f"c{i}"}, {}) for i in range(50, 64)]
    second.append(customer_cmd({**ann, "cookie": "c0"}, {}))  # c0 is used again, so c1 is now the oldest
    assert all(r["success"] for r in fake.batch(second).json()["results"])
    assert len(fake.sandbox.customer("ann")["ids"]["cookie"]) == 64  # type: ignore[index]

    fake.customers({**ann, "cookie": "c64"}, {})
    cookies = fake.sandbox.customer("ann")["ids"]["cookie"]  # type: ignore[index]
    assert len(cookies) == 64
    assert "c1" not in cookies and "c0" in cookies and "c64" in cookies
    assert cookies[-1] == "c64"  # least recently used first
    assert fake.sandbox.customer("c1", "cookie") is None
    # The evicted value is free again: alone it now addresses a new anonymous customer.
    fake.event({"cookie": "c1"}, "page_visit")
    assert fake.sandbox.customer("c1", "cookie")["ids"] == {"cookie": ["c1"]}  # type: ignore[index]
    assert len(fake.sandbox.customers()) == 2


def test_linking_ids_of_two_profiles_merges_them(fake: Fake) -> None:
    fake.customers({"cookie": "c1"}, {"color": "red", "source": "ads"}, update_timestamp=100)
    fake.event({"cookie": "c1"}, "page_visit", timestamp=100)
    fake.customers({"registered": "ann"}, {"color": "blue", "tier": "gold"}, update_timestamp=200)
    fake.event({"registered": "ann"}, "signup", timestamp=200)
    assert len(fake.sandbox.customers()) == 2

    assert fake.customers({"registered": "ann", "cookie": "c1"}, {}).json()["success"]
    customers = fake.sandbox.customers()
    assert len(customers) == 1
    merged = customers[0]
    assert merged["ids"] == {"registered": "ann", "cookie": ["c1"]}
    assert merged["properties"] == {"color": "blue", "source": "ads", "tier": "gold"}  # the newer value wins
    assert [e["event_type"] for e in merged["events"]] == ["page_visit", "signup", "merge"]
    assert fake.sandbox.customer("c1", "cookie") == fake.sandbox.customer("ann")
    assert fake.sandbox.stats()["merges"] == 1


def test_anonymous_profile_is_identified_without_a_merge(fake: Fake) -> None:
    fake.event({"cookie": "c1"}, "page_visit")
    fake.customers({"registered": "ann", "cookie": "c1"}, {"tier": "gold"})
    customers = fake.sandbox.customers()
    assert len(customers) == 1
    assert customers[0]["ids"] == {"registered": "ann", "cookie": ["c1"]}
    assert [e["event_type"] for e in customers[0]["events"]] == ["page_visit"]


def test_different_hard_ids_never_merge_and_the_soft_id_is_stolen(fake: Fake) -> None:
    fake.event({"registered": "ann", "cookie": "c1"}, "page_visit")
    fake.event({"registered": "bob", "cookie": "c1"}, "login")
    ann, bob = fake.sandbox.customer("ann"), fake.sandbox.customer("bob")
    assert ann is not None and bob is not None
    assert "cookie" not in ann["ids"]
    assert bob["ids"] == {"registered": "bob", "cookie": ["c1"]}
    assert [e["event_type"] for e in ann["events"]] == ["page_visit"]  # history stays with the old profile
    assert [e["event_type"] for e in bob["events"]] == ["login"]
    assert fake.sandbox.stats()["merges"] == 0


def test_update_timestamp_keeps_the_newest_value_per_property(fake: Fake) -> None:
    ann = {"registered": "ann"}
    fake.customers(ann, {"tier": "gold", "points": 10}, update_timestamp=200)
    fake.customers(ann, {"tier": "silver"}, update_timestamp=100)  # late and older: ignored
    fake.customers(ann, {"points": 20}, update_timestamp=150)  # older than "points" as stored
    fake.customers(ann, {"points": 30, "tier": "platinum"}, update_timestamp=300)
    fake.customers(ann, {"tier": "bronze"}, update_timestamp=300)  # same time: not older, so not overwritten
    assert fake.sandbox.customer("ann")["properties"] == {"tier": "platinum", "points": 30}  # type: ignore[index]
    fake.customers(ann, {"nickname": "A"})  # no update_timestamp: the receive time
    fake.customers(ann, {"nickname": "B"})
    assert fake.sandbox.customer("ann")["properties"]["nickname"] == "B"  # type: ignore[index]


def test_update_timestamp_decides_whatever_the_batch_order(serve: Callable[..., Fake]) -> None:
    fake = serve(shuffle_batch=True, seed=3)
    commands = [
        customer_cmd({"registered": "ann"}, {"version": v}, update_timestamp=1000 + v) for v in range(30)
    ]
    assert all(r["success"] for r in fake.batch(commands).json()["results"])
    assert fake.sandbox.customer("ann")["properties"] == {"version": 29}  # type: ignore[index]


# -- batch ------------------------------------------------------------------------------------------------


def test_batch_echoes_command_ids_and_reports_each_command(fake: Fake) -> None:
    before = time.time()
    response = fake.batch(
        [
            {**customer_cmd({"registered": "ann"}, {"tier": "gold"}), "command_id": "row-1"},
            {**event_cmd({"registered": "ann"}, "points_earned", timestamp=1.5), "command_id": "row-2"},
            {"name": "system/time", "command_id": "row-3"},
            {**event_cmd({"registered": "null"}, "x"), "command_id": "row-4"},
            event_cmd({"registered": "ann"}, ""),
            {"name": "customers/delete", "data": {}},
            {"name": "customers", "data": "nope"},
            "not a command",
            event_cmd({"registered": "ann"}, "no_command_id"),
        ]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert before - 1 <= body["start_time"] <= body["end_time"] <= time.time() + 1
    results = body["results"]
    assert results[0] == {"success": True, "command_id": "row-1"}
    assert results[1] == {"success": True, "command_id": "row-2"}
    assert results[2]["success"] is True and results[2]["command_id"] == "row-3"
    assert isinstance(results[2]["time"], float)
    assert results[3] == {
        "success": False,
        "errors": ["At least one valid id should be specified"],
        "command_id": "row-4",
    }
    assert results[4] == {"success": False, "errors": ["Event type must be specified"]}
    assert results[5] == {"success": False, "errors": ["Unknown command name"]}
    assert results[6] == {"success": False, "errors": ["Command data must be an object"]}
    assert results[7] == {"success": False, "errors": ["Invalid command"]}
    assert results[8] == {"success": True}
    customer = fake.sandbox.customer("ann")
    assert customer is not None
    assert customer["properties"] == {"tier": "gold"}
    assert [e["event_type"] for e in customer["events"]] == ["points_earned", "no_command_id"]
    stats = fake.sandbox.stats()
    assert (stats["commands"], stats["command_errors"]) == (9, 5)
    assert (stats["customer_updates"], stats["events"]) == (1, 2)


def test_shuffled_batch_still_answers_in_input_order(serve: Callable[..., Fake]) -> None:
    fake = serve(shuffle_batch=True, seed=7)
    commands = []
    for i in range(40):
        if i % 10 == 9:
            commands.append({**event_cmd({"registered": "undefined"}, "bad"), "command_id": f"id-{i}"})
        else:
            commands.append(
                {**event_cmd({"registered": "ann"}, "step", properties={"i": i}), "command_id": f"id-{i}"}
            )
    results = fake.batch(commands).json()["results"]
    assert [r["command_id"] for r in results] == [f"id-{i}" for i in range(40)]
    assert [r["success"] for r in results] == [i % 10 != 9 for i in range(40)]
    applied = [e["properties"]["i"] for e in fake.sandbox.customer("ann")["events"]]  # type: ignore[index]
    assert sorted(applied) == [i for i in range(40) if i % 10 != 9]
    assert applied != sorted(applied)  # really applied out of order


def test_batch_of_more_than_50_commands_is_refused(fake: Fake) -> None:
    commands = [event_cmd({"registered": "ann"}, "e") for _ in range(51)]
    response = fake.batch(commands)
    assert response.status_code == 400
    assert response.json()["success"] is False and "error" in response.json()
    assert fake.sandbox.customers() == []
    assert len(fake.batch(commands[:50]).json()["results"]) == 50


def test_batch_without_a_commands_list_is_refused(fake: Fake) -> None:
    for body in ({"commands": {}}, {}, [1, 2]):
        response = fake.client.post(f"{TRACK}/batch", json=body)
        assert response.status_code == 400
        assert response.json()["success"] is False


# -- permissions ------------------------------------------------------------------------------------------


def test_permissions_refuse_unlisted_properties_and_events(serve: Callable[..., Fake]) -> None:
    fake = serve(permissions=Permissions(properties={"tier"}, event_types={"points_earned"}))
    ann = {"registered": "ann"}
    assert fake.customers(ann, {"tier": "gold"}).json() == {"success": True, "errors": []}
    # One refused property fails the whole command: nothing of it is written.
    response = fake.customers(ann, {"tier": "silver", "secret": 1})
    assert response.status_code == 200
    assert failed(response) == ["not authorized to update specified customer properties"]
    assert fake.event(ann, "points_earned").json()["success"]
    assert failed(fake.event(ann, "page_visit")) == ["Not authorized to add event of specified type"]
    results = fake.batch([customer_cmd(ann, {"secret": 2}), event_cmd(ann, "page_visit")]).json()["results"]
    assert results == [
        {"success": False, "errors": ["not authorized to update specified customer properties"]},
        {"success": False, "errors": ["Not authorized to add event of specified type"]},
    ]
    customer = fake.sandbox.customer("ann")
    assert customer is not None
    assert customer["properties"] == {"tier": "gold"}
    assert [e["event_type"] for e in customer["events"]] == ["points_earned"]


def test_new_names_are_allowed_by_the_new_switches(serve: Callable[..., Fake]) -> None:
    fake = serve(permissions=Permissions(allow_new_properties=True, allow_new_events=True))
    assert fake.customers({"registered": "ann"}, {"anything": 1}).json()["success"]
    assert fake.event({"registered": "ann"}, "anything").json()["success"]


# -- sizes, bodies, error modes ---------------------------------------------------------------------------


def test_size_limits(serve: Callable[..., Fake]) -> None:
    fake = serve(max_message_bytes=2000, max_value_bytes=100)
    ann = {"registered": "ann"}
    assert fake.customers(ann, {"bio": "x" * 99}).json()["success"]
    assert failed(fake.customers(ann, {"bio": "x" * 100})) == ["Value of property 'bio' is too large"]
    assert failed(fake.event(ann, "e", properties={"list": ["y" * 50, "z" * 50]})) == [
        "Value of property 'list' is too large"
    ]
    many = {f"p{i}": "v" * 90 for i in range(25)}
    assert failed(fake.customers(ann, many)) == ["Message is too large"]
    results = fake.batch([customer_cmd(ann, many), customer_cmd(ann, {"ok": 1})]).json()["results"]
    assert results == [{"success": False, "errors": ["Message is too large"]}, {"success": True}]
    assert fake.sandbox.customer("ann")["properties"] == {"bio": "x" * 99, "ok": 1}  # type: ignore[index]


@pytest.mark.parametrize("path", ["/customers", "/customers/events", "/batch"])
def test_invalid_json_and_gzip_bodies_are_refused(fake: Fake, path: str) -> None:
    response = fake.client.post(
        f"{TRACK}{path}", content=b'{"customer_ids": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": "Invalid JSON"}
    assert fake.client.post(f"{TRACK}{path}", content=b"NaN").json() == {
        "success": False,
        "message": "Invalid JSON",
    }
    body = b'{"customer_ids": {"registered": "ann"}, "event_type": "e", "properties": {"a": 1}}'
    response = fake.client.post(
        f"{TRACK}{path}", content=gzip.compress(body), headers={"content-encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "The browser (or proxy) sent a request that this server could not understand",
    }
    assert fake.sandbox.customers() == []


@pytest.mark.parametrize(("mode", "status"), [("200", 200), ("4xx", 400)])
def test_error_modes_for_single_routes(serve: Callable[..., Fake], mode: str, status: int) -> None:
    fake = serve(error_mode=mode, permissions=Permissions(allow_new_properties=True))
    response = fake.event({"registered": "null"}, "e")
    assert response.status_code == status
    assert response.json() == {"success": False, "errors": ["At least one valid id should be specified"]}
    assert fake.event({"registered": "ann"}, "e").status_code == status  # permission denial, same mode
    # A batch always answers 200 and reports failures per command.
    response = fake.batch([event_cmd({"registered": "null"}, "e")])
    assert response.status_code == 200
    assert response.json()["results"][0]["success"] is False


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError, match="error_mode"):
        BloomreachSandboxConfig(error_mode="500")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hard"):
        BloomreachSandboxConfig(id_types={"registered": "firm"})


def test_every_response_is_json_with_a_request_id(fake: Fake) -> None:
    for response in (
        fake.client.get("/no/such/path"),
        fake.client.get(f"{TRACK}/customers"),
        fake.client.get("/sandbox/requests?limit=many"),
        fake.client.post(f"{TRACK}/unknown", json={}),
    ):
        assert response.status_code in (400, 404, 405)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["success"] is False
        assert response.headers["x-request-id"]
    assert fake.client.get("/no/such/path").json()["error"] == "The requested URL was not found on the server"


# -- rate limit and faults --------------------------------------------------------------------------------


def test_rate_limit_refuses_with_429_and_drops_the_data(serve: Callable[..., Fake]) -> None:
    clock = ManualClock()
    fake = serve(rate_limit_per_s=3, monotonic=clock)
    statuses = [fake.event({"registered": "ann"}, "e", properties={"n": n}).status_code for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = fake.event({"registered": "ann"}, "e", properties={"n": 99})
    assert refused.status_code == 429
    assert refused.json()["success"] is False
    assert "retry-after" not in refused.headers
    assert [e["properties"]["n"] for e in fake.sandbox.events()] == [0, 1, 2]
    assert fake.sandbox.stats()["rate_limited"] == 3

    clock.value += 1.0  # next one-second window
    assert fake.event({"registered": "ann"}, "e", properties={"n": 5}).status_code == 200
    assert len(fake.sandbox.events()) == 4


def test_rate_limit_can_be_disabled(serve: Callable[..., Fake]) -> None:
    fake = serve(rate_limit_per_s=None, monotonic=ManualClock())
    assert {fake.event({"registered": "ann"}, "e").status_code for _ in range(150)} == {200}


def test_fault_queue_is_consumed_one_per_request(fake: Fake) -> None:
    fake.sandbox.set_faults(queue=[429, 500, 503, "drop", "slow:300", 200])
    ann = {"registered": "ann"}
    assert fake.event(ann, "e", properties={"n": 1}).status_code == 429
    response = fake.event(ann, "e", properties={"n": 2})
    assert response.status_code == 500 and response.json()["success"] is False
    assert fake.event(ann, "e", properties={"n": 3}).status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        fake.event(ann, "e", properties={"n": 4})
    started = time.monotonic()
    assert fake.event(ann, "e", properties={"n": 5}).json() == {"success": True, "errors": []}
    assert time.monotonic() - started >= 0.3
    response = fake.event(ann, "e", properties={"n": 6})
    assert response.status_code == 200 and response.json()["success"] is False
    assert fake.event(ann, "e", properties={"n": 7}).json()["success"]

    assert [e["properties"]["n"] for e in fake.sandbox.events()] == [5, 7]  # faulted requests apply nothing
    stats = fake.sandbox.stats()
    assert stats["requests"] == 7 and stats["accepted_requests"] == 2
    assert (stats["faults_injected"], stats["server_errors"], stats["dropped"]) == (6, 2, 1)
    assert stats["rate_limited"] == 0  # injected 429s are faults, not the limiter
    assert [r["fault"] for r in fake.sandbox.requests(limit=7)] == [
        "429", "500", "503", "drop", "slow:300", "200", None
    ]  # fmt: skip


def test_random_faults(fake: Fake) -> None:
    ann = {"registered": "ann"}
    fake.sandbox.set_faults(error_rate=1.0)
    assert {fake.event(ann, "e").status_code for _ in range(20)} == {500, 503}
    fake.sandbox.set_faults(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        fake.event(ann, "e")
    fake.sandbox.set_faults(slow_ms=150)
    started = time.monotonic()
    assert fake.event(ann, "e").json()["success"]
    assert time.monotonic() - started >= 0.15
    assert len(fake.sandbox.events()) == 1

    def run() -> list[int]:
        fake.sandbox.set_faults(error_rate=0.5, seed=42)
        return [fake.client.get(f"{TRACK}/system/time").status_code for _ in range(20)]

    first = run()
    assert first == run()  # a seed makes the random faults reproducible
    assert 200 in first and set(first) - {200}

    with pytest.raises(ValueError, match="unknown fault"):
        fake.sandbox.set_faults(queue=["explode"])
    with pytest.raises(ValueError, match="error_rate"):
        fake.sandbox.set_faults(error_rate=2)


# -- read-back and debug routes ---------------------------------------------------------------------------


def test_export_one_reads_a_customer_back(serve: Callable[..., Fake]) -> None:
    fake = serve(public_tokens={"pub"})
    fake.customers({"registered": "ann", "cookie": "c1"}, {"tier": "gold"})
    fake.event({"registered": "ann"}, "points_earned", timestamp=1714000000, properties={"points": 5})
    for ids in ({"registered": "ann"}, {"cookie": "c1"}):
        response = fake.client.post(EXPORT, json={"customer_ids": ids})
        assert response.status_code == 200
        assert response.json() == {
            "success": True,
            "ids": {"registered": "ann", "cookie": ["c1"]},
            "properties": {"tier": "gold"},
            "events": [{"type": "points_earned", "timestamp": 1714000000.0, "properties": {"points": 5}}],
        }
    response = fake.client.post(EXPORT, json={"customer_ids": {"registered": "bob"}})
    assert response.status_code == 404
    assert response.json() == {"success": False, "errors": ["Customer not found"]}
    assert fake.client.post(EXPORT, json={"customer_ids": {}}).status_code == 400
    assert (
        httpx.post(
            f"{fake.client.base_url}{EXPORT}", json={"customer_ids": {"registered": "ann"}}
        ).status_code
        == 401
    )
    response = httpx.post(
        f"{fake.client.base_url}{EXPORT}",
        json={"customer_ids": {"registered": "ann"}},
        headers={"Authorization": "Token pub"},
    )
    assert response.status_code == 403


def test_debug_routes(fake: Fake) -> None:
    fake.customers({"registered": "ann"}, {"tier": "gold"})
    fake.event({"registered": "ann"}, "points_earned")
    fake.event({"registered": "bob"}, "page_visit")
    http = httpx.Client(base_url=fake.client.base_url)  # the debug routes need no auth
    customers = http.get("/sandbox/customers").json()["customers"]
    assert [c["ids"] for c in customers] == [{"registered": "ann"}, {"registered": "bob"}]
    assert http.get("/sandbox/customers/registered/ann").json()["properties"] == {"tier": "gold"}
    assert http.get("/sandbox/customers/registered/zed").status_code == 404
    events = http.get("/sandbox/events", params={"event_type": "page_visit"}).json()["events"]
    assert [(e["event_type"], e["ids"]) for e in events] == [("page_visit", {"registered": "bob"})]
    stats = http.get("/sandbox/stats").json()
    expected = {
        "requests",
        "accepted_requests",
        "rate_limited",
        "server_errors",
        "commands",
        "customer_updates",
    }
    assert expected | {"events", "command_errors"} <= set(stats)
    assert (stats["requests"], stats["customer_updates"], stats["events"]) == (3, 1, 2)
    recent = http.get("/sandbox/requests", params={"limit": 2}).json()["requests"]
    assert [(r["path"], r["status"], r["commands"]) for r in recent] == [
        (f"{TRACK}/customers/events", 200, 1)
    ] * 2

    assert http.post("/sandbox/faults", json={"queue": [503]}).json()["faults"]["queue"] == [503]
    assert fake.event({"registered": "ann"}, "e").status_code == 503
    assert http.post("/sandbox/faults", json={"queue": ["bogus"]}).status_code == 400
    assert http.post("/sandbox/faults", json={"nonsense": 1}).status_code == 400
    assert http.post("/sandbox/reset").json() == {"success": True}
    assert http.get("/sandbox/customers").json() == {"customers": []}
    assert http.get("/sandbox/stats").json()["requests"] == 0
    http.close()


def test_visibility_delay_holds_writes_back(serve: Callable[..., Fake]) -> None:
    clock = ManualClock()
    fake = serve(visibility_delay_ms=500, monotonic=clock)
    assert fake.customers({"registered": "ann"}, {"tier": "gold"}).json()["success"]
    assert fake.sandbox.customer("ann") is None
    assert fake.sandbox.stats()["pending_writes"] == 1
    clock.value += 0.5
    assert fake.sandbox.customer("ann")["properties"] == {"tier": "gold"}  # type: ignore[index]
    fake.event({"registered": "ann"}, "e")
    fake.sandbox.flush()
    assert len(fake.sandbox.events()) == 1


def test_concurrent_clients_lose_nothing(fake: Fake) -> None:
    def send(worker: int) -> None:
        with httpx.Client(base_url=fake.client.base_url, auth=AUTH) as client:
            for n in range(10):
                body = {"commands": [event_cmd({"registered": f"u{worker}"}, "e", properties={"n": n})] * 3}
                assert client.post(f"{TRACK}/batch", json=body).status_code == 200

    threads = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake.sandbox.events()) == 6 * 10 * 3
    assert len(fake.sandbox.customers()) == 6
    assert fake.sandbox.stats()["events"] == 180


# -- CLI hook ---------------------------------------------------------------------------------------------


def test_cli_hook_registers_with_typer() -> None:
    app = typer.Typer()
    app.command("bloomreach")(serve_bloomreach_sandbox)
    app.command("other")(lambda: None)
    runner = CliRunner()
    result = runner.invoke(app, ["bloomreach", "--help"])
    assert result.exit_code == 0
    for option in ("--api-key", "--rate-limit", "--error-rate", "--slow-ms", "--drop-rate", "--error-mode"):
        assert option in result.output
    result = runner.invoke(app, ["bloomreach", "--api-key", "no-secret"])
    assert result.exit_code != 0
    result = runner.invoke(app, ["bloomreach", "--error-mode", "500"])
    assert result.exit_code != 0
