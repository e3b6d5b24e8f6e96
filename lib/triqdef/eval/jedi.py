"""A Jedi-style preprocessing defense (Tarchoun et al., CVPR 2023; TriQDef section 4.4, Table 6), scaled to
32×32 CIFAR images: localise a patch by its high local entropy, then inpaint it.

Jedi computes an entropy heat map with a sliding window, keeps the high-entropy regions (adaptive threshold,
refined by an autoencoder) and inpaints them. Our reading, reproducible without pretrained weights:

1. grey image ``g`` (ITU-R 601 luma) quantised to ``bins`` levels;
2. local entropy ``H(p) = −Σ_l q_l log2 q_l`` of the levels in the ``window × window`` square around each pixel
   (pixels outside the image are not counted, as :func:`skimage.filters.rank.entropy` does: the reference
   the tests compare against), vectorised over a batch with a box filter of one-hot levels;
3. mask ``H > mean(H) + threshold_std · std(H)`` per image, dilated by ``dilate`` pixels (no autoencoder);
4. diffusion inpainting: the masked pixels start at the image's mean colour and are replaced ``steps`` times
   by the mean of their 3×3 neighbours (replicate border), the others kept (in place of Jedi's autoencoder
   inpainting; a harmonic fill).

:class:`JediPreprocess` wraps a model so that every forward cleans its input first; a switchable-precision
model inside keeps working with :func:`triqdef.quant.use_bitwidth`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef.errors import TriqdefError

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class JediSettings:
    """``window`` (odd), ``bins`` (> 1), ``threshold_std``, ``dilate`` (>= 0), ``steps`` (> 0): the module docstring."""

    window: int = 5
    bins: int = 16
    threshold_std: float = 1.5
    dilate: int = 1
    steps: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1 or self.window % 2 == 0:
            raise TriqdefError(f"Jedi window {self.window!r}: expected an odd positive integer")
        if not isinstance(self.bins, int) or self.bins < 2:
            raise TriqdefError(f"Jedi bins {self.bins!r}: expected an integer >= 2")
        if not isinstance(self.dilate, int) or self.dilate < 0:
            raise TriqdefError(f"Jedi dilate {self.dilate!r}: expected an integer >= 0")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise TriqdefError(f"Jedi inpainting steps {self.steps!r}: expected a positive integer")


def grey_levels(images: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, H, W) integer grey levels in ``[0, bins)`` of (N, 3, H, W) images in [0, 1]."""
    w = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    grey = (images * w).sum(1).clamp(0, 1)
    return torch.clamp((grey * bins).long(), max=bins - 1)


def local_entropy(levels: torch.Tensor, bins: int, window: int) -> torch.Tensor:
    """(N, H, W) entropy in bits of the levels in the ``window``-square around each pixel (inside the image)."""
    onehot = F.one_hot(levels, bins).permute(0, 3, 1, 2).to(torch.float64)  # (N, bins, H, W)
    kernel = torch.ones(bins, 1, window, window, dtype=torch.float64, device=levels.device)
    counts = F.conv2d(onehot, kernel, padding=window // 2, groups=bins)
    q = counts / counts.sum(1, keepdim=True)
    return -(torch.where(q > 0, q * torch.log2(q), torch.zeros_like(q))).sum(1)


def entropy_mask(images: torch.Tensor, s: JediSettings) -> torch.Tensor:
    """(N, 1, H, W) boolean mask of the suspected patch pixels (steps 1–3 of the module docstring)."""
    h = local_entropy(grey_levels(images, s.bins), s.bins, s.window)
    flat = h.flatten(1)
    thr = flat.mean(1) + s.threshold_std * flat.std(1)
    mask = (h > thr[:, None, None]).unsqueeze(1).float()
    if s.dilate:
        mask = F.max_pool2d(mask, 2 * s.dilate + 1, stride=1, padding=s.dilate)
    return mask.bool()


def diffusion_inpaint(images: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    """The masked pixels of ``images`` (N, 3, H, W) filled by ``steps`` rounds of 3×3 neighbour averaging."""
    keep = ~mask
    mean = images.mean(dim=(2, 3), keepdim=True)
    x = torch.where(mask, mean.expand_as(images), images)
    for _ in range(steps):
        avg = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = torch.where(keep, images, avg)
    return x


def jedi_clean(images: torch.Tensor, s: JediSettings) -> torch.Tensor:
    """The preprocessed images: high-entropy regions inpainted."""
    return diffusion_inpaint(images, entropy_mask(images, s), s.steps)


class JediPreprocess(nn.Module):
    """``model`` behind the Jedi-style preprocessing (inputs (N, 3, H, W) in [0, 1])."""

    def __init__(self, model: nn.Module, settings: JediSettings):
        super().__init__()
        self.model, self.settings = model, settings
        if hasattr(model, "triqdef_bits"):  # switchable precision passes through: use_bitwidth(wrapper, b) works
            self.triqdef_bits = model.triqdef_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = jedi_clean(x, self.settings)
        return self.model(x)
