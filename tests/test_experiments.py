"""The experiments (issue 11): statistics against scipy and hand-computed cases, each
script end to end on a slice of MNIST, and resuming after a kill -9."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats as sst

from convjax import experiment as E
from convjax import models as M
from convjax import stats
from convjax import train as T
from tests.conftest import MNIST_DIR, mnist_slices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST at {MNIST_DIR}")

# A --quick run shrunk further for CI: 2 configs x 2 seeds, 256 training and 500 test
# images.
SMALL = ["--quick", "--seeds=2", "--train_examples=256", "--test_examples=500",
         "--batch_size=32", f"--data_dir={MNIST_DIR}"]


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def test_mean_ci_matches_scipy_t_interval():
    v = [0.9912, 0.9921, 0.9905, 0.9917, 0.9909]
    r = stats.mean_ci(v)
    lo, hi = sst.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=sst.sem(v))
    assert r["n"] == 5 and r["mean"] == pytest.approx(np.mean(v), abs=1e-15)
    assert r["std"] == pytest.approx(np.std(v, ddof=1), rel=1e-12)
    assert (r["low"], r["high"]) == pytest.approx((lo, hi), rel=1e-12)
    # By hand: three values 1, 2, 3: mean 2, std 1, t_{0.975, 2} = 4.302653,
    # half-width 4.302653 / sqrt(3) = 2.484138.
    r = stats.mean_ci([1.0, 2.0, 3.0])
    assert r["half_width"] == pytest.approx(2.484138, abs=1e-6)
    one = stats.mean_ci([0.99])
    assert one["mean"] == 0.99 and math.isnan(one["half_width"])


def test_paired_matches_scipy_ttest_rel():
    a = np.array([0.9921, 0.9915, 0.9930, 0.9918, 0.9925])
    b = np.array([0.9910, 0.9912, 0.9915, 0.9913, 0.9916])
    r = stats.paired(a, b)
    ref = sst.ttest_rel(a, b)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert r["mean"] == pytest.approx(np.mean(a - b), abs=1e-15)
    assert r["excludes_zero"] and r["low"] > 0
    # Differences of both signs: the interval straddles 0.
    r = stats.paired([0.990, 0.992, 0.991], [0.991, 0.990, 0.991])
    assert not r["excludes_zero"] and r["low"] < 0 < r["high"]
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired([0.9, 0.8], [0.9])


def test_mcnemar_exact_by_hand_and_against_scipy():
    # 1 image only A gets right, 5 only B: p = 2 * P[Bin(6, 1/2) <= 1] = 2 * 7/64.
    a = np.array([1] * 10 + [1] + [0] * 5 + [0] * 4, bool)
    b = np.array([1] * 10 + [0] + [1] * 5 + [0] * 4, bool)
    r = stats.mcnemar(a, b)
    assert (r["only_a"], r["only_b"], r["n"]) == (1, 5, 20)
    assert r["p"] == pytest.approx(14 / 64, abs=1e-12)
    assert r["p"] == pytest.approx(sst.binomtest(1, 6, 0.5).pvalue, abs=1e-12)
    assert stats.mcnemar(a, a)["p"] == 1.0  # never disagree: nothing to test
    with pytest.raises(ValueError, match="one entry per test image"):
        stats.mcnemar(a, b[:5])


def test_binomial_sd_scale_of_the_issue():
    # 99.2% on 10,000 images: about 0.09 points.
    assert 100 * stats.binomial_sd(0.992, 10_000) == pytest.approx(0.0891, abs=1e-4)


# --------------------------------------------------------------------------------------
# Experiment definitions and refusals
# --------------------------------------------------------------------------------------


def test_experiment_checks_configs_and_pairs():
    with pytest.raises(ValueError, match="not a canonical model id"):
        E.Experiment("x", "x", ("plain-w32.64",))
    with pytest.raises(ValueError, match="not one of its configs"):
        E.Experiment("x", "x", ("plain-k3-w32.64",),
                     (E.Pair("plain-k5-w32.64", "plain-k3-w32.64", "q"),))
    exp = E.Experiment("x", "x", ("plain-k3-w32.64", "plain-k5-w32.64"),
                       (E.Pair("plain-k5-w32.64", "plain-k3-w32.64", "q"),))
    assert exp.select(["plain-k3-w32.64"]).pairs == ()
    with pytest.raises(ValueError, match="are not configs of the x experiment"):
        exp.select(["plain-k7-w32.64"])


def test_scripts_define_the_experiments_of_the_issue():
    from experiments import bottleneck, filter_counts, kernel_sizes
    b = bottleneck.EXPERIMENT.configs
    assert "plain-k3-w32.64" in b and "plain-k3-w32.64-res" in b
    assert {f"bottleneck-r{r}-k3-w32.64" for r in (4, 8, 16, 32)} <= set(b)
    k = kernel_sizes.EXPERIMENT.configs
    assert {f"plain-k{s}-w32.64" for s in (1, 3, 5, 7)} | {"stacked-n2-w32.64",
                                                          "stacked-n3-w32.64"} == set(k)
    f = filter_counts.EXPERIMENT.configs
    assert [M.parse(c).widths[0] for c in f[:6]] == [4, 8, 16, 32, 64, 128]
    for exp in (bottleneck.EXPERIMENT, kernel_sizes.EXPERIMENT, filter_counts.EXPERIMENT):
        assert exp.pairs and len(set(exp.configs)) == len(exp.configs)
        for c in exp.configs:
            assert M.parse(c).id == c


def _fake_row(config_id="plain-k3-w32.64", seed=0, epochs=1, experiment="x"):
    row = {k: None for k in E.ROW_KEYS}
    row.update(config_id=config_id, seed=seed, experiment=experiment,
               train=dict(E._train_settings(T.TrainConfig(epochs=epochs), 0)))
    return row


def test_run_refuses_rows_of_other_settings_or_experiments(tmp_path):
    exp = E.Experiment("x", "x", ("plain-k3-w32.64",))
    E._append_row(str(tmp_path), _fake_row(epochs=2))
    with pytest.raises(ValueError, match=r"other settings .*'epochs': \(2, 1\)"):
        E.run(exp, T.TrainConfig(epochs=1), output_dir=str(tmp_path), progress=None)
    other = tmp_path / "other"
    E._append_row(str(other), _fake_row(experiment="y"))
    with pytest.raises(ValueError, match="rows of the 'y' experiment"):
        E.run(exp, T.TrainConfig(epochs=1), output_dir=str(other), progress=None)
    E._append_row(str(other), _fake_row(experiment="y"))
    with pytest.raises(ValueError, match="appears twice"):
        E.read_results(str(other))


# --------------------------------------------------------------------------------------
# The scripts end to end
# --------------------------------------------------------------------------------------


def _script(name, out, *extra, wait=True):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", f"experiments.{name}", *SMALL, f"--output_dir={out}",
           *extra]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def bottleneck_run(tmp_path_factory):
    """The bottleneck script's --quick run (shrunk), uninterrupted, into a directory
    that already holds a file of someone else's."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST at {MNIST_DIR}")
    out = tmp_path_factory.mktemp("bottleneck")
    (out / "notes.txt").write_text("mine\n")
    p = _script("bottleneck", out)
    return out, p


