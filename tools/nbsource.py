"""Build notebooks from the cell lists below (keeps notebooks reviewable as plain Python).

    python tools/nbsource.py      # rewrites notebooks/*.ipynb, without outputs
"""
import nbformat
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(name, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = []
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            out.append(nbformat.v4.new_markdown_cell(src))
        else:
            c = nbformat.v4.new_code_cell(src)
            if kind == "params":
                c.metadata["tags"] = ["parameters"]
            out.append(c)
    nb.cells = out
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    nbformat.write(nb, ROOT / "notebooks" / f"{name}.ipynb")


MOTIVATION = [
    ("md", """
# 01 · Motivation: clean accuracy, patch transfer across bit-widths, and cross-bit alignment

Paper section 2, appendix A and C.1. This notebook reads the checkpoints written
by the `train_fp` and `train_qat` stages and the patch sets of the `patches` stage,
and writes Tables 1, 3, 4 (standard-QAT row), 9 (CIFAR analogue), 11 and 12 and
Figure 2 (each section below says what it measures), plus

* `results/tables/table4_clean_accuracy.{csv,md,json}`: clean test accuracy per bit-width of
  the FP model, the FP model post-training-quantized (PTQ, calibrated, no training),
  the standard multi-bit QAT model (first/last layer at max(b, 8): the default), and
  the same QAT recipe with every layer at b;
* `results/figures/clean_accuracy_vs_bits.png` and `results/figures/training_curves.png`.

Run by `dvc repro` (papermill, profile from `params.yaml`) or open it to explore.
Under nbval it runs in the `smoke` profile on the smoke pipeline's outputs
(`make test` prepares them in a temporary folder named by `TRIQDEF_OUTPUT`).
"""),
    ("params", """
profile = "smoke"   # papermill passes base.profile from params.yaml; nbval uses smoke
params_file = None  # None: params.yaml at the project root
"""),
    ("code", """
import time
import logging

import pandas as pd
import matplotlib.pyplot as plt

from triqdef import paths, pipeline, quant
from triqdef.config import load_params
from triqdef.evaluate import clean_accuracy_table
from triqdef.meta import provenance, write_json
from triqdef.plots import smooth, use_style
from triqdef.tables import save_figure, save_table
from triqdef.train import model_from_checkpoint, read_checkpoint

logging.basicConfig(level=logging.WARNING)
use_style()
t_start = time.perf_counter()
params = load_params(params_file, profile)
splits = pipeline.load_data(params)
qs = pipeline.quant_settings(params)
print(f"profile {profile}; data {splits.source['source']}; test images {len(splits.test.labels)}; bits {qs['bits']}")
"""),
    ("md", "## Models\nThe FP model, its PTQ version (no training), and the standard multi-bit QAT models."),
    ("code", """
fp_model, fp_meta = model_from_checkpoint(pipeline.fp_checkpoint(params), kind="fp")
ptq_model = quant.post_training_quantize(fp_model, qs["bits"], [x for x in pipeline.calibration_batches(splits)],
                                         qs["first_last_bits"], qs["range_estimator"])
qat_model, qat_meta = model_from_checkpoint(pipeline.qat_checkpoint(params), kind="qat")
models = {
    "FP (32-bit training)": (fp_model, [32]),
    f"PTQ of FP (first/last {qs['first_last_bits']}-bit)": (ptq_model, qs["bits"]),
    f"Standard QAT (first/last {qat_meta['first_last_bits']}-bit)": (qat_model, qat_meta["bits"]),
}
all_layers_path = pipeline.qat_checkpoint(params, all_layers=True)
if all_layers_path.exists():
    qat_all, qat_all_meta = model_from_checkpoint(all_layers_path, kind="qat")
    models["Standard QAT (every layer at b)"] = (qat_all, qat_all_meta["bits"])
"""),
    ("md", "## Table 4 (standard-QAT row): clean accuracy per bit-width"),
    ("code", """
columns = [32, 8, 5, 4, 2]
table = clean_accuracy_table(models, splits.test.images, splits.test.labels, columns)
meta = provenance(params, {"data": pipeline.data_record(splits), "checkpoints": {
    "fp": fp_meta.get("commit"), "qat": qat_meta.get("commit")}, "qat_steps": qat_meta.get("steps"),
    "fp_steps": fp_meta.get("steps")})
caption = (f"Clean test accuracy (%) on {len(splits.test.labels)} CIFAR-10 test images "
           f"({splits.source['source']}), {pipeline.model_name(params)}, profile `{profile}`. "
           "Paper Table 4 (ResNet-56, 200 epochs): standard QAT 89.4 / 85.1 / 80.5 / 78.2 at 32 / 5 / 4 / 2 bits.")
save_table(table, "table4_clean_accuracy", meta, caption=caption)
table
"""),
    ("code", """
fig, ax = plt.subplots()
for _, row in table.iterrows():
    xs = [b for b in columns if pd.notna(row[f"{b}bit"])]
    if len(xs) == 1:  # the float model: a reference line
        ax.axhline(row[f"{xs[0]}bit"], color="k", ls="--", lw=1, label=row["model"])
        continue
    ax.plot([columns.index(b) for b in xs], [row[f"{b}bit"] for b in xs], marker="o", label=row["model"])
ax.set_xticks(range(len(columns)), [f"{b}" for b in columns])
ax.set_xlabel("bit-width (weights and activations)")
ax.set_ylabel("clean accuracy (%)")
ax.set_title(f"{pipeline.model_name(params)} on CIFAR-10 ({profile} profile, {len(splits.test.labels)} test images)")
ax.legend()
save_figure(fig, "clean_accuracy_vs_bits")
"""),
    ("md", "## Training curves\nPer-step cross-entropy of the FP run and of each bit-width of the joint QAT run (moving average)."),
    ("code", """
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
fp_hist = pd.DataFrame(read_checkpoint(pipeline.fp_checkpoint(params))["history"])
axes[0].plot(fp_hist["step"], smooth(fp_hist["loss_fp"]), label="FP")
axes[0].set(title=f"FP training (label smoothing {fp_meta['params'].get('label_smoothing', 0)})", xlabel="step",
            ylabel="cross-entropy")
qat_hist = pd.DataFrame(read_checkpoint(pipeline.qat_checkpoint(params))["history"])
for b in qat_meta["bits"]:
    axes[1].plot(qat_hist["step"], smooth(qat_hist[f"loss_{b}"]), label=f"{b}-bit")
axes[1].set(title="standard multi-bit QAT", xlabel="step", ylabel="cross-entropy")
axes[1].legend()
save_figure(fig, "training_curves")
"""),
    ("code", """
summary = {"profile": profile, "n_test": int(len(splits.test.labels)), "data_source": splits.source["source"],
           "accuracy": {r["model"]: {c: r[c] for c in table.columns if c.endswith("bit") and pd.notna(r[c])}
                        for _, r in table.iterrows()},
           "table1_asr": {r["attack"]: {v: r[v] for v in views_t1} for _, r in t1.iterrows()},
           "table8_asr": {f"{r['source']} -> {r['target']} {r['attack']}": {c: r[c] for c in t8.columns
                          if c == "FP" or c.endswith("-bit")} for _, r in t8.iterrows()},
           "seconds_per_patch_evaluation": {"n_images": int(len(test_y)),
                                            **rec_t1.groupby("view")["eval_s"].mean().round(2).to_dict()},
           "notebook_wall_time_s": round(time.perf_counter() - t_start, 1)}
write_json(paths.metrics_dir() / "motivation.json", summary)
summary
"""),
]

MOTIVATION_TRANSFER = [
    ("md", """
## Table 1: patches made on the FP model, transferred to standard QAT

Targeted ASR (%) of the `seen` LAVAN and GAP 6×6 patches (made on the FP model,
never used for training) at their stored locations. The 32-bit column is the FP
model itself (white-box, as in the paper); the others are the standard multi-bit
QAT model at each bit-width. `n` columns: images each rate is computed over
(correct when clean, label ≠ target), averaged over the patches.
"""),
    ("code", """
from triqdef.patchsets import load_patchset, select
from triqdef.evaluate import first_test_images
from triqdef.transfer import pivot_rates, transfer_records, view_predictions

patches, patch_meta = load_patchset(paths.results_dir() / "patches" / "patches.pt")
test_x, test_y = first_test_images(splits, params["motivation"].get("test_images"), "motivation.test_images")
print(f"patch tables (1, 8, 9, 11) on {len(test_y)} of {len(splits.test.labels)} test images")
views_t1 = {"32 (FP, white-box)": (fp_model, None)}
views_t1.update({f"{b}": (qat_model, b) for b in qat_meta["bits"]})
clean_t1 = view_predictions(views_t1, test_x)
seen = select(patches, "seen")
rec_t1 = transfer_records(seen, views_t1, test_x, test_y, clean_t1)
order = list(views_t1)
meta_t1 = dict(meta, patches={"set": "seen", "n": len(seen), "steps": patch_meta["params"]["steps"]})
cap = (f"Targeted ASR (%) of {len(seen)} seen 6×6 patches made on the FP {pipeline.model_name(params)}, transferred to "
       f"standard multi-bit QAT, {len(test_y)} test images ({splits.source['source']}), profile `{profile}`. "
       "Paper Table 1 (ResNet-20): LAVAN 87.2 / 83.7 / 77.3 / 74.2, GAP 84.7 / 59.6 / 58.5 / 50.3 at 32 / 8 / 4 / 2 bits.")
t1 = pivot_rates(rec_t1, "asr", column_order=order)
save_table(t1, "table1_transfer_asr", meta_t1, caption=cap)
save_table(pivot_rates(rec_t1, "fooling", column_order=order), "table1_transfer_fooling", meta_t1,
           caption="Untargeted fooling rate (%) of the same patches and views as Table 1.")
t1_common = pivot_rates(rec_t1, "asr_common", column_order=order)  # empty columns when no image is correct in every view
save_table(t1_common, "table1_transfer_asr_common", meta_t1,
           caption=(f"Targeted ASR (%) on the images that every view of Table 1 classifies correctly "
                    f"({int(rec_t1['n_common'].max())} images at most; empty when there is none)."))
t1
"""),
]

MOTIVATION_ALIGNMENT = [
    ("md", """
## Table 3: input-gradient similarity across bit-widths

Input gradients of the cross-entropy on clean test images, for the FP model (`fp`)
and the standard-QAT model at 5, 4 and 2 bits. *Cosine* is the cosine of the raw
gradients; Edge IoU and HOG cosine compare the gradient maps (channel mean of |g|,
min-max normalised). Every value stands beside its chance baseline: the same metric
between gradients of different images.
"""),
    ("code", """
from itertools import combinations
import torch
from triqdef import alignment
from triqdef import perceptual as P

n_align = min(params["motivation"]["n_align"], len(test_y))
xa, ya = test_x[:n_align].float() / 255, test_y[:n_align]
gen = lambda: torch.Generator().manual_seed(params["base"]["seed"])
grad_views = {"fp": (fp_model, None), "5": (qat_model, 5), "4": (qat_model, 4), "2": (qat_model, 2)}
grads = {k: alignment.input_gradients(m, xa, ya, b) for k, (m, b) in grad_views.items()}
gmaps = {k: P.to_map(g, "gradient") for k, g in grads.items()}
rows = []
for a, b in combinations(grad_views, 2):
    cos = alignment.raw_gradient_cosine(grads[a], grads[b]).mean().item()
    perm = P.derangement(n_align, gen())
    cos_chance = alignment.raw_gradient_cosine(grads[a], grads[b][perm]).mean().item()
    rows.append({"pair": f"{a}-{b}", "metric": "cosine (raw gradient)", "value": cos, "chance": cos_chance})
    for metric, r in alignment.compare(gmaps[a], gmaps[b], ["edge_iou", "hog_cosine"], gen()).items():
        rows.append({"pair": f"{a}-{b}", "metric": metric, **r})
t3 = pd.DataFrame(rows)
t3["above_chance"] = t3["value"] - t3["chance"]
save_table(t3, "table3_gradient_similarity", dict(meta, n_images=n_align), floatfmt=".3f",
           caption=(f"Input-gradient similarity between bit-width pairs on {n_align} clean test images, with chance "
                    "baselines (deranged pairs). Paper Table 3: cosine 0.05-0.25, HOG cosine about 0.80, Edge IoU 0.5-0.6 "
                    "(no baselines given)."))
t3.pivot(index="metric", columns="pair", values="value").round(3)
"""),
    ("md", """
## Figure 2 and Table 12: feature-map alignment at the FDP taps

Feature maps (channel mean, min-max normalised) of the standard-QAT model at each
pair of its bit-widths, at the tap layers, for clean inputs and for inputs carrying a
seen LAVAN patch. Heatmaps show Edge IoU and HOG cosine; the chance baseline
(deranged images) is printed on each panel. Table 12 compares the hard metrics with
their soft, differentiable counterparts used in training.
"""),
    ("code", """
import numpy as np
from triqdef.attacks import apply_patch

taps = alignment.taps_for(pipeline.model_name(params))
bits_fm = list(qat_meta["bits"])
lavan_seen = select(patches, "seen", "lavan")[0]
inputs = {"clean": xa, "patched": apply_patch(xa, lavan_seen)}
fmaps = {kind: {b: alignment.feature_maps(qat_model, x, b, taps) for b in bits_fm} for kind, x in inputs.items()}
records = []
for kind in inputs:
    for tap in taps:
        for i, bi in enumerate(bits_fm):
            for bj in bits_fm[i + 1:]:
                res = alignment.compare(fmaps[kind][bi][tap], fmaps[kind][bj][tap], list(alignment.METRICS), gen())
                for metric, r in res.items():
                    records.append({"input": kind, "tap": alignment.TAP_LABELS.get(tap, tap), "pair": f"{bi}-{bj}",
                                    "metric": metric, **r})
fm = pd.DataFrame(records)

fig, axes = plt.subplots(2 * len(inputs), len(taps), figsize=(3.3 * len(taps), 3.0 * 2 * len(inputs)))
for r, (kind, metric) in enumerate([(k, m) for k in inputs for m in ("edge_iou", "hog_cosine")]):
    for c, tap in enumerate(taps):
        sub = fm[(fm.input == kind) & (fm.metric == metric) & (fm.tap == alignment.TAP_LABELS.get(tap, tap))]
        mat = np.eye(len(bits_fm))
        for _, row in sub.iterrows():
            bi, bj = (bits_fm.index(int(v)) for v in row["pair"].split("-"))
            mat[bi, bj] = mat[bj, bi] = row["value"]
        ax = axes[r, c]
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(bits_fm)), bits_fm)
        ax.set_yticks(range(len(bits_fm)), bits_fm)
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
        ax.set_title(f"{kind} · {metric} · {alignment.TAP_LABELS.get(tap, tap)}\\nchance {sub['chance'].mean():.2f}", fontsize=8)
        ax.grid(False)
fig.colorbar(im, ax=axes, shrink=0.6, label="similarity")
save_figure(fig, "figure2_feature_alignment")
"""),
    ("code", """
t12 = fm[(fm.input == "clean") & fm.pair.isin(["32-5", "5-4"])].copy()
t12 = t12.pivot_table(index=["tap", "pair"], columns="metric", values=["value", "chance"]).round(3)
t12 = t12[sorted(t12.columns, key=lambda c: (c[1], c[0] != "value"))]
t12.columns = [f"{m} ({v})" for v, m in t12.columns]
t12 = t12.reset_index()
save_table(t12, "table12_hard_vs_soft", dict(meta, n_images=n_align), floatfmt=".3f",
           caption=("Hard vs soft metrics between feature maps of the standard-QAT model at the tap layers "
                    "(clean inputs): Edge IoU vs SoftDice of soft edges, HOG vs SoftHOG cosine; chance baselines in brackets."))
t12
"""),
    ("md", """
## Table 9 (CIFAR analogue) and Table 11: PTQ and dynamic quantization

*CIFAR analogue of the paper's ImageNet Table 9*: LAVAN patches of 8, 9 and 10 pixels
made on the FP model, on the FP model post-training-quantized (calibrated on the
held-out split, no training) at 8/5/4/2 bits. Table 11: the seen 6×6 LAVAN and GAP
patches on the FP model and on its dynamically quantized 8-bit version (activation
ranges per batch).
"""),
    ("code", """
views_ptq = {"32 (FP)": (fp_model, None)}
views_ptq.update({f"PTQ {b}": (ptq_model, b) for b in qs["bits"] if b != 32})
size_sets = [s for s in ("unseen_size8", "size9", "unseen_size10")]
p9 = [p for s in size_sets for p in select(patches, s, "lavan")]
rec_t9 = transfer_records(p9, views_ptq, test_x, test_y)
t9 = pivot_rates(rec_t9, "asr", index=("size",), column_order=list(views_ptq))
save_table(t9, "table9_ptq_transfer_cifar", dict(meta, analogue_of="paper Table 9 (ImageNet ResNets)"),
           caption=("CIFAR analogue of paper Table 9 (which is ImageNet): targeted ASR (%) of FP-made LAVAN patches "
                    "by size on the PTQ ResNet-20."))
dyn_model = quant.dynamic_quantization(quant.post_training_quantize(fp_model, [32, 8], [x for x in pipeline.calibration_batches(splits)],
                                                                    qs["first_last_bits"], qs["range_estimator"]))
views_dyn = {"32 (FP)": (fp_model, None), "dynamic 8-bit": (dyn_model, 8)}
rec_t11 = transfer_records(seen, views_dyn, test_x, test_y)
t11 = pivot_rates(rec_t11, "asr", column_order=list(views_dyn))
save_table(t11, "table11_dynamic_quantization", meta,
           caption="Targeted ASR (%) of the seen 6×6 patches on the FP model and its dynamically quantized 8-bit version.")
pd.concat([t9.assign(table="9"), t11.assign(table="11")], ignore_index=True)
"""),
]

MOTIVATION_CROSS_ARCH = [
    ("md", """
## Table 8: transfer across architectures and bit-widths

The seen 6×6 LAVAN / GAP patches made on the FP ResNet-20 (those of Table 1), on the
second architecture of the `cross_arch` stage (its FP model and its multi-bit QAT
model at each bit-width), and that architecture's own FP-made patches on ResNet-20
(FP and standard QAT). The last block is the second architecture's patches on its own
FP model (white-box), the reference for how strong they are. In the `cpu` profile the
second architecture is trained briefly (see the `cross_arch` params), and its clean
accuracy is printed in the caption.
"""),
    ("code", """
from triqdef import crossarch
from triqdef.train import accuracy

xa = crossarch.load_models(params)
t8_bits = xa["qat_meta"]["bits"]
directions = [
    {"source": pipeline.model_name(params), "patches": seen, "target": xa["name"], "fp": xa["fp"], "qat": xa["qat"], "bits": t8_bits},
    {"source": xa["name"], "patches": xa["patches"], "target": pipeline.model_name(params), "fp": fp_model, "qat": qat_model,
     "bits": [b for b in t8_bits if b in qat_meta["bits"]]},
    {"source": xa["name"], "patches": xa["patches"], "target": f"{xa['name']} (white-box)", "fp": xa["fp"], "qat": None, "bits": []},
]
rec_t8, t8 = crossarch.table8_records(directions, test_x, test_y)
x_acc = {"FP": 100 * accuracy(xa["fp"], splits.test.images, splits.test.labels)}  # every test image, as Table 4
x_acc.update({f"{b}-bit": 100 * accuracy(xa["qat"], splits.test.images, splits.test.labels, bits=b) for b in t8_bits})
min_acc = 100 * params["cross_arch"]["min_accuracy"]
flag = "" if x_acc["FP"] >= min_acc else f" (FP BELOW cross_arch.min_accuracy = {min_acc:.0f}%)"
cap = (f"Targeted ASR (%) across architectures: {pipeline.model_name(params)} ↔ {xa['name']}, 6×6 patches, {len(test_y)} test "
       f"images, profile `{profile}`. {xa['name']} clean accuracy ({len(splits.test.labels)} test images): "
       + ", ".join(f"{k} {v:.1f}%" for k, v in x_acc.items()) + flag
       + f" ({xa['fp_meta']['steps']} FP steps, {xa['qat_meta']['steps']} QAT steps). "
       "Paper Table 8 (200-epoch models): ResNet-20 → ResNet-56 84.2 / 79.6 / 77.7 / 75.2, "
       "ResNet-56 → ResNet-20 84.1 / 77.7 / 75.3 / 71.8 at 32 / 8 / 4 / 2 bits.")
save_table(t8, "table8_cross_architecture", dict(meta, second_model=xa["name"], second_model_accuracy=x_acc,
                                                   second_model_steps={"fp": xa["fp_meta"]["steps"], "qat": xa["qat_meta"]["steps"]}),
           caption=cap)
t8
"""),
]


TRAINING = [
    ("md", """
# 02 · Training: TriQDef against standard QAT, PBAT and DWQ

Paper sections 3–4 and appendix D. Reads the standard-QAT, PBAT, DWQ and TriQDef
models of the `defense` stages (every one a fine-tune of the same checkpoint,
`defenses.init`, for the same steps on the same batches: the `cpu` profile starts
them all from the standard multi-bit QAT model of `train_qat`, the `paper` profile
from the FP weights) and the patch sets of the `patches` stage, and writes

* Table 4: clean accuracy per bit-width (standard QAT, PBAT, DWQ, TriQDef);
* Table 5: targeted ASR of LAVAN and GAP on the seen and unseen patch sets at
  32/5/4/2 bits, DWQ's random-precision inference as an extra column, and the
  white-box row (LAVAN optimised on each defended model, over locations and B);
* Table 2 in the project's terms (standard QAT vs PBAT at 32, 8 and 8-bit PTQ of
  the 32-bit weights);
* Table 17 (training cost relative to QAT), Table 18 (inference cost of the
  deployed model against a plain QAT model of the same bit-width);
* Figure 3 (Grad-CAM of TriQDef at fp/5/4/2) and the loss terms over training.
"""),
    ("params", """
profile = "smoke"   # papermill passes base.profile from params.yaml; nbval uses smoke
params_file = None
"""),
    ("code", """
import time
import logging

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch

from triqdef import deploy, paths, pipeline, quant, robustness
from triqdef.config import load_params, section
from triqdef.defense_runs import checkpoint as defense_checkpoint
from triqdef.evaluate import clean_accuracy_table, first_test_images
from triqdef.meta import provenance, write_json
from triqdef.patchsets import load_patchset, select
from triqdef.plots import smooth, use_style
from triqdef.tables import save_figure, save_table
from triqdef.train import model_from_checkpoint, read_checkpoint

logging.basicConfig(level=logging.WARNING)
use_style()
t_start = time.perf_counter()
params = load_params(params_file, profile)
splits = pipeline.load_data(params)
qs = pipeline.quant_settings(params)
rob = section(params, "robustness")
name = pipeline.model_name(params)
test_x, test_y = first_test_images(splits, rob["test_images"], "robustness.test_images")
n_eval = len(test_y)
print(f"profile {profile}; data {splits.source['source']}; {n_eval} test images for the patch tables; bits {qs['bits']}")
"""),
    ("code", """
models, metas = {}, {}
for label, run in (("Standard QAT", "qat"), ("PBAT", "pbat"), ("DWQ", "dwq"), ("TriQDef", "triqdef")):
    models[label], metas[label] = model_from_checkpoint(defense_checkpoint(run), kind="defense", model_name=name)
init = {k: m["init"] for k, m in metas.items()}
print("every row starts from", sorted({i["checkpoint"] for i in init.values()}), "and runs",
      sorted({m["params"].get("steps") or m["params"].get("epochs") for m in metas.values()}), "steps / epochs of the defenses recipe")
meta = provenance(params, {"data": pipeline.data_record(splits), "n_eval": n_eval,
                           "checkpoints": {k: m.get("commit") for k, m in metas.items()}, "init": init,
                           "steps": {k: m.get("steps") for k, m in metas.items()}})
"""),
    ("md", "## Table 4: clean accuracy per bit-width"),
    ("code", """
cols = [32, 8, 5, 4, 2]
t4 = clean_accuracy_table({k: (m, qs["bits"]) for k, m in models.items()}, splits.test.images, splits.test.labels, cols)
save_table(t4, "table4_defenses_clean_accuracy", meta,
           caption=(f"Clean test accuracy (%) on {len(splits.test.labels)} test images, {name}, profile `{profile}`. "
                    "Paper Table 4 (ResNet-56): standard QAT 89.4 / 85.1 / 80.5 / 78.2, PBAT 86.2 / 84.1 / 79.8 / 76.9, "
                    "TriQDef 89.4 / 83.3 / 78.2 / 75.8 at 32 / 5 / 4 / 2 bits."))
t4
"""),
    ("md", "## Table 5: ASR on seen and unseen patches, and white-box"),
    ("code", """
patches, patch_meta = load_patchset(paths.results_dir() / "patches" / "patches.pt")
sets = {"seen": select(patches, "seen")}
sets.update({k: select(patches, k) for k in robustness.UNSEEN_SETS})
eval_bits = rob["bits"]
rec = robustness.defense_records(models, sets, eval_bits, test_x, test_y, random_precision=["DWQ"], rp_bits=qs["bits"],
                                 seed=params["base"]["seed"])
pcfg = dict(section(params, "patches"), steps=rob["whitebox_steps"])
rng = np.random.default_rng([params["base"]["seed"], 11])
att_idx = torch.from_numpy(rng.choice(len(splits.train.labels), size=min(pcfg["attack_images"], len(splits.train.labels)), replace=False))
wb_records = []
for label in ("PBAT", "DWQ", "TriQDef"):
    wb = robustness.whitebox_patches(models[label], qs["bits"], splits.train.images[att_idx], splits.train.labels[att_idx],
                                     rob["whitebox_patches"], pcfg, params["base"]["seed"], label)
    wb_records.append(robustness.defense_records({label: models[label]}, {"whitebox": wb}, eval_bits, test_x, test_y))
rec_all = pd.concat([rec] + wb_records, ignore_index=True)
views = [f"{b}-bit" for b in eval_bits] + ["random"]
t5 = robustness.asr_table(rec_all, "group", views)
t5 = t5.assign(**{f"patchattack {v}": float("nan") for v in views[:-1]})  # PatchAttack (Yang 2020): not implemented yet
cap5 = (f"Targeted ASR (%) of LAVAN / GAP 6×6 patches (seen: FP-made from the training distribution; unseen: the five "
        f"unseen sets together; whitebox: LAVAN optimised on each model over locations and B = {qs['bits']}), "
        f"{n_eval} test images, profile `{profile}`. 'random' = random-precision inference (DWQ only). "
        "The PatchAttack columns stay empty: that attack is not implemented here yet. "
        "Paper Table 5 (ResNet-56, LAVAN 32/5/4/2): PBAT unseen 71.8 / 65.3 / 61.1 / 57.5, DWQ unseen 86.5 / 81.7 / 76.4 / 72.9, "
        "TriQDef unseen 35.6 / 33.3 / 29.1 / 27.3.")
save_table(t5, "table5_asr", dict(meta, whitebox_steps=rob["whitebox_steps"]), caption=cap5)
save_table(robustness.asr_table(rec_all, "patch_set", views), "table5_asr_by_set", meta,
           caption="Table 5 with every unseen set on its own (source bit-width 4 / 2, size 8 / 10, location).")
save_table(robustness.asr_table(rec_all, "group", views, value="fooling"), "table5_fooling", meta,
           caption="Untargeted fooling rate (%) of the patches of Table 5.")
t5
"""),
    ("md", "## Table 2 (project's terms): standard QAT vs PBAT at 32, 8 and 8-bit PTQ of the 32-bit weights"),
    ("code", """
calib = [x for x in pipeline.calibration_batches(splits)]
t2_views = {}
for label in ("Standard QAT", "PBAT"):
    ptq8 = quant.post_training_quantize(deploy.to_float_model(models[label], name), [32, 8], calib, qs["first_last_bits"],
                                        qs["range_estimator"])
    t2_views[label] = {"32-bit": (models[label], 32), "8-bit": (models[label], 8), "8-bit PTQ of 32-bit weights": (ptq8, 8)}
t2_sets = {"seen 8x8": select(patches, "unseen_size8"), "seen 10x10": select(patches, "unseen_size10"),
           "unseen (made at 4 bits)": select(patches, "unseen_bits4"), "unseen (made at 2 bits)": select(patches, "unseen_bits2")}
from triqdef.transfer import transfer_records
t2_rec = pd.concat([transfer_records(ps, t2_views[label], test_x, test_y).assign(model=label, patch_set=sname)
                    for label in t2_views for sname, ps in t2_sets.items()], ignore_index=True)
t2 = t2_rec.pivot_table(index=["model", "patch_set"], columns="view", values="asr", aggfunc="mean", sort=False)
t2 = t2[list(t2_views["PBAT"])].reset_index()
save_table(t2, "table2_qat_vs_pbat", meta,
           caption=("Targeted ASR (%) in the project's terms of paper Table 2: 8×8 / 10×10 FP-made patches (the paper's "
                    "'seen' sizes) and 6×6 patches made on the standard-QAT model at 4 and 2 bits, on standard QAT and PBAT "
                    f"at 32 bits, 8 bits, and 8-bit PTQ of their 32-bit weights; {n_eval} test images."))
t2
"""),
    ("md", "## Table 17: training cost relative to multi-bit QAT; Table 18: deployed inference cost"),
    ("code", """
from triqdef.bench import train_step_benchmark
from triqdef.defense_runs import build_step
from triqdef.defenses import triqdef_settings

bench_bits = qs["bits"]
extra = {}
for method in ("dwq", "pbat"):
    extra[method] = build_step(method, params, None, splits, 1)[0]
tb = train_step_benchmark(triqdef_settings(params, name), name, bench_bits, section(params, "defenses")["batch_size"],
                          steps=rob["bench_steps"], warmup=1, extra_steps=extra, device=params["base"].get("device", "auto"))
t17 = pd.DataFrame([{"method": k.upper() if k != "triqdef" else "TriQDef", "images/s": round(tb["batch_size"] / tb[f"{k}_ms"] * 1000, 1),
                     "iter (ms)": tb[f"{k}_ms"], "peak saved-for-backward (MB)": tb[f"{k}_peak_mb"],
                     "time ×": round(tb[f"{k}_ms"] / tb["qat_ms"], 2), "mem ×": round(tb[f"{k}_peak_mb"] / tb["qat_peak_mb"], 2)}
                    for k in ("qat", "dwq", "pbat", "triqdef")])
save_table(t17, "table17_training_cost", dict(meta, bench=tb), floatfmt={"time ×": ".2f", "mem ×": ".2f"},
           caption=(f"Training cost per step on this machine ({tb['device']}, {tb['threads']} threads), {name}, bits {bench_bits} "
                    f"all active, batch {tb['batch_size']}, mean of {tb['steps']} alternating steps; memory = peak bytes saved "
                    "for backward. Paper Table 17 (A100, ResNet-56): DWQ 1.05× / 1.02×, PBAT 1.52× / 1.45×, TriQDef 1.47× / 1.17×."))
t17
"""),
    ("code", """
t18_rows = []
x_lat = test_x[:rob["latency_batch"]].float() / 255
for b in [b for b in qs["bits"] if b != 32] + [32]:
    dq = deploy.extract_bitwidth(models["Standard QAT"], b, name)
    dt = deploy.extract_bitwidth(models["TriQDef"], b, name)
    lat = deploy.latency_ratio(dt, dq, x_lat, repeats=rob["latency_repeats"])
    t18_rows.append({"bits": b, "same modules/params/buffers": deploy.same_structure(dt, dq),
                     "hooks": deploy.structure(dt)["hooks"], "TriQDef ms": lat["model"]["median_ms"],
                     "QAT ms": lat["reference"]["median_ms"], "ratio (median)": lat["ratio_median"],
                     "ratio p10–p90": f"{lat['ratio_p10']:.3f}–{lat['ratio_p90']:.3f}"})
t18 = pd.DataFrame(t18_rows)
save_table(t18, "table18_inference_cost", meta, floatfmt={"ratio (median)": ".3f"},
           caption=(f"Deployed TriQDef model at each bit-width against the deployed standard-QAT model of the same bit-width: "
                    f"structure identity and latency on a batch of {len(x_lat)} ({rob['latency_repeats']} alternating runs)."))
t18
"""),
    ("md", "## Figure 3: Grad-CAM of TriQDef at fp/5/4/2 bits, and its clean-accuracy deviation from standard QAT"),
    ("code", """
from triqdef.gradcam import grad_cam

n_show = 4
xs, ys = test_x[:n_show].float() / 255, test_y[:n_show]
cam_bits = [32, 5, 4, 2]
fig, axes = plt.subplots(n_show, len(cam_bits) + 1, figsize=(2 * (len(cam_bits) + 1), 2 * n_show))
for i in range(n_show):
    axes[i, 0].imshow(xs[i].permute(1, 2, 0).numpy())
    axes[i, 0].set_title(f"label {int(ys[i])}" if i == 0 else "")
for j, b in enumerate(cam_bits):
    cams = grad_cam(models["TriQDef"], xs, ys, b)
    for i in range(n_show):
        axes[i, j + 1].imshow(xs[i].permute(1, 2, 0).numpy())
        axes[i, j + 1].imshow(cams[i].numpy(), cmap="jet", alpha=0.45)
        if i == 0:
            axes[i, j + 1].set_title("fp" if b == 32 else f"{b}-bit")
for ax in axes.flat:
    ax.axis("off")
save_figure(fig, "figure3_gradcam_triqdef")
n_cam = min(64, n_eval)  # how alike are the maps: cosine of each b-bit map to the fp map of the same image
xc, yc = test_x[:n_cam].float() / 255, test_y[:n_cam]
cam_fp = grad_cam(models["TriQDef"], xc, yc, 32).flatten(1)
cam_cos = {f"{b}-bit": round(float(torch.nn.functional.cosine_similarity(grad_cam(models["TriQDef"], xc, yc, b).flatten(1),
                                                                          cam_fp, dim=1).mean()), 3) for b in cam_bits[1:]}
print(f"mean cosine of the TriQDef Grad-CAM maps to the fp map over {n_cam} test images:", cam_cos)
acc = t4.set_index("model")
dev = {c: round(acc.loc["TriQDef", c] - acc.loc["Standard QAT", c], 2) for c in acc.columns if c.endswith("bit")}
print("TriQDef minus standard QAT clean accuracy (points):", dev)
"""),
    ("md", "## Loss terms over TriQDef training"),
    ("code", """
hist = pd.DataFrame(read_checkpoint(defense_checkpoint("triqdef"))["history"])
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for k in ("loss_clean", "loss_adv"):
    axes[0].plot(hist["step"], smooth(hist[k]), label=k)
axes[0].set(xlabel="step", ylabel="cross-entropy", title="classification terms")
for k in ("fdp", "gpdp"):
    if k in hist:
        axes[1].plot(hist["step"], smooth(hist[k].ffill()), label=f"L_{k.upper()}")
pair_reduction = section(params, "triqdef")["pair_reduction"]
axes[1].set(xlabel="step", ylabel="penalty",
            title=f"FDP / GPDP (true value, {'mean over' if pair_reduction == 'mean' else 'sum over'} ordered pairs)")
for st in metas["TriQDef"]["settings"]["bact_schedule"][1:]:
    for ax in axes:
        ax.axvline(st["start_step"], color="k", ls=":", lw=1)
for ax in axes:
    ax.legend()
save_figure(fig, "triqdef_loss_terms")
summary = {"profile": profile, "n_eval": n_eval, "table4": t4.to_dict(orient="records"),
           "table5": t5.to_dict(orient="records"), "bench": {k: v for k, v in tb.items() if k != "settings"},
           "clean_deviation_triqdef_minus_qat": dev, "gradcam_cosine_to_fp": cam_cos, "notebook_wall_time_s": round(time.perf_counter() - t_start, 1)}
write_json(paths.metrics_dir() / "training.json", summary)
summary["notebook_wall_time_s"]
"""),
]

ABLATIONS = [
    ("md", """
# 03 · Ablations: Table 7 (without FDP, without GPDP) and Table 13 (sensitivity)

Reads the full TriQDef model of the `defense` stage and the variants of the
`ablations` stage (each the same run with some `triqdef` parameters overridden;
`ablations.run` selects them per profile, a reduced Table 13 grid in `cpu`).
"""),
    ("params", """
profile = "smoke"   # papermill passes base.profile from params.yaml; nbval uses smoke
params_file = None
"""),
    ("code", """
import time
import logging

import pandas as pd

from triqdef import paths, pipeline, robustness
from triqdef.config import load_params, section
from triqdef.defense_runs import ablation_runs, checkpoint, variants
from triqdef.meta import provenance, write_json
from triqdef.patchsets import load_patchset, select
from triqdef.tables import save_table
from triqdef.evaluate import first_test_images
from triqdef.train import accuracy, model_from_checkpoint

logging.basicConfig(level=logging.WARNING)
t_start = time.perf_counter()
params = load_params(params_file, profile)
splits = pipeline.load_data(params)
rob = section(params, "robustness")
name = pipeline.model_name(params)
test_x, test_y = first_test_images(splits, rob["test_images"], "robustness.test_images")
n_eval = len(test_y)
runs = ablation_runs(params)
models, metas = {}, {}
models["full"], metas["full"] = model_from_checkpoint(checkpoint("triqdef"), kind="defense", model_name=name)
for v in runs:
    models[v], metas[v] = model_from_checkpoint(checkpoint("triqdef", v), kind="defense", model_name=name)
patches, _ = load_patchset(paths.results_dir() / "patches" / "patches.pt")
meta = provenance(params, {"data": pipeline.data_record(splits), "n_eval": n_eval, "variants": {v: variants(params)[v] for v in runs},
                           "checkpoints": {k: m.get("commit") for k, m in metas.items()}})
print(f"profile {profile}; variants {runs}; {n_eval} test images")
"""),
    ("md", "## Table 7: without FDP, without GPDP, full TriQDef (seen and unseen patches)"),
    ("code", """
labels7 = {"no_fdp": "w/o FDP", "no_gpdp": "w/o GPDP", "full": "Full TriQDef",
           "every_step_full_res": "Full TriQDef, GPDP every step, full-resolution maps"}
m7 = {labels7[k]: models[k] for k in labels7 if k in models}
print("full TriQDef speed settings:", {k: metas["full"]["settings"].get(k) for k in ("gpdp_every", "downsample", "gpdp_sub_batch")})
sets = {"seen": select(patches, "seen")}
sets.update({k: select(patches, k) for k in robustness.UNSEEN_SETS})
rec7 = robustness.defense_records(m7, sets, rob["bits"], test_x, test_y)
t7 = robustness.asr_table(rec7, "group", [f"{b}-bit" for b in rob["bits"]])
save_table(t7, "table7_ablation", meta,
           caption=(f"Targeted ASR (%) of the seen and unseen patch sets on TriQDef without FDP (λ_FDP = 0), without GPDP "
                    f"(λ_GPDP = 0) and in full, {n_eval} test images, profile `{profile}`; the last row (when trained) "
                    "turns off the speed settings (GPDP every step, maps at full resolution). Paper Table 7 (ResNet-56, LAVAN, "
                    "32/5/4/2): w/o FDP 65.2 / 61.1 / 59.7 / 55.9 (seen and unseen rows identical in the paper), "
                    "w/o GPDP seen 43.2 / 41.7 / 39.4 / 37.6, full seen 32.4 / 30.2 / 28.4 / 26.2."))
t7
"""),
    ("md", "## Table 13: sensitivity to (α, β) and (λ_FDP, λ_GPDP): clean and robust accuracy, and ASR"),
    ("code", """
grid = {"full": "default (α, β) = (0.5, 1.0), (λ_FDP, λ_GPDP) = (0.8, 0.5)"}
grid.update({v: ", ".join(f"{k} = {x}" for k, x in variants(params)[v].items()) for v in runs if v not in ("no_fdp", "no_gpdp", "every_step_full_res")})
seen_lavan = select(patches, "seen", "lavan")
rows = []
for v, desc in grid.items():
    for setting in ("Clean", "Adv", "ASR"):
        row = {"variant": v, "setting": desc if setting == "Clean" else "", "metric": setting}
        for b in rob["bits"]:
            if setting == "Clean":  # every test image, as Table 4
                row[f"{b}bit"] = 100 * accuracy(models[v], splits.test.images, splits.test.labels, bits=b)
            elif setting == "Adv":
                row[f"{b}bit"] = robustness.robust_accuracy(models[v], b, seen_lavan, test_x, test_y)
            else:
                r = robustness.defense_records({v: models[v]}, {"seen": seen_lavan}, [b], test_x, test_y)
                row[f"{b}bit"] = r["asr"].mean()
        rows.append(row)
t13 = pd.DataFrame(rows)
save_table(t13, "table13_sensitivity", meta,
           caption=(f"Clean accuracy ({len(splits.test.labels)} test images, as Table 4), robust accuracy under the seen 6×6 "
                    f"LAVAN patches ('Adv') and their targeted ASR (%) ({n_eval} test images), profile `{profile}` (reduced grid: {', '.join(grid)}). Paper Table 13 has two rows "
                    "for the default configuration, (α, β) = (0.5, 1.0) and (λ_FDP, λ_GPDP) = (0.8, 0.5), with different numbers, "
                    "and its (1.0, 0.5) row equals its (0.8, 0.5) row."))
write_json(paths.metrics_dir() / "ablation_tables.json", {"profile": profile, "table7": t7.to_dict(orient="records"),
                                                    "table13": t13.to_dict(orient="records"),
                                                    "notebook_wall_time_s": round(time.perf_counter() - t_start, 1)})
t13
"""),
]

if __name__ == "__main__":
    build("01_motivation", MOTIVATION[:-1] + MOTIVATION_TRANSFER + MOTIVATION_ALIGNMENT + MOTIVATION_CROSS_ARCH + MOTIVATION[-1:])
    build("02_training", TRAINING)
    build("03_ablations", ABLATIONS)
