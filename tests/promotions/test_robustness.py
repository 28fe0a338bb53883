"""Hostile input on the promotion routes, both APIs: wrong types, huge numbers, extreme dates,
non-ASCII text and malformed bodies never cause a 500, and every error has the right shape
(`{code, message, details}` on /api/v1, Voucherify's `{code, key, message, details, request_id}` on /v1)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.promotions.conftest import create_campaign, publish

HUGE = [2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 10**9, 10**12, 10**12 + 1, -1, -(2**63), 0]
DATES = [
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2026-13-40T00:00:00Z",
    "2026-06-01T00:00:00",
    "tomorrow",
    "",
]
TEXT = [
    "",
    " ",
    "ä€😀",
    "\u202eevil",
    "a" * 500,
    "x,y\n\"z'",
    "#",
    "%s%n",
    "../../etc",
    "DROP TABLE vouchers",
]

scalars = (
    st.none()
    | st.booleans()
    | st.sampled_from(HUGE)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(DATES)
    | st.sampled_from(TEXT)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


hostile = st.sampled_from(HUGE) | st.sampled_from(DATES) | st.sampled_from(TEXT) | json_values

DISCOUNT = {"type": "AMOUNT", "amount_off": 100}
CODE_CONFIG = {"length": 8, "charset": "alphanumeric", "prefix": "F-"}
ORDER = {"amount": 1000, "items": [{"product_id": "p1", "price": 100, "quantity": 2}]}
NATIVE_CAMPAIGN = {
    "name": "{name}",
    "discount": DISCOUNT,
    "vouchers_count": 2,
    "code_config": CODE_CONFIG,
    "start_date": "2026-01-01T00:00:00Z",
    "expiration_date": "2027-01-01T00:00:00Z",
    "max_redemptions": 10,
    "max_redemptions_per_customer": 2,
    "min_order_amount": 100,
    "redemption_quantity": 3,
    "metadata": {"k": "v"},
}
V1_CAMPAIGN = {
    "name": "{name}",
    "vouchers_count": 2,
    "start_date": "2026-01-01T00:00:00Z",
    "voucher": {
        "type": "DISCOUNT_VOUCHER",
        "discount": DISCOUNT,
        "code_config": CODE_CONFIG,
        "redemption": {"quantity": 3},
    },
    "perkflow": {"max_redemptions": 10, "max_redemptions_per_customer": 2, "min_order_amount": 100},
    "metadata": {"k": "v"},
}

# Each route with a body that works, and the fields to spoil: an example replaces one to three of
# them with hostile values, so the request gets past the first check to the ones behind it.
ROUTES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "post",
        "/api/v1/campaigns",
        NATIVE_CAMPAIGN,
        [
            "name",
            "campaign_type",
            "type",
            "discount",
            "discount.type",
            "discount.amount_off",
            "discount.percent_off",
            "discount.amount_limit",
            "gift_amount",
            "redemption_quantity",
            "max_redemptions",
            "max_redemptions_per_customer",
            "min_order_amount",
            "start_date",
            "expiration_date",
            "code_config.length",
            "code_config.charset",
            "code_config.prefix",
            "code_config.pattern",
            "segment_id",
            "referral",
            "referral.points",
            "currency",
            "program_id",
            "vouchers_count",
            "metadata",
        ],
    ),
    (
        "post",
        "/api/v1/campaigns",
        {"name": "{name}", "campaign_type": "GIFT_VOUCHERS", "gift_amount": 500, "vouchers_count": 1},
        ["gift_amount", "vouchers_count", "type"],
    ),
    (
        "post",
        "/api/v1/campaigns",
        {
            "name": "{name}",
            "campaign_type": "REFERRAL_PROGRAM",
            "discount": DISCOUNT,
            "referral": {"points": 5},
        },
        ["referral", "referral.points", "referral.program_id", "referral.campaign_id"],
    ),
    (
        "patch",
        "/api/v1/campaigns/{campaign}",
        {"active": True, "start_date": "2026-01-01T00:00:00Z", "max_redemptions": 50},
        [
            "active",
            "description",
            "start_date",
            "expiration_date",
            "max_redemptions",
            "min_order_amount",
            "max_redemptions_per_customer",
            "segment_id",
        ],
    ),
    ("post", "/api/v1/campaigns/{campaign}/codes/generate", {"count": 1}, ["count"]),
    (
        "post",
        "/api/v1/vouchers/{gift}/credits",
        {"amount": 10, "source_id": "{name}"},
        ["amount", "source_id"],
    ),
    (
        "post",
        "/api/v1/rewards/{perkflow_reward}/coupons",
        {"coupons": [{"code": "{name}", "value": 100, "expires_at": "2027-01-01T00:00:00Z"}]},
        ["coupons.0.code", "coupons.0.value", "coupons.0.expires_at", "coupons"],
    ),
    (
        "post",
        "/v1/campaigns",
        V1_CAMPAIGN,
        [
            "name",
            "campaign_type",
            "type",
            "vouchers_count",
            "start_date",
            "expiration_date",
            "join_once",
            "description",
            "voucher",
            "voucher.type",
            "voucher.discount",
            "voucher.discount.type",
            "voucher.discount.amount_off",
            "voucher.discount.percent_off",
            "voucher.code_config",
            "voucher.code_config.length",
            "voucher.code_config.charset",
            "voucher.code_config.pattern",
            "voucher.code_config.postfix",
            "voucher.redemption.quantity",
            "voucher.gift.amount",
            "perkflow",
            "perkflow.max_redemptions",
            "perkflow.max_redemptions_per_customer",
            "perkflow.min_order_amount",
            "perkflow.segment_id",
            "perkflow.referral",
            "perkflow.currency",
            "perkflow.program_id",
            "metadata",
        ],
    ),
    (
        "post",
        "/v1/loyalties",
        {
            "name": "{name}",
            "voucher": {"type": "LOYALTY_CARD", "code_config": CODE_CONFIG},
            "perkflow": {"currency": "EUR"},
        },
        [
            "name",
            "voucher.type",
            "voucher.code_config.length",
            "perkflow.currency",
            "perkflow.program_id",
            "campaign_type",
        ],
    ),
    (
        "post",
        "/v1/publications",
        {"campaign": "{campaign}", "customer": "ana", "source_id": "{name}", "channel": "API"},
        ["campaign", "customer", "source_id", "channel", "voucher", "metadata", "campaign.count"],
    ),
]
for code in ("{code}", "{gift}", "{card}"):
    redeemable = {"object": "voucher", "id": code}
    if code == "{card}":
        redeemable["reward"] = {"id": "{reward}"}
    if code == "{gift}":
        redeemable["gift"] = {"credits": 10}
    body = {
        "redeemables": [redeemable],
        "customer": "ana",
        "order": ORDER,
        "tracking_id": "t",
        "metadata": {},
    }
    spoil = [
        "redeemables",
        "redeemables.0.id",
        "redeemables.0.object",
        "redeemables.0.gift.credits",
        "redeemables.0.reward.id",
        "customer",
        "customer.source_id",
        "order",
        "order.amount",
        "order.items",
        "order.items.0.price",
        "order.items.0.quantity",
        "order.items.0.amount",
        "order.id",
        "tracking_id",
        "metadata",
    ]
    ROUTES += [("post", "/v1/validations", body, spoil), ("post", "/v1/redemptions", body, spoil)]
ROUTES += [
    ("post", "/v1/redemptions/{redemption}/rollback", {}, ["reason", "x"]),
    ("post", "/v1/vouchers/{gift}/balance", {"amount": 10, "source_id": "{name}"}, ["amount", "source_id"]),
    ("post", "/v1/vouchers/{card}/balance", {"amount": 10}, ["amount", "source_id"]),
    (
        "post",
        "/v1/loyalties/members/{card}/balance",
        {"points": 10, "expiration_date": "2027-01-01T00:00:00Z", "source_id": "{name}", "reason": "r"},
        ["points", "expiration_date", "source_id", "reason"],
    ),
    (
        "post",
        "/v1/loyalties/{loyalty}/members/{card}/balance",
        {"points": 10, "expiration_date": "2027-01-01T00:00:00Z"},
        ["points", "expiration_date"],
    ),
    ("post", "/v1/loyalties/{loyalty}/members", {"customer": "{name}"}, ["customer", "voucher", "channel"]),
    (
        "post",
        "/v1/rewards",
        {"name": "{name}", "stock": 5, "parameters": {}},
        ["name", "stock", "parameters", "parameters.campaign"],
    ),
    (
        "post",
        "/v1/rewards/{reward}/assignments",
        {"campaign": "{loyalty}", "parameters": {"loyalty": {"points": 5}}},
        ["campaign", "parameters", "parameters.loyalty.points"],
    ),
    (
        "post",
        "/v1/loyalties/members/{card}/redemption",
        {"reward": {"id": "{reward}"}, "order": ORDER},
        ["reward", "reward.id", "order", "order.amount", "order.items.0.quantity"],
    ),
]


def spoiled(body: Any, path: str, value: Any) -> Any:
    """`body` with the value at a dotted path (list indexes as numbers) replaced, creating parents."""
    head, _, rest = path.partition(".")
    if isinstance(body, list) and head.isdigit() and int(head) < len(body):
        copy = list(body)
        copy[int(head)] = spoiled(copy[int(head)], rest, value) if rest else value
        return copy
    copy = dict(body) if isinstance(body, dict) else {}
    copy[head] = spoiled(copy.get(head, {}), rest, value) if rest else value
    return copy


def world(api: TestClient) -> dict[str, str]:
    """One of each thing the routes act on, made once per test (the examples share it)."""
    found = getattr(api, "_promotion_world", None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    campaign = create_campaign(api, name="Fuzzed", vouchers_count=20, max_redemptions_per_customer=3)
    gift = create_campaign(
        api,
        name="Fuzzed gift",
        campaign_type="GIFT_VOUCHERS",
        discount=None,
        gift_amount=5000,
        vouchers_count=5,
    )
    loyalty = api.post("/v1/loyalties", json={"name": "Fuzzed club"}).json()
    card = api.post(f"/v1/loyalties/{loyalty['id']}/members", json={"customer": "ana"}).json()["code"]
    api.post(f"/v1/loyalties/members/{card}/balance", json={"points": 1000})
    reward = api.post("/v1/rewards", json={"name": "Mug", "parameters": {}}).json()
    api.post(
        f"/v1/loyalties/{loyalty['id']}/rewards",
        json=[{"reward": reward["id"], "parameters": {"loyalty": {"points": 1}}}],
    )
    code = publish(api, campaign["id"], "ana").json()["voucher"]["code"]
    redeemed = api.post(
        "/v1/redemptions", json={"redeemables": [{"id": code}], "customer": "ana", "order": {"amount": 900}}
    )
    perkflow_reward = api.post(
        "/api/v1/rewards", json={"name": "Coffee", "points_cost": 1, "program_id": loyalty["program_id"]}
    )
    found = {
        "campaign": campaign["id"],
        "gift": publish(api, gift["id"], "ana").json()["voucher"]["code"],
        "code": code,
        "loyalty": loyalty["id"],
        "card": card,
        "reward": reward["id"],
        "redemption": redeemed.json()["redemptions"][0]["id"],
        "perkflow_reward": perkflow_reward.json()["id"],
    }
    api._promotion_world = found  # type: ignore[attr-defined]
    return found


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, real in names.items():
            value = value.replace("{" + key + "}", real)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def assert_clean(path: str, response: Any) -> None:
    assert response.status_code < 500, (path, response.text)
    if response.status_code < 400:
        return
    body = response.json()
    if path.startswith("/v1/"):
        assert body["code"] == response.status_code and isinstance(body["key"], str), body
        assert isinstance(body["message"], str) and "details" in body and body["request_id"].startswith("v-")
    else:
        assert isinstance(body["code"], str) and isinstance(body["message"], str) and "details" in body, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(range(len(ROUTES))), data=st.data())
def test_spoiled_requests_never_cause_a_500(api: TestClient, route: int, data: st.DataObject) -> None:
    names = {**world(api), "name": f"fuzz-{data.draw(st.uuids()).hex[:12]}"}
    method, template, body, fields = ROUTES[route]
    for path in data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)):
        body = spoiled(body, path, data.draw(hostile))
    path = fill(template, names)
    assert_clean(path, api.request(method, path, json=fill(body, names)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(range(len(ROUTES))), body=json_values)
def test_arbitrary_bodies_never_cause_a_500(api: TestClient, route: int, body: Any) -> None:
    names = {**world(api), "name": "fuzz"}
    method, template, _body, _fields = ROUTES[route]
    path = fill(template, names)
    assert_clean(path, api.request(method, path, json=fill(body, names)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(
        ["/v1/vouchers", "/api/v1/campaigns", "/api/v1/campaigns/{campaign}/codes.csv", "/v1/publications"]
    ),
    params=st.dictionaries(
        st.sampled_from(["limit", "page", "after", "customer", "campaign", "unpublished", "source_id"]),
        st.sampled_from(["0", "-1", "99999999999999999999", "ä", "", "1.5", "true", "%00"])
        | st.text(max_size=8),
        max_size=4,
    ),
)
def test_hostile_query_strings_never_cause_a_500(api: TestClient, path: str, params: dict[str, str]) -> None:
    names = world(api)
    path = fill(path, names)
    assert_clean(path, api.get(path, params=params))


@pytest.mark.parametrize(
    "path",
    [
        "/v1/campaigns",
        "/v1/redemptions",
        "/v1/validations",
        "/v1/vouchers/{gift}/balance",
        "/api/v1/campaigns",
    ],
)
def test_malformed_bodies_get_a_clean_error(api: TestClient, path: str) -> None:
    path = fill(path, world(api))
    for content, content_type in (
        (b'{"name":', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"name=a&name=b&voucher[type]=GIFT_VOUCHER", "application/x-www-form-urlencoded"),
        (b'{"amount": 1e400}', "application/json"),
        (b'{"amount": 123456789012345678901234567890}', "application/json"),
        (b'{"name": "\\u0000"}', "application/json"),
        (b"<xml/>", "text/xml"),
    ):
        response = api.post(path, content=content, headers={"Content-Type": content_type})
        assert_clean(path, response)
        assert response.status_code >= 400, (path, content, response.text)


def test_amounts_beyond_32_bits_are_stored_and_beyond_the_bounds_refused(api: TestClient, demo: Any) -> None:
    big = 3_000_000_000  # above int4: PostgreSQL columns holding it are BIGINT
    gift = create_campaign(
        api, name="Big gift", campaign_type="GIFT_VOUCHERS", discount=None, gift_amount=big, vouchers_count=1
    )
    for spec in (
        {"redemption_quantity": big},
        {"max_redemptions": big},
        {"max_redemptions_per_customer": big},
    ):
        create_campaign(api, name=f"Big {next(iter(spec))}", vouchers_count=1, **spec)
    code = publish(api, gift["id"], "ana").json()["voucher"]["code"]
    credited = api.post(f"/api/v1/vouchers/{code}/credits", json={"amount": big})
    assert credited.status_code == 200 and credited.json()["gift"]["balance"] == 2 * big
    redeemed = api.post(
        "/v1/redemptions",
        json={"redeemables": [{"id": code}], "customer": "ana", "order": {"amount": 5 * big}},
    )
    assert redeemed.status_code == 200 and redeemed.json()["redemptions"][0]["amount"] == 2 * big
    assert api.post(f"/v1/redemptions/{redeemed.json()['redemptions'][0]['id']}/rollback").status_code == 200
    coupon = api.post(
        "/api/v1/rewards/rew_coffee/coupons", json={"coupons": [{"code": "BIGV", "value": big}]}
    )
    assert coupon.status_code == 201, coupon.text
    for huge in (10**12 + 1, 2**63, 2**64 - 1):
        refused = api.post(
            "/api/v1/rewards/rew_coffee/coupons", json={"coupons": [{"code": "HUGE", "value": huge}]}
        )
        assert refused.status_code == 422, refused.text
        for field in ("redemption_quantity", "max_redemptions", "gift_amount", "min_order_amount"):
            native = api.post(
                "/api/v1/campaigns", json={"name": "Too big", "discount": DISCOUNT, field: huge}
            )
            assert native.status_code == 422, (field, native.text)
    items = {"amount": 100, "items": [{"price": 10**12, "quantity": 10**12}]}
    for path in ("/v1/validations", "/v1/redemptions"):
        response = api.post(path, json={"redeemables": [{"id": code}], "customer": "ana", "order": items})
        assert response.status_code == 400 and response.json()["key"] == "invalid_payload", response.text
