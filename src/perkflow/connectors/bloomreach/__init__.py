"""Bloomreach Engagement: customer properties and events through the Tracking API's batch route."""
