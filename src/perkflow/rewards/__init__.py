"""Rewards: a catalogue of things members spend points on, with optional coupon pools."""
