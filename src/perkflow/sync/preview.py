"""The request a platform would receive for some attributes and events of one member, without sending it.

Workflow dry runs show it: the connector packs the unit exactly as the delivery worker would, and the
caller sees the method, URL and JSON body (never the headers, which carry credentials).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from perkflow.connectors.base import EventPart, FieldError, MemberUnit, UnitError
from perkflow.connectors.braze.encoding import infer_type
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import AccountRepository
from perkflow.members.repository import MemberRepository
from perkflow.programs.service import ProgramCatalog
from perkflow.sync.fields import read_values
from perkflow.sync.integrations import Integration, vault


def preview_request(
    uow: UnitOfWork,
    integration: Integration,
    member_id: str,
    *,
    attributes: dict[str, Any] | None = None,
    events: list[tuple[str, dict[str, Any], str, datetime]] | None = None,
) -> dict[str, Any]:
    """{method, url, body} of the request, or {error} when the platform could not take it."""
    connector = integration.connector(vault(uow.ctx))
    catalog = uow.component(ProgramCatalog)
    program = catalog.resolve(integration.program_id) if catalog.programs else None
    member = uow.component(MemberRepository).get(member_id)
    account = (
        uow.component(AccountRepository).get_with_dates(member_id, program.id) if program and member else None
    )
    tier = program.ladder.get(account.tier_id) if program and account else None
    values = read_values(member, account, tier.name if tier else None, uow.now, connector.identity_fields())
    try:
        identity = connector.identify(member_id, values)
    except (UnitError, FieldError) as exc:
        return {"error": str(exc)}
    encoded: dict[str, Any] = {}
    warnings: list[str] = []
    for remote, value in (attributes or {}).items():
        try:
            connector.check_name(remote)
            encoded[remote] = connector.encode(infer_type(value), value)
        except (FieldError, ValueError) as exc:
            warnings.append(f"{remote}: {exc}")
    parts = [
        EventPart(position, name, occurred_at, properties, event_id)
        for position, (name, properties, event_id, occurred_at) in enumerate(events or [])
    ]
    unit = MemberUnit(member_id, identity, encoded, [-1] if encoded else [], parts, values)
    requests = connector.pack([unit])
    if not requests:
        return {"error": "nothing to send", "warnings": warnings}
    request = requests[0]
    out: dict[str, Any] = {
        "method": request.method,
        "url": request.url,
        "body": orjson.loads(request.content) if request.content else None,
    }
    if warnings:
        out["warnings"] = warnings
    return out
