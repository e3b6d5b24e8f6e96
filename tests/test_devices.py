"""The notebook stages' device placement (lib/triqdef/stages/devices.py).

No GPU is needed: PyTorch's ``meta`` device stands in for CUDA, so a batch that does not follow its model shows up
as a tensor left on the CPU.
"""

import inspect

import pytest
import torch
import torch.nn as nn

from triqdef.stages import ablation_tables, appendix, motivation, stq, training
from triqdef.stages.devices import calibration_on, device_of, to_device

META = torch.device("meta")


def test_calibration_batches_follow_the_model_and_match_the_cpu_ones():
    from triqdef.data.cifar import iter_batches

    images = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    on_cpu = calibration_on(nn.Linear(2, 2), images)
    reference = list(iter_batches(images, 128))  # what the stages used before (common.calibration_batches)
    assert [b.shape[0] for b in on_cpu] == [128, 128, 44]
    assert all(torch.equal(a, b) for a, b in zip(on_cpu, reference, strict=True))
    on_meta = calibration_on(nn.Linear(2, 2, device=META), images)
    assert {b.device for b in on_meta} == {META} and [b.shape for b in on_meta] == [b.shape for b in on_cpu]


def test_to_device_moves_the_models_in_place():
    a, b = nn.Linear(2, 2), nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    held = {"a": a, "pair": (b, [32, 8])}  # the stages keep models in dicts and (model, bits) tuples
    to_device([a, b], META)
    assert device_of(held["a"]) == META and device_of(held["pair"][0]) == META
    assert held["pair"][0][1].running_mean.device == META  # buffers (BN statistics, observers) move too


@pytest.mark.parametrize("stage", [motivation, training, ablation_tables, appendix, stq], ids=lambda m: m.__name__)
def test_every_notebook_loader_puts_its_models_on_the_stage_device(stage):
    """A guard, not a run: each notebook stage's ``load`` resolves ``base.device`` and moves what it loaded there
    (before this, they evaluated on the CPU on a GPU machine: results/gpu/README.md)."""
    source = inspect.getsource(stage.load)
    assert "resolve_device(cfg.base.device)" in source and "to_device(" in source


def test_a_quantized_model_stays_on_the_float_models_device():
    """The GPU dry run of 2026-12-04 (Tables 2 and 11's PTQ models): quantize_model built its observers and BNs on the
    CPU around a float model on the GPU, and calibration failed on mixed devices."""
    from triqdef import quant
    from triqdef.models import build_model

    qmodel = quant.quantize_model(build_model("resnet20").to(META), [32, 8, 2], range_estimator={8: "max", 2: "mse"})
    places = {t.device for t in (*qmodel.parameters(), *qmodel.buffers())}
    assert places == {META}
