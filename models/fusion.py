"""Fusion: what a settled weight step was, from the weight change and what the cameras saw.

For every pending step the posterior over hypotheses
    ADD (SKU k, q units) | REMOVE (SKU k, q units) | REMOVE (bag b) | UNKNOWN
combines
- weight: Gaussian likelihood of the measured change for packaged SKUs (mean q*unit, variance
  q*unit_sd^2 + step_sigma^2), a flat bag range for items sold by weight, the bag's own grams for
  removing a bag, a flat density for UNKNOWN;
- vision: the detector's in-hand box scores v[f, k] for every camera frame f of the step that
  saw an item in hand, as sum_f log(eps + sum_j C[k, j] v[f, j]) (frames are independent views;
  C is 1 on the diagonal and `lookalike_share` between look-alikes, which the detector confuses;
  eps is how often a frame shows an unrelated SKU); UNKNOWN gets
  sum_f log(eps + u (1 - max v[f])), u = `unknown_share`;
- counts: how many boxes each frame shows in hand, against q units (mostly exact, sometimes one
  off);
- priors: popularity and a preference for one unit; removals only of what is in the basket.
`mode` selects the evidence: `weight` (no vision), `vision` (weight gives only the direction of
the change and the grams to price produce), `fused` (both).

Batched over all pending steps as tensors, on CUDA when asked and present, CPU otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from cartstream.models.catalog import Catalog
from cartstream.models.torch_device import pick_device

log = logging.getLogger(__name__)

Mode = Literal["fused", "vision", "weight"]
Action = Literal["ADD", "REMOVE", "UNKNOWN"]


@dataclass(frozen=True)
class StepEvidence:
    delta_g: float
    sigma_g: float
    vision: np.ndarray | None  # [F, K] (or [K]: one frame) in-hand scores; None: no frame
    units: dict[str, int] = field(default_factory=dict)  # packaged SKU -> units in the basket
    bags: list[tuple[str, float]] = field(default_factory=list)  # (SKU, grams) bags inside
    counts: np.ndarray | None = None  # [F] boxes in hand in each frame of `vision` (None: unknown)


@dataclass(frozen=True)
class Decision:
    action: Action
    sku: str | None
    quantity: int
    confidence: float
    evidence: str
    sku_confidence: float = 0.0  # posterior of the SKU whatever the quantity


@dataclass(frozen=True)
class FusionParams:
    max_quantity: int = 4
    unknown_prior: float = 0.02
    unknown_density: float = 1.0 / 4000.0
    produce_edge_frac: float = 0.05
    bag_reading_sd_g: float = 2.0
    vision_floor: float = 0.01  # one frame shows an unrelated SKU this often
    # a look-alike's box counts this much for its sibling. 0.4 suited a detector that confused
    # them often; for det-babb77ac6ada, `eval --mode fused --sessions 500`: seed 3 (tuning)
    # 0.9841 at 0.4, 0.9864 at 0.15; seed 1 0.9932 -> 0.9955 (docs/models.md)
    lookalike_share: float = 0.15
    unknown_share: float = 0.3  # a frame of an uncatalogued item shows no confident box
    count_right: float = 0.7  # a frame shows exactly the units in hand this often
    count_off_by_one: float = 0.2  # ... one too many or too few (overlap, a box cut off)
    multi_unit_prior: float = 0.15


def _pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad the hypothesis axis with impossible (-inf) hypotheses."""
    fill = torch.full((t.shape[0], width - t.shape[1]), -math.inf, dtype=t.dtype, device=t.device)
    return torch.cat([t, fill], dim=1)


def _only(t: torch.Tensor, rows: list[bool]) -> torch.Tensor:
    """`t` in the rows (first axis) marked True, 0 elsewhere."""
    if all(rows):
        return t
    keep = torch.tensor(rows, device=t.device).reshape(-1, *([1] * (t.dim() - 1)))
    return torch.where(keep, t, torch.zeros((), dtype=t.dtype, device=t.device))


