"""Tests for triqdef.data.cifar: the data.source choice, archive formats, subsets, the committed sample.

Everything runs offline (TRIQDEF_OFFLINE=1) on tiny synthetic archives built in
tmp_path; only the committed-sample tests decode real (13,000 small) JPEGs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

try:
    import triqdef  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from triqdef import paths

from triqdef.data import cifar as data
from triqdef.config import DataParams, build
from triqdef.data.cifar import CLASSES, Splits, fetch, load_splits, make_sample, to_float
from triqdef.errors import TriqdefError

# --------------------------------------------------------------------------- archive builders


def _color(split: str, c: int, i: int) -> tuple[int, int, int]:
    """A flat colour identifying (split, class, index), robust to JPEG loss."""
    return (20 + 20 * c, 40 + 30 * i, 60 if split == "train" else 200)


def _jpeg_bytes(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_jpeg_archive(path: Path, n_train: int = 3, n_test: int = 2, classes=CLASSES, prefix: str = "",
                      skip: tuple[str, str] | None = None) -> Path:
    """train/<class>/NNNN.jpg and test/<class>/NNNN.jpg, written in a scrambled member order."""
    members = []
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(classes):
            if (split, cls) == skip:
                continue
            for i in range(n):
                members.append((f"{prefix}{split}/{cls}/{i:04d}.jpg", _jpeg_bytes(_color(split, c, i))))
    members.reverse()  # the reader must sort, not rely on archive order
    with tarfile.open(path, "w:gz") as tf:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return path


def make_official_archive(path: Path, per_batch: int = 4, drop: str | None = None) -> Path:
    """A tiny cifar-10-python.tar.gz: pickled dicts with bytes keys, data N x 3072 in CHW order."""
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:gz") as tf:
        for b, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]):
            if name == drop:
                continue
            batch = {
                b"batch_label": name.encode(),
                b"labels": [int(x) for x in rng.integers(0, 10, per_batch)],
                b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
            }
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
        meta = pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(meta)
        tf.addfile(info, io.BytesIO(meta))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(folder.iterdir())}


def _no_leftovers(folder: Path) -> None:
    if folder.exists():
        assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".download-" in p.name]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def offline_env(tmp_path, monkeypatch):
    """Offline, no CIFAR10_ARCHIVE, no DVC-pulled mirror archive, data dir in tmp."""
    monkeypatch.setenv("TRIQDEF_OFFLINE", "1")
    monkeypatch.delenv("CIFAR10_ARCHIVE", raising=False)
    monkeypatch.setenv("TRIQDEF_DATA_DIR", str(tmp_path / "data" / "cifar10"))
    monkeypatch.setattr(paths, "mirror_archive", lambda: tmp_path / "not-pulled" / "cifar10-jpeg.tar.gz")
    return tmp_path


def _as_mirror(monkeypatch, archive: Path) -> Path:
    """Make ``archive`` (a tiny synthetic JPEG archive) the known mirror: its path and its sha256."""
    monkeypatch.setattr(paths, "mirror_archive", lambda: archive)
    monkeypatch.setattr(data, "JPEG_MIRROR_SHA256", _sha256(archive))
    return archive


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A tiny synthetic stand-in for the DVC-tracked mirror archive (3 train / 2 test images per class)."""
    (tmp_path / "pulled").mkdir()
    return _as_mirror(monkeypatch, make_jpeg_archive(tmp_path / "pulled" / "cifar10-jpeg.tar.gz", prefix="cifar10/"))


@pytest.fixture
def dest(tmp_path) -> Path:
    return tmp_path / "data" / "cifar10"


@pytest.fixture
def tiny_sample(tmp_path, monkeypatch) -> Path:
    """Replace the committed sample by a tiny one (the real one is tested separately)."""
    path = make_jpeg_archive(tmp_path / "tiny-sample.tar.gz", n_train=2, n_test=1)
    monkeypatch.setattr(paths, "sample_archive", lambda: path)
    return path


@pytest.fixture
def prepared(tmp_path, monkeypatch, dest) -> Path:
    """A prepared copy with 20 train / 5 test images per class."""
    _as_mirror(monkeypatch, make_jpeg_archive(tmp_path / "mid.tar.gz", n_train=20, n_test=5))
    fetch(progress=False)
    return dest


def _cfg(train=50, holdout=20, test=30, balanced=True, source="mirror") -> DataParams:
    return DataParams(source=source, train_size=train, holdout_size=holdout, test_size=test, class_balanced=balanced)


