"""A training step in one CUDA graph (issue 31, item 3; triqdef.training.graphed): refused where no graph can be
captured; on a GPU, replayed steps train the model as the eager steps do."""

import pytest
import torch

from triqdef import quant, stacked
from triqdef.errors import TriqdefError
from triqdef.models import CifarResNet
from triqdef.training.graphed import CapturedStep, capturable_optimizer, check_capturable

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (graph capture)")
BITS = [32, 8, 4, 2]


def test_compile_is_refused_where_no_graph_can_be_captured():
    with pytest.raises(TriqdefError, match=r"base.compile = true: expected a CUDA device.*device is cpu"):
        check_capturable(torch.device("cpu"))
    with pytest.raises(TriqdefError, match="base.compile"):
        capturable_optimizer([torch.nn.Parameter(torch.zeros(1))], 0.1, 0.9, 0.0, False, torch.device("cpu"))


def _model(device):
    torch.manual_seed(0)
    model = quant.quantize_model(CifarResNet(8), BITS, range_estimator={8: "max", 4: "max", 2: "mse"})
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for b in BITS[1:]:
        quant.calibrate(model, [x], b)
    return model.to(device).train()


def _batch(step, device):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.rand(32, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    return x.to(device), torch.randint(0, 10, (32,), generator=g).to(device)


@cuda
def test_captured_stacked_steps_train_as_the_eager_ones():
    """8 steps of the stacked joint-QAT step with a moving learning rate: 3 eager warm-up calls, a capture, replays;
    every weight, BN statistic and observer range ends as in 8 eager steps (to float rounding), and the logged
    losses agree step by step."""
    device = torch.device("cuda")
    runs = {}
    for mode in ("eager", "captured"):
        model = _model(device)
        opt = capturable_optimizer(model.parameters(), 0.05, 0.9, 1e-4, True, device)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))

        def step(x, y, model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss, _ = stacked.joint_loss(model, x, y, BITS)
            loss.backward()
            opt.step()
            return {"loss": loss.detach()}

        run = CapturedStep(step, opt, warmup=3) if mode == "captured" else step
        losses = []
        for i in range(8):
            losses.append(run(*_batch(i, device))["loss"])
            sched.step()
        runs[mode] = (model, torch.stack(losses))
    (eager, eager_losses), (captured, captured_losses) = runs["eager"], runs["captured"]
    torch.testing.assert_close(captured_losses, eager_losses, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), captured.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    assert not torch.equal(eager_losses[0], eager_losses[-1])   # it trained


@cuda
@pytest.mark.parametrize("bits", [None, BITS])
def test_the_loop_trains_the_same_captured_or_eager(tmp_path, bits):
    """training.loop.fit with base.compile: 8 steps (3 eager, a capture, 4 replays) of the FP or the stacked joint-QAT
    step, with the one-cycle schedule moving the learning rate every step, end where 8 eager steps end."""
    from triqdef.config import TrainParams
    from triqdef.training.loop import fit

    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(256) % 10
    cfg = TrainParams(lr=0.05, checkpoint_every=100, steps=8, batch_size=32, momentum=0.9, weight_decay=1e-4,
                      nesterov=True, schedule="onecycle", milestones=(0.5, 0.75), pct_start=0.25, label_smoothing=0.1,
                      augment=True)
    runs = {}
    for capture in (False, True):
        torch.manual_seed(0)
        model = _model("cpu") if bits else CifarResNet(8)
        res = fit(model, images, labels, cfg, seed=0, out_path=tmp_path / f"{capture}.pt", meta={"kind": "t"},
                  work_dir=tmp_path / str(capture), bits=bits, device=torch.device("cuda"), progress=False,
                  stacked="on" if bits else "off", capture=capture)
        runs[capture] = (model, res["history"])
    (eager, eager_hist), (captured, captured_hist) = runs[False], runs[True]
    assert [h["lr"] for h in captured_hist] == pytest.approx([h["lr"] for h in eager_hist], rel=1e-6)
    for a, b in zip(eager_hist, captured_hist):
        for k in a:
            if k.startswith("loss"):
                assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-4), k
    for (name, a), b in zip(eager.state_dict().items(), captured.state_dict().values()):
        if a.is_floating_point() and a.numel() > 1:
            err = float((b.double() - a.double()).norm() / a.double().norm().clamp_min(1e-12))
            assert err <= 1e-2, f"{name}: relative L2 error {err:.1e}"