class Fusion:
    def __init__(
        self,
        catalog: Catalog,
        mode: Mode = "fused",
        device: str = "auto",
        params: FusionParams | None = None,
    ) -> None:
        self.catalog = catalog
        self.mode = mode
        self.params = p = params or FusionParams()
        self.device = pick_device(device, "reason.device")
        dt = torch.float64
        self.q = torch.arange(1, p.max_quantity + 1, dtype=dt, device=self.device)
        q_prior = torch.where(
            self.q == 1,
            torch.tensor(1 - p.multi_unit_prior, dtype=dt),
            torch.tensor(p.multi_unit_prior / max(1, p.max_quantity - 1), dtype=dt),
        )
        self.log_q_prior = torch.log(q_prior.to(self.device))
        self.unit = torch.tensor(catalog.unit_grams, dtype=dt, device=self.device)
        self.unit_var = torch.tensor(catalog.unit_grams_sd**2, dtype=dt, device=self.device)
        self.by_weight = torch.tensor(catalog.by_weight, device=self.device)
        low, high = catalog.gram_range
        self.low = torch.tensor(low, dtype=dt, device=self.device)
        self.high = torch.tensor(high, dtype=dt, device=self.device)
        self.log_pop = torch.log(torch.tensor(catalog.popularity, dtype=dt, device=self.device))
        # the detector confuses look-alikes (same brand and shape) far more than other SKUs
        confusion = np.eye(len(catalog))
        for sku, siblings in catalog.lookalikes.items():
            for other in siblings:
                confusion[catalog.index(sku), catalog.index(other)] = p.lookalike_share
        self.confusion = torch.tensor(confusion, dtype=dt, device=self.device)
        self.log_unknown = math.log(p.unknown_prior * p.unknown_density)
        log.info("fusion: mode %s on %s", mode, self.device.type)

    def limit_cpu_threads(self, threads: int) -> None:
        """On the CPU, torch's intra-op threads for the whole process (fusion is the worker's
        only torch user; a step's tensors are too small to split)."""
        if self.device.type == "cpu":
            torch.set_num_threads(threads)

    # -- the pieces of the posterior -----------------------------------------------------------

    def _weight_packaged(self, grams: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """[S, K, Q] log-likelihood of |delta| for q units of each packaged SKU."""
        mean = self.unit[None, :, None] * self.q[None, None, :]
        var = self.unit_var[None, :, None] * self.q[None, None, :] + sigma[:, None, None] ** 2
        return -0.5 * (grams[:, None, None] - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)

    def _weight_produce(self, grams: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """[S, K] log-likelihood of one bag of each item sold by weight."""
        width = torch.clamp(self.high - self.low, min=1.0)
        edge = self.params.produce_edge_frac * width[None, :] + sigma[:, None]
        outside = torch.clamp(self.low[None, :] - grams[:, None], min=0) + torch.clamp(
            grams[:, None] - self.high[None, :], min=0
        )
        return -torch.log(width)[None, :] - 0.5 * (outside / edge) ** 2

    def _vision(
        self, vision: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[S, K] log-evidence per SKU and [S] for UNKNOWN from [S, F, K] scores of the frames
        marked in `frames` [S, F] (0 where a step has fewer frames, or none)."""
        floor = self.params.vision_floor
        support = torch.clamp(vision @ self.confusion.T, max=1.0)  # [S, F, K]
        per_sku = (torch.log(floor + support) * frames[:, :, None]).sum(1)
        miss = self.params.unknown_share * (1 - vision.max(dim=2).values)
        unknown = (torch.log(floor + miss) * frames).sum(1)
        return per_sku, unknown

    def _counts(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[S, Q] log-likelihood of the in-hand box counts [S, F] (0: no count) for q units,
        and [S] for UNKNOWN (any number of units alike: the mean over q)."""
        p = self.params
        off = torch.abs(counts[:, :, None] - self.q[None, None, :])
        like = torch.where(
            off == 0,
            torch.tensor(p.count_right, dtype=counts.dtype, device=counts.device),
            torch.where(
                off == 1,
                torch.tensor(p.count_off_by_one, dtype=counts.dtype, device=counts.device),
                torch.tensor(
                    max(1e-3, 1 - p.count_right - p.count_off_by_one),
                    dtype=counts.dtype,
                    device=counts.device,
                ),
            ),
        )
        seen = counts > 0
        ll = torch.log(like) * seen[:, :, None]
        unknown = torch.log(like.mean(dim=2)) * seen
        return ll.sum(1), unknown.sum(1)

    def _frames(self, steps: list[StepEvidence]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every step's frames stacked into [S, F, K] scores, an [S, F] mask and [S, F] counts."""
        k = len(self.catalog)
        rows = [
            np.zeros((0, k)) if s.vision is None else np.atleast_2d(np.asarray(s.vision, float))
            for s in steps
        ]
        width = max([r.shape[0] for r in rows] + [1])
        scores = np.zeros((len(steps), width, k))
        mask = np.zeros((len(steps), width))
        counts = np.zeros((len(steps), width))
        for i, (r, s) in enumerate(zip(rows, steps, strict=True)):
            scores[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1.0
            if s.counts is not None:
                counts[i, : r.shape[0]] = np.asarray(s.counts, float)[: r.shape[0]]
        return scores, mask, counts

    # -- decisions -------------------------------------------------------------------------------

    # Long on purpose: one batched tensor pass over every hypothesis of every step; split up,
    # its dozen intermediate tensors would have to travel between functions.
    def decide(
        self, steps: list[StepEvidence], modes: Sequence[Mode] | None = None
    ) -> list[Decision]:
        """Each step's decision under its mode in `modes` (default: this fusion's `mode`):
        one pass decides a step with each evidence alone too (the anomaly stage compares them),
        each row as `Fusion(mode=...)` would (confidences to within float64 rounding), without
        a pass per mode."""
        if not steps:
            return []
        row_modes = list(modes) if modes is not None else [self.mode] * len(steps)
        if len(row_modes) != len(steps):
            raise ValueError(f"{len(steps)} steps and {len(row_modes)} modes")
        dt, dev = torch.float64, self.device
        k = len(self.catalog)
        grams = torch.tensor([abs(s.delta_g) for s in steps], dtype=dt, device=dev)
        sigma = torch.tensor([s.sigma_g for s in steps], dtype=dt, device=dev)
        adding = torch.tensor([s.delta_g > 0 for s in steps], device=dev)
        frame_scores, mask, frame_counts = self._frames(steps)
        vision = torch.tensor(frame_scores, dtype=dt, device=dev)
        frames = torch.tensor(mask, dtype=dt, device=dev)
        counts = torch.tensor(frame_counts, dtype=dt, device=dev)
        units = torch.zeros(len(steps), k, dtype=dt, device=dev)
        for i, s in enumerate(steps):
            for sku, n in s.units.items():
                units[i, self.catalog.index(sku)] = n
        use_weight = [m != "vision" for m in row_modes]
        use_vision = [m != "weight" for m in row_modes]
        # a piece of evidence a row's mode leaves out is 0 in its log-posterior
        w_pack = _only(self._weight_packaged(grams, sigma), use_weight)
        w_prod = _only(self._weight_produce(grams, sigma), use_weight)
        v_sku, v_unknown = (_only(t, use_vision) for t in self._vision(vision, frames))
        c_q, c_unknown = (_only(t, use_vision) for t in self._counts(counts))
        neg_inf = torch.tensor(-math.inf, dtype=dt, device=dev)
        packaged = ~self.by_weight
        # ADD: q units of a packaged SKU, or one bag of produce
        add_pack = torch.where(
            packaged[None, :, None],
            w_pack
            + self.log_pop[None, :, None]
            + self.log_q_prior[None, None, :]
            + v_sku[:, :, None]
            + c_q[:, None, :],
            neg_inf,
        )
        add_prod = torch.where(
            self.by_weight[None, :],
            w_prod + self.log_pop[None, :] + v_sku + c_q[:, :1],
            neg_inf,
        )
        # REMOVE: q units it holds (prior: share of units), produce bags scored by their grams
        total = units.sum(1, keepdim=True) + torch.tensor(
            [[len(s.bags)] for s in steps], dtype=dt, device=dev
        )
        holds = units[:, :, None] >= self.q[None, None, :]
        share = torch.log(torch.clamp(units / torch.clamp(total, min=1), min=1e-12))
        rem_pack = torch.where(
            holds & packaged[None, :, None],
            w_pack
            + share[:, :, None]
            + self.log_q_prior[None, None, :]
            + v_sku[:, :, None]
            + c_q[:, None, :],
            neg_inf,
        )
        n_bags = max([len(s.bags) for s in steps] + [1])
        rem_bag = torch.full((len(steps), n_bags), -math.inf, dtype=dt, device=dev)
        for i, s in enumerate(steps):
            for b, (sku, bag_grams) in enumerate(s.bags):
                var = self.params.bag_reading_sd_g**2 + float(sigma[i]) ** 2
                ll = (
                    (
                        -0.5 * (float(grams[i]) - bag_grams) ** 2 / var
                        - 0.5 * math.log(2 * math.pi * var)
                    )
                    if use_weight[i]
                    else 0.0
                )
                j = self.catalog.index(sku)
                rem_bag[i, b] = (
                    ll - math.log(max(1.0, float(total[i]))) + float(v_sku[i, j]) + float(c_q[i, 0])
                )
        unknown = (
            torch.full((len(steps), 1), self.log_unknown, dtype=dt, device=dev)
            + (v_unknown[:, None])
            + c_unknown[:, None]
        )
        add_scores = torch.cat([add_pack.flatten(1), add_prod, unknown], dim=1)
        rem_scores = torch.cat([rem_pack.flatten(1), rem_bag, unknown], dim=1)
        width = max(add_scores.shape[1], rem_scores.shape[1])
        scores = torch.where(adding[:, None], _pad(add_scores, width), _pad(rem_scores, width))
        post = torch.softmax(scores, dim=1)
        best = post.argmax(dim=1)
        conf = post.gather(1, best[:, None]).squeeze(1)
        # the SKU's posterior over every quantity (packaged hypotheses are laid out SKU-major)
        nq = self.q.numel()
        per_sku = post[:, : k * nq].reshape(len(steps), k, nq).sum(2)
        sku_of = torch.clamp(best // nq, max=k - 1)
        sku_conf = torch.where(best < k * nq, per_sku.gather(1, sku_of[:, None]).squeeze(1), conf)
        return [
            replace(
                self._label(steps[i], row_modes[i], int(best[i]), float(conf[i]), n_bags),
                sku_confidence=float(sku_conf[i]),
            )
            for i in range(len(steps))
        ]

    def _label(
        self, step: StepEvidence, mode: Mode, index: int, confidence: float, n_bags: int
    ) -> Decision:
        k, nq = len(self.catalog), self.q.numel()
        seen = step.vision is not None and np.asarray(step.vision).size > 0
        evidence = mode if seen or mode == "weight" else "weight"
        if step.delta_g > 0:
            if index < k * nq:
                sku_i, q_i = divmod(index, nq)
                return Decision("ADD", self.catalog.skus[sku_i].sku, q_i + 1, confidence, evidence)
            if index < k * nq + k:
                return Decision(
                    "ADD", self.catalog.skus[index - k * nq].sku, 1, confidence, evidence
                )
            return Decision("UNKNOWN", None, 0, confidence, evidence)
        if index < k * nq:
            sku_i, q_i = divmod(index, nq)
            return Decision("REMOVE", self.catalog.skus[sku_i].sku, q_i + 1, confidence, evidence)
        if index < k * nq + n_bags and index - k * nq < len(step.bags):
            return Decision("REMOVE", step.bags[index - k * nq][0], 1, confidence, evidence)
        return Decision("UNKNOWN", None, 0, confidence, evidence)
