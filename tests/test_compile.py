"""Ready for one graph (issue 31): the FP step and the joint QAT step (every bit-width, the 2-bit MSE range estimator
as params.yaml sets it) trace with ``torch._dynamo`` without a graph break, so ``torch.compile(fullgraph=True)`` can
take each whole. ``explain`` only traces (dynamo); the backward is AOTAutograd's, traced from the same graph."""

import pytest
import torch
import torch.nn.functional as F

from triqdef import quant
from triqdef.models import build_model

BITS = (32, 8, 5, 4, 2)


def _loss_fn(model, bits):
    """The loop's step (training/loop.py train_step) up to the loss: one forward and cross-entropy per bit-width."""

    def loss(x, y):
        total = 0.0
        for b in bits:
            with quant.use_bitwidth(model, b):
                total = total + F.cross_entropy(model(x), y, label_smoothing=0.1) / len(bits)
        return total

    return loss


def _explain(fn, x, y):
    torch._dynamo.reset()
    out = torch._dynamo.explain(fn)(x, y)
    reasons = [str(r.reason)[:200] for r in out.break_reasons]
    return out.graph_count, out.graph_break_count, reasons


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g), torch.arange(4)


def test_fp_step_is_one_graph(batch):
    torch.manual_seed(0)
    model = build_model("resnet20").train()
    assert _explain(_loss_fn(model, [None]), *batch) == (1, 0, [])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_joint_qat_step_is_one_graph(batch, training):
    """Training mode (observers update, sync-free) and eval mode (frozen observers, the calibration check on the
    device) both trace whole."""
    x, y = batch
    torch.manual_seed(0)
    model = quant.quantize_model(build_model("resnet20"), BITS, range_estimator={8: "max", 5: "max", 4: "max", 2: "mse"})
    for b in BITS[1:]:
        quant.calibrate(model, [x], b)
    model.train(training)
    assert _explain(_loss_fn(model, BITS), x, y) == (1, 0, [])
