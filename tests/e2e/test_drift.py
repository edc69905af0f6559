"""Drift monitoring end to end, offline: simulated carts through the real detect and reason
stages and both monitors, against the reference committed beside the bundled model. A lighting
change in one store alerts within minutes of simulated time, on that store only; new packaging
of one SKU alerts on that SKU; honest shopping raises no alert."""

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


def test_new_packaging_of_one_sku_alerts_on_that_sku_through_fusion(catalog: Catalog) -> None:
    """The detector does not know the new packaging: frame PSI stays quiet, and the cameras
    stop confirming what the scale says moved."""
    settings = Settings().with_overrides(detect={"threads": 2})
    reference = DriftReference.load(BUNDLED_MODEL.with_suffix(".drift.json"))
    config = SimConfig(carts=8, sessions=8, seed=202, run_id="drift-202")
    start = run_start_ms(config, catalog)
    change = start + (CART_CLOCK_END_MS - start) * 2 // 5
    sku = max(catalog.skus, key=lambda s: s.popularity).sku
    repackaged = run_scenario(
        "packaging",
        config,
        settings,
        catalog,
        reference,
        [SceneChange("packaging", change, sku=sku)],
    )
    assert repackaged.alarms_before == 0, repackaged
    assert repackaged.first_alert_min is not None and repackaged.first_alert_min < 5.0
    # it holds: the chart pages after alerts.visionFor (3m) of it, within the run
    assert repackaged.change_at_min is not None and repackaged.first_alert_held_min is None
    held = repackaged.minutes - repackaged.change_at_min - repackaged.first_alert_min
    assert held >= 3.0, repackaged
    (what,) = repackaged.alerting  # that SKU alone, and by vision, not by frame PSI
    assert what.startswith(f"sku/{sku} vision unconfirmed"), what
