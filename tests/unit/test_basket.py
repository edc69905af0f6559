from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from cartstream.models.basket import MIN_TOLERANCE_G, Basket
from cartstream.models.catalog import Catalog


def test_units_and_bags(catalog: Catalog) -> None:
    b = Basket()
    b.add(catalog, "PAN-TUNA-160", 2, 370)
    b.add(catalog, "PRD-APPLE", 1, 812.4)
    b.add(catalog, "PRD-APPLE", 1, 400.0)
    assert b.counts() == {"PAN-TUNA-160": 2, "PRD-APPLE": 2}
    assert b.expected_grams(catalog) == pytest.approx(2 * 185 + 812.4 + 400.0)
    assert b.remove(catalog, "PRD-APPLE", 1, -401.0)
    assert b.bags == {"PRD-APPLE": [812.4]}
    assert not b.remove(catalog, "PAN-TUNA-160", 3, 555)
    assert b.remove(catalog, "PAN-TUNA-160", 2, 370)
    stored = TypeAdapter(Basket)  # how a stage's state codec stores it
    assert stored.validate_python(stored.dump_python(b, mode="json")) == b


def test_tolerance_grows_with_the_basket(catalog: Catalog) -> None:
    small, big = Basket(), Basket()
    small.add(catalog, "SNK-CHOC-MILK-100", 1, 104)
    big.add(catalog, "HH-TOILET-9", 4, 4040)
    big.add(catalog, "BEV-LAGER-6PK", 3, 7050)
    assert small.tolerance_grams(catalog) == MIN_TOLERANCE_G
    assert big.tolerance_grams(catalog) > MIN_TOLERANCE_G


def test_apply_is_the_one_way_changes_update_a_basket(catalog: Catalog) -> None:
    b = Basket()
    assert b.apply(catalog, "ADD", "PAN-TUNA-160", 2, 370)
    assert b.apply(catalog, "ADD", "PRD-APPLE", 1, 812.4)
    assert not b.apply(catalog, "UNKNOWN", None, 0, 120)  # an unexplained step holds nothing
    assert not b.apply(catalog, "ADD", "NOT-IN-CATALOG", 1, 100)
    assert not b.apply(catalog, "REMOVE", "PAN-TUNA-160", 3, -555)  # more than it holds
    assert not b.apply(catalog, "CHECKOUT_REQUESTED", None, 0, 0)
    assert b.apply(catalog, "REMOVE", "PAN-TUNA-160", 1, -185)
    assert b.counts() == {"PAN-TUNA-160": 1, "PRD-APPLE": 1}


def test_the_checkout_weight_check(catalog: Catalog) -> None:
    b = Basket()
    b.apply(catalog, "ADD", "PAN-TUNA-160", 2, 370)
    expected = b.expected_grams(catalog)
    tolerance = b.tolerance_grams(catalog)
    assert b.check_weight(catalog, expected + tolerance).within
    off = b.check_weight(catalog, expected + 2 * tolerance)
    assert not off.within and not off.severe and off.diff == pytest.approx(2 * tolerance)
    assert b.check_weight(catalog, expected + 4 * tolerance).severe
    # grams already raised as an unexplained step are expected, not reported twice
    assert b.check_weight(catalog, expected + 300, flagged_g=300).within
