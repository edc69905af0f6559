from __future__ import annotations

from cartstream.models.catalog import Catalog
from cartstream.models.weight_match import WeightMatcher


def test_catalog_has_what_the_simulator_needs(catalog: Catalog) -> None:
    assert len(catalog) >= 50
    assert sum(s.sold_by_weight for s in catalog.skus) >= 5


def test_distinct_weight_is_matched(catalog: Catalog) -> None:
    m = WeightMatcher(catalog).match_add(catalog["HH-DETERGENT-1500"].unit_grams + 2, 1.5)
    assert (m.action, m.sku, m.quantity) == ("ADD", "HH-DETERGENT-1500", 1)
    assert m.confidence > 0.9


def test_two_units_at_once(catalog: Catalog) -> None:
    m = WeightMatcher(catalog).match_add(2 * catalog["HH-DETERGENT-1500"].unit_grams, 1.5)
    assert (m.sku, m.quantity) == ("HH-DETERGENT-1500", 2)


def test_removal_only_considers_the_basket(catalog: Catalog) -> None:
    matcher = WeightMatcher(catalog)
    grams = catalog["BEV-COLA-330"].unit_grams
    m = matcher.match_remove(grams, 1.5, {"BEV-LEMON-330": 1, "PAN-TUNA-160": 2}, {})
    assert (m.action, m.sku) == ("REMOVE", "BEV-LEMON-330")  # its look-alike is not in there
    assert matcher.match_remove(grams, 1.5, {}, {}).action == "UNKNOWN"


def test_produce_bag_removal_by_its_grams(catalog: Catalog) -> None:
    m = WeightMatcher(catalog).match_remove(
        733.0, 1.5, {"PAN-TUNA-160": 1}, {"PRD-APPLE": [733.4], "PRD-BANANA": [610.0]}
    )
    assert (m.action, m.sku) == ("REMOVE", "PRD-APPLE")


def test_weight_far_from_everything_is_unknown(catalog: Catalog) -> None:
    assert WeightMatcher(catalog).match_add(7777.0, 1.5).action == "UNKNOWN"
