"""Corrections to faust-streaming (0.15) that at-least-once delivery needs, in one place.

**Skipped messages were committed.** During a rebalance Faust suspends its flow control, and a
stream then *skips* the messages still buffered for it (or fetched under the previous consumer
generation) without handing them to the agent, and *acknowledges* them anyway ("otherwise the
lag would increase", faust/streams.py). The revocation's commit then includes those offsets, so
the partition's next owner starts after messages that nobody processed: a session's state
misses a run of weight packets ("weight packets 179..204 missing") and its checkout may never
come. Measured by the chaos suite: 3 of 22 checkouts lost in one run, ~25 consecutive packets
(one buffered batch) skipped each time.

The correction: an acknowledgement that arrives while the flow is suspended, or for a message
of an older generation, marks the message done (so the rebalance does not wait for it) but
does not make its offset committable. The message is delivered again after the rebalance,
from the last committed offset; every stage is idempotent, so a repeat changes nothing. The
cost is re-processing at most one buffer per partition per rebalance.

The other corrections below: offsets Faust never delivered are not counted as processed
(`never_count_gaps`), acknowledgements always go through the consumer, where the corrections
are (`acknowledge_through_the_consumer`), a commit never passes a record that was not processed
(`never_commit_past_unprocessed`), and a rebalance cannot hang on a message stuck outside every
agent (`never_hold_events_through_a_rebalance`). `in_order.py` makes each agent take its
partitions' records in order with none missing. `install()` applies them all.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import weakref
from typing import Any

log = logging.getLogger(__name__)

_PATCHED = "_cartstream_never_commits_skipped"


def committable(app: Any, message: Any) -> bool:
    """May this acknowledgement move the committed offset? Not while a rebalance has the flow
    suspended, nor for a message fetched under an earlier consumer generation."""
    if not app.flow_control.is_active():
        return False
    generation = getattr(message, "generation_id", None)
    return generation is None or generation == app.consumer_generation_id


def never_commit_skipped_messages() -> None:
    """Install the correction on Faust's consumer (idempotent, once per process)."""
    from faust.transport import consumer as module

    consumer_cls = module.Consumer
    if getattr(consumer_cls.ack, _PATCHED, False):
        return
    original = consumer_cls.ack

    def ack(self: Any, message: Any) -> bool:
        if committable(self.app, message) and not _was_dropped(message):
            return bool(original(self, message))
        with module.ack_lock:
            if not message.acked:
                message.acked = True
                self._unacked_messages.discard(message)
                log.debug(
                    "not committing %s[%d]@%d: skipped during a rebalance; it is re-delivered",
                    message.topic,
                    message.partition,
                    message.offset,
                )
        return False

    setattr(ack, _PATCHED, True)
    consumer_cls.ack = ack  # type: ignore[method-assign]


def never_count_gaps() -> None:
    """Faust treats a jump in a partition's offsets as a gap to acknowledge (made for compacted
    topics and transaction markers, which cartstream's input topics never have). After a
    rebalance the chaos suite saw jumps of 30-60 records that nobody had processed, and the gap
    made them committed: lost. Here a gap is logged and never acknowledged; `InOrder` (in_order.py)
    makes the agent fetch the missing records again, and acknowledges only offsets the broker
    confirms are not in the log (`acknowledge_absent`, log_holes.py)."""
    from faust.transport import consumer as module

    consumer_cls = module.Consumer
    original = consumer_cls._add_gap
    if getattr(original, _PATCHED, False):
        return

    async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        if tp in getattr(self._read_offset, "floors", ()):
            return  # records fetched before a seek back, handed over while it re-fetches
        log.warning(
            "%s[%d]: offsets %d..%d were not delivered; not counting them as processed",
            tp.topic,
            tp.partition,
            offset_from,
            offset_to - 1,
        )

    setattr(add_gap, _PATCHED, True)
    consumer_cls._add_gap = add_gap  # type: ignore[method-assign]


