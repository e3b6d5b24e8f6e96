"""Where the notebook stages evaluate: their models on ``base.device``, and the batches that must follow a model.

The training stages put their models on :func:`triqdef.training.loop.resolve_device` (CUDA when present). The
notebook stages load checkpoints on the CPU and move the models with :func:`to_device`, so that on a GPU machine
their tables are computed there. Data and patch tensors stay on the CPU: the evaluation code (``predict``, the
patch optimiser, the ART suite) moves each batch to its model's device. The few places that feed a model directly
(calibration, alignment, Grad-CAM, the Jacobian) use :func:`device_of` or :func:`calibration_on`. On a CPU machine
nothing moves, so the `cpu` results are the same as before this module.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

#: Images per calibration batch (as :func:`triqdef.stages.common.calibration_batches`).
CALIBRATION_BATCH = 128


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (every model of the project has parameters)."""
    return next(model.parameters()).device


def to_device(models: Iterable[nn.Module], device: torch.device) -> None:
    """Move each model to ``device`` in place (``nn.Module.to``), so every dict or tuple holding it follows."""
    for model in models:
        model.to(device)


def calibration_on(model: nn.Module, images: torch.Tensor, batch_size: int = CALIBRATION_BATCH) -> list[torch.Tensor]:
    """Float calibration batches of ``images`` (the held-out split) on ``model``'s device, in order, for
    :func:`triqdef.quant.post_training_quantize` and :func:`triqdef.quant.with_range_estimator`."""
    from triqdef.data.cifar import iter_batches

    return list(iter_batches(images, batch_size, device=device_of(model)))
