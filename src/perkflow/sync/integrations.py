"""Integrations: connecting a platform (credentials checked and encrypted), field mappings, event
selection and settings; and the cached view of them that the outbox and the worker read."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from perkflow.connectors import KINDS, connector_class
from perkflow.connectors.base import Connector, FieldError
from perkflow.core.context import AppContext
from perkflow.core.errors import Conflict, InvalidInput, NotFound
from perkflow.core.ids import new_id
from perkflow.core.security import Vault, load_instance_key
from perkflow.core.uow import UnitOfWork
from perkflow.events.types import BUILTIN_ACTIONS, SYSTEM_ACTIVITY_TYPES, EventTypeCatalog
from perkflow.members.service import FieldCatalog
from perkflow.programs.service import ProgramCatalog
from perkflow.sync.fields import catalogue
from perkflow.sync.schemas import CHANGEABLE_CONFIG, SyncSettings, checked_secrets, checked_settings
from perkflow.sync.tables import field_mappings, integrations

# Every setting with its default; SyncSettings (schemas.py) documents and checks them.
DEFAULT_SETTINGS: dict[str, Any] = SyncSettings().model_dump()
DEFAULT_RATES = {"braze": 1000.0, "bloomreach": 100.0, "webhook": 50.0}
CHECK_TIMEOUT_S = 10.0


@dataclass
class Integration:
    id: str
    kind: str
    name: str
    status: str
    program_id: str | None
    config: dict[str, Any]
    secrets_token: str
    settings: dict[str, Any]
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    mappings: list[tuple[str, str]] = field(default_factory=list)  # (loyalty field, remote field)

    @property
    def event_names(self) -> dict[str, str]:
        """Activity type -> the event name sent to the platform."""
        return {e["type"]: e.get("name") or e["type"] for e in self.settings.get("events", [])}

    @property
    def mapped_fields(self) -> set[str]:
        return {loyalty for loyalty, _ in self.mappings}

    @property
    def rate_per_s(self) -> float:
        configured = self.settings.get("rate_limit_per_s")
        return float(configured) if configured else DEFAULT_RATES[self.kind]

    def connector(self, vault: Vault) -> Connector:
        return connector_class(self.kind)(self.config, vault.open(self.secrets_token), self.settings)

    def to_public(self) -> dict[str, Any]:
        """Everything but the credentials, which are never returned."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "program_id": self.program_id,
            "config": self.config,
            "settings": self.settings,
            "field_mappings": [{"loyalty_field": lf, "remote_field": rf} for lf, rf in self.mappings],
            "last_error": self.last_error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def vault(ctx: AppContext) -> Vault:
    found = ctx.caches.get("vault")
    if found is None:
        found = ctx.caches["vault"] = Vault(load_instance_key(ctx.settings))
    return found


