"""Batched CIFAR augmentation: per-image random crop (zero padding 4) and horizontal flip.

Equivalent, image by image, to torchvision's ``RandomCrop(32, padding=4)`` +
``RandomHorizontalFlip()``, but done on a whole uint8 batch at once with an
explicit ``torch.Generator``, so a training step's augmentation depends only
on (seed, step) and a resumed run sees exactly the same images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip_params(n: int, size: int, padding: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random top/left offsets in [0, 2·padding] and flip flags for ``n`` images."""
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return top, left, flip


def apply_crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop each zero-padded image at (top, left) back to its size, then flip where ``flip``."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = (top[:, None] + torch.arange(h))[:, :, None]
    cols = (left[:, None] + torch.arange(w))[:, None, :]
    out = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    return torch.where(flip[:, None, None, None], out.flip(3), out).contiguous()


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with ``padding`` zero pixels on each side and a random horizontal flip, per image."""
    top, left, flip = crop_flip_params(images.shape[0], images.shape[-1], padding, generator)
    return apply_crop_flip(images, top, left, flip, padding)
