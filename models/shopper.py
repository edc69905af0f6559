"""Synthetic shopper sessions: what a shopper puts in and takes out, and when (the ground truth)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cartstream.models.catalog import Catalog, Sku

Action = Literal["ADD", "REMOVE"]
Outcome = Literal["checkout", "abandoned"]


@dataclass(frozen=True)
class ShopperAction:
    """One hand movement that changes the basket: `quantity` units of one SKU in or out."""

    at_s: float  # seconds after session start when the hand enters
    settle_s: float  # seconds until the scale settles after the hand enters
    action: Action
    sku: str
    quantity: int
    unit_grams: tuple[float, ...]  # true weight of each unit moved
    hidden_from: int | None = None  # a camera that cannot see the hand (shopper in the way)

    @property
    def grams(self) -> float:
        return float(sum(self.unit_grams))


@dataclass(frozen=True)
class Bump:
    """The cart being pushed or knocked: the scale shakes, nothing changes in the basket."""

    at_s: float
    duration_s: float
    amplitude_g: float


@dataclass(frozen=True)
class SessionPlan:
    session_index: int
    actions: tuple[ShopperAction, ...]
    bumps: tuple[Bump, ...]
    outcome: Outcome
    duration_s: float
    drift_g_per_min: float
    scenarios: frozenset[str] = field(default_factory=frozenset)

    def basket(self) -> Counter[str]:
        """The true basket at the end: SKU -> units (bags for items sold by weight)."""
        basket: Counter[str] = Counter()
        for a in self.actions:
            basket[a.sku] += a.quantity if a.action == "ADD" else -a.quantity
        return +basket

    def basket_grams(self) -> float:
        return sum(a.grams if a.action == "ADD" else -a.grams for a in self.actions)


@dataclass(frozen=True)
class ShopperProfile:
    """The mix of behaviour; defaults are a plain weekday store."""

    mean_items: float = 7.0
    max_items: int = 18
    multi_item_rate: float = 0.08  # an add moves 2-3 units of the same SKU at once
    removal_rate: float = 0.08  # chance, per add, that an earlier item goes back later
    occlusion_rate: float = 0.1  # chance that one camera cannot see a hand movement
    abandon_rate: float = 0.12
    bump_rate_per_min: float = 1.5
    min_gap_s: float = 2.0
    max_gap_s: float = 7.0


def _unit_grams(rng: np.random.Generator, sku: Sku) -> float:
    if sku.sold_by_weight:
        assert sku.min_grams is not None and sku.max_grams is not None
        return float(rng.uniform(sku.min_grams, sku.max_grams))
    return float(max(1.0, rng.normal(sku.unit_grams, sku.unit_grams_sd)))


def plan_session(
    rng: np.random.Generator,
    catalog: Catalog,
    index: int,
    profile: ShopperProfile | None = None,
) -> SessionPlan:
    """One shopper session drawn from `rng` (so a seed reproduces it exactly)."""
    p = profile or ShopperProfile()
    n_adds = int(np.clip(rng.poisson(p.mean_items), 1, p.max_items))
    t = float(rng.uniform(1.5, 4.0))
    actions: list[ShopperAction] = []
    in_basket: list[tuple[str, float]] = []  # (sku, unit grams) of every unit inside
    scenarios: set[str] = set()
    for _ in range(n_adds):
        sku = catalog.skus[int(rng.choice(len(catalog), p=catalog.popularity))]
        quantity = 1
        if not sku.sold_by_weight and rng.random() < p.multi_item_rate:
            quantity = int(rng.integers(2, 4))
            scenarios.add("multi_item")
        units = tuple(_unit_grams(rng, sku) for _ in range(quantity))
        settle = float(rng.uniform(0.3, 1.0))
        hidden = _hidden_camera(rng, p)
        actions.append(ShopperAction(t, settle, "ADD", sku.sku, quantity, units, hidden))
        in_basket.extend((sku.sku, g) for g in units)
        scenarios |= _scenarios(catalog, sku.sku, hidden)
        t += settle + float(rng.uniform(p.min_gap_s, p.max_gap_s))
        if len(in_basket) > 1 and rng.random() < p.removal_rate:
            victim = int(rng.integers(len(in_basket)))
            sku_code, grams = in_basket.pop(victim)
            settle = float(rng.uniform(0.3, 1.0))
            hidden = _hidden_camera(rng, p)
            actions.append(ShopperAction(t, settle, "REMOVE", sku_code, 1, (grams,), hidden))
            scenarios |= {"removal"} | _scenarios(catalog, sku_code, hidden)
            t += settle + float(rng.uniform(p.min_gap_s, p.max_gap_s))
    duration = t + float(rng.uniform(1.0, 3.0))
    bumps = _plan_bumps(rng, actions, duration, p)
    outcome: Outcome = "abandoned" if rng.random() < p.abandon_rate else "checkout"
    drift = float(rng.normal(0.0, 1.5))
    return SessionPlan(index, tuple(actions), bumps, outcome, duration, drift, frozenset(scenarios))


def _hidden_camera(rng: np.random.Generator, p: ShopperProfile) -> int | None:
    return int(rng.integers(2)) if rng.random() < p.occlusion_rate else None


def _scenarios(catalog: Catalog, sku: str, hidden: int | None) -> set[str]:
    """The hard cases one hand movement belongs to (the evaluator scores each separately)."""
    tags = set()
    if catalog[sku].sold_by_weight:
        tags.add("produce")
    if catalog.lookalikes[sku]:
        tags.add("lookalike")
    if catalog.weight_twins[sku]:
        tags.add("equal_weight")
    if hidden is not None:
        tags.add("occlusion")
    return tags


def _plan_bumps(
    rng: np.random.Generator,
    actions: list[ShopperAction],
    duration: float,
    p: ShopperProfile,
) -> tuple[Bump, ...]:
    """Bumps fall only in quiet gaps (a bump during a placement is just a slower settle)."""
    bumps: list[Bump] = []
    busy = [(a.at_s - 0.6, a.at_s + a.settle_s + 0.8) for a in actions]
    n = int(rng.poisson(p.bump_rate_per_min * duration / 60.0))
    for _ in range(n):
        length = float(rng.uniform(0.5, 1.5))
        start = float(rng.uniform(0.5, max(0.6, duration - length - 0.5)))
        end = start + length
        if any(start < b1 and end > b0 for b0, b1 in busy):
            continue
        bumps.append(Bump(start, length, float(rng.uniform(8.0, 40.0))))
        busy.append((start - 0.6, end + 0.8))
    return tuple(sorted(bumps, key=lambda b: b.at_s))
