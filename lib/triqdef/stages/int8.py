"""Stage ``int8``: robustness on a real integer runtime (issue 32; docs/design.md#int8-runtime).

Every defended model of the ``defense`` stages (standard QAT, PBAT, DWQ, QADT-R, TriQDef) and the PTQ model of
Table 9 (the FP model post-training quantized, calibrated on the held-out split as stage ``motivation`` does) is
converted at its 8-bit view to int8 on PyTorch's quantized CPU kernels (:func:`triqdef.deploy.to_int8`,
calibrated on :data:`CALIBRATION_IMAGES` held-out images), and compared with the fake-quantized 8-bit view it came
from:

- top-1 agreement and logit error on every test image, clean accuracy both ways (paired interval);
- three LAVAN patch sets on ``robustness.test_images`` test images, targeted ASR both ways: the seen and unseen
  sets of the deciding regime (the matched size when the patch stage made it), and a white-box set of
  :data:`WHITEBOX_PATCHES` patches (one per class) optimised on the model's own fake-quantized 8-bit view, the only
  differentiable one (``robustness.whitebox_steps`` steps on training images); their paired difference int8 − fake
  on the images eligible on both runtimes, a studentised interval over the patches
  (docs/design.md#interval-coverage);
- median latency at batch 1 and 128 and the state dict's size, int8 against the fp32 deployed view (Table 18's
  setting, :func:`triqdef.eval.deploy.extract_bitwidth`).

The claim "robustness measured on fake quantization holds on the int8 runtime" is an equivalence: per model, every
set's paired difference lies within ±:data:`EQUIVALENCE_POINTS` points (two one-sided claims each).
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
SETS = ("seen", "unseen", "whitebox")
#: White-box patches per model: one per class, the report's patch floor (docs/design.md#interval-coverage).
WHITEBOX_PATCHES = 10
#: Salt of the training images the white-box patches are optimised on (Table 5's white-box row uses its own).
WHITEBOX_IMAGES_SALT = 32
#: Table 9's PTQ model, the one model here that was never trained quantized.
PTQ_LABEL = "PTQ of FP (Table 9)"


def _patched_predictions(forward, images: torch.Tensor, patch, batch_size: int = 250) -> torch.Tensor:
    from triqdef.attacks.patches import apply_patch
    from triqdef.data.cifar import to_float

    x = to_float(images) if images.dtype == torch.uint8 else images.float()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(forward(apply_patch(x[i: i + batch_size], patch)).argmax(1).cpu())
    return torch.cat(out)


def store_rows(model: str, runtime: str, forward, clean: torch.Tensor, patches, set_name: str, images, labels,
               seed: int) -> pd.DataFrame:
    """Outcome-store rows (:mod:`triqdef.eval.outcome_store`) of ``patches`` on one runtime of one model: model
    ``"<model> · <runtime>"`` at 8 bits, each image's clean prediction on that runtime (``clean``) and its prediction
    with the patch pasted."""
    frames = []
    for i, p in enumerate(patches):
        frames.append(pd.DataFrame({
            "model": f"{model} · {runtime}", "seed": seed, "bits": 8, "attack": p.attack, "set": set_name,
            "patch_id": i, "target": int(p.target), "loc_y": int(p.location[0]), "loc_x": int(p.location[1]),
            "image_id": np.arange(len(labels)), "label": labels.numpy(), "clean_pred": clean.numpy(),
            "patched_pred": _patched_predictions(forward, images, p).numpy()}))
    return pd.concat(frames, ignore_index=True)


def store_path():
    """``results/outcomes/int8.parquet``: every (model, runtime, set, patch, image) outcome of the stage."""
    return paths.results_dir() / "outcomes" / "int8.parquet"


def int8_claims(store: pd.DataFrame, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The equivalence claims from the outcome store alone (``triqdef report`` calls it again): per model and set,
    ASR int8 − fake-quantized on the same patches and the images eligible on both runtimes (each runtime's own clean
    predictions), studentised over the patches, and the two one-sided claims (within ±:data:`EQUIVALENCE_POINTS`).
    Returns the claims and, per (model, set), the rates behind them."""
    from triqdef.eval.defense_claims import SAME_PATCHES, common_image_difference
    from triqdef.eval.intervals import claim_evidence, one_sided_p

    claims, rates = [], []
    models = list(dict.fromkeys(m.rsplit(" · ", 1)[0] for m in store["model"]))
    for label in models:
        for set_name in [s for s in SETS if not store[(store["model"] == f"{label} · int8") & (store["set"] == s)].empty]:
            a, b = ({"model": f"{label} · {r}", "set": set_name} for r in ("int8", "fake"))
            d, details = common_image_difference(store, a, b, pair_by=SAME_PATCHES, seed=seed)
            rates.append({"model": label, "set": set_name, "fake": 100 * details["rate_against"],
                          "int8": 100 * details["rate"], "difference": d, "common images": details["n_common"],
                          "patches": d.n_patches})
            statement = (f"{label}, {set_name.replace('whitebox', 'white-box')} LAVAN ASR, int8 − fake-quantized 8-bit "
                         "(points)")
            for side, margin in (("higher", -EQUIVALENCE_POINTS / 100), ("lower", EQUIVALENCE_POINTS / 100)):
                p_holds, p_fails = one_sided_p(d, side, margin)   # for REPORT's familywise (Holm) verdict
                claims.append(dict(claim_evidence(statement, d, side, margin), topic=label, p_holds=p_holds,
                                   p_fails=p_fails))
    return claims, rates


