"""Members: profiles, typed custom fields from the field catalogue, and external identities."""
