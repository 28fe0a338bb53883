"""Signed outbound webhooks: one JSON envelope per selected activity, Punchh-adapter style."""
