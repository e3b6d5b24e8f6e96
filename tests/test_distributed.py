"""Data-parallel training (triqdef.training.distributed): 2 gloo processes on the CPU end with the weights of one
process that runs the same global batches as 2 ghost batches; bad world sizes through the CLI."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from test_cli import assert_one_line_error, run
from test_train import _cfg, toy_data

from triqdef import quant
from triqdef.models import build_model
from triqdef.training import distributed
from triqdef.training.loop import fit, make_optimizer, make_scheduler, read_checkpoint, step_batch

WORLD, SEED, N_IMAGES = 2, 3, 96
CFG = _cfg(epochs=1, batch_size=32, lr=0.05, checkpoint_every=2)  # 3 steps of a global batch of 32 (16 per rank)
TOLERANCE = 1e-6  # max |DDP - reference| over every weight and buffer (measured: 0, bitwise equal)


def _model(bits):
    torch.manual_seed(0)
    model = build_model("resnet20")
    if bits:
        model = quant.quantize_model(model, bits)
        images = toy_data(32, seed=1)[0].float() / 255
        for b in bits:
            if b != quant.FP_BITS:
                quant.calibrate(model, [images], b)
    return model


def _worker(rank, port, out_dir, bits):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    images, labels = toy_data(N_IMAGES)
    with distributed.session("cpu"):
        assert distributed.world_size() == WORLD and distributed.rank() == rank
        res = fit(_model(bits), images, labels, CFG, seed=SEED, out_path=Path(out_dir) / "m.pt",
                  meta={"kind": "qat" if bits else "fp", "model": "resnet20", "bits": bits},
                  work_dir=Path(out_dir) / f"work{rank}", bits=bits, progress=False)
        torch.save(res["history"], Path(out_dir) / f"history{rank}.pt")


def _ghost_reference(bits):
    """One process, fit's step on each global batch as WORLD ghost batches (the shards): the loss averaged over
    them; each shard's forward starts from the buffers (BN statistics, observers) the step started with, and
    shard 0's updated buffers are kept, as DDP's broadcast of rank 0's buffers does. Each shard's bit-width
    losses are summed before one backward, as the DDP step does: fit's single-process step (one backward per
    bit-width) adds the same gradients in another order, and after 3 QAT steps its weights differ from these by
    up to 1.4e-3 (float32 rounding differences that the quantizers' rounding amplifies; FP: bitwise equal)."""
    images, labels = toy_data(N_IMAGES)
    model = _model(bits).train()
    opt = make_optimizer(model, CFG)
    sched = make_scheduler(opt, CFG, CFG.total_steps(N_IMAGES))
    runs = bits or [None]
    for step in range(CFG.total_steps(N_IMAGES)):
        x, y = step_batch(images, labels, step, SEED, CFG)
        opt.zero_grad(set_to_none=True)
        start = {k: v.clone() for k, v in model.named_buffers()}
        kept = None
        for xs, ys in zip(x.chunk(WORLD), y.chunk(WORLD)):
            for k, v in model.named_buffers():
                v.copy_(start[k])
            losses = []
            for b in runs:
                with quant.use_bitwidth(model, b):
                    losses.append(F.cross_entropy(model(xs), ys))
            (sum(losses) / (len(runs) * WORLD)).backward()
            if kept is None:
                kept = {k: v.clone() for k, v in model.named_buffers()}
        for k, v in model.named_buffers():
            v.copy_(kept[k])
        opt.step()
        sched.step()
    return model


def _spawn(out_dir, bits, timeout=120):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(_worker, args=(port, str(out_dir), bits), nprocs=WORLD, join=False, start_method="spawn")
    try:
        for _ in range(timeout):
            if ctx.join(timeout=1):
                return
        pytest.fail(f"{WORLD} processes did not finish in {timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()


@pytest.mark.parametrize("bits", [None, [32, 8, 4, 2]], ids=["fp", "qat"])
def test_two_ranks_equal_the_ghost_batch_reference(tmp_path, bits, one_thread):
    _spawn(tmp_path, bits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history0.pt", "history1.pt", "m.pt", "work0"]
    assert not any((tmp_path / "work0").iterdir()) and not (tmp_path / "work1").exists()  # rank 0 alone writes
    ddp = read_checkpoint(tmp_path / "m.pt")["model"]
    ref = _ghost_reference(bits).state_dict()
    assert ddp.keys() == ref.keys()
    diff = max((ddp[k].double() - ref[k].double()).abs().max().item() for k in ref)
    print(f"max |DDP - ghost reference| = {diff:.2e}")
    assert diff < TOLERANCE
    h0, h1 = (torch.load(tmp_path / f"history{r}.pt") for r in range(WORLD))
    assert h0 == h1  # the ranks' mean losses and accuracies


@pytest.mark.parametrize("world,env", [(3, {}), (256, {}), (3, {"RANK": "1"})])
def test_world_size_must_divide_the_batch(tmp_path, world, env):
    """3 does not divide train_fp.smoke.batch_size 128, and 256 processes are more than train_qat's 128 images;
    every rank exits with 2, nothing is written. The other ranks name themselves and speak after a grace
    period (under torchrun, rank 0's line comes first and torchrun stops them then)."""
    cmd = ["train", "qat"] if world == 256 else ["train", "fp"]
    proc = run(["--profile", "smoke", *cmd], tmp_path, {"WORLD_SIZE": str(world), "RANK": "0", "LOCAL_RANK": "0", **env})
    section = "train_qat" if world == 256 else "train_fp"
    assert_one_line_error(proc, f"{section}.smoke.batch_size", f"is {world}", "divides the global batch",
                          *(["error: rank 1: "] if env else []))
    assert not proc.stdout.strip() and not (tmp_path / "out").exists()


def test_other_commands_and_no_torchrun_refused(tmp_path):
    assert_one_line_error(run(["--profile", "smoke", "data", "info"], tmp_path, {"WORLD_SIZE": "2", "RANK": "0"}),
                          "WORLD_SIZE is 2", "'train fp' or 'train qat'")
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "", "TRIQDEF_DATA_DIR": str(tmp_path / "nodata")}
    assert_one_line_error(run(["--profile", "smoke", "train", "fp"], tmp_path, env), "MASTER_ADDR", "torchrun")
    assert not (tmp_path / "out").exists()


def test_single_process_is_untouched():
    assert distributed.check_world(7, "b", world=1) is None and distributed.world_size() == 1
    x = torch.arange(8)
    assert distributed.shard(x) is x and distributed.is_writer()
