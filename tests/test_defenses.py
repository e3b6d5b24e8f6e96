"""BACT schedules, the TriQDef / PBAT / DWQ steps, and the saved-tensor memory meter."""

import copy
from types import SimpleNamespace

import pytest
import torch
from helpers import calibrated_resnet20
import torch.nn.functional as F

from triqdef import quant
from triqdef.bact import Schedule, copy_batchnorm, enable_bits
from triqdef.eval.bench import SavedTensorMeter
from triqdef.attacks.signed_gradient import pgd_linf
from triqdef.defenses.pbat import PBATStep
from triqdef.defenses.steps import DWQStep, TriQDefSettings, TriQDefStep
from triqdef.errors import TriqdefError
from triqdef.losses import FeatureDisalignmentPenalty, PenaltySettings
from triqdef.taps import tap_outputs

TAPS = ("layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1")


def _qmodel(bits=(32, 8, 4, 2), seed=0):
    m, x = calibrated_resnet20(bits, 16, seed)
    return m.double().train(), x.double()


def test_schedule_stages_and_validation():
    s = Schedule([{"bits": [32, 8], "share": 0.3}, {"bits": [32, 8, 5, 4], "share": 0.3}, {"bits": [32, 8, 5, 4, 2], "share": 0.4}], 100)
    assert [st.start for st in s.stages] == [0, 30, 60]
    assert s.active(0) == (32, 8) and s.active(29) == (32, 8) and s.active(30) == (32, 8, 5, 4) and s.active(99) == s.all_bits
    assert s.enabled_at(0) == (32, 8) and s.enabled_at(30) == (5, 4) and s.enabled_at(60) == (2,) and s.enabled_at(31) == ()
    with pytest.raises(TriqdefError, match="sum to"):
        Schedule([{"bits": [32, 8], "share": 0.5}], 10)
    with pytest.raises(TriqdefError, match="superset"):
        Schedule([{"bits": [32, 8], "share": 0.5}, {"bits": [32, 4], "share": 0.5}], 10)
    with pytest.raises(TriqdefError, match="bit-width 1"):
        Schedule([{"bits": [32, 1], "share": 1.0}], 10)


def test_enable_bits_copies_bn_of_lowest_active_then_calibrates():
    m, x = _qmodel((32, 8, 4))
    bn = next(mod for mod in m.modules() if isinstance(mod, quant.SwitchableBatchNorm2d))
    with torch.no_grad():
        bn.bns["8"].weight.fill_(3.0)
    q4 = quant.activation_quantizers(m, 4)[0]
    q4.observer.reset_min_max_vals()
    enable_bits(m, [4], [32, 8], [x])
    assert torch.all(bn.bns["4"].weight == 3.0)  # affine copied from the lowest active (8-bit) BN
    assert q4.calibrated
    copy_batchnorm(m, 32, 4)
    assert torch.equal(bn.bns["4"].weight, bn.bns["32"].weight)


def test_triqdef_fdp_gradient_equals_all_graphs_held():
    """The one-bit-at-a-time step gives the gradient of L_clean + L_adv + L_FDP computed with every graph held."""
    bits = (32, 8, 4)
    m, x = _qmodel(bits)
    y = torch.arange(16) % 10
    pool = torch.rand(3, 3, 6, 6, dtype=torch.float64)
    s = TriQDefSettings(lambda_gpdp=0.0, taps=TAPS, penalty=PenaltySettings())
    ref = copy.deepcopy(m)
    step = TriQDefStep(s, Schedule.constant(bits, 10), pool, [x], seed=0)
    rec = step(m, x, y, 3)
    got = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    n_clean = 8
    x_adv = step._patched(ref, x[n_clean:], y[n_clean:], 3, bits)
    with torch.no_grad():  # the statistics update of the patched half that the step makes in its first pass
        for b in bits:
            with quant.use_bitwidth(ref, b):
                ref(x_adv)
    feats, ce = {}, 0.0
    for b in bits:
        with quant.use_bitwidth(ref, b):
            with quant.frozen_statistics(ref), tap_outputs(ref, TAPS) as out:
                logits_adv = ref(x_adv)
            feats[b] = [out[t] for t in TAPS]
            logits_clean = ref(x[:n_clean])  # the clean half's own forward updates the statistics
        ce = ce + (F.cross_entropy(logits_clean, y[:n_clean]) + F.cross_entropy(logits_adv, y[n_clean:])) / len(bits)
    fdp = FeatureDisalignmentPenalty(s.penalty)(feats)
    (ce + 0.8 * fdp).backward()
    assert rec["fdp"] == pytest.approx(fdp.item(), rel=1e-9)
    for n, p in ref.named_parameters():
        if p.grad is not None:
            assert torch.allclose(got[n], p.grad, rtol=1e-6, atol=1e-10), n
    assert not any(mod._forward_hooks for mod in m.modules())  # no hooks left from training


