"""Which SKU and quantity best explain a settled weight step, from weight alone.

A posterior over hypotheses (SKU, quantity) plus an "unknown item" hypothesis:
- packaged SKU x q units: Gaussian, mean q*unit_grams, variance q*unit_sd^2 + step_sigma^2;
- items sold by weight (one bag): flat over the SKU's bag range, soft edges;
- unknown: a flat density over the scale's range with a small prior.
Additions consider the whole catalog (prior = popularity x quantity prior); removals consider only
what is in the basket (prior = share of units), produce bags by their measured grams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cartstream.models.catalog import Catalog

MatchAction = Literal["ADD", "REMOVE", "UNKNOWN"]


@dataclass(frozen=True)
class Match:
    action: MatchAction
    sku: str | None
    quantity: int
    confidence: float
    grams: float  # absolute grams of the step


@dataclass(frozen=True)
class MatchParams:
    max_quantity: int = 4
    unknown_prior: float = 0.02
    unknown_density: float = 1.0 / 4000.0  # per gram
    produce_edge_frac: float = 0.05  # soft edge of a bag range, as a fraction of its width
    bag_reading_sd_g: float = 2.0  # how well a bag's grams repeat on the scale


def _log_normal(x: np.ndarray | float, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.asarray(-0.5 * (x - mean) ** 2 / var - 0.5 * np.log(2 * math.pi * var))


class WeightMatcher:
    def __init__(self, catalog: Catalog, params: MatchParams | None = None) -> None:
        self.catalog = catalog
        self.params = params or MatchParams()
        q = np.arange(1, self.params.max_quantity + 1, dtype=np.float64)
        self._q = q
        q_prior = np.where(q == 1, 0.85, 0.15 / max(1, q.size - 1))
        packaged = ~catalog.by_weight
        self._means = catalog.unit_grams[:, None] * q[None, :]
        self._unit_var = (catalog.unit_grams_sd**2)[:, None] * q[None, :]
        log_pop = np.log(catalog.popularity)
        self._add_log_prior = np.where(
            packaged[:, None], log_pop[:, None] + np.log(q_prior)[None, :], -np.inf
        )
        low, high = catalog.gram_range
        self._produce_low, self._produce_high = low, high
        self._produce_log_prior = np.where(catalog.by_weight, log_pop, -np.inf)
        self._log_unknown = math.log(self.params.unknown_prior * self.params.unknown_density)

    def _produce_loglik(self, grams: float, sigma: float) -> np.ndarray:
        low, high = self._produce_low, self._produce_high
        width = np.maximum(high - low, 1.0)
        edge = self.params.produce_edge_frac * width + sigma
        outside = np.maximum(low - grams, 0.0) + np.maximum(grams - high, 0.0)
        return np.asarray(-np.log(width) - 0.5 * (outside / edge) ** 2)

    def match_add(self, grams: float, sigma: float) -> Match:
        packaged = _log_normal(grams, self._means, self._unit_var + sigma**2) + self._add_log_prior
        produce = self._produce_loglik(grams, sigma) + self._produce_log_prior
        scores = np.concatenate([packaged.ravel(), produce, [self._log_unknown]])
        post = np.exp(scores - scores.max())
        post /= post.sum()
        best = int(post.argmax())
        n_pack = packaged.size
        if best == scores.size - 1:
            return Match("UNKNOWN", None, 0, float(post[best]), grams)
        if best < n_pack:
            sku_i, q_i = divmod(best, self._q.size)
            return Match("ADD", self.catalog.skus[sku_i].sku, q_i + 1, float(post[best]), grams)
        sku_i = best - n_pack
        return Match("ADD", self.catalog.skus[sku_i].sku, 1, float(post[best]), grams)

    def match_remove(
        self,
        grams: float,
        sigma: float,
        units: Mapping[str, int],
        bags: Mapping[str, Sequence[float]],
    ) -> Match:
        """`units`: packaged SKU -> units in the basket; `bags`: by-weight SKU -> bag grams."""
        labels: list[tuple[str, int]] = []
        scores: list[float] = []
        total = sum(units.values()) + sum(len(b) for b in bags.values())
        if total == 0:
            return Match("UNKNOWN", None, 0, 1.0, grams)
        for sku, count in units.items():
            item = self.catalog[sku]
            for q in range(1, min(count, self.params.max_quantity) + 1):
                var = q * item.unit_grams_sd**2 + sigma**2
                ll = float(_log_normal(grams, np.array(q * item.unit_grams), np.array(var)))
                labels.append((sku, q))
                scores.append(ll + math.log(count / total) + (0.0 if q == 1 else math.log(0.15)))
        for sku, bag_list in bags.items():
            for bag in bag_list:
                var = self.params.bag_reading_sd_g**2 + sigma**2
                ll = float(_log_normal(grams, np.array(bag), np.array(var)))
                labels.append((sku, 1))
                scores.append(ll + math.log(1 / total))
        arr = np.array([*scores, self._log_unknown])
        post = np.exp(arr - arr.max())
        post /= post.sum()
        best = int(post.argmax())
        if best == len(labels):
            return Match("UNKNOWN", None, 0, float(post[best]), grams)
        sku, q = labels[best]
        return Match("REMOVE", sku, q, float(post[best]), grams)
