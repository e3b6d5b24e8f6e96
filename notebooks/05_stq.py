# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · STQ: a tiny stochastic-ternary network against six ART attacks, beside our ResNet-20
#
# Zakariyya et al. 2025 (STQ): a tiny grayscale CIFAR-10 network with stochastic ternary weights and 4-bit
# activations, defensive distillation (T = 1 and T = 50) and, as an explicit option, Jacobian
# regularisation. Reads the networks of stage `stq_train` and the standard multi-bit QAT ResNet-20 of
# `train_qat`, and writes
#
# * the STQ table: memory footprint, clean and robust accuracy under FGSM, PGD, C&W (white-box) and Square,
#   Boundary, ZOO (black-box), all from the Adversarial Robustness Toolbox, with each attack's budget;
# * the Jacobian table: each tiny network's input–logit Jacobian norm.
#
# The code is in `triqdef.stages.stq`; the readings of the summary in docs/design.md "STQ".

# %% tags=["parameters"]
profile = "smoke"   # papermill passes base.profile from params.yaml; nbval uses smoke
params_file = None

# %%
from triqdef.meta import write_metrics
from triqdef.stages import stq
from triqdef.stages.common import open_notebook

run = open_notebook(stq, profile, params_file)

# %% [markdown]
# ## The six attacks on every model

# %%
results = stq.attack_results(run)
table = stq.stq_table(run, results)
table

# %% [markdown]
# ## Does ternary QAT regularise the Jacobian?

# %%
stq.jacobian_table(run)

# %% [markdown]
# ## Stage metrics
# Headline numbers (clean and PGD robust accuracy of each tiny network, the wall time) to
# `results/metrics/stq.json`; the rest to `results/metadata/stq.json`.

# %%
write_metrics("stq", *stq.metrics(run, table))
