"""The body of POST /users/track: envelope caps, identifiers, events, purchases and the per-object outcome."""

from __future__ import annotations

import functools
import re
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import orjson

from perkflow.sandbox.braze.attributes import (
    AttributeRejected,
    AttributeTypes,
    InvalidNestedValue,
    Operation,
    apply_operation,
    is_nested,
    key_problem,
    operation_data_points,
    parse_operation,
)
from perkflow.sandbox.braze.config import BrazeSandboxConfig
from perkflow.sandbox.braze.profiles import Alias, Profile, ProfileStore
from perkflow.sandbox.braze.times import OutOfRangeYear, format_time, parse_time

InputArray = Literal["attributes", "events", "purchases"]
INPUT_ARRAYS: tuple[InputArray, ...] = ("attributes", "events", "purchases")

VALID_DATA_MESSAGE = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
MAX_INPUT_MESSAGE = "Max Input Length Exceeded"
MISSING_IDENTIFIER = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"

PRIMARY_IDENTIFIERS = ("external_id", "user_alias", "braze_id")
CONTROL_KEYS = frozenset({"_update_existing_only", "_merge_objects"})
STANDARD_FIELDS = frozenset(
    {
        "first_name", "last_name", "email", "phone", "country", "language", "home_city", "gender", "dob",
        "time_zone", "email_subscribe", "push_subscribe", "subscription_groups", "push_tokens",
        "current_location", "marked_email_as_spam_at", "image_url", "facebook", "twitter",
    }
)  # fmt: skip
# Standard fields that cost data points (§7); subscription states, tokens and the like do not.
BILLABLE_STANDARD_FIELDS = frozenset(
    {
        "first_name", "last_name", "email", "phone", "gender", "home_city", "time_zone", "dob", "country",
        "language",
    }
)  # fmt: skip
STRING_STANDARD_FIELDS = frozenset(
    {"first_name", "last_name", "phone", "language", "home_city", "image_url", "facebook", "twitter"}
)
IGNORED_FIELDS = frozenset({"bio"})
NOT_ATTRIBUTES = frozenset(PRIMARY_IDENTIFIERS) | CONTROL_KEYS | IGNORED_FIELDS
RESERVED_PROPERTY_KEYS = frozenset({"time", "event_name"})
SUBSCRIPTION_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
GENDERS = frozenset({"M", "F", "O", "N", "P"})
_DOB = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


class ObjectRejected(Exception):
    """An object Braze refuses as a whole; it is listed in `errors` and nothing of it is applied."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ItemError:
    type: str
    input_array: InputArray
    index: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "input_array": self.input_array, "index": self.index}


@dataclass(frozen=True)
class Identity:
    kind: Literal["external_id", "user_alias", "braze_id", "email", "phone"]
    value: str | Alias


@dataclass
class TrackOutcome:
    """What one /users/track body did: the HTTP answer plus the counts the meter and stats need."""

    status: int
    body: dict[str, Any]
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INPUT_ARRAYS, 0))
    data_points: int = 0
    errors: list[ItemError] = field(default_factory=list)
    skipped_objects: int = 0

    @property
    def objects(self) -> int:
        return sum(self.received.values())


def _failure(message: str, received: dict[str, int] | None = None) -> TrackOutcome:
    outcome = TrackOutcome(status=400, body={"message": message})
    if received is not None:
        outcome.received = received
    return outcome


def read_identity(obj: dict[str, Any], config: BrazeSandboxConfig) -> Identity:
    """The object's one primary identifier, or its email/phone fallback (email wins)."""
    primaries = [name for name in PRIMARY_IDENTIFIERS if obj.get(name) is not None]
    if len(primaries) > 1:
        raise ObjectRejected("Only one of 'external_id', 'braze_id' or 'user_alias' may be provided")
    if primaries == ["external_id"]:
        external_id = obj["external_id"]
        if not isinstance(external_id, str) or not external_id:
            raise ObjectRejected("'external_id' must be a non-empty string")
        if len(external_id.encode()) > config.external_id_max_bytes:
            raise ObjectRejected(f"'external_id' must be fewer than {config.external_id_max_bytes + 1} bytes")
        return Identity("external_id", external_id)
    if primaries == ["user_alias"]:
        alias = obj["user_alias"]
        if (
            not isinstance(alias, dict)
            or not isinstance(alias.get("alias_name"), str)
            or not isinstance(alias.get("alias_label"), str)
            or not alias["alias_name"]
            or not alias["alias_label"]
        ):
            raise ObjectRejected("'user_alias' must be an object with 'alias_name' and 'alias_label' strings")
        return Identity("user_alias", (alias["alias_name"], alias["alias_label"]))
    if primaries == ["braze_id"]:
        if not isinstance(obj["braze_id"], str):
            raise ObjectRejected("'braze_id' must be a string")
        return Identity("braze_id", obj["braze_id"])
    email, phone = obj.get("email"), obj.get("phone")
    if isinstance(email, str) and email:
        return Identity("email", email)
    if isinstance(phone, str) and phone:
        return Identity("phone", phone)
    raise ObjectRejected(MISSING_IDENTIFIER)


