"""The reason stage's watch on vision drift per SKU (models/vision_drift.py): every basket change
it decides is one more trial; a SKU that starts drifting, or is back, is logged, and the
readings feed `cartstream.drift.vision_surprise`.

The honest rates come from the drift reference of the detector the worker runs, found as the
detect stage finds it (`detect.drift_reference`, else the one beside the model that
`detect.model_path` or the registry's promoted version names, else the bundled model's). A
reference made before the monitor existed has none: then nothing is watched, and the log says
how to make one.

Like the detect stage's frame monitor, this is the worker's view of what it decided since it
started, kept in memory: a change re-decided after a crash counts again, which moves a rate by
one trial in `window`, never a basket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from cartstream.core.settings import Settings
from cartstream.models.drift import DriftReference, find_reference
from cartstream.models.inference import BUNDLED_MODEL
from cartstream.models.registry import RegistryError, resolve_model
from cartstream.models.vision_drift import VisionDriftMonitor, VisionReading

log = logging.getLogger(__name__)


class VisionWatch:
    def __init__(self, monitor: VisionDriftMonitor) -> None:
        self.monitor = monitor
        self._drifting: set[str] = set()
        self._lock = threading.Lock()  # readings are taken from the metrics thread

    @classmethod
    def for_settings(cls, settings: Settings) -> VisionWatch | None:
        d, r = settings.detect, settings.reason
        try:
            model = resolve_model(d.model_path, d.registry, d.model_version)
        except RegistryError as exc:  # the detect stage says so loudly; reasoning goes on
            log.warning("reason: vision drift: %s; taking the bundled model's reference", exc)
            model = None
        path = find_reference(d.drift_reference, model, BUNDLED_MODEL)
        reference = DriftReference.load(path) if path is not None else None
        if reference is None or reference.vision is None:
            log.info("reason: no vision drift reference (run `cartstream models drift-reference`)")
            return None
        log.info("reason: vision drift per SKU watched against %s", path)
        monitor = VisionDriftMonitor(
            reference.vision,
            r.vision_drift_window,
            r.vision_drift_min_samples,
            r.vision_drift_alert,
        )
        return cls(monitor)

    def observe(self, change: Mapping[str, Any]) -> None:
        """One decided change; logs a SKU when it starts drifting and when it is back. A change
        that is no trial (no weight SKU, no usable frames) changes no reading: nothing to do."""
        with self._lock:
            sku = self.monitor.observe(change)
            if sku is None:
                return
            reading = self.monitor.reading(sku)
            if reading is not None and reading.drifting and sku not in self._drifting:
                log.warning(
                    "reason: vision drift: %s unconfirmed by the cameras in %d of its last %d "
                    "changes (honest rate %.2f, surprise %.1f, alert at %.1f)",
                    sku,
                    reading.unconfirmed,
                    reading.samples,
                    reading.rate,
                    reading.surprise,
                    self.monitor.alert_surprise,
                )
                self._drifting.add(sku)
            elif (reading is None or not reading.drifting) and sku in self._drifting:
                log.info("reason: vision drift: %s back within bounds", sku)
                self._drifting.discard(sku)

    def readings(self) -> list[VisionReading]:
        with self._lock:
            return self.monitor.readings()