def _check_outputs(out, configs, seeds, stdout):
    rows = E.read_results(str(out))
    assert [(r["config_id"], r["seed"]) for r in rows] == [(c, s) for c in configs
                                                           for s in seeds]
    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == len(rows)
    labels = np.load(out / "predictions" / "test_labels.npy")
    assert labels.shape == (500,)
    _, test = mnist_slices(0, 500)
    np.testing.assert_array_equal(labels, np.asarray(test.labels))
    x = np.asarray(test.images, np.float32) / 255.0
    for r in rows:
        assert list(r) == list(E.ROW_KEYS)
        assert M.parse(r["config_id"]).id == r["config_id"]
        assert r["config"] == json.loads(json.dumps(dataclasses.asdict(
            M.parse(r["config_id"]))))
        assert r["train"]["train_examples"] == 256 and r["test_examples"] == 500
        assert 0 <= r["test_accuracy"] <= 1 and r["test_loss"] > 0
        assert r["last_epoch"]["test_accuracy"] == r["test_accuracy"]
        assert r["best_epoch"]["test_accuracy"] >= r["test_accuracy"]
        assert r["params"] > 0 and r["flops_per_image"] > 0
        assert r["train_flops_per_image"] > r["flops_per_image"]
        assert r["train_seconds"] > 0 and r["images_per_second"] > 0
        assert r["device_kind"] and r["jax_version"] and r["flax_version"]
        assert len(r["epochs"][0]["train_loss_curve"]) == 8  # 256 / 32 = 8 steps, fewer than CURVE_POINTS
        # The saved params reproduce the saved predictions and the row's accuracy.
        preds = np.load(out / "predictions" / r["config_id"] / f"seed_{r['seed']}.npy")
        assert preds.shape == (500,) and preds.dtype == np.uint8
        assert np.mean(preds == labels) == pytest.approx(r["test_accuracy"], abs=1e-6)
        variables = E.load_variables(str(out), r["config_id"], r["seed"])
        logits = M.get(r["config_id"]).apply(variables, x)
        np.testing.assert_array_equal(np.argmax(np.asarray(logits), -1), preds)
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("config_id,seeds,test_accuracy_mean,test_accuracy_std,"
                                   "test_accuracy_ci95_low,test_accuracy_ci95_high")
    assert [line.split(",")[0] for line in csv_lines[1:]] == list(configs)
    md = (out / "summary.md").read_text()
    for c in configs:
        assert f"| {c} | {len(seeds)} |" in md
    assert "## Comparisons" in md and ("within the seed noise" in md
                                       or "larger than the seed noise" in md)
    assert "McNemar p < 0.05 on" in md
    for png in ("accuracy_vs_flops.png", "accuracy_vs_params.png", "learning_curves.png"):
        data_ = (out / png).read_bytes()
        assert data_[:8] == b"\x89PNG\r\n\x1a\n" and len(data_) > 10_000, png
    assert "## Comparisons" in stdout
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    return rows


