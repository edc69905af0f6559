"""Fusion on hand-built steps: each case is one that weight or vision alone gets wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.fusion import Fusion, FusionParams, StepEvidence
from cartstream.streams.reason import ReasonStage


def seen(catalog: Catalog, **scores: float) -> np.ndarray:
    v = np.zeros(len(catalog))
    for sku, score in scores.items():
        v[catalog.index(sku.replace("_", "-"))] = score
    return v


def decide(
    catalog: Catalog, step: StepEvidence, mode: str = "fused"
) -> tuple[str, str | None, int]:
    (d,) = Fusion(catalog, mode=mode, device="cpu").decide([step])  # type: ignore[arg-type]
    return d.action, d.sku, d.quantity


def test_equal_weights_told_apart_by_vision(catalog: Catalog) -> None:
    step = StepEvidence(348.5, 1.5, seen(catalog, BEV_COLA_ZERO_330=0.9, BEV_COLA_330=0.2))
    assert decide(catalog, step) == ("ADD", "BEV-COLA-ZERO-330", 1)
    assert decide(catalog, step, "weight")[1] != "BEV-COLA-ZERO-330"  # weight alone guesses


def test_look_alikes_told_apart_by_weight(catalog: Catalog) -> None:
    step = StepEvidence(789.0, 1.5, seen(catalog, PAN_FLAKES_375=0.7, PAN_FLAKES_750=0.6))
    assert decide(catalog, step) == ("ADD", "PAN-FLAKES-750", 1)
    assert decide(catalog, step, "vision")[1] == "PAN-FLAKES-375"  # vision alone is fooled


def test_two_units_at_once(catalog: Catalog) -> None:
    grams = 2 * catalog["BEV-WATER-500"].unit_grams
    step = StepEvidence(grams, 1.5, seen(catalog, BEV_WATER_500=0.9))
    assert decide(catalog, step) == ("ADD", "BEV-WATER-500", 2)


def test_removal_of_what_is_in_the_basket(catalog: Catalog) -> None:
    step = StepEvidence(
        -350.2, 1.5, seen(catalog, BEV_COLA_330=0.8), units={"BEV-COLA-330": 1, "PAN-TUNA-160": 2}
    )
    assert decide(catalog, step) == ("REMOVE", "BEV-COLA-330", 1)
    empty = StepEvidence(-350.2, 1.5, seen(catalog, BEV_COLA_330=0.8))
    assert decide(catalog, empty)[0] == "UNKNOWN"


def test_produce_is_identified_by_vision_and_weighed(catalog: Catalog) -> None:
    step = StepEvidence(812.0, 1.5, seen(catalog, PRD_APPLE=0.85))
    assert decide(catalog, step) == ("ADD", "PRD-APPLE", 1)
    bag = StepEvidence(
        -640.0, 1.5, seen(catalog, PRD_APPLE=0.7), bags=[("PRD-APPLE", 812.0), ("PRD-APPLE", 640.4)]
    )
    assert decide(catalog, bag) == ("REMOVE", "PRD-APPLE", 1)


def frames(catalog: Catalog, *views: dict[str, float]) -> np.ndarray:
    """One row of in-hand scores per camera frame."""
    return np.stack([seen(catalog, **v) for v in views])


def test_frames_that_disagree_on_a_look_alike_are_outvoted(catalog: Catalog) -> None:
    # equal weights (805 g vs 810 g): only the cameras can tell, and one of four views is wrong
    views = frames(
        catalog,
        {"BAK_WHOLEMEAL_800": 0.6},
        {"BAK_WHITE_800": 0.5},
        {"BAK_WHOLEMEAL_800": 0.55},
        {"BAK_WHOLEMEAL_800": 0.7},
    )
    step = StepEvidence(809.0, 1.5, views)
    assert decide(catalog, step) == ("ADD", "BAK-WHOLEMEAL-800", 1)
    swapped = StepEvidence(809.0, 1.5, views[:, ::-1].copy())  # the same views, other SKUs
    assert decide(catalog, swapped)[1] != "BAK-WHOLEMEAL-800"


def test_a_smaller_look_alike_share_lets_the_views_outvote_popularity(
    catalog: Catalog, settings: Settings
) -> None:
    # two of three views favour wholemeal, each also scoring white; white is the more popular
    views = frames(
        catalog,
        {"BAK_WHOLEMEAL_800": 0.6, "BAK_WHITE_800": 0.4},
        {"BAK_WHITE_800": 0.55, "BAK_WHOLEMEAL_800": 0.45},
        {"BAK_WHOLEMEAL_800": 0.6, "BAK_WHITE_800": 0.4},
    )
    step = StepEvidence(809.0, 1.5, views)

    def sku(share: float) -> str | None:
        params = FusionParams(lookalike_share=share)
        (d,) = Fusion(catalog, device="cpu", params=params).decide([step])
        return d.sku

    # at 0.4 each loaf's score lends so much to the other that the views nearly tie, and
    # popularity decides; at 0.15 the views decide
    assert sku(0.4) == "BAK-WHITE-800"
    assert sku(0.15) == "BAK-WHOLEMEAL-800"
    assert FusionParams().lookalike_share == 0.15
    tuned = settings.with_overrides(reason={"lookalike_share": 0.3})
    assert ReasonStage(tuned, catalog).fusion.params.lookalike_share == 0.3


def test_units_counted_in_hand_settle_an_ambiguous_weight(catalog: Catalog) -> None:
    # two 6-packs (2 x 390 g) weigh about what one 12-pack (760 g) does
    views = frames(catalog, *[{"DAI_EGGS_6": 0.6}] * 3, {"DAI_EGGS_12": 0.6})
    two = StepEvidence(775.0, 1.5, views, counts=np.array([2, 2, 1, 2]))
    one = StepEvidence(775.0, 1.5, views, counts=np.array([1, 1, 1, 1]))
    assert decide(catalog, two) == ("ADD", "DAI-EGGS-6", 2)
    assert decide(catalog, one)[2] == 1


def test_frames_are_batched_with_different_counts_per_step(catalog: Catalog) -> None:
    steps = [
        StepEvidence(348.5, 1.5, frames(catalog, {"BEV_COLA_ZERO_330": 0.9})),
        StepEvidence(348.5, 1.5, None),
        StepEvidence(
            2 * 520.0, 1.5, frames(catalog, *[{"BEV_WATER_500": 0.8}] * 5), counts=np.full(5, 2)
        ),
    ]
    together = Fusion(catalog, device="cpu").decide(steps)
    alone = [Fusion(catalog, device="cpu").decide([s])[0] for s in steps]
    assert together == alone
    assert (together[2].sku, together[2].quantity) == ("BEV-WATER-500", 2)


def test_nothing_explains_it(catalog: Catalog) -> None:
    assert decide(catalog, StepEvidence(7777.0, 1.5, seen(catalog)))[0] == "UNKNOWN"
    assert decide(catalog, StepEvidence(7777.0, 1.5, None))[0] == "UNKNOWN"


def test_confidence_is_a_probability(catalog: Catalog) -> None:
    steps = [
        StepEvidence(348.5, 1.5, seen(catalog, BEV_COLA_ZERO_330=0.9)),
        StepEvidence(348.5, 1.5, None),
    ]
    sure, unsure = Fusion(catalog, device="cpu").decide(steps)
    assert 0 < unsure.confidence < sure.confidence <= 1


def test_cpu_and_cuda_decide_alike(catalog: Catalog) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: the CPU path is what the other tests cover")
    rng = np.random.default_rng(0)
    steps = [
        StepEvidence(
            float(rng.uniform(20, 3000)) * (1 if i % 3 else -1),
            1.5,
            rng.random((i % 5 + 1, len(catalog))) ** 8,
            units={"PAN-TUNA-160": 2},
            counts=rng.integers(1, 4, i % 5 + 1),
        )
        for i in range(64)
    ]
    cpu = Fusion(catalog, device="cpu").decide(steps)
    gpu = Fusion(catalog, device="cuda").decide(steps)
    assert [(d.action, d.sku, d.quantity) for d in cpu] == [
        (d.action, d.sku, d.quantity) for d in gpu
    ]


# weight alone (the reason stage's baseline until vision is wired in)


def test_catalog_has_what_the_simulator_needs(catalog: Catalog) -> None:
    assert len(catalog) >= 50
    assert sum(s.sold_by_weight for s in catalog.skus) >= 5


def test_weight_only_matches_a_distinct_weight(catalog: Catalog) -> None:
    step = StepEvidence(catalog["HH-DETERGENT-1500"].unit_grams + 2, 1.5, None)
    (d,) = Fusion(catalog, mode="weight", device="cpu").decide([step])
    assert (d.action, d.sku, d.quantity) == ("ADD", "HH-DETERGENT-1500", 1)
    assert d.confidence > 0.9


def test_weight_only_two_units(catalog: Catalog) -> None:
    step = StepEvidence(2 * catalog["HH-DETERGENT-1500"].unit_grams, 1.5, None)
    assert decide(catalog, step, "weight") == ("ADD", "HH-DETERGENT-1500", 2)


def test_weight_only_removal_considers_only_the_basket(catalog: Catalog) -> None:
    grams = catalog["BEV-COLA-330"].unit_grams
    step = StepEvidence(-grams, 1.5, None, units={"BEV-LEMON-330": 1, "PAN-TUNA-160": 2})
    assert decide(catalog, step, "weight")[:2] == ("REMOVE", "BEV-LEMON-330")  # not its twin
    assert decide(catalog, StepEvidence(-grams, 1.5, None), "weight")[0] == "UNKNOWN"


def test_weight_only_produce_bag_removal_by_its_grams(catalog: Catalog) -> None:
    step = StepEvidence(
        -733.0,
        1.5,
        None,
        units={"PAN-TUNA-160": 1},
        bags=[("PRD-APPLE", 733.4), ("PRD-BANANA", 610.0)],
    )
    assert decide(catalog, step, "weight")[:2] == ("REMOVE", "PRD-APPLE")


def test_weight_only_far_from_everything_is_unknown(catalog: Catalog) -> None:
    assert decide(catalog, StepEvidence(7777.0, 1.5, None), "weight")[0] == "UNKNOWN"


def test_the_sku_posterior_sums_over_quantities(catalog: Catalog) -> None:
    # the cameras are sure it is water but unsure whether one or two bottles
    views = frames(catalog, *[{"BEV_WATER_500": 0.9}] * 6)
    step = StepEvidence(780.0, 1.5, views, counts=np.array([1, 2, 1, 2, 2, 1]))
    (d,) = Fusion(catalog, mode="vision", device="cpu").decide([step])
    assert d.sku == "BEV-WATER-500"
    assert d.confidence < 0.95 < 0.99 < d.sku_confidence <= 1.0


def test_one_pass_with_a_mode_per_step_decides_as_a_fusion_per_mode(catalog: Catalog) -> None:
    """The reason stage decides each step under its mode and under weight and vision alone in
    one pass: every decision is the one a `Fusion(mode=...)` gives, its confidences to within
    float64 rounding (a matrix product over three rows need not round as one over one)."""
    rng = np.random.default_rng(5)
    skus = [s.sku for s in catalog.skus]
    steps = []
    for n in range(40):
        frames = int(rng.integers(0, 4))
        vision = rng.dirichlet(np.full(len(catalog), 0.2), size=frames) if frames else None
        counts = rng.integers(0, 3, size=frames).astype(float) if frames and n % 2 else None
        units = {str(s): int(rng.integers(1, 3)) for s in rng.choice(skus, size=n % 4)}
        bags = [(str(rng.choice(skus)), float(rng.uniform(100, 900))) for _ in range(n % 3)]
        grams = float(rng.uniform(20, 1500)) * (1 if n % 3 else -1)
        steps.append(StepEvidence(grams, float(rng.uniform(0.5, 4)), vision, units, bags, counts))
    modes = ["fused", "weight", "vision"]
    fusion = Fusion(catalog, device="cpu")
    alone = {m: Fusion(catalog, mode=m, device="cpu") for m in modes}  # type: ignore[arg-type]
    together = []
    for step in steps:
        one_pass = fusion.decide([step] * 3, modes=modes)  # type: ignore[arg-type]
        for got, want in zip(one_pass, [alone[m].decide([step])[0] for m in modes], strict=True):
            assert (got.action, got.sku, got.quantity, got.evidence) == (
                want.action,
                want.sku,
                want.quantity,
                want.evidence,
            )
            assert got.confidence == pytest.approx(want.confidence, rel=1e-12, abs=1e-15)
            assert got.sku_confidence == pytest.approx(want.sku_confidence, rel=1e-12, abs=1e-15)
        together += one_pass
    assert {d.evidence for d in together} == {"fused", "weight", "vision"}
    with pytest.raises(ValueError):
        Fusion(catalog, device="cpu").decide(steps, modes=["fused"])