def test_triqdef_step_logs_every_term_and_bact_calibrates_new_bits():
    m, x = _qmodel((32, 8, 4, 2))
    m = m.float()
    x = x.float()
    y = torch.arange(16) % 10
    q2 = quant.activation_quantizers(m, 2)[0]
    q2.observer.reset_min_max_vals()
    sched = Schedule([{"bits": [32, 8], "share": 0.5}, {"bits": [32, 8, 4, 2], "share": 0.5}], 4)
    step = TriQDefStep(TriQDefSettings(taps=TAPS, gpdp_sub_batch=4), sched, torch.rand(2, 3, 6, 6), [x], seed=0)
    rec = step(m, x, y, 0)
    assert rec["n_bits"] == 2 and not q2.calibrated
    rec = step(m, x, y, 2)
    assert rec["n_bits"] == 4 and q2.calibrated
    for k in ("loss_clean", "loss_adv", "fdp", "gpdp", "total"):
        assert torch.isfinite(torch.tensor(rec[k])), k
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bact_from_a_trained_multibit_checkpoint_leaves_bn_and_quantizers_alone(monkeypatch):
    import triqdef.defenses.steps as defenses_mod

    calls = []
    monkeypatch.setattr(defenses_mod, "enable_bits", lambda *a, **k: calls.append(a))
    m, x = _qmodel((32, 8, 4, 2))
    m, x = m.float(), x.float()
    bn = next(mod for mod in m.modules() if isinstance(mod, quant.SwitchableBatchNorm2d))
    with torch.no_grad():
        bn.bns["2"].weight.fill_(3.0)
    sched = Schedule([{"bits": [32, 8], "share": 0.5}, {"bits": [32, 8, 4, 2], "share": 0.5}], 4)
    step = TriQDefStep(TriQDefSettings(taps=TAPS, gpdp_sub_batch=4), sched, torch.rand(2, 3, 6, 6), [x], seed=0,
                       calibrate_new_bits=False)
    step(m, x, torch.arange(16) % 10, 2)
    assert not calls and torch.all(bn.bns["2"].weight == 3.0)
    step.calibrate_new_bits = True
    step(m, x, torch.arange(16) % 10, 2)
    assert len(calls) == 1 and calls[0][1] == (4, 2)


def test_bact_from_a_trained_checkpoint_recalibrates_each_enabled_bit_width_and_keeps_its_bn():
    """Issue 30, item 4: with copy_bn=False (a start checkpoint that trained every bit-width), BACT still calibrates
    each newly enabled bit-width on the held-out batches before it enters the loss: the statistics and observers are
    re-estimated, the BN's own affine parameters kept (not the lower bit-width's), and the held-out accuracy just
    before and after is recorded."""
    m, x = _qmodel((32, 8, 4, 2))
    m, x = m.float(), x.float()
    bn = next(mod for mod in m.modules() if isinstance(mod, quant.SwitchableBatchNorm2d))
    q2 = quant.activation_quantizers(m, 2)[0]
    with torch.no_grad():
        bn.bns["2"].weight.fill_(3.0)
        bn.bns["2"].running_mean.fill_(7.0)
        q2.observer.max_val.fill_(50.0)
    seen = []

    def measure(model, b):
        seen.append(b)
        return torch.tensor(0.25 * len(seen))

    sched = Schedule([{"bits": [32, 8], "share": 0.5}, {"bits": [32, 8, 4, 2], "share": 0.5}], 4)
    step = TriQDefStep(TriQDefSettings(taps=TAPS, gpdp_sub_batch=4), sched, torch.rand(2, 3, 6, 6), [x], seed=0,
                       copy_bn=False, measure=measure)
    step(m, x, torch.arange(16) % 10, 2)
    assert torch.all(bn.bns["2"].weight == 3.0)                        # its own affine, not 4-bit's
    assert not torch.all(bn.bns["2"].running_mean == 7.0)              # statistics re-estimated
    assert float(q2.observer.max_val) < 50.0                           # observer re-estimated
    assert seen == [4, 2, 4, 2]                                        # before both, after both
    assert [(c["step"], c["bits"], float(c["before"]), float(c["after"])) for c in step.calibrations] == [
        (2, 4, 0.25, 0.75), (2, 2, 0.5, 1.0)]


