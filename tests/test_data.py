"""convjax.data: IDX directories, TFDS offline, precedence, validation, splits."""

import functools
import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from convjax import data

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None,
              truncate: int = 0) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when the name ends in .gz."""
    array = np.asarray(array, np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    if truncate:
        raw = raw[:-truncate]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def make_dataset(directory: Path, n_train=30, n_test=10, gz=True, seed=0) -> Path:
    """Four small IDX files: images [N, 28, 28], labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        image_base, label_base = data.FILES[split]
        write_idx(directory / (image_base + ext), rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / (label_base + ext), np.arange(n) % 10)
    return directory


@pytest.fixture
def no_tfds(monkeypatch):
    """Any use of TFDS or the environment variable fails: proves there is no fallback."""
    def boom(*args, **kwargs):
        raise AssertionError("must not fall back to TFDS")

    monkeypatch.setattr(data, "_load_tfds", boom)
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)


def test_reads_a_flat_directory_gz_or_raw(tmp_path, no_tfds):
    for gz in (True, False):
        d = make_dataset(tmp_path / f"gz{gz}", gz=gz)
        train = data.load("mnist", "train", data_dir=d)
        test = data.load("mnist", "test", data_dir=d)
        assert train.images.shape == (30, 28, 28, 1) and train.images.dtype == np.uint8
        assert test.images.shape == (10, 28, 28, 1)
        assert train.labels.dtype == np.int32
        np.testing.assert_array_equal(np.asarray(train.labels), np.arange(30) % 10)
        raw = data.read_idx(next(d.glob("train-images*")))
        np.testing.assert_array_equal(np.asarray(train.images)[..., 0], raw)


def test_float32_is_scaled_to_unit_interval(tmp_path, no_tfds):
    d = make_dataset(tmp_path / "m")
    u8 = np.asarray(data.load("mnist", "train", data_dir=d).images)
    f32 = data.load("mnist", "train", data_dir=d, dtype="float32").images
    assert f32.dtype == np.float32
    np.testing.assert_allclose(np.asarray(f32), u8 / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="dtype must be uint8 or float32"):
        data.load("mnist", "train", data_dir=d, dtype="float16")


def test_parent_directory_with_one_sub_directory_per_dataset(tmp_path, no_tfds):
    make_dataset(tmp_path / "mnist", n_train=20, seed=1)
    make_dataset(tmp_path / "fashion-mnist", n_train=40, seed=2)
    make_dataset(tmp_path / "kmnist", n_train=50, seed=3)
    assert len(data.load("mnist", "train", data_dir=tmp_path).labels) == 20
    assert len(data.load("fashion_mnist", "train", data_dir=tmp_path).labels) == 40
    assert len(data.load("kmnist", "train", data_dir=tmp_path).labels) == 50


def test_a_folder_named_for_another_dataset_is_refused(tmp_path, no_tfds, monkeypatch):
    d = make_dataset(tmp_path / "fashion-mnist")
    with pytest.raises(ValueError, match="is named for fashion_mnist, not mnist: refusing"):
        data.load("mnist", "train", data_dir=d)
    monkeypatch.chdir(d)  # "." resolves to the folder's real name
    with pytest.raises(ValueError, match="is named for fashion_mnist, not mnist: refusing"):
        data.load("mnist", "train", data_dir=".")
    assert len(data.load("fashion_mnist", "train", data_dir=d).labels) == 30
    # Any other name is read as the dataset asked for.
    assert len(data.load("kmnist", "train", data_dir=make_dataset(tmp_path / "my_data"))
               .labels) == 30


def test_missing_files_name_source_directory_files_and_remedy(tmp_path, no_tfds):
    d = make_dataset(tmp_path / "m")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    assert len(data.load("mnist", "train", data_dir=d).labels) == 30  # train is complete
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist", "test", data_dir=d)
    msg = str(info.value)
    assert f"data_dir {str(d)!r} lacks mnist's test files t10k-labels-idx1-ubyte[.gz]" in msg
    assert "through TFDS with network access" in msg and "--data_dir" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no mnist IDX files in data_dir"):
        data.load("mnist", "train", data_dir=empty)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        data.load("mnist", "train", data_dir=tmp_path / "nope")


