"""MNIST and its IDX siblings (Fashion-MNIST, KMNIST), from a local directory or TFDS.

``load(name, split)`` returns ``(images, labels)``: ``images`` ``[N, 28, 28, 1]`` (NHWC,
uint8, or float32 in [0, 1]) and integer ``labels`` ``[N]``, as device arrays.

Where the data comes from, in this order (``source="auto"``):

1. the ``data_dir=`` argument (the scripts' ``--data_dir`` flag),
2. the ``CONVJAX_DATA_DIR`` environment variable,
3. TFDS: a dataset already prepared as array_record (read without TensorFlow); else the
   IDX files that an earlier run downloaded to the cache (``CONVJAX_CACHE_DIR``, default
   ``~/.cache/convjax``); else ``tfds.load`` when TensorFlow is installed (Colab); else,
   when the dataset's host is reachable, the official IDX files downloaded by TFDS's
   checksum-verifying ``DownloadManager`` into that cache (no TensorFlow needed).

A directory given by 1 or 2 is final: if its files are missing or corrupt the error says
so and nothing falls back to another directory or to TFDS (that would train on data the
user did not ask for). A directory may hold the four IDX files (``.gz`` or raw) of the
dataset asked for, whatever its name, unless its name is another known dataset's; or it may
hold one sub-directory per dataset (``mnist/``, ``fashion_mnist/`` or ``fashion-mnist/``,
``kmnist/``). Files are validated by content (magic numbers, dimensions against the file
size, label range, image and label counts), not by checksums of the ``.gz`` bytes.

The example order is the IDX files' order for local and downloaded data; TFDS's prepared
data has its own order. ``load(..., return_info=True)`` says which source was used, so
that experiments can record it.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import socket
import struct
import threading
import urllib.parse
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["load", "Split", "DATASETS", "read_idx", "find_dataset_dir", "download_idx",
           "validation_indices"]

ENV_DATA_DIR = "CONVJAX_DATA_DIR"
ENV_CACHE_DIR = "CONVJAX_CACHE_DIR"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What an IDX dataset must look like."""

    name: str
    dir_names: tuple[str, ...]
    num_classes: int = 10
    image_shape: tuple[int, int] = (28, 28)
    where: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", ("mnist",),
                         where="https://storage.googleapis.com/cvdf-datasets/mnist/ (the "
                               "mirror TFDS uses)"),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", ("fashion_mnist", "fashion-mnist", "fashionmnist"),
        where="https://github.com/zalandoresearch/fashion-mnist, or Debian's package "
              "dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)"),
    "kmnist": DatasetSpec("kmnist", ("kmnist",),
                          where="https://github.com/rois-codh/kmnist"),
}

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class Split(NamedTuple):
    """One split of a dataset: ``images`` ``[N, H, W, C]`` and ``labels`` ``[N]``."""

    images: Any
    labels: Any


# --------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a NumPy array, validating its header.

    Checks: the two zero bytes and the type code of the magic number, the number of
    dimensions, and that the data is exactly ``prod(dims) * itemsize`` bytes. Errors are
    ``ValueError``s naming the file and what is wrong.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable {'gzip ' if path.suffix == '.gz' else ''}"
                         f"file ({type(e).__name__}: {e}); the file is truncated or "
                         f"corrupt") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        hint = ("; the file is gzip-compressed: name it *.gz" if raw[:2] == b"\x1f\x8b"
                else "")
        raise ValueError(f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected "
                         f"2051 (0x00000803) for images or 2049 (0x00000801) for "
                         f"labels{hint}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header declares dims {list(dims)} ({expected} bytes of "
                         f"data) but the file has {len(raw) - header} bytes after the "
                         f"header; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _find_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / (base + ".gz"), directory / base):
        if candidate.is_file():
            return candidate
    return None


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


def _known_name(dirname: str) -> str | None:
    n = _norm(dirname)
    for spec in DATASETS.values():
        if n in {_norm(d) for d in spec.dir_names}:
            return spec.name
    return None


def _how_to_provide(spec: DatasetSpec) -> str:
    names = ", ".join(f"{a}.gz" for pair in FILES.values() for a in pair)
    return (f"provide {spec.name} either with data_dir=/--data_dir= (or {ENV_DATA_DIR}) "
            f"pointing at a directory with the four IDX files ({names}; .gz or raw), "
            f"available from {spec.where}, or through TFDS with network access")


def find_dataset_dir(root: str | os.PathLike, name: str, *, origin: str = "data_dir"
                     ) -> Path:
    """The directory under ``root`` that holds ``name``'s IDX files.

    ``root`` itself when it holds IDX files and its name is not another known dataset's;
    else ``root/<dataset dir name>``. ``origin`` names where ``root`` came from, for
    messages.
    """
    spec = _spec(name)
    if str(root) == "":
        raise ValueError(f"data: {origin} is an empty string; give a directory")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data: {origin} {str(root)!r} is not a directory; "
                                f"{_how_to_provide(spec)}")
    all_files = [b for pair in FILES.values() for b in pair]
    for sub in spec.dir_names:
        if (root / sub).is_dir() and any(_find_file(root / sub, b) for b in all_files):
            return root / sub
    if any(_find_file(root, b) for b in all_files):
        other = _known_name(root.name)
        if other is not None and other != spec.name:
            raise ValueError(f"data: {origin} {str(root)!r} is named for {other}, not "
                             f"{spec.name}: refusing to read it as {spec.name}; point "
                             f"{origin} at a {spec.name} directory (or at a parent with a "
                             f"{spec.dir_names[0]}/ sub-directory)")
        return root
    raise FileNotFoundError(
        f"data: no {spec.name} IDX files in {origin} {str(root)!r} (looked for "
        f"{', '.join(all_files)} (.gz or raw) there and in its sub-directories "
        f"{', '.join(d + '/' for d in spec.dir_names)}); {_how_to_provide(spec)}")


