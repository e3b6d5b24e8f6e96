"""Throughput benchmarks: images per second of a float and a fake-quantized training step.

``triqdef bench throughput`` times, in one process and alternating between the
variants so that machine noise hits all of them alike, SGD training steps of
the float model, of the switchable-precision model at one bit-width, and of
the joint multi-bit QAT step (every bit-width of the set on the same batch).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from . import quant
from .config import require_positive_int
from .models import build_model, input_size


def _step(model, opt, x, y, bits_list):
    opt.zero_grad(set_to_none=True)
    for b in bits_list:
        with quant.use_bitwidth(model, b) if b is not None else contextlib.nullcontext():
            (F.cross_entropy(model(x), y) / len(bits_list)).backward()
    opt.step()


def train_throughput(model_name: str = "resnet20", bits=(32, 8, 5, 4, 2), single_bits: int = 4, batch_size: int = 128,
                     steps: int = 20, warmup: int = 3, seed: int = 0) -> dict:
    """Median ms per step and images/s for: FP step, one fake-quantized step at ``single_bits``, joint multi-bit step."""
    require_positive_int(batch_size, "batch_size")
    require_positive_int(steps, "steps")
    bit_set = quant.check_bit_set(bits)
    quant.check_bits(single_bits)
    g = torch.Generator().manual_seed(seed)
    side = input_size(model_name)
    x = torch.rand(batch_size, 3, side, side, generator=g)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    fp = build_model(model_name).train()
    qm = quant.quantize_model(build_model(model_name), sorted(set(bit_set) | {single_bits}, reverse=True), range_estimator="mse")
    for b in quant.model_bits(qm):
        if b != quant.FP_BITS:
            quant.calibrate(qm, [x], b)
    qm.train()
    variants = {
        "fp": (fp, [None]),
        f"fake_quant_{single_bits}bit": (qm, [single_bits]),
        "joint_qat_" + "_".join(map(str, bit_set)): (qm, list(bit_set)),
    }
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, (m, _) in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(warmup + steps):
        for k, (m, bl) in variants.items():
            t0 = time.perf_counter()
            _step(m, opts[k], x, y, bl)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    out = {"model": model_name, "batch_size": batch_size, "steps": steps, "threads": torch.get_num_threads()}
    for k, ts in times.items():
        ms = 1000 * statistics.median(ts)
        out[k] = {"ms_per_step": round(ms, 1), "images_per_s": round(batch_size / (ms / 1000), 1),
                  "ms_spread_p10_p90": [round(1000 * q, 1) for q in statistics.quantiles(ts, n=10)[::8]]}
    fp_ms = out["fp"]["ms_per_step"]
    for k in variants:
        if k != "fp":
            out[k]["time_ratio_to_fp"] = round(out[k]["ms_per_step"] / fp_ms, 2)
    return out
