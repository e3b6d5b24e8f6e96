"""TriQDef's penalties: FDP (paper eq. 2) and GPDP (paper eq. 3).

Both are the same pairwise perceptual similarity, applied to different maps:

    P(d_i, d_j) = α · SoftDice(S(Sobel(m_i)), S(Sobel(m_j))) + β · cos(SoftHOG(m_i), SoftHOG(m_j))

with ``m`` one min-max-normalised map per sample (:func:`triqdef.perceptual.to_map`:
a tap layer's channel mean for FDP, the channel mean of |∇_x| for GPDP), ``S``
the soft binarisation (k, q), averaged over the samples, and summed over the
ordered pairs of active bit-widths b_i ≠ b_j (each unordered pair twice, as
eq. 2 and 3 are written; ``pair_reduction="mean"`` divides by the number of
ordered pairs) and, for FDP, over the tap layers. docs/design.md#soft-binarisation-in-both-penalties:
the soft binarisation is used in both penalties (eq. 3 and Algorithm 2 leave it out).

Two ways to get the gradient:

* :func:`pairwise_penalty` on descriptors that all carry a graph (every
  bit-width's graph held at once; the reference, and the ``nn.Module`` forms);
* :func:`one_sided_penalty`, the memory-bounded form (docs/design.md#one-bit-width-at-a-time): all
  bit-widths' descriptors are first computed without a graph; then, one
  bit-width i at a time, its descriptors are recomputed with a graph and
  paired with the others' detached ones. For a symmetric P the passes of i and
  of j together give ∂P/∂d_i ∇d_i + ∂P/∂d_j ∇d_j, so the sum over i of the
  one-sided terms (each counting its pairs twice, as the ordered sum does)
  has exactly the gradient of the full penalty. ``tests/test_losses.py``
  checks that equality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import perceptual as P
from triqdef.errors import TriqdefError
from triqdef.syncguard import host_to_device

PAIR_REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class PenaltySettings:
    """α, β (eq. 2, 3), soft binarisation (k, q), pair reduction, and the map down-sampling factor.

    ``downsample``: maps are average-pooled by this factor before the edge and
    HOG descriptors (appendix D: "low-resolution proxies ... downsampled by
    2"), but never below 8×8 (HOG needs two 4-pixel cells per side).
    """

    alpha: float = 0.5
    beta: float = 1.0
    k: float = 100.0
    q: float = 0.85
    pair_reduction: str = "sum"
    downsample: int = 1

    def __post_init__(self):
        if self.pair_reduction not in PAIR_REDUCTIONS:
            raise TriqdefError(f"pair_reduction = {self.pair_reduction!r}: expected one of {', '.join(PAIR_REDUCTIONS)}")
        if not isinstance(self.downsample, int) or self.downsample < 1:
            raise TriqdefError(f"downsample = {self.downsample!r}: expected a positive integer")
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise TriqdefError(f"{name} = {v!r}: expected a number >= 0")


@dataclass
class Descriptor:
    """Soft edge mask ``(N, H, W)`` and SoftHOG descriptor ``(N, D)`` of one map per sample."""

    edges: torch.Tensor
    hog: torch.Tensor

    def detach(self) -> Descriptor:
        return Descriptor(self.edges.detach(), self.hog.detach())


def describe(x: torch.Tensor, kind: str, settings: PenaltySettings) -> Descriptor:
    """Descriptor of a feature map or an input gradient ``(N, C, H, W)`` (``kind`` = ``feature`` | ``gradient``).

    It runs inside training steps, so its finite-value checks do not wait for the device (``blocking=False``)."""
    m = P.to_map(x, kind, blocking=False)
    f = settings.downsample
    if f > 1 and min(m.shape[-2:]) // f >= P.HOG_MIN_SIZE:
        m = P.minmax_normalize(F.avg_pool2d(m.unsqueeze(1), f).squeeze(1), blocking=False)
    return Descriptor(*P.soft_edge_hog(m, settings.k, settings.q, blocking=False))


def pair_similarity(a: Descriptor, b: Descriptor, settings: PenaltySettings) -> torch.Tensor:
    """P(a, b) = α SoftDice(edges) + β cos(SoftHOG), averaged over the samples.

    ``b`` may be a stack of K descriptors (edges ``(K, N, H, W)``, hog
    ``(K, N, D)``): the result is then ``(K,)``, P of ``a`` with each.
    """
    dice = P.batched_soft_dice(a.edges, b.edges)
    cos = P.descriptor_cosine(a.hog, b.hog)
    return settings.alpha * dice.mean(dim=-1) + settings.beta * cos.mean(dim=-1)


def _stack(descs: Sequence[Descriptor]) -> Descriptor:
    """K descriptors of one layer as one stacked descriptor (edges ``(K, N, H, W)``, hog ``(K, N, D)``)."""
    return Descriptor(torch.stack([d.edges for d in descs]), torch.stack([d.hog for d in descs]))


def _n_ordered_pairs(n_bits: int) -> int:
    return n_bits * (n_bits - 1)


def pairwise_penalty(descs: Mapping[int, Sequence[Descriptor]], settings: PenaltySettings) -> torch.Tensor:
    """The penalty of eq. 2 / eq. 3: sum over layers and ordered pairs b_i ≠ b_j of P (or the mean over pairs).

    ``descs`` maps each active bit-width to its descriptors, one per layer (one
    for GPDP). Fewer than two bit-widths give 0.
    """
    bits = list(descs)
    if len(bits) < 2:
        first = next(iter(descs.values()))[0] if descs else None
        return first.hog.new_zeros(()) if first is not None else torch.zeros(())
    n_layers = {len(d) for d in descs.values()}
    if len(n_layers) != 1:
        raise TriqdefError(f"descriptors of {sorted(n_layers)} layers: expected the same layers for every bit-width")
    first, second = (torch.tensor(side) for side in zip(*[(i, j) for i in range(len(bits)) for j in range(i + 1, len(bits))]))
    total = 0.0
    for layer in range(n_layers.pop()):  # every unordered pair of bit-widths in one stacked call per layer
        stacked = _stack([descs[b][layer] for b in bits])
        # the pair indices copied without a wait (an index list would be copied from pageable memory: a host sync)
        i, j = (host_to_device(side, stacked.edges.device) for side in (first, second))
        a = Descriptor(stacked.edges[i], stacked.hog[i])
        b = Descriptor(stacked.edges[j], stacked.hog[j])
        total = total + 2.0 * pair_similarity(a, b, settings).sum()  # (i, j) and (j, i): P is symmetric
    if settings.pair_reduction == "mean":
        total = total / _n_ordered_pairs(len(bits))
    return total


def one_sided_penalty(own: Sequence[Descriptor], others: Mapping[int, Sequence[Descriptor]], n_bits: int,
                      settings: PenaltySettings) -> torch.Tensor:
    """Bit-width i's share of the penalty for the memory-bounded gradient (see the module docstring).

    ``own``: bit-width i's descriptors with a graph; ``others``: the other
    active bit-widths' detached descriptors. Returns ``2 Σ_j Σ_l P(d_i, D_j)``
    (divided by the number of ordered pairs for ``mean``): summed over i, its
    gradient equals that of :func:`pairwise_penalty`. Its *value* is twice i's
    share; log :func:`pairwise_penalty` of the detached descriptors instead.
    """
    if n_bits < 2 or not others:
        return own[0].hog.new_zeros(())
    if any(len(d) != len(own) for d in others.values()):
        raise TriqdefError(f"descriptors of {len(own)} layers against others' {[len(d) for d in others.values()]}: "
                           "expected the same layers for every bit-width")
    total = 0.0
    for layer, a in enumerate(own):  # against every other bit-width in one stacked call per layer
        theirs = _stack([d[layer] for d in others.values()]).detach()
        total = total + 2.0 * pair_similarity(a, theirs, settings).sum()
    if settings.pair_reduction == "mean":
        total = total / _n_ordered_pairs(n_bits)
    return total


class FeatureDisalignmentPenalty(nn.Module):
    """L_FDP of paper eq. 2 (Algorithm 1) on tap-layer feature maps, every bit-width's graph held.

    ``forward(features)``: ``{bits: [tensor (N, C, H, W) per tap layer]}`` → scalar.
    """

    def __init__(self, settings: PenaltySettings | None = None):
        super().__init__()
        self.settings = settings or PenaltySettings()

    def forward(self, features: Mapping[int, Sequence[torch.Tensor]]) -> torch.Tensor:
        descs = {b: [describe(f, "feature", self.settings) for f in fs] for b, fs in features.items()}
        return pairwise_penalty(descs, self.settings)

    def extra_repr(self) -> str:
        return str(self.settings)


class GradientPerceptualDissonancePenalty(nn.Module):
    """L_GPDP of paper eq. 3 (Algorithm 2) on input gradients, every bit-width's graph held.

    ``forward(gradients)``: ``{bits: ∇_x (N, C, H, W)}`` (made with
    ``create_graph=True`` for training) → scalar.
    """

    def __init__(self, settings: PenaltySettings | None = None):
        super().__init__()
        self.settings = settings or PenaltySettings()

    def forward(self, gradients: Mapping[int, torch.Tensor]) -> torch.Tensor:
        descs = {b: [describe(g, "gradient", self.settings)] for b, g in gradients.items()}
        return pairwise_penalty(descs, self.settings)

    def extra_repr(self) -> str:
        return str(self.settings)