def test_triqdef_settings_validation():
    with pytest.raises(TriqdefError, match="rho"):
        TriQDefSettings(rho=1.5, taps=TAPS)
    with pytest.raises(TriqdefError, match="lambda_fdp"):
        TriQDefSettings(lambda_fdp=-1, taps=TAPS)
    with pytest.raises(TriqdefError, match="patch_source"):
        TriQDefSettings(patch_source="nope", taps=TAPS)
    with pytest.raises(TriqdefError, match="triqdef.taps is empty"):
        TriQDefSettings()
    with pytest.raises(TriqdefError, match="pool"):
        TriQDefStep(TriQDefSettings(taps=TAPS), Schedule.constant((32, 8), 2), None, [], 0)


def test_pbat_and_dwq_steps_and_pgd_budget():
    m, x = _qmodel((32, 8))
    m, x = m.float(), x.float()
    y = torch.arange(16) % 10
    rec = PBATStep((32, 8), seed=0, attack_steps=2)(m, x, y, 0)
    assert set(rec) >= {"loss_clean", "loss_adv"} and all(torch.isfinite(torch.tensor(v)) for v in rec.values())
    rec = DWQStep((32, 8), seed=0, attack_steps=2)(m, x, y, 0)
    assert rec["bits"] in (32, 8)
    adv = pgd_linf(m, x, y, 8, 8 / 255, 2 / 255, 3, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with quant.use_bitwidth(m, 8):
        m.eval()
        assert F.cross_entropy(m(adv), y) > F.cross_entropy(m(x), y)


def test_saved_tensor_meter_counts_and_releases():
    meter = SavedTensorMeter()
    w = torch.randn(256, 256, requires_grad=True)
    with meter.hooks():
        x = torch.randn(64, 256)
        loss = (x @ w).relu().sum()  # saves x (64x256 floats) and the relu output (64x256)
    assert meter.peak >= 2 * 64 * 256 * 4
    loss.backward()
    del loss
    assert meter.current == 0


def test_random_bitwidth_per_image_picks_each_images_draw_and_whitebox_patch():
    from triqdef.eval.robustness import RandomBitWidth, defense_records, whitebox_patches

    m, x = _qmodel((32, 8, 2))
    m, x = m.float().eval(), x.float()
    rb = RandomBitWidth(m, [32, 8, 2], seed=3)
    out = rb(x)
    draw = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(3))
    for i, b in enumerate([32, 8, 2]):
        with quant.use_bitwidth(m, b):
            ref = m(x)
        assert torch.allclose(out[draw == i], ref[draw == i])
    assert torch.equal(rb(x), out)  # the same draw on every call: clean and patched see the same bit-widths
    y = torch.arange(16) % 10
    cfg = SimpleNamespace(size=6, step_size=0.05, images_per_patch=8, border=4, method="sign", restarts=1,
                          max_batch=64, steps=5, loss={"lavan": "logprob"})  # the fields of config.PatchParams it reads
    patches = whitebox_patches(m, [8, 2], x, y, 1, cfg, steps=2, seed=0, source_model="resnet20")
    assert patches[0].info["set"] == "whitebox" and patches[0].content.shape == (3, 6, 6)
    rec = defense_records({"m": m}, {"whitebox": patches}, [8, 2], x, y, random_precision=["m"], rp_bits=[8, 2])
    assert set(rec["view"]) == {"8-bit", "2-bit", "random"} and (rec["n_images"] == 16).all()