def ptq_model(cfg, splits):
    """Table 9's PTQ model: the FP checkpoint of stage ``train_fp`` wrapped at ``quant.bits`` and calibrated on the
    held-out split, as stage ``motivation`` builds it (:func:`triqdef.quant.post_training_quantize`)."""
    from triqdef import quant
    from triqdef.stages import common
    from triqdef.training.loop import model_from_checkpoint

    q = cfg.quant
    fp, _ = model_from_checkpoint(common.fp_checkpoint(cfg), kind="fp")
    return quant.post_training_quantize(fp, list(q.bits), list(common.calibration_batches(splits)),
                                        q.first_last_bits, q.activation_range)


def whitebox_set(model, label: str, cfg, splits, size: int) -> list:
    """:data:`WHITEBOX_PATCHES` LAVAN patches (one per class, the same targets and starts for every model) of
    ``size`` pixels optimised on ``model``'s fake-quantized 8-bit view over locations, for
    ``robustness.whitebox_steps`` steps on ``patches.attack_images`` training images."""
    import dataclasses

    from triqdef.eval.robustness import whitebox_patches

    train, seed = splits.train, cfg.base.seed
    rng = np.random.default_rng([seed, WHITEBOX_IMAGES_SALT])
    idx = torch.from_numpy(rng.choice(len(train.labels), size=min(cfg.patches.attack_images, len(train.labels)),
                                      replace=False))
    return whitebox_patches(model, [8], train.images[idx], train.labels[idx], WHITEBOX_PATCHES,
                            dataclasses.replace(cfg.patches, size=size), cfg.robustness.whitebox_steps, seed, label)


