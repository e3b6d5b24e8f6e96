"""Adversarial patches: the patch record and the one paste (paper Algorithm 1; docs/design.md#patches).

Images live in [0, 1]; normalisation is the model's first layer, so a patch
is plain pixels. A patched image is ``x_adv = x ⊙ (1 − M) + P ⊙ M`` with ``M``
the patch's square mask at its location (top-left corner ``(row, col)``).

* :func:`paste` is the one paste of the package: one patch per image, each at
  its own location, optionally blended through its own soft mask; every other
  paste (:func:`apply_patch`, GAP's transformed patches, the adversarial
  training of :mod:`triqdef.defenses.steps`) calls it.
* :class:`Patch` keeps content, size, location, target class, attack and the
  model and bit-width it was made on, so that moving a patch moves content and
  mask together; :func:`apply_patch` pastes it.

LAVAN and GAP, placements and losses live in :mod:`triqdef.attacks.universal` (the one patch optimiser),
:mod:`triqdef.attacks.placement` and :mod:`triqdef.attacks.objectives`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from triqdef.data.cifar import to_float
from triqdef.errors import TriqdefError
from triqdef.syncguard import host_int


@dataclass
class Patch:
    """A square adversarial patch and where it came from.

    ``content``: float tensor (3, s, s) in [0, 1]; ``location``: top-left
    ``(row, col)`` where it is evaluated; ``source_bits`` is None for a float
    model. ``info`` holds the attack's settings (steps, seed, region, ...).
    ``mask``: (1, s, s) in [0, 1] for a shaped patch (DPR, :mod:`triqdef.attacks.deformable`), None for the
    square patch of LAVAN and GAP.
    """

    content: torch.Tensor
    location: tuple[int, int]
    target: int
    attack: str
    source_model: str
    source_bits: int | None
    info: dict[str, Any] = field(default_factory=dict)
    mask: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.content.shape[-1])

    def moved(self, location: tuple[int, int]) -> Patch:
        """The same patch (content and mask) at another location."""
        return Patch(self.content, tuple(int(v) for v in location), self.target, self.attack, self.source_model,
                     self.source_bits, dict(self.info), self.mask)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["content"] = self.content.detach().cpu().clone()
        d["location"] = list(self.location)
        if self.mask is None:
            del d["mask"]  # square patches keep the file format they had
        else:
            d["mask"] = self.mask.detach().cpu().clone()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Patch:
        mask = d.get("mask")
        return cls(d["content"].float(), tuple(d["location"]), int(d["target"]), d["attack"], d["source_model"],
                   d["source_bits"], dict(d.get("info", {})), None if mask is None else mask.float())


def check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise TriqdefError(f"images of shape {tuple(images.shape)}: expected (N, 3, H, W)")
    if not torch.is_floating_point(images):
        raise TriqdefError(f"images of dtype {images.dtype}: expected floats in [0, 1]")


class _SharedContent(torch.autograd.Function):
    """One patch content (3, s, s) as ``n`` per-image contents (a view); the backward sums the ``n`` per-image
    gradients one image at a time, from the last image to the first.

    That is the order in which autograd accumulated them when each image had its own padded copy of the
    content (the canvas paste this replaces), so LAVAN's and GAP's signed steps stay bitwise the same; the
    reduction of ``content.expand(n, ...)`` adds them in another order.
    """

    @staticmethod
    def forward(ctx, content: torch.Tensor, n: int) -> torch.Tensor:
        return content.expand(n, *content.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        total = grad[-1]
        for i in range(grad.shape[0] - 2, -1, -1):
            total = total + grad[i]
        return total, None


def paste(images: torch.Tensor, contents: torch.Tensor, locations: torch.Tensor,
          masks: torch.Tensor | None = None) -> torch.Tensor:
    """``x ⊙ (1 − M) + P ⊙ M`` with one patch per image: the one paste of the package.

    ``images`` (N, 3, H, W); ``contents`` (N, 3, k, k), one per image, or (3, k, k), one for every image;
    ``locations`` (N, 2): the top-left corner ``(row, col)`` of each image's patch; ``masks`` (N, 1, k, k)
    in [0, 1], or None for the square mask (the patch replaces its pixels).

    The pixels outside each patch are copied, not multiplied by ``1 − M = 1``, and a square patch is
    written, not blended: the values are those of the full-image canvas-and-mask formula for finite
    images, and so are the gradients with respect to ``images``, ``contents`` and ``masks``. A shared
    (3, k, k) content gets the sum of the per-image gradients accumulated image by image
    (:class:`_SharedContent`); pass ``content.expand(N, -1, -1, -1)`` for torch's reduction instead.
    """
    n, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    k = contents.shape[-1]
    if contents.ndim == 3:
        contents = _SharedContent.apply(contents, n)
    loc = torch.as_tensor(locations).reshape(-1, 2)
    if contents.shape[0] != n or loc.shape[0] != n:
        raise TriqdefError(f"{contents.shape[0]} patches at {loc.shape[0]} locations for {n} images: expected one per image")
    _check_fits(loc, k, height, width)
    loc = loc.to(device=images.device, dtype=torch.long)
    offsets = torch.arange(k, device=images.device)
    index = (torch.arange(n, device=images.device).view(n, 1, 1), slice(None), (loc[:, :1] + offsets).view(n, k, 1),
             (loc[:, 1:] + offsets).view(n, 1, k))
    values = contents.permute(0, 2, 3, 1).to(images.dtype)  # (N, k, k, 3): the layout of images[index]
    if masks is not None:
        m = masks.permute(0, 2, 3, 1).to(images.dtype)
        values = images[index] * (1 - m) + values * m
    out = images.clone()
    out[index] = values
    return out


def _check_fits(loc: torch.Tensor, k: int, height: int, width: int) -> None:
    """Every ``k``-pixel patch at ``loc`` (N, 2) lies inside the image. Locations on the CPU (drawn by a CPU
    generator, as the attacks and the defenses draw them) are read by the host (:func:`triqdef.syncguard.host_int`);
    on a device the test stays there (``torch._assert_async``), so a training step does not wait for it."""
    if loc.device.type != "cpu":
        fits = (loc.min() >= 0) & (loc[:, 0].max() + k <= height) & (loc[:, 1].max() + k <= width)
        torch._assert_async(fits, f"a patch of size {k} does not fit: expected each inside {height}x{width}")
    elif host_int(loc.min()) < 0 or host_int(loc[:, 0].max()) + k > height or host_int(loc[:, 1].max()) + k > width:
        first = [[host_int(v) for v in row] for row in loc[:3]]
        raise TriqdefError(f"patch of size {k} at {first}... does not fit: expected each inside {height}x{width}")


def apply_patch(images: torch.Tensor, patch: Patch | torch.Tensor, location: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """``x ⊙ (1 − M) + P ⊙ M``: paste a patch into every image.

    ``patch`` is a :class:`Patch` (pasted at its own location unless
    ``location`` is given) or a content tensor (3, s, s) with ``location``
    either one ``(row, col)`` or one per image (N, 2).
    """
    check_images(images)
    content = patch.content if isinstance(patch, Patch) else patch
    if location is None:
        if not isinstance(patch, Patch):
            raise TriqdefError("apply_patch needs a location for a bare content tensor")
        location = patch.location
    loc = torch.as_tensor(location, dtype=torch.long).reshape(-1, 2)
    if loc.shape[0] == 1:
        loc = loc.expand(images.shape[0], 2)
    mask = patch.mask if isinstance(patch, Patch) else None
    if mask is not None:  # a shaped patch (DPR): blended through its own mask
        mask = mask.to(images.device, images.dtype)[None].expand(images.shape[0], -1, -1, -1)
        return paste(images, content.to(images.device, images.dtype).expand(images.shape[0], -1, -1, -1), loc, mask)
    return paste(images, content.to(images.device, images.dtype), loc)


def region_locations(size: int, image_size: int = 32, border: int = 4) -> tuple[int, int]:
    """Inclusive range of top-left coordinates that keep a ``size`` patch inside the training region
    (the image minus a ``border``-pixel frame)."""
    lo, hi = border, image_size - border - size
    if hi < lo:
        raise TriqdefError(f"patch size {size} does not fit inside a {image_size}px image with a {border}px border")
    return lo, hi


def random_locations(n: int, size: int, generator: torch.Generator, image_size: int = 32, border: int = 4) -> torch.Tensor:
    """``n`` random top-left corners inside the training region."""
    lo, hi = region_locations(size, image_size, border)
    return torch.randint(lo, hi + 1, (n, 2), generator=generator)


def outside_region_location(size: int, generator: torch.Generator, image_size: int = 32, border: int = 4) -> tuple[int, int]:
    """A top-left corner whose patch overlaps the border frame (an *unseen location* for a model
    trained on patches inside the region): one coordinate in the frame, the other anywhere."""
    edge = [int(torch.randint(0, border, (1,), generator=generator)),
            int(torch.randint(image_size - size - border + 1, image_size - size + 1, (1,), generator=generator))]
    first = edge[int(torch.randint(0, 2, (1,), generator=generator))]
    other = int(torch.randint(0, image_size - size + 1, (1,), generator=generator))
    return (first, other) if int(torch.randint(0, 2, (1,), generator=generator)) else (other, first)


@torch.no_grad()
def patched_predictions(model: nn.Module, images: torch.Tensor, patch: Patch, bits: int | None = None,
                        batch_size: int = 500) -> torch.Tensor:
    """Predicted labels of ``model`` (eval mode, at ``bits``) on ``images`` with ``patch`` at its location."""
    from triqdef.eval.accuracy import predict

    x = to_float(images) if images.dtype == torch.uint8 else images.float()
    return predict(model, apply_patch(x, patch), bits, batch_size)
