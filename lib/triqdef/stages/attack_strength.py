"""Stage ``attack_strength``: how strong our patches are, against their size (issue 12; docs/design.md#attack-regime).

For each attack (LAVAN, GAP) and each size of ``attack_strength.sizes``, ``targets`` patches (targets balanced
over the classes) are optimised on the FP model with the ``patches`` section's optimiser and budget, all of a
size together (:func:`triqdef.attacks.universal.optimise_patches`). Each is read on the first ``test_images``
test images at its stored location:

* white-box on the FP model, and transferred to standard QAT at each of ``transfer_bits``;
* beside each patch, a random-noise patch of the same size at the same place: the chance baseline.

Every rate is the mean over the patches with a 95 % bootstrap interval over images and patches
(:mod:`triqdef.eval.intervals`); each target's own rate is kept too. The **matched size** is the smallest size
whose mean white-box LAVAN ASR on the FP model reaches ``threshold``; it is computed here and written to
``results/attack_strength/matched_size.json`` for the stages after it, never typed in.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch

from triqdef import paths
from triqdef.attacks.patches import Patch, region_locations
from triqdef.attacks.placement import eot_canvas_range
from triqdef.attacks.patchsets import attack_images, balanced_targets, optimiser
from triqdef.attacks.universal import PatchRequest, optimise_patches
from triqdef.config import CIFAR_IMAGE_SIZE, Config, StageConfig, as_dict
from triqdef.data.cifar import to_float
from triqdef.errors import TriqdefError
from triqdef.eval.intervals import bootstrap_rate
from triqdef.eval.transfer import patch_outcomes, view_predictions
from triqdef.meta import provenance, write_json, write_metrics
from triqdef.reporting.plots import asr_against_size, use_style
from triqdef.reporting.tables import save_figure, save_table
from triqdef.stages import common as pipeline
from triqdef.training.loop import model_from_checkpoint, resolve_device

PARAMS = ("base", "data", "model", "patches", "attack_strength")
FP_VIEW = "FP 32-bit"

log = logging.getLogger(__name__)


def matched_size_path():
    """Where the matched size is recorded for the stages after this one."""
    return paths.results_dir() / "attack_strength" / "matched_size.json"


def second_size(path=None) -> tuple[int, str]:
    """The size of the second attack regime, from this stage's record: the matched size, or, when no size
    reached the threshold, the size where white-box LAVAN was strongest. Returns (size, ``matched`` or
    ``strongest``); a missing or corrupt record is a one-line error."""
    import json

    path = path or matched_size_path()
    try:
        record = json.loads(path.read_text())
        if record.get("matched_size") is not None:
            return int(record["matched_size"]), "matched"
        curve = {int(k): float(v) for k, v in record["lavan_fp_asr"].items()}
        return max(curve, key=lambda k: (curve[k], -k)), "strongest"
    except FileNotFoundError:
        raise TriqdefError(f"matched-size record {path} not found: expected the output of 'triqdef patches strength'") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TriqdefError(f"matched-size record {path} is corrupt ({type(e).__name__}): expected the JSON of "
                           "'triqdef patches strength'") from None


def noise_patch(patch: Patch, seed: int) -> Patch:
    """A uniform random patch of the same size, target and location (the chance baseline)."""
    content = torch.rand(patch.content.shape, generator=torch.Generator().manual_seed(seed))
    return Patch(content, patch.location, patch.target, "noise", patch.source_model, patch.source_bits,
                 {"seed": seed})


def matched_size(curve: pd.DataFrame, threshold: float) -> int | None:
    """The smallest size whose white-box LAVAN ASR (FP view, optimised patches) reaches ``threshold`` (a share),
    or None when no size does. ``curve``: the rows of :func:`run_attack_strength`'s table."""
    rows = curve[(curve["attack"] == "lavan") & (curve["view"] == FP_VIEW) & (curve["patch"] == "optimised")]
    reached = rows[rows["asr"] >= 100 * threshold].sort_values("size")
    return int(reached["size"].iloc[0]) if len(reached) else None


