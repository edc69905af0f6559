"""The one owner of the commit order: what a consumer commit stores, awaits and checks before
it commits a single input offset.

At-least-once without transactions rests on one rule: an input offset is committed only after
every effect of the records below it is safely stored. A record's effects are of two kinds:
- its **outputs** (basket changes, checkouts, detections, dead letters): the runners publish
  them and await every broker acknowledgement before they acknowledge the record, so an
  acknowledged offset's outputs are stored already;
- the **state** it went into (a stateful stage's table): held back in `ChangelogWrites` (one
  record per key per commit, changelog.py) and written here.

`Checkpoint.commit` replaces Faust's `Consumer._commit_tps` (installed by
`faust_fixes.commit_through_the_checkpoint`) and runs, per commit:
1. in one synchronous step, the offsets the acknowledgements allow and every pending state:
   a state is put before its inputs are acknowledged, so every offset taken here has its state
   among those taken, or written by an earlier commit;
2. each state produced to its changelog and **every delivery awaited and checked** (no flush
   with a timeout: Faust's `flush()` returns after 0.1 s without progress, and a commit could
   pass states still in the producer's buffer; a SIGKILL then restored an older state behind
   committed inputs);
3. only then Faust's own: attached messages, then the offsets.
If a delivery fails, nothing is committed: the states are pending again (unless a newer one
was put meanwhile) and the acknowledgements are restored, so the next commit writes and commits
them, and a crash before it re-delivers the records. A crash at any point between 1 and 3
re-delivers every record after the last commit; stages skip what their state says they applied.

Two guards on top (the incidents are in docs/reliability.md):
- **revoked partitions**: their pending states are dropped when Faust revokes them (Faust
  forgets their acknowledgements at the same point), so a worker never writes a state after
  the partition's next owner recovered it;
- **a worker that stood still** longer than the session timeout (SIGSTOP, a frozen VM) may have
  been evicted without knowing it yet: a commit that starts that late writes nothing and commits
  nothing for one session timeout (`faust_fixes.hold_commits`), long enough for the heartbeat
  to report the eviction and the revocation to drop what is pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from cartstream.streams.changelog import ChangelogWrites, Pending
from cartstream.streams.runtime.faust_compat import faust_fixes

log = logging.getLogger(__name__)

_ATTRIBUTE = "_cartstream_checkpoint"


class CommitFailed(Exception):
    """A state's changelog delivery failed: this commit committed nothing."""


class Checkpoint:
    """The commit order of one app (module docstring)."""

    def __init__(self, app: Any, stall_s: float) -> None:
        self.app = app
        self.stall_s = stall_s
        self.writes: list[ChangelogWrites] = []
        self.last_commit: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.failed = 0  # commits a failed delivery stopped
        # partitions revoked while a commit's deliveries are awaited (None: no commit under way)
        self._revoked_meanwhile: set[int] | None = None

    async def commit(self, consumer: Any, tps: Iterable[Any], start_new_transaction: bool) -> bool:
        """Faust's `Consumer._commit_tps`, in the order above; True if offsets were committed."""
        now = self.clock()
        last, self.last_commit = self.last_commit, now
        if last is not None and now - last > self.stall_s:
            log.warning(
                "no commit for %.1f s (more than the session timeout): this worker may have "
                "been evicted from its group; holding changelog writes and commits for %.1f s",
                now - last,
                self.stall_s,
            )
            faust_fixes.hold_commits(self.app, now + self.stall_s)
        if faust_fixes.commits_held(self.app, now):
            return False
        # 1. one synchronous step: the offsets, and the states every one of them went into
        offsets: dict[Any, int] = consumer._filter_committable_offsets(tps)
        taken = [(writes, writes.take()) for writes in self.writes]
        # 2. the states written and every delivery checked
        self._revoked_meanwhile = set()
        try:
            await self._store(taken)
        except CommitFailed as exc:
            self.failed += 1
            revoked = self._revoked_meanwhile
            for writes, pending in taken:  # not those of partitions revoked meanwhile
                writes.restore({k: v for k, v in pending.items() if v[1] not in revoked})
            faust_fixes.unacknowledge(consumer, offsets)
            log.error("commit not made: %s; its records' states and offsets wait for the next", exc)
            return False
        finally:
            self._revoked_meanwhile = None
        if not offsets:
            return False
        # 3. Faust's own: attached messages, then the offsets
        await consumer._handle_attached(offsets)
        return bool(
            await consumer._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        )

    async def _store(self, taken: list[tuple[ChangelogWrites, Pending]]) -> None:
        sent: list[tuple[ChangelogWrites, int, Awaitable[Any]]] = []
        try:
            for writes, pending in taken:
                for key, (value, partition) in pending.items():
                    sent.append((writes, partition, await writes.send(key, value, partition)))
            results = await asyncio.gather(*(f for _, _, f in sent), return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise CommitFailed(f"a changelog record could not be sent: {exc!r}") from exc
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise CommitFailed(
                f"{len(errors)} of {len(results)} changelog deliveries failed: {errors[0]!r}"
            )
        for (writes, partition, _), result in zip(sent, results, strict=True):
            writes.delivered(partition, result)

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        partitions = {tp.partition for tp in revoked}
        if self._revoked_meanwhile is not None:
            self._revoked_meanwhile |= partitions
        dropped = sum(writes.drop(partitions) for writes in self.writes)
        if dropped:
            log.info("dropped %d pending changelog writes of revoked partitions", dropped)


def checkpoint_of(app: Any, stall_s: float) -> Checkpoint:
    """The app's one `Checkpoint` (made on first use, with the revocation hook on the app's
    table manager, which Faust calls before its revocation commit)."""
    checkpoint: Checkpoint | None = getattr(app, _ATTRIBUTE, None)
    if checkpoint is None:
        checkpoint = Checkpoint(app, stall_s)
        setattr(app, _ATTRIBUTE, checkpoint)
        manager = app.tables
        revoked = manager.on_partitions_revoked

        def on_partitions_revoked(tps: set[Any]) -> None:
            checkpoint.on_partitions_revoked(tps)
            revoked(tps)

        manager.on_partitions_revoked = on_partitions_revoked
    return checkpoint


def installed(app: Any) -> Checkpoint | None:
    """The app's `Checkpoint`, if a stateful stage made one."""
    return getattr(app, _ATTRIBUTE, None)
