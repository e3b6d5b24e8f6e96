import pytest
import torch

from triqdef import quant
from triqdef.config import load_config
from triqdef.eval.alignment import compare, feature_maps, input_gradients, raw_gradient_cosine
from triqdef.attacks.patches import Patch
from triqdef.models import build_model
from triqdef.eval.transfer import pivot_rates, transfer_records


from helpers import LabelNet as ConstantNet


def test_transfer_records_and_pivot():
    labels = torch.tensor([0, 2, 3, 4, 1, 5])
    images = torch.zeros(6, 3, 12, 12)
    images[:, 1, 10, 10] = labels.float() / 9
    patch = Patch(torch.ones(3, 2, 2), (0, 0), target=1, attack="lavan", source_model="toy", source_bits=None, info={"set": "seen"})
    far = patch.moved((4, 4))
    recs = transfer_records([patch, far], {"m": (ConstantNet(), None)}, images, labels)
    assert list(recs["asr"]) == [100.0, 0.0] and list(recs["n_asr"]) == [5, 5]
    table = pivot_rates(recs)
    assert table.loc[0, "m"] == 50.0 and table.loc[0, "n m"] == 5 and table.loc[0, "patches"] == 2
    # two patches at 100 % and 0 %: resampling the patches spans everything between
    assert table.loc[0, "m low"] == 0.0 and table.loc[0, "m high"] == 100.0
    assert recs["hits_asr"][0].tolist() == [True] * 6 and recs["eligible"][0].tolist() == [True, True, True, True, False, True]

    # no image in the common subset (tiny models): the table keeps its rows and columns, empty
    none = [torch.zeros(6, dtype=torch.bool).numpy()] * 2
    empty = pivot_rates(recs.assign(asr_common=float("nan"), n_common=0, eligible_common=none), "asr_common",
                        column_order=["m", "other"])
    assert list(empty.columns) == ["attack", "m", "m low", "m high", "other", "other low", "other high", "n m",
                                   "n other", "patches"]
    assert empty["m"].isna().all() and empty["patches"].tolist() == [2]


def test_alignment_maps_and_metrics():
    model = quant.quantize_model(build_model("resnet20"), [32, 4])
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    quant.calibrate(model, [x], 4)
    maps = feature_maps(model, x, 4, load_config(profile="smoke").triqdef.taps_of("resnet20"))
    assert [m.shape for m in maps.values()] == [(6, 32, 32), (6, 16, 16), (6, 8, 8)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in maps.values())
    y = torch.randint(0, 10, (6,))
    g32, g4 = input_gradients(model, x, y, 32), input_gradients(model, x, y, 4)
    assert g32.shape == x.shape and torch.isfinite(g4).all()
    assert raw_gradient_cosine(g32, g32).allclose(torch.ones(6))
    res = compare(maps["layer1.0.relu1"], maps["layer1.0.relu1"], ["edge_iou", "hog_cosine"], torch.Generator().manual_seed(0))
    assert res["edge_iou"]["value"] == 1.0 and res["hog_cosine"]["value"] > res["hog_cosine"]["chance"]


def test_first_test_images_takes_a_prefix_and_refuses_a_bad_count():
    import pytest
    from types import SimpleNamespace

    from triqdef.errors import TriqdefError
    from triqdef.eval.accuracy import first_test_images

    splits = SimpleNamespace(test=SimpleNamespace(images=torch.zeros(5, 3, 2, 2), labels=torch.arange(5)))
    assert first_test_images(splits, None, "p")[1].tolist() == [0, 1, 2, 3, 4]
    assert first_test_images(splits, 3, "p")[1].tolist() == [0, 1, 2]
    assert len(first_test_images(splits, 99, "p")[1]) == 5
    for bad in (0, -2, 2.5, "all"):
        with pytest.raises(TriqdefError, match="motivation.test_images"):
            first_test_images(splits, bad, "motivation.test_images")


def test_markdown_shows_rate_plus_minus_half_width():
    import pandas as pd

    from triqdef.reporting.tables import with_half_widths

    df = pd.DataFrame({"attack": ["lavan", "gap"], "m": [50.0, float("nan")], "m low": [40.0, float("nan")],
                       "m high": [62.0, float("nan")], "n m": [5, 0], "other": [1.0, 2.0]})
    shown = with_half_widths(df)
    assert list(shown.columns) == ["attack", "m", "n m", "other"]
    assert shown["m"][0] == "50.0 ± 11.0" and pd.isna(shown["m"][1]) and shown["other"].tolist() == [1.0, 2.0]


def test_select_outcomes_orders_patches_and_rejects_an_empty_selection():
    import numpy as np
    import pandas as pd

    from triqdef.errors import TriqdefError
    from triqdef.eval.transfer import select_outcomes

    rec = pd.DataFrame([{"patch": p, "view": v, "attack": "lavan", "hits_asr": np.array([p == 1, v == "a"]),
                         "eligible": np.array([True, True])} for p in (1, 0) for v in ("a", "b")])
    o = select_outcomes(rec, "asr", view="a")
    assert o.hits.tolist() == [[False, True], [True, True]]  # patch 0 first
    with pytest.raises(TriqdefError, match="no records"):
        select_outcomes(rec, "asr", view="c")
