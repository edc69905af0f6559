"""Names of the topics a worker derives from its app id (the configured ones are in settings)."""

from __future__ import annotations


def tick_topic_name(app_id: str, stage: str) -> str:
    """A stateful stage's deadline topic (see streams/runner.py)."""
    return f"{app_id}.{stage}.ticks"


def changelog_topic_name(app_id: str, stage: str) -> str:
    """A stateful stage's table changelog."""
    return f"{app_id}.{stage}.state-changelog"
