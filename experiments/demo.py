r"""Demo: a small conv stack on a batch of MNIST, with every shape spelled out.

    python -m experiments.demo --data_dir=../shared/data/mnist --batch=8 --filters=32

Builds random HWIO kernels, runs ``conv -> max_pool -> pointwise -> conv_transpose ->
global_avg_pool`` under one ``jax.jit`` on a batch of ``[N, 28, 28, 1]`` images, and
prints for each op its input, kernel and output shapes in layout terms, how many filters
and 2D kernel slices it holds, and its weights. The batch is the first ``--batch`` MNIST
test images (``convjax.data``: ``--data_dir``, else ``CONVJAX_DATA_DIR``, else TFDS), or
random pixels of the same shape with ``--random_batch``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags

import convjax

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Images in the batch (N).")
flags.DEFINE_integer("filters", 32, "Filters of the 3x3 conv (K).")
flags.DEFINE_integer("kernel_size", 3, "Window of the first conv (KH = KW).")
flags.DEFINE_integer("reduce", 8, "Output channels of the 1x1 (pointwise) conv.")
flags.DEFINE_integer("seed", 0, "PRNG seed for the kernels (and a random batch).")
flags.DEFINE_string("data_dir", None, "Directory of MNIST IDX files (see convjax.data).")
flags.DEFINE_bool("random_batch", False, "Use random pixels instead of MNIST.")


def build(key, filters: int, kernel_size: int, reduce: int):
    """Random kernels for the demo stack: ``{name: array}`` in HWIO / [C, O]."""
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "conv": jax.random.normal(k1, (kernel_size, kernel_size, 1, filters)) / kernel_size,
        "pointwise": jax.random.normal(k2, (filters, reduce)) / filters ** 0.5,
        "up": jax.random.normal(k3, (2, 2, 16, reduce)) / 2.0,
    }


def forward(params, x):
    """The demo stack; returns every intermediate so that the script can print shapes."""
    a = convjax.conv(x, params["conv"], padding="SAME")
    b = convjax.max_pool(a, 2)
    c = convjax.pointwise(b, params["pointwise"])
    d = convjax.conv_transpose(c, params["up"], stride=2)
    e = convjax.global_avg_pool(d)
    return {"x": x, "conv": a, "max_pool": b, "pointwise": c, "conv_transpose": d,
            "global_avg_pool": e}


def main(argv):
    del argv
    key_params, key_x = jax.random.split(jax.random.key(FLAGS.seed))
    params = build(key_params, FLAGS.filters, FLAGS.kernel_size, FLAGS.reduce)
    if FLAGS.random_batch:
        x, what = jax.random.uniform(key_x, (FLAGS.batch, 28, 28, 1)), "random pixels"
    else:
        test, info = convjax.data.load("mnist", "test", data_dir=FLAGS.data_dir,
                                       dtype="float32", return_info=True)
        x = test.images[:FLAGS.batch]
        what = f"MNIST test images from {info['source']} {info['path']}"
    fwd = jax.jit(forward)
    t0 = time.perf_counter()
    outs = jax.block_until_ready(fwd(params, x))
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(params, x))
    t_run = time.perf_counter() - t0

    k = params["conv"]
    kh, kw, c, o = k.shape
    rows = [
        ("conv", "NHWC", outs["x"].shape, f"HWIO {k.shape}", outs["conv"].shape,
         f"{o} filters of {kh}x{kw}x{c} = {o * c} slices of {kh}x{kw}; "
         f"{kh * kw * c * o} weights"),
        ("max_pool", "NHWC", outs["conv"].shape, "window 2x2, stride 2",
         outs["max_pool"].shape, "no weights"),
        ("pointwise", "NHWC", outs["max_pool"].shape,
         f"[C, O] {params['pointwise'].shape}", outs["pointwise"].shape,
         f"each of {FLAGS.reduce} maps = weighted sum of {o} maps per pixel; "
         f"{o * FLAGS.reduce} weights"),
        ("conv_transpose", "NHWC", outs["pointwise"].shape,
         f"HWIO {params['up'].shape} (forward kernel)", outs["conv_transpose"].shape,
         "adjoint of a stride-2 conv: 2x upsampling"),
        ("global_avg_pool", "NHWC", outs["conv_transpose"].shape, "-",
         outs["global_avg_pool"].shape, "mean over H, W"),
    ]
    header = ("op", "layout", "input", "kernel", "output", "what it holds")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(f"convjax {convjax.__version__} on {jax.devices()[0].platform}: a conv stack on a "
          f"batch [N, H, W, C] = {tuple(x.shape)} of {what}")
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*(str(v) for v in r)))
    print(f"jit compile + first run: {t_first * 1e3:.1f} ms; second run: {t_run * 1e3:.2f} ms")
    print(f"output: {outs['global_avg_pool'].dtype} {tuple(outs['global_avg_pool'].shape)}, "
          f"finite: {bool(jnp.isfinite(outs['global_avg_pool']).all())}")


if __name__ == "__main__":
    app.run(main)