def _read_split_dir(directory: Path, spec: DatasetSpec, split: str, origin: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    image_base, label_base = FILES[split]
    paths = {b: _find_file(directory, b) for b in (image_base, label_base)}
    missing = [b for b, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"data: {origin} {str(directory)!r} lacks {spec.name}'s {split} files "
            f"{', '.join(m + '[.gz]' for m in missing)}; {_how_to_provide(spec)}")
    images = read_idx(paths[image_base])
    labels = read_idx(paths[label_base])
    if len(labels) == 0:
        raise ValueError(f"{paths[label_base]}: holds no examples")
    h, w = spec.image_shape
    if images.ndim != 3 or images.shape[1:] != (h, w) or images.dtype != np.uint8:
        raise ValueError(f"{paths[image_base]}: expected uint8 images [N, {h}, {w}] (magic "
                         f"2051), got {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{paths[label_base]}: expected uint8 labels [N] (magic 2049), got "
                         f"{labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise ValueError(f"data: {paths[image_base].name} holds {len(images)} images but "
                         f"{paths[label_base].name} holds {len(labels)} labels (in "
                         f"{str(directory)!r}); the counts must match")
    if len(labels) and int(labels.max()) >= spec.num_classes:
        bad = int(np.argmax(labels >= spec.num_classes))
        raise ValueError(f"{paths[label_base]}: label {int(labels[bad])} at index {bad} is "
                         f"out of range 0..{spec.num_classes - 1} for {spec.name}")
    return images[..., None], labels


# --------------------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------------------


def _cache_dir(name: str) -> Path:
    base = os.environ.get(ENV_CACHE_DIR) or os.path.join(Path.home(), ".cache", "convjax")
    return Path(base).expanduser() / name


def _tfds_prepared(name: str, split: str, tfds_data_dir: str | None):
    """Read a dataset that TFDS already prepared as array_record (no TensorFlow)."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=tfds_data_dir, download=False,
                                  builder_kwargs={"file_format": "array_record"})
    except Exception:  # noqa: BLE001 - not prepared (TFDS raises several types)
        return None
    n = len(source)
    try:
        items = source.__getitems__(list(range(n)))
    except Exception:  # noqa: BLE001 - broken under tfds.testing.mock_data
        items = [source[i] for i in range(n)]
    images = np.stack([np.asarray(it["image"], np.uint8) for it in items]) if n else None
    labels = np.asarray([int(it["label"]) for it in items], np.int64)
    if images is None:
        return None
    if images.ndim == 3:
        images = images[..., None]
    return images, labels


def _tfds_with_tensorflow(name: str, split: str, tfds_data_dir: str | None):
    """Read data TFDS prepared with TensorFlow (tfrecord; Colab); never downloads."""
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(name, split=split, data_dir=tfds_data_dir, batch_size=-1,
                       as_supervised=True, download=False)
    except Exception:  # noqa: BLE001 - not prepared
        return None
    images, labels = tfds.as_numpy(ds)
    return np.asarray(images, np.uint8), np.asarray(labels, np.int64)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """A short TCP connect to ``url``'s host: is a download worth trying?

    Runs in a daemon thread joined with ``timeout``, so a slow name lookup (which the
    socket timeout does not bound) cannot stall the caller either.
    """
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result = []

    def probe():
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result)


def _have_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def download_idx(name: str, cache_dir: str | os.PathLike, *, url_infos=None) -> Path:
    """Download ``name``'s four official IDX .gz files with TFDS, checksums verified.

    Uses ``tfds.download.DownloadManager(..., force_checksums_validation=True)`` (no
    TensorFlow needed); a file whose checksum differs raises TFDS's
    ``NonMatchingChecksumError``. ``url_infos`` defaults to TFDS's registered URLs and
    checksums for ``name``. Returns the directory holding the files.
    """
    import tensorflow_datasets as tfds

    spec = _spec(name)
    if url_infos is None:
        url_infos = tfds.builder(spec.name).url_infos
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manager = tfds.download.DownloadManager(
        download_dir=str(cache_dir / "downloads"), url_infos=url_infos,
        force_checksums_validation=True)
    paths = manager.download({info.filename: url for url, info in url_infos.items()})
    for filename, path in paths.items():
        target = cache_dir / filename
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(Path(path).read_bytes())
        os.replace(tmp, target)  # atomic: a half-written file never looks complete
    return cache_dir


def _load_tfds(spec: DatasetSpec, split: str, tfds_data_dir: str | None):
    """The TFDS chain; returns ``(images, labels, info)``."""
    tried = []
    prepared = _tfds_prepared(spec.name, split, tfds_data_dir)
    if prepared is not None:
        return (*prepared, {"source": "tfds", "format": "array_record",
                            "order": "tfds", "path": tfds_data_dir or "TFDS default"})
    tried.append("no TFDS array_record data prepared")
    cache = _cache_dir(spec.name)
    if cache.is_dir() and all(_find_file(cache, b) for b in FILES[split]):
        images, labels = _read_split_dir(cache, spec, split, f"cache ({ENV_CACHE_DIR})")
        return images, labels, {"source": "tfds-download-cache", "format": "idx",
                                "order": "idx", "path": str(cache)}
    tried.append(f"no downloaded IDX files in the cache {str(cache)!r}")
    if _have_tensorflow():
        loaded = _tfds_with_tensorflow(spec.name, split, tfds_data_dir)
        if loaded is not None:
            return (*loaded, {"source": "tfds", "format": "tfds.load", "order": "tfds",
                              "path": tfds_data_dir or "TFDS default"})
        tried.append("no tfrecord data prepared for tfds.load")
    else:
        tried.append("TensorFlow is not installed (tfds.load needs it)")
    import tensorflow_datasets as tfds

    url_infos = tfds.builder(spec.name).url_infos
    first_url = next(iter(url_infos))
    if _reachable(first_url):
        download_idx(spec.name, cache, url_infos=url_infos)
        images, labels = _read_split_dir(cache, spec, split, "download cache")
        return images, labels, {"source": "tfds-download", "format": "idx", "order": "idx",
                                "path": str(cache)}
    tried.append(f"{urllib.parse.urlparse(first_url).hostname} is not reachable (no "
                 f"network)")
    raise FileNotFoundError(f"data: source TFDS found no {spec.name} (TFDS data dir: "
                            f"{tfds_data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'}"
                            f"): {'; '.join(tried)}; {_how_to_provide(spec)}")


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _spec(name: str) -> DatasetSpec:
    key = _norm(str(name))
    if key not in DATASETS:
        raise ValueError(f"data: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[key]


def validation_indices(labels: np.ndarray, size: int | float, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of ``range(len(labels))`` into ``(train, validation)``.

    ``size``: a count, or a fraction in (0, 1). Each class contributes in proportion to
    its count (largest remainder, so the total is exact); within a class the held-out
    examples are a seeded random choice. Both index arrays are sorted (file order kept).
    """
    n = len(labels)
    if isinstance(size, (bool, np.bool_)):
        raise TypeError(f"data: validation_size must be a count (int) or a fraction (float "
                        f"in (0, 1)), got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < size < 1.0:
            raise ValueError(f"data: validation_size as a fraction (a float) must be in "
                             f"(0, 1), got {size}; pass an int for a count")
        count = int(round(float(size) * n))
    elif isinstance(size, (int, np.integer)):
        count = int(size)
    else:
        raise TypeError(f"data: validation_size must be a count (int) or a fraction (float "
                        f"in (0, 1)), got {size!r}")
    if not 0 < count < n:
        raise ValueError(f"data: validation_size must leave both splits non-empty: got "
                         f"{size} for {n} training examples")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * count / n
    take = np.floor(quotas).astype(int)
    remainder = count - take.sum()
    take[np.argsort(-(quotas - take), kind="stable")[:remainder]] += 1
    rng = np.random.default_rng(seed)
    held = []
    for cls, k in zip(classes, take):
        idx = np.flatnonzero(labels == cls)
        held.append(rng.choice(idx, size=k, replace=False))
    val = np.sort(np.concatenate(held))
    mask = np.ones(n, bool)
    mask[val] = False
    return np.flatnonzero(mask), val


def load(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
         source: str = "auto", validation_size: int | float = 0, validation_seed: int = 0,
         dtype: Any = np.uint8, device: Any = None, return_info: bool = False):
    """Load a split of an IDX dataset onto the device.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"kmnist"``.
      split: ``"train"`` (all 60,000 in file order, or what is left after the validation
        split), ``"validation"`` (needs ``validation_size``) or ``"test"``.
      data_dir: a directory of IDX files (see the module docstring); final when given.
      source: ``"auto"`` (data_dir, then ``CONVJAX_DATA_DIR``, then TFDS), ``"idx"``
        (a directory only) or ``"tfds"`` (TFDS only).
      validation_size: examples held out of the training set (count or fraction), chosen
        by a stratified, seeded draw (:func:`validation_indices`). The test set is never
        touched.
      validation_seed: seed of that draw.
      dtype: ``uint8`` (default, pixels 0..255) or ``float32`` (pixels / 255, in [0, 1]).
        Standardization belongs to the model or the training config.
      device: a ``jax.Device``; default: JAX's default device.
      return_info: also return a dict saying where the data came from.

    Returns:
      ``Split(images, labels)``: ``images`` ``[N, 28, 28, 1]`` (NHWC), ``labels`` int32
      ``[N]``; with ``return_info``, ``(Split, info)``.
    """
    spec = _spec(name)
    if split not in ("train", "validation", "test"):
        raise ValueError(f"data: split must be 'train', 'validation' or 'test', got "
                         f"{split!r}")
    if split == "validation" and not validation_size:
        raise ValueError("data: split='validation' needs validation_size > 0 (examples "
                         "held out of the training set)")
    if source not in ("auto", "idx", "tfds"):
        raise ValueError(f"data: source must be 'auto', 'idx' or 'tfds', got {source!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise ValueError(f"data: dtype must be uint8 or float32, got {dtype}")
    if source == "tfds" and data_dir is not None:
        raise ValueError("data: data_dir= and source='tfds' conflict: a data_dir is final "
                         "(read only from it); drop one of them")
    file_split = "test" if split == "test" else "train"
    env_dir = os.environ.get(ENV_DATA_DIR)
    if source in ("auto", "idx") and (data_dir is not None or env_dir):
        origin = "data_dir" if data_dir is not None else ENV_DATA_DIR
        root = data_dir if data_dir is not None else env_dir
        directory = find_dataset_dir(root, spec.name, origin=origin)
        images, labels = _read_split_dir(directory, spec, file_split, origin)
        info = {"source": origin, "format": "idx", "order": "idx", "path": str(directory),
                "files": [str(_find_file(directory, b)) for b in FILES[file_split]]}
    elif source == "idx":
        raise FileNotFoundError(f"data: source='idx' needs data_dir= or {ENV_DATA_DIR}; "
                                f"{_how_to_provide(spec)}")
    else:
        images, labels, info = _load_tfds(spec, file_split, None)
    if split != "test" and validation_size:
        train_idx, val_idx = validation_indices(labels, validation_size, validation_seed)
        idx = val_idx if split == "validation" else train_idx
        images, labels = images[idx], labels[idx]
        info = dict(info, validation_size=int(len(val_idx)),
                    validation_seed=int(validation_seed), validation="stratified")
    if dtype == np.float32:
        images = images.astype(np.float32) / np.float32(255.0)
    info = dict(info, name=spec.name, split=split, num_examples=int(len(labels)))
    out = Split(jax.device_put(np.ascontiguousarray(images), device),
                jax.device_put(labels.astype(np.int32), device))
    return (out, info) if return_info else out