# --------------------------------------------------------------------------- data.source: mirror


def test_mirror_from_the_dvc_tracked_archive(mirror, dest):
    src = fetch(progress=False)  # data.source defaults to mirror
    assert src["source"] == "jpeg-mirror"
    assert src["origin"] == "cifar10-jpeg.tar.gz" and src["sha256"] == _sha256(mirror)
    assert (src["n_train"], src["n_test"]) == (30, 20)
    assert src["classes"] == list(CLASSES)
    assert src["note"] == data.JPEG_MIRROR_NOTE  # the known archive: no "sha256 differs" remark
    assert json.loads((dest / "source.json").read_text()) == src
    images, labels = np.load(dest / "train_images.npy"), np.load(dest / "train_labels.npy")
    assert images.dtype == np.uint8 and images.shape == (30, 32, 32, 3)
    assert labels.dtype == np.int64 and labels.tolist() == [c for c in range(10) for _ in range(3)]
    # ordered by (split, class, file name) although the archive was written in reverse
    for k, (c, i) in enumerate([(c, i) for c in range(10) for i in range(3)]):
        assert np.abs(images[k].astype(int) - _color("train", c, i)).max() <= 8
    _no_leftovers(dest.parent)


def test_mirror_not_pulled_says_dvc_pull_and_writes_nothing(dest, tiny_sample):
    with pytest.raises(TriqdefError, match=r"data.source = mirror: .*not-pulled.*dvc pull data.dvc") as exc:
        fetch(progress=False)
    assert "\n" not in str(exc.value)
    assert not dest.exists()  # never the sample in its place


def test_cifar10_archive_env_is_another_copy_of_the_mirror(tmp_path, monkeypatch, mirror, dest):
    copy = tmp_path / "elsewhere" / "cifar10-jpeg.tar.gz"
    copy.parent.mkdir()
    copy.write_bytes(mirror.read_bytes())
    mirror.unlink()  # not pulled: the env copy alone serves
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(copy))
    assert fetch(progress=False)["sha256"] == _sha256(copy)


def test_an_archive_that_is_not_the_mirror_is_refused(tmp_path, monkeypatch, mirror, dest):
    other = make_jpeg_archive(tmp_path / "other.tar.gz", n_train=1, n_test=1)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(other))
    with pytest.raises(TriqdefError, match=r"is not the JPEG mirror the results were made from \(sha256") as exc:
        fetch(progress=False)
    assert str(other) in str(exc.value) and "CIFAR10_ARCHIVE" in str(exc.value)
    assert not dest.exists()


def test_prepared_copy_reused_and_not_rewritten(tmp_path, monkeypatch, mirror, dest):
    first = fetch(progress=False)
    before = _snapshot(dest)
    mirror.unlink()  # the archive is not read again
    assert fetch(progress=False) == first
    assert fetch(dest, progress=False) == first
    assert _snapshot(dest) == before


def test_missing_cifar10_archive_is_an_error(tmp_path, monkeypatch, dest, tiny_sample):
    missing = tmp_path / "nowhere" / "cifar.tar.gz"
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(missing))
    with pytest.raises(TriqdefError, match="CIFAR10_ARCHIVE") as exc:
        fetch(progress=False)
    assert str(missing) in str(exc.value)
    assert not dest.exists()


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "unbalanced", "missing-class", "unknown-class", "no-images", "bad-jpeg"])
def test_corrupt_archive_is_an_error_and_leaves_nothing(tmp_path, monkeypatch, dest, kind):
    path = tmp_path / f"{kind}.tar.gz"
    if kind == "truncated":
        good = make_jpeg_archive(tmp_path / "good.tar.gz").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not a tar file" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unbalanced":
        make_jpeg_archive(tmp_path / "u.tar.gz")
        with tarfile.open(tmp_path / "u.tar.gz") as src, tarfile.open(path, "w:gz") as out:
            for m in src.getmembers():
                if m.name != "train/cat/0001.jpg":
                    out.addfile(m, src.extractfile(m))
    elif kind == "missing-class":
        make_jpeg_archive(path, skip=("test", "frog"))
    elif kind == "unknown-class":
        make_jpeg_archive(path, classes=CLASSES[:9] + ("unicorn",))
    elif kind == "no-images":
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo("readme.txt")
            info.size = 5
            tf.addfile(info, io.BytesIO(b"hello"))
    elif kind == "bad-jpeg":
        make_jpeg_archive(tmp_path / "b.tar.gz")
        with tarfile.open(tmp_path / "b.tar.gz") as src, tarfile.open(path, "w:gz") as out:
            for m in src.getmembers():
                payload = src.extractfile(m).read()
                if m.name == "test/dog/0000.jpg":
                    payload = payload[:40]
                    m.size = len(payload)
                out.addfile(m, io.BytesIO(payload))
    _as_mirror(monkeypatch, path)  # its hash is the expected one: the content check must catch it
    with pytest.raises(TriqdefError, match="corrupt or not CIFAR-10") as exc:
        fetch(progress=False)
    assert str(path) in str(exc.value)
    assert not dest.exists()
    _no_leftovers(dest.parent)


