"""The README's main command (the demo script) runs and prints the shapes it promises."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from experiments import demo

ROOT = Path(__file__).resolve().parents[1]


def test_demo_forward_shapes():
    params = demo.build(jax.random.key(0), filters=32, kernel_size=3, reduce=8)
    outs = demo.forward(params, jax.numpy.zeros((2, 28, 28, 1)))
    assert outs["conv"].shape == (2, 28, 28, 32)
    assert outs["max_pool"].shape == (2, 14, 14, 32)
    assert outs["pointwise"].shape == (2, 14, 14, 8)
    assert outs["conv_transpose"].shape == (2, 28, 28, 16)
    assert outs["global_avg_pool"].shape == (2, 16)


MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.slow
def test_demo_script_prints_table():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "experiments.demo", "--batch=2",
                          "--filters=16", "--reduce=4", "--random_batch"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "batch [N, H, W, C] = (2, 28, 28, 1) of random pixels" in out
    assert "16 filters of 3x3x1 = 16 slices of 3x3; 144 weights" in out
    assert "each of 4 maps = weighted sum of 16 maps per pixel; 64 weights" in out


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST not found at {MNIST_DIR}")
@pytest.mark.slow
def test_demo_on_real_mnist():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "experiments.demo", "--batch=3",
                          f"--data_dir={MNIST_DIR}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "(3, 28, 28, 1) of MNIST test images from data_dir" in out
