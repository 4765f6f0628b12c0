r"""Benchmark: the two ways ``convjax.depthwise_conv`` computes, and two alternatives.

    python -m experiments.benchmark_depthwise --batch=128 --repeats=20

Compares, jit-compiled, forward and forward+backward (gradients for x and the kernel):

* ``grouped``: ``depthwise_conv(method="grouped")``, one ``lax.conv_general_dilated``
  with ``feature_group_count=C`` (the default on GPU/TPU);
* ``taps``: ``depthwise_conv(method="taps")``, a sum over the ``KH*KW`` taps of strided
  slices of the padded input times one kernel row (the default on CPU);
* ``patches``: ``lax.conv_general_dilated_patches`` then a per-channel contraction;
* ``vmap``: ``jax.vmap`` of a one-channel conv over the channel axis.

Each is also timed inside ``lax.scan`` over ``--scan_steps`` batches (how a training epoch
runs). Prints median milliseconds per batch and the ratio to ``grouped``, measured in the
same run; all variants are first checked to give the same output.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

import convjax
from experiments._timing import median_time

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 128, "Batch size N.")
flags.DEFINE_integer("repeats", 20, "Timed repetitions (median is reported).")
flags.DEFINE_integer("scan_steps", 8, "Batches per lax.scan in the scan timing.")
flags.DEFINE_string("shapes", "28x28x32,14x14x64", "Comma-separated HxWxC inputs (3x3, M=1).")


def grouped(x, k):
    return convjax.depthwise_conv(x, k, method="grouped")


def taps(x, k):
    return convjax.depthwise_conv(x, k, method="taps")


def patches(x, k):
    kh, kw, _, c = k.shape
    p = lax.conv_general_dilated_patches(x, (kh, kw), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # Patch features are ordered (C, KH, KW).
    p = p.reshape(*p.shape[:3], c, kh * kw)
    return jnp.einsum("nhwct,tc->nhwc", p, k.reshape(kh * kw, c))


def vmapped(x, k):
    one = lambda xc, kc: convjax.conv(xc[..., None], kc[:, :, None, None])[..., 0]  # noqa: E731
    return jax.vmap(one, in_axes=(3, 2), out_axes=3)(x, k[:, :, 0, :])


VARIANTS = {"grouped": grouped, "taps": taps, "patches": patches, "vmap": vmapped}


def _loss(f):
    return lambda x, k: jnp.sum(jnp.square(f(x, k)))


def _scan(f, steps):
    grad = jax.grad(_loss(f), argnums=(0, 1))

    def run(xs, k):
        def body(acc, x):
            gx, gk = grad(x, k)
            return acc + gk, gx.sum()
        return lax.scan(body, jnp.zeros_like(k), xs)

    return jax.jit(run)


def main(argv):
    del argv
    key = jax.random.key(0)
    print(f"depthwise 3x3 (M=1), batch {FLAGS.batch}, {jax.devices()[0].device_kind}, "
          f"median of {FLAGS.repeats}; ms per batch, ratio = variant / grouped")
    print(f"{'input':>12} {'variant':>8} {'fwd ms':>8} {'ratio':>6} {'fwd+bwd':>8} {'ratio':>6} "
          f"{'in scan':>8} {'ratio':>6}")
    for spec in FLAGS.shapes.split(","):
        h, w, c = (int(v) for v in spec.split("x"))
        kx, kk = jax.random.split(jax.random.fold_in(key, c))
        x = jax.random.normal(kx, (FLAGS.batch, h, w, c))
        k = jax.random.normal(kk, (3, 3, 1, c)) / 3
        ref = grouped(x, k)
        for name, f in VARIANTS.items():
            np.testing.assert_allclose(np.asarray(jax.jit(f)(x, k)), np.asarray(ref),
                                       rtol=1e-4, atol=1e-4, err_msg=name)
        xs = jax.random.normal(kx, (FLAGS.scan_steps, FLAGS.batch, h, w, c))
        rows = {}
        for name, f in VARIANTS.items():
            fwd = median_time(jax.jit(f), x, k, repeats=FLAGS.repeats)
            bwd = median_time(jax.jit(jax.grad(_loss(f), argnums=(0, 1))), x, k,
                        repeats=FLAGS.repeats)
            scan = median_time(_scan(f, FLAGS.scan_steps), xs, k,
                         repeats=max(3, FLAGS.repeats // 4)) / FLAGS.scan_steps
            rows[name] = (fwd, bwd, scan)
        base = rows["grouped"]
        for name, (fwd, bwd, scan) in rows.items():
            print(f"{spec:>12} {name:>8} {fwd * 1e3:8.2f} {fwd / base[0]:6.2f} "
                  f"{bwd * 1e3:8.2f} {bwd / base[1]:6.2f} {scan * 1e3:8.2f} "
                  f"{scan / base[2]:6.2f}")


if __name__ == "__main__":
    app.run(main)
