"""`cartstream worker`: topics, the database store and the Faust worker for a set of roles."""

from __future__ import annotations

from collections.abc import Sequence

import faust

from cartstream.core.broker_check import check_access
from cartstream.core.gc_pauses import freeze_startup_heap
from cartstream.core.settings import Settings
from cartstream.services.kafka.topics import check_stream_partitions, ensure_tick_topics
from cartstream.services.storage.repository import Repository
from cartstream.streams.worker import build_app, stateful_roles


def run_worker(
    settings: Settings, roles: Sequence[str], loglevel: str = "info", web: bool = False
) -> None:
    """Run until stopped (SIGTERM/SIGINT stop it cleanly; SIGKILL is survived by design)."""
    check_access(settings)  # a wrong CA or login: a clear error now, not a retry for ever
    check_stream_partitions(settings)  # co-partitioning is what every stage relies on
    ensure_tick_topics(settings, stateful_roles(roles))
    store = None
    if "persist" in roles:
        store = Repository.from_url(settings.database_url.get_secret_value())
    app = build_app(settings, roles, store=store, web=web)
    # what start-up built lives as long as the process: a full collection walked it all,
    # stopping the event loop for 230-310 ms (core/gc_pauses.py)
    freeze_startup_heap()
    quiet_worker(app, loglevel).execute_from_commandline()


def quiet_worker(app: faust.App, loglevel: str) -> faust.Worker:
    """A Faust worker that logs at `loglevel` and nothing below.

    Faust's worker draws a terminal spinner whenever the level is WARNING or above, and for it
    sets the root logger to DEBUG with a handler of its own: every debug call of aiokafka and
    Faust then builds a log record (8 % of a loaded worker's time, measured with py-spy) that
    nobody reads. A worker's output is a log file or a pod's log, never a terminal to spin in.
    """
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    return worker
