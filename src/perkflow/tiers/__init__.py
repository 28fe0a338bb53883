"""Tiers: ordered thresholds on points earned, evaluated after every change of qualifying points."""
