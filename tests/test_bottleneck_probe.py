"""experiments.bottleneck_probe: the layer it probes, and the script end to end on tiny
trained models."""

import json
import os
import subprocess
import sys

import pytest

from convjax import models
from tests.conftest import MNIST_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("model_id, path", [
    ("bottleneck-r8-k3-w32.64", "Conv_3"),
    # r = 32: stage 1's 1x1 up-projection is also 32 -> 32; the probe takes stage 2's
    ("bottleneck-r32-k3-w32.64", "Conv_3"),
    ("bottleneck-r8-k3-w32.64-res", "Conv_4"),  # stage 1's shortcut conv comes first
])
def test_the_probed_layer_is_the_second_stages_reduction(model_id, path):
    from experiments import bottleneck_probe as BP

    assert BP.reduction_path(models.get(model_id), models.parse(model_id)) == path


def test_script_end_to_end(tmp_path):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST at {MNIST_DIR}")
    out, exp = tmp_path / "probe", tmp_path / "exp"
    cmd = [sys.executable, "-m", "experiments.bottleneck_probe", f"--data_dir={MNIST_DIR}",
           "--quick", "--train_examples=1000", "--probe_train_examples=500",
           "--test_examples=500", "--pixel_images=100", f"--experiment_dir={exp}",
           f"--output_dir={out}"]
    p = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]
    assert [(r["config"], r["seed"], r["layer"], r["c"], r["r"]) for r in rows] == [
        ("bottleneck-r8-k3-w32.64", s, "Conv_3", 32, 8) for s in (0, 1)]
    for r in rows:
        curve = r["pca_curve"]
        assert len(curve) == 32 and curve[-1] == pytest.approx(1.0)
        assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:]))
        # no r-dimensional subspace holds more than the best one
        assert r["var_learned"] <= r["var_pca"] + 1e-9 and r["var_random"] <= r["var_pca"] + 1e-9
        assert r["var_pca"] == pytest.approx(curve[7])
        for k in ("r2_learned", "r2_random", "r2_pca", "probe_32", "probe_learned",
                  "probe_random", "network"):
            assert 0 < r[k] <= 1, k
        assert r["pixels"] == 50 * 14 * 14 * 2  # 100 images; R^2 scored on half
    summary = doc["summary"]["bottleneck-r8-k3-w32.64"]
    assert summary["var_pca"]["n"] == 2
    assert summary["var_pca"]["mean"] == pytest.approx(sum(r["var_pca"] for r in rows) / 2)
    assert len(doc["summary"]["reference"]["pca_curves"]) == 2
    text = (out / "summary.md").read_text()
    assert "| bottleneck-r8-k3-w32.64 | 8 |" in text and "Reference: the 32 maps" in text
    assert (out / "variance_captured.png").read_bytes()[:4] == b"\x89PNG"
    # the networks were trained into the experiment directory and are reused
    assert (exp / "results.jsonl").is_file()
