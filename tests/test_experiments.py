"""The experiments: definitions, summaries and verdicts from saved predictions, each
script end to end on a slice of MNIST, and resuming after a kill -9 (the statistics
themselves: tests/test_stats.py)."""

import dataclasses
import importlib
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
# --seed_strategy=loop: a seed trained alone then equals the same seed trained in a group
# exactly on any backend (vmap, the default on GPU/TPU, agrees to float round-off).
SMALL = ["--quick", "--seeds=2", "--train_examples=256", "--test_examples=500",
         "--batch_size=32", "--seed_strategy=loop", f"--data_dir={MNIST_DIR}"]


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
    # Importable beside the other scripts that define some of the same flags.
    importlib.import_module("experiments.demo")  # defines --data_dir first
    from experiments import bottleneck, filter_counts, kernel_sizes
    from experiments import _sweep
    assert _sweep._specs("bottleneck", bottleneck.DEFAULTS)["batch_size"][1] == 64
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
    # Rows written before compute_dtype existed were trained in float32.
    legacy = _fake_row()
    del legacy["train"]["compute_dtype"]
    E._append_row(str(tmp_path / "legacy"), legacy)
    assert E.read_results(str(tmp_path / "legacy"))[0]["train"] == _fake_row()["train"]
    with pytest.raises(ValueError, match=r"'compute_dtype': \('float32', 'bfloat16'\)"):
        E.run(exp, T.TrainConfig(epochs=1, compute_dtype="bfloat16"),
              output_dir=str(tmp_path / "legacy"), progress=None)


def _row(config_id, seed, acc, experiment="x"):
    row = _fake_row(config_id, seed, experiment=experiment)
    row.update(test_accuracy=acc, test_loss=0.1, params=10, flops_per_image=100,
               train_flops_per_image=300, train_seconds=1.0, images_per_second=50.0,
               test_examples=10_000, device_kind="cpu", jax_version="x", flax_version="y",
               git_commit=None, epochs=[{"epoch": 1, "test_accuracy": acc,
                                         "train_loss_curve": [1.0, 0.5]}])
    return row


A, B, C = "plain-k3-w32.64", "plain-k5-w32.64", "plain-k7-w32.64"
EXP = E.Experiment("x", "x", (A, B, C), (E.Pair(B, A, "5 vs 3"), E.Pair(C, A, "7 vs 3")))


def _predicted(tmp_path, config_id, seed, labels, wrong):
    """Save predictions of ``config_id`` that get exactly the images ``wrong`` wrong."""
    pred = labels.copy()
    pred[wrong] = (pred[wrong] + 1) % 10
    E._save_predictions(str(tmp_path), config_id, seed, pred)
    return _row(config_id, seed, float(np.mean(pred == labels)))


def test_summary_verdicts_from_saved_predictions(tmp_path):
    labels = np.arange(10_000) % 10
    E._save_labels(str(tmp_path), labels)
    rng = np.random.default_rng(0)
    hard = rng.permutation(10_000)[:400]  # the images A gets wrong on some seed
    rows = []
    for s in range(3):
        wrong_a = rng.choice(hard, 200, replace=False)
        rows.append(_predicted(tmp_path, A, s, labels, wrong_a))
        rows.append(_predicted(tmp_path, B, s, labels, wrong_a[:100]))  # 1 point better
    out = E.summarize(EXP, rows, str(tmp_path))
    p5, p7 = out["pairs"]
    c = p5["comparison"]
    assert c.difference == pytest.approx(1.0) and c.seeds == 3 and c.images == 10_000
    assert p5["verdict"] == "a better" and p5["p_holm"] == pytest.approx(c.p_value)
    assert "**plain-k5-w32.64 is more accurate**" in p5["sentence"]
    assert p7["verdict"] == "not compared" and "share no finished seed" in p7["sentence"]
    assert "Not trained yet: plain-k7-w32.64." in out["markdown"]
    assert "Holm's method over the 1 pair compared here" in out["markdown"]
    assert out["detectable"][0] > 0
    # Per-config interval over seeds and images, beside the seed mean and std.
    iv = out["configs"][0]["interval"]
    assert iv.mean == pytest.approx(98.0) and iv.low < 98.0 < iv.high
    assert f"| {A} | 3 | 98.00 ± 0.00 | {iv.low:.2f} to {iv.high:.2f} |" in out["markdown"]
    mc = p5["mcnemar"]
    assert [(m["seed"], m["only_a"], m["only_b"]) for m in mc] == [(s, 100, 0)
                                                                  for s in range(3)]
    lines = (tmp_path / "pairs.csv").read_text().splitlines()
    assert lines[0] == ",".join(E.PAIR_COLUMNS)
    assert lines[0].startswith("a,b,question,seeds,difference_pts,ci_low_pts,ci_high_pts,"
                               "p,p_holm,verdict,margin_pts")
    first = lines[1].split(",")
    assert first[:4] == [B, A, "5 vs 3", "3"] and first[9] == "a better"
    assert float(first[4]) == pytest.approx(1.0) and first[10] == "0.2"
    assert lines[2] == f"{C},{A},7 vs 3,0,,,,,,not compared,0.2" + "," * 7
    for f in ("summary.md", "summary.csv", "accuracy_vs_flops.png", "learning_curves.png"):
        assert (tmp_path / f).exists(), f


