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
# 01 · Motivation: clean accuracy of the FP and standard-QAT models

Paper section 2 and Table 4 ("Standard QAT" row). This notebook reads the
checkpoints written by the `train_fp` and `train_qat` stages and writes

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
    ax.plot(range(len(xs)) if len(xs) > 1 else [0], [row[f"{b}bit"] for b in xs], marker="o", label=row["model"])
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
axes[0].set(title="FP training", xlabel="step", ylabel="cross-entropy")
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
           "notebook_wall_time_s": round(time.perf_counter() - t_start, 1)}
write_json(paths.metrics_dir() / "motivation.json", summary)
summary
"""),
]

if __name__ == "__main__":
    build("01_motivation", MOTIVATION)
