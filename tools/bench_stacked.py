"""Issue 31, item 1: the joint QAT step with its bit-widths stacked into one pass (triqdef.stacked) against the
sequential passes, on this machine: aten operations per step (torch.profiler, a proxy for kernel launches), host
syncs per step (CUDA only: torch.cuda.set_sync_debug_mode), and the median ms per step; on CUDA also each step
captured whole in a CUDA graph (forward, backward and the SGD step; replayed).

    python tools/bench_stacked.py --steps 10                     # CPU
    python tools/bench_stacked.py --device cuda --steps 50 --json out.json

ResNet-20, batch 128, channels-last, bit-widths 32/8/5/4/2, the activation range estimators of params.yaml (min/max
at 8/5/4 bits, the MSE clip at 2), SGD with momentum, label smoothing 0.1: the cpu profile's joint QAT step. The FP
step (32 bits only) is measured beside it as the reference of the GPU's launch overhead.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from triqdef import quant, stacked  # noqa: E402
from triqdef.models import build_model  # noqa: E402

BITS = [32, 8, 5, 4, 2]
ESTIMATORS = {8: "max", 5: "max", 4: "max", 2: "mse"}


def qat_model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    x = torch.rand(128, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = quant.quantize_model(build_model("resnet20"), BITS, range_estimator=ESTIMATORS)
    for b in BITS[1:]:
        quant.calibrate(model, [x], b)
    return model.to(device, memory_format=torch.channels_last).train()


def sequential_loss(model, x, y):
    return stacked.sequential_joint_backward(model, x, y, BITS, label_smoothing=0.1)


def stacked_loss(model, x, y):
    loss, _ = stacked.joint_loss(model, x, y, BITS, label_smoothing=0.1)
    loss.backward()
    return loss.detach()


def fp_loss(model, x, y):
    with quant.use_bitwidth(model, 32):
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
    loss.backward()
    return loss.detach()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def eager_step(model, loss_fn, x, y, device):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, x, y)
        opt.step()
        return loss
    return step


def graph_step(model, loss_fn, x, y, device):
    """The whole step (forward, backward, SGD) captured once in a CUDA graph, then replayed."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):   # warm-up: momentum buffers, cuDNN plans, the constants' caches
            opt.zero_grad(set_to_none=True)
            loss_fn(model, x, y)
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_fn(model, x, y)
        opt.step()

    def step():
        graph.replay()
        return static_loss
    return step


def measure(step, device: str, steps: int) -> dict:
    for _ in range(2):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(1000 * (time.perf_counter() - t))
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        step()
        _sync(device)
    events = prof.events()
    aten = sum(1 for e in events if e.name.startswith("aten::"))
    kernels = sum(1 for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
    out = {"ms_median": round(statistics.median(times), 3), "ms_min": round(min(times), 3), "aten_ops": aten}
    if device.startswith("cuda"):
        out["cuda_kernels"] = kernels
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
        torch.cuda.set_sync_debug_mode(0)
        _sync(device)
        out["host_syncs"] = sum("synchroniz" in str(w.message) for w in caught)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.steps < 1:
        print(f"bench_stacked: --steps {args.steps}: expected at least 1", file=sys.stderr)
        return 2
    device = args.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("bench_stacked: --device cuda but no CUDA device is visible", file=sys.stderr)
            return 2
    g = torch.Generator().manual_seed(1)
    x = torch.rand(128, 3, 32, 32, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,), generator=g).to(device)
    base = qat_model(device)
    results = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps}
    modes = [("fp eager", fp_loss, eager_step), ("qat sequential eager", sequential_loss, eager_step),
             ("qat stacked eager", stacked_loss, eager_step)]
    if device.startswith("cuda"):
        modes += [("fp graph", fp_loss, graph_step), ("qat stacked graph", stacked_loss, graph_step),
                  ("qat sequential graph", sequential_loss, graph_step)]
    for name, loss_fn, make in modes:
        try:
            results[name] = measure(make(copy.deepcopy(base), loss_fn, x, y, device), device, args.steps)
        except Exception as err:   # a mode that cannot run here (e.g. capture of a step that syncs) is reported
            import traceback

            frames = traceback.extract_tb(err.__traceback__)[-3:]
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}",
                             "where": [f"{Path(f.filename).name}:{f.lineno} {f.line}" for f in frames]}
        print(name, results[name], flush=True)
    seq, stk = results.get("qat sequential eager", {}), results.get("qat stacked eager", {})
    if "aten_ops" in seq and "aten_ops" in stk:
        results["aten_ops_ratio"] = round(seq["aten_ops"] / stk["aten_ops"], 2)
        results["time_ratio_stacked_over_sequential"] = round(stk["ms_median"] / seq["ms_median"], 3)
        print(f"aten ops per joint step: sequential {seq['aten_ops']}, stacked {stk['aten_ops']} "
              f"({results['aten_ops_ratio']}x fewer); step time stacked / sequential "
              f"{results['time_ratio_stacked_over_sequential']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
