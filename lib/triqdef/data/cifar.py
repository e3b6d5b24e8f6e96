"""CIFAR-10: fetching a prepared copy, and drawing seeded subsets from it.

A *prepared copy* is a folder (default :func:`triqdef.paths.data_dir`) holding
``train_images.npy`` / ``test_images.npy`` (uint8, N x 32 x 32 x 3, HWC RGB),
``train_labels.npy`` / ``test_labels.npy`` (int64, 0..9) and ``source.json``
(where the pixels came from). :func:`fetch` builds it from the one source the
``data.source`` parameter names, and never from another:

- ``mirror`` (the default; the committed results were made from it): the JPEG
  re-encoded mirror ``data/cifar10-jpeg.tar.gz``, tracked by ``data.dvc`` and
  stored in the repository's DVC remote, checked against :data:`JPEG_MIRROR_SHA256`;
- ``official``: ``cifar-10-python.tar.gz``, downloaded by ``torchvision``
  (md5-verified) or read from ``$CIFAR10_ARCHIVE`` (md5-checked): other pixels,
  so every stage is recomputed;
- ``sample``: the small class-balanced sample committed with the package
  (:func:`triqdef.paths.sample_archive`; tests and the smoke profile), on
  which results are not comparable with the paper.

:func:`load_splits` then draws the train / holdout / test subsets used by the
pipeline, seeded and optionally class-balanced, from a copy of that source.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import socket
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from triqdef import paths
from triqdef.config import DataParams, require_positive_int
from triqdef.errors import TriqdefError

log = logging.getLogger("triqdef.data.cifar")

CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
SPLITS = ("train", "test")
FILES = ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy", "source.json")
SOURCES = ("official", "jpeg-mirror", "sample")   # as recorded in a prepared copy's source.json
#: the values of the ``data.source`` parameter; ``mirror`` is recorded as ``jpeg-mirror``
SOURCE_PARAMS = ("mirror", "official", "sample")

#: sha256 of the JPEG mirror the committed results were made from (``data/cifar10-jpeg.tar.gz``, tracked by ``data.dvc``).
JPEG_MIRROR_SHA256 = "c6a0fc643c9841e8dd88805891a39696e4bef0793bb2108f76789e21405057ff"
#: md5 of the official ``cifar-10-python.tar.gz`` (as published and checked by torchvision).
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
JPEG_MIRROR_NOTE = "JPEG re-encoded mirror (quality ~75); pixels differ slightly from the official archive"
DOWNLOAD_TIMEOUT_S = 10.0

_JPEG_RE = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+\.jpe?g)$", re.IGNORECASE)
_OFFICIAL_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


# --------------------------------------------------------------------------- helpers


def _file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _offline() -> bool:
    return os.environ.get("TRIQDEF_OFFLINE", "").strip() == "1"


class _Corrupt(Exception):
    """Internal: the archive's content is not what we expect (message = the reason)."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the official CIFAR-10 batches (dicts of bytes, lists and numpy arrays) and nothing else."""

    _NUMPY_NAMES = {"_reconstruct", "ndarray", "dtype", "_frombuffer", "scalar"}

    def find_class(self, module: str, name: str):
        if (module == "numpy" or module.startswith("numpy.")) and name in self._NUMPY_NAMES:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise _Corrupt(f"unexpected object {module}.{name} in a pickled batch")


# --------------------------------------------------------------------------- the prepared copy


def _is_absent(dest: Path) -> bool:
    return not dest.exists() or (dest.is_dir() and not any(dest.iterdir()))


