"""Connectors to customer engagement platforms, each behind the small interface in `base`."""

from __future__ import annotations

from perkflow.connectors.base import Connector


def connector_class(kind: str) -> type[Connector]:
    """The connector for an integration kind (braze, bloomreach, webhook)."""
    from perkflow.connectors.bloomreach.connector import BloomreachConnector
    from perkflow.connectors.braze.connector import BrazeConnector
    from perkflow.connectors.webhook.connector import WebhookConnector

    registry: dict[str, type[Connector]] = {
        "braze": BrazeConnector,
        "bloomreach": BloomreachConnector,
        "webhook": WebhookConnector,
    }
    return registry[kind]


KINDS = ("braze", "bloomreach", "webhook")