def test_summary_equivalence_inconclusive_holm_and_missing_cases(tmp_path):
    labels = np.arange(10_000) % 10
    E._save_labels(str(tmp_path), labels)
    rng = np.random.default_rng(1)
    rows = []
    for s in range(5):
        wrong_a = rng.choice(10_000, 150, replace=False)
        rows.append(_predicted(tmp_path, A, s, labels, wrong_a))
        # B: the same number of mistakes, 20 of them on other images: equivalent.
        rows.append(_predicted(tmp_path, B, s, labels, np.concatenate(
            [wrong_a[:130], rng.choice(np.setdiff1d(np.arange(10_000), wrong_a), 20,
                                       replace=False)])))
        # C: about as many mistakes on average, but 90 to 210 of them from seed to seed:
        # neither a difference nor equivalence can be shown.
        rows.append(_predicted(tmp_path, C, s, labels, rng.choice(
            10_000, (100, 210, 140, 90, 205)[s], replace=False)))
    out = E.summarize(EXP, rows, str(tmp_path))
    p5, p7 = out["pairs"]
    assert p5["verdict"] == "equivalent", p5["sentence"]
    assert "**equivalent** within ±0.2 points" in p5["sentence"]
    assert p7["verdict"] == "inconclusive", p7["sentence"]
    assert "neither a difference nor equivalence within ±0.2 points" in p7["sentence"]
    # Holm over the two pairs: the smaller p doubled, the larger kept at least as large.
    raw = [p5["comparison"].p_value, p7["comparison"].p_value]
    assert [p5["p_holm"], p7["p_holm"]] == pytest.approx(stats.holm(raw))
    # Without the predictions of a seed: not compared, said plainly.
    os.remove(E._predictions_path(str(tmp_path), C, 3))
    p7 = E.summarize(EXP, rows, str(tmp_path))["pairs"][1]
    assert p7["verdict"] == "not compared" and "predictions of a seed are missing" in \
        p7["sentence"]
    assert "no output_dir holding the per-image predictions" in \
        E.summarize(EXP, rows)["pairs"][0]["sentence"]
    # One seed: cannot measure the seed noise.
    one = E.summarize(EXP, [r for r in rows if r["seed"] == 0], str(tmp_path))
    assert "one seed cannot measure the seed noise" in one["pairs"][0]["sentence"]
    assert one["configs"][0]["interval"] is None
    assert "| plain-k3-w32.64 | 1 | 98.50 | - |" in one["markdown"]
    # Without output_dir there are no per-image outcomes to judge from.
    bare = E.summarize(EXP, rows)
    assert [p["verdict"] for p in bare["pairs"]] == ["not compared"] * 2
    # No pairs, other experiments' configs ignored.
    solo = E.Experiment("x", "x", (A,))
    assert E.summarize(solo, rows)["pairs"] == [] and "## Comparisons" not in \
        E.summarize(solo, rows)["markdown"]


def test_holm_turns_a_nominal_difference_inconclusive(tmp_path):
    """B vs A alone would be "more accurate" (p < 0.05); C agrees with A everywhere (no
    noise estimate, counted as p = 1), so Holm doubles B's p past 0.05."""
    labels = np.arange(10_000) % 10
    E._save_labels(str(tmp_path), labels)
    wrong_a = np.arange(200)
    # B: the same outcome on both seeds; 55 of A's mistakes fixed, 35 new ones.
    wrong_b = np.concatenate([wrong_a[55:], np.arange(1000, 1035)])
    rows = []
    for s in range(2):
        rows += [_predicted(tmp_path, A, s, labels, wrong_a),
                 _predicted(tmp_path, B, s, labels, wrong_b),
                 _predicted(tmp_path, C, s, labels, wrong_a)]
    p5, p7 = E.summarize(EXP, rows, str(tmp_path))["pairs"]
    c = p5["comparison"]
    assert c.difference == pytest.approx(0.2) and c.low > 0 and c.p_value < 0.05
    assert c.verdict == "a better"  # alone, at its own p
    assert p5["p_holm"] == pytest.approx(2 * c.p_value) and p5["p_holm"] > 0.05
    assert p5["verdict"] == "inconclusive" and "unadjusted 95% CI +" in p5["sentence"]
    assert math.isnan(p7["comparison"].p_value) and p7["p_holm"] == 1.0
    assert "the models agree on every seed and image" in p7["sentence"]
    # A constant nonzero difference (C wrong everywhere, A right everywhere) is not
    # "agreement".
    rows = [_predicted(tmp_path, C, s, labels, np.arange(10_000)) for s in range(2)]
    rows += [_predicted(tmp_path, A, s, labels, np.array([], int)) for s in range(2)]
    p7 = E.summarize(EXP, rows, str(tmp_path))["pairs"][1]
    assert p7["comparison"].difference == -100.0
    assert "the same difference on every seed and image" in p7["sentence"]