def run_int8(cfg, progress: bool = True) -> dict:
    """Stage ``int8``: the table ``int8_runtime`` (with its claims) and the metrics ``int8``."""
    from tqdm.auto import tqdm

    from triqdef import deploy
    from triqdef.attacks.patchsets import MATCHED, PAPER, load_patchset, regime_set, select
    from triqdef.eval.accuracy import first_test_images
    from triqdef.eval.deploy import extract_bitwidth
    from triqdef.eval import outcome_store
    from triqdef.eval.intervals import Outcomes, bootstrap_rate, difference
    from triqdef.eval.robustness import UNSEEN_SETS
    from triqdef.meta import provenance, write_metrics
    from triqdef.reporting import plots
    from triqdef.reporting.int8_figure import int8_differences
    from triqdef.reporting.tables import caption_with_claims, save_figure, save_table
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
    models, _ = defended_models(cfg.model.name)
    models[PTQ_LABEL] = ptq_model(cfg, splits)
    rows, store_frames, whitebox_seconds = [], [], {}
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

        tick = time.perf_counter()
        model_sets = dict(sets, whitebox=whitebox_set(model, label, cfg, splits, size))
        whitebox_seconds[label] = round(time.perf_counter() - tick, 1)
        for set_name, patches in model_sets.items():
            for runtime, forward, clean in (("fake", fake_forward, fake_clean), ("int8", int8, int8_clean)):
                store_frames.append(store_rows(label, runtime, forward, clean, patches, set_name, test_x, test_y,
                                               cfg.base.seed))
        deployed = extract_bitwidth(model, 8, cfg.model.name)
        for batch in (1, latency_batch):
            x = test_x[:batch].float() / 255.0
            row[f"latency b{batch} fp32 (ms)"] = deploy.median_latency_ms(deployed, x, cfg.robustness.latency_repeats)
            row[f"latency b{batch} int8 (ms)"] = deploy.median_latency_ms(int8, x, cfg.robustness.latency_repeats)
        row["size fp32 (KB)"] = deploy.model_bytes(deployed) / 1024
        row["size int8 (KB)"] = deploy.model_bytes(int8) / 1024
        rows.append(row)
    store = outcome_store.validate(pd.concat(store_frames, ignore_index=True), "int8 outcomes")
    outcome_store.write(store, store_path(), info={"regime": regime, "patch_size": size, "profile": cfg.base.profile})
    claims, rates = int8_claims(store, cfg.base.seed)
    for row in rows:   # each set's ASR on both runtimes and their difference, from the store
        for r in (r for r in rates if r["model"] == row["model"]):
            d, name = r["difference"], r["set"]
            row.update({f"{name} ASR fake": r["fake"], f"{name} ASR int8": r["int8"], f"{name} int8 − fake": 100 * d.value,
                        f"{name} int8 − fake low": 100 * d.low, f"{name} int8 − fake high": 100 * d.high,
                        f"{name} patches": r["patches"], f"{name} common images": r["common images"]})
    table = pd.DataFrame(rows)
    timing = [c for c in table.columns if c.startswith(("latency", "size"))]
    table = table[[c for c in table.columns if c not in timing] + timing]   # each set's columns before the timings
    meta = provenance(cfg, {"data": common.data_record(splits), "regime": regime, "patch_size": size,
                            "n_eval": len(test_y), "n_clean": len(splits.test.labels), "engine": ENGINE,
                            "calibration_images": sum(len(c) for c in calibration),
                            "equivalence_points": EQUIVALENCE_POINTS, "whitebox_patches": WHITEBOX_PATCHES,
                            "whitebox_steps": cfg.robustness.whitebox_steps, "whitebox_seconds": whitebox_seconds,
                            "claims": claims})
    caption = (f"The 8-bit view of each defended model and of Table 9's PTQ model on PyTorch's integer kernels (int8, "
               f"engine `{ENGINE}`) against the fake-quantized 8-bit view: top-1 agreement and clean accuracy on "
               f"{len(splits.test.labels)} test images; targeted LAVAN ASR ({size}×{size}, {regime} regime) on "
               f"{len(test_y)} test images of the {len(sets['seen'])} seen and {len(sets['unseen'])} unseen patches and "
               f"of {WHITEBOX_PATCHES} white-box patches per model (one per class, {cfg.robustness.whitebox_steps} steps "
               f"on the model's own fake-quantized 8-bit view), each difference on the images eligible on both runtimes "
               f"(95 % studentised interval over patches); median latency (ms) at batch 1 and {latency_batch}, size of "
               f"the state dict, against the fp32 deployed view. Outcomes: results/outcomes/{store_path().name}. "
               f"Claim: every ASR difference within "
               f"±{EQUIVALENCE_POINTS:g} points. Profile `{cfg.base.profile}`; one training seed.")
    save_table(table, "int8_runtime", meta, caption=caption_with_claims(caption, claims), floatfmt=".2f")
    plots.use_style()
    save_figure(int8_differences(table, SETS, EQUIVALENCE_POINTS), "int8_runtime")
    wall = time.perf_counter() - start
    headline = {"agreement": {r["model"]: round(r["agreement (%)"], 2) for r in rows}, "stage_wall_time_s": round(wall, 1)}
    write_metrics("int8", headline, dict(meta, claims=None))
    return headline