@pytest.mark.parametrize("case,pattern", [
    ("truncated", "header declares dims \\[30, 28, 28\\] .* the file is truncated or corrupt"),
    ("bad_gzip", "not a readable gzip file"),
    ("wrong_magic", "bad IDX magic number 1234"),
    ("label_range", "label 12 at index 3 is out of range 0..9 for mnist"),
    ("count_mismatch", "holds 30 images but train-labels-idx1-ubyte.gz holds 29 labels"),
    ("labels_as_images", "expected uint8 images \\[N, 28, 28\\] \\(magic 2051\\)"),
    ("gzip_without_gz_name", "the file is gzip-compressed: name it \\*.gz"),
    ("empty", "holds no examples"),
])
def test_corrupt_files_are_named_with_what_is_wrong(tmp_path, no_tfds, case, pattern):
    d = make_dataset(tmp_path / "m")
    images = d / "train-images-idx3-ubyte.gz"
    labels = d / "train-labels-idx1-ubyte.gz"
    rng = np.random.default_rng(0)
    if case == "truncated":
        write_idx(images, rng.integers(0, 256, (30, 28, 28)), truncate=100)
    elif case == "bad_gzip":
        images.write_bytes(images.read_bytes()[:200])
    elif case == "wrong_magic":
        write_idx(labels, np.arange(30) % 10, magic=1234)
    elif case == "label_range":
        lab = np.arange(30) % 10
        lab[3] = 12
        write_idx(labels, lab)
    elif case == "count_mismatch":
        write_idx(labels, np.arange(29) % 10)
    elif case == "labels_as_images":
        write_idx(images, np.arange(30) % 10)
    elif case == "gzip_without_gz_name":
        for f in list(d.iterdir()):
            f.rename(f.with_suffix(""))  # gzip bytes under the raw name
    elif case == "empty":
        write_idx(images, np.zeros((0, 28, 28)))
        write_idx(labels, np.zeros((0,)))
    with pytest.raises(ValueError, match=pattern):
        data.load("mnist", "train", data_dir=d)


def test_precedence_data_dir_then_env_then_tfds(tmp_path, monkeypatch):
    a = make_dataset(tmp_path / "a", n_train=11)
    b = make_dataset(tmp_path / "b", n_train=22)
    calls = []
    monkeypatch.setattr(data, "_load_tfds", lambda spec, split, d: calls.append(spec.name) or (
        np.zeros((3, 28, 28, 1), np.uint8), np.zeros(3, np.int64), {"source": "tfds"}))
    monkeypatch.setenv(data.ENV_DATA_DIR, str(b))
    assert len(data.load("mnist", "train", data_dir=a).labels) == 11
    split, info = data.load("mnist", "train", return_info=True)
    assert len(split.labels) == 22 and info["source"] == data.ENV_DATA_DIR
    monkeypatch.delenv(data.ENV_DATA_DIR)
    split, info = data.load("mnist", "train", return_info=True)
    assert len(split.labels) == 3 and info["source"] == "tfds" and calls == ["mnist"]
    # source="tfds" skips the environment's directory; with an explicit one it conflicts.
    monkeypatch.setenv(data.ENV_DATA_DIR, str(b))
    assert len(data.load("mnist", "train", source="tfds").labels) == 3
    with pytest.raises(ValueError, match="data_dir= and source='tfds' conflict"):
        data.load("mnist", "train", data_dir=a, source="tfds")
    monkeypatch.delenv(data.ENV_DATA_DIR)
    with pytest.raises(FileNotFoundError, match="source='idx' needs data_dir= or "
                                                "CONVJAX_DATA_DIR"):
        data.load("mnist", "train", source="idx")


def test_an_explicit_bad_directory_never_falls_back(tmp_path, monkeypatch, no_tfds):
    good = make_dataset(tmp_path / "good")
    monkeypatch.setenv(data.ENV_DATA_DIR, str(good))
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(FileNotFoundError, match="data_dir"):
        data.load("mnist", "train", data_dir=bad)  # not the env dir, not TFDS
    monkeypatch.setenv(data.ENV_DATA_DIR, str(bad))
    with pytest.raises(FileNotFoundError, match="CONVJAX_DATA_DIR"):
        data.load("mnist", "train")  # the env dir is explicit too: no TFDS


