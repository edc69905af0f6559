"""A stateful stage's changelog (streams/changelog.py): recovery keeps each key's most advanced
state, not the last written, and where two owners' states are not comparable it reads again,
from the kept state's progress, what the other owner applied (never skips it)."""

from __future__ import annotations

from typing import Any

from cartstream.streams.changelog import (
    PROGRESS_FIELD,
    Replays,
    behind,
    keep_most_advanced,
    progress_of,
)


class Event:
    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = key, value


class RecoveringTable:
    """A table as Faust recovers it: each changelog record applied in order, the last wins."""

    name = "reason-state"

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply_changelog_batch(self, batch: list[Event]) -> None:
        for event in batch:
            if event.value is None:
                self.data.pop(event.key, None)
            else:
                self.data[event.key] = event.value


def _state(weights: int, sessions: int | None, closing: bool) -> dict[str, Any]:
    progress = {"cart.weights": weights}
    if sessions is not None:
        progress["cart.sessions"] = sessions
    return {"pending": "CHECKOUT_REQUESTED" if closing else None, PROGRESS_FIELD: progress}


def test_recovery_keeps_the_most_advanced_state_not_the_last_written() -> None:
    """The chaos run of 2026-12-04: two owners wrote one session's states within a second and
    the older (no checkout request, packets to 167) landed after the newer (packets to 241 and
    the request); recovery must keep the newer one, whose inputs are committed."""
    table = RecoveringTable()
    keep_most_advanced(table)
    table.apply_changelog_batch([Event("s", _state(99, None, False))])
    table.apply_changelog_batch(
        [
            Event("s", _state(102, 2358, True)),
            Event("s", _state(164, None, False)),  # the other owner, catching up: not comparable
            Event("s", _state(241, 2358, True)),
            Event("s", _state(167, None, False)),  # late, and behind: skipped
        ]
    )
    assert table.data["s"][PROGRESS_FIELD] == {"cart.weights": 241, "cart.sessions": 2358}
    table.apply_changelog_batch([Event("s", _state(160, 2358, True))])  # behind again: skipped
    assert table.data["s"][PROGRESS_FIELD]["cart.weights"] == 241
    table.apply_changelog_batch([Event("s", _state(250, 2358, True))])  # further on: applied
    assert table.data["s"][PROGRESS_FIELD]["cart.weights"] == 250
    table.apply_changelog_batch([Event("s", None), Event("t", _state(1, None, False))])
    assert "s" not in table.data and table.data["t"]  # tombstones apply as Faust applies them


def _two_inputs(weights: int, detections: int) -> dict[str, Any]:
    return {
        "_partition": 5,
        PROGRESS_FIELD: {"cart.weights": weights, "cart.detections": detections},
    }


def test_incomparable_states_are_kept_with_what_the_other_applied_read_again() -> None:
    """Issue 38, window 3: a zombie's state {weights 241, detections 50} and the new owner's
    {weights 167, detections 60}, weights committed at 242. The old rule kept the last written
    and nothing else: restored after the new owner's, the zombie's state lacked detections
    51..60, committed by the new owner, for good."""
    for first, last, replayed in [
        (_two_inputs(167, 60), _two_inputs(241, 50), ("cart.detections", 51)),
        (_two_inputs(241, 50), _two_inputs(167, 60), ("cart.weights", 168)),
    ]:
        table, replays = RecoveringTable(), Replays()
        keep_most_advanced(table, replays)
        table.apply_changelog_batch([Event("s", first), Event("s", last)])
        assert table.data["s"] is last  # the last wins, as Faust applies it ...
        topic, offset = replayed  # ... and what the other had applied is read again
        assert len(replays) == 1 and replays.take(topic, 5) == offset
        assert replays.take(topic, 5) is None  # taken once


def test_comparable_states_read_nothing_again() -> None:
    table, replays = RecoveringTable(), Replays()
    keep_most_advanced(table, replays)
    table.apply_changelog_batch(
        [Event("s", _two_inputs(100, 10)), Event("s", _two_inputs(120, 10)), Event("s", None)]
    )
    table.apply_changelog_batch([Event("s", _two_inputs(1, 1))])  # after its tombstone
    assert len(replays) == 0


def test_replays_keep_the_earliest_offset_per_partition() -> None:
    replays = Replays()
    replays.need("w", 1, 40)
    replays.need("w", 1, 30)
    replays.need("w", 2, 50)
    assert replays.take("w", 1) == 30 and replays.take("w", 2) == 50


def test_progress_ordering() -> None:
    assert behind({"a": 1}, {"a": 2})
    assert behind({"a": 1}, {"a": 1, "b": 0})
    assert not behind({"a": 2}, {"a": 2})  # equal: the last wins, as before
    assert not behind({"a": 3, "b": 0}, {"a": 2, "b": 5})  # not comparable
    assert not behind({"a": 1}, {})  # a record from before progress never wins by it
    assert progress_of(None) == {} and progress_of({"x": 1}) == {}