def test_deployed_models_have_the_same_structure_and_outputs():
    from triqdef.eval.deploy import extract_bitwidth, same_structure, structure

    a, x = _qmodel((32, 8, 4))
    b, _ = _qmodel((32, 8, 4), seed=1)
    a, b, x = a.float().eval(), b.float().eval(), x.float()
    with tap_outputs(a, TAPS):  # hooks during training do not reach the deployed model
        da = extract_bitwidth(a, 4, "resnet20")
    db = extract_bitwidth(b, 4, "resnet20")
    assert same_structure(da, db) and structure(da)["hooks"] == 0
    with quant.use_bitwidth(a, 4):
        assert torch.allclose(da(x), a(x), atol=1e-5)
    assert not any(".8." in k for k in da.state_dict())


def test_grad_cam_shapes_and_range():
    from triqdef.eval.gradcam import grad_cam

    m, x = _qmodel((32, 4))
    m, x = m.float(), x.float()
    cam = grad_cam(m, x[:3], torch.tensor([0, 1, 2]), 4)
    assert cam.shape == (3, 32, 32) and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert not any(mod._forward_hooks for mod in m.modules())


def _with_outcomes(row: dict, n: int) -> dict:
    """A synthetic record with the per-image outcomes behind its rate: ``asr`` % of ``n`` eligible images hit."""
    import numpy as np

    hits = np.arange(n) < round(row["asr"] * n / 100)
    return dict(row, hits_asr=hits, hits_fooling=hits, eligible=np.ones(n, bool), eligible_common=np.ones(n, bool))


def test_asr_table_groups_unseen_sets_and_keeps_counts():
    import pandas as pd

    from triqdef.eval.robustness import asr_table

    rows = []
    for model in ("A", "B"):
        for i, (s, a) in enumerate([("seen", "lavan"), ("unseen_bits4", "lavan"), ("unseen_size8", "gap"), ("whitebox", "lavan")]):
            for v, asr in (("32-bit", 10.0), ("4-bit", 20.0)):
                rows.append(_with_outcomes({"model": model, "patch_set": s, "attack": a, "view": v, "asr": asr + i,
                                            "n_asr": 100, "patch": i}, 100))
    t = asr_table(pd.DataFrame(rows))
    assert list(t["group"].unique()) == ["seen", "unseen", "whitebox"]
    row = t[(t.model == "A") & (t.group == "unseen")].iloc[0]
    assert row["lavan 4-bit"] == 21.0 and row["gap 32-bit"] == 12.0 and row["patches"] == 2 and row["n images"] == 100
    # one patch of 12 % on 100 images: the interval is the images' alone, around 12
    assert 5 < row["gap 32-bit low"] < 12 < row["gap 32-bit high"] < 20


def test_asr_table_counts_patches_of_every_set_in_a_group():
    """Patch indices restart in every set: the unseen group of two sets of two patches has four patches."""
    import pandas as pd

    from triqdef.eval.robustness import asr_table

    rows = [_with_outcomes({"model": "A", "patch_set": s, "attack": "lavan", "view": "4-bit", "asr": 5.0, "n_asr": 10,
                            "patch": i}, 20) for s in ("unseen_bits4", "unseen_size8") for i in (0, 1)]
    t = asr_table(pd.DataFrame(rows))
    assert t["patches"].tolist() == [4]
    assert asr_table(pd.DataFrame(rows), by="patch_set")["patches"].tolist() == [2, 2]


def test_float_model_of_the_32_bit_path():
    from triqdef.eval.deploy import to_float_model

    m, x = _qmodel((32, 8))
    m, x = m.float().eval(), x.float()
    fp = to_float_model(m, "resnet20")
    with quant.use_bitwidth(m, 32):
        assert torch.allclose(fp(x), m(x), atol=1e-5)


