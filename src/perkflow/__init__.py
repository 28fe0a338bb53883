"""Perkflow: a self-hosted loyalty and promotions engine that syncs loyalty data into Braze and Bloomreach."""

__version__ = "0.1.0"
