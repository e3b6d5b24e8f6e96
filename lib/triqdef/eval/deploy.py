"""Deployment at one bit-width (paper 3.4: "a single forward under the deployed bit-width b*"; Table 18).

:func:`extract_bitwidth` turns a switchable-precision model (any method: standard
QAT, PBAT, DWQ, TriQDef) into the model that is deployed at one bit-width: the
same architecture quantized for that bit-width only, with that bit-width's BN
and observers and the shared weights, and no hooks. Two deployed models of the
same architecture and bit-width therefore have the same modules, parameters
and buffers (:func:`same_structure`), whatever method trained them (Table 18's
latency is measured in :mod:`triqdef.stages.training_measures`).
"""

from __future__ import annotations

import re

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


