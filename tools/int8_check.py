#!/usr/bin/env python3
"""Int8 runtime against the fake-quantized 8-bit view, on committed checkpoints (issue 32; docs/design.md#int8-runtime).

    python tools/int8_check.py results/models/qat/resnet20.pt results/models/defenses/triqdef.pt [--images 1000]

For each checkpoint: `triqdef.deploy.to_int8` calibrated on 512 held-out images of the profile's data, then top-1
agreement, logit error and clean accuracy both ways on the first --images test images. Bad input (a missing or
corrupt checkpoint, a model without an 8-bit view) ends with one `triqdef: error:` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from triqdef import deploy  # noqa: E402
from triqdef.config import load_config  # noqa: E402
from triqdef.errors import TriqdefError  # noqa: E402
from triqdef.stages.common import load_data  # noqa: E402
from triqdef.training.loop import model_from_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    try:
        if args.images < 1:
            raise TriqdefError(f"--images {args.images}: expected at least 1")
        for path in args.checkpoints:   # every checkpoint named is there before anything is printed
            if not Path(path).is_file():
                raise TriqdefError(f"checkpoint {path} not found: expected the output of 'triqdef train'")
        splits = load_data(load_config(None, args.profile))
        cal = [splits.holdout.images[i: i + 128] for i in range(0, 512, 128)]
        images, labels = splits.test.images[: args.images], splits.test.labels[: args.images]
        print("| checkpoint | images | top-1 agreement | mean / max abs logit error | clean fake | clean int8 |")
        print("|---|---|---|---|---|---|")
        for path in args.checkpoints:
            model, _ = model_from_checkpoint(path)
            int8 = deploy.to_int8(model, cal)
            a = deploy.agreement(model, int8, images)
            fake = (deploy.fake_logits(model, images).argmax(1) == labels).float().mean().item()
            real = (deploy.int8_logits(int8, images).argmax(1) == labels).float().mean().item()
            print(f"| {path} | {a.n_images} | {100 * a.top1_agreement:.1f} % | {a.mean_abs_logit_error:.3f} / "
                  f"{a.max_abs_logit_error:.3f} (mean abs logit {a.logit_scale:.2f}) | {100 * fake:.1f} % | {100 * real:.1f} % |")
    except TriqdefError as exc:
        print(f"triqdef: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
