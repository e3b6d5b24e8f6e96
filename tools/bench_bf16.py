"""Would bfloat16 autocast pay on this CPU? Per-step ms of the FP step and of the joint 5-bit-width QAT step
(ResNet-20, batch 128, channels-last, one random batch), in float32 and under ``torch.autocast("cpu", bfloat16)``.

    python tools/bench_bf16.py --steps 8

A measurement for the roadmap (README "Roadmap"), not a setting of the pipeline: every model of the project trains
in float32. It times steps only; what bf16 does to accuracy and to the quantization grid (a b-bit level q*s is not
exact in bf16's 8-bit mantissa) is not measured here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from triqdef import quant
from triqdef.models import build_model

BITS = [32, 8, 5, 4, 2]


def step_ms(quantized: bool, bf16: bool, steps: int) -> float:
    """Median ms of ``steps`` SGD steps (after 2 warm-up steps) on one fixed random batch."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,), generator=g)
    torch.manual_seed(0)
    model = build_model("resnet20").to(memory_format=torch.channels_last)
    if quantized:
        model = quant.quantize_model(model, BITS)
        for b in BITS[1:]:
            quant.calibrate(model, [x], b)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if quantized:
                for b in BITS:
                    with quant.use_bitwidth(model, b):
                        (F.cross_entropy(model(x).float(), y) / len(BITS)).backward()
            else:
                F.cross_entropy(model(x).float(), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting (after 2 warm-up steps)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: expected a positive number of timed steps")
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    for name, quantized in (("fp", False), ("qat_5bit", True)):
        f32, b16 = step_ms(quantized, False, args.steps), step_ms(quantized, True, args.steps)
        out[name] = {"ms_float32": round(f32, 1), "ms_bf16_autocast": round(b16, 1), "speedup": round(f32 / b16, 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
