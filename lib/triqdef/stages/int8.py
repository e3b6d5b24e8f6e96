"""Stage ``int8``: robustness on a real integer runtime (issue 32; docs/design.md#int8-runtime).

Every defended model of the ``defense`` stages (standard QAT, PBAT, DWQ, QADT-R, TriQDef) is converted at its 8-bit
view to int8 on PyTorch's quantized CPU kernels (:func:`triqdef.deploy.to_int8`, calibrated on
:data:`CALIBRATION_IMAGES` held-out images), and compared with the fake-quantized 8-bit view it came from:

- top-1 agreement and logit error on every test image, clean accuracy both ways (paired interval);
- the seen and unseen LAVAN patch sets of the deciding regime (the matched size when the patch stage made it) on
  ``robustness.test_images`` test images, targeted ASR both ways; their paired difference int8 − fake on the images
  eligible on both runtimes, a studentised interval over the patches (docs/design.md#interval-coverage);
- median latency at batch 1 and 128 and the state dict's size, int8 against the fp32 deployed view (Table 18's
  setting, :func:`triqdef.eval.deploy.extract_bitwidth`).

The claim "robustness measured on fake quantization holds on the int8 runtime" is an equivalence: per model, both
sets' paired differences lie within ±:data:`EQUIVALENCE_POINTS` points (two one-sided claims each). White-box
patches are not evaluated here (the training stage does not keep them), nor the PTQ model of Table 9: both are
written down in README "Roadmap".
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from triqdef import paths

#: The params.yaml sections this stage reads.
PARAMS = ("base", "data", "model", "quant", "robustness", "patches")
#: Held-out images whose min/max sets the scales of what the fake-quantized view keeps in float.
CALIBRATION_IMAGES = 512
#: "Holds on the int8 runtime": every paired difference of ASR (int8 − fake) within this many points.
EQUIVALENCE_POINTS = 2.0
#: The integer engine (x86 dispatches to fbgemm or oneDNN).
ENGINE = "x86"
SETS = ("seen", "unseen")


def _patched_predictions(forward, images: torch.Tensor, patch, batch_size: int = 250) -> torch.Tensor:
    from triqdef.attacks.patches import apply_patch
    from triqdef.data.cifar import to_float

    x = to_float(images) if images.dtype == torch.uint8 else images.float()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(forward(apply_patch(x[i: i + batch_size], patch)).argmax(1).cpu())
    return torch.cat(out)


def _outcomes(forward, clean: torch.Tensor, patches, images, labels) -> tuple[np.ndarray, np.ndarray]:
    """(hits, eligible) of ``patches`` on one runtime: targeted hits, and eligibility (clean-correct, label ≠
    target) from that runtime's own clean predictions."""
    hits, eligible = [], []
    for p in patches:
        adv = _patched_predictions(forward, images, p)
        hits.append((adv == p.target).numpy())
        eligible.append(((clean == labels) & (labels != p.target)).numpy())
    return np.stack(hits), np.stack(eligible)


