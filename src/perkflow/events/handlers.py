"""What each built-in action does. Every handler validates first and changes state only after."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from perkflow.activity.stream import Activity
from perkflow.core.clock import to_epoch
from perkflow.core.errors import Conflict, InvalidInput, NotFound
from perkflow.core.limits import MAX_POINTS, MAX_QUANTITY
from perkflow.events.parsing import EventIn, optional_int, require_int, require_str
from perkflow.events.service import DuplicateEvent, Handler, IngestContext
from perkflow.events.types import EventTypeCatalog, validate_attributes
from perkflow.ledger.service import allocations_json, record_earning, record_spend
from perkflow.members.fields import FieldValueError, parse_datetime
from perkflow.members.service import apply_profile, normalize_profile, record_profile_change
from perkflow.programs.rules import EarnPlan, once_per_key, plan_earning
from perkflow.programs.service import ProgramConfig


def _earning(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> tuple[EarnPlan, str | None]:
    """The event's earning plan and, if a once-per-period rule applies, the key that enforces it.

    When the member already earned from such a rule in the period, its points are left out.
    """
    rules = program.rules_for(ev.action)
    if not rules:
        return EarnPlan(0, 0, ()), None
    once = [r for r in program.once_rules_for(ev.action) if r.matches(ev.data)]
    once_key = None
    if once:
        period = once_per_key(once[0].once_per, ctx.occurred_at(ev))  # type: ignore[arg-type]
        once_key = f"once:{program.id}:{ev.action}:{ev.customer}:{period}"
        if ctx.seen(once_key) is not None:
            return plan_earning([r for r in rules if not r.once_per], ev.action, ev.data), None
    return plan_earning(rules, ev.action, ev.data), once_key


def _record_earning_event(
    ctx: IngestContext,
    ev: EventIn,
    program: ProgramConfig,
    account: Any,
    *,
    data: dict[str, Any],
    plan: EarnPlan,
    dedup_key: str | None,
    effects: dict[str, Any] | None = None,
) -> Activity:
    effects = effects if effects is not None else {}
    if plan.rule_ids:
        effects["rules"] = list(plan.rule_ids)
    if plan.points > 0:
        return record_earning(
            ctx.uow,
            account,
            program,
            type=ev.action,
            points=plan.points,
            pending_days=plan.pending_days,
            occurred_at=ctx.occurred_at(ev),
            data=data,
            effects=effects,
            source=ctx.source,
            event_id=ev.id,
            dedup_key=dedup_key,
        )
    effects["points"] = 0
    return ctx.log.record(
        type=ev.action,
        member_id=ev.customer,
        program_id=program.id,
        chain=account,
        data=data,
        effects=effects,
        occurred_at=ctx.occurred_at(ev),
        source=ctx.source,
        event_id=ev.id,
        dedup_key=dedup_key,
    )


# -- membership ----------------------------------------------------------------------------------------


def handle_opt_in(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    profile = normalize_profile(ctx.uow, ev.data, ignore=frozenset({"channel", "source"}))
    member = ctx.members.get_for_update(ev.customer)
    account = ctx.accounts.get_with_dates(ev.customer, program.id) if member is not None else None
    if account is not None and account.opted_in:
        raise Conflict(
            f"member {ev.customer!r} has already opted in to program {program.id!r}", code="already_opted_in"
        )
    if member is not None and not member.active:
        raise Conflict(f"member {ev.customer!r} is {member.status}", code="member_not_active")
    plan, once_key = _earning(ctx, ev, program)
    if member is None:
        builtin = {
            k: profile.pop(k) for k in ("email", "first_name", "last_name", "birth_date") if k in profile
        }
        member = ctx.members.add(
            ev.customer, fields={k: v for k, v in profile.items() if v is not None}, **builtin
        )
        record_profile_change(
            ctx.uow, member, member.profile(), source=ctx.source, occurred_at=ctx.occurred_at(ev)
        )
    elif profile:
        changed = apply_profile(member, profile, now=ctx.now)
        if changed:
            record_profile_change(
                ctx.uow, member, changed, source=ctx.source, occurred_at=ctx.occurred_at(ev)
            )
    if account is None:
        account = ctx.accounts.create(ev.customer, program.id)
    account.opt_in(ctx.occurred_at(ev))
    activity = _record_earning_event(ctx, ev, program, account, data=ev.data, plan=plan, dedup_key=once_key)
    return ctx.finish(activity, account, program)


def handle_opt_out(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    ctx.member(ev)
    account = ctx.accounts.get_with_dates(ev.customer, program.id)
    if account is None or not account.opted_in:
        raise Conflict(
            f"member {ev.customer!r} is not opted in to program {program.id!r}", code="not_opted_in"
        )
    account.opt_out(ctx.occurred_at(ev))
    activity = ctx.log.record(
        type="opt_out",
        member_id=ev.customer,
        program_id=program.id,
        chain=account,
        data=ev.data,
        occurred_at=ctx.occurred_at(ev),
        source=ctx.source,
        event_id=ev.id,
    )
    return ctx.finish(activity, None, program)


def handle_profile(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    member = ctx.member(ev, lock=True)
    changes = normalize_profile(ctx.uow, ev.data)
    changed = apply_profile(member, changes, now=ctx.now)
    return record_profile_change(
        ctx.uow, member, changed, source=ctx.source, event_id=ev.id, occurred_at=ctx.occurred_at(ev)
    )


# -- purchases ---------------------------------------------------------------------------------------


def _checkout_data(data: dict[str, Any], program: ProgramConfig) -> dict[str, Any]:
    require_str(data, "transaction_id")
    require_int(data, "total")
    currency = data.get("currency")
    if currency is not None and currency != program.currency:
        raise InvalidInput(
            f"the program's currency is {program.currency}, the checkout is in {currency!r}",
            code="currency_mismatch",
        )
    items = data.get("items")
    if items is not None:
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise InvalidInput("data.items must be a list of objects", code="invalid_event_data")
        for position, item in enumerate(items):
            quantity = item.get("quantity", 1)
            if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:  # bool is not a quantity
                raise InvalidInput(
                    f"data.items[{position}].quantity must be an integer from 1 to {MAX_QUANTITY}",
                    code="invalid_event_data",
                )
    return data


def handle_checkout(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    data = _checkout_data(ev.data, program)
    key = f"checkout:{program.id}:{data['transaction_id']}"
    original = ctx.seen(key)
    if original is not None:
        if original.member_id != ev.customer:
            raise Conflict(
                f"transaction {data['transaction_id']!r} belongs to another member", code="transaction_exists"
            )
        raise DuplicateEvent(original)
    account = ctx.opted_in_account(ev, program)
    plan, _ = _earning(ctx, ev, program)
    activity = _record_earning_event(ctx, ev, program, account, data=data, plan=plan, dedup_key=key)
    return ctx.finish(activity, account, program)


def _original_checkout(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> tuple[str, Activity]:
    tx = require_str(ev.data, "transaction_id")
    original = ctx.seen(f"checkout:{program.id}:{tx}")
    if original is None or original.member_id != ev.customer:
        raise NotFound(
            f"member {ev.customer!r} has no checkout with transaction_id {tx!r}", code="transaction_not_found"
        )
    return tx, original


def handle_checkout_accept(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    tx, original = _original_checkout(ctx, ev, program)
    key = f"checkout_accept:{program.id}:{tx}"
    if (previous := ctx.seen(key)) is not None:
        raise DuplicateEvent(previous)
    if ctx.seen(f"checkout_reject:{program.id}:{tx}") is not None:
        raise Conflict(f"checkout {tx!r} was rejected", code="checkout_rejected")
    account = ctx.opted_in_account(ev, program)
    released = account.points.release(
        original.effects.get("lot", original.seq), window_days=program.tier_window_days
    )
    if released:
        account.mark_dirty()
    activity = ctx.log.record(
        type="checkout_accept",
        member_id=ev.customer,
        program_id=program.id,
        chain=account,
        data=ev.data,
        effects={"points": released, "checkout": original.id},
        occurred_at=ctx.occurred_at(ev),
        source=ctx.source,
        points_delta=released,
        pending_delta=-released,
        event_id=ev.id,
        dedup_key=key,
    )
    return ctx.finish(activity, account, program)


def handle_checkout_reject(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    tx, original = _original_checkout(ctx, ev, program)
    key = f"checkout_reject:{program.id}:{tx}"
    if (previous := ctx.seen(key)) is not None:
        raise DuplicateEvent(previous)
    account = ctx.opted_in_account(ev, program)
    lot = account.points.lot(original.effects.get("lot", original.seq))
    if ctx.seen(f"checkout_accept:{program.id}:{tx}") is not None or (
        original.effects.get("points", 0) > 0 and (lot is None or not lot.pending)
    ):
        raise Conflict(
            f"the points of checkout {tx!r} are already confirmed; send a refund instead",
            code="checkout_not_pending",
        )
    cancelled = account.points.cancel_pending(original.effects.get("lot", original.seq))
    if cancelled:
        account.mark_dirty()
    activity = ctx.log.record(
        type="checkout_reject",
        member_id=ev.customer,
        program_id=program.id,
        chain=account,
        data=ev.data,
        effects={"points": 0, "pending_cancelled": cancelled, "checkout": original.id},
        occurred_at=ctx.occurred_at(ev),
        source=ctx.source,
        pending_delta=-cancelled,
        event_id=ev.id,
        dedup_key=key,
    )
    return ctx.finish(activity, account, program)


def handle_refund(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    """Claw back the points of the refunded part of a checkout, proportionally to the amount."""
    tx, original = _original_checkout(ctx, ev, program)
    if ctx.seen(f"checkout_reject:{program.id}:{tx}") is not None:
        raise Conflict(f"checkout {tx!r} was rejected; there is nothing to refund", code="checkout_rejected")
    total = int(original.data.get("total", 0))
    earned = int(original.effects.get("points", 0))
    # Refunds of one transaction are numbered; the latest carries the running totals.
    number, previous = 1, None
    while (found := ctx.seen(f"refund:{program.id}:{tx}:{number}")) is not None:
        previous, number = found, number + 1
    refunded_before = int(previous.effects.get("refunded_total", 0)) if previous else 0
    clawed_before = int(previous.effects.get("points_clawed_total", 0)) if previous else 0
    amount = optional_int(ev.data, "amount", minimum=1)
    if amount is None:
        amount = total - refunded_before
    if amount <= 0 or refunded_before + amount > total:
        raise InvalidInput(
            f"the refund exceeds what is left of the checkout ({total - refunded_before} of {total})",
            code="refund_exceeds_total",
            details={"total": total, "refunded": refunded_before, "requested": amount},
        )
    account = ctx.opted_in_account(ev, program)
    refunded_total = refunded_before + amount
    clawed_total = earned * refunded_total // total if total else earned
    to_claw = clawed_total - clawed_before
    taken = pending_cancelled = shortfall = 0
    lots: list[list[int]] = []
    if to_claw > 0:
        result = account.points.claw_back(
            to_claw,
            ctx.now_epoch,
            prefer_lot_id=original.effects.get("lot", original.seq),
            earned_day=ctx.uow.times.epoch(original.occurred_at) // 86400,
            window_days=program.tier_window_days,
        )
        taken, pending_cancelled, shortfall = result.taken, result.from_pending, result.shortfall
        lots = allocations_json(result.allocations)
        account.mark_dirty()
    activity = ctx.log.record(
        type="refund",
        member_id=ev.customer,
        program_id=program.id,
        chain=account,
        data=ev.data,
        effects={
            "points": -taken,
            "pending_cancelled": pending_cancelled,
            "points_unrecovered": shortfall,
            "lots": lots,
            "refunded_total": refunded_total,
            "points_clawed_total": clawed_total,
            "checkout": original.id,
        },
        occurred_at=ctx.occurred_at(ev),
        source=ctx.source,
        points_delta=-taken,
        pending_delta=-pending_cancelled,
        event_id=ev.id,
        dedup_key=f"refund:{program.id}:{tx}:{number}",
    )
    return ctx.finish(activity, account, program)


# -- manual points ----------------------------------------------------------------------------------


def handle_point_add(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    points = require_int(ev.data, "points", minimum=1, maximum=MAX_POINTS)
    expires_at = None
    if ev.data.get("expires_at") is not None:
        try:
            expires_at = parse_datetime(ev.data["expires_at"])
        except FieldValueError as exc:
            raise InvalidInput(f"data.expires_at: {exc}", code="invalid_event_data") from exc
    elif (days := optional_int(ev.data, "expires_in_days", minimum=1, maximum=36_500)) is not None:
        expires_at = ctx.occurred_at(ev) + timedelta(days=days)
    account = ctx.opted_in_account(ev, program)
    activity = record_earning(
        ctx.uow,
        account,
        program,
        type="point_add",
        points=points,
        occurred_at=ctx.occurred_at(ev),
        data=ev.data,
        expires_at=expires_at,
        source=ctx.source,
        event_id=ev.id,
    )
    # An explicit expiry in the past makes the points expire at once, in this same transaction.
    if expires_at is not None and to_epoch(expires_at) <= ctx.now_epoch:
        from perkflow.ledger.service import settle_account

        settle_account(ctx.uow, account, program)
    return ctx.finish(activity, account, program)


def handle_point_subtract(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    points = require_int(ev.data, "points", minimum=1, maximum=MAX_POINTS)
    account = ctx.opted_in_account(ev, program)
    activity = record_spend(
        ctx.uow,
        account,
        type="point_subtract",
        points=points,
        occurred_at=ctx.occurred_at(ev),
        data=ev.data,
        source=ctx.source,
        event_id=ev.id,
    )
    return ctx.finish(activity, account, program)


def handle_birthday(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    account = ctx.opted_in_account(ev, program)
    plan, once_key = _earning(ctx, ev, program)
    activity = _record_earning_event(ctx, ev, program, account, data=ev.data, plan=plan, dedup_key=once_key)
    return ctx.finish(activity, account, program)


def handle_reward_claim(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    from perkflow.rewards.service import claim_reward

    reward_id = require_str(ev.data, "reward_id", max_length=64)
    free = ev.data.get("free", False)
    if not isinstance(free, bool):
        raise InvalidInput("data.free must be true or false", code="invalid_event_data")
    activity = claim_reward(
        ctx.uow,
        member_id=ev.customer,
        reward_id=reward_id,
        free=free,
        source=ctx.source,
        event_id=ev.id,
        occurred_at=ctx.occurred_at(ev),
    )
    tier = program.ladder.get(ctx.accounts.get(ev.customer, activity.program_id or program.id).tier_id)  # type: ignore[union-attr]
    activity.effects["tier"] = tier.name if tier else None
    return activity


def handle_custom(ctx: IngestContext, ev: EventIn, program: ProgramConfig) -> Activity:
    event_type = ctx.uow.component(EventTypeCatalog).get(ev.action)
    assert event_type is not None
    data = validate_attributes(event_type["attributes"], ev.data)
    account = ctx.opted_in_account(ev, program)
    plan, once_key = _earning(
        ctx, EventIn(ev.customer, ev.action, data, ev.id, ev.program, ev.occurred_at), program
    )
    activity = _record_earning_event(ctx, ev, program, account, data=data, plan=plan, dedup_key=once_key)
    return ctx.finish(activity, account, program)


HANDLERS: dict[str, Handler] = {
    "opt_in": handle_opt_in,
    "opt_out": handle_opt_out,
    "profile": handle_profile,
    "checkout": handle_checkout,
    "checkout_accept": handle_checkout_accept,
    "checkout_reject": handle_checkout_reject,
    "refund": handle_refund,
    "point_add": handle_point_add,
    "point_subtract": handle_point_subtract,
    "birthday": handle_birthday,
    "reward_claim": handle_reward_claim,
}
