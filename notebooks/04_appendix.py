# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Appendix: DPR (Table 16), preprocessing defenses (Table 6), architectures (Table 14), QADT-R
#
# Paper appendix C and section 4.4 on CIFAR-10, and the authors' earlier defense QADT-R. Reads the
# defended models of the `defense` stages (standard QAT, PBAT, DWQ, QADT-R, TriQDef), the patch sets of
# `patches`, the independent standard-QAT model of `train_qat` and the second architecture of
# `cross_arch`, and writes
#
# * Table 16: DPR, the deformable patch (texture and shape under an area budget), seen (FP-made) and
#   unseen (made at 2 bits on another standard-QAT model), on every defense;
# * Table 6: robust accuracy under LAVAN of the training-time defenses against a Jedi-style
#   preprocessing (entropy localisation + inpainting); DiffPure is out of reach offline;
# * Table 14: LAVAN across the architectures this profile trains;
# * the QADT-R comparison (from the `training` stage's Tables 4 and 5);
# * the int8 runtime (issue 32, from stage `int8`): every 8-bit view on PyTorch's integer kernels against
#   fake quantization.
#
# Every table at the matched size when the patch stage made it (the regime where the attack works).
# The code is in `triqdef.stages.appendix`.

# %% tags=["parameters"]
profile = "smoke"   # papermill passes base.profile from params.yaml; nbval uses smoke
params_file = None

# %%
from IPython.display import Image

from triqdef.meta import write_metrics
from triqdef.stages import appendix
from triqdef.stages.common import open_notebook

run = open_notebook(appendix, profile, params_file)

# %% [markdown]
# ## Table 16: DPR across bit-widths, seen and unseen
#
# The DPR patches are made here (the one patch optimiser's `dpr` recipe) and saved to
# `results/appendix/dpr_patches.pt`.

# %%
dpr = appendix.dpr_patches(run)
t16 = appendix.table16_dpr(run, dpr)
t16

# %% [markdown]
# ## Table 6: training-time defenses against a Jedi-style preprocessing

# %%
t6 = appendix.table6_preprocessing(run)
t6

# %% [markdown]
# ## Table 14: LAVAN across architectures

# %%
appendix.table14_architectures(run)

# %% [markdown]
# ## QADT-R beside TriQDef, PBAT and DWQ

# %%
appendix.qadt_r_comparison(run)

# %% [markdown]
# ## The int8 runtime (issue 32)
# Stage `int8` converts the 8-bit view of every defended model and of Table 9's PTQ model to int8 on
# PyTorch's quantized CPU kernels (`triqdef.deploy`) and evaluates both runtimes on the same images: top-1
# agreement, clean accuracy, and the targeted ASR of the seen, unseen and white-box LAVAN patches (white-box:
# 10 patches made on the model's own fake-quantized 8-bit view, the only differentiable one). Each ASR
# difference int8 − fake is paired on the images eligible on both runtimes; the claim is an equivalence
# within ±2 points (REPORT.md decides it with Holm over every one-sided comparison). Below 8 bits PyTorch
# has no integer kernel, so nothing is converted there. Read from the stage's outputs, not recomputed.

# %%
int8_table, int8_figure = appendix.int8_runtime(run)
int8_table.set_index("model")[[c for c in int8_table.columns
                               if c.endswith("int8 − fake") or c in ("agreement (%)", "size int8 (KB)")]].round(2)

# %%
Image(int8_figure)

# %% [markdown]
# ## Stage metrics
# Headline numbers (TriQDef's DPR ASR, the wall time) to `results/metrics/appendix.json`; the rest to
# `results/metadata/appendix.json`.

# %%
write_metrics("appendix", *appendix.metrics(run, t16, t6))
