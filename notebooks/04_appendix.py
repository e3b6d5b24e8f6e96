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
# * the QADT-R comparison (from the `training` stage's Tables 4 and 5).
#
# Every table at the matched size when the patch stage made it (the regime where the attack works).
# The code is in `triqdef.stages.appendix`.

# %% tags=["parameters"]
profile = "smoke"   # papermill passes base.profile from params.yaml; nbval uses smoke
params_file = None

# %%
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
# ## Stage metrics
# Headline numbers (TriQDef's DPR ASR, the wall time) to `results/metrics/appendix.json`; the rest to
# `results/metadata/appendix.json`.

# %%
write_metrics("appendix", *appendix.metrics(run, t16, t6))