def test_validation_split_is_stratified_disjoint_and_seeded(tmp_path, no_tfds):
    d = make_dataset(tmp_path / "m", n_train=200)
    full = np.asarray(data.load("mnist", "train", data_dir=d).images)
    tr, info = data.load("mnist", "train", data_dir=d, validation_size=50, return_info=True)
    va = data.load("mnist", "validation", data_dir=d, validation_size=50)
    assert len(tr.labels) == 150 and len(va.labels) == 50
    assert info["validation"] == "stratified" and info["validation_size"] == 50
    np.testing.assert_array_equal(np.bincount(np.asarray(va.labels)), [5] * 10)
    t_idx, v_idx = data.validation_indices(np.arange(200) % 10, 50, 0)
    assert not set(t_idx) & set(v_idx) and len(set(t_idx) | set(v_idx)) == 200
    np.testing.assert_array_equal(np.asarray(va.images), full[v_idx])
    np.testing.assert_array_equal(np.asarray(tr.images), full[t_idx])
    # Same seed, same split; another seed, another split; fractions work.
    np.testing.assert_array_equal(v_idx, data.validation_indices(np.arange(200) % 10, 50, 0)[1])
    assert not np.array_equal(v_idx, data.validation_indices(np.arange(200) % 10, 50, 1)[1])
    assert len(data.validation_indices(np.arange(200) % 10, 0.1, 0)[1]) == 20
    # The test split is never touched.
    assert len(data.load("mnist", "test", data_dir=d, validation_size=50).labels) == 10
    with pytest.raises(ValueError, match="split='validation' needs validation_size > 0"):
        data.load("mnist", "validation", data_dir=d)
    with pytest.raises(ValueError, match="must leave both splits non-empty"):
        data.load("mnist", "train", data_dir=d, validation_size=200)
    assert len(data.validation_indices(np.arange(200) % 10, np.float32(0.1), 0)[1]) == 20
    with pytest.raises(ValueError, match="as a fraction \\(a float\\) must be in \\(0, 1\\)"):
        data.validation_indices(np.arange(200) % 10, 50.0, 0)
    with pytest.raises(TypeError, match="must be a count \\(int\\) or a fraction"):
        data.validation_indices(np.arange(200) % 10, True, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; known: "):
        data.load("cifar10", "train")
    with pytest.raises(ValueError, match="split must be 'train', 'validation' or 'test'"):
        data.load("mnist", "valid")
    with pytest.raises(ValueError, match="source must be 'auto', 'idx' or 'tfds'"):
        data.load("mnist", "train", source="web")


# ---- TFDS, offline ------------------------------------------------------------------


def test_tfds_prepared_array_record_without_tensorflow(tmp_path):
    from tests import tfds_tiny

    builder = tfds_tiny.TinyMnist(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    images, labels = data._tfds_prepared("tiny_mnist", "train", str(tmp_path))
    assert images.shape == (tfds_tiny.NUM_TRAIN, 28, 28, 1) and images.dtype == np.uint8
    # TFDS stores its own order; every example is there, each image matching its label.
    want = {tfds_tiny.example("train", i)[0][0, 0, 0]: tfds_tiny.example("train", i)[1]
            for i in range(tfds_tiny.NUM_TRAIN)}
    assert {int(im[0, 0, 0]): int(lab) for im, lab in zip(images, labels)} == want
    assert data._tfds_prepared("tiny_mnist", "test", str(tmp_path))[0].shape[0] == 5


def test_tfds_mock_data_through_load(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "cache"))  # no cached files
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=3.0: False)  # no network
    with tfds.testing.mock_data(num_examples=7):
        split, info = data.load("mnist", "test", return_info=True)
    assert split.images.shape == (7, 28, 28, 1) and info["source"] == "tfds"
    assert info["order"] == "tfds" and info["format"] == "array_record"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www (stops by itself at teardown)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _url_infos(www, base):
    from tensorflow_datasets.core.download import checksums

    infos = {}
    for f in sorted(www.iterdir()):
        body = f.read_bytes()
        infos[f"{base}/{f.name}"] = checksums.UrlInfo(
            size=len(body), checksum=hashlib.sha256(body).hexdigest(), filename=f.name)
    return infos


def test_tfds_download_manager_fetches_verifies_and_caches(tmp_path, local_server,
                                                          monkeypatch):
    www, base = local_server
    make_dataset(www, n_train=15, n_test=6)
    infos = _url_infos(www, base)
    cache = tmp_path / "cache"
    data.download_idx("mnist", cache / "mnist", url_infos=infos)
    assert sorted(p.name for p in (cache / "mnist").glob("*.gz")) == sorted(
        f.name for f in www.iterdir())
    # load() then finds the cache without any network (reachability would say no).
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(cache))
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=3.0: False)
    split, info = data.load("mnist", "train", return_info=True)
    assert len(split.labels) == 15 and info["source"] == "tfds-download-cache"


