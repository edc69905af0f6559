"""A basket's contents as the pipeline believes them, and the weight it should have.

Packaged SKUs are counted in units; items sold by weight are kept bag by bag with their measured
grams (a removal takes out the bag whose weight matches best). A plain dataclass: the stages'
state codec (`streams/state.py`) stores it in their tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cartstream.models.catalog import Catalog

SCALE_READING_SD_G = 2.0  # how well one settled reading repeats
MIN_TOLERANCE_G = 20.0


@dataclass(frozen=True)
class WeightCheck:
    """The scale's reading against what the basket should weigh, within its tolerance."""

    measured: float
    expected: float
    tolerance: float

    @property
    def diff(self) -> float:
        return self.measured - self.expected

    @property
    def within(self) -> bool:
        return abs(self.diff) <= self.tolerance

    @property
    def severe(self) -> bool:
        """Off by more than three tolerances."""
        return abs(self.diff) > 3 * self.tolerance


@dataclass
class Basket:
    units: dict[str, int] = field(default_factory=dict)
    bags: dict[str, list[float]] = field(default_factory=dict)

    def add(self, catalog: Catalog, sku: str, quantity: int, grams: float) -> None:
        if catalog[sku].sold_by_weight:
            self.bags.setdefault(sku, []).append(round(abs(grams), 1))
        else:
            self.units[sku] = self.units.get(sku, 0) + quantity

    def remove(self, catalog: Catalog, sku: str, quantity: int, grams: float) -> bool:
        """Take items out; False (and no change) if the basket does not hold them."""
        if catalog[sku].sold_by_weight:
            bags = self.bags.get(sku)
            if not bags:
                return False
            best = min(range(len(bags)), key=lambda i: abs(bags[i] - abs(grams)))
            bags.pop(best)
            if not bags:
                del self.bags[sku]
            return True
        have = self.units.get(sku, 0)
        if have < quantity:
            return False
        if have == quantity:
            del self.units[sku]
        else:
            self.units[sku] = have - quantity
        return True

    def apply(
        self, catalog: Catalog, action: str, sku: str | None, quantity: int, grams: float
    ) -> bool:
        """Apply one decided basket change (the one way every stage rebuilds a basket); False
        when it changes nothing: not an ADD or REMOVE, a SKU not in the catalog, or a removal
        of what the basket does not hold."""
        if sku is None or sku not in catalog:
            return False
        if action == "ADD":
            self.add(catalog, sku, quantity, grams)
            return True
        if action == "REMOVE":
            return self.remove(catalog, sku, quantity, grams)
        return False

    def counts(self) -> dict[str, int]:
        """SKU -> units (bags for items sold by weight), the unit of checkout accuracy."""
        out = dict(self.units)
        for sku, bags in self.bags.items():
            out[sku] = out.get(sku, 0) + len(bags)
        return out

    def expected_grams(self, catalog: Catalog) -> float:
        packaged = sum(catalog[s].unit_grams * q for s, q in self.units.items())
        return packaged + sum(sum(b) for b in self.bags.values())

    def tolerance_grams(self, catalog: Catalog) -> float:
        """Four and a half standard deviations of (measured - expected) for an honest basket
        (three would flag ~3 honest checkouts in 1 000)."""
        var = sum(q * catalog[s].unit_grams_sd ** 2 for s, q in self.units.items())
        readings = 1 + sum(len(b) for b in self.bags.values())
        var += readings * SCALE_READING_SD_G**2
        return float(max(MIN_TOLERANCE_G, 4.5 * math.sqrt(var)))

    def check_weight(
        self, catalog: Catalog, measured: float, flagged_g: float = 0.0
    ) -> WeightCheck:
        """The checkout weight check. `flagged_g`: grams of steps already raised as alerts
        (unexplained items), expected on the scale so that they are not reported twice."""
        return WeightCheck(
            measured, self.expected_grams(catalog) + flagged_g, self.tolerance_grams(catalog)
        )
