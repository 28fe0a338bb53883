"""Segments: rule-based groups kept up to date as members change, and static groups filled by API."""
