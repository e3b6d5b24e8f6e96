"""No host sync inside a training step (issue 31): every step the pipeline trains with runs under
:func:`triqdef.syncguard.no_host_reads`, which raises on any read of a tensor value into Python; the guard itself is
tested first, so that this file can fail."""

import numpy as np
import pytest
import torch

from helpers import calibrated_resnet20
from triqdef import quant
from triqdef.attacks import universal
from triqdef.bact import Schedule
from triqdef.defenses.qadt_r import QADTRStep
from triqdef.defenses.pbat import PBATStep
from triqdef.defenses.steps import DWQStep, TriQDefSettings, TriQDefStep
from triqdef.errors import TriqdefError
from triqdef.models import build_model
from triqdef.syncguard import HostReadError, host_int, no_host_reads
from triqdef.training.loop import train_step
from triqdef.training.records import StepRecord

BITS = (32, 8, 5, 4, 2)
TAPS = ("layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1")
READS = {
    "item": lambda t: t.item(), "if": lambda t: 1 if t else 0, "bool": bool, "int": int, "float": float,
    "tolist": lambda t: t.tolist(), "numpy": lambda t: t.numpy(), "index": lambda t: [0, 1][t],
    "format": lambda t: f"{t:.3f}", "numpy array": np.asarray,
}


@pytest.mark.parametrize("read", list(READS))
def test_the_guard_raises_on_every_read_of_a_value(read):
    t = torch.tensor(1)
    READS[read](t)  # fine outside the guard
    with no_host_reads(), pytest.raises(HostReadError, match="host sync"):
        READS[read](t)


def test_host_int_reads_a_cpu_draw_and_refuses_a_device_tensor():
    g = torch.Generator().manual_seed(0)
    with no_host_reads():
        assert host_int(torch.randint(3, 4, (1,), generator=g)) == 3
        with pytest.raises(HostReadError):  # the allow block ends with host_int
            torch.tensor(2).item()
    with pytest.raises(TriqdefError, match="CPU"):
        host_int(torch.empty((), device="meta"))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 10, torch.rand(4, 3, 6, 6, generator=g)


def _qmodel(batch):
    """The five bit-widths of params.yaml, 2 bits with the MSE range estimator, calibrated (outside the guard)."""
    x = batch[0]
    torch.manual_seed(0)
    m = quant.quantize_model(build_model("resnet20"), BITS, range_estimator={8: "max", 5: "max", 4: "max", 2: "mse"})
    for b in BITS[1:]:
        quant.calibrate(m, [x], b)
    return m.train()


def _guarded(step_fn, model, x, y, step=0):
    with no_host_reads():
        rec = step_fn(model, x, y, step)
    assert any(p.grad is not None for p in model.parameters())  # the step ran its backward
    return rec


def test_fp_and_joint_qat_steps_read_nothing(batch):
    x, y, _ = batch
    torch.manual_seed(0)
    rec = _guarded(lambda m, *a: train_step(m, x, y, None), build_model("resnet20").train(), x, y)
    assert isinstance(rec, StepRecord) and isinstance(rec["loss_fp"], float)  # read after the step
    rec = _guarded(lambda m, *a: train_step(m, x, y, BITS, 0.1), _qmodel(batch), x, y)
    assert set(rec) == {f"{k}_{b}" for b in BITS for k in ("loss", "acc")}


def test_stacked_joint_qat_step_reads_nothing(batch):
    """Issue 31: the stacked joint-QAT step (every bit-width in one pass, triqdef.stacked), observers and BN statistics
    updated, reads no value: a CUDA graph can capture it. Twice: the first call builds its constants."""
    x, y, _ = batch
    model = _qmodel(batch)
    for step in range(2):
        rec = _guarded(lambda m, *a: train_step(m, x, y, BITS, 0.1, stacked_bits=True), model, x, y, step)
        assert set(rec) == {f"{k}_{b}" for b in BITS for k in ("loss", "acc")}


@pytest.mark.parametrize("make", [
    lambda pool: PBATStep(BITS, 0, attack_steps=2),
    lambda pool: DWQStep(BITS, 0, attack_steps=2),
    lambda pool: QADTRStep(BITS, 0, pool, attack_steps=2, gir_sub_batch=4),
], ids=["pbat", "dwq", "qadt_r"])
def test_baseline_defense_steps_read_nothing(batch, make):
    x, y, pool = batch
    rec = _guarded(make(pool), _qmodel(batch), x, y, 3)
    assert all(isinstance(v, (int, float)) for v in rec.values())


