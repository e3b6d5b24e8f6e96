"""Deployment at one bit-width (paper 3.4: "a single forward under the deployed bit-width b*"; Table 18).

:func:`extract_bitwidth` turns a switchable-precision model (any method: standard
QAT, PBAT, DWQ, TriQDef) into the model that is deployed at one bit-width: the
same architecture quantized for that bit-width only, with that bit-width's BN
and observers and the shared weights, and no hooks. Two deployed models of the
same architecture and bit-width therefore have the same modules, parameters
and buffers (:func:`same_structure`), whatever method trained them, and
:func:`latency_ratio` times them against each other.
"""

from __future__ import annotations

import re
import statistics
import time

import torch
import torch.nn as nn

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.models import build_model

_PER_BIT_KEY = re.compile(r"\.(bns|quantizers)\.(\d+)\.")


def extract_bitwidth(model: nn.Module, bits: int, model_name: str, num_classes: int = 10) -> nn.Module:
    """The deployed model of ``model`` at ``bits`` (eval mode, no hooks)."""
    quant.check_bits(bits)
    if bits not in quant.model_bits(model):
        raise TriqdefError(f"bit-width {bits} not in the model's bit-widths {quant.model_bits(model)}")
    deployed = quant.quantize_model(build_model(model_name, num_classes), [bits],
                                    getattr(model, "triqdef_first_last_bits", 8),
                                    range_estimator=getattr(model, "triqdef_range_estimator", "max"))
    state = {k: v for k, v in model.state_dict().items()
             if (m := _PER_BIT_KEY.search(k)) is None or int(m.group(2)) == bits}
    deployed.load_state_dict(state)
    return deployed.eval()


def structure(model: nn.Module) -> dict:
    """Module types, parameter and buffer names and shapes, and the number of hooks of every module."""
    return {
        "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
        "parameters": [(n, tuple(p.shape)) for n, p in model.named_parameters()],
        "buffers": [(n, tuple(b.shape)) for n, b in model.named_buffers()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
    }


def same_structure(a: nn.Module, b: nn.Module) -> bool:
    return structure(a) == structure(b)


@torch.no_grad()
def latency_ratio(model: nn.Module, reference: nn.Module, images: torch.Tensor, repeats: int = 30, warmup: int = 3) -> dict:
    """Latency of ``model`` / ``reference`` on the same batch, alternating; median and p10–p90 of each and of the ratio."""
    ta, tb = [], []
    for i in range(warmup + repeats):
        for m, ts in ((model, ta), (reference, tb)):
            t0 = time.perf_counter()
            m(images)
            if i >= warmup:
                ts.append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(ta, tb)]

    def q(ts):
        qs = statistics.quantiles(ts, n=10)
        return {"median_ms": round(1000 * statistics.median(ts), 2), "p10_ms": round(1000 * qs[0], 2), "p90_ms": round(1000 * qs[-1], 2)}

    rq = statistics.quantiles(ratios, n=10)
    return {"model": q(ta), "reference": q(tb), "ratio_median": round(statistics.median(ratios), 3),
            "ratio_p10": round(rq[0], 3), "ratio_p90": round(rq[-1], 3), "repeats": repeats, "batch": int(images.shape[0])}


def to_float_model(model: nn.Module, model_name: str, num_classes: int = 10) -> nn.Module:
    """The plain float model of a switchable-precision model's 32-bit path (shared weights, 32-bit BN):
    what PTQ of "the 32-bit weights" starts from (Table 2)."""
    if quant.FP_BITS not in quant.model_bits(model):
        raise TriqdefError(f"the model has no 32-bit path (bits {quant.model_bits(model)}): expected 32 among them")
    key = re.compile(r"\.bns\.32\.")
    state = {key.sub(".", k): v for k, v in model.state_dict().items()
             if (m := _PER_BIT_KEY.search(k)) is None or (m.group(1) == "bns" and m.group(2) == "32")}
    fp = build_model(model_name, num_classes)
    fp.load_state_dict(state)
    return fp.eval()


def inference_cost_table(model: nn.Module, reference: nn.Module, bits, images: torch.Tensor, model_name: str,
                         repeats: int = 30):
    """Table 18: at each of ``bits`` (in that order), the deployed ``model`` (TriQDef) against the deployed
    ``reference`` (standard QAT): identical structure, hooks left, and latency on ``images`` (floats; median
    of each and the median and p10–p90 of the ratio over ``repeats`` alternating runs)."""
    import pandas as pd

    from triqdef.reporting import schemas as S

    rows = []
    for b in bits:
        dq = extract_bitwidth(reference, b, model_name)
        dt = extract_bitwidth(model, b, model_name)
        lat = latency_ratio(dt, dq, images, repeats=repeats)
        rows.append({S.T18_BITS: b, S.T18_SAME_STRUCTURE: same_structure(dt, dq), S.T18_HOOKS: structure(dt)["hooks"],
                     S.T18_TRIQDEF_MS: lat["model"]["median_ms"], S.T18_QAT_MS: lat["reference"]["median_ms"],
                     S.T18_RATIO: lat["ratio_median"], S.T18_RATIO_RANGE: f"{lat['ratio_p10']:.3f}–{lat['ratio_p90']:.3f}"})
    return pd.DataFrame(rows)
