"""convjax.train and experiments.train: small models, few steps, real MNIST slices."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax import models
from convjax import train as T
from tests.conftest import mnist_slices

ROOT = pathlib.Path(__file__).resolve().parent.parent
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST at {MNIST_DIR}")
TINY = "plain-k3-w8-h32"


@pytest.fixture(scope="module")
def mnist():
    return mnist_slices(1024, 300)


def _run(mnist, tmp_path=None, **kw):
    config = T.TrainConfig(**{"model": TINY, "epochs": 2, "batch_size": 64, **kw})
    return T.train_and_evaluate(config, train_split=mnist[0], test_split=mnist[1],
                                output_dir=str(tmp_path) if tmp_path else None,
                                progress=None)


@pytest.mark.slow
def test_trains_and_writes_metrics(mnist, tmp_path):
    (tmp_path / "notes.txt").write_text("not ours")
    lines = []
    config = T.TrainConfig(model=TINY, epochs=2, batch_size=64)
    result = T.train_and_evaluate(config, train_split=mnist[0], test_split=mnist[1],
                                  output_dir=str(tmp_path), progress=lines.append)
    first, last = result.epochs
    assert last["train_loss"] < first["train_loss"] < 2.3
    assert last["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert lines[0] == f"{TINY}: one {jax.devices()[0].platform} device: 1 seed(s), batch 64"
    assert len(lines) == 3 and lines[2].startswith(f"{TINY} epoch 2/2: train loss ")
    assert "images/s, ETA" in lines[1]
    assert (tmp_path / "notes.txt").read_text() == "not ours"
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["test_accuracy"] == \
        last["test_accuracy"]
    summary = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test_accuracy", "train_images_per_second", "compile_seconds",
                "train_seconds", "params", "flops_per_image", "devices", "xla_flags",
                "jax_version"):
        assert key in summary, key
    assert summary["test_accuracy"] == [last["test_accuracy"]]
    assert summary["accuracy_unit"] == "fraction"
    model = models.get(TINY)
    v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert summary["params"] == sum(p.size for p in jax.tree.leaves(v["params"]))
    assert summary["flops_per_image"] > 0


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(mnist):
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    a, b = _run(mnist, seed=3), _run(mnist, seed=3)
    c = _run(mnist, seed=4)
    assert [[e[k] for k in keys] for e in a.epochs] == [[e[k] for k in keys] for e in b.epochs]
    assert [e["train_loss"] for e in a.epochs] != [e["train_loss"] for e in c.epochs]
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message(mnist):
    with pytest.raises(FloatingPointError, match=r"^train: the loss is (nan|inf) at epoch 1, "
                                                 r"step \d+ of 16 \(seed 0\); last finite loss: "):
        _run(mnist, learning_rate=1e12, schedule="constant", momentum=0.0)


def test_evaluation_counts_every_image_once(mnist):
    model = models.get(TINY)
    v = model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))
    images, labels = jnp.asarray(mnist[1].images), jnp.asarray(mnist[1].labels)
    loss, acc = T.make_evaluate(model, 128, 300)(v["params"], {}, images, labels)
    logits = model.apply(v, images.astype(jnp.float32) / 255)
    want_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    want_acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
    assert float(acc) == pytest.approx(float(want_acc), abs=1e-7)
    # with_predictions: the class of every image, the last partial batch included.
    loss2, acc2, classes = jax.jit(T.evaluate_fn(model, 128, 300, with_predictions=True))(
        v["params"], {}, images, labels)
    np.testing.assert_array_equal(np.asarray(classes), np.argmax(np.asarray(logits), -1))
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    assert float(acc2) == pytest.approx(float(acc), abs=1e-7)


@pytest.mark.slow
def test_run_returns_the_last_epochs_test_predictions(mnist):
    r = _run(mnist, seeds=2)
    assert r.predictions.shape == (2, 300)
    for i in range(2):
        acc = np.mean(r.predictions[i] == np.asarray(mnist[1].labels))
        assert acc == pytest.approx(r.epochs[-1]["per_seed"][i]["test_accuracy"], abs=1e-6)
        assert len(r.epochs[-1]["per_seed"][i]["train_loss_curve"]) == 16  # 16 steps < 20


@pytest.mark.slow
def test_in_epoch_report_is_called_every_n_steps_without_changing_results(mnist):
    model = models.get(TINY)
    tx = optax.sgd(0.1)
    state = jax.vmap(lambda k: T.create_state(model, tx, k, (28, 28, 1)))(
        jax.random.split(jax.random.key(0), 1))
    keys = jax.random.split(jax.random.key(1), 1)
    images, labels = mnist[0]
    calls = []
    report = lambda step, loss, acc: calls.append((int(step), float(loss), float(acc)))  # noqa
    plain = jax.jit(T.train_epoch_fn(model, tx, 64, 1024))
    reported = jax.jit(T.train_epoch_fn(model, tx, 64, 1024, report=report, report_every=5))
    _, losses, accs = plain(state, keys, images, labels)
    _, losses2, _ = reported(state, keys, images, labels)
    jax.effects_barrier()
    assert [c[0] for c in sorted(calls)] == [5, 10, 15]
    for step, loss, acc in calls:
        assert loss == pytest.approx(float(losses[0, step - 1]), rel=1e-6)
        assert acc == pytest.approx(float(accs[0, step - 1]), abs=1e-7)
    np.testing.assert_allclose(np.asarray(losses2), np.asarray(losses), rtol=1e-6)
    with pytest.raises(ValueError, match="report_every must be >= 1"):
        T.train_epoch_fn(model, tx, 64, 1024, report=report)


def test_in_epoch_progress_lines_are_throttled():
    import time as _time
    from types import SimpleNamespace
    lines = []
    config = T.TrainConfig(model=TINY, epochs=3, batch_size=64)
    clock = {"epoch": 2, "start": _time.perf_counter() - 20.0}  # 20 s into epoch 2
    single = SimpleNamespace(mode="single")
    report, every = T._in_epoch_report(lines.append, single, config, 100, 2, clock)
    assert every == 12  # 100 steps // 8
    report(50, 0.25, 0.9)
    report(62, 0.2, 0.91)   # within 10 s of the last line: dropped
    report(100, 0.1, 0.95)  # the last step: the epoch line follows anyway
    assert len(lines) == 1
    assert lines[0].startswith(f"{TINY} epoch 2/3 step 50/100 (mean of seeds): train loss "
                               f"0.2500 acc 0.9000, ")
    assert "images/s, epoch ETA 20 s" in lines[0]  # 50 steps in 20 s, 50 to go
    clock["start"] = _time.perf_counter()  # a new epoch: nothing in its first 10 s
    report(50, 0.25, 0.9)
    assert len(lines) == 1
    assert T._in_epoch_report(lines.append, SimpleNamespace(mode="data"), config, 100, 2,
                              clock) == (None, 0)
    assert T._in_epoch_report(None, single, config, 100, 2, clock) == (None, 0)


def test_schedules():
    cfg = T.TrainConfig(epochs=2, learning_rate=0.1, warmup_epochs=0.5)
    steps = 100
    warm = T.make_schedule(cfg, steps)
    assert float(warm(0)) == 0.0 and float(warm(50)) == pytest.approx(0.1)
    assert float(warm(200)) == pytest.approx(0.0, abs=1e-7)
    const = T.make_schedule(T.TrainConfig(schedule="constant", learning_rate=0.3), steps)
    assert float(const(0)) == float(const(299)) == pytest.approx(0.3)
    cos = T.make_schedule(T.TrainConfig(schedule="cosine", epochs=1, learning_rate=0.2), steps)
    assert float(cos(0)) == pytest.approx(0.2) and float(cos(50)) == pytest.approx(0.1)
    one = T.make_schedule(T.TrainConfig(schedule="one_cycle", epochs=1, learning_rate=0.2),
                          steps)
    peak = max(float(one(i)) for i in range(100))
    assert peak == pytest.approx(0.2, rel=1e-3) and float(one(0)) < 0.02


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 0.0), ("sgd", 1e-4),
                                                    ("adam", 0.0), ("adamw", 1e-4),
                                                    ("adadelta", 0.0)])
@pytest.mark.slow
def test_every_optimizer_trains(mnist, optimizer, weight_decay):
    lr = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "adadelta": 1.0}[optimizer]
    r = _run(mnist, optimizer=optimizer, weight_decay=weight_decay, learning_rate=lr,
             epochs=1)
    assert np.isfinite(r.epochs[0]["train_loss"]) and r.epochs[0]["train_loss"] < 2.3


@pytest.mark.slow
def test_batch_norm_and_dropout_models_train(mnist):
    r = _run(mnist, model="plain-k3-w8-bn-do0.25-h32", epochs=1)
    assert r.state.batch_stats  # running statistics are carried through the epoch
    mean = jax.tree.leaves(r.state.batch_stats)[0]
    assert not np.allclose(np.asarray(mean), 0.0)
    assert r.epochs[0]["test_accuracy"] > 0.3


def test_bad_configs():
    with pytest.raises(ValueError, match="TrainConfig: optimizer must be one of"):
        T.TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        T.TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="batch_size=4096 is larger than the 1024"):
        T.make_train_epoch(models.get(TINY), optax.sgd(0.1), 4096, 1024)


def test_default_xla_flags(monkeypatch):
    from jax._src import xla_bridge
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert T.default_xla_flags() is None  # the backend is up in this process: too late
    monkeypatch.setattr(xla_bridge, "_backends", {})
    assert T.default_xla_flags(enable=False) is None
    assert T.default_xla_flags() == T.YNN_FLAG and os.environ["XLA_FLAGS"] == T.YNN_FLAG
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    assert T.default_xla_flags() is None
    monkeypatch.setenv("XLA_FLAGS", "--foo")
    monkeypatch.setattr(T, "_jaxlib_version", lambda: (0, 9, 0))
    assert T.default_xla_flags() is None and os.environ["XLA_FLAGS"] == "--foo"


_SNIPPET = """
import json, sys
from convjax import data, train
tr = data.load("mnist", "train", data_dir=sys.argv[1])
te = data.load("mnist", "test", data_dir=sys.argv[1])
tr, te = data.Split(tr.images[:512], tr.labels[:512]), data.Split(te.images[:200], te.labels[:200])
r = train.train_and_evaluate(train.TrainConfig(model="plain-k3-w8-h32", epochs=1,
                             batch_size=64), train_split=tr, test_split=te, progress=None)
print(json.dumps([r.epochs[0]["train_loss"], r.epochs[0]["test_loss"]]))
"""


@pytest.mark.slow
@needs_mnist
def test_the_cpu_xla_flag_does_not_change_results():
    out = {}
    for name, flags in (("stock", ""), ("ynn_off", T.YNN_FLAG)):
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
        p = subprocess.run([sys.executable, "-c", _SNIPPET, str(MNIST_DIR)], env=env,
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        out[name] = json.loads(p.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["stock"], out["ynn_off"], rtol=1e-4)


@pytest.mark.slow
@needs_mnist
def test_the_command_writes_metrics(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    p = subprocess.run([sys.executable, "-m", "experiments.train", f"--model={TINY}",
                        "--epochs=1", "--batch_size=128", "--train_examples=2048",
                        "--compute_dtype=bfloat16",
                        f"--data_dir={MNIST_DIR}", f"--output_dir={tmp_path}"],
                       env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"{TINY}: test accuracy " in p.stdout
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["xla_flags"] == T.YNN_FLAG
    assert summary["config"]["train_examples"] == 2048
    assert summary["config"]["compute_dtype"] == "bfloat16"
    assert "epoch 1/1: train loss" in p.stderr
