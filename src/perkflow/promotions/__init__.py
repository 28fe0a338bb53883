"""Promotions: campaigns of unique codes, gift and loyalty cards, referrals, publications and redemptions."""