def test_training_patches_mix_the_pool_sizes():
    """The defenses train on both attack regimes: TriQDef's pool patches and PBAT's own patches come in each size
    of the pool (one size per step and bit-width), and a single-size pool draws nothing for the size."""
    sched = Schedule.constant((32, 8), 10)
    pool = {6: torch.rand(3, 3, 6, 6), 12: torch.rand(2, 3, 12, 12)}
    step = TriQDefStep(TriQDefSettings(taps=TAPS, gpdp_sub_batch=4), sched, pool, [], seed=0)
    x = torch.zeros(8, 3, 32, 32)
    sizes = set()
    for k in range(12):
        patched = step._patched(None, x, None, k, (32, 8))
        rows = (patched[0].abs().sum(0) > 0).any(1).sum().item()  # the height of the pasted square
        sizes.add(rows)
    assert sizes == {6, 12}
    pbat = PBATStep((32, 8), seed=0, size=(12, 6), attack_steps=1)
    assert pbat.sizes == [6, 12]
    drawn = {pbat._start(2, torch.Generator().manual_seed(k), torch.zeros(2, 3, 32, 32))[0].shape[-1]
             for k in range(8)}
    assert drawn == {6, 12}


@pytest.mark.parametrize("scaled,every,expected", [(True, 4, 2.0), (False, 4, 0.5), (True, 1, 0.5)])
def test_gpdp_weight_is_scaled_by_its_interval(scaled, every, expected):
    """GPDP every n-th step weighs lambda_GPDP x n on those steps when gpdp_scaled (the paper's weight per step on
    average), lambda_GPDP otherwise."""
    s = TriQDefSettings(lambda_gpdp=0.5, gpdp_every=every, gpdp_scaled=scaled, taps=TAPS)
    step = TriQDefStep(s, Schedule.constant([32, 4], 10), torch.rand(2, 3, 6, 6), [torch.rand(2, 3, 32, 32)], seed=0)
    assert step.gpdp_weight == expected


def test_the_seed_stage_reads_the_defense_stage_params_and_seeds():
    from triqdef.stages import defense, defense_seed

    assert defense_seed.PARAMS == defense.PARAMS + ("seeds",)
    assert defense.run_name("pbat", training_seed=2) == "pbat-seed2"
    assert defense.checkpoint("pbat", training_seed=2).parts[-4:] == ("replicas", "models", "seeds", "pbat-seed2.pt")
    assert defense.checkpoint("pbat").parts[-3:] == ("models", "defenses", "pbat.pt")   # the core stays where it was
    from triqdef.stages import replica_eval, seed_eval

    assert seed_eval.PARAMS == replica_eval.EVAL_PARAMS + ("seeds",)


def test_pbat_inner_attack_success_is_the_mean_of_the_last_quarter_of_the_logged_steps():
    from triqdef.stages.defense import inner_attack_success

    history = [{"step": k, "fool_init_8": 0.1, "fool_8": k / 10, "loss": 1.0} for k in range(8)] + [{"step": 8}]
    out = inner_attack_success(history, [32, 8])
    assert out == {"8": {"fool_init": 10.0, "fool": 65.0, "logged_steps": 2}}   # steps 6 and 7
    assert inner_attack_success([{"step": 0, "loss": 1.0}], [32, 8]) == {}


def test_the_training_length_runs_scale_the_core_steps_and_keep_their_own_files():
    from triqdef.config import load_config
    from triqdef.stages import defense, defense_length

    assert defense_length.PARAMS == defense.PARAMS + ("training_length",)
    cfg = load_config(None, "cpu")
    assert defense.scaled_training(cfg.defenses, 0.25).steps == 100 and defense.scaled_training(cfg.defenses, 4).steps == 1600
    assert defense.scaled_training(cfg.defenses, None) is cfg.defenses
    paper = load_config(None, "paper").defenses
    assert defense.scaled_training(paper, 4).epochs == 4 * paper.epochs
    assert defense.run_name("pbat", length_factor=0.25) == "pbat-x0.25" and defense.run_name("pbat", length_factor=4.0) == "pbat-x4"
    assert defense.checkpoint("triqdef", length_factor=4.0).parts[-4:] == ("replicas", "models", "length", "triqdef-x4.pt")
    from triqdef.stages import length_eval, replica_eval

    assert length_eval.PARAMS == replica_eval.EVAL_PARAMS + ("training_length",)