def _row_to_integration(row: Any) -> Integration:
    return Integration(
        id=row.id,
        kind=row.kind,
        name=row.name,
        status=row.status,
        program_id=row.program_id,
        config=row.config,
        secrets_token=row.secrets,
        settings={**DEFAULT_SETTINGS, **(row.settings or {})},
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def load_integrations(uow: UnitOfWork) -> list[Integration]:
    found = {
        row.id: _row_to_integration(row)
        for row in uow.conn.execute(
            select(integrations).order_by(integrations.c.created_at, integrations.c.id)
        )
    }
    for row in uow.conn.execute(select(field_mappings).order_by(field_mappings.c.id)):
        if row.integration_id in found:
            found[row.integration_id].mappings.append((row.loyalty_field, row.remote_field))
    return list(found.values())


class IntegrationCache:
    """The integrations, re-read at most once a second per process, and at once after a local change.

    The outbox reads them in every transaction that records activity, so they are not worth a query
    each time; a change made through another process takes effect within a second.
    """

    ttl_s = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded_at = -1e9
        self._items: list[Integration] = []

    def get(self, uow: UnitOfWork) -> list[Integration]:
        with self._lock:
            if time.monotonic() - self._loaded_at < self.ttl_s:
                return self._items
        items = load_integrations(uow)
        with self._lock:
            self._items = items
            self._loaded_at = time.monotonic()
        return items

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = -1e9


def cache(ctx: AppContext) -> IntegrationCache:
    found = ctx.caches.get("integrations")
    if found is None:
        found = ctx.caches["integrations"] = IntegrationCache()
    return found


# -- service ------------------------------------------------------------------------------------------


def get_integration(uow: UnitOfWork, integration_id: str) -> Integration:
    for integration in load_integrations(uow):
        if integration.id == integration_id:
            return integration
    raise NotFound(f"integration {integration_id!r} does not exist", code="integration_not_found")


@dataclass(frozen=True)
class CheckedCredentials:
    """Credentials a real call to the platform accepted; only these can be saved.

    The check runs before the saving transaction opens, so a slow platform never holds a database
    lock (on SQLite, every writer's) while it answers.
    """

    kind: str
    config: dict[str, Any]
    secrets: dict[str, Any]


def check_credentials(
    kind: str, config: dict[str, Any], secrets: dict[str, Any], settings: dict[str, Any] | None = None
) -> CheckedCredentials:
    """Prove the credentials work with a harmless call; ConnectionCheckFailed (422) says what is wrong."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown integration kind {kind!r}", code="unknown_integration_kind")
    secrets = checked_secrets(kind, secrets)
    connector = connector_class(kind)(config, secrets, {**DEFAULT_SETTINGS, **(settings or {})})
    with httpx.Client(timeout=CHECK_TIMEOUT_S) as client:
        connector.check_connection(client)
    return CheckedCredentials(kind, dict(config), secrets)


def validate_new_integration(
    uow: UnitOfWork, kind: str, config: dict[str, Any], settings: dict[str, Any], program_id: str | None
) -> dict[str, Any]:
    """Settings completed with defaults, refused (4xx) if a value, an event, the program or the
    Bloomreach hard-ID field is wrong."""
    if kind == "bloomreach" and config.get("hard_id_field") not in loyalty_fields(uow):
        raise InvalidInput(
            f"{config.get('hard_id_field')!r} is not a loyalty field (see /api/v1/integrations/fields)",
            code="invalid_hard_id_field",
        )
    merged = checked_settings(settings)
    connector_class(kind).check_events(merged["events"])
    _validate_events(uow, merged["events"])
    if program_id is not None:
        uow.component(ProgramCatalog).get(program_id)
    return merged


def connect(
    uow: UnitOfWork,
    checked: CheckedCredentials,
    *,
    name: str,
    settings: dict[str, Any] | None = None,
    program_id: str | None = None,
) -> Integration:
    """Save checked credentials, encrypted, as a new connected integration."""
    merged = validate_new_integration(uow, checked.kind, checked.config, settings or {}, program_id)
    integration_id = new_id("int")
    uow.conn.execute(
        insert(integrations).values(
            id=integration_id,
            kind=checked.kind,
            name=name,
            status="connected",
            program_id=program_id,
            config=checked.config,
            secrets=vault(uow.ctx).seal(checked.secrets),
            settings=merged,
            last_error=None,
            created_at=uow.now,
            updated_at=uow.now,
        )
    )
    uow.after_commit(cache(uow.ctx).invalidate)
    return get_integration(uow, integration_id)


def credentials_config(integration: Integration, config: dict[str, Any]) -> dict[str, Any]:
    """The connection settings after a credentials update; refuses unknown keys and hard-ID changes."""
    unknown = sorted(set(config) - CHANGEABLE_CONFIG[integration.kind])
    if unknown:
        raise InvalidInput(
            f"{', '.join(unknown)} cannot be set on a {integration.kind} integration",
            code="invalid_config",
            details={"allowed": sorted(CHANGEABLE_CONFIG[integration.kind])},
        )
    for immutable in ("hard_id", "hard_id_field"):
        if immutable in config and config[immutable] != integration.config.get(immutable):
            raise Conflict(
                f"the Bloomreach {immutable} is set once and cannot change: customers are identified by "
                f"it, so changing it would split every profile (it is {integration.config.get(immutable)!r})",
                code="hard_id_immutable",
            )
    for key, value in config.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{key} must be a string", code="invalid_config")
    return {**integration.config, **config}


def update_credentials(uow: UnitOfWork, integration_id: str, checked: CheckedCredentials) -> Integration:
    """Replace the credentials (already checked) and resume delivery if it was paused or disconnected."""
    integration = get_integration(uow, integration_id)
    if checked.kind != integration.kind:
        raise InvalidInput("these credentials are for another kind of platform", code="invalid_credentials")
    credentials_config(
        integration, {k: v for k, v in checked.config.items() if k in ("hard_id", "hard_id_field")}
    )
    uow.conn.execute(
        update(integrations)
        .where(integrations.c.id == integration_id)
        .values(
            config=checked.config,
            secrets=vault(uow.ctx).seal(checked.secrets),
            status="connected",
            last_error=None,
            updated_at=uow.now,
        )
    )
    uow.after_commit(cache(uow.ctx).invalidate)
    return get_integration(uow, integration_id)


def set_status(uow: UnitOfWork, integration_id: str, status: str, error: str | None = None) -> None:
    uow.conn.execute(
        update(integrations)
        .where(integrations.c.id == integration_id)
        .values(status=status, last_error=error, updated_at=uow.now)
    )
    uow.after_commit(cache(uow.ctx).invalidate)


def disconnect(uow: UnitOfWork, integration_id: str) -> Integration:
    get_integration(uow, integration_id)
    set_status(uow, integration_id, "disconnected")
    return get_integration(uow, integration_id)


def update_settings(uow: UnitOfWork, integration_id: str, changes: dict[str, Any]) -> Integration:
    integration = get_integration(uow, integration_id)
    for immutable in ("hard_id", "hard_id_field"):
        if immutable in changes:
            raise Conflict(
                f"the Bloomreach {immutable} is set when connecting and cannot change afterwards: customers "
                "are identified by it, so changing it would split every profile",
                code="hard_id_immutable",
            )
    stored = {k: v for k, v in integration.settings.items() if k in SyncSettings.model_fields}
    merged = checked_settings({**stored, **changes})
    connector_class(integration.kind).check_events(merged["events"])
    _validate_events(uow, merged["events"])
    uow.conn.execute(
        update(integrations)
        .where(integrations.c.id == integration_id)
        .values(settings=merged, updated_at=uow.now)
    )
    uow.after_commit(cache(uow.ctx).invalidate)
    return get_integration(uow, integration_id)


def set_events(uow: UnitOfWork, integration_id: str, events: list[dict[str, Any]]) -> Integration:
    return update_settings(uow, integration_id, {"events": events})


def _validate_events(uow: UnitOfWork, events: list[dict[str, Any]]) -> None:
    known = set(BUILTIN_ACTIONS) | set(SYSTEM_ACTIVITY_TYPES) | set(uow.component(EventTypeCatalog).types)
    unknown = sorted({e["type"] for e in events} - known)
    if unknown:
        raise InvalidInput(
            f"unknown activity types: {', '.join(unknown)}",
            code="unknown_event_type",
            details={"unknown": unknown, "known": sorted(known)},
        )


def loyalty_fields(uow: UnitOfWork) -> dict[str, Any]:
    return catalogue(uow.component(FieldCatalog).fields)


def set_mappings(uow: UnitOfWork, integration_id: str, rows: list[tuple[str, str]]) -> Integration:
    """Replace the field mapping; every row is checked against the catalogue and the platform's name rules."""
    integration = get_integration(uow, integration_id)
    # Name rules need no credentials: the connector is built without decrypting them.
    connector = connector_class(integration.kind)(integration.config, {}, integration.settings)
    fields = loyalty_fields(uow)
    problems: dict[str, str] = {}
    remotes: set[str] = set()
    for loyalty, remote in rows:
        if loyalty not in fields:
            problems[remote] = f"{loyalty!r} is not a loyalty field (see /api/v1/integrations/fields)"
        try:
            connector.check_name(remote)
        except FieldError as exc:
            problems[remote] = str(exc)
        if remote in remotes:
            problems[remote] = "mapped twice"
        remotes.add(remote)
    if problems:
        raise InvalidInput("some field mappings are invalid", code="invalid_field_mapping", details=problems)
    uow.conn.execute(delete(field_mappings).where(field_mappings.c.integration_id == integration_id))
    if rows:
        uow.conn.execute(
            insert(field_mappings),
            [
                {
                    "integration_id": integration_id,
                    "loyalty_field": lf,
                    "remote_field": rf,
                    "created_at": uow.now,
                }
                for lf, rf in rows
            ],
        )
    uow.after_commit(cache(uow.ctx).invalidate)
    return get_integration(uow, integration_id)


def add_mapping(uow: UnitOfWork, integration_id: str, loyalty: str, remote: str) -> Integration:
    integration = get_integration(uow, integration_id)
    if any(rf == remote for _, rf in integration.mappings):
        raise Conflict(f"{remote!r} is already mapped", code="remote_field_mapped")
    try:
        return set_mappings(uow, integration_id, [*integration.mappings, (loyalty, remote)])
    except IntegrityError as exc:  # pragma: no cover - a concurrent add of the same remote field
        raise Conflict(f"{remote!r} is already mapped", code="remote_field_mapped") from exc


def remove_mapping(uow: UnitOfWork, integration_id: str, remote: str) -> Integration:
    integration = get_integration(uow, integration_id)
    if not any(rf == remote for _, rf in integration.mappings):
        raise NotFound(f"{remote!r} is not mapped", code="mapping_not_found")
    return set_mappings(uow, integration_id, [(lf, rf) for lf, rf in integration.mappings if rf != remote])
