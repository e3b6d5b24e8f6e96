"""Clean-accuracy evaluation of FP, PTQ and QAT models across bit-widths (the paper's Table 4 rows)."""

from __future__ import annotations

import time

import pandas as pd
import torch
import torch.nn as nn

from triqdef.config import require_positive_int
from triqdef import quant
from triqdef.data.cifar import iter_batches


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, bits: int | None = None, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels of ``model`` (eval mode) at ``bits`` (None: as it is)."""
    device = next(model.parameters()).device
    preds = []
    with quant.eval_mode(model), quant.use_bitwidth(model, bits):
        for x in iter_batches(images, batch_size, device=device):
            preds.append(model(x).argmax(1).cpu())
    return torch.cat(preds)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bits: int | None = None) -> float:
    """Top-1 accuracy in [0, 1]."""
    return (predict(model, images, bits) == labels).float().mean().item()


def first_test_images(splits, n: int | None, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images and labels of ``splits`` (all of them when ``n`` is None or larger).

    ``name`` is the parameter that set ``n`` (e.g. ``robustness.test_images``), named in the
    one-line error a non-positive or non-integer value gets.
    """
    total = len(splits.test.labels)
    k = total if n is None else min(require_positive_int(n, name), total)
    return splits.test.images[:k], splits.test.labels[:k]


def clean_accuracy_table(models: dict[str, tuple[nn.Module, list[int]]], images, labels, columns: list[int]) -> pd.DataFrame:
    """One row per model, one column per bit-width (accuracy in %), blank where a model lacks that bit-width.

    ``models`` maps a row label to ``(model, bits)``; a float model is evaluated
    at 32 bits only. Adds ``n_test`` and the evaluation time.
    """
    rows = []
    for label, (model, bits) in models.items():
        t0 = time.perf_counter()
        row = {"model": label}
        for b in columns:
            if b in bits:
                row[f"{b}bit"] = 100.0 * accuracy(model, images, labels, bits=b if hasattr(model, "triqdef_bits") else None)
            else:
                row[f"{b}bit"] = float("nan")
        row["n_test"] = int(labels.numel())
        row["eval_s"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    return pd.DataFrame(rows)