def test_invalid_prepared_copy_is_reported_not_overwritten(tmp_path, monkeypatch, dest, tiny_sample):
    dest.mkdir(parents=True)
    (dest / "source.json").write_text('{"source": "sample"}')
    before = _snapshot(dest)
    with pytest.raises(TriqdefError, match="delete") as exc:
        fetch(source="sample", progress=False)
    assert str(dest) in str(exc.value) and "train_images.npy" in str(exc.value)
    assert _snapshot(dest) == before


def test_invalid_labels_in_prepared_copy(dest, tiny_sample):
    fetch(source="sample", progress=False)
    labels = np.load(dest / "test_labels.npy")
    labels[0] = 11
    np.save(dest / "test_labels.npy", labels)
    with pytest.raises(TriqdefError, match="outside 0..9"):
        fetch(source="sample", progress=False)
    with pytest.raises(TriqdefError, match=str(dest)):
        load_splits(_cfg(5, 0, 5, source="sample"), 0)


# --------------------------------------------------------------------------- data.source: sample, and switching


def test_sample_source(dest, tiny_sample, caplog):
    with caplog.at_level(logging.INFO, logger="triqdef.data.cifar"):
        src = fetch(source="sample", progress=False)
    assert src["source"] == "sample" and src["origin"] == tiny_sample.name
    assert src["sha256"] == _sha256(tiny_sample)
    assert "not comparable with the paper" in src["note"]
    assert any("not comparable with the paper" in r.getMessage() for r in caplog.records)
    assert (src["n_train"], src["n_test"]) == (20, 10)


def test_empty_dest_folder_is_filled(dest, tiny_sample):
    dest.mkdir(parents=True)
    assert fetch(source="sample", progress=False)["source"] == "sample"
    assert (dest / "train_images.npy").is_file()


def test_a_copy_of_another_source_is_replaced_only_when_the_new_one_is_read(tmp_path, monkeypatch, dest, tiny_sample, caplog):
    fetch(source="sample", progress=False)
    before = _snapshot(dest)
    # the mirror is not available: an error, and the sample copy stays as it was (never a silent switch)
    with pytest.raises(TriqdefError, match="dvc pull data.dvc"):
        fetch(source="mirror", progress=False)
    assert _snapshot(dest) == before
    with pytest.raises(TriqdefError, match="holds the sample data but data.source is mirror"):
        load_splits(_cfg(5, 0, 5, source="mirror"), 0)
    # once it is there, the copy is replaced, with a warning
    _as_mirror(monkeypatch, make_jpeg_archive(tmp_path / "m.tar.gz"))
    with caplog.at_level(logging.WARNING, logger="triqdef.data.cifar"):
        assert fetch(source="mirror", progress=False)["source"] == "jpeg-mirror"
    assert any("replacing the prepared sample copy" in r.getMessage() for r in caplog.records)
    assert load_splits(_cfg(5, 0, 5, source="mirror"), 0).source["source"] == "jpeg-mirror"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["cifar10"]  # nothing set aside left behind


def test_unknown_source_is_refused(dest):
    with pytest.raises(TriqdefError, match=r"data.source = 'web': expected one of mirror, official, sample"):
        fetch(source="web", progress=False)
    with pytest.raises(TriqdefError, match="source"):
        build(DataParams, {"source": "web", "train_size": 1, "holdout_size": 0, "test_size": 1,
                           "class_balanced": True}, "data")
    assert not dest.exists()


