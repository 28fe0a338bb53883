"""Braze: attributes and custom events through POST /users/track."""
