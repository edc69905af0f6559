from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from cartstream.core.settings import Settings
from cartstream.exceptions import BrokerError
from cartstream.services.kafka.topics import (
    check_stream_partitions,
    ensure_tick_topics,
    ensure_topics,
    tick_topic_name,
)


def test_topics_get_their_partition_counts(broker_settings: Callable[..., Settings]) -> None:
    settings = broker_settings()
    counts = ensure_topics(settings)
    assert counts[settings.topics.frames] >= 8
    assert counts[settings.topics.weights] >= 8
    assert counts == settings.topics.all_topics()
    assert ensure_topics(settings) == counts  # idempotent


def test_tick_topics_are_co_partitioned_with_the_streams(
    broker_settings: Callable[..., Settings],
) -> None:
    settings = broker_settings()
    counts = ensure_tick_topics(settings, ["reason", "reconcile"])
    assert counts == {
        tick_topic_name(settings.app_id, "reason"): settings.topics.stream_partitions,
        tick_topic_name(settings.app_id, "reconcile"): settings.topics.stream_partitions,
    }


def test_a_tick_topic_with_the_wrong_partition_count_is_refused(
    broker_settings: Callable[..., Settings],
) -> None:
    settings = broker_settings()
    ensure_topics(settings, {tick_topic_name(settings.app_id, "reason"): 3})
    with pytest.raises(BrokerError, match="must have 8 partitions"):
        ensure_tick_topics(settings, ["reason"])


def test_a_worker_without_a_stateful_role_wants_no_tick_topic(
    broker_settings: Callable[..., Settings],
) -> None:
    settings = broker_settings()
    ensure_topics(settings)  # the cluster has topics: none of them is asked for
    assert ensure_tick_topics(settings, []) == {}


def test_a_cart_stream_with_another_partition_count_is_refused(
    broker_settings: Callable[..., Settings],
) -> None:
    """Detections go to their frame's partition number and reason reads a cart's streams side
    by side: a worker does not start on streams of different sizes."""
    tag = uuid.uuid4().hex[:8]
    names = ("frames", "weights", "sessions", "detections", "basket_changes", "reviews")
    settings = broker_settings(topics={n: f"{n}-{tag}" for n in names})
    assert sorted(settings.topics.streams()) == sorted(f"{n}-{tag}" for n in names)
    partitions = settings.topics.stream_partitions
    ensure_topics(settings, {settings.topics.frames: partitions})
    assert check_stream_partitions(settings) == {settings.topics.frames: partitions}  # rest absent
    ensure_topics(settings, {settings.topics.detections: partitions // 2})
    with pytest.raises(BrokerError, match=f"detections-{tag} has {partitions // 2}"):
        check_stream_partitions(settings)