def run_attack_strength(cfg: Config | StageConfig, progress: bool = True) -> dict:
    """Stage ``attack_strength``: the ASR-against-size table and figure, and the matched size."""
    t_stage = time.perf_counter()
    st, pcfg, seed = cfg.attack_strength, cfg.patches, cfg.base.seed
    for size in st.sizes:  # every size fits the region (and GAP's canvas) before any work
        region_locations(size, CIFAR_IMAGE_SIZE, pcfg.border)
        if "gap" in st.attacks:
            eot_canvas_range(size, CIFAR_IMAGE_SIZE, pcfg.border)
    device = resolve_device(cfg.base.device)
    name = cfg.model.name
    splits = pipeline.load_data(cfg)
    images, labels, _ = attack_images(splits, pcfg, seed)
    x_att = to_float(images)
    n_test = min(st.test_images, len(splits.test.labels))
    x_test, y_test = to_float(splits.test.images[:n_test]), splits.test.labels[:n_test]
    fp, fp_meta = model_from_checkpoint(pipeline.fp_checkpoint(cfg), kind="fp", model_name=name)
    qat, qat_meta = model_from_checkpoint(pipeline.qat_checkpoint(cfg), kind="qat", model_name=name)
    fp, qat = fp.to(device), qat.to(device)
    views = {FP_VIEW: (fp, None), **{f"QAT {b}-bit": (qat, b) for b in st.transfer_bits}}
    clean = view_predictions(views, x_test)
    rows, per_target, seconds = [], [], {}
    for a, attack in enumerate(st.attacks):
        for size in st.sizes:
            t0 = time.perf_counter()
            targets = balanced_targets(st.targets, seed * 1_000 + 700 + size)
            requests = [PatchRequest(t, seed * 100_003 + 70_000 + 1_000 * a + 50 * size + i, pcfg.border)
                        for i, t in enumerate(targets)]
            made = optimise_patches(fp, x_att, labels, size, requests, optimiser(pcfg, attack), source_model=name,
                                    progress=f"{attack} {size}px ×{len(requests)}" if progress else None)
            seconds[f"{attack}_{size}"] = round(time.perf_counter() - t0, 1)
            noise = [noise_patch(p, r.seed + 1) for p, r in zip(made, requests)]
            for kind, patches in (("optimised", made), ("noise", noise)):
                for view, (model, bits) in views.items():
                    hits, fooled = patch_outcomes(patches, model, bits, x_test, y_test, clean[view])
                    asr = bootstrap_rate(hits, st.n_boot, seed)
                    fool = bootstrap_rate(fooled, st.n_boot, seed)
                    rows.append({"attack": attack, "size": size, "patch": kind, "view": view,
                                 "asr": 100 * asr.value, "asr low": 100 * asr.low, "asr high": 100 * asr.high,
                                 "fooling": 100 * fool.value, "fooling low": 100 * fool.low,
                                 "fooling high": 100 * fool.high, "n_images": asr.n_images,
                                 "n_patches": asr.n_patches, "n_eligible": asr.n_eligible})
                    if kind == "optimised":
                        for p, h, e in zip(patches, hits.hits, hits.eligible):
                            per_target.append({"attack": attack, "size": size, "view": view, "target": p.target,
                                               "asr": 100 * h[e].mean() if e.any() else np.nan, "n_images": int(e.sum())})
            log.info("%s %dpx: white-box ASR %s", attack, size, rows[-2 * len(views)]["asr"])
    curve, targets_table = pd.DataFrame(rows), pd.DataFrame(per_target)
    matched = matched_size(curve, st.threshold)
    meta = provenance(cfg, {"params": as_dict(st), "patches": as_dict(pcfg), "data": pipeline.data_record(splits),
                            "n_test": n_test, "attack_images": int(len(labels)), "seconds": seconds,
                            "fp_checkpoint_commit": fp_meta.get("commit"), "qat_checkpoint_commit": qat_meta.get("commit")})
    lavan_fp = curve[(curve["attack"] == "lavan") & (curve["view"] == FP_VIEW) & (curve["patch"] == "optimised")]
    at = lavan_fp.set_index("size")
    record = {"matched_size": matched, "threshold": st.threshold, "sizes": list(st.sizes),
              "lavan_fp_asr": {int(s): round(float(at.loc[s, "asr"]), 2) for s in at.index},
              "reached": matched is not None,
              "largest_size": int(max(st.sizes)),
              "note": (f"mean white-box LAVAN ASR on the FP model reaches {100 * st.threshold:.0f}% at {matched} px"
                       if matched is not None else
                       f"no size up to {max(st.sizes)} px reaches {100 * st.threshold:.0f}% mean white-box LAVAN ASR")}
    write_json(matched_size_path(), provenance(cfg, record))
    caption = (f"White-box targeted ASR (%) of patches optimised on the FP {name} against their size, and their transfer "
               f"to standard QAT; `noise`: a random patch of the same size at the same place. Mean over {st.targets} "
               f"targets, 95% bootstrap interval over {n_test} test images and the patches; optimiser: "
               f"{pcfg.method}, {pcfg.steps} steps × {pcfg.images_per_patch} images per patch. "
               f"Matched size ({100 * st.threshold:.0f}% white-box LAVAN): "
               f"{matched if matched is not None else 'not reached'}.")
    save_table(curve, "asr_vs_patch_size", meta, caption=caption)
    save_table(targets_table, "asr_vs_patch_size_per_target", meta,
               caption="Each target's white-box / transferred ASR (%) at each size (the rows behind asr_vs_patch_size).")
    use_style()
    save_figure(asr_against_size(curve, st.threshold, matched), "asr_vs_patch_size")
    wall = round(time.perf_counter() - t_stage, 1)
    headline = {"matched_size": matched if matched is not None else "not reached",
                **{f"lavan_fp_asr_{s}px": record["lavan_fp_asr"][s] for s in record["lavan_fp_asr"]},
                "stage_wall_time_s": wall}
    write_metrics("attack_strength", headline, provenance(cfg, {**record, "seconds": seconds, "stage_wall_time_s": wall}))
    return {**record, "stage_wall_time_s": wall}
