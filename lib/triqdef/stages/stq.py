"""Stage ``stq`` (notebook ``05_stq``): STQ (Zakariyya et al. 2025) against six ART attacks, beside our
switchable-precision ResNet-20 (docs/design.md#stq).

Reads the tiny networks of stage ``stq_train`` and the standard multi-bit QAT ResNet-20 of ``train_qat``, and
builds

* the STQ table: per model (FP, STQ, STQ-T1, STQ-T50, STQ-JR, and ResNet-20 at each of ``stq.resnet_bits``) its
  memory footprint, clean accuracy and robust accuracy under FGSM, PGD, C&W (white-box) and Square, Boundary,
  ZOO (black-box) from :mod:`triqdef.eval.art_suite`, each with its 95 % interval and its budget;
* the claims: STQ's clean accuracy above FP's (the summary: 80.57 against 75.20 %), STQ-T50 more robust than
  STQ-T1 under the white-box attacks, each from a paired interval over the same test images;
* the Jacobian table: the squared Frobenius norm of each tiny network's input–logit Jacobian on the first
  ``stq.jacobian_images`` test images (exact, through the straight-through estimator of the quantized models),
  for the summary's claim that ternary QAT regularises it implicitly.

Every rate is at the profile's scale: the captions give the images and the attacks' budgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from triqdef.reporting import schemas as S
from triqdef.stages.common import NotebookInputs

PARAMS = ("base", "data", "model", "quant", "stq")

#: Row labels of the tiny networks (stage ``stq_train``'s runs), in table order.
STQ_LABELS = {"fp": "FP (tiny)", "stq": "STQ", "stq_t1": "STQ-T1", "stq_t50": "STQ-T50", "stq_jr": "STQ-JR"}
#: The summary's figures: clean accuracy of STQ and of its FP model (%), memory footprint (KB).
PAPER = {"stq_clean": 80.57, "fp_clean": 75.20, "stq_kb": 410, "fp_kb": 4496}
WHITE_BOX = ("fgsm", "pgd", "cw")


@dataclass(kw_only=True)
class Inputs(NotebookInputs):
    """The tiny networks by row label, our ResNet-20 and their metadata."""

    tiny: dict[str, nn.Module]
    resnet: nn.Module
    metas: dict[str, dict]

    def describe(self) -> str:
        s = self.cfg.stq
        return (f"profile {self.profile}; data {self.splits.source['source']}; models {list(self.tiny)} and "
                f"{self.model_name} at {list(s.resnet_bits)} bits; attack images {dict(s.attack_images)}")


def load(cfg) -> Inputs:
    from triqdef.meta import provenance
    from triqdef.stages import common
    from triqdef.stages.stq_train import checkpoint
    from triqdef.stages.devices import to_device
    from triqdef.stq.model import stq_from_checkpoint
    from triqdef.training.loop import model_from_checkpoint, resolve_device

    device = resolve_device(cfg.base.device)
    splits = common.load_data(cfg)
    tiny, metas = {}, {}
    for run, label in STQ_LABELS.items():
        tiny[label], metas[label] = stq_from_checkpoint(checkpoint(run))
    resnet, metas[cfg.model.name] = model_from_checkpoint(common.qat_checkpoint(cfg), kind="qat", model_name=cfg.model.name)
    to_device([*tiny.values(), resnet], device)
    n = max(cfg.stq.attack_images.values())
    meta = provenance(cfg, {"data": common.data_record(splits), "device": str(device), "checkpoints": {k: m.get("commit") for k, m in metas.items()}})
    return Inputs(cfg=cfg, splits=splits, patches=[], test_x=splits.test.images[:n], test_y=splits.test.labels[:n],
                  meta=meta, tiny=tiny, resnet=resnet.eval(), metas=metas)


def views(inp: Inputs) -> dict[str, tuple[nn.Module, int | None]]:
    """Row label -> (model, bits): the tiny networks, then ResNet-20 at each of ``stq.resnet_bits``."""
    out = {label: (model, None) for label, model in inp.tiny.items()}
    out.update({f"{inp.model_name} standard QAT {b}-bit": (inp.resnet, b) for b in inp.cfg.stq.resnet_bits})
    return out


def attack_results(inp: Inputs) -> dict[tuple[str, str], object]:
    """(row, attack) -> :class:`triqdef.eval.art_suite.AttackResult` on the first ``stq.attack_images[attack]`` test
    images, every attack at its ``stq.attacks`` settings; the same images and seed for every row."""
    from triqdef.eval.art_suite import ATTACKS, robust_accuracy

    s, seed = inp.cfg.stq, inp.cfg.base.seed
    out = {}
    for label, (model, bits) in views(inp).items():
        for attack in ATTACKS:
            n = s.attack_images[attack]
            out[(label, attack)] = robust_accuracy(model, inp.test_x[:n], inp.test_y[:n], attack,
                                                   dict(s.attacks.get(attack, {})), bits=bits, seed=seed)
    return out


def store_path():
    """``results/outcomes/stq.parquet``: every view's clean prediction on every test image and its prediction under
    each ART attack, as an outcome store (issue 29, item 1; docs/design.md#outcome-stores)."""
    from triqdef import paths

    return paths.results_dir() / "outcomes" / "stq.parquet"


def store_frame(inp: Inputs, results: dict, clean_pred: dict[str, torch.Tensor]) -> pd.DataFrame:
    """The outcome-store rows (:mod:`triqdef.eval.outcome_store`) of the STQ table: per view (model ``label`` at its
    bit-width, 32 for the tiny networks) one clean row per test image (attack ``none``, set ``clean``) and one row
    per attacked image and ART attack (set ``whitebox`` or ``blackbox``), its clean prediction and its prediction on
    the ε-projected adversarial image as the patched one; no patch (id 0, target and location −1)."""
    from triqdef.eval.art_suite import ATTACKS

    seed, frames = inp.cfg.base.seed, []

    def rows(label, bits, attack, set_name, clean, attacked, labels):
        return pd.DataFrame({"model": label, "seed": seed, "bits": bits, "attack": attack, "set": set_name,
                             "patch_id": 0, "target": -1, "loc_y": -1, "loc_x": -1,
                             "image_id": np.arange(len(labels)), "label": labels, "clean_pred": clean,
                             "patched_pred": attacked})

    labels = inp.splits.test.labels.numpy().astype(np.int64)
    for label, (_, bits) in views(inp).items():
        b = 32 if bits is None else int(bits)
        pred = clean_pred[label].numpy().astype(np.int64)
        frames.append(rows(label, b, "none", "clean", pred, pred, labels))
        for attack in ATTACKS:
            r = results[(label, attack)]
            frames.append(rows(label, b, attack, "whitebox" if attack in WHITE_BOX else "blackbox",
                               r.clean_pred.numpy(), r.adv_pred.numpy(), labels[: r.n_images]))
    return pd.concat(frames, ignore_index=True)


def _correct(store: pd.DataFrame, model: str, attack: str) -> pd.Series:
    """Per image (indexed by id): correct clean, or for an attack correct clean *and* under it (robust accuracy, as
    :class:`triqdef.eval.art_suite.AttackResult` counts it)."""
    from triqdef.errors import TriqdefError

    rows = store[(store["model"] == model) & (store["attack"] == attack)]
    if rows.empty:
        raise TriqdefError(f"STQ outcome store has no rows for {model} under {attack}: expected the stq stage's store")
    ok = (rows["clean_pred"] == rows["label"]) & (rows["patched_pred"] == rows["label"])
    return ok.set_axis(rows["image_id"].to_numpy())


def rates(store: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per view (rows, in store order): clean, and robust under each attack the store holds."""
    attacks = list(dict.fromkeys(store["attack"]))
    models = list(dict.fromkeys(store["model"]))
    return pd.DataFrame({("clean" if a == "none" else a): [100 * _correct(store, m, a).mean() for m in models]
                         for a in attacks}, index=pd.Index(models, name=S.MODEL))


def stq_claims(store: pd.DataFrame, seed: int = 0) -> list[dict]:
    """The STQ claims from the outcome store alone (``triqdef report`` calls it again): clean accuracy STQ − FP on
    every test image, and robust accuracy STQ-T50 − STQ-T1 under each white-box attack on its attacked images,
    each a paired bootstrap over the same images (:func:`triqdef.eval.accuracy_claims.paired_accuracy_claim`),
    with the one-sided p-values REPORT's familywise (Holm) verdict over the three attacks needs."""
    from triqdef.eval.accuracy_claims import paired_accuracy_claim
    from triqdef.eval.transfer import N_BOOT

    def claim(a: str, b: str, attack: str, statement: str) -> dict:
        return paired_accuracy_claim(_correct(store, a, attack), _correct(store, b, attack), statement, "higher",
                                     0.0, N_BOOT, seed)

    out = [claim("STQ", "FP (tiny)", "none", "clean accuracy, STQ − FP (points)")]
    for attack in WHITE_BOX:
        out.append(claim("STQ-T50", "STQ-T1", attack, f"{attack.upper()} robust accuracy, STQ-T50 − STQ-T1 (points)"))
    return out


def stq_table(inp: Inputs, results: dict) -> pd.DataFrame:
    """The STQ table (module docstring) with its claims in the metadata; writes the outcome store the claims (here
    and in ``triqdef report``) are computed from."""
    from triqdef.eval import outcome_store
    from triqdef.eval.accuracy import predict
    from triqdef.eval.art_suite import ATTACKS
    from triqdef.eval.intervals import Outcomes, bootstrap_rate
    from triqdef.eval.transfer import N_BOOT
    from triqdef.reporting.tables import save_table
    from triqdef.stq.model import memory_footprint_kb

    seed, test = inp.cfg.base.seed, inp.splits.test
    rows, clean_pred, memory = [], {}, {}
    for label, (model, bits) in views(inp).items():
        clean_pred[label] = predict(model, test.images, bits)
        acc = bootstrap_rate(Outcomes.accuracy((clean_pred[label] == test.labels).numpy()), N_BOOT, seed)
        kb = memory_footprint_kb(model) if label in STQ_LABELS.values() else _resnet_kb(model, bits)
        memory[label] = round(kb, 1)
        row = {S.MODEL: label, "memory KB": memory[label], "clean": 100 * acc.value, "clean low": 100 * acc.low,
               "clean high": 100 * acc.high}
        for attack in ATTACKS:
            r = results[(label, attack)]
            row.update({attack: 100 * r.robust.value, f"{attack} low": 100 * r.robust.low,
                        f"{attack} high": 100 * r.robust.high})
        rows.append(row)
    table = pd.DataFrame(rows)
    store = store_frame(inp, results, clean_pred)
    outcome_store.write(store, store_path(), info={"memory_kb": memory, "what": "STQ table: clean and ART attacks"})
    claims = stq_claims(store, seed)
    budgets = "; ".join(f"{a} {results[(rows[0][S.MODEL], a)].budget} {results[(rows[0][S.MODEL], a)].budget_unit} on "
                        f"{inp.cfg.stq.attack_images[a]} images" for a in ATTACKS)
    from triqdef.reporting.tables import caption_with_claims

    caption = (f"STQ (docs/design.md#stq) and our standard-QAT {inp.model_name}: memory footprint (KB: stored bits per "
               f"weight; ResNet-20 at b bits counts b-bit weights), clean accuracy on {test.labels.numel()} test images "
               f"and robust accuracy (%: correct clean and under attack) under six ART attacks, ℓ∞ ε = 8/255 (C&W, "
               f"Boundary and ZOO projected onto that ball), untargeted, profile `{inp.profile}`, 95% bootstrap "
               f"intervals. Budgets per image: {budgets}. The black-box budgets are far below the summary's: read "
               f"them as an upper bound on robustness. Paper (summary): STQ {PAPER['stq_clean']} % clean, "
               f"{PAPER['stq_kb']} KB; FP {PAPER['fp_clean']} %, {PAPER['fp_kb']} KB.")
    meta = dict(inp.meta, claims=claims, results={f"{k[0]} | {k[1]}": v.as_record() for k, v in results.items()})
    save_table(table, "stq_attacks", meta, caption=caption_with_claims(caption, claims))
    return table


def _resnet_kb(model: nn.Module, bits: int | None) -> float:
    """Weights at ``bits`` (first and last layers at 8 when the model keeps them there), BN and biases at 32 bits."""
    total = 0
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    edges = {layers[0], layers[-1]} if layers else set()
    for name, module in model.named_modules():
        if name in layers:
            b = 32 if bits in (None, 32) else (max(bits, 8) if name in edges else bits)
            total += module.weight.numel() * b + (module.bias.numel() * 32 if module.bias is not None else 0)
        elif isinstance(module, nn.BatchNorm2d):
            total += 4 * module.num_features * 32
    return total / 8 / 1024


JACOBIAN = "jacobian_fro_sq"


def jacobian_store_path():
    """``results/outcomes/stq_jacobian.parquet``: each tiny network's ‖J‖_F² per test image (a measurement store)."""
    from triqdef import paths

    return paths.results_dir() / "outcomes" / "stq_jacobian.parquet"


def jacobian_summary(store: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """From the measurement store alone (``triqdef report`` calls it again): per tiny network the mean ‖J‖_F² with
    its 95 % bootstrap interval over images, and the claim that STQ's is below FP's (paired over images)."""
    from triqdef.eval import measure_store as M
    from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE

    rows = []
    for label in dict.fromkeys(store["model"]):
        v = M.values(store, JACOBIAN, label)
        mean, low, high = M.mean_interval(v, 2000, seed)
        rows.append({S.MODEL: label, "jacobian_fro_sq": mean, "low": low, "high": high, "n images": len(v)})
    d, lo, hi, n = M.paired_mean_difference(M.values(store, JACOBIAN, "STQ"), M.values(store, JACOBIAN, "FP (tiny)"),
                                            2000, seed)
    claim = {"statement": "mean ‖J‖_F², STQ − FP (paired over images)", "value": d, "low": lo, "high": hi,
             "claim": "lower than 0", "n_images": n, "n_patches": 1, "n_boot": 2000,
             "verdict": HOLDS if hi < 0 else FAILS if lo > 0 else INCONCLUSIVE}
    return pd.DataFrame(rows), claim


def jacobian_table(inp: Inputs) -> pd.DataFrame:
    """Squared Frobenius norm of each tiny network's input–logit Jacobian (mean over the first
    ``stq.jacobian_images`` test images, with a 95 % bootstrap interval over images), and the claim that STQ's is
    below FP's (the summary: ternary QAT regularises it implicitly); the per-image values go to a measurement store
    (:mod:`triqdef.eval.measure_store`) the table and the claim are computed from."""
    from triqdef.eval import measure_store
    from triqdef.reporting.tables import caption_with_claims, save_table
    from triqdef.stages.devices import device_of
    from triqdef.stq.jacobian import exact_jacobian_frobenius_sq

    n, seed = inp.cfg.stq.jacobian_images, inp.cfg.base.seed
    x = inp.splits.test.images[:n].float() / 255
    frames = []
    for label, model in inp.tiny.items():
        model.eval()
        xm = x.to(device_of(model))
        v = torch.stack([exact_jacobian_frobenius_sq(model, xm[i:i + 1]).reshape(()) for i in range(len(xm))]).cpu().numpy()
        frames.append(pd.DataFrame({"measure": JACOBIAN, "model": label, "view": "", "item": np.arange(len(v)),
                                    "value": v.astype(np.float64)}))
    store = pd.concat(frames, ignore_index=True)
    measure_store.write(store, jacobian_store_path(), info={"what": "input-logit Jacobian, squared Frobenius norm "
                                                                   "per test image (through the STE)", "seed": seed})
    table, claim = jacobian_summary(store, seed)
    save_table(table, "stq_jacobian", dict(inp.meta, claims=[claim]), floatfmt=".4g",
               caption=caption_with_claims(
                   f"Squared Frobenius norm of the input–logit Jacobian, mean over the first {len(x)} test images "
                   "(95% bootstrap interval over images). For the quantized networks the Jacobian is taken through "
                   "the straight-through estimator their training uses (the exact derivative of a quantized "
                   "network is zero almost everywhere), so it measures the gradients an attacker gets.", [claim]))
    return table


def metrics(inp: Inputs, table: pd.DataFrame) -> tuple[dict, dict]:
    """Headline numbers (each tiny network's clean and PGD robust accuracy, the wall time) and details."""
    t = table.set_index(S.MODEL)
    head = {}
    for run, label in STQ_LABELS.items():
        head[f"clean_{run}"] = float(t.loc[label, "clean"])
        head[f"pgd_{run}"] = float(t.loc[label, "pgd"])
    head["stage_wall_time_s"] = round(inp.wall_time_s(), 1)
    return head, {"profile": inp.profile, "table": table.to_dict(orient="records"), "provenance": inp.meta}