# --------------------------------------------------------------------------- data.source: official


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_official_pickle_archive(tmp_path, monkeypatch, dest):
    archive = make_official_archive(tmp_path / "cifar-10-python.tar.gz", per_batch=4)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive))
    monkeypatch.setattr(data, "OFFICIAL_MD5", _md5(archive))
    src = fetch(source="official", progress=False)
    assert src["source"] == "official" and src["sha256"] == _sha256(archive)
    assert "md5 matches the published archive" in src["note"]
    assert (src["n_train"], src["n_test"]) == (20, 4)
    # rebuild the expected arrays from the pickles: batches 1..5 in order, CHW -> HWC
    with tarfile.open(archive) as tf:
        batches = {m.name.split("/")[-1]: pickle.load(tf.extractfile(m), encoding="bytes") for m in tf.getmembers()}
    train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    expect = train.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.load(dest / "train_images.npy"), expect)
    np.testing.assert_array_equal(np.load(dest / "test_labels.npy"), batches["test_batch"][b"labels"])
    assert np.load(dest / "train_labels.npy").dtype == np.int64


def test_official_archive_with_another_md5_is_refused(tmp_path, monkeypatch, dest):
    archive = make_official_archive(tmp_path / "cifar-10-python.tar.gz")
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive))
    with pytest.raises(TriqdefError, match=f"not the published cifar-10-python.tar.gz \\(md5 {_md5(archive)}"):
        fetch(source="official", progress=False)
    assert not dest.exists()


def test_official_archive_missing_batch_is_corrupt(tmp_path, monkeypatch, dest):
    archive = make_official_archive(tmp_path / "o.tar.gz", drop="data_batch_3")
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive))
    monkeypatch.setattr(data, "OFFICIAL_MD5", _md5(archive))
    with pytest.raises(TriqdefError, match="data_batch_3"):
        fetch(source="official", progress=False)
    assert not dest.exists()


def test_official_unreachable_is_one_error_and_writes_nothing(tmp_path, monkeypatch, mirror, dest):
    import torchvision.datasets

    calls = []

    class Unreachable:
        url = "https://example.invalid/cifar-10-python.tar.gz"

        def __init__(self, root, train=True, download=False, **kw):
            calls.append(root)
            raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Unreachable)
    monkeypatch.delenv("TRIQDEF_OFFLINE")
    with pytest.raises(TriqdefError) as exc:
        fetch(source="official", progress=False)  # the mirror is there, but is never taken in its place
    msg = str(exc.value)
    assert msg.startswith("data.source = official: downloading cifar-10-python.tar.gz failed (URLError")
    assert "connect to the network" in msg and "CIFAR10_ARCHIVE" in msg and "\n" not in msg
    assert len(calls) == 1 and not Path(calls[0]).exists()  # the download folder is gone
    assert not dest.exists() and not dest.parent.exists()


