"""The benchmark scripts run end to end on tiny sizes and print/write what they promise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300, check=True).stdout


@pytest.mark.slow
def test_benchmark_conv_prints_table_and_writes_json(tmp_path):
    out = _run("experiments.benchmark_conv", "--batch=2", "--repeats=1", "--scan_steps=1",
               "--cases=flax_cnn_conv1", f"--output_dir={tmp_path}")
    assert "flax_cnn_conv1" in out and "targets:" in out
    payload = json.loads((tmp_path / "benchmark_conv.json").read_text())
    row = payload["rows"][0]
    assert row["case"] == "flax_cnn_conv1" and row["kernel"] == [3, 3, 1, 32]
    assert row["ours_scan_over_top"] > 0 and row["ours_over_stock_top"] > 0
    assert oct((tmp_path / "benchmark_conv.json").stat().st_mode & 0o777) == "0o644"


@pytest.mark.slow
def test_benchmark_depthwise_checks_variants_agree_and_prints():
    out = _run("experiments.benchmark_depthwise", "--batch=2", "--repeats=1",
               "--scan_steps=1", "--shapes=6x6x4")
    for variant in ("grouped", "taps", "patches", "vmap"):
        assert variant in out


@pytest.mark.slow
def test_benchmark_train_measures_engine_and_baseline(tmp_path):
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if not mnist.is_dir():
        pytest.skip(f"no MNIST at {mnist}")
    out = _run("experiments.benchmark_train", f"--data_dir={mnist}", "--epochs=1",
               "--train_examples=512", "--ynn_values=,stock", "--seeds=2",
               "--seeds_train_examples=512", f"--output_dir={tmp_path}")
    assert "engine[=]" in out and "engine[stock]" in out and "baseline" in out
    assert "2 seeds at once: " in out and "vs 2 separate runs" in out
    assert "FLOPs per training image: 27,411,456" in out
    payload = json.loads((tmp_path / "benchmark_train.json").read_text())
    rows = payload["rows"]
    seeds = payload["seeds"]
    assert seeds["seeds"] == 2 and seeds["ratio"] > 0 and seeds["vmap_ratio"] > 0
    assert seeds["ratio"] == pytest.approx(seeds["together_seconds"] /
                                           seeds["separate_seconds"])
    engine = rows["engine[=]"]
    assert engine["xla_flags"].endswith("--xla_cpu_experimental_ynn_fusion_type=")
    assert "ynn" not in rows["baseline (Flax example loop, stock)"]["xla_flags"]
    for key in ("images_per_second", "compile_seconds", "eval_images_per_second",
                "fraction_of_peak", "ratio_to_baseline", "peak_gflops"):
        assert engine[key] > 0, key
