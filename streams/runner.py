"""Runs a `Stage` as a Faust agent: decode, validate, dead-letter, handle, publish, store state.

A stateful stage takes its inputs in batches (`take_events`, settings `stage_batch`), each
record handled in order against its key's latest state. Order of effects per batch
(at-least-once without transactions):
1. every output of the batch is published and the acks awaited;
2. only then each key the batch touched has its latest state put in the table, and a snapshot
   of it queued for the changelog (changelog.py: written once per key per commit, before the
   commit);
3. Faust commits the batch's input offsets after that.
A crash between any two steps re-delivers the batch; stages skip what their state says they
applied, and every output id is derived from its inputs, so downstream dedupe absorbs repeats.
A sink takes its inputs one at a time (`sink_runner.py`); both share `input_runner.py`.

Deadlines (a checkout waiting for its last weight packet, a review that never came) cannot write
a Faust table from a timer, so a timer sends a `tick` for the key to the stage's own tick topic
(same partition as the key's state), and the agent handles it like any input. A tick is sent
only once the stage has processed what its inputs hold on that partition (backlog.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import faust

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.core.telemetry import current_traceparent
from cartstream.core.topics import changelog_topic_name, tick_topic_name
from cartstream.streams.app import group_id
from cartstream.streams.backlog import Backlog, Ends, tick_ends, tick_sent_ms, tick_value
from cartstream.streams.changelog import (
    PROGRESS_FIELD,
    ChangelogWrites,
    Replays,
    keep_most_advanced,
    progress_of,
)
from cartstream.streams.checkpoint import checkpoint_of
from cartstream.streams.input_runner import InputRunner, read_again_on_error
from cartstream.streams.publish import Publisher, inbound_from, record_processed
from cartstream.streams.runtime.faust_compat.log_holes import watch_changelog_tails
from cartstream.streams.stage import Inbound, Outbound, Stage
from cartstream.streams.tracing import record_span
from cartstream.streams.upstream import GroupProgress, Progress, UpstreamProgress

log = logging.getLogger(__name__)


PARTITION_FIELD = "_partition"
TICK_RESEND_MS = 5_000
TICK_STALE_MS = 2 * TICK_RESEND_MS  # a tick handled later than this was read again: ignored


class _Stored:
    """A table value: the stage's typed state, the partition its key's inputs come on (a tick
    goes there), and the changelog record of that state *as it was when stored*.

    Faust serialises a changelog record when its producer gets to it, which can be after the
    next input has already changed the (mutable) state. A record holding the live object could
    then carry effects whose outputs were not yet published, and after a crash the stage would
    skip the re-delivered input as applied while its outputs were never sent. So the record is
    a snapshot taken at `_store`, after the outputs were acknowledged; the live object serves
    the next input without being read back. A recovered value comes back as that dict and is
    loaded by `StageRunner._load`."""

    __slots__ = ("partition", "record", "state")

    def __init__(
        self,
        state: Any,
        partition: int,
        dump: Callable[[Any], dict[str, Any]],
        progress: dict[str, int],
    ) -> None:
        self.state = state
        self.partition = partition
        self.record = {**dump(state), PARTITION_FIELD: partition, PROGRESS_FIELD: progress}

    @classmethod
    def recovered(cls, state: Any, record: dict[str, Any]) -> _Stored:
        """A value read back from the changelog: the record is its own snapshot."""
        stored = cls.__new__(cls)
        stored.state, stored.record = state, record
        stored.partition = int(record.get(PARTITION_FIELD, 0))
        return stored

    def __json__(self) -> dict[str, Any]:
        return self.record


class _Pending:
    """What one batch did, held back until its outputs are acknowledged: every output in
    order, each touched key's latest state (None: forget it) with its input partition, and each
    touched key's progress (changelog.py), set when its stored state is first handed to the
    stage (which may change it in place: its keys are the ones a failed batch rolls back)."""

    def __init__(self) -> None:
        self.outputs: list[Outbound] = []
        self.states: dict[str, tuple[Any, int]] = {}
        self.progress: dict[str, dict[str, int]] = {}

    def advance(self, key: str, topic: str, offset: int) -> None:
        """The key's state has applied `topic`'s record at `offset`."""
        mine = self.progress.setdefault(key, {})
        mine[topic] = max(offset, mine.get(topic, -1))

    def add(self, outputs: Sequence[Outbound]) -> None:
        """Outputs made inside a record's span continue its trace once that span has ended."""
        if not outputs:
            return
        trace = current_traceparent()
        self.outputs += [
            replace(o, traceparent=trace) if o.traceparent is None and trace else o for o in outputs
        ]


