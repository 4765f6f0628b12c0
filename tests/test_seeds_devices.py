"""Issue 10: several seeds in one program, devices, many hosts, exact resume."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import parallel
from convjax import train as T
from tests.conftest import mnist_slices

ROOT = pathlib.Path(__file__).resolve().parent.parent
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST at {MNIST_DIR}")
TINY = "plain-k3-w8-h32"
DROP = "plain-k3-w8-bn-do0.25-h32"   # batch norm and dropout: per-seed state and keys
TIMING = ("train_seconds", "images_per_second", "eval_seconds", "eval_images_per_second")


@pytest.fixture(scope="module")
def mnist():
    return mnist_slices(512, 200)


def _run(mnist, tmp_path=None, progress=None, **kw):
    run_kw = {k: kw.pop(k) for k in ("checkpoint_every", "resume", "seed_strategy",
                                     "parallel") if k in kw}
    config = T.TrainConfig(**{"model": TINY, "epochs": 2, "batch_size": 64, **kw})
    return T.train_and_evaluate(config, train_split=mnist[0], test_split=mnist[1],
                                output_dir=str(tmp_path) if tmp_path else None,
                                progress=progress, **run_kw)


def _metrics(epochs):
    return [{k: v for k, v in e.items() if k not in TIMING} for e in epochs]


@pytest.mark.slow
@pytest.mark.parametrize("strategy,exact", [("loop", True), ("vmap", False)])
def test_seeds_at_once_equal_separate_runs(mnist, strategy, exact):
    together = _run(mnist, model=DROP, seed=5, seeds=3, seed_strategy=strategy)
    assert together.summary["seeds"] == [5, 6, 7]
    assert [r["seed"] for r in together.summary["per_seed"]] == [5, 6, 7]
    assert together.summary["test_accuracy"] == [r["test_accuracy"] for r in
                                                 together.summary["per_seed"]]
    losses = []
    for i, seed in enumerate((5, 6, 7)):
        alone = _run(mnist, model=DROP, seed=seed)
        for e_all, e_one in zip(together.epochs, alone.epochs):
            got, want = e_all["per_seed"][i], e_one["per_seed"][0]
            assert got["seed"] == want["seed"] == seed
            for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
                if exact:
                    assert got[k] == want[k], (seed, k)
                else:
                    assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-4), (seed, k)
        for a, b in zip(jax.tree.leaves(together.state), jax.tree.leaves(alone.state)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b[0]),
                                       rtol=0 if exact else 1e-4, atol=0 if exact else 1e-5)
        losses.append(alone.epochs[-1]["train_loss"])
    assert len(set(losses)) == 3  # three different seeds, three different runs


def test_each_seed_keeps_its_own_data_order():
    n, batch = 1000, 100
    keys = [T.seed_keys(s)[1] for s in (0, 1)]
    epoch_keys = jax.vmap(lambda k: jax.random.fold_in(k, 3))(jnp.stack(keys))
    together = jax.vmap(lambda k: T.epoch_order(k, n, batch))(epoch_keys)
    for i, k in enumerate(keys):
        alone = T.epoch_order(jax.random.fold_in(k, 3), n, batch)
        np.testing.assert_array_equal(np.asarray(together[i]), np.asarray(alone))
        assert sorted(np.asarray(alone).ravel().tolist()) == sorted(set(
            np.asarray(alone).ravel().tolist()))  # a permutation: no example twice
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[1]))
    other_epoch = T.epoch_order(jax.random.fold_in(keys[0], 4), n, batch)
    assert not np.array_equal(np.asarray(other_epoch), np.asarray(together[0]))


class _Interrupt(Exception):
    pass


@pytest.mark.slow
@needs_mnist
def test_resume_is_bit_identical(mnist, tmp_path):
    kw = dict(model=DROP, epochs=3, seeds=2, optimizer="adam", learning_rate=1e-3)
    whole = _run(mnist, tmp_path / "whole", checkpoint_every=1, **kw)

    def stop_after_two(line):
        if " epoch 2/3" in line:
            raise _Interrupt  # as a Ctrl-C would, after epoch 2's checkpoint
    cut = tmp_path / "cut"
    with pytest.raises(_Interrupt):
        _run(mnist, cut, progress=stop_after_two, checkpoint_every=1, **kw)
    lines = []
    resumed = _run(mnist, cut, progress=lines.append, checkpoint_every=1, resume=True, **kw)
    assert any("resumed from" in x and "after epoch 2" in x for x in lines)
    assert _metrics(resumed.epochs) == _metrics(whole.epochs)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # incl. optimizer state
    assert type(resumed.state) is T.TrainState
    rows = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # nothing lost or duplicated
    assert json.loads((cut / "metrics.json").read_text())["test_accuracy"] == \
        whole.summary["test_accuracy"]


@pytest.mark.slow
@needs_mnist
def test_checkpoint_safety(mnist, tmp_path):
    (tmp_path / "notes.txt").write_text("not ours")
    _run(mnist, tmp_path, checkpoint_every=1)
    from convjax.checkpoint import Checkpoints
    config = T.TrainConfig(model=TINY, epochs=2, batch_size=64)
    # An interrupted save leaves only orbax's temporary directory: never a checkpoint.
    partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1700000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_text("half written")
    c = Checkpoints(str(tmp_path), config)
    assert c.latest_epoch() == 2
    c.close()
    with pytest.raises(ValueError, match="already holds checkpoints .*resume"):
        _run(mnist, tmp_path, checkpoint_every=1)
    with pytest.raises(ValueError, match=r"another config; differing fields .*'learning_rate'"):
        _run(mnist, tmp_path, resume=True, learning_rate=0.5)
    with pytest.raises(ValueError, match=r"differing fields .*'compute_dtype': \('float32', "
                                         r"'bfloat16'\)"):
        _run(mnist, tmp_path, resume=True, compute_dtype="bfloat16")
    # A checkpoint written before compute_dtype existed was trained in float32: it resumes.
    meta = tmp_path / "checkpoints" / "2" / "meta" / "metadata"
    saved = json.loads(meta.read_text())
    del saved["config"]["compute_dtype"]
    meta.write_text(json.dumps(saved))
    lines = []
    _run(mnist, tmp_path, resume=True, progress=lines.append)
    assert any("resumed from" in x and "after epoch 2" in x for x in lines)
    assert (tmp_path / "notes.txt").read_text() == "not ours"


def test_placement_checks():
    devices = jax.devices()[:1]
    p = parallel.place("auto", 4, 64, 1000, devices)
    assert p.mode == "single" and p.num_devices == 1
    assert f"one {devices[0].platform} device: 4 seed(s), batch 64" == p.describe(4, 64)
    with pytest.raises(ValueError, match="mode must be one of"):
        parallel.place("model", 1, 64, 1000)
    fake = [object()] * 8  # the checks come before any mesh is built
    with pytest.raises(ValueError, match=r"parallel=data: the global batch_size=60 is not "
                                         r"divisible by the 8 devices"):
        parallel.place("data", 1, 60, 1000, fake)
    with pytest.raises(ValueError, match=r"parallel=seeds: seeds=3 is not divisible by the 8"):
        parallel.place("seeds", 3, 64, 1000, fake)
    with pytest.raises(ValueError, match="seeds must be an int >= 1"):
        T.TrainConfig(seeds=0)


def _compare(a, b, rtol=2e-4):
    assert len(a["per_seed"]) == len(b["per_seed"])
    for ea, eb in zip(a["per_seed"], b["per_seed"]):
        for ra, rb in zip(ea, eb):
            assert ra["seed"] == rb["seed"]
            for k in ("train_loss", "test_loss", "test_accuracy"):
                assert ra[k] == pytest.approx(rb[k], rel=rtol, abs=rtol), (k, ra, rb)
    np.testing.assert_allclose(a["kernel_sum"], b["kernel_sum"], rtol=rtol)


@pytest.mark.slow
@needs_mnist
def test_eight_devices_data_and_seeds_parallel_match_one_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    p = subprocess.run([sys.executable, "-m", "tests.parallel_worker", str(MNIST_DIR),
                        "devices"], env=env, capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["count"] == 8
    assert (out["single"]["mode"], out["single"]["devices"]) == ("single", 1)
    assert (out["data"]["mode"], out["data"]["devices"]) == ("data", 8)
    assert (out["seeds"]["mode"], out["seeds"]["devices"]) == ("seeds", 8)
    assert out["auto_1"]["mode"] == "data" and out["auto_8"]["mode"] == "seeds"
    _compare(out["data"], out["single"])
    _compare(out["seeds"], out["single"])
    assert "global batch_size=60 is not divisible by the 8 devices" in out["error"]
    for mode in ("single", "data", "seeds", "seeds_bf16"):
        assert out[mode]["epoch_compilations"] == 1, mode  # 2 epochs, one program
        assert out[mode]["state_dtypes"] == ["float32", "int32"], mode
    bf16 = out["seeds_bf16"]
    assert (bf16["mode"], bf16["devices"]) == ("seeds", 8)
    acc = {k: np.mean([r["test_accuracy"] for r in out[k]["per_seed"][-1]])
           for k in ("seeds", "seeds_bf16")}
    assert abs(acc["seeds_bf16"] - acc["seeds"]) < 0.05, acc
    assert bf16["per_seed"] != out["seeds"]["per_seed"]  # bfloat16 really ran
    # seed-sharded state saved by orbax and restored onto the same sharding: bit-identical
    assert out["seeds_resumed"] == out["seeds"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_mnist
def test_two_processes_match_one(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "tests.parallel_worker", str(MNIST_DIR), "process"]
    port = _free_port()
    procs = [subprocess.Popen(cmd + [str(port), "2", str(i)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr[-3000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    one = subprocess.run(cmd + ["0", "1", "0"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    single = json.loads(one.stdout.strip().splitlines()[-1])
    assert single["processes"] == 1 and single["run"]["devices"] == 1
    for out in outs:
        assert out["processes"] == 2 and out["run"]["devices"] == 2
        assert out["run"]["mode"] == "data"
        _compare(out["run"], single["run"])
