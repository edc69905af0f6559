"""Synthetic shopper sessions: what a shopper puts in and takes out, and when (the ground truth)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from cartstream.models.catalog import Catalog, Sku

Action = Literal["ADD", "REMOVE"]
Outcome = Literal["checkout", "abandoned"]
ALL_CAMERAS = -1  # `hidden_from`: no camera sees the hand
ANOMALY_KINDS = (
    "UNRECOGNIZED_ITEM",
    "ITEM_SWAP",
    "CAMERA_BLOCKED",
    "SCALE_TAMPER",
    "REMOVAL_UNSEEN",
    "CHECKOUT_WEIGHT_MISMATCH",
)


@dataclass(frozen=True)
class ShopperAction:
    """One hand movement that changes the basket: `quantity` units of one SKU in or out."""

    at_s: float  # seconds after session start when the hand enters
    settle_s: float  # seconds until the scale settles after the hand enters
    action: Action
    sku: str
    quantity: int
    unit_grams: tuple[float, ...]  # true weight of each unit moved
    hidden_from: int | None = None  # a camera that cannot see the hand; ALL_CAMERAS: none can
    shown_sku: str | None = None  # what the cameras see in the hand, when not `sku` (a swap)

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
class Tamper:
    """Weight on the scale that is no item: a lean (up, held, back down) or a slow creep that
    stays (something slipped in too slowly for any step to show)."""

    at_s: float
    ramp_s: float
    hold_s: float
    grams: float
    returns: bool


@dataclass(frozen=True)
class SessionPlan:
    session_index: int
    actions: tuple[ShopperAction, ...]
    bumps: tuple[Bump, ...]
    outcome: Outcome
    duration_s: float
    drift_g_per_min: float
    scenarios: frozenset[str] = field(default_factory=frozenset)
    anomaly: str | None = None  # the injected loss-prevention case (ground truth), if any
    tampers: tuple[Tamper, ...] = ()
    dark_camera: tuple[int, float] | None = None  # (camera, from second): lens covered

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
    # chance per session of each injected loss-prevention case (at most one per session)
    anomaly_rate: float = 0.03

    def honest(self) -> ShopperProfile:
        """The same shoppers with no injected anomalies (the basket-accuracy mix)."""
        return replace(self, anomaly_rate=0.0)


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
    plan = SessionPlan(index, tuple(actions), bumps, outcome, duration, drift, frozenset(scenarios))
    return inject_anomaly(rng, catalog, plan, p)


# Long on purpose: one short branch per injected kind, kept side by side so the kinds read as
# one table of what each case does to the session.
def inject_anomaly(
    rng: np.random.Generator, catalog: Catalog, plan: SessionPlan, p: ShopperProfile
) -> SessionPlan:
    """Maybe turn an honest session into one loss-prevention case (drawn after everything
    else, so the honest part of a session is the same whatever the rates)."""
    draw = float(rng.random())
    if draw >= p.anomaly_rate * len(ANOMALY_KINDS):
        return plan
    kind = ANOMALY_KINDS[int(draw / p.anomaly_rate)]
    actions = list(plan.actions)
    end = plan.duration_s
    adds = [
        i for i, a in enumerate(actions) if a.action == "ADD" and not catalog[a.sku].sold_by_weight
    ]
    if kind in ("UNRECOGNIZED_ITEM", "ITEM_SWAP") and not adds:
        return plan
    if kind == "CHECKOUT_WEIGHT_MISMATCH" and plan.outcome != "checkout":
        return plan  # only a checkout weighs the basket
    changes: dict[str, Any] = {"anomaly": kind}
    if kind == "UNRECOGNIZED_ITEM":  # put in where no camera sees it
        i = adds[int(rng.integers(len(adds)))]
        actions[i] = replace(actions[i], hidden_from=ALL_CAMERAS)
    elif kind == "ITEM_SWAP":  # the cameras see one label, the item is another
        i = adds[int(rng.integers(len(adds)))]
        real = catalog[actions[i].sku]
        grams = actions[i].grams

        # a label whose weight, at any count a hand carries, is clearly not what went in
        def far(code: str) -> bool:
            s = catalog[code]
            return not s.sold_by_weight and all(
                abs(q * s.unit_grams - grams) > max(0.15 * grams, 6 * s.unit_grams_sd * q**0.5)
                for q in range(1, 5)
            )

        decoys = [
            s.sku
            for s in catalog.skus
            if s.sku != real.sku
            and s.sku not in catalog.lookalikes[real.sku]
            and far(s.sku)
            and all(far(other) for other in catalog.lookalikes[s.sku])
        ]
        actions[i] = replace(actions[i], shown_sku=decoys[int(rng.integers(len(decoys)))])
    elif kind == "REMOVAL_UNSEEN":  # something taken out of sight at the end
        inside = plan.basket()
        packaged = sorted(s for s in inside if not catalog[s].sold_by_weight)
        if not packaged:
            return plan
        sku = packaged[int(rng.integers(len(packaged)))]
        grams = next(a.unit_grams[0] for a in actions if a.sku == sku and a.action == "ADD")
        settle = float(rng.uniform(0.3, 1.0))
        actions.append(
            ShopperAction(end, settle, "REMOVE", sku, 1, (grams,), hidden_from=ALL_CAMERAS)
        )
        end += settle + float(rng.uniform(p.min_gap_s, p.max_gap_s))
    elif kind == "SCALE_TAMPER":  # leaning on the basket, out of the cameras' view
        hold = float(rng.uniform(2.0, 5.0))
        lean = Tamper(end, 0.4, hold, float(rng.uniform(1500.0, 6000.0)), returns=True)
        changes["tampers"] = (lean,)
        end += 0.8 + hold + float(rng.uniform(p.min_gap_s, p.max_gap_s))
    elif kind == "CAMERA_BLOCKED":  # a lens covered before one of the movements
        i = int(rng.integers(len(actions)))
        changes["dark_camera"] = (int(rng.integers(2)), max(0.0, actions[i].at_s - 1.0))
    else:  # CHECKOUT_WEIGHT_MISMATCH: weight that creeps in too slowly to make a step
        ramp = float(rng.uniform(90.0, 120.0))
        creep = Tamper(end, ramp, 0.0, float(rng.uniform(400.0, 800.0)), returns=False)
        changes["tampers"] = (creep,)
        end += ramp + 2.0
    return replace(
        plan,
        actions=tuple(actions),
        duration_s=end + 1.5 if end != plan.duration_s else end,
        scenarios=plan.scenarios | {"anomaly"},
        **changes,
    )


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
