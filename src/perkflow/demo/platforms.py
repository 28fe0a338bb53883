"""The demo's engagement platforms: the Braze and Bloomreach sandboxes, connected as a brand would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.sandbox.bloomreach import BloomreachSandbox, BloomreachSandboxConfig
from perkflow.sandbox.bloomreach import create_app as bloomreach_app
from perkflow.sandbox.braze import BrazeSandbox, BrazeSandboxConfig
from perkflow.sandbox.braze import create_app as braze_app
from perkflow.sandbox.server import ServerThread
from perkflow.sync import integrations

BRAZE_FIELDS = [
    ("email", "email"),
    ("first_name", "first_name"),
    ("tier", "loyalty_tier"),
    ("points_balance", "loyalty_points"),
    ("points_pending", "loyalty_pending_points"),
    ("opted_in", "loyalty_member"),
    ("opted_in_at", "loyalty_joined_at"),
    ("favourite_store", "favourite_store"),
]
BLOOMREACH_FIELDS = [
    ("tier", "loyalty_tier"),
    ("points_balance", "loyalty_points"),
    ("opted_in_at", "loyalty_joined_at"),
]
BRAZE_EVENTS = [
    {"type": "opt_in", "name": "loyalty_opt_in"},
    {"type": "tier_up", "name": "loyalty_tier_up"},
    {"type": "tier_down", "name": "loyalty_tier_down"},
    {"type": "reward_claim", "name": "loyalty_reward_claim"},
]
BLOOMREACH_EVENTS = [
    {"type": "tier_up", "name": "loyalty_tier_up"},
    {"type": "reward_claim", "name": "loyalty_reward_claim"},
    {"type": "points_expired", "name": "loyalty_points_expired"},
]


@dataclass
class Platforms:
    braze: BrazeSandbox
    bloomreach: BloomreachSandbox
    braze_server: ServerThread
    bloomreach_server: ServerThread

    def stop(self) -> None:
        self.braze_server.stop()
        self.bloomreach_server.stop()


def start_platforms() -> Platforms:
    braze = BrazeSandbox(BrazeSandboxConfig())
    bloomreach = BloomreachSandbox(BloomreachSandboxConfig())
    return Platforms(
        braze,
        bloomreach,
        ServerThread(braze_app(braze)).start(),
        ServerThread(bloomreach_app(bloomreach)).start(),
    )


def connect_platforms(ctx: AppContext, platforms: Platforms) -> None:
    """Connect both sandboxes (the credentials are checked with real calls), map fields, pick events."""
    braze_credentials = integrations.check_credentials(
        "braze",
        {"instance_url": platforms.braze_server.url, "app_id": "demo-app"},
        {"api_key": "braze-key"},
    )
    bloomreach_credentials = integrations.check_credentials(
        "bloomreach",
        {
            "base_url": platforms.bloomreach_server.url,
            "project_token": "test-project",
            "hard_id": "registered",
            "hard_id_field": "email",
        },
        {"api_key_id": "key-id", "api_secret": "key-secret"},
    )

    def work(uow: Any) -> None:
        braze = integrations.connect(
            uow, braze_credentials, name="Braze (sandbox)", settings={"events": BRAZE_EVENTS}
        )
        integrations.set_mappings(uow, braze.id, BRAZE_FIELDS)
        bloomreach = integrations.connect(
            uow, bloomreach_credentials, name="Bloomreach (sandbox)", settings={"events": BLOOMREACH_EVENTS}
        )
        integrations.set_mappings(uow, bloomreach.id, BLOOMREACH_FIELDS)

    transactions.run(ctx, work)