def _triqdef_step(total, gpdp_every):
    from triqdef.bact import Schedule
    from triqdef.defenses.steps import TriQDefSettings, TriQDefStep

    settings = TriQDefSettings.from_params({"taps": ("layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1"),
                                            "gpdp_every": gpdp_every, "gpdp_joint": False, "gpdp_sub_batch": 4,
                                            "downsample": 2, "pair_reduction": "mean"})
    g = torch.Generator().manual_seed(5)
    pool = {6: torch.rand(10, 3, 6, 6, generator=g), 8: torch.rand(10, 3, 8, 8, generator=g)}
    schedule = Schedule([{"bits": [32, 8], "share": 0.25}, {"bits": BITS, "share": 0.75}], total)
    return TriQDefStep(settings, schedule, pool, [torch.rand(32, 3, 32, 32, generator=g)], 0)


def test_the_triqdef_step_comes_in_two_parts_and_the_rest_do_not():
    """The loop captures a defense's step only when it has an eager host part and a device part (TriQDef)."""
    from triqdef.defenses.steps import DWQStep
    from triqdef.training.loop import capturable_step

    assert capturable_step(_triqdef_step(8, 1))
    assert not capturable_step(DWQStep(BITS, 0))
    assert not capturable_step(lambda model, x, y, step: {})


@cuda
def test_the_loop_trains_triqdef_the_same_captured_or_eager(tmp_path, monkeypatch):
    """training.loop.fit with base.compile and the TriQDef step: 14 steps over two BACT stages ([32, 8], then
    [32, 8, 4, 2], whose new bit-widths are calibrated in the eager part), GPDP every 2nd step, two patch sizes drawn
    per step: four graph keys, each warmed up once, captured, replayed. Losses, penalties, weights and statistics end
    where 14 eager steps end."""
    from triqdef.config import TrainParams
    from triqdef.training import loop

    monkeypatch.setattr(loop, "CAPTURE_WARMUP", 1)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(256) % 10
    total = 14
    cfg = TrainParams(lr=0.05, checkpoint_every=100, steps=total, batch_size=32, momentum=0.9, weight_decay=1e-4,
                      nesterov=True, schedule="onecycle", milestones=(0.5, 0.75), pct_start=0.25, label_smoothing=0.0,
                      augment=True)
    runs = {}
    for capture in (False, True):
        model = _model("cpu")
        res = loop.fit(model, images, labels, cfg, seed=0, out_path=tmp_path / f"{capture}.pt", meta={"kind": "t"},
                       work_dir=tmp_path / str(capture), device=torch.device("cuda"), progress=False,
                       step_fn=_triqdef_step(total, 2), capture=capture)
        runs[capture] = (model, res["history"])
    (eager, eager_hist), (captured, captured_hist) = runs[False], runs[True]
    schedule = _triqdef_step(total, 2).schedule
    assert [h["n_bits"] for h in eager_hist] == [len(schedule.active(i)) for i in range(total)]
    assert [h["n_bits"] for h in captured_hist] == [h["n_bits"] for h in eager_hist]
    assert {h["n_bits"] for h in eager_hist} == {2, 4}
    for a, b in zip(eager_hist, captured_hist):
        for k in ("loss_clean", "loss_adv", "fdp"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=2e-3, abs=1e-4), (a["step"], k)
        # GPDP compares soft-binarised input gradients (a per-image quantile, k = 100): weights changed by float
        # rounding alone move it by percents (on the CPU, a relative 1e-6 weight noise moved it 0.894 -> 0.911). On
        # the H200 the first replay gave 0.9105 against 0.9229 eager (2026-12-04): within that, so the bound is loose
        if "gpdp" in a:
            assert b["gpdp"] == pytest.approx(a["gpdp"], rel=5e-2), (a["step"], "gpdp")
        assert not any(k.startswith("ms_") for k in b)   # phase times are not measured inside a graph
    for (name, a), b in zip(eager.state_dict().items(), captured.state_dict().values()):
        if a.is_floating_point() and a.numel() > 1:
            err = float((b.double() - a.double()).norm() / a.double().norm().clamp_min(1e-12))
            assert err <= 1e-2, f"{name}: relative L2 error {err:.1e}"


def test_zero_momentum_buffers_made_up_front_give_the_same_updates():
    """fill_momentum_buffers (for fused SGD in a graph): buffers made at the start, zero, give the updates of SGD's
    lazily made ones, also for a parameter whose first gradient comes at a later step (a BN BACT enables)."""
    from triqdef.training.graphed import fill_momentum_buffers

    runs = []
    for fill in (False, True):
        torch.manual_seed(0)
        a, late = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))
        opt = torch.optim.SGD([a, late], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        if fill:
            fill_momentum_buffers(opt)
            assert all(opt.state[p]["momentum_buffer"] is not None for p in (a, late))
        for step in range(4):
            opt.zero_grad(set_to_none=True)
            loss = (a ** 2).sum() + ((late ** 3).sum() if step >= 2 else 0)
            loss.backward()
            opt.step()
        runs.append((a.detach().clone(), late.detach().clone()))
    for x, y in zip(*runs):
        assert torch.equal(x, y)