def upstream_progress(app: faust.App, stage: Stage[Any], settings: Settings) -> dict[str, Progress]:
    """The progress of each stage upstream of `stage` on the topic it turns into this stage's
    inputs, named `<topic>@<stage>` (upstream.py): read in this worker where that stage runs,
    else asked of the broker for its group (`settings.upstream_groups`, else the group a worker
    running that role alone joins)."""
    found: dict[str, Progress] = {}
    named = getattr(stage, "upstream", None)
    for topic, name in (named() if named is not None else {}).items():
        group = settings.upstream_groups.get(name) or group_id(settings, (name,))
        progress = UpstreamProgress(app, settings, topic, name, group)
        app.timer(interval=GroupProgress.REFRESH_S, name=f"{stage.name}-upstream-{name}")(
            progress.refresh
        )
        found[f"{topic}@{name}"] = progress
    return found


class StageRunner(InputRunner):
    def __init__(
        self, app: faust.App, stage: Stage[Any], settings: Settings, publisher: Publisher
    ) -> None:
        self.stage = stage  # before the base class asks for `input_topics`
        super().__init__(app, stage, settings, publisher)
        partitions = settings.topics.stream_partitions
        self.tick_topic_name = tick_topic_name(settings.app_id, stage.name)
        self.max_batch = settings.stage_batch.max_size
        # the many records (a cart's packets and detections) most of which only change a
        # state: under `otel_record_spans="effects"` only those with an effect get a span
        self.span_every_record = settings.otel_record_spans == "all"
        self.busy_streams = frozenset((settings.topics.weights, settings.topics.detections))
        self.within_s = settings.stage_batch.max_wait_ms / 1000.0
        self.table: Any = None
        self.tick_topic: Any = None
        self.changelog: ChangelogWrites | None = None
        if stage.stateful:
            self.tick_topic = app.topic(
                self.tick_topic_name,
                partitions=partitions,
                value_serializer="raw",
                key_serializer="raw",
            )
            changelog = app.topic(
                changelog_topic_name(settings.app_id, stage.name),
                partitions=partitions,
                key_serializer="json",
                value_serializer="json",
                compacting=True,
            )
            self.table = app.Table(
                f"{stage.name}-state",
                default=None,
                partitions=partitions,
                changelog_topic=changelog,
                key_type=str,
                value_type=dict,
            )
            self.in_order.replays = Replays()
            keep_most_advanced(self.table, self.in_order.replays)
            self.changelog = ChangelogWrites(self.table)
            checkpoint_of(app, settings.tuning.session_timeout_s).writes.append(self.changelog)
            watch_changelog_tails(app)
            app.timer(interval=1.0, name=f"{stage.name}-deadlines")(self._send_ticks)
        self.topic = app.topic(*self.input_topics(), value_serializer="raw", key_serializer="raw")
        self._ticked: dict[str, int] = {}
        self.backlog = Backlog(
            app,
            stage.name,
            stage.inputs(),
            self.in_order.expected,
            upstream_progress(app, stage, settings),
        )
        self.in_order.agent = app.agent(self.topic, name=stage.name, concurrency=1)(self._run)

    def input_topics(self) -> list[str]:
        names = super().input_topics()
        if self.stage.stateful:
            names.append(tick_topic_name(self.settings.app_id, self.stage.name))
        return names

    async def _run(self, stream: faust.StreamT) -> None:
        log.info(
            "%s: consuming %s in batches of up to %d",
            self.stage.name,
            ", ".join(self.stage.inputs()),
            self.max_batch,
        )
        async for events in stream.take_events(self.max_batch, within=self.within_s):
            messages = [e.message for e in events]
            what = f"{self.stage.name}: a batch failed"  # its keys were rolled back
            await read_again_on_error(self.handle_batch(messages), self.in_order, messages, what)

    async def handle_batch(self, messages: Sequence[Any]) -> None:
        """Each record in order, inside its own `process <topic>` span, against its key's
        latest state; then the batch's outputs, acknowledged; then the touched keys' states.
        If anything fails first, every key the batch touched is as it was stored before it."""
        pending = _Pending()
        try:
            await self._apply_batch(messages, pending)
        except BaseException:
            self._roll_back(pending.progress.keys())
            raise
        for key, (state, partition) in pending.states.items():
            self._store(key, state, partition, pending.progress.get(key, {}))

    async def _apply_batch(self, messages: Sequence[Any], pending: _Pending) -> None:
        """The records through the stage, in order, and their outputs published."""
        for msg in messages:
            if not await self.in_order.admit(msg):  # commits need every partition in order
                continue
            if msg.topic == self.tick_topic_name:
                key = (msg.key or b"").decode()
                self._on_tick(key, msg.value, now_ms(), pending)
                if key in pending.states:
                    pending.advance(key, msg.topic, msg.offset)
                continue
            started = time.perf_counter()
            inbound = inbound_from(msg)
            if self.span_every_record or msg.topic not in self.busy_streams:
                with record_span(inbound, self.app.conf.id, self.stage.name) as span:
                    outputs, rejected = self._apply_record(inbound, msg.value, pending)
                    self._mark_letters(span, outputs)
                    pending.add(outputs)
            else:  # a span only for what a trace passes through, opened after the fact
                began, group = time.time_ns(), self.app.conf.id
                try:
                    outputs, rejected = self._apply_record(inbound, msg.value, pending)
                except Exception:
                    with record_span(inbound, group, self.stage.name, began):
                        raise  # recorded on the span, as the SDK records it on any span
                if outputs:
                    with record_span(inbound, group, self.stage.name, began) as span:
                        self._mark_letters(span, outputs)
                        pending.add(outputs)
            record_processed(self.stage.name, msg.topic, started, rejected)
        if pending.outputs:
            await self.publisher.publish(pending.outputs, self.stage.name)

    def _apply_record(
        self, inbound: Inbound, value: bytes, pending: _Pending
    ) -> tuple[list[Outbound], bool]:
        """One record decoded, validated and handled against its key's latest state: its
        outputs (a dead letter first), and whether it was rejected (not handled)."""
        now = now_ms()
        admitted = self.ingress.admit(inbound, value, now)
        if admitted.record is None:
            return list(admitted.outputs), True
        key = self.stage.state_key(admitted.record)
        # a record read again (after a rebalance, a replay) goes to the stage, which skips
        # what its state says it applied; the key's state is stored and written again all the
        # same: after a rebalance it may be ahead of the changelog (changelog.py, `drop`)
        state = self._latest(key, pending)[0]
        result = self.stage.handle(state, admitted.record, inbound, now)
        pending.states[key] = (result.state, inbound.partition)
        pending.advance(key, inbound.topic, inbound.offset)
        return [*admitted.outputs, *result.outputs], False

    def _roll_back(self, keys: Iterable[str]) -> None:
        """The stage changes a state in place, so a batch that failed (its outputs never
        acknowledged) leaves its keys' live states ahead of what was stored: applied again,
        its records would be skipped as done and their outputs never sent. Each key goes back
        to its stored snapshot."""
        for key in keys:
            stored = self.table.data.get(key) if self.table is not None else None
            if isinstance(stored, _Stored):
                state = self.stage.load_state(stored.record)
                self.table.data[key] = _Stored.recovered(state, stored.record)

    def _on_tick(self, key: str, value: bytes | None, now: int, pending: _Pending) -> None:
        """A tick says the partition was caught up when it was sent. Read again much later (a
        partition re-read from an old committed offset after a broker restart) it says nothing
        about now: steps received since may wait for frames detect has not processed yet, and
        the chaos suite saw such a tick decide two steps without them. So a tick older than
        `TICK_STALE_MS`, or sent by a worker further on, is ignored; `_send_ticks` sends a new
        one while the deadline is still due."""
        state, partition = self._latest(key, pending)
        sent_at, sent_ms = tick_ends(value), tick_sent_ms(value)
        if state is not None and (sent_ms is None or now - sent_ms > TICK_STALE_MS):
            return
        if state is not None and sent_at and self.backlog.short_of(partition, sent_at):
            return  # sent by a worker further on (before a restart): `_send_ticks` sends again
        self._ticked.pop(key, None)
        if state is None or not self.stage.needs_tick(state, now):
            return
        result = self.stage.tick(state, now)
        pending.add(result.outputs)
        pending.states[key] = (result.state, partition)

    def _latest(self, key: str, pending: _Pending) -> tuple[Any, int]:
        """The key's state as the batch left it so far, else as stored (None: no state)."""
        if key in pending.states:
            return pending.states[key]
        stored = self._load(key)
        pending.progress[key] = progress_of(stored)
        return (stored.state, stored.partition) if stored else (None, 0)

    def _load(self, key: str) -> _Stored | None:
        """The key's typed state: as this process left it, or read back from the changelog
        (a dict) after a recovery, and then kept typed."""
        if self.table is None:
            return None
        value = self.table.get(key)
        if value is None or isinstance(value, _Stored):
            return value
        stored = _Stored.recovered(self.stage.load_state(value), value)
        self.table.data[key] = stored  # the same value, typed: no changelog write
        return stored

    def _store(self, key: str, state: Any, partition: int, progress: dict[str, int]) -> None:
        """The key's state into the table, and a snapshot of it queued for its changelog on
        the partition its inputs come on (written before the next commit, changelog.py);
        forgetting a key queues its tombstone."""
        if self.table is None or self.changelog is None:
            return
        if state is None:
            if key in self.table.data:
                del self.table.data[key]
                self.changelog.forget(key, partition)
            return
        stored = _Stored(state, partition, self.stage.dump_state, progress)
        self.table.data[key] = stored
        self.changelog.put(key, stored, partition)

    def states(self) -> Iterator[Any]:
        """Every typed state this worker holds now (its partitions'), for read-only views."""
        if self.table is None:
            return
        for key in list(self.table.data.keys()):
            stored = self._load(key)
            if stored is not None:
                yield stored.state

    def state_of(self, key: str) -> Any:
        """The key's typed state on this worker (None: none here), for read-only views."""
        stored = self._load(key)
        return stored.state if stored is not None else None

    async def _send_ticks(self) -> None:
        now = now_ms()
        ends: dict[int, Ends | None] = {}  # partition -> its ends if caught up, asked once
        for key in list(self.table.keys()):
            stored = self._load(key)
            if stored is None or not self.stage.needs_tick(stored.state, now):
                continue
            if now - self._ticked.get(key, 0) < TICK_RESEND_MS:
                continue
            p = stored.partition
            if p not in ends:
                ends[p] = self.backlog.caught_up(p)
            caught_up = ends[p]
            if caught_up is None:  # what the deadline waits for may be in the backlog
                continue
            self._ticked[key] = now
            await self.tick_topic.send(
                key=str(key).encode(), value=tick_value(caught_up, now), partition=p
            )
