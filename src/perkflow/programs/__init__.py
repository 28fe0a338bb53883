"""Loyalty programs: earning rules, expiry policy, tier basis; several programs can share one installation."""