def test_load_downloads_through_tfds_when_reachable(tmp_path, local_server, monkeypatch):
    import tensorflow_datasets as tfds

    www, base = local_server
    make_dataset(www, n_train=12, n_test=4)
    infos = _url_infos(www, base)

    class FakeBuilder:
        url_infos = infos

    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_tfds_prepared", lambda *a: None)
    monkeypatch.setattr(data, "_have_tensorflow", lambda: False)
    monkeypatch.setattr(tfds, "builder", lambda name, **kw: FakeBuilder())
    split, info = data.load("mnist", "test", return_info=True)
    assert len(split.labels) == 4 and info["source"] == "tfds-download"
    # The second run reads the cache, with the server gone.
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=3.0: False)
    split, info = data.load("mnist", "train", return_info=True)
    assert len(split.labels) == 12 and info["source"] == "tfds-download-cache"


def test_tensorflow_branch_never_downloads(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    calls = []
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_tfds_prepared", lambda *a: None)
    monkeypatch.setattr(data, "_have_tensorflow", lambda: True)
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=3.0: False)

    def fake_load(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("not prepared")

    monkeypatch.setattr(tfds, "load", fake_load)
    with pytest.raises(FileNotFoundError, match="no tfrecord data prepared for tfds.load"):
        data.load("mnist", "train")
    assert calls and calls[0]["download"] is False


def test_reachability_probe_is_bounded_in_time(monkeypatch):
    import socket
    import time

    def hanging_resolver(*args, **kwargs):
        time.sleep(3)
        raise OSError("name resolution timed out")

    monkeypatch.setattr(socket, "create_connection", hanging_resolver)
    t0 = time.perf_counter()
    assert data._reachable("http://example.invalid/x", timeout=0.2) is False
    assert time.perf_counter() - t0 < 2.0


def test_tfds_download_rejects_a_wrong_checksum(tmp_path, local_server):
    from tensorflow_datasets.core.download import checksums
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    www, base = local_server
    make_dataset(www)
    infos = _url_infos(www, base)
    url = next(iter(infos))
    infos[url] = checksums.UrlInfo(size=infos[url].size, checksum="0" * 64,
                                   filename=infos[url].filename)
    with pytest.raises(NonMatchingChecksumError):
        data.download_idx("mnist", tmp_path / "cache", url_infos=infos)


def test_tfds_offline_with_nothing_prepared_says_what_it_tried(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "empty_cache"))
    monkeypatch.setattr(data, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(data, "_have_tensorflow", lambda: False)
    monkeypatch.setattr(data, "_tfds_prepared", lambda *a: None)
    with pytest.raises(FileNotFoundError) as info:
        data.load("mnist", "train")
    msg = str(info.value)
    assert "source TFDS found no mnist" in msg
    assert "no TFDS array_record data prepared" in msg and "is not reachable" in msg
    assert "TensorFlow is not installed" in msg and "--data_dir" in msg


# ---- the real datasets, when present ----------------------------------------------------


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST not found at {MNIST_DIR}")
def test_real_mnist_figures():
    train = data.load("mnist", "train", data_dir=MNIST_DIR, dtype="float32")
    test = data.load("mnist", "test", data_dir=MNIST_DIR)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    x = np.asarray(train.images, np.float64)
    assert abs(x.mean() - 0.1307) < 5e-5 and abs(x.std() - 0.3081) < 5e-5
    assert np.asarray(train.labels[:6]).tolist() == [5, 0, 4, 1, 9, 2]
    assert np.bincount(np.asarray(test.labels)).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason=f"Fashion-MNIST not found at {FASHION_DIR} (Debian package "
                           f"dataset-fashion-mnist)")
def test_real_fashion_mnist_figures():
    train = data.load("fashion_mnist", "train", data_dir=FASHION_DIR, dtype="float32")
    test = data.load("fashion_mnist", "test", data_dir=FASHION_DIR)
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    x = np.asarray(train.images, np.float64)
    assert abs(x.mean() - 0.2860) < 5e-4 and abs(x.std() - 0.3530) < 5e-4
    assert np.asarray(train.labels[:6]).tolist() == [9, 0, 0, 3, 0, 2]
    # A folder of Fashion-MNIST is never read as MNIST.
    with pytest.raises(ValueError, match="named for fashion_mnist, not mnist"):
        data.load("mnist", "train", data_dir=FASHION_DIR)