def read_update_existing_only(obj: dict[str, Any], identity: Identity) -> bool:
    """Aliases only update existing users unless told otherwise; every other identifier creates them."""
    flag = obj.get("_update_existing_only")
    if flag is None:
        return identity.kind == "user_alias"
    if not isinstance(flag, bool):
        raise ObjectRejected("'_update_existing_only' must be a boolean")
    return flag


def find_profile(store: ProfileStore, identity: Identity, *, create: bool) -> Profile | None:
    """The profile an identifier points at; created when allowed (braze_ids are never invented)."""
    value = identity.value
    if identity.kind == "external_id":
        assert isinstance(value, str)
        found = store.by_external_id(value)
        return found if found is not None or not create else store.create(external_id=value)
    if identity.kind == "user_alias":
        assert isinstance(value, tuple)
        found = store.by_alias(value)
        return found if found is not None or not create else store.create(alias=value)
    assert isinstance(value, str)
    if identity.kind == "braze_id":
        return store.by_braze_id.get(value)
    if identity.kind == "email":
        found = store.by_email(value)
        return found if found is not None or not create else store.create(email=value)
    found = store.by_phone(value)
    return found if found is not None or not create else store.create(phone=value)


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def standard_value(name: str, value: Any, config: BrazeSandboxConfig) -> Any:
    """A standard profile field as Braze stores it (None removes it), or AttributeRejected."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) > config.string_max_chars:
        raise AttributeRejected(f"'{name}' must be {config.string_max_chars} characters or fewer")
    if name == "email":
        if not isinstance(value, str) or "@" not in value or " " in value.strip():
            raise AttributeRejected("'email' is not a valid email address")
        return value.strip()
    if name == "gender":
        if not isinstance(value, str) or value.upper() not in GENDERS:
            raise AttributeRejected("'gender' must be one of M, F, O, N, P or null")
        return value.upper()
    if name == "dob":
        if not isinstance(value, str) or not _DOB.match(value) or not _is_date(value):
            raise AttributeRejected("'dob' must be a date in YYYY-MM-DD format")
        return value
    if name == "country":
        # Braze stores an unparseable country as NULL rather than refusing it.
        return value.upper() if isinstance(value, str) and _COUNTRY.match(value) else None
    if name in ("email_subscribe", "push_subscribe"):
        if value not in SUBSCRIPTION_STATES:
            raise AttributeRejected(f"'{name}' must be one of opted_in, subscribed or unsubscribed")
        return value
    if name == "time_zone":
        zones = _time_zones()
        if not isinstance(value, str) or (zones and value not in zones):
            raise AttributeRejected("'time_zone' must be an IANA time zone name")
        return value
    if name in STRING_STANDARD_FIELDS and not isinstance(value, str):
        raise AttributeRejected(f"'{name}' must be a string")
    return value


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def read_time(obj: dict[str, Any], now: datetime) -> str:
    """An event or purchase time as stored; future times are clamped to now, as Braze does."""
    raw = obj.get("time")
    if raw is None:
        raise ObjectRejected("'time' is required")
    moment = None
    if isinstance(raw, str):
        try:
            moment = parse_time(raw)
        except OutOfRangeYear:
            moment = None
    if moment is None:
        raise ObjectRejected("'time' is not a valid time")
    return format_time(min(moment, now))


def read_properties(obj: dict[str, Any], config: BrazeSandboxConfig) -> dict[str, Any]:
    properties = obj.get("properties")
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise ObjectRejected("'properties' must be an object")
    for key in properties:
        if not key or key.startswith("$") or len(key) > config.key_max_chars:
            raise ObjectRejected(
                f"Property name '{key[:40]}' is invalid: names must be non-empty, "
                f"≤ {config.key_max_chars} characters and not start with '$'"
            )
        if key in RESERVED_PROPERTY_KEYS:
            raise ObjectRejected(f"'properties' may not contain the reserved key '{key}'")
    if _longest_string(properties) > config.string_max_chars:
        raise ObjectRejected(f"Property values must be {config.string_max_chars} characters or fewer")
    if len(orjson.dumps(properties)) > config.properties_max_bytes:
        raise ObjectRejected(f"'properties' must be smaller than {config.properties_max_bytes // 1024} KB")
    return properties


def _longest_string(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((_longest_string(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return max((_longest_string(child) for child in value), default=0)
    return 0


def read_event(obj: dict[str, Any], config: BrazeSandboxConfig, now: datetime) -> dict[str, Any]:
    name = obj.get("name")
    if name is None:
        raise ObjectRejected("'name' is required")
    if not isinstance(name, str) or not name or name.startswith("$") or len(name) > config.key_max_chars:
        raise ObjectRejected(
            f"'name' must be a non-empty string of at most {config.key_max_chars} characters, "
            "not starting with '$'"
        )
    event: dict[str, Any] = {
        "name": name,
        "time": read_time(obj, now),
        "properties": read_properties(obj, config),
    }
    app_id = obj.get("app_id")
    if app_id is not None:
        if not isinstance(app_id, str):
            raise ObjectRejected("'app_id' must be a string")
        event["app_id"] = app_id
    return event


def read_purchase(obj: dict[str, Any], config: BrazeSandboxConfig, now: datetime) -> dict[str, Any]:
    product_id = obj.get("product_id")
    if product_id is None:
        raise ObjectRejected("'product_id' is required")
    if not isinstance(product_id, str) or not product_id or len(product_id) > config.string_max_chars:
        raise ObjectRejected("'product_id' is not valid")
    currency = obj.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise ObjectRejected("'currency' is not valid")
    price = obj.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float):
        raise ObjectRejected("'price' is not valid")
    quantity = obj.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 100:
        raise ObjectRejected("'quantity' is not valid")
    purchase: dict[str, Any] = {
        "product_id": product_id,
        "currency": currency.upper(),
        "price": float(price),
        "quantity": quantity,
        "time": read_time(obj, now),
        "properties": read_properties(obj, config),
    }
    if isinstance(obj.get("app_id"), str):
        purchase["app_id"] = obj["app_id"]
    return purchase


@dataclass
class _ParsedAttributes:
    """Operations read from one attributes object before anything is applied."""

    operations: list[tuple[str, Operation]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    nested_error: str | None = None


class TrackRequest:
    """Validates and applies one /users/track body against the profile store.

    Objects are processed attributes first, then events, then purchases, each in array order, so an
    event may land on a profile its request's attributes just created. The caller holds the lock.
    """

    def __init__(
        self,
        store: ProfileStore,
        types: AttributeTypes,
        config: BrazeSandboxConfig,
        now: datetime,
        event_log: list[dict[str, Any]],
    ) -> None:
        self.store = store
        self.types = types
        self.config = config
        self.now = now
        self.event_log = event_log

    def process(self, payload: Any) -> TrackOutcome:
        if not isinstance(payload, dict):
            return _failure(VALID_DATA_MESSAGE)
        arrays: dict[str, list[Any]] = {}
        for name in INPUT_ARRAYS:
            value = payload.get(name)
            if value is not None and not isinstance(value, list):
                return _failure(VALID_DATA_MESSAGE)
            arrays[name] = value or []
        received = {name: len(items) for name, items in arrays.items()}
        if self._over_cap(received):
            return _failure(MAX_INPUT_MESSAGE, received)
        if not any(received.values()):
            return TrackOutcome(
                status=400, body={"message": VALID_DATA_MESSAGE, "errors": []}, received=received
            )

        outcome = TrackOutcome(status=201, body={}, received=received)
        processed = {
            "attributes": self._apply_attributes(arrays["attributes"], outcome),
            "events": self._apply_events(arrays["events"], outcome),
            "purchases": self._apply_purchases(arrays["purchases"], outcome),
        }
        order = {name: position for position, name in enumerate(INPUT_ARRAYS)}
        outcome.errors.sort(key=lambda error: (order[error.input_array], error.index))
        errors = [error.to_dict() for error in outcome.errors]
        if not any(processed.values()):
            outcome.status = 400
            outcome.body = {"message": VALID_DATA_MESSAGE, "errors": errors}
            return outcome
        outcome.body = {
            "message": "success",
            "attributes_processed": processed["attributes"],
            "events_processed": processed["events"],
            "purchases_processed": processed["purchases"],
        }
        if errors:
            outcome.body["errors"] = errors
        return outcome

    def _over_cap(self, received: dict[str, int]) -> bool:
        cap = self.config.object_cap
        if self.config.cap_mode == "per_array":
            return any(count > cap for count in received.values())
        return sum(received.values()) > cap

    def _resolve(self, obj: Any, array: InputArray) -> tuple[Identity, bool]:
        if not isinstance(obj, dict):
            raise ObjectRejected(f"Each object in '{array}' must be a JSON object")
        identity = read_identity(obj, self.config)
        return identity, read_update_existing_only(obj, identity)

    def _parse_attributes(self, obj: dict[str, Any]) -> _ParsedAttributes:
        parsed = _ParsedAttributes()
        merge = obj.get("_merge_objects", False)
        if not isinstance(merge, bool):
            parsed.errors.append("'_merge_objects' must be a boolean")
            merge = False
        for key, value in obj.items():
            if key in NOT_ATTRIBUTES or key in STANDARD_FIELDS:
                continue
            problem = key_problem(key, self.config)
            if problem is not None:
                parsed.errors.append(problem)
                continue
            try:
                parsed.operations.append((key, parse_operation(key, value, merge=merge, config=self.config)))
            except AttributeRejected as rejected:
                parsed.errors.append(rejected.message)
            except InvalidNestedValue as invalid:
                parsed.errors.append(invalid.message)
                parsed.nested_error = invalid.message
        return parsed

    def _apply_attributes(self, objects: list[Any], outcome: TrackOutcome) -> int:
        # Parse everything first: one bad nested value cancels the nested updates of every object.
        parsed = [
            self._parse_attributes(obj) if isinstance(obj, dict) else _ParsedAttributes() for obj in objects
        ]
        drop_nested = any(item.nested_error is not None for item in parsed)
        processed = 0
        for index, obj in enumerate(objects):
            try:
                identity, existing_only = self._resolve(obj, "attributes")
            except ObjectRejected as rejected:
                outcome.errors.append(ItemError(rejected.message, "attributes", index))
                nested_error = parsed[index].nested_error
                if nested_error is not None:  # it still cancels the other objects' nested updates
                    outcome.errors.append(ItemError(nested_error, "attributes", index))
                continue
            processed += 1
            outcome.errors.extend(ItemError(message, "attributes", index) for message in parsed[index].errors)
            profile = find_profile(self.store, identity, create=not existing_only)
            if profile is None:
                outcome.skipped_objects += 1
                continue
            outcome.data_points += self._apply_standard_fields(profile, obj, identity, index, outcome)
            for key, operation in parsed[index].operations:
                if drop_nested and is_nested(operation):
                    continue
                try:
                    apply_operation(profile.custom, key, operation, self.types, self.config)
                except AttributeRejected as rejected:
                    outcome.errors.append(ItemError(rejected.message, "attributes", index))
                    continue
                outcome.data_points += operation_data_points(operation)
            self.store.touch(profile)
        return processed

    def _apply_standard_fields(
        self, profile: Profile, obj: dict[str, Any], identity: Identity, index: int, outcome: TrackOutcome
    ) -> int:
        points = 0
        for name, value in obj.items():
            if name not in STANDARD_FIELDS or name == identity.kind:
                continue  # an email or phone used to find the profile is an identifier, not an update
            try:
                stored = standard_value(name, value, self.config)
            except AttributeRejected as rejected:
                outcome.errors.append(ItemError(rejected.message, "attributes", index))
                continue
            self.store.set_standard(profile, name, stored)
            points += name in BILLABLE_STANDARD_FIELDS
        return points

    def _apply_events(self, objects: list[Any], outcome: TrackOutcome) -> int:
        processed = 0
        for index, obj in enumerate(objects):
            try:
                identity, existing_only = self._resolve(obj, "events")
                event = read_event(obj, self.config, self.now)
            except ObjectRejected as rejected:
                outcome.errors.append(ItemError(rejected.message, "events", index))
                continue
            processed += 1
            profile = find_profile(self.store, identity, create=not existing_only)
            if profile is None:
                outcome.skipped_objects += 1
                continue
            # Braze gives every event object a fresh id and never deduplicates.
            record = {"id": uuid.uuid4().hex, **event}
            profile.events.append(record)
            self.event_log.append(
                {**record, "external_id": profile.external_id, "braze_id": profile.braze_id}
            )
            self.store.touch(profile)
            outcome.data_points += 1
        return processed

    def _apply_purchases(self, objects: list[Any], outcome: TrackOutcome) -> int:
        processed = 0
        for index, obj in enumerate(objects):
            try:
                identity, existing_only = self._resolve(obj, "purchases")
                purchase = read_purchase(obj, self.config, self.now)
            except ObjectRejected as rejected:
                outcome.errors.append(ItemError(rejected.message, "purchases", index))
                continue
            processed += 1
            profile = find_profile(self.store, identity, create=not existing_only)
            if profile is None:
                outcome.skipped_objects += 1
                continue
            profile.purchases.append({"id": uuid.uuid4().hex, **purchase})
            self.store.touch(profile)
            # Braze counts a purchase of quantity n as n purchases.
            outcome.data_points += purchase["quantity"]
        return processed
