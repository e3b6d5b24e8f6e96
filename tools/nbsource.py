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
from triqdef.transfer import pivot_rates, transfer_records, view_predictions

patches, patch_meta = load_patchset(paths.results_dir() / "patches" / "patches.pt")
test_x, test_y = splits.test.images, splits.test.labels
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
save_table(pivot_rates(rec_t1, "asr_common", column_order=order), "table1_transfer_asr_common", meta_t1,
           caption="Targeted ASR (%) on the images that every view of Table 1 classifies correctly.")
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
x_acc = {"FP": 100 * accuracy(xa["fp"], test_x, test_y)}
x_acc.update({f"{b}-bit": 100 * accuracy(xa["qat"], test_x, test_y, bits=b) for b in t8_bits})
min_acc = 100 * params["cross_arch"]["min_accuracy"]
flag = "" if x_acc["FP"] >= min_acc else f" (FP BELOW cross_arch.min_accuracy = {min_acc:.0f}%)"
cap = (f"Targeted ASR (%) across architectures: {pipeline.model_name(params)} ↔ {xa['name']}, 6×6 patches, {len(test_y)} test "
       f"images, profile `{profile}`. {xa['name']} clean accuracy: "
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

if __name__ == "__main__":
    build("01_motivation", MOTIVATION[:-1] + MOTIVATION_TRANSFER + MOTIVATION_ALIGNMENT + MOTIVATION_CROSS_ARCH + MOTIVATION[-1:])
