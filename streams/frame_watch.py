"""The detect stage's watch on frame drift (models/drift.py): every detection it publishes is
one observation of its store, camera and SKUs; a scope whose window drifts from the model's
training-time reference, or is back, is logged, and the readings feed `cartstream.drift.psi`.

The reference is `detect.drift_reference`, else the one beside the model file the stage runs,
else the bundled model's (the same cameras and catalog); without one nothing is watched, and the
log says how to make one. Like the reason stage's vision watch (vision_watch.py), this is the
worker's view since it started, kept in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cartstream.core.settings import Settings
from cartstream.models.drift import (
    DriftMonitor,
    DriftReading,
    DriftReference,
    Observation,
    find_reference,
)
from cartstream.models.inference import BUNDLED_MODEL
from cartstream.streams.stage import Outbound

log = logging.getLogger(__name__)

LOG_CHECK_S = 1.0  # how often the windows are read for the log (PSI of all is not per batch)


class FrameWatch:
    def __init__(self, monitor: DriftMonitor, detections_topic: str, hand_zone_y: float) -> None:
        self.monitor = monitor
        self.topic = detections_topic
        self.zone = hand_zone_y
        self._drifting: set[tuple[tuple[str, ...], str]] = set()
        self._lock = threading.Lock()  # batches run in inference threads; metrics read too
        self._checked = 0.0  # when the windows were last read for the log

    @classmethod
    def for_model(cls, settings: Settings, model_path: Path | None) -> FrameWatch | None:
        """The watch for the model at `model_path` (None: a remote or given detector)."""
        c = settings.detect
        path = find_reference(c.drift_reference, model_path, BUNDLED_MODEL)
        if path is None:
            log.info("detect: no drift reference (run `cartstream models drift-reference`)")
            return None
        reference = DriftReference.load(path)
        log.info("detect: drift monitored against %s (%s)", path, reference.source)
        monitor = DriftMonitor(reference, c.drift_window, c.drift_min_samples, c.drift_alert_psi)
        return cls(monitor, settings.topics.detections, settings.reason.hand_zone_y)

    def readings(self) -> list[DriftReading]:
        """PSI per store camera and SKU with a full enough window (for the metrics)."""
        with self._lock:
            return self.monitor.readings()

    def observe(self, outputs: Sequence[Outbound]) -> None:
        """A batch's outputs: its detections feed the monitor; a scope is logged when it starts
        drifting and when it is back."""
        with self._lock:
            for out in outputs:
                if out.topic == self.topic:
                    self.monitor.observe(Observation.of_detection(out.record, self.zone))
            clock = time.monotonic()
            if clock - self._checked < LOG_CHECK_S:
                return
            self._checked = clock
            readings = self.monitor.readings()
            now = {(r.scope, r.feature) for r in readings if r.drifting}
            for r in readings:
                if (r.scope, r.feature) in now - self._drifting:
                    log.warning(
                        "detect: drift: %s %s PSI %.2f over the last %d frames (alert at %.2f)",
                        "/".join(r.scope),
                        r.feature,
                        r.psi,
                        r.samples,
                        self.monitor.alert_psi,
                    )
            for scope, feature in sorted(self._drifting - now):
                log.info("detect: drift: %s %s back within bounds", "/".join(scope), feature)
            self._drifting = now