def test_official_download(tmp_path, monkeypatch, dest):
    import torchvision.datasets

    class Fake:
        url = "https://example.org/cifar-10-python.tar.gz"
        filename = "cifar-10-python.tar.gz"

        def __init__(self, root, train=True, download=False, **kw):
            n = 6 if train else 3
            self.data = np.full((n, 32, 32, 3), 7 if train else 9, dtype=np.uint8)
            self.targets = list(range(n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Fake)
    # TRIQDEF_OFFLINE=1 and allow_download=False forbid it, each in one line naming the fix
    with pytest.raises(TriqdefError, match="TRIQDEF_OFFLINE=1 forbids: allow the network, or set CIFAR10_ARCHIVE"):
        fetch(source="official", progress=False)
    monkeypatch.delenv("TRIQDEF_OFFLINE")
    with pytest.raises(TriqdefError, match="--no-download forbids"):
        fetch(source="official", allow_download=False, progress=False)
    assert not dest.exists()
    src = fetch(source="official", progress=False)
    assert src["source"] == "official" and src["origin"] == Fake.url
    assert (src["n_train"], src["n_test"]) == (6, 3)
    assert load_splits(_cfg(5, 0, 3, source="official"), 0).source["source"] == "official"


# --------------------------------------------------------------------------- subsets


def test_load_splits_balanced_disjoint_and_seeded(prepared):
    s = load_splits(_cfg(train=53, holdout=20, test=30, balanced=True), seed=3)
    assert isinstance(s, Splits) and s.source["source"] == "jpeg-mirror"
    assert s.sizes == {"requested": {"train": 53, "holdout": 20, "test": 30},
                       "actual": {"train": 53, "holdout": 20, "test": 30}}
    assert np.bincount(s.train.labels.numpy(), minlength=10).tolist() == [6, 6, 6, 5, 5, 5, 5, 5, 5, 5]
    assert np.bincount(s.holdout.labels.numpy(), minlength=10).tolist() == [2] * 10
    assert np.bincount(s.test.labels.numpy(), minlength=10).tolist() == [3] * 10
    assert not set(s.train.indices.tolist()) & set(s.holdout.indices.tolist())
    assert len(set(s.train.indices.tolist())) == 53
    # tensors: uint8 CHW, int64 labels, matching the prepared arrays at the indices
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape == (53, 3, 32, 32)
    assert s.train.labels.dtype == torch.int64 and len(s.train) == 53
    imgs, labels = np.load(prepared / "train_images.npy"), np.load(prepared / "train_labels.npy")
    np.testing.assert_array_equal(s.train.images.numpy(), imgs[s.train.indices].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(s.train.labels.numpy(), labels[s.train.indices])
    test_labels = np.load(prepared / "test_labels.npy")
    np.testing.assert_array_equal(s.test.labels.numpy(), test_labels[s.test.indices])
    # seeded: same seed, same subsets; another seed, other subsets
    again = load_splits(_cfg(train=53, holdout=20, test=30), seed=3)
    for name in ("train", "holdout", "test"):
        np.testing.assert_array_equal(getattr(s, name).indices, getattr(again, name).indices)
    other = load_splits(_cfg(train=53, holdout=20, test=30), seed=4)
    assert set(other.train.indices.tolist()) != set(s.train.indices.tolist())


def test_load_splits_unbalanced_and_zero_holdout(prepared):
    s = load_splits(_cfg(train=150, holdout=40, test=25, balanced=False), seed=0)
    assert (len(s.train), len(s.holdout), len(s.test)) == (150, 40, 25)
    assert not set(s.train.indices.tolist()) & set(s.holdout.indices.tolist())
    z = load_splits(_cfg(train=10, holdout=0, test=5), seed=0)
    assert len(z.holdout) == 0 and z.holdout.images.shape == (0, 3, 32, 32)


def test_load_splits_clamps_and_records(prepared, caplog):
    with caplog.at_level(logging.WARNING, logger="triqdef.data.cifar"):
        s = load_splits(_cfg(train=1000, holdout=30, test=70, balanced=True), seed=0)
    assert s.sizes["requested"] == {"train": 1000, "holdout": 30, "test": 70}
    assert s.sizes["actual"] == {"train": 170, "holdout": 30, "test": 50}
    assert np.bincount(s.train.labels.numpy(), minlength=10).tolist() == [17] * 10
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "train_size" in warned and "1000" in warned and "170" in warned
    assert "test_size" in warned and "70" in warned and "50" in warned
    assert "holdout_size" not in warned


@pytest.mark.parametrize("key", ["train_size", "holdout_size", "test_size"])
@pytest.mark.parametrize("value", [0, -1, "10", 2.5, True, None])
def test_data_params_reject_bad_sizes(key, value):
    """A bad subset size is refused when the config is read, with its full key."""
    if key == "holdout_size" and value == 0:
        pytest.skip("holdout_size may be 0")
    mapping = {"source": "mirror", "train_size": 50, "holdout_size": 20, "test_size": 30, "class_balanced": True, key: value}
    with pytest.raises(TriqdefError, match=f"data.cpu.{key}"):
        build(DataParams, mapping, "data.cpu")


def test_data_params_reject_bad_flag_and_missing_key():
    good = {"source": "mirror", "train_size": 50, "holdout_size": 20, "test_size": 30, "class_balanced": True}
    with pytest.raises(TriqdefError, match="data.cpu.class_balanced = 'yes': expected true or false"):
        build(DataParams, dict(good, class_balanced="yes"), "data.cpu")
    del good["test_size"]
    with pytest.raises(TriqdefError, match="data.cpu.test_size is missing"):
        build(DataParams, good, "data.cpu")


def test_load_splits_without_prepared_copy(dest):
    with pytest.raises(TriqdefError, match="triqdef data fetch") as exc:
        load_splits(_cfg(), seed=0)
    assert str(dest) in str(exc.value)


def test_to_float():
    x = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    y = to_float(x)
    assert y.dtype == torch.float32 and y.min() == 0.0 and y.max() == 1.0
    assert abs(y[0, 1].item() - 128 / 255) < 1e-6
    with pytest.raises(ValueError):
        to_float(torch.zeros(3))


# --------------------------------------------------------------------------- the committed sample


def test_make_sample_is_deterministic_and_copies_bytes(tmp_path):
    src = make_jpeg_archive(tmp_path / "src.tar.gz", n_train=5, n_test=3)
    a = make_sample(src, tmp_path / "a.tar.gz", train_per_class=2, test_per_class=1, seed=0)
    b = make_sample(src, tmp_path / "b.tar.gz", train_per_class=2, test_per_class=1, seed=0)
    assert a["sha256"] == b["sha256"] == _sha256(tmp_path / "a.tar.gz")
    assert set(a["counts"]["train"].values()) == {2} and set(a["counts"]["test"].values()) == {1}
    with tarfile.open(src) as s, tarfile.open(tmp_path / "a.tar.gz") as out:
        for m in out.getmembers():
            if m.isfile():
                assert out.extractfile(m).read() == s.extractfile(m.name).read()
    with pytest.raises(TriqdefError, match="fewer"):
        make_sample(src, tmp_path / "c.tar.gz", train_per_class=6, test_per_class=1, seed=0)


def test_committed_sample_is_class_balanced():
    sample = paths.sample_archive()
    assert sample.is_file(), f"committed sample missing: {sample}"
    assert sample.stat().st_size < 10 * 2**20
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(sample) as tf:
        for m in tf.getmembers():
            if m.isfile():
                split, cls, name = m.name.split("/")
                assert name.endswith(".jpg")
                counts[(split, cls)] = counts.get((split, cls), 0) + 1
    assert counts == {**{("train", c): 1000 for c in CLASSES}, **{("test", c): 300 for c in CLASSES}}
    readme = (sample.parent / "README.md").read_text()
    assert _sha256(sample) in readme


@pytest.fixture(scope="module")
def sample_copy(tmp_path_factory):
    dest = tmp_path_factory.mktemp("sample") / "cifar10"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRIQDEF_OFFLINE", "1")
        mp.delenv("CIFAR10_ARCHIVE", raising=False)
        src = fetch(dest, source="sample", progress=False)
    return dest, src


def test_committed_sample_loads(sample_copy):
    dest, src = sample_copy
    assert src["source"] == "sample" and src["origin"] == "cifar10-sample-jpeg.tar.gz"
    assert (src["n_train"], src["n_test"]) == (10000, 3000)
    assert np.bincount(np.load(dest / "train_labels.npy")).tolist() == [1000] * 10
    assert np.bincount(np.load(dest / "test_labels.npy")).tolist() == [300] * 10
    s = load_splits(_cfg(train=49000, holdout=1000, test=2000, source="sample"), seed=0, dest=dest)
    assert s.sizes["actual"] == {"train": 9000, "holdout": 1000, "test": 2000}
    assert s.sizes["requested"] == {"train": 49000, "holdout": 1000, "test": 2000}
    assert np.bincount(s.train.labels.numpy()).tolist() == [900] * 10
    # the prepared copy looks like CIFAR-10: not blank, varied
    x = to_float(s.test.images[:100])
    assert 0.2 < x.mean().item() < 0.8 and x.std().item() > 0.1


def test_data_module_constants():
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert data.JPEG_MIRROR_SHA256.startswith("c6a0fc64")


def test_the_convergence_monitor_reads_held_out_images_never_test_images(prepared):
    """Issue 30, item 6: the monitor's images (the first ``defenses.monitor_images`` of the held-out split) and
    the test images the tables report are disjoint, by id (split, index into the prepared split) and by
    pixels; nor are they training images. A held-out split smaller than the monitor is refused in one line."""
    from types import SimpleNamespace

    from triqdef.errors import TriqdefError
    from triqdef.stages.defense import monitor_split

    splits = load_splits(_cfg(train=120, holdout=40, test=50), seed=0)
    cfg = SimpleNamespace(defenses=SimpleNamespace(monitor_images=30))
    monitor = monitor_split(cfg, splits)
    assert len(monitor) == 30 and torch.equal(monitor.images, splits.holdout.images[:30])
    monitor_ids = {("train", int(i)) for i in monitor.indices}
    table_ids = {("test", int(i)) for i in splits.test.indices}   # every test image a table may read
    assert monitor_ids and not monitor_ids & table_ids
    assert not {int(i) for i in monitor.indices} & {int(i) for i in splits.train.indices}
    pixels = {bytes(im.numpy()) for im in splits.test.images}
    assert not any(bytes(im.numpy()) in pixels for im in monitor.images)
    with pytest.raises(TriqdefError, match="defenses.monitor_images = 41: expected at most data.holdout_size"):
        monitor_split(SimpleNamespace(defenses=SimpleNamespace(monitor_images=41)), splits)