def _open_prepared(dest: Path, mmap: bool = True) -> tuple[dict, dict[str, np.ndarray]] | None:
    """Open a prepared copy: ``None`` if absent, ``(source, arrays)`` if valid, TriqdefError if invalid."""
    if _is_absent(dest):
        return None

    def bad(what: str) -> TriqdefError:
        return TriqdefError(
            f"prepared CIFAR-10 copy {dest} is invalid: {what}; delete that folder and run `triqdef data fetch` again"
        )

    if not dest.is_dir():
        raise bad("it is not a folder")
    missing = [f for f in FILES if not (dest / f).is_file()]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    try:
        source = json.loads((dest / "source.json").read_text())
    except (OSError, ValueError) as exc:
        raise bad(f"source.json is unreadable ({_one_line(exc)})") from None
    if not isinstance(source, dict) or source.get("source") not in SOURCES:
        raise bad(f"source.json has no valid 'source' (expected one of {', '.join(SOURCES)})")
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        for kind in ("images", "labels"):
            name = f"{split}_{kind}"
            try:
                arrays[name] = np.load(dest / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise bad(f"{name}.npy is unreadable ({_one_line(exc)})") from None
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise bad(f"{split}_images.npy is {images.dtype} {tuple(images.shape)}, expected uint8 N x 32 x 32 x 3")
        if labels.dtype != np.int64 or labels.ndim != 1:
            raise bad(f"{split}_labels.npy is {labels.dtype} {tuple(labels.shape)}, expected int64 of shape (N,)")
        if len(labels) != len(images) or len(images) == 0:
            raise bad(f"{split} has {len(images)} images but {len(labels)} labels")
        if int(labels.min()) < 0 or int(labels.max()) > 9:
            raise bad(f"{split}_labels.npy has labels outside 0..9")
        if source.get(f"n_{split}") != len(images):
            raise bad(f"source.json says n_{split} = {source.get(f'n_{split}')!r} but the arrays hold {len(images)}")
    return source, arrays


def _write_prepared(dest: Path, arrays: dict[str, np.ndarray], source: dict, replace: bool = False) -> dict:
    """Write a prepared copy atomically: build a temporary sibling, then rename it into place. ``replace``: an
    existing copy is moved aside only once the new one is complete, and removed after the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; give the copy ordinary folder permissions
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n")
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if replace and dest.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.rename(dest, aside / dest.name)
            try:
                os.rename(tmp, dest)
            except OSError:
                os.rename(aside / dest.name, dest)  # put the old copy back
                raise
            finally:
                shutil.rmtree(aside, ignore_errors=True)  # the old copy, or nothing once it is back in place
            return source
        try:
            os.rename(tmp, dest)
        except OSError:
            # Someone else finished first: keep theirs if it is valid.
            if _open_prepared(dest) is None:
                raise
            log.info("a prepared copy appeared at %s meanwhile; keeping it", dest)
            return json.loads((dest / "source.json").read_text())
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return source


# --------------------------------------------------------------------------- sources


def _source_dict(source: str, origin: str, sha256: str | None, arrays: dict, note: str) -> dict:
    return {
        "source": source,
        "origin": origin,
        "sha256": sha256,
        "n_train": int(len(arrays["train_labels"])),
        "n_test": int(len(arrays["test_labels"])),
        "classes": list(CLASSES),
        "note": note,
    }


def _download_official(tmp_root: Path) -> tuple[dict[str, np.ndarray], str, str | None]:
    """Download the official archive with torchvision (md5-checked). Returns (arrays, url, sha256)."""
    from torchvision.datasets import CIFAR10

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        train = CIFAR10(root=str(tmp_root), train=True, download=True)
        test = CIFAR10(root=str(tmp_root), train=False, download=True)
    finally:
        socket.setdefaulttimeout(old)
    arrays = {
        "train_images": np.ascontiguousarray(train.data, dtype=np.uint8),
        "train_labels": np.asarray(train.targets, dtype=np.int64),
        "test_images": np.ascontiguousarray(test.data, dtype=np.uint8),
        "test_labels": np.asarray(test.targets, dtype=np.int64),
    }
    archive = tmp_root / getattr(CIFAR10, "filename", "cifar-10-python.tar.gz")
    sha = _file_hashes(archive)[0] if archive.is_file() else None
    return arrays, getattr(CIFAR10, "url", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"), sha


def _decode_jpegs(entries: dict[tuple[str, str, str], bytes], progress: bool) -> dict[str, np.ndarray]:
    """Decode ``{(split, class, name): jpeg bytes}`` into the four arrays, ordered by (split, class, name)."""
    from PIL import Image

    counts = {s: {c: 0 for c in CLASSES} for s in SPLITS}
    for split, cls, _ in entries:
        counts[split][cls] += 1
    for split in SPLITS:
        empty = [c for c, n in counts[split].items() if n == 0]
        if empty:
            raise _Corrupt(f"no {split} images for class {', '.join(empty)}")
        if len(set(counts[split].values())) != 1:
            detail = ", ".join(f"{c} {n}" for c, n in counts[split].items())
            raise _Corrupt(f"{split} classes are not balanced ({detail})")
    class_index = {c: i for i, c in enumerate(CLASSES)}
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        keys = sorted((k for k in entries if k[0] == split), key=lambda k: (class_index[k[1]], k[2]))
        images = np.empty((len(keys), 32, 32, 3), dtype=np.uint8)
        labels = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(_progress(keys, len(keys), f"decoding {split}", progress)):
            try:
                with Image.open(io.BytesIO(entries[key])) as im:
                    rgb = im.convert("RGB")
            except Exception as exc:  # PIL raises many kinds
                raise _Corrupt(f"{'/'.join(key)} does not decode ({_one_line(exc)})") from None
            if rgb.size != (32, 32):
                raise _Corrupt(f"{'/'.join(key)} is {rgb.size[0]}x{rgb.size[1]}, expected 32x32")
            images[i] = np.asarray(rgb, dtype=np.uint8)
            labels[i] = class_index[key[1]]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def _official_arrays(batches: dict[str, Any]) -> dict[str, np.ndarray]:
    missing = [b for b in _OFFICIAL_BATCHES if b not in batches]
    if missing:
        raise _Corrupt(f"missing batch {', '.join(missing)}")
    out: dict[str, list] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    for name in _OFFICIAL_BATCHES:
        batch = batches[name]
        if not isinstance(batch, dict):
            raise _Corrupt(f"batch {name} is not a dict")
        batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
        if "data" not in batch or "labels" not in batch:
            raise _Corrupt(f"batch {name} has no data/labels")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise _Corrupt(f"batch {name} data is {data.dtype} {data.shape}, expected uint8 N x 3072")
        if labels.ndim != 1 or len(labels) != len(data):
            raise _Corrupt(f"batch {name} has {len(data)} images but {labels.size} labels")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise _Corrupt(f"batch {name} has labels outside 0..9")
        split = "test" if name == "test_batch" else "train"
        out[f"{split}_images"].append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        out[f"{split}_labels"].append(labels)
    arrays = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in out.items()}
    for split in SPLITS:
        if len(arrays[f"{split}_labels"]) == 0:
            raise _Corrupt(f"the {split} batches are empty")
    return arrays


def _read_archive(path: Path, progress: bool) -> tuple[str, dict[str, np.ndarray]]:
    """Read a local archive (format detected by content). Returns (format, arrays); format is
    ``"official"`` or ``"jpeg"``. Raises TriqdefError if it is corrupt or not CIFAR-10."""
    jpegs: dict[tuple[str, str, str], bytes] = {}
    batches: dict[str, Any] = {}
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                m = _JPEG_RE.search(member.name)
                if base in _OFFICIAL_BATCHES:
                    f = tf.extractfile(member)
                    batches[base] = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
                elif m:
                    split, cls, name = m.group(1).lower(), m.group(2), m.group(3)
                    if cls not in CLASSES:
                        raise _Corrupt(f"unknown class folder {split}/{cls}")
                    key = (split, cls, name)
                    if key in jpegs:
                        raise _Corrupt(f"duplicate member {member.name}")
                    jpegs[key] = tf.extractfile(member).read()
        if batches:
            return "official", _official_arrays(batches)
        if jpegs:
            return "jpeg", _decode_jpegs(jpegs, progress)
        raise _Corrupt("no CIFAR-10 batches or train|test/<class>/*.jpg images inside")
    except TriqdefError:
        raise
    except Exception as exc:  # tarfile, gzip, zlib, pickle, PIL, our own checks
        reason = str(exc) if isinstance(exc, _Corrupt) else _one_line(exc)
        raise TriqdefError(f"archive {path} is corrupt or not CIFAR-10: {reason}") from None


def _from_archive(path: Path, progress: bool, is_sample: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    sha, md5 = _file_hashes(path)
    fmt, arrays = _read_archive(path, progress)
    if not is_sample:
        try:
            sample = paths.sample_archive()
            is_sample = sample.is_file() and (path.resolve() == sample.resolve() or _file_hashes(sample)[0] == sha)
        except OSError:
            pass
    if fmt == "official":
        verified = "md5 matches the published archive" if md5 == OFFICIAL_MD5 else "md5 differs from the published archive"
        source = _source_dict("official", path.name, sha, arrays, f"official cifar-10-python archive (pickled batches; {verified})")
    elif is_sample:
        n_tr, n_te = len(arrays["train_labels"]) // 10, len(arrays["test_labels"]) // 10
        source = _source_dict(
            "sample", path.name, sha, arrays,
            f"small class-balanced sample of the JPEG mirror ({n_tr} train / {n_te} test per class) "
            "committed with triqdef; results on it are not comparable with the paper",
        )
    else:
        note = JPEG_MIRROR_NOTE if sha == JPEG_MIRROR_SHA256 else JPEG_MIRROR_NOTE + "; sha256 differs from the known mirror archive"
        source = _source_dict("jpeg-mirror", path.name, sha, arrays, note)
    return arrays, source


def matches(recorded: dict, source: str) -> bool:
    """Whether a prepared copy's ``source.json`` is what ``data.source = source`` asks for: ``mirror`` the JPEG
    mirror of :data:`JPEG_MIRROR_SHA256` exactly, ``official`` the official pixels, ``sample`` the committed sample."""
    check_source(source)
    if source == "mirror":
        return recorded.get("source") == "jpeg-mirror" and recorded.get("sha256") == JPEG_MIRROR_SHA256
    return recorded.get("source") == source


def check_source(source: str) -> str:
    if source not in SOURCE_PARAMS:
        raise TriqdefError(f"parameter data.source = {source!r}: expected one of {', '.join(SOURCE_PARAMS)}")
    return source


def _mirror_arrays(progress: bool) -> tuple[dict[str, np.ndarray], dict]:
    """data.source = mirror: the exact archive the committed results were made from, sha256-checked."""
    env = os.environ.get("CIFAR10_ARCHIVE", "").strip()
    if env:
        archive, where = Path(env).expanduser(), f"CIFAR10_ARCHIVE={env}"
    else:
        archive, where = paths.mirror_archive(), str(paths.mirror_archive())
    if not archive.is_file() or not os.access(archive, os.R_OK):
        fix = ("point it at the JPEG mirror (cifar10-jpeg.tar.gz)" if env else
               "run `dvc pull data.dvc` (the archive is stored in the repository's dvc-store/)")
        raise TriqdefError(f"data.source = mirror: {where} is not a readable file: {fix}")
    sha = _file_hashes(archive)[0]
    if sha != JPEG_MIRROR_SHA256:
        raise TriqdefError(
            f"data.source = mirror: {where} is not the JPEG mirror the results were made from "
            f"(sha256 {sha[:16]}..., expected {JPEG_MIRROR_SHA256[:16]}...): "
            f"{'unset CIFAR10_ARCHIVE or point it at that archive' if env else 'run `dvc pull data.dvc` again'}"
        )
    log.info("reading the JPEG mirror of CIFAR-10 from %s", archive)
    arrays, source = _from_archive(archive, progress)
    if source["source"] != "jpeg-mirror":  # the right hash but another layout cannot happen; guard all the same
        raise TriqdefError(f"data.source = mirror: {where} holds {source['source']} data, expected the JPEG mirror")
    return arrays, source


def _official_arrays_from_anywhere(allow_download: bool, progress: bool, tmp_root: Path) -> tuple[dict[str, np.ndarray], dict]:
    """data.source = official: ``$CIFAR10_ARCHIVE`` (md5-checked) if set, else torchvision's download."""
    env = os.environ.get("CIFAR10_ARCHIVE", "").strip()
    fix = ("set CIFAR10_ARCHIVE to a local cifar-10-python.tar.gz, or set data.source: mirror "
           "to reuse the stored results")
    if env:
        archive = Path(env).expanduser()
        if not archive.is_file() or not os.access(archive, os.R_OK):
            raise TriqdefError(f"data.source = official: CIFAR10_ARCHIVE={env} is not a readable file: expected cifar-10-python.tar.gz")
        md5 = _file_hashes(archive)[1]
        if md5 != OFFICIAL_MD5:
            raise TriqdefError(
                f"data.source = official: CIFAR10_ARCHIVE={env} is not the published cifar-10-python.tar.gz "
                f"(md5 {md5}, expected {OFFICIAL_MD5})"
            )
        log.info("reading the official CIFAR-10 from %s", archive)
        return _from_archive(archive, progress)
    if not allow_download or _offline():
        why = "TRIQDEF_OFFLINE=1" if _offline() else "--no-download"
        raise TriqdefError(f"data.source = official needs a download of cifar-10-python.tar.gz, which {why} forbids: "
                           f"allow the network, or {fix}")
    try:
        arrays, url, sha = _download_official(tmp_root)
    except Exception as exc:  # network, md5 mismatch, disk
        raise TriqdefError(f"data.source = official: downloading cifar-10-python.tar.gz failed ({_one_line(exc)}): "
                           f"connect to the network, or {fix}") from None
    return arrays, _source_dict("official", url, sha, arrays, "official cifar-10-python archive downloaded by torchvision (md5 verified)")


def _sample_arrays(progress: bool) -> tuple[dict[str, np.ndarray], dict]:
    sample = paths.sample_archive()
    if not sample.is_file():
        raise TriqdefError(f"data.source = sample: the committed sample {sample} is missing: restore it with `git checkout -- {sample.name}`")
    log.warning("data.source = sample: %s; results on it are not comparable with the paper", sample)
    return _from_archive(sample, progress, is_sample=True)


def fetch(dest: str | Path | None = None, *, source: str = "mirror", allow_download: bool = True,
          progress: bool = True) -> dict:
    """Make sure ``dest`` (default :func:`triqdef.paths.data_dir`) holds the prepared CIFAR-10 copy of
    ``source`` (the ``data.source`` parameter) and return its ``source.json`` dict.

    - ``mirror`` (the committed results): the JPEG mirror, ``data/cifar10-jpeg.tar.gz`` (tracked by ``data.dvc``,
      stored in ``dvc-store/``; ``$CIFAR10_ARCHIVE`` may point at another copy), sha256-checked;
    - ``official``: ``cifar-10-python.tar.gz``, from ``$CIFAR10_ARCHIVE`` (md5-checked) or downloaded by
      torchvision unless ``allow_download=False`` or ``TRIQDEF_OFFLINE=1``;
    - ``sample``: the class-balanced sample committed with the package (tests, the smoke profile).

    The source is never switched silently: a prepared copy of ``source`` is reused as it is; one of another
    source is replaced (with a warning) only once the requested source has been read in full; an unavailable
    source ends with a :class:`TriqdefError` that says what to do, and nothing is written.
    """
    check_source(source)
    dest = Path(dest).resolve() if dest is not None else paths.data_dir()

    opened = _open_prepared(dest)
    if opened is not None and matches(opened[0], source):
        log.info("using the prepared CIFAR-10 copy at %s (source: %s)", dest, opened[0]["source"])
        return opened[0]

    if source == "mirror":
        arrays, record = _mirror_arrays(progress)
    elif source == "sample":
        arrays, record = _sample_arrays(progress)
    else:
        with tempfile.TemporaryDirectory(prefix="triqdef-cifar10-download-") as tmp:  # nothing beside dest on failure
            arrays, record = _official_arrays_from_anywhere(allow_download, progress, Path(tmp))

    if opened is not None:
        log.warning("replacing the prepared %s copy at %s with the %s one (data.source = %s)",
                    opened[0]["source"], dest, record["source"], source)
    log.info("writing the %s CIFAR-10 copy to %s", record["source"], dest)
    return _write_prepared(dest, arrays, record, replace=opened is not None)


# --------------------------------------------------------------------------- subsets


@dataclass
class Subset:
    images: torch.Tensor  # uint8, N x 3 x 32 x 32
    labels: torch.Tensor  # int64, N
    indices: np.ndarray  # into the prepared split

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Splits:
    train: Subset
    holdout: Subset
    test: Subset
    source: dict
    sizes: dict = field(default_factory=dict)  # {"requested": {...}, "actual": {...}}


def _quotas(size: int, n_classes: int = 10) -> list[int]:
    return [size // n_classes + (1 if c < size % n_classes else 0) for c in range(n_classes)]


def _select_train_holdout(labels: np.ndarray, n_train: int, n_holdout: int, balanced: bool, rng: np.random.Generator):
    """Disjoint (train, holdout) index arrays; the holdout is drawn first, so it does not depend on n_train."""
    if not balanced:
        perm = rng.permutation(len(labels))
        holdout = perm[:n_holdout]
        train = perm[len(holdout): len(holdout) + n_train]
        return train, holdout
    tr, ho = [], []
    for c, (q_tr, q_ho) in enumerate(zip(_quotas(n_train), _quotas(n_holdout))):
        perm = rng.permutation(np.flatnonzero(labels == c))
        ho.append(perm[:q_ho])
        tr.append(perm[len(ho[-1]): len(ho[-1]) + q_tr])
    train, holdout = np.concatenate(tr), np.concatenate(ho)
    return rng.permutation(train), rng.permutation(holdout)


def _select(labels: np.ndarray, n: int, balanced: bool, rng: np.random.Generator) -> np.ndarray:
    if not balanced:
        return rng.permutation(len(labels))[:n]
    parts = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in enumerate(_quotas(n))]
    return rng.permutation(np.concatenate(parts))


def _subset(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> Subset:
    idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(idx, kind="stable")  # read the memory map in order, then restore the seeded order
    chw = np.empty((len(idx), 3, 32, 32), dtype=np.uint8)
    chw[order] = images[idx[order]].transpose(0, 3, 1, 2)
    return Subset(images=torch.from_numpy(chw), labels=torch.from_numpy(np.asarray(labels[idx], dtype=np.int64)), indices=idx)


def load_splits(cfg: DataParams, seed: int, dest: str | Path | None = None) -> Splits:
    """Draw the train / holdout / test subsets from the prepared copy at ``dest``.

    ``cfg`` (the ``data`` params section) holds ``source`` (the copy at ``dest``
    must be of that source), ``train_size``, ``holdout_size`` (may be 0),
    ``test_size`` and ``class_balanced``. Train and holdout are
    disjoint and come from the training split, test from the test split; the
    choice depends only on ``seed``. Sizes larger than the copy holds are
    clamped (with a warning) and recorded in ``sizes``.
    """
    requested = {"train": cfg.train_size, "holdout": cfg.holdout_size, "test": cfg.test_size}
    balanced = cfg.class_balanced
    seed = require_positive_int(seed, "seed", allow_zero=True)

    dest = Path(dest).resolve() if dest is not None else paths.data_dir()
    opened = _open_prepared(dest)
    if opened is None:
        raise TriqdefError(f"no prepared CIFAR-10 copy at {dest}: run `triqdef data fetch` first")
    source, arrays = opened
    if not matches(source, cfg.source):
        raise TriqdefError(
            f"the prepared CIFAR-10 copy at {dest} holds the {source['source']} data but data.source is "
            f"{cfg.source}: run `triqdef data fetch` (same profile) to prepare that source"
        )

    train_labels = np.asarray(arrays["train_labels"])
    test_labels = np.asarray(arrays["test_labels"])
    rng_train, rng_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    tr_idx, ho_idx = _select_train_holdout(train_labels, requested["train"], requested["holdout"], balanced, rng_train)
    te_idx = _select(test_labels, requested["test"], balanced, rng_test)

    actual = {"train": int(len(tr_idx)), "holdout": int(len(ho_idx)), "test": int(len(te_idx))}
    for name in ("holdout", "train", "test"):
        if actual[name] < requested[name]:
            log.warning(
                "%s_size: requested %d but the %s copy at %s only provides %d%s; using %d",
                name, requested[name], source["source"], dest, actual[name],
                " (class-balanced)" if balanced else "", actual[name],
            )
    return Splits(
        train=_subset(arrays["train_images"], train_labels, tr_idx),
        holdout=_subset(arrays["train_images"], train_labels, ho_idx),
        test=_subset(arrays["test_images"], test_labels, te_idx),
        source=source,
        sizes={"requested": requested, "actual": actual},
    )


def to_float(images_uint8: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 images (any shape) -> float32 tensor in [0, 1]."""
    t = torch.as_tensor(images_uint8)
    if t.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {t.dtype}")
    return t.to(torch.float32).div_(255.0)


# --------------------------------------------------------------------------- the committed sample


def make_sample(src: str | Path, dst: str | Path, train_per_class: int = 1000, test_per_class: int = 300, seed: int = 0) -> dict:
    """Write a class-balanced subset of a JPEG-layout CIFAR-10 archive ``src`` to ``dst`` (tar.gz).

    For each split (train, test) and class (CIFAR order), ``rng.choice`` with one
    ``numpy.random.default_rng(seed)`` picks the files; the original JPEG bytes and
    names are copied unchanged (no re-encoding). The output is byte-reproducible
    (fixed member metadata and gzip header). Returns ``{"sha256", "bytes", "counts"}``.
    """
    src, dst = Path(src), Path(dst)
    per_class = {"train": require_positive_int(train_per_class, "train_per_class"),
                 "test": require_positive_int(test_per_class, "test_per_class")}
    members: dict[tuple[str, str], dict[str, bytes]] = {}
    try:
        with tarfile.open(src, mode="r|*") as tf:
            for member in tf:
                m = _JPEG_RE.search(member.name) if member.isfile() else None
                if m and m.group(2) in CLASSES:
                    members.setdefault((m.group(1).lower(), m.group(2)), {})[m.group(3)] = tf.extractfile(member).read()
    except Exception as exc:
        raise TriqdefError(f"archive {src} is corrupt or not CIFAR-10: {_one_line(exc)}") from None
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, bytes]] = []
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        counts[split] = {}
        for cls in CLASSES:
            files = members.get((split, cls), {})
            names = sorted(files)
            if len(names) < per_class[split]:
                raise TriqdefError(f"archive {src} has {len(names)} {split}/{cls} images, fewer than the {per_class[split]} asked for")
            pick = sorted(names[i] for i in rng.choice(len(names), size=per_class[split], replace=False))
            chosen += [(f"{split}/{cls}/{n}", files[n]) for n in pick]
            counts[split][cls] = len(pick)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            dirs_done: set[str] = set()
            for name, data in chosen:
                parts = name.split("/")
                for depth in (1, 2):
                    d = "/".join(parts[:depth])
                    if d not in dirs_done:
                        dirs_done.add(d)
                        info = tarfile.TarInfo(d)
                        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                        tf.addfile(info)
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tf.addfile(info, io.BytesIO(data))
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    sha = _file_hashes(dst)[0]
    return {"sha256": sha, "bytes": dst.stat().st_size, "counts": counts}


def iter_batches(images: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None, device=None) -> Iterator:
    """Float batches in order (no augmentation): ``x`` or ``(x, y)``; ``images`` uint8 or already in [0, 1]."""
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        x = (to_float(x) if x.dtype == torch.uint8 else x.float()).to(device or "cpu")
        yield x if labels is None else (x, labels[i : i + batch_size].to(device or "cpu"))
