"""Distributions: writing codes and their attributes into members' profiles on a connected platform,
once for a segment (manual) or whenever a trigger activity happens (an activity subscriber)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import delete, insert, select, update

from perkflow.activity.stream import Activity
from perkflow.core.clock import isoformat_z
from perkflow.core.context import AppContext
from perkflow.core.ids import new_id
from perkflow.core.uow import UnitOfWork
from perkflow.promotions.service import (
    Campaign,
    PromotionError,
    Voucher,
    get_campaign,
    get_voucher,
    not_found,
    publish,
    voucher_value,
)
from perkflow.promotions.tables import distributions

# The triggers a distribution can react to: Voucherify's automatic distribution triggers, as the
# Perkflow activity types that report them ("order status changed" is the checkout family).
TRIGGERS = (
    "manual",
    "voucher_published",
    "checkout",
    "checkout_accept",
    "checkout_reject",
    "refund",
    "gift_credits_added",
    "loyalty_points_added",
    "voucher_redeemed",
    "redemption_rolled_back",
    "reward_claim",
    "segment_entered",
    "segment_left",
)
ATTRIBUTE_KEYS = ("code", "value", "expiry", "wallet_url")
# An activity about a code of the distribution's own campaign writes that code's new state. Any other
# trigger publishes a code from the campaign, except a publication: it must never cause another one.
NEVER_PUBLISH = {"voucher_published"}


@dataclass(slots=True)
class Distribution:
    id: str
    name: str
    integration_id: str
    campaign_id: str
    trigger: str
    segment_id: str | None
    attributes: dict[str, str]
    active: bool
    last_run: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Distribution:
        return cls(
            id=row.id,
            name=row.name,
            integration_id=row.integration_id,
            campaign_id=row.campaign_id,
            trigger=row.trigger,
            segment_id=row.segment_id,
            attributes=row.attributes or {},
            active=row.active,
            last_run=row.last_run,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "integration_id": self.integration_id,
            "campaign_id": self.campaign_id,
            "trigger": self.trigger,
            "segment_id": self.segment_id,
            "attributes": self.attributes,
            "active": self.active,
            "last_run": self.last_run,
            "created_at": isoformat_z(self.created_at),
            "updated_at": isoformat_z(self.updated_at),
        }


class DistributionCache:
    """The active automatic distributions, re-read at most once a second (every commit consults them)."""

    ttl_s = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded_at = -1e9
        self._items: list[Distribution] = []

    def get(self, uow: UnitOfWork) -> list[Distribution]:
        with self._lock:
            if time.monotonic() - self._loaded_at < self.ttl_s:
                return self._items
        rows = uow.conn.execute(
            select(distributions).where(distributions.c.active.is_(True), distributions.c.trigger != "manual")
        )
        items = [Distribution.from_row(row) for row in rows]
        with self._lock:
            self._items, self._loaded_at = items, time.monotonic()
        return items

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = -1e9


def distribution_cache(ctx: AppContext) -> DistributionCache:
    found = ctx.caches.get("promotions.distributions")
    if found is None:
        found = ctx.caches["promotions.distributions"] = DistributionCache()
    return found


def create_distribution(uow: UnitOfWork, spec: dict[str, Any]) -> Distribution:
    from perkflow.sync.integrations import get_integration

    trigger = spec.get("trigger")
    if trigger not in TRIGGERS:
        raise PromotionError("invalid_payload", f"trigger must be one of {', '.join(TRIGGERS)}")
    attributes = spec.get("attributes") or {}
    unknown = sorted(set(attributes) - set(ATTRIBUTE_KEYS))
    if unknown or not attributes.get("code"):
        raise PromotionError(
            "invalid_payload",
            "attributes maps code (required), value, expiry and wallet_url to remote attribute names",
            details={"unknown": unknown},
        )
    integration = get_integration(uow, spec["integration_id"])
    campaign = get_campaign(uow, spec["campaign_id"])
    segment_id = spec.get("segment_id")
    if trigger == "manual" and not segment_id:
        raise PromotionError("invalid_payload", "a manual distribution needs the segment_id it is sent to")
    if segment_id is not None:
        from perkflow.segments.tables import segments

        if uow.conn.execute(select(segments.c.id).where(segments.c.id == segment_id)).first() is None:
            raise not_found("segment", segment_id)
    distribution_id = new_id("dist")
    uow.conn.execute(
        insert(distributions).values(
            id=distribution_id,
            name=spec.get("name") or f"{campaign.name} to {integration.name}",
            integration_id=integration.id,
            campaign_id=campaign.id,
            trigger=trigger,
            segment_id=segment_id,
            attributes={k: v for k, v in attributes.items() if v},
            active=spec.get("active", True) is not False,
            created_at=uow.now,
            updated_at=uow.now,
        )
    )
    uow.after_commit(distribution_cache(uow.ctx).invalidate)
    return get_distribution(uow, distribution_id)


def get_distribution(uow: UnitOfWork, distribution_id: str) -> Distribution:
    row = uow.conn.execute(select(distributions).where(distributions.c.id == distribution_id)).first()
    if row is None:
        raise not_found("distribution", distribution_id)
    return Distribution.from_row(row)


def list_distributions(uow: UnitOfWork) -> list[Distribution]:
    rows = uow.conn.execute(select(distributions).order_by(distributions.c.created_at, distributions.c.id))
    return [Distribution.from_row(row) for row in rows]


def delete_distribution(uow: UnitOfWork, distribution_id: str) -> None:
    get_distribution(uow, distribution_id)
    uow.conn.execute(delete(distributions).where(distributions.c.id == distribution_id))
    uow.after_commit(distribution_cache(uow.ctx).invalidate)


def attribute_values(
    uow: UnitOfWork, distribution: Distribution, campaign: Campaign, voucher: Voucher, member_id: str
) -> dict[str, Any]:
    """The remote attributes for a code: its code, value, expiry and a link to the member's wallet."""
    names = distribution.attributes
    values: dict[str, Any] = {}
    if names.get("code"):
        values[names["code"]] = voucher.code
    if names.get("value"):
        values[names["value"]] = voucher_value(uow, campaign, voucher)
    if names.get("expiry"):
        expiry = campaign.expiration_date
        values[names["expiry"]] = isoformat_z(expiry) if expiry else None
    if names.get("wallet_url"):
        template = uow.ctx.settings.wallet_url_template
        values[names["wallet_url"]] = template.format(member_id=quote(member_id, safe=""))
    return values


