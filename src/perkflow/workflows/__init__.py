"""Workflows: graphs of a trigger, filters and actions that reward members and drive CEP syncs."""