@needs_mnist
def test_bottleneck_script_end_to_end(bottleneck_run):
    out, p = bottleneck_run
    from experiments import bottleneck
    _check_outputs(out, bottleneck.DEFAULTS.quick_configs, [0, 1], p.stdout)
    assert (out / "notes.txt").read_text() == "mine\n"  # not ours: left alone
    assert "bottleneck [1/2] plain-k3-w32.64: seeds 0..1" in p.stderr  # progress
    assert "epoch 1/1" in p.stderr and "images/s" in p.stderr and "ETA" in p.stderr


@needs_mnist
@pytest.mark.parametrize("name", ["kernel_sizes", "filter_counts"])
def test_other_scripts_end_to_end(tmp_path, name):
    import importlib
    mod = importlib.import_module(f"experiments.{name}")
    p = _script(name, tmp_path)
    _check_outputs(tmp_path, mod.DEFAULTS.quick_configs, [0, 1], p.stdout)


@needs_mnist
def test_resume_after_kill_gives_the_same_results(bottleneck_run, tmp_path):
    ref_dir, _ = bottleneck_run
    out = tmp_path / "killed"
    proc = _script("bottleneck", out, wait=False)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before its first result"
    os.kill(proc.pid, signal.SIGKILL)  # in the middle: right after the first row
    proc.wait()
    partial = E.read_results(str(out))
    assert 1 <= len(partial) < 4
    assert results.read_text().endswith("\n")
    again = _script("bottleneck", out)
    n_before = len(partial)
    assert f"{n_before} run(s) already in" in again.stderr
    got, want = E.read_results(str(out)), E.read_results(str(ref_dir))
    assert [(r["config_id"], r["seed"]) for r in got] == [(r["config_id"], r["seed"])
                                                          for r in want]
    for g, w in zip(got, want):
        for k in ("test_accuracy", "test_loss", "best_epoch", "params", "flops_per_image"):
            if k == "best_epoch":
                assert {x: g[k][x] for x in ("epoch", "test_accuracy", "test_loss")} == \
                    {x: w[k][x] for x in ("epoch", "test_accuracy", "test_loss")}
            else:
                assert g[k] == w[k], (g["config_id"], g["seed"], k)
    # The same summary: every line but the timing columns and the commit.
    def stable(path):
        lines = (path / "summary.csv").read_text().splitlines()
        return [",".join(line.split(",")[:10]) for line in lines]
    assert stable(out) == stable(ref_dir)
    md = lambda p: [x for x in (p / "summary.md").read_text().splitlines()  # noqa: E731
                    if x.startswith("- ")]
    assert md(out) == md(ref_dir)
    # A third run finds everything done and trains nothing.
    third = _script("bottleneck", out)
    assert "4 run(s) already in" in third.stderr and "0 to train" in third.stderr
    assert json.loads((out / "results.jsonl").read_text().splitlines()[-1])["seed"] == 1