def _queue(
    uow: UnitOfWork, distribution: Distribution, campaign: Campaign, voucher: Voucher, member: str
) -> bool:
    from perkflow.sync.integrations import cache
    from perkflow.sync.outbox import enqueue_attributes

    integration = next((i for i in cache(uow.ctx).get(uow) if i.id == distribution.integration_id), None)
    if integration is None or integration.status == "disconnected":
        return False
    enqueue_attributes(
        uow, integration, member, attribute_values(uow, distribution, campaign, voucher, member)
    )
    return True


def distribute_activities(uow: UnitOfWork, batch: list[Activity]) -> None:
    """Activity subscriber: run the automatic distributions that the new activities trigger."""
    active = distribution_cache(uow.ctx).get(uow)
    if not active:
        return
    for activity in batch:
        for distribution in active:
            if distribution.trigger != activity.type:
                continue
            about_segment = activity.type in ("segment_entered", "segment_left")
            if about_segment and distribution.segment_id not in (None, activity.data.get("segment_id")):
                continue
            _run_for_activity(uow, distribution, activity)


def _run_for_activity(uow: UnitOfWork, distribution: Distribution, activity: Activity) -> None:
    try:
        campaign = get_campaign(uow, distribution.campaign_id)
        code = activity.data.get("code")
        voucher = None
        if activity.data.get("campaign_id") == campaign.id and isinstance(code, str):
            voucher = get_voucher(uow, code)
    except PromotionError:
        # The campaign (or the code) was deleted since this process cached the distribution: the
        # triggering change must still go through.
        return
    if voucher is not None:
        _queue(uow, distribution, campaign, voucher, activity.member_id)
        return
    if activity.type in NEVER_PUBLISH:
        return
    try:
        published = publish(
            uow,
            campaign_ref=campaign.id,
            customer_id=activity.member_id,
            source_id=f"dist:{distribution.id}:{activity.seq}",
            channel="distribution",
        )
    except PromotionError:
        # No code left (or the campaign ended): the triggering change must still go through.
        return
    _queue(uow, distribution, published.campaign, published.voucher, activity.member_id)


def run_manual(ctx: AppContext, distribution_id: str, *, page: int = 200) -> dict[str, Any]:
    """Give every member of the segment a code (one per member: re-running gives the same codes) and
    queue their attributes, a page of members per transaction."""
    from perkflow.core import transactions
    from perkflow.segments.membership import members_of

    with ctx.uow(write=False) as uow:
        distribution = get_distribution(uow, distribution_id)
    if distribution.segment_id is None:
        raise PromotionError("invalid_payload", "this distribution has no segment to send to")
    segment_id = distribution.segment_id
    totals: dict[str, Any] = {"members": 0, "published": 0, "queued": 0, "failed": 0, "errors": []}
    after = ""
    while True:

        def work(uow: UnitOfWork, after: str = after) -> tuple[list[str], int, int, list[str]]:
            campaign = get_campaign(uow, distribution.campaign_id)
            member_ids = members_of(uow, segment_id, after=after, limit=page)
            published = queued = 0
            errors: list[str] = []
            for member_id in member_ids:
                try:
                    result = publish(
                        uow,
                        campaign_ref=campaign.id,
                        customer_id=member_id,
                        source_id=f"dist:{distribution.id}:{member_id}",
                        channel="distribution",
                    )
                except PromotionError as exc:
                    errors.append(f"{member_id}: {exc.message}")
                    continue
                published += 0 if result.replay else 1
                queued += _queue(uow, distribution, campaign, result.voucher, member_id)
            return member_ids, published, queued, errors

        member_ids, published, queued, errors = transactions.run(ctx, work)
        totals["members"] += len(member_ids)
        totals["published"] += published
        totals["queued"] += queued
        totals["failed"] += len(errors)
        totals["errors"] = (totals["errors"] + errors)[:20]
        if len(member_ids) < page:
            break
        after = member_ids[-1]

    def remember(uow: UnitOfWork) -> None:
        uow.conn.execute(
            update(distributions)
            .where(distributions.c.id == distribution_id)
            .values(last_run={**totals, "at": isoformat_z(uow.now)}, updated_at=uow.now)
        )

    transactions.run(ctx, remember)
    return totals
