"""Throughput benchmarks: images per second of a float and a fake-quantized training step.

``triqdef bench throughput`` times, in one process and alternating between the
variants so that machine noise hits all of them alike, SGD training steps of
the float model, of the switchable-precision model at one bit-width, and of
the joint multi-bit QAT step (every bit-width of the set on the same batch).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from triqdef import quant
from triqdef.config import require_positive_int
from triqdef.models import MEMORY_FORMAT, build_model, input_size


def joint_qat_step(model, opt, x, y, bits):
    """One SGD step of joint QAT: the cross-entropy averaged over ``bits`` (None: the model as it is), one graph at a time."""
    opt.zero_grad(set_to_none=True)
    for b in bits:
        with quant.use_bitwidth(model, b):
            (F.cross_entropy(model(x), y) / len(bits)).backward()
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
            joint_qat_step(m, opts[k], x, y, bl)
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


# --------------------------------------------------------------------------- TriQDef vs QAT training step


class SavedTensorMeter:
    """Bytes of tensors saved for backward (current and peak), counted through ``saved_tensors_hooks``.

    Each storage counts once while any graph holds it; it is released when the
    graph that saved it is freed (after its backward). Device-agnostic, so it
    measures on a CPU what ``torch.cuda.max_memory_allocated`` would on a GPU
    for the autograd graphs (the model and optimizer state are the same for
    the two steps compared and are left out).
    """

    def __init__(self):
        self.current = self.peak = 0
        self._count: dict[int, list[int]] = {}

    def _add(self, key: int, nbytes: int) -> None:
        entry = self._count.setdefault(key, [0, nbytes])
        if entry[0] == 0:
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        entry[0] += 1

    def _remove(self, key: int) -> None:
        entry = self._count[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._count[key]

    def hooks(self):
        meter = self

        class _Held:
            __slots__ = ("tensor", "key")

            def __init__(self, t):
                self.tensor = t
                st = t.untyped_storage()
                self.key = st.data_ptr() or id(st)
                meter._add(self.key, st.nbytes())

            def __del__(self):
                meter._remove(self.key)

        return torch.autograd.graph.saved_tensors_hooks(_Held, lambda h: h.tensor)


def alternating_times(runners: dict, repeats: int, warmup: int, sync=None) -> dict[str, list[float]]:
    """Seconds of each call ``runners[name](i)``, the callables taking turns (round ``i`` calls each once, in order),
    so that machine noise hits all of them alike; the first ``warmup`` rounds are run and not kept. ``sync``: called
    around each call (``torch.cuda.synchronize`` on a GPU)."""
    sync = sync or (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(warmup + repeats):
        for k, run in runners.items():
            sync()
            t0 = time.perf_counter()
            run(i)
            sync()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return times


def compare_steps(runners: dict, steps: int, warmup: int, peak_runs: int = 1, device=None) -> dict:
    """Time training-step callables ``runners[name](i)`` alternating (:func:`alternating_times`: mean and median ms
    over every measured step, and each step's ms in ``ms_steps``), then measure each one's peak saved-for-backward
    memory on its own over ``peak_runs`` steps."""
    cuda = device is not None and torch.device(device).type == "cuda"
    times = alternating_times(runners, steps, warmup, torch.cuda.synchronize if cuda else None)
    out = {}
    for k, run in runners.items():  # one at a time, so one does not hide the other
        meter = SavedTensorMeter()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with meter.hooks():
            for i in range(peak_runs):
                run(warmup + steps + i)
        out[k] = {"ms": round(1000 * statistics.mean(times[k]), 1), "ms_median": round(1000 * statistics.median(times[k]), 1),
                  "peak_mb": round(meter.peak / 2**20, 1), "ms_steps": [round(1000 * t, 3) for t in times[k]]}
        if cuda:
            out[k]["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _bench_models(model_name, bit_set, x, seed, names, dev, range_estimator="max"):
    models = {}
    for k in names:
        torch.manual_seed(seed)
        m = quant.quantize_model(build_model(model_name), list(bit_set), range_estimator=range_estimator).to(dev)
        for b in bit_set:
            if b != quant.FP_BITS:
                quant.calibrate(m, [x], b)
        models[k] = m.train()
    return models


def _runner(model, opt, step_fn, x, y, bits, records: list | None = None):
    def run(i):
        if step_fn is None:
            joint_qat_step(model, opt, x, y, bits)
        else:
            opt.zero_grad(set_to_none=True)
            rec = step_fn(model, x, y, i + 1)  # step >= 1: a BACT schedule's step 0 would calibrate
            opt.step()
            if records is not None:
                records.append(rec)
    return run


def train_step_benchmark(settings, model_name: str = "resnet20", bits=(32, 8, 4, 2), batch_size: int = 64,
                         steps: int = 10, warmup: int = 2, seed: int = 0, pool_size: int = 10, patch_size: int = 6,
                         device: str = "auto", extra_steps: dict | None = None,
                         range_estimator: str | dict = "max") -> dict:
    """Time a TriQDef step (``settings``: :class:`triqdef.defenses.steps.TriQDefSettings`, every bit-width of ``bits``
    active: BACT's last stage) against a vanilla multi-bit QAT step (cross-entropy only) on the same batch,
    alternating, in one process.

    Times are the mean over every measured step (GPDP may run only every
    ``gpdp_every`` steps: the mean includes the steps without it). Peak memory
    is the peak of the bytes saved for backward, measured for each step type on
    its own (:class:`SavedTensorMeter`), plus ``torch.cuda.max_memory_allocated``
    on a GPU. ``extra_steps``: more step functions (name -> ``f(model, x, y, step)``)
    timed in the same rotation (Table 17's DWQ and PBAT). ``range_estimator``: the activation range estimator
    (``quant.activation_range``: one name or a mapping per bit-width), as the training runs it.
    """
    from triqdef.bact import Schedule
    from triqdef.defenses.steps import TriQDefStep
    from triqdef.training.loop import resolve_device

    require_positive_int(batch_size, "batch_size")
    require_positive_int(steps, "steps")
    bit_set = quant.check_bit_set(bits)
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(seed)
    side = input_size(model_name)
    x = torch.rand(batch_size, 3, side, side, generator=g)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    pool = torch.rand(pool_size, 3, patch_size, patch_size, generator=g)
    x, y = x.to(dev, memory_format=MEMORY_FORMAT), y.to(dev)  # as the training loop feeds its batches
    step_fns = {"triqdef": TriQDefStep(settings, Schedule.constant(bit_set, 10**9), pool, [x], seed), "qat": None}
    step_fns.update(extra_steps or {})
    models = _bench_models(model_name, bit_set, x, seed, list(step_fns), dev, range_estimator)
    tq_records: list[dict] = []
    runners = {k: _runner(models[k], torch.optim.SGD(models[k].parameters(), lr=1e-3, momentum=0.9), fn, x, y, list(bit_set),
                          tq_records if k == "triqdef" else None)
               for k, fn in step_fns.items()}
    res = compare_steps(runners, steps, warmup, peak_runs=max(settings.gpdp_every, 1), device=dev)
    measured = tq_records[warmup:warmup + steps]
    out = {"model": model_name, "bits": list(bit_set), "batch_size": batch_size, "steps": steps, "warmup": warmup,
           "threads": torch.get_num_threads(), "device": str(dev)}
    for k, r in res.items():
        out.update({f"{k}_{m}": v for m, v in r.items()})
    out["triqdef_phases_ms"] = {k: round(statistics.mean(r[k] for r in measured), 1)
                                for k in ("ms_fdp_pass", "ms_main_pass", "ms_gpdp")}
    out["triqdef_gpdp_steps"] = ["gpdp" in r for r in measured]   # which measured steps ran GPDP (every gpdp_every-th)
    out["time_ratio"] = round(out["triqdef_ms"] / out["qat_ms"], 3)
    out["mem_ratio"] = round(out["triqdef_peak_mb"] / out["qat_peak_mb"], 3)
    out["memory_measure"] = "peak bytes saved for backward (saved_tensors_hooks), each step type measured on its own"
    out["settings"] = {"gpdp_sub_batch": settings.gpdp_sub_batch, "gpdp_every": settings.gpdp_every,
                       "gpdp_joint": settings.gpdp_joint, "downsample": settings.penalty.downsample, "rho": settings.rho,
                       "taps": list(settings.taps), "lambda_fdp": settings.lambda_fdp, "lambda_gpdp": settings.lambda_gpdp,
                       "pair_reduction": settings.penalty.pair_reduction, "patch_source": settings.patch_source}
    return out


