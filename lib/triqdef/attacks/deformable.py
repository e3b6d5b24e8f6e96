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

:func:`optimise_deformable_patch` is the attack: a universal targeted patch, texture and shape optimised
with Adam on a loss of :mod:`triqdef.attacks.objectives` (LAVAN's ``logprob`` by default) at random
locations inside the training region (expectation over location, as LAVAN), its random numbers from its
own seed. It returns a :class:`~triqdef.attacks.patches.Patch` that carries its mask.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from triqdef import quant
from triqdef.attacks.objectives import LOSSES, per_image_loss
from triqdef.attacks.patches import Patch, paste, random_locations
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


@dataclass(frozen=True, kw_only=True)
class DeformableSettings:
    """One DPR run: ``steps`` Adam steps on ``images_per_step`` images each, texture learning rate ``step_size``,
    shape learning rate ``shape_step_size`` (pixels), ``sectors`` radii, mask ``sharpness``, ``area_budget``."""

    steps: int
    images_per_step: int
    step_size: float = 0.05
    shape_step_size: float = 0.1
    sectors: int = 8
    sharpness: float = 4.0
    area_budget: float = 0.6
    loss: str = "logprob"
    border: int = 4

    def __post_init__(self) -> None:
        check_area_budget(self.area_budget)
        for name in ("steps", "images_per_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TriqdefError(f"DPR {name}={value!r}: expected a positive integer")
        if isinstance(self.sectors, bool) or not isinstance(self.sectors, int) or self.sectors < 3:
            raise TriqdefError(f"DPR sectors={self.sectors!r}: expected an integer >= 3")
        for name in ("step_size", "shape_step_size", "sharpness"):
            if not getattr(self, name) > 0:
                raise TriqdefError(f"DPR {name}={getattr(self, name)!r}: expected a positive number")
        if self.loss not in LOSSES:
            raise TriqdefError(f"DPR loss {self.loss!r}: expected one of {', '.join(LOSSES)}")


def optimise_deformable_patch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int, target: int,
                              seed: int, settings: DeformableSettings, bits: int | None = None,
                              location: tuple[int, int] | None = None, fixed_location: bool = False,
                              source_model: str = "model") -> Patch:
    """A universal targeted DPR patch of box ``size`` on ``model`` (eval mode, at ``bits``), from ``images``
    (N, 3, H, W) floats in [0, 1]: texture and shape optimised jointly, the shape projected onto the area budget
    after every step. ``location``: where the returned patch is evaluated (default: random inside the region,
    from ``seed``); ``fixed_location``: optimise there only. The patch's ``info`` records the settings, the
    final mask area and the shape."""
    s = settings
    image_size = images.shape[-1]
    if not 0 < size <= image_size - 2 * s.border:
        raise TriqdefError(f"DPR patch size {size}: expected 1..{image_size - 2 * s.border} for a {image_size}px image "
                           f"with a {s.border}px border")
    g = torch.Generator().manual_seed(int(seed))
    texture = torch.rand(3, size, size, generator=g).requires_grad_(True)
    center = torch.full((2,), size / 2).requires_grad_(True)
    radii = torch.full((s.sectors,), size / 2 * math.sqrt(s.area_budget / math.pi) * 2).requires_grad_(True)
    with torch.no_grad():  # start inside the budget
        c0, r0 = project_to_budget(center, radii, size, s.area_budget, s.sharpness)
        center.copy_(c0)
        radii.copy_(r0)
    opt = torch.optim.Adam([{"params": [texture], "lr": s.step_size},
                            {"params": [center, radii], "lr": s.shape_step_size}])
    if location is None:
        location = tuple(int(v) for v in random_locations(1, size, g, image_size, s.border)[0])
    targets = torch.full((s.images_per_step,), int(target), dtype=torch.long)
    model.eval()
    with quant.use_bitwidth(model, bits):
        for _ in range(s.steps):
            idx = torch.randint(0, images.shape[0], (s.images_per_step,), generator=g)
            locs = (torch.tensor([location]).expand(s.images_per_step, 2) if fixed_location
                    else random_locations(s.images_per_step, size, g, image_size, s.border))
            mask = deformable_mask(center, radii, size, s.sharpness)
            m = s.images_per_step
            x = paste(images[idx], texture.expand(m, -1, -1, -1), locs, mask[None].expand(m, -1, -1, -1))
            loss = per_image_loss(s.loss, model(x), labels[idx], targets).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                texture.clamp_(0, 1)
                c, r = project_to_budget(center, radii, size, s.area_budget, s.sharpness)
                center.copy_(c)
                radii.copy_(r)
    mask = deformable_mask(center.detach(), radii.detach(), size, s.sharpness)
    info = {"attack": "dpr", **asdict(s), "seed": int(seed), "fixed_location": fixed_location,
            "mask_area": float(mask.mean()), "center": center.detach().tolist(), "radii": radii.detach().tolist()}
    return Patch(texture.detach().clone(), location, int(target), "dpr", source_model, bits, info, mask)
