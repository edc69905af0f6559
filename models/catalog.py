"""The store catalog: every SKU's name, price and weight, for the simulator and the pipeline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cartstream.exceptions import ConfigurationError


@dataclass(frozen=True)
class Sku:
    sku: str
    name: str
    brand: str
    category: str
    shape: str
    price_cents: int  # per unit, or per kg when sold_by_weight
    unit_grams: float
    unit_grams_sd: float
    sold_by_weight: bool
    min_grams: float | None
    max_grams: float | None
    colors: tuple[str, str]
    popularity: float

    def price_for(self, quantity: int, grams: float) -> int:
        """Line total in cents: per unit, or by measured weight."""
        if self.sold_by_weight:
            return round(self.price_cents * grams / 1000.0)
        return self.price_cents * quantity

    def expected_grams(self, quantity: int, measured_grams: float) -> float:
        """What the scale should read for this line (measured grams for items sold by weight)."""
        return measured_grams if self.sold_by_weight else self.unit_grams * quantity


class Catalog:
    """An immutable list of SKUs with vectorised views for matching."""

    def __init__(self, skus: list[Sku], version: str, currency: str) -> None:
        if not skus:
            raise ConfigurationError("catalog has no SKUs")
        self.skus = tuple(skus)
        self.version = version
        self.currency = currency
        self._index = {s.sku: i for i, s in enumerate(self.skus)}
        if len(self._index) != len(self.skus):
            raise ConfigurationError("catalog has duplicate SKU codes")

    def __len__(self) -> int:
        return len(self.skus)

    def __getitem__(self, sku: str) -> Sku:
        try:
            return self.skus[self._index[sku]]
        except KeyError:
            raise KeyError(f"unknown SKU {sku!r}") from None

    def __contains__(self, sku: object) -> bool:
        return sku in self._index

    def index(self, sku: str) -> int:
        return self._index[sku]

    @cached_property
    def unit_grams(self) -> np.ndarray:
        return np.array([s.unit_grams for s in self.skus], dtype=np.float64)

    @cached_property
    def unit_grams_sd(self) -> np.ndarray:
        return np.array([s.unit_grams_sd for s in self.skus], dtype=np.float64)

    @cached_property
    def by_weight(self) -> np.ndarray:
        return np.array([s.sold_by_weight for s in self.skus], dtype=bool)

    @cached_property
    def gram_range(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.array([s.min_grams or 0.0 for s in self.skus], dtype=np.float64)
        high = np.array([s.max_grams or 0.0 for s in self.skus], dtype=np.float64)
        return low, high

    @cached_property
    def lookalikes(self) -> dict[str, tuple[str, ...]]:
        """SKU -> other packaged SKUs of the same brand and shape (a size or flavour apart)."""
        return {
            s.sku: tuple(
                o.sku
                for o in self.skus
                if o.sku != s.sku
                and not o.sold_by_weight
                and not s.sold_by_weight
                and (o.brand, o.shape) == (s.brand, s.shape)
            )
            for s in self.skus
        }

    @cached_property
    def brand_siblings(self) -> dict[str, tuple[str, ...]]:
        """Packaged SKU -> the other packaged SKUs of its brand, whatever their shape (the
        detector's confusions: milk 1 L carton and 2 L bottle, eggs 6 and 12); only SKUs that
        have any."""
        packed = [s for s in self.skus if not s.sold_by_weight]
        found = {
            s.sku: tuple(o.sku for o in packed if o.brand == s.brand and o.sku != s.sku)
            for s in packed
        }
        return {sku: others for sku, others in found.items() if others}

    @cached_property
    def weight_twins(self) -> dict[str, tuple[str, ...]]:
        """SKU -> the other packaged SKUs a scale cannot tell apart from it (within 2 sd)."""
        packaged = [s for s in self.skus if not s.sold_by_weight]
        return {
            s.sku: tuple(
                o.sku
                for o in packaged
                if o.sku != s.sku
                and not s.sold_by_weight
                and abs(o.unit_grams - s.unit_grams)
                < 2.0 * float(np.hypot(o.unit_grams_sd, s.unit_grams_sd))
            )
            for s in self.skus
        }

    @cached_property
    def popularity(self) -> np.ndarray:
        pop = np.array([s.popularity for s in self.skus], dtype=np.float64)
        share: np.ndarray = pop / pop.sum()
        return share

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Catalog:
        try:
            skus = [
                Sku(
                    sku=str(row["sku"]),
                    name=str(row["name"]),
                    brand=str(row["brand"]),
                    category=str(row["category"]),
                    shape=str(row["shape"]),
                    price_cents=int(row["price_cents"]),
                    unit_grams=float(row["unit_grams"]),
                    unit_grams_sd=float(row["unit_grams_sd"]),
                    sold_by_weight=bool(row["sold_by_weight"]),
                    min_grams=None if row.get("min_grams") is None else float(row["min_grams"]),
                    max_grams=None if row.get("max_grams") is None else float(row["max_grams"]),
                    colors=(str(row["colors"][0]), str(row["colors"][1])),
                    popularity=float(row.get("popularity", 1.0)),
                )
                for row in doc["skus"]
            ]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigurationError(f"malformed catalog: {exc!r}") from exc
        for s in skus:
            if s.sold_by_weight and (s.min_grams is None or s.max_grams is None):
                raise ConfigurationError(f"{s.sku} is sold by weight but has no gram range")
            if s.unit_grams <= 0 or s.unit_grams_sd <= 0:
                raise ConfigurationError(f"{s.sku} needs positive unit_grams and unit_grams_sd")
        return cls(skus, str(doc.get("catalog_version", "unversioned")), str(doc["currency"]))

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """The catalog at `path`, or the one shipped with the package."""
        if path is None:
            text = (resources.files("cartstream.models") / "data" / "catalog.json").read_text()
        else:
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigurationError(f"cannot read catalog {path}: {exc}") from exc
        return cls.from_dict(json.loads(text))
