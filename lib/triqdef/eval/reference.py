"""The machine's unit of time: the *reference step* (issue 31, "Budgets in machine units").

The speed of the machines this project runs on varies about 2.5x from one session to the next (the joint QAT step
took 641 ms one day and 1,623 ms another), so a budget in minutes can be neither met nor checked. Stage times are
therefore also given in reference steps: the stage's wall time divided by the median time of one fixed training step
measured on the same machine in the same session.

The reference step is fixed, whatever the code's switches (stacking, graph capture) or the profile say: one SGD step
(lr 1e-3, momentum 0.9) of joint QAT over the five bit-widths 32/8/5/4/2 of a ResNet-20, at batch 128, on one random
channels-last batch, one forward and backward per bit-width (``quant.use_bitwidth``), with the activation range
estimators of the ``cpu`` profile (min/max at 8, 5 and 4 bits, the MSE clip at 2). It is the step that
``tools/bench_steps.py --methods qat_5bit`` times, so its earlier figures are in the same unit.

``triqdef bench reference`` measures it and appends the measurement to ``results/bench/reference_log.jsonl``
(:func:`append_log`); ``tools/run_stages.sh`` measures it before and after the stages it runs, and REPORT's
"Pipeline time" converts each stage's seconds with the median of the measurements taken within
:data:`WINDOW_H` hours of the stage's end, or the nearest one when none is (:func:`reference_near`): one measurement
slowed by another job on the machine (2026-12-04 23:50: 3,640 ms among neighbours of 1,070-1,220 ms) cannot then
set a stage's conversion on its own.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from triqdef import quant
from triqdef.config import require_positive_int
from triqdef.errors import TriqdefError
from triqdef.eval.bench import joint_qat_step
from triqdef.models import MEMORY_FORMAT, build_model

REFERENCE = "joint 5-bit-width QAT step (32/8/5/4/2), ResNet-20, batch 128, SGD, sequential bit-widths"
BITS = (32, 8, 5, 4, 2)
RANGE = {8: "max", 5: "max", 4: "max", 2: "mse"}   # the cpu profile's quant.activation_range, fixed here
BATCH = 128
LOG = Path("results/bench/reference_log.jsonl")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(steps: int = 20, warmup: int = 3, device: str | torch.device = "cpu", seed: int = 0) -> dict:
    """Median ms of the reference step over ``steps`` timed steps after ``warmup`` untimed ones.

    Returns ``{"reference", "median_ms", "p10_ms", "p90_ms", "steps", "warmup", "device", "threads", "host",
    "torch", "measured_at"}``; a count of 0 steps is refused with one :class:`TriqdefError` line.
    """
    require_positive_int(steps, "--steps")
    require_positive_int(warmup, "--warmup", allow_zero=True)
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, 3, 32, 32, generator=g).contiguous(memory_format=MEMORY_FORMAT)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    torch.manual_seed(seed)
    model = quant.quantize_model(build_model("resnet20"), BITS, range_estimator=RANGE)
    for b in BITS[1:]:
        quant.calibrate(model, [x], b)
    model.to(device).train()
    x, y = x.to(device), y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for i in range(warmup + steps):
        _synchronize(device)
        t0 = time.perf_counter()
        joint_qat_step(model, opt, x, y, BITS)
        _synchronize(device)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    deciles = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
    return {"reference": REFERENCE, "median_ms": round(statistics.median(times), 1),
            "p10_ms": round(deciles[0], 1), "p90_ms": round(deciles[-1], 1), "steps": steps, "warmup": warmup,
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(), "host": platform.node(), "torch": torch.__version__,
            "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def append_log(entry: dict, path: str | Path = LOG) -> Path:
    """Append one measurement (a JSON line) to the reference log."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return path


def _when(text: str) -> _dt.datetime:
    """A log or metadata time stamp: an ISO date-time, or a date alone (read as noon UTC)."""
    stamp = _dt.datetime.fromisoformat(text if "T" in text else text + "T12:00:00+00:00")
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=_dt.timezone.utc)


def read_log(path: str | Path = LOG) -> list[dict]:
    """The measurements of the reference log, oldest first; a line that is not a measurement is an error naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            ok = isinstance(entry, dict) and float(entry["median_ms"]) > 0 and _when(entry["measured_at"]) is not None
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise TriqdefError(f"{path}, line {n}: expected a reference measurement (JSON with median_ms > 0 and "
                               f"measured_at), got {line[:60]!r}")
        entries.append(entry)
    return sorted(entries, key=lambda e: _when(e["measured_at"]))


#: Measurements within this many hours of a stage's end (one session, at most 3 h, around it) form its reference.
WINDOW_H = 2.0


def reference_near(entries: list[dict], when: str | None, window_h: float = WINDOW_H) -> dict | None:
    """The reference step for a run that ended at ``when`` (an ISO time stamp): the median ``median_ms`` of the
    measurements within ``window_h`` hours of it, else the nearest measurement. Returns ``median_ms``, ``gap_h``
    (hours to the nearest measurement used), ``n`` (measurements used), ``timed`` (every one used has a time of
    day, not a date alone) and ``spread`` (their min and max ms); None without a log or a time."""
    hit = nearest(entries, when)
    if hit is None:
        return None
    t = _when(when)
    near = [e for e in entries if abs((_when(e["measured_at"]) - t).total_seconds()) <= window_h * 3600]
    used = near or [hit[0]]
    ms = [float(e["median_ms"]) for e in used]
    return {"median_ms": float(statistics.median(ms)), "gap_h": hit[1], "n": len(used),
            "timed": all("T" in str(e["measured_at"]) for e in used), "spread": (min(ms), max(ms))}


def nearest(entries: list[dict], when: str | None) -> tuple[dict, float] | None:
    """The measurement nearest in time to ``when`` (an ISO time stamp) and the gap in hours; None without either."""
    if not entries or not when:
        return None
    t = _when(when)
    best = min(entries, key=lambda e: abs((_when(e["measured_at"]) - t).total_seconds()))
    return best, abs((_when(best["measured_at"]) - t).total_seconds()) / 3600