def acknowledge_absent(consumer: Any, tp: Any, start: int, end: int) -> None:
    """Offsets `start`..`end - 1` of `tp` hold no record (a hole in the log the broker confirmed,
    see log_holes.py): they count as processed, as Faust counts an acknowledgement, so the commit
    can pass them (`never_commit_past_unprocessed` commits only a run without holes)."""
    from faust.types.tuples import ack_lock

    with ack_lock:
        committed = consumer._committed_offset.get(tp)
        index: set[int] = consumer._acked_index[tp]
        acked: list[int] = consumer._acked[tp]
        for offset in range(start, end):
            if (committed is None or offset >= committed) and offset not in index:
                index.add(offset)
                acked.append(offset)


def unacknowledge(consumer: Any, offsets: Any) -> None:
    """A commit taken for `offsets` ({tp: offset}) was not made (checkpoint.py): the run of
    acknowledgements `never_commit_past_unprocessed` took for it (the committed offset up to
    each offset) is acknowledged again, so the next commit takes it."""
    from faust.types.tuples import ack_lock

    with ack_lock:
        for tp, offset in offsets.items():
            committed = consumer._committed_offset.get(tp)
            if committed is None:
                continue
            index: set[int] = consumer._acked_index[tp]
            acked: list[int] = consumer._acked[tp]
            for again in range(committed, offset):
                if again not in index:
                    index.add(again)
                    acked.append(again)


def commit_through_the_checkpoint() -> None:
    """Faust's commit (`Consumer._commit_tps`) goes through the app's `Checkpoint` when a
    stateful stage made one: its states written and every delivery checked before any offset
    is committed (checkpoint.py). Faust's own relied on `producer.flush()`, which returns after
    0.1 s without progress, so offsets could be committed ahead of the states they need."""
    from faust.exceptions import ProducerSendError
    from faust.transport import consumer as module

    from cartstream.streams.checkpoint import installed

    consumer_cls = module.Consumer
    original = consumer_cls._commit_tps
    if getattr(original, _PATCHED, False):
        return

    async def commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        checkpoint = installed(self.app)
        if checkpoint is None:
            return bool(await original(self, tps, start_new_transaction))
        try:
            return await checkpoint.commit(self, tps, start_new_transaction)
        except ProducerSendError as exc:  # an attached message: Faust's own answer
            await self.crash(exc)
            return False

    setattr(commit_tps, _PATCHED, True)
    consumer_cls._commit_tps = commit_tps  # type: ignore[method-assign]


def never_commit_past_unprocessed() -> None:
    """Faust commits the run of acknowledged offsets that follows a partition's committed offset
    (`Consumer._new_offset`), with two holes:

    - when it does not know the committed offset (never known for a partition committed at 0,
      and missing after some rebalances: the chaos suite logged agents starting at offsets
      31, 273, ... "with no committed offset known"), it commits *any* run, whatever came before
      it: a worker that is handed a partition at the wrong position commits past records nobody
      processed;
    - it accepts a run that starts one past the committed offset (off by one), so the record at
      the committed offset may never have been processed.

    The replacement commits a run only if it starts exactly at the committed offset, and
    nothing while that offset is unknown (`InOrder` asks the broker for it before its agent
    takes a partition's first record). Offsets below it (processed again after a re-delivery)
    are discarded. Nothing is committed while `hold_commits` holds them."""
    from faust.transport import consumer as module

    consumer_cls = module.Consumer
    if getattr(consumer_cls._new_offset, _PATCHED, False):
        return

    def new_offset(self: Any, tp: Any) -> int | None:
        if commits_held(self.app):
            return None  # kept acknowledged: committed once the hold ends
        acked: list[int] = self._acked[tp]
        committed = self._committed_offset.get(tp)
        if not acked or committed is None:
            return None
        acked.sort()
        index: set[int] = self._acked_index[tp]
        stale = bisect.bisect_left(acked, committed)
        if stale:
            index.difference_update(acked[:stale])
            del acked[:stale]
        if not acked or acked[0] != committed:
            return None  # the record at the committed offset is not processed yet
        end = 1
        while end < len(acked) and acked[end] == acked[end - 1] + 1:
            end += 1
        batch = acked[:end]
        del acked[:end]
        index.difference_update(batch)
        return batch[-1] + 1

    setattr(new_offset, _PATCHED, True)
    consumer_cls._new_offset = new_offset  # type: ignore[method-assign]


