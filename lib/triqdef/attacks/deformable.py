"""DPR, the deformable patch (Chen et al., ECCV 2022; TriQDef appendix C.4, Table 16): a patch whose shape is
optimised together with its texture, under an area budget.

The shape is a star-shaped region inside the patch's ``s × s`` box: a centre ``c`` and ``K`` radii
``r_0 … r_{K−1}`` at the sector angles ``2πk/K``. At a pixel centre ``p`` at distance ``d`` and angle ``θ``
from ``c`` the boundary radius ``r(θ)`` interpolates linearly between the two neighbouring sector radii,
and the soft mask is

    M(p) = ½ · (1 + tanh(κ · (r(θ) − d)))          (κ: ``sharpness``, in 1/pixels)

so that the mask, and through it the attack's loss, is differentiable in ``c`` and every ``r_k``. The
patched image is ``x ⊙ (1 − M) + P ⊙ M`` (:func:`triqdef.attacks.patches.paste`). The **area budget**
``a ∈ (0, 1)`` bounds the mask's mean over the box: after every step the radii are scaled down (bisection on
one factor) until ``mean(M) ≤ a`` (:func:`project_to_budget`).

The attack itself is the one patch optimiser's ``dpr`` recipe (:mod:`triqdef.attacks.universal`,
``recipe("dpr", ...)``): universal targeted patches, texture and shape optimised together at random locations
inside the training region (expectation over location, as LAVAN), K patches in one forward per step; each
returned :class:`~triqdef.attacks.patches.Patch` carries its mask. This module is the shape's geometry.
"""

from __future__ import annotations

import math
import torch

from triqdef.errors import TriqdefError


def check_area_budget(budget: float) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < 1:
        raise TriqdefError(f"DPR area budget {budget!r}: expected a fraction of the patch box in (0, 1)")
    return float(budget)


def deformable_mask(center: torch.Tensor, radii: torch.Tensor, size: int, sharpness: float = 4.0) -> torch.Tensor:
    """The soft mask (1, s, s) of the star-shaped region with ``center`` (2,) = (row, col) in pixels of the box
    and ``radii`` (K,) in pixels (K >= 3), sharpened by ``sharpness``; differentiable in both."""
    if radii.ndim != 1 or radii.numel() < 3:
        raise TriqdefError(f"DPR radii of shape {tuple(radii.shape)}: expected (K,) with K >= 3 sectors")
    k = radii.numel()
    coords = torch.arange(size, dtype=radii.dtype, device=radii.device) + 0.5
    dy = coords[:, None] - center[0]
    dx = coords[None, :] - center[1]
    dist = torch.sqrt(dy**2 + dx**2 + 1e-12)
    u = torch.remainder(torch.atan2(dy, dx), 2 * math.pi) / (2 * math.pi) * k  # sector position in [0, K)
    lower = torch.floor(u).long().clamp_(0, k - 1)
    frac = u - lower.to(u.dtype)
    boundary = (1 - frac) * radii[lower] + frac * radii[(lower + 1) % k]
    return (0.5 * (1 + torch.tanh(sharpness * (boundary - dist))))[None]


def project_to_budget(center: torch.Tensor, radii: torch.Tensor, size: int, budget: float, sharpness: float = 4.0,
                      iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """The shape moved back into its constraints: the centre inside the box, the radii in ``[0, s]``, and the
    radii scaled by the largest factor in ``[0, 1]`` (bisection) whose mask covers at most ``budget`` of the
    box. A shape already within budget keeps its radii."""
    budget = check_area_budget(budget)
    with torch.no_grad():
        center = center.clamp(0.0, float(size))
        radii = radii.clamp(0.0, float(size))
        if deformable_mask(center, radii, size, sharpness).mean() <= budget:
            return center, radii
        lo, hi = 0.0, 1.0
        for _ in range(iterations):
            mid = (lo + hi) / 2
            if deformable_mask(center, radii * mid, size, sharpness).mean() <= budget:
                lo = mid
            else:
                hi = mid
        return center, radii * lo
