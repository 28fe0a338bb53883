"""The scripted day: each step sends events the way a shop would, then checks what Perkflow did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from perkflow.core import transactions
from perkflow.core.clock import ManualClock, to_epoch
from perkflow.core.context import AppContext
from perkflow.core.errors import PerkflowError
from perkflow.demo.program import DEMO_PROGRAM_ID
from perkflow.events.service import EventOutcome, ingest
from perkflow.ledger.accounts import AccountRepository
from perkflow.ledger.service import settle_due_accounts
from perkflow.programs.service import ProgramCatalog
from perkflow.rewards.service import claim_reward
from perkflow.sync.worker import DeliveryWorker

if TYPE_CHECKING:
    from perkflow.demo.platforms import Platforms


@dataclass
class StepResult:
    at: datetime
    title: str
    ok: bool
    detail: str


@dataclass
class Day:
    """Runs steps against a context whose clock the script moves through the day."""

    ctx: AppContext
    clock: ManualClock
    day: date
    results: list[StepResult] = field(default_factory=list)
    coupons: dict[str, str] = field(default_factory=dict)

    def at(self, hhmm: str) -> datetime:
        hour, minute = map(int, hhmm.split(":"))
        moment = datetime(
            self.day.year, self.day.month, self.day.day, hour, minute, tzinfo=self.clock.now().tzinfo
        )
        self.clock.set(moment)
        return moment

    def send(self, *events: dict[str, Any]) -> list[EventOutcome]:
        return transactions.run(self.ctx, lambda uow: ingest(uow, list(events), source="api"))

    def standing(self, member_id: str) -> dict[str, Any]:
        def work(uow: Any) -> dict[str, Any]:
            account = uow.component(AccountRepository).get(member_id, DEMO_PROGRAM_ID)
            program = uow.component(ProgramCatalog).get(DEMO_PROGRAM_ID)
            points = account.points
            epoch = to_epoch(uow.now)
            tier = program.ladder.get(account.tier_id)
            return {
                "balance": points.spendable(epoch),
                "pending": points.pending,
                "earned": points.earned,
                "expired": points.expired,
                "tier": tier.name if tier else None,
                "opted_in": account.opted_in,
            }

        return transactions.run(self.ctx, work, write=False)

    def check(self, when: str, title: str, action: Callable[[], str]) -> None:
        moment = self.at(when)
        try:
            detail = action()
            self.results.append(StepResult(moment, title, True, detail))
        except (AssertionError, PerkflowError) as exc:
            message = exc.message if isinstance(exc, PerkflowError) else str(exc)
            self.results.append(StepResult(moment, title, False, message))


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def accepted(outcome: EventOutcome) -> dict[str, Any]:
    if outcome.status != "accepted" or outcome.activity is None:
        reason = outcome.error.message if outcome.error else outcome.status
        raise AssertionError(f"event was {outcome.status}: {reason}")
    return outcome.activity.effects


def run_day(
    ctx: AppContext, clock: ManualClock, day: date, platforms: Platforms | None = None
) -> list[StepResult]:
    d = Day(ctx, clock, day)
    birthday = date(1990, day.month, day.day if (day.month, day.day) != (2, 29) else 28)

    def ana_joins() -> str:
        effects = accepted(
            d.send(
                {
                    "customer": "ana",
                    "action": "opt_in",
                    "data": {
                        "email": "ana@example.com",
                        "first_name": "Ana",
                        "last_name": "Lopez",
                        "birth_date": "1988-05-02",
                        "favourite_store": "Lyon",
                    },
                }
            )[0]
        )
        s = d.standing("ana")
        expect(effects["points"] == 5 and s["tier"] == "Bronze", f"expected 5 points and Bronze, got {s}")
        return "+5 welcome points, tier Bronze"

    def others_join() -> str:
        outcomes = d.send(
            {
                "customer": "ben",
                "action": "opt_in",
                "data": {"email": "ben@example.com", "first_name": "Ben"},
            },
            {
                "customer": "chloe",
                "action": "opt_in",
                "data": {
                    "email": "chloe@example.com",
                    "first_name": "Chloé",
                    "birth_date": birthday.isoformat(),
                },
            },
        )
        for outcome in outcomes:
            accepted(outcome)
        return "Ben and Chloé opted in (bulk request of 2), +5 points each"

    def dan_history() -> str:
        long_ago = d.clock.now() - timedelta(days=400)
        outcomes = d.send(
            {
                "customer": "dan",
                "action": "opt_in",
                "data": {"email": "dan@example.com", "first_name": "Dan"},
                "occurred_at": long_ago.isoformat(),
            },
            {
                "customer": "dan",
                "action": "point_add",
                "data": {"points": 40, "reason": "store opening"},
                "occurred_at": (long_ago + timedelta(days=30)).isoformat(),
            },
        )
        for outcome in outcomes:
            accepted(outcome)
        return "imported Dan's history: joined 400 days ago, 40 points 370 days ago (expiry: 365 days)"

    def ana_buys() -> str:
        effects = accepted(
            d.send(
                {
                    "customer": "ana",
                    "action": "checkout",
                    "id": "pos-1001",
                    "data": {
                        "transaction_id": "T-1001",
                        "total": 4250,
                        "currency": "EUR",
                        "channel": "store",
                        "store": "Lyon",
                        "items": [{"product_id": "espresso-beans", "quantity": 2, "price": 2125}],
                    },
                }
            )[0]
        )
        expect(effects["points"] == 42, f"expected 42 points, got {effects['points']}")
        expect(effects.get("tier") == "Silver", f"expected Silver, got {effects.get('tier')}")
        return "EUR 42.50 in store -> +42 points, balance 47, tier up Bronze -> Silver"

    def pos_retry() -> str:
        outcome = d.send(
            {
                "customer": "ana",
                "action": "checkout",
                "data": {"transaction_id": "T-1001", "total": 4250, "currency": "EUR", "channel": "store"},
            }
        )[0]
        expect(outcome.status == "duplicate", f"expected a duplicate, got {outcome.status}")
        expect(d.standing("ana")["balance"] == 47, "the retry changed the balance")
        return "same transaction_id again -> original result returned, balance still 47"

    def ben_orders_online() -> str:
        effects = accepted(
            d.send(
                {
                    "customer": "ben",
                    "action": "checkout",
                    "data": {"transaction_id": "W-2001", "total": 6000, "channel": "online"},
                }
            )[0]
        )
        s = d.standing("ben")
        expect(effects["pending"] and s["pending"] == 72 and s["balance"] == 5, f"unexpected standing {s}")
        return "EUR 60 online -> 72 points pending until delivery (visible, not spendable)"

    def ben_delivered() -> str:
        effects = accepted(
            d.send({"customer": "ben", "action": "checkout_accept", "data": {"transaction_id": "W-2001"}})[0]
        )
        s = d.standing("ben")
        expect(effects["points"] == 72 and s["balance"] == 77 and s["tier"] == "Gold", f"unexpected {s}")
        return "order delivered -> 72 points confirmed, balance 77, tier up -> Gold"

    def ana_reviews() -> str:
        effects = accepted(
            d.send(
                {
                    "customer": "ana",
                    "action": "review_written",
                    "data": {"product_id": "espresso-beans", "rating": 5},
                }
            )[0]
        )
        s = d.standing("ana")
        expect(effects["points"] == 5 and s["tier"] == "Gold", f"unexpected {s}")
        return "custom event review_written -> +5 points, 52 earned, tier up -> Gold"

    def ana_claims() -> str:
        activity = transactions.run(
            ctx,
            lambda uow: claim_reward(
                uow, member_id="ana", reward_id="rew_coffee", idempotency_key="demo-claim-ana-coffee"
            ),
        )
        code = activity.data["coupon_code"]
        expect(bool(code) and code.startswith("COFFEE-"), f"no coupon handed out: {activity.data}")
        s = d.standing("ana")
        expect(s["balance"] == 22 and s["tier"] == "Gold", f"unexpected {s}")
        d.coupons["ana"] = code
        return f"claimed Free coffee for 30 points -> coupon {code}, balance 22, tier stays Gold"

    def chloe_birthday() -> str:
        first = accepted(d.send({"customer": "chloe", "action": "birthday"})[0])
        second = accepted(d.send({"customer": "chloe", "action": "birthday"})[0])
        s = d.standing("chloe")
        expect(first["points"] == 25 and second["points"] == 0 and s["tier"] == "Silver", f"unexpected {s}")
        return "birthday -> +25 points (a second birthday event this year earns nothing), tier up -> Silver"

    def ana_refund() -> str:
        effects = accepted(
            d.send(
                {"customer": "ana", "action": "refund", "data": {"transaction_id": "T-1001", "amount": 2000}}
            )[0]
        )
        s = d.standing("ana")
        expect(effects["points"] == -19 and s["balance"] == 3 and s["tier"] == "Silver", f"unexpected {s}")
        return "EUR 20 of T-1001 refunded -> 19 points clawed back, balance 3, tier down Gold -> Silver"

    def expiry_job() -> str:
        settled = settle_due_accounts(ctx)
        s = d.standing("dan")
        expect(settled >= 1 and s["expired"] == 45 and s["balance"] == 0, f"unexpected {s}")
        return f"expiry job: {settled} account(s) settled, Dan's 45 points from last year expired"

    def ben_overspends() -> str:
        outcome = d.send({"customer": "ben", "action": "point_subtract", "data": {"points": 500}})[0]
        expect(
            outcome.status == "rejected"
            and outcome.error is not None
            and outcome.error.code == "insufficient_points",
            f"expected a rejection, got {outcome.status}",
        )
        expect(d.standing("ben")["balance"] == 77, "balance changed")
        return "subtracting 500 points is refused (insufficient_points); nothing written"

    def ana_cancels_order() -> str:
        outcomes = d.send(
            {
                "customer": "ana",
                "action": "checkout",
                "data": {"transaction_id": "W-2002", "total": 3000, "channel": "online"},
            },
            {"customer": "ana", "action": "checkout_reject", "data": {"transaction_id": "W-2002"}},
        )
        accepted(outcomes[0])
        effects = accepted(outcomes[1])
        s = d.standing("ana")
        expect(effects["pending_cancelled"] == 36 and s["pending"] == 0, f"unexpected {s}")
        return "online order of EUR 30 cancelled -> its 36 pending points are cancelled"

    def unknown_member() -> str:
        outcome = d.send(
            {"customer": "zoe", "action": "checkout", "data": {"transaction_id": "T-9", "total": 100}}
        )[0]
        expect(
            outcome.status == "rejected"
            and outcome.error is not None
            and outcome.error.code == "member_not_found",
            f"got {outcome.status}",
        )
        return "checkout for an unknown member is refused (member_not_found)"

    def chloe_leaves() -> str:
        accepted(d.send({"customer": "chloe", "action": "opt_out"})[0])
        expect(not d.standing("chloe")["opted_in"], "still opted in")
        return "Chloé opted out; her points are kept but frozen"

    def workflows_installed() -> str:
        from perkflow.demo.workflows import install_demo_workflows

        installed = transactions.run(ctx, install_demo_workflows)
        expect(all(w["status"] == "active" for w in installed), f"not all active: {installed}")
        return "templates " + ", ".join(w["name"] for w in installed) + ": installed inactive, then activated"

    def birthday_workflow() -> str:
        from perkflow.workflows.scheduler import run_date_triggers
        from perkflow.workflows.service import list_runs

        walked = run_date_triggers(ctx)
        found = transactions.run(ctx, lambda uow: list_runs(uow, member_id="chloe", limit=20)[0], write=False)
        gifts = [r for r in found if "gift" in r["results"] and r["results"]["gift"].get("coupon")]
        expect(len(gifts) == 1, f"expected one birthday gift for Chloé, runs: {found}")
        code = gifts[0]["results"]["gift"]["coupon"]["code"]
        d.coupons["chloe"] = code
        expect(d.standing("chloe")["balance"] == 5, "the gift was not free")
        return (
            f"the noon run walked {walked} members; Chloé (birthday today) got a Free coffee for free, "
            f"coupon {code}; the others did not pass the birthday filter"
        )

    d.check("07:30", "The seed workflows are installed", workflows_installed)
    d.check("08:05", "Ana joins the program", ana_joins)
    d.check("08:10", "Ben and Chloé join", others_join)
    d.check("08:15", "Dan's history is imported", dan_history)
    d.check("09:30", "Ana buys coffee beans", ana_buys)
    d.check("09:31", "The till retries the same sale", pos_retry)
    d.check("10:00", "Ben orders online", ben_orders_online)
    d.check("11:00", "Ben's parcel arrives", ben_delivered)
    d.check("11:30", "Ana reviews the beans", ana_reviews)
    d.check("12:00", "Ana claims a free coffee", ana_claims)
    d.check("12:30", "The birthday workflow runs", birthday_workflow)
    d.check("13:00", "It is Chloé's birthday", chloe_birthday)
    d.check("14:00", "Ana returns part of her purchase", ana_refund)
    d.check("16:00", "The nightly expiry job runs", expiry_job)
    d.check("17:00", "Ben tries to spend too much", ben_overspends)
    d.check("18:00", "Ana cancels an online order", ana_cancels_order)
    d.check("18:30", "A typo in a member id", unknown_member)

    def deliver_queued() -> None:
        worker = DeliveryWorker(ctx)
        try:
            worker.drain()
        finally:
            worker.close()

    def platforms_synced() -> str:
        assert platforms is not None
        deliver_queued()
        ana = platforms.braze.user("ana")
        expect(ana is not None, "Braze has no profile for ana")
        assert ana is not None
        attrs = ana["attributes"]
        expect(
            attrs.get("loyalty_tier") == "Silver" and attrs.get("loyalty_points") == 3, f"Braze shows {attrs}"
        )
        names = [e["name"] for e in ana["events"]]
        expect(
            names.count("loyalty_reward_claim") == 1 and "loyalty_tier_down" in names, f"Braze events {names}"
        )
        claim = next(e for e in ana["events"] if e["name"] == "loyalty_reward_claim")
        expect(
            claim["properties"].get("coupon_code") == d.coupons.get("ana"),
            "the coupon code did not reach Braze",
        )
        customer = platforms.bloomreach.customer("ana@example.com")
        expect(
            customer is not None and customer["properties"].get("loyalty_tier") == "Silver",
            f"Bloomreach shows {customer}",
        )
        dan = platforms.bloomreach.customer("dan@example.com")
        expect(
            dan is not None and any(e["event_type"] == "loyalty_points_expired" for e in dan["events"]),
            "Bloomreach did not get Dan's expiry",
        )
        return (
            f"Braze: {len(platforms.braze.users())} profiles, {len(platforms.braze.events())} events; "
            f"Bloomreach: {len(platforms.bloomreach.customers())} customers, "
            f"{len(platforms.bloomreach.events())} events"
        )

    def workflows_on_platforms() -> str:
        assert platforms is not None
        deliver_queued()
        ana = platforms.braze.user("ana")
        chloe = platforms.braze.user("chloe")
        expect(ana is not None and chloe is not None, "Braze lacks a profile")
        assert ana is not None and chloe is not None
        names = [e["name"] for e in ana["events"]]
        for name in ("loyalty_welcome", "loyalty_tier_upgrade", "loyalty_reward_claimed"):
            expect(name in names, f"Braze has no {name} for ana: {names}")
        claimed = next(e for e in ana["events"] if e["name"] == "loyalty_reward_claimed")
        expect(
            claimed["properties"].get("coupon_code") == d.coupons.get("ana"),
            "wrong coupon in the claim event",
        )
        attributes = ana["attributes"]
        # Ana's last purchase is the online order of 18:00 (no store), after the beans bought in Lyon.
        expect(
            attributes.get("last_purchase_amount") == 3000 and "last_purchase_store" not in attributes,
            f"Braze last purchase attributes: {attributes}",
        )
        gift = next((e for e in chloe["events"] if e["name"] == "loyalty_birthday_reward"), None)
        expect(
            gift is not None and gift["properties"].get("coupon_code") == d.coupons.get("chloe"), "no gift"
        )
        for email, name in (
            ("ana@example.com", "loyalty_tier_upgrade"),
            ("chloe@example.com", "loyalty_birthday_reward"),
        ):
            customer = platforms.bloomreach.customer(email)
            types = [e["event_type"] for e in customer["events"]] if customer else []
            expect(name in types, f"Bloomreach has no {name} for {email}: {types}")
        bloom_ana = platforms.bloomreach.customer("ana@example.com")
        assert bloom_ana is not None
        expect(
            bloom_ana["properties"].get("last_purchase_amount") == 3000, "Bloomreach lacks the last purchase"
        )
        return (
            "welcome, tier upgrade to Gold, reward claim (with its coupon) and birthday events, and the "
            "last purchase attributes, are on both platforms"
        )

    d.check("19:00", "Chloé leaves the program", chloe_leaves)
    if platforms is not None:
        d.check("20:00", "Braze and Bloomreach are up to date", platforms_synced)
        d.check("20:05", "The workflows reached both platforms", workflows_on_platforms)
    return d.results
