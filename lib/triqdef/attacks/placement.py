"""Where and how a patch lands on an image while it is optimised: the placements of the patch attacks.

A placement turns one patch content (3, s, s) and ``m`` images into ``m`` patched images, drawing its random
numbers (locations, rotations, scales) from the patch's own generator, always in the same order, so that a
patch optimised alone or beside others sees the same draws (:mod:`triqdef.attacks.universal`).

* ``square`` (LAVAN, Karmon et al. 2018): the square patch at a random location inside the region (the image
  minus a ``border``-pixel frame), or at one fixed location.
* ``eot`` (GAP, Brown et al. 2017, expectation over transformations): the patch rotated by a random angle in
  ``±max_rotation`` degrees and scaled by a random factor in ``scale_range`` (bilinear, its mask transformed
  with it) on a canvas twice its size, whose centre lands where an untransformed patch's centre may be.

Both paste with :func:`triqdef.attacks.patches.paste`, the one paste of the package.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from triqdef.attacks.patches import paste, random_locations, region_locations
from triqdef.errors import TriqdefError
from triqdef.syncguard import host_to_device

PLACEMENTS = ("square", "eot")


def place_square(images: torch.Tensor, content: torch.Tensor, generator: torch.Generator, border: int,
                 location: tuple[int, int] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The patch in its square box on every image: at ``location`` when given, else at a random location per
    image inside the region (one ``randint`` draw of shape (m, 2) from ``generator``); ``mask`` (1, s, s): a
    shaped patch (DPR) blended through it, None: the square replaces its pixels."""
    m, size, image_size = images.shape[0], content.shape[-1], images.shape[-1]
    if location is None:
        locs = random_locations(m, size, generator, image_size, border)
    else:
        locs = torch.tensor([location], dtype=torch.long).expand(m, 2)
    masks = None if mask is None else mask[None].expand(m, -1, -1, -1)
    return paste(images, content, host_to_device(locs, images.device), masks)


def eot_canvas_range(size: int, image_size: int, border: int) -> tuple[int, int]:
    """Inclusive range of top-left corners of the (2·size)² transformation canvas: its centre stays where
    an untransformed patch's centre may be (inside the region), and the canvas stays inside the image."""
    region_locations(size, image_size, border)  # the untransformed patch must fit the region
    big, off = 2 * size, size // 2
    lo, hi = max(0, border - off), min(image_size - big, image_size - border - size - off)
    if hi < lo:
        raise TriqdefError(f"GAP patch of size {size}: its {big}px transformation canvas does not fit a "
                           f"{image_size}px image with a {border}px border; expected size <= {image_size // 2}")
    return lo, hi


def place_eot(images: torch.Tensor, content: torch.Tensor, generator: torch.Generator, border: int,
              max_rotation: float, scale_range: tuple[float, float]) -> torch.Tensor:
    """The patch rotated, scaled and placed per image (draws: angles (m,), scales (m,), corners (m, 2))."""
    m, s, image_size = images.shape[0], content.shape[-1], images.shape[-1]
    big, off = 2 * s, s // 2
    lo_c, hi_c = eot_canvas_range(s, image_size, border)
    pad = (off, big - s - off, off, big - s - off)
    canvas = F.pad(content, pad)[None].expand(m, -1, -1, -1)
    mask = F.pad(torch.ones_like(content[:1]), pad)[None].expand(m, -1, -1, -1)
    angle = (torch.rand(m, generator=generator) * 2 - 1) * math.radians(max_rotation)
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(m, generator=generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros(m)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.device, content.dtype), (m, 3, big, big), align_corners=False)
    moved = F.grid_sample(canvas, grid, align_corners=False)
    moved_mask = F.grid_sample(mask, grid, align_corners=False)
    corners = torch.randint(lo_c, hi_c + 1, (m, 2), generator=generator)
    return paste(images, moved, corners.to(images.device), moved_mask)
