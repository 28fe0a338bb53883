"""The events API: inbound member events (Antavo-shaped), their handlers and custom event types."""
