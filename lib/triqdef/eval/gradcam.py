"""Grad-CAM (Selvaraju et al. 2017) of a switchable-precision model at a bit-width (paper Figure 3, section 4.6).

The heatmap of class c at a layer with activations A (C, h, w) is
ReLU(Σ_k w_k A_k) with w_k the spatial mean of ∂y_c/∂A_k, bilinearly upsampled
to the input and min-max normalised per image.
"""

from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.taps import tap_outputs


def grad_cam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, bits: int | None, layer: str = "layer3") -> torch.Tensor:
    """Heatmaps (N, H, W) in [0, 1] of ``classes`` for ``images`` (N, 3, H, W) in [0, 1], eval mode."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise TriqdefError(f"Grad-CAM layer {layer!r} not found: expected a module name such as 'layer3'")
    with tap_outputs(model, [layer], modules) as store, quant.eval_mode(model), quant.use_bitwidth(model, bits), \
            torch.enable_grad():
        logits = model(images)
        score = logits.gather(1, classes.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, store[layer])
    acts = store[layer].detach()
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).amin(1).view(-1, 1, 1)
    hi = cam.flatten(1).amax(1).view(-1, 1, 1)
    return ((cam - lo) / (hi - lo).clamp_min(1e-12)).cpu()


def cam_cosine_items(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, bits,
                     reference_bits: int = 32) -> dict[int, torch.Tensor]:
    """For each of ``bits``, the cosine between each image's Grad-CAM map and its map at ``reference_bits`` (the fp
    path): one value per image (Figure 3, section 4.6; the measurement store of stage ``training`` keeps them)."""
    ref = grad_cam(model, images, classes, reference_bits).flatten(1)
    return {b: F.cosine_similarity(grad_cam(model, images, classes, b).flatten(1), ref, dim=1) for b in bits}


