"""The activity stream: every state change as an immutable record; sync, workflows and segments consume it."""
