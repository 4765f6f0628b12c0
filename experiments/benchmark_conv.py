r"""Benchmark: conv forward+backward with the canonical VJP vs JAX's stock autodiff.

    python -m experiments.benchmark_conv --batch=128 --repeats=10 --scan_steps=8 \
        --output_dir=runs/benchmark_conv

For the convs of the Flax-example MNIST CNN (3x3, 1->32 on 28x28 and 32->64 on 14x14), a
strided conv and a grouped conv, times one forward+backward step (gradients for input and
kernel) under ``jax.jit``, at the top level and per step inside ``lax.scan`` (how a training
epoch runs), with ``backward="canonical"`` (ours) and ``backward="lax"`` (stock). Prints a
table of medians and ratios measured in one run, and writes it as JSON
(``benchmark_conv.json``, written atomically) to ``--output_dir``.

Targets: ours in scan <= 1.5x ours at top level; ours at top level <= 1.1x stock at top
level.
"""

from __future__ import annotations

import os
import platform

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

import convjax
from convjax.train import write_json
from experiments._timing import median_time

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 128, "Batch size N.")
flags.DEFINE_integer("repeats", 10, "Timed repetitions (median reported).")
flags.DEFINE_integer("scan_steps", 8, "Batches per lax.scan.")
flags.DEFINE_string("output_dir", "runs/benchmark_conv", "Where to write the JSON.")
flags.DEFINE_string("cases", "", "Comma-separated case names to run (default: all).")

# name: (H, W, C_in, C_out, kernel, stride, groups)
CASES = {
    "flax_cnn_conv1": (28, 28, 1, 32, 3, 1, 1),
    "flax_cnn_conv2": (14, 14, 32, 64, 3, 1, 1),
    "strided_3x3_s2": (28, 28, 32, 64, 3, 2, 1),
    "grouped_g4": (14, 14, 32, 64, 3, 1, 4),
}


def make_step(backward, stride, groups, target):
    """One forward+backward: gradients of ``0.5 * |conv(x, k) - target|^2`` for x and k.

    The output gradient depends on the forward output, as in training (a loss linear in
    the output would give a constant output gradient that XLA can fold away).
    """
    def loss(x, k):
        y = convjax.conv(x, k, stride=stride, groups=groups, backward=backward)
        return 0.5 * jnp.sum(jnp.square(y - target))
    return jax.grad(loss, argnums=(0, 1))


def measure(name, backward, batch, repeats, scan_steps):
    h, w, c, o, ks, stride, groups = CASES[name]
    key = jax.random.key(0)
    kx, kk, kc = jax.random.split(key, 3)
    xs = jax.random.normal(kx, (scan_steps, batch, h, w, c))
    k = jax.random.normal(kk, (ks, ks, c // groups, o)) * 0.1
    out_hw = (-(-h // stride), -(-w // stride))
    target = jax.random.normal(kc, (batch, *out_hw, o))
    step = make_step(backward, stride, groups, target)
    top = jax.jit(step)

    def body(k, x):
        gx, gk = step(x, k)
        return k - 1e-3 * gk, jnp.sum(gx)

    scanned = jax.jit(lambda k, xs: lax.scan(body, k, xs))
    t_top = median_time(top, xs[0], k, repeats=repeats)
    t_scan = median_time(scanned, k, xs, repeats=max(3, repeats // 3)) / scan_steps
    return t_top, t_scan


def main(argv):
    del argv
    names = [n for n in FLAGS.cases.split(",") if n] or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise app.UsageError(f"--cases: unknown {unknown}; choose from {list(CASES)}")
    device = jax.devices()[0]
    print(f"conv fwd+bwd (dx, dk), batch {FLAGS.batch}, {device.platform} "
          f"({device.device_kind}), median ms per step; {FLAGS.repeats} repeats, "
          f"{FLAGS.scan_steps} steps per scan")
    header = (f"{'case':<16} {'shape':<22} {'ours top':>9} {'ours scan':>9} {'scan/top':>8} "
              f"{'stock top':>9} {'stock scan':>10} {'scan/top':>8} {'ours/stock top':>14} "
              f"{'ours/stock scan':>15}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in names:
        h, w, c, o, ks, stride, groups = CASES[name]
        ours = measure(name, "canonical", FLAGS.batch, FLAGS.repeats, FLAGS.scan_steps)
        stock = measure(name, "lax", FLAGS.batch, FLAGS.repeats, FLAGS.scan_steps)
        row = {
            "case": name, "input": [FLAGS.batch, h, w, c], "kernel": [ks, ks, c // groups, o],
            "stride": stride, "groups": groups,
            "ours_top_ms": ours[0] * 1e3, "ours_scan_ms": ours[1] * 1e3,
            "stock_top_ms": stock[0] * 1e3, "stock_scan_ms": stock[1] * 1e3,
            "ours_scan_over_top": ours[1] / ours[0], "stock_scan_over_top": stock[1] / stock[0],
            "ours_over_stock_top": ours[0] / stock[0],
            "ours_over_stock_scan": ours[1] / stock[1],
        }
        rows.append(row)
        shape = f"{h}x{w}x{c}->{o} k{ks} s{stride} g{groups}"
        print(f"{name:<16} {shape:<22} {row['ours_top_ms']:9.2f} {row['ours_scan_ms']:9.2f} "
              f"{row['ours_scan_over_top']:8.2f} {row['stock_top_ms']:9.2f} "
              f"{row['stock_scan_ms']:10.2f} {row['stock_scan_over_top']:8.2f} "
              f"{row['ours_over_stock_top']:14.2f} {row['ours_over_stock_scan']:15.3f}",
              flush=True)
    ok_scan = all(r["ours_scan_over_top"] <= 1.5 for r in rows)
    ok_top = all(r["ours_over_stock_top"] <= 1.1 for r in rows)
    print(f"targets: ours scan/top <= 1.5: {'met' if ok_scan else 'NOT met'}; "
          f"ours/stock top <= 1.1: {'met' if ok_top else 'NOT met'}")
    path = os.path.join(FLAGS.output_dir, "benchmark_conv.json")
    write_json(path, {"device": f"{device.platform} ({device.device_kind})",
                       "host": platform.node(), "jax": jax.__version__,
                       "batch": FLAGS.batch, "repeats": FLAGS.repeats,
                       "scan_steps": FLAGS.scan_steps, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
