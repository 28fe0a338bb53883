"""Fixtures for sync tests: the Braze and Bloomreach sandboxes and a webhook receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from perkflow.core.context import AppContext
from perkflow.sandbox.server import ServerThread
from perkflow.sync.worker import DeliveryWorker
from tests.sync.receiver import Receiver


@pytest.fixture
def braze() -> Iterator[Any]:
    from perkflow.sandbox.braze import BrazeSandbox, BrazeSandboxConfig, create_app

    sandbox = BrazeSandbox(
        BrazeSandboxConfig(
            api_keys={
                "braze-key": {"users.track", "users.export.ids"},
                "no-track": {"users.export.ids"},
            }
        )
    )
    with ServerThread(create_app(sandbox)) as server:
        sandbox.url = server.url
        yield sandbox


@pytest.fixture
def bloomreach() -> Iterator[Any]:
    from perkflow.sandbox.bloomreach import BloomreachSandbox, BloomreachSandboxConfig, create_app

    sandbox = BloomreachSandbox(
        BloomreachSandboxConfig(project_token="test-project", api_keys={"key-id": "key-secret"})
    )
    with ServerThread(create_app(sandbox)) as server:
        sandbox.url = server.url
        yield sandbox


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    with ServerThread(found.app()) as server:
        found.url = server.url + "/hook"  # type: ignore[attr-defined]
        yield found


@pytest.fixture
def worker(ctx: AppContext) -> Iterator[DeliveryWorker]:
    found = DeliveryWorker(ctx, timeout_s=5)
    yield found
    found.close()