def run_int8(cfg, progress: bool = True) -> dict:
    """Stage ``int8``: the table ``int8_runtime`` (with its claims) and the metrics ``int8``."""
    from tqdm.auto import tqdm

    from triqdef import deploy
    from triqdef.attacks.patchsets import MATCHED, PAPER, load_patchset, regime_set, select
    from triqdef.eval.accuracy import first_test_images
    from triqdef.eval.deploy import extract_bitwidth
    from triqdef.eval.intervals import Outcomes, bootstrap_rate, claim_evidence, difference
    from triqdef.eval.robustness import UNSEEN_SETS
    from triqdef.meta import provenance, write_metrics
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages import common
    from triqdef.stages.defense import defended_models

    start = time.perf_counter()
    torch.manual_seed(cfg.base.seed)
    splits = common.load_data(cfg)
    test_x, test_y = first_test_images(splits, cfg.robustness.test_images, "robustness.test_images")
    calibration = [splits.holdout.images[i: i + 128] for i in range(0, min(CALIBRATION_IMAGES, len(splits.holdout.labels)), 128)]
    all_patches, _ = load_patchset(paths.results_dir() / "patches" / "patches.pt")
    regime = MATCHED if select(all_patches, regime_set("seen", MATCHED)) else PAPER
    sets = {"seen": select(all_patches, regime_set("seen", regime), "lavan"),
            "unseen": [p for s in UNSEEN_SETS for p in select(all_patches, regime_set(s, regime), "lavan")]}
    size = sets["seen"][0].size
    models, metas = defended_models(cfg.model.name)
    rows, claims = [], []
    latency_batch = min(cfg.robustness.latency_batch, len(test_y))
    for label, model in tqdm(list(models.items()), desc="int8 runtime", unit="model", disable=not progress):
        model = model.cpu()
        int8 = deploy.to_int8(model, calibration, engine=ENGINE)
        fake_logits, int8_logits = deploy.fake_logits(model, splits.test.images), deploy.int8_logits(int8, splits.test.images)
        agree = deploy.compare_logits(fake_logits, int8_logits)   # each runtime's logits computed once
        fake_clean_all, int8_clean_all = fake_logits.argmax(1), int8_logits.argmax(1)
        labels_all = splits.test.labels
        acc_fake = bootstrap_rate(Outcomes.accuracy((fake_clean_all == labels_all).numpy()))
        acc_int8 = bootstrap_rate(Outcomes.accuracy((int8_clean_all == labels_all).numpy()))
        acc_diff = difference(Outcomes.accuracy((int8_clean_all == labels_all).numpy()),
                              Outcomes.accuracy((fake_clean_all == labels_all).numpy()))
        row = {"model": label, "agreement (%)": 100 * agree.top1_agreement,
               "mean abs logit error": agree.mean_abs_logit_error, "clean fake": 100 * acc_fake.value,
               "clean int8": 100 * acc_int8.value, "clean int8 − fake": 100 * acc_diff.value,
               "clean int8 − fake low": 100 * acc_diff.low, "clean int8 − fake high": 100 * acc_diff.high}
        fake_clean, int8_clean = fake_clean_all[: len(test_y)], int8_clean_all[: len(test_y)]

        def fake_forward(x, model=model):
            from triqdef import quant

            with quant.eval_mode(model), quant.use_bitwidth(model, 8):
                return model(x)

        for set_name, patches in sets.items():
            hits_f, elig_f = _outcomes(fake_forward, fake_clean, patches, test_x, test_y)
            hits_i, elig_i = _outcomes(int8, int8_clean, patches, test_x, test_y)
            both = elig_f & elig_i          # compared on the images eligible on both runtimes
            fake_o, int8_o = Outcomes(hits_f, both), Outcomes(hits_i, both)
            d = difference(int8_o, fake_o, method="t")
            row[f"{set_name} ASR fake"] = 100 * fake_o.rate()
            row[f"{set_name} ASR int8"] = 100 * int8_o.rate()
            row[f"{set_name} int8 − fake"] = 100 * d.value
            row[f"{set_name} int8 − fake low"] = 100 * d.low
            row[f"{set_name} int8 − fake high"] = 100 * d.high
            row[f"{set_name} patches"] = len(patches)
            row[f"{set_name} common images"] = int(both.any(0).sum())
            statement = f"{label}, {set_name} LAVAN ASR, int8 − fake-quantized 8-bit (points)"
            claims += [dict(claim_evidence(statement, d, "higher", -EQUIVALENCE_POINTS / 100), topic=label),
                       dict(claim_evidence(statement, d, "lower", EQUIVALENCE_POINTS / 100), topic=label)]
        deployed = extract_bitwidth(model, 8, cfg.model.name)
        for batch in (1, latency_batch):
            x = test_x[:batch].float() / 255.0
            row[f"latency b{batch} fp32 (ms)"] = deploy.median_latency_ms(deployed, x, cfg.robustness.latency_repeats)
            row[f"latency b{batch} int8 (ms)"] = deploy.median_latency_ms(int8, x, cfg.robustness.latency_repeats)
        row["size fp32 (KB)"] = deploy.model_bytes(deployed) / 1024
        row["size int8 (KB)"] = deploy.model_bytes(int8) / 1024
        rows.append(row)
    table = pd.DataFrame(rows)
    meta = provenance(cfg, {"data": common.data_record(splits), "regime": regime, "patch_size": size,
                            "n_eval": len(test_y), "n_clean": len(splits.test.labels), "engine": ENGINE,
                            "calibration_images": sum(len(c) for c in calibration),
                            "equivalence_points": EQUIVALENCE_POINTS, "claims": claims})
    caption = (f"The 8-bit view of each defended model on PyTorch's integer kernels (int8, engine `{ENGINE}`) against "
               f"the fake-quantized 8-bit view: top-1 agreement and clean accuracy on {len(splits.test.labels)} test "
               f"images; targeted LAVAN ASR of the {len(sets['seen'])} seen and {len(sets['unseen'])} unseen patches "
               f"({size}×{size}, {regime} regime) on {len(test_y)} test images, each difference on the images eligible "
               f"on both runtimes (95 % studentised interval over patches); median latency (ms) at batch 1 and "
               f"{latency_batch}, size of the state dict, against the fp32 deployed view. Claim: every ASR difference "
               f"within ±{EQUIVALENCE_POINTS:g} points. Profile `{cfg.base.profile}`; one training seed.")
    save_table(table, "int8_runtime", meta, caption=caption_with_claims(caption, claims), floatfmt=".2f")
    wall = time.perf_counter() - start
    headline = {"agreement": {r["model"]: round(r["agreement (%)"], 2) for r in rows}, "stage_wall_time_s": round(wall, 1)}
    write_metrics("int8", headline, dict(meta, claims=None))
    return headline
