"""Cross-cutting building blocks: settings, database access, unit of work, ids, clock, errors."""
