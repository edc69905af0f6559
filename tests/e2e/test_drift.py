"""Drift monitoring end to end, offline: simulated carts through the real detect stage and the
monitor, against the reference committed beside the bundled model. A lighting change in one
store alerts within minutes of simulated time, on that store only; honest shopping raises no
alert."""

from __future__ import annotations

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.drift import DriftReference
from cartstream.models.inference import BUNDLED_MODEL
from cartstream.services.carts.simulate import SceneChange, SimConfig
from cartstream.services.tools.drift import CART_CLOCK_END_MS, run_scenario, run_start_ms

CONFIG = SimConfig(carts=8, sessions=6, seed=205, stores=2, run_id="drift-test")


def test_a_lighting_change_alerts_within_minutes_and_honest_shopping_never(
    catalog: Catalog,
) -> None:
    settings = Settings().with_overrides(detect={"threads": 2})
    reference = DriftReference.load(BUNDLED_MODEL.with_suffix(".drift.json"))
    honest = run_scenario("honest", CONFIG, settings, catalog, reference)
    assert honest.checks_before > 50 and honest.alarms_before == 0, honest
    start = run_start_ms(CONFIG, catalog)
    change = start + (CART_CLOCK_END_MS - start) * 2 // 5
    dark = run_scenario(
        "lighting",
        CONFIG,
        settings,
        catalog,
        reference,
        [SceneChange("lighting", change, store_id="store-001", gain=0.6)],
    )
    assert dark.alarms_before == 0, dark
    assert dark.first_alert_min is not None and dark.first_alert_min < 3.0, dark
    assert all("store-001" in what for what in dark.alerting), dark.alerting
