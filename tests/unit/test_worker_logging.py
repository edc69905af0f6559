"""A worker logs at the level it is given: Faust's spinner must not turn the root logger to
DEBUG (every aiokafka debug call would then build a record nobody reads)."""

from __future__ import annotations

import logging

import faust
import pytest

from cartstream.services.cli.worker import quiet_worker


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR, logging.INFO])
def test_root_logger_keeps_the_worker_level(level: int) -> None:
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    root.addHandler(logging.NullHandler())  # Faust's spinner set-up adjusts handlers[0]
    try:
        root.setLevel(level)
        app = faust.App("log-level-test", broker="kafka://127.0.0.1:1")
        worker = quiet_worker(app, logging.getLevelName(level).lower())
        worker.on_setup_root_logger(root, level)
        assert root.level == level
        assert not logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved_level)
        root.handlers[:] = saved_handlers
