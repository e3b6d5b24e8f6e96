"""Tap layers: collecting named modules' outputs, and stopping a forward after a module."""

import contextlib

import pytest
import torch

from triqdef.errors import TriqdefError
from triqdef.models import build_model
from triqdef.taps import StopForward, stop_after, tap_outputs

TAPS = ("layer1.0.relu1", "layer2.0.relu1")


def test_tap_outputs_collects_the_outputs_and_removes_its_hooks():
    model = build_model("resnet20").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = {}
    handle = model.layer2[0].relu1.register_forward_hook(lambda m, i, o: expected.__setitem__("o", o))
    with torch.no_grad(), tap_outputs(model, TAPS) as out, tap_outputs(model, TAPS, transform=lambda o: o.mean()) as means:
        model(x)
    handle.remove()
    assert list(out) == list(TAPS) and out["layer2.0.relu1"] is expected["o"] and out["layer1.0.relu1"].shape == (2, 16, 32, 32)
    assert torch.equal(means["layer1.0.relu1"], out["layer1.0.relu1"].mean())
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(TriqdefError, match=r"tap layers \['nope'\] not found"):
        with tap_outputs(model, ["nope"]):
            pass


def test_stop_after_ends_the_forward_once_the_module_ran():
    model = build_model("resnet20").eval()
    with torch.no_grad(), tap_outputs(model, TAPS) as out, stop_after(model.layer2[0].relu1):
        with contextlib.suppress(StopForward):
            model(torch.rand(1, 3, 32, 32))
            raise AssertionError("the forward went on past the last tap")
    assert set(out) == set(TAPS) and not any(m._forward_hooks for m in model.modules())
