# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Ablations: Table 7 (without FDP, without GPDP) and Table 13 (sensitivity)
#
# Reads the full TriQDef model of the `defense` stage and the variants of the
# `ablations` stage (each the same run with some `triqdef` parameters overridden;
# `ablations.run` selects them per profile, a reduced Table 13 grid in `cpu`).
# The code is in `triqdef.stages.ablation_tables`.

# %% tags=["parameters"]
profile = "smoke"   # papermill passes base.profile from params.yaml; nbval uses smoke
params_file = None

# %%
from triqdef.meta import write_metrics
from triqdef.stages import ablation_tables, regimes
from triqdef.stages.common import open_notebook

run = open_notebook(ablation_tables, profile, params_file)

# %% [markdown]
# ## Which patch size
#
# Tables 7 and 13 come first in the regime REPORT.md decides in (the matched size when stage
# `attack_strength` made it; docs/design.md#attack-regime), then in the other regime when
# `regimes.evaluate` is `both` (the `cpu` profile makes the deciding one only: time budget).

# %%
regime, other = regimes.deciding_regime(run), regimes.other_regime(run)
print(regimes.regime_note(run))

# %% [markdown]
# ## Table 7: without FDP, without GPDP, full TriQDef (seen and unseen patches)

# %%
print("full TriQDef speed settings:", ablation_tables.speed_settings(run))
t7 = ablation_tables.table7_ablation(run, regime)
t7

# %% [markdown]
# ## Table 13: sensitivity to (α, β) and (λ_FDP, λ_GPDP): clean and robust accuracy, and ASR

# %%
t13 = ablation_tables.table13_sensitivity(run, regime)
t13

# %% [markdown]
# ## Tables 7 and 13 in the other regime
#
# Each says why when it was not made.

# %%
ablation_tables.table7_ablation(run, other)

# %%
ablation_tables.table13_sensitivity(run, other)

# %% [markdown]
# ## Stage metrics
# Headline numbers (Table 7's unseen LAVAN ASR, the wall time) to `results/metrics/ablation_tables.json`;
# the rest to `results/metadata/ablation_tables.json`.

# %%
write_metrics("ablation_tables", *ablation_tables.metrics(run, t7, t13, run.wall_time_s()))