def test_experiment_margin_is_checked():
    with pytest.raises(ValueError, match="margin must be a number of accuracy points"):
        E.Experiment("x", "x", (A,), margin=0)
    with pytest.raises(ValueError, match="margin_reason must say why"):
        E.Experiment("x", "x", (A,), margin=0.5, margin_reason=" ")


@pytest.mark.slow
def test_resume_mid_group_trains_the_missing_seed_alone_with_the_same_result(tmp_path,
                                                                             monkeypatch):
    train, test = mnist_slices(256, 200)
    exp = E.Experiment("x", "x", ("plain-k3-w4.8-h16",))
    cfg = T.TrainConfig(model="plain-k3-w4.8-h16", epochs=1, batch_size=32, seeds=2,
                        optimizer="adam", learning_rate=0.003)
    kw = dict(train_split=train, test_split=test, progress=None,
              seed_strategy="loop")  # exact on any backend
    E.run(exp, cfg, output_dir=str(tmp_path / "whole"), **kw)
    append = E._append_row
    calls = []

    def interrupted(output_dir, row):  # the process dies right after the first row
        if calls:
            raise KeyboardInterrupt
        calls.append(row)
        append(output_dir, row)
    monkeypatch.setattr(E, "_append_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        E.run(exp, cfg, output_dir=str(tmp_path / "cut"), **kw)
    monkeypatch.setattr(E, "_append_row", append)
    assert [r["seed"] for r in E.read_results(str(tmp_path / "cut"))] == [0]
    E.run(exp, cfg, output_dir=str(tmp_path / "cut"), **kw)
    got, want = E.read_results(str(tmp_path / "cut")), E.read_results(str(tmp_path / "whole"))
    assert [r["seeds_trained_together"] for r in got] == [2, 1]  # seed 1 trained alone
    for g, w in zip(got, want):
        assert (g["seed"], g["test_accuracy"], g["test_loss"]) == \
            (w["seed"], w["test_accuracy"], w["test_loss"])
    np.testing.assert_array_equal(np.load(tmp_path / "cut/predictions/plain-k3-w4.8-h16/seed_1.npy"),
                                  np.load(tmp_path / "whole/predictions/plain-k3-w4.8-h16/seed_1.npy"))


def test_groups_of_missing_seeds_and_input_checks(tmp_path):
    assert E._groups([4, 0, 2, 3]) == [[0], [2, 3, 4]]
    train, test = mnist_slices(64, 50)
    exp = E.Experiment("x", "x", (A,))
    with pytest.raises(ValueError, match=r"test_examples must be <= the 50 test images of "
                                         r"mnist, got 60"):
        E.run(exp, T.TrainConfig(), output_dir=str(tmp_path), test_examples=60,
              train_split=train, test_split=test, progress=None)
    with pytest.raises(ValueError, match="train_examples must be <= the 64 training"):
        E.run(exp, T.TrainConfig(train_examples=100), output_dir=str(tmp_path),
              train_split=train, test_split=test, progress=None)
    with pytest.raises(ValueError, match="validation_size must be 0, got 10"):
        E.run(exp, T.TrainConfig(validation_size=10), output_dir=str(tmp_path),
              progress=None)
    with E._lock(str(tmp_path)):
        with pytest.raises(RuntimeError, match="another experiment run is writing"):
            E.run(exp, T.TrainConfig(), output_dir=str(tmp_path), progress=None)


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
        logits = np.asarray(M.get(r["config_id"]).apply(variables, x))
        # Equal classes; on GPU (TF32 convolutions, another program) a near-tie may flip.
        differ = np.flatnonzero(np.argmax(logits, -1) != preds)
        top2 = np.sort(logits[differ], -1)[:, -2:]
        assert differ.size <= 2 and np.all(top2[:, 1] - top2[:, 0] < 1e-2), differ
    assert (out / "pairs.csv").read_text().startswith("a,b,question,seeds,")
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("config_id,seeds,test_accuracy_mean,test_accuracy_std,"
                                   "test_accuracy_ci95_low,test_accuracy_ci95_high")
    assert [line.split(",")[0] for line in csv_lines[1:]] == list(configs)
    md = (out / "summary.md").read_text()
    for c in configs:
        assert f"| {c} | {len(seeds)} |" in md
    assert "## Comparisons" in md and "Holm" in md
    assert "Holm p = " in md or ": not compared (" in md, md
    for png in ("accuracy_vs_flops.png", "accuracy_vs_params.png", "learning_curves.png"):
        data_ = (out / png).read_bytes()
        assert data_[:8] == b"\x89PNG\r\n\x1a\n" and len(data_) > 10_000, png
    assert "## Comparisons" in stdout
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    return rows


@pytest.mark.slow
@needs_mnist
def test_bottleneck_script_end_to_end(bottleneck_run):
    out, p = bottleneck_run
    from experiments import bottleneck
    _check_outputs(out, bottleneck.DEFAULTS.quick_configs, [0, 1], p.stdout)
    assert (out / "notes.txt").read_text() == "mine\n"  # not ours: left alone
    assert "bottleneck [1/2] plain-k3-w32.64: seeds 0..1" in p.stderr  # progress
    assert "epoch 1/1" in p.stderr and "images/s" in p.stderr and "ETA" in p.stderr


@pytest.mark.slow
def test_bottleneck_probe_reuses_the_trained_networks(bottleneck_run, tmp_path):
    """The probe script on the bottleneck script's networks (copied: nothing is trained
    again, the settings match), with small samples."""
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(bottleneck_run[0], exp)
    rows_before = (exp / "results.jsonl").read_text()
    out = tmp_path / "probe"
    p = _script("bottleneck_probe", out, f"--experiment_dir={exp}",
                "--probe_train_examples=500", "--probe_test_examples=500",
                "--pixel_images=100")
    assert (exp / "results.jsonl").read_text() == rows_before  # reused, not retrained
    assert "already in" in p.stderr
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]
    assert [(r["config"], r["seed"], r["layer"], r["c"], r["r"]) for r in rows] == [
        ("bottleneck-r8-k3-w32.64", s, "Conv_3", 32, 8) for s in (0, 1)]
    saved = {(r["config_id"], r["seed"]): r["test_accuracy"]
             for r in E.read_results(str(exp))}
    for r in rows:
        curve = r["pca_curve"]
        assert len(curve) == 32 and curve[-1] == pytest.approx(1.0)
        assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:]))
        # no r-dimensional subspace holds more than the best one
        assert r["var_learned"] <= r["var_pca"] + 1e-9
        assert r["var_random"] <= r["var_pca"] + 1e-9
        assert r["var_pca"] == pytest.approx(curve[7])
        for k in ("r2_learned", "r2_random", "r2_pca", "probe_32", "probe_learned",
                  "probe_random"):
            assert 0 < r[k] <= 1, k
        assert r["network"] == saved[(r["config"], r["seed"])]
        assert r["pixels"] == 100 * 14 * 14  # 100 images (R^2: fit on 50, scored on 50)
        assert r["probe_train_images"] == r["probe_test_images"] == 500
    summary = doc["summary"]["bottleneck-r8-k3-w32.64"]
    assert summary["var_pca"]["n"] == 2
    assert summary["var_pca"]["mean"] == pytest.approx(sum(r["var_pca"] for r in rows) / 2)
    assert len(doc["summary"]["reference"]["pca_curves"]) == 2
    text = (out / "summary.md").read_text()
    assert "| bottleneck-r8-k3-w32.64 | 8 |" in text and "Reference: the 32 maps" in text
    assert (out / "variance_captured.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kernel_sizes", "filter_counts"])
def test_other_scripts_are_wired(name):
    # The scripts share _sweep.main, run end to end above through the bottleneck script;
    # their experiments' quick configs train end to end in the Colab notebook's test
    # (tests/test_notebook.py), through the same experiment.run. Here: each script's own
    # flags and experiment.
    mod = importlib.import_module(f"experiments.{name}")
    p = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--list_configs"],
                       cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[:len(mod.EXPERIMENT.configs)] == list(mod.EXPERIMENT.configs)
    assert len(lines) == len(mod.EXPERIMENT.configs) + len(mod.EXPERIMENT.pairs)
    assert set(mod.DEFAULTS.quick_configs) <= set(mod.EXPERIMENT.configs)


@pytest.mark.slow
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