_HOLD = "_cartstream_commits_held_until"


def hold_commits(app: Any, until: float) -> None:
    """No offset of `app`'s consumer is committed before `until` (time.monotonic()); see
    checkpoint.py: a worker that may have been evicted commits nothing until
    its group has told it."""
    setattr(app, _HOLD, max(until, getattr(app, _HOLD, 0.0)))


def commits_held(app: Any, now: float | None = None) -> bool:
    return (time.monotonic() if now is None else now) < getattr(app, _HOLD, 0.0)


def dropped(message: Any) -> None:
    """This delivery of `message` is thrown away unprocessed (it comes again): its
    acknowledgement must not make its offset committable."""
    _DROPPED.add(message)


_DROPPED: weakref.WeakSet[Any] = weakref.WeakSet()


def _was_dropped(message: Any) -> bool:
    if message in _DROPPED:
        _DROPPED.discard(message)
        return True
    return False


def never_hold_events_through_a_rebalance() -> None:
    """A rebalance waits until every message an agent started is acknowledged
    (`Consumer.wait_empty`), but Faust can leave copies of a message outside every agent:

    - an agent's buffer was full, so the copy waits in a `put` task; when the rebalance
      suspends the flow, that `put` waits for the flow to resume, which waits for the
      rebalance: **the worker hangs** ("wait_empty: Waiting for tasks [(1, <ConsumerMessage
      ...>)]", heartbeats failing "because it is rebalancing" for as long as it lives). Seen by
      the chaos suite with a kill during a flood: a message two agents consume (basket.changes
      goes to anomalies and reconcile) was done by one and stuck on its way to the other.
    - the buffers are cleared at the rebalance, and the cleared copies are never acknowledged;
      Faust relies on the garbage collector to forget their message, which does not happen
      while its fetch loop still holds it (the same hang).

    The correction, on the buffers Faust clears at a rebalance (`clear_on_resume`): a copy
    cleared, or put while the flow is suspended, is acknowledged as *dropped*: the rebalance
    no longer waits for it and its offset is not committable, so the message is delivered again
    after the rebalance (as Faust intends for every cleared copy)."""
    from mode.utils.queues import ThrowableQueue

    if getattr(ThrowableQueue.put, _PATCHED, False):
        return
    original_put, original_clear = ThrowableQueue.put, ThrowableQueue.clear

    async def put(self: Any, value: Any) -> None:
        if not self._clear_on_resume:
            await original_put(self, value)
            return
        if not self._flow_control.is_active():
            _drop(value)
            return
        try:
            await original_put(self, value)
        except asyncio.CancelledError:
            _drop(value)  # `clear` cancelled the wait for room, or the worker stops
            raise

    def clear(self: Any) -> None:
        if self._clear_on_resume:
            for value in list(self._queue):
                _drop(value)
        original_clear(self)

    setattr(put, _PATCHED, True)
    ThrowableQueue.put = put  # type: ignore[method-assign]
    ThrowableQueue.clear = clear  # type: ignore[method-assign]


def _drop(event: Any) -> None:
    message = getattr(event, "message", None)
    if message is None or message.acked:
        return
    dropped(message)
    event.ack()


def acknowledge_through_the_consumer() -> None:
    """faust-streaming ships a Cython stream iterator that *inlines* `Consumer.ack`: with it,
    no correction of the acknowledgements above applies, and a record `InOrder` dropped (it
    comes again) is counted as processed. The chaos suite lost whole sessions that way, only
    sometimes (it depends on timing). Streams use Faust's pure-Python iterator instead, which
    acknowledges through `Consumer.ack`; the cost is a few microseconds per record."""
    from faust import streams

    streams._CStreamIterator = None  # type: ignore[attr-defined]


def install() -> None:
    """Every correction above, and read offsets that honour a seek back (read_offsets.py);
    idempotent: once per process is enough."""
    from cartstream.streams.runtime.faust_compat import read_offsets

    read_offsets.install()
    acknowledge_through_the_consumer()
    never_commit_skipped_messages()
    never_count_gaps()
    never_commit_past_unprocessed()
    never_hold_events_through_a_rebalance()
    commit_through_the_checkpoint()