@pytest.mark.parametrize("joint,source", [(False, "pool"), (True, "on_the_fly")])
def test_triqdef_last_bact_stage_reads_nothing(batch, joint, source):
    """Every bit-width, FDP and GPDP on (both GPDP forms), pool patches and on-the-fly patches."""
    x, y, pool = batch
    s = TriQDefSettings.from_params({"taps": TAPS, "gpdp_every": 1, "gpdp_joint": joint, "gpdp_sub_batch": 4,
                                     "downsample": 2, "pair_reduction": "mean", "patch_source": source,
                                     "otf_steps": 2})
    step = TriQDefStep(s, Schedule([{"bits": BITS, "share": 1.0}], 10), pool, [x], 0, calibrate_new_bits=False)
    rec = _guarded(step, _qmodel(batch), x, y, 9)
    assert rec["n_bits"] == len(BITS) and {"fdp", "gpdp", "total"} <= set(rec)


@pytest.mark.parametrize("attack", ["lavan", "gap"])
def test_patch_optimiser_inner_iterations_read_nothing(batch, attack):
    """Two iterations of the one patch optimiser (universal.optimise_patches' loop body: forward, gradient, signed
    step) for two patches at once, at 4 bits."""
    x, y, _ = batch
    model, _ = calibrated_resnet20(bits=(32, 4), n_images=8)
    opt = universal.recipe(attack, steps=2, step_size=0.1, images_per_patch=4)
    jobs = [universal._Job(universal.PatchRequest(t, seed=t), torch.Generator().manual_seed(t), torch.arange(8), t)
            for t in (3, 5)]
    contents = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    with quant.eval_mode(model), quant.use_bitwidth(model, 4), no_host_reads():
        for k in range(opt.steps):
            grad, _ = universal._gradient(model, jobs, contents, x, y, opt, x.device)
            contents = (contents - 0.1 * grad.sign()).clamp(0, 1)
    assert contents.shape == (2, 3, 5, 5)


def test_a_record_keeps_tensors_until_read_and_then_gives_the_old_floats():
    from triqdef.training.records import Later, mean_of, settle

    a, b = torch.tensor(0.1), torch.tensor(0.7)
    rec = StepRecord({"step": 3, "loss": a})
    rec["mean"] = mean_of([a, b])
    rec["total"] = Later(lambda r: r["loss"] + 2 * r["mean"])
    with no_host_reads():
        assert list(rec) == ["step", "loss", "mean", "total"]  # keys, no read
    out = settle(rec)
    assert out == {"step": 3, "loss": a.item(), "mean": (0.0 + a.item() + b.item()) / 2,
                   "total": a.item() + 2 * ((0.0 + a.item() + b.item()) / 2)}
    assert type(out["loss"]) is float and type(out["step"]) is int



def test_a_snapshot_of_a_record_keeps_its_values_when_the_tensors_are_overwritten():
    """A CUDA graph overwrites its output tensors at every replay; CapturedStep hands back snapshots, whose tensors
    (also those a mean_of reads) are copies, and whose Python values are kept."""
    from triqdef.training.records import Later, mean_of, snapshot

    a, b = torch.tensor(0.25), torch.tensor(0.75)
    raw = {"n": 4, "loss": a, "mean": mean_of([a, b]), "twice": Later(lambda r: 2 * r["loss"])}
    kept = StepRecord({k: snapshot(v) for k, v in raw.items()})
    a.fill_(9.0)
    b.fill_(9.0)
    assert dict(kept.items()) == {"n": 4, "loss": 0.25, "mean": 0.5, "twice": 0.5}
    assert StepRecord(raw)["mean"] == 9.0   # without the snapshot, the overwrite shows

def test_host_to_device_leaves_cpu_data_as_it_is():
    """On the CPU the copy helper is the tensor itself (the CPU's results unchanged); elsewhere it moves the data
    (on CUDA from pinned memory, without a wait: results/gpu/syncs/)."""
    from triqdef.syncguard import host_to_device

    t = torch.arange(6)
    assert host_to_device(t, "cpu") is t
    moved = host_to_device(t, torch.device("meta"))
    assert moved.device.type == "meta" and moved.shape == t.shape
