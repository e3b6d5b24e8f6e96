"""Cross-bit transfer inside one model (issue 30, item 1; triqdef.eval.cross_bit): the store rows of a real (tiny)
model, the matrix, the paired ratio comparison against known truth, and bad bit-width lists."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.eval import cross_bit
from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE
from triqdef.eval.outcome_store import validate
from triqdef.models import CifarResNet

BITS = [32, 8, 2]


def _model():
    torch.manual_seed(0)
    model = quant.quantize_model(CifarResNet(8), BITS, range_estimator={8: "max", 2: "mse"})
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for b in BITS[1:]:
        quant.calibrate(model, [x], b)
    return model.eval()


@pytest.mark.parametrize("bits,needle", [
    ([], "cross_bit.source_bits is empty"),
    ([8, 8], "expected distinct bit-widths"),
    ([8, 4], "bit-width 4 is not one of the model's [32, 8, 2]"),
])
def test_bad_source_bit_widths_are_refused_in_one_line(bits, needle):
    with pytest.raises(TriqdefError) as err:
        cross_bit.check_bits(_model(), bits, "cross_bit.source_bits")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_patches_made_at_each_bit_width_fill_a_store_whose_diagonal_is_the_white_box_attack():
    model = _model()
    g = torch.Generator().manual_seed(2)
    images, labels = (torch.rand(24, 3, 32, 32, generator=g) * 255).to(torch.uint8), torch.arange(24) % 10
    cfg = SimpleNamespace(size=6, step_size=0.05, images_per_patch=8, border=4, method="sign", restarts=1,
                          max_batch=64, steps=2, loss={"lavan": "logprob"})  # the PatchParams fields it reads
    made = cross_bit.source_patches(model, [32, 2], images, labels, 2, cfg, steps=2, seed=0, model_name="tiny")
    assert [p.target for p in made[32]] == [p.target for p in made[2]]     # paired by target across bit-widths
    assert made[2][0].info["set"] == "cross_bit@2"
    rows = cross_bit.outcome_rows(model, "tiny", 0, made, images, labels, BITS)
    validate(rows)
    assert len(rows) == 2 * 2 * 3 * 24 and set(rows["bits"]) == set(BITS)
    # the diagonal cell (made at 2 bits, evaluated at 2 bits) holds exactly that view's patched predictions
    from triqdef.attacks.patches import patched_predictions

    cell = rows[(rows["set"] == "cross_bit@2") & (rows["bits"] == 2) & (rows["patch_id"] == 1)]
    assert np.array_equal(cell["patched_pred"].to_numpy(), patched_predictions(model, images, made[2][1], 2).numpy())
    matrix = cross_bit.transfer_matrix(rows, "tiny", n_boot=200)
    assert len(matrix) == 2 * 3 and set(matrix["source_bits"]) == {32, 2}
    with pytest.raises(TriqdefError, match="bit-width 4 is not one of"):
        cross_bit.outcome_rows(model, "tiny", 0, made, images, labels, [8, 4])


def _synthetic(model: str, off_rate: float, diag_rate: float, rng, n_images: int = 400) -> pd.DataFrame:
    """A store of one model, patches made at 8 bits (one per class, each its own strength), evaluated at 8 and 2
    bits: at 8 a patch hits with its strength x ``diag_rate``, at 2 with its strength x ``off_rate``."""
    frames = []
    labels = np.arange(n_images) % 10
    strength = np.linspace(0.5, 1.5, 10)
    for bits, rate in ((8, diag_rate), (2, off_rate)):
        for target in range(10):
            hit = rng.random(n_images) < min(1.0, strength[target] * rate)
            frames.append(pd.DataFrame({
                "model": model, "seed": 0, "bits": bits, "attack": "lavan", "set": "cross_bit@8", "patch_id": target,
                "target": target, "loc_y": 4, "loc_x": 4, "image_id": np.arange(n_images), "label": labels,
                "clean_pred": labels, "patched_pred": np.where(hit, target, labels)}))
    return pd.concat(frames, ignore_index=True)


def test_the_paired_ratio_comparison_finds_a_known_difference_and_no_difference():
    rng = np.random.default_rng(0)
    frame = pd.concat([_synthetic("cut", 0.1, 0.6, rng), _synthetic("keeps", 0.45, 0.6, rng),
                       _synthetic("keeps_too", 0.45, 0.6, rng)], ignore_index=True)
    ci, details = cross_bit.ratio_difference(frame, "cut", "keeps", 8, 2, n_boot=400)
    assert details["ratio_a"] == pytest.approx(0.1 / 0.6, abs=0.05) and details["ratio_b"] == pytest.approx(0.75, abs=0.08)
    assert ci.high < 0 and ci.method == "t" and details["n_common"] == 400
    assert cross_bit.cuts_transfer(frame, "cut", "keeps", [(8, 2)], n_boot=400)[0] == HOLDS
    assert cross_bit.cuts_transfer(frame, "keeps", "cut", [(8, 2)], n_boot=400)[0] == FAILS
    assert cross_bit.cuts_transfer(frame, "keeps", "keeps_too", [(8, 2)], n_boot=400)[0] == INCONCLUSIVE
    with pytest.raises(TriqdefError, match="off-diagonal"):
        cross_bit.ratio_difference(frame, "cut", "keeps", 8, 8)


def test_the_report_decides_cross_bit_transfer_from_the_outcome_store_alone(tmp_path):
    """REPORT's cross-bit row reads results/outcomes/cross_bit.parquet only (no table): TriQDef whose patches keep
    far less of their white-box success than standard QAT's and PBAT's holds; one that keeps as much is
    inconclusive; one that keeps more does not hold (Holm over both baselines)."""
    from triqdef.eval import outcome_store
    from triqdef.reporting import report

    def verdict(triqdef_off):
        rng = np.random.default_rng(1)
        frame = pd.concat([_synthetic("TriQDef", triqdef_off, 0.6, rng), _synthetic("Standard QAT", 0.45, 0.6, rng),
                           _synthetic("PBAT", 0.45, 0.6, rng)], ignore_index=True)
        outcome_store.write(frame, tmp_path / "outcomes" / "cross_bit.parquet")
        assert not (tmp_path / "tables").exists()
        ours, v = report._cross_bit(tmp_path)
        assert "Standard QAT" in ours and "PBAT" in ours and "10 patches" in ours
        return v

    assert verdict(0.1) == HOLDS
    assert verdict(0.45) == INCONCLUSIVE
    assert verdict(0.6) == FAILS


def test_a_pair_without_common_images_is_left_undecided():
    """Tiny models whose 2-bit view gets nothing right share no eligible image: that pair is not decided (no
    interval), and the claim cannot hold, instead of the whole comparison failing."""
    rng = np.random.default_rng(2)
    frame = pd.concat([_synthetic("a", 0.1, 0.6, rng), _synthetic("b", 0.45, 0.6, rng)], ignore_index=True)
    wrong = (frame["model"] == "b") & (frame["bits"] == 2)
    frame.loc[wrong, "clean_pred"] = (frame.loc[wrong, "label"] + 1) % 10
    verdict, rows = cross_bit.cuts_transfer(frame, "a", "b", [(8, 2)], n_boot=200)
    assert verdict == INCONCLUSIVE and rows["n_common_images"].tolist() == [0] and rows["difference"].isna().all()
