from __future__ import annotations

from collections.abc import Callable

from cartstream.services.settings import Settings
from cartstream.services.topics import ensure_topics


def test_topics_get_their_partition_counts(broker_settings: Callable[..., Settings]) -> None:
    settings = broker_settings()
    counts = ensure_topics(settings)
    assert counts[settings.topics.frames] >= 8
    assert counts[settings.topics.weights] >= 8
    assert counts == settings.topics.all_topics()
    assert ensure_topics(settings) == counts  # idempotent
