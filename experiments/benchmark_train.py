r"""Benchmark: training throughput of the engine against the Flax-example loop, one run.

    python -m experiments.benchmark_train --data_dir=../shared/data/mnist \
        --epochs=2 --output_dir=runs/benchmark_train

Measures, each in its own process so that XLA flags are set before JAX starts:

* ``engine[<flag>]``: :mod:`convjax.train`'s epoch (on-device data, ``lax.scan``, one
  fused step) with the Flax-example CNN, once per value of
  ``--xla_cpu_experimental_ynn_fusion_type`` in ``--ynn_values`` (``""`` turns every
  YNN path off, which the training command uses by default; ``-individual_dot`` removes
  only standalone dots from the default list ``INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION,
  REDUCE``; ``stock`` leaves XLA's default);
* ``baseline``: the official Flax MNIST example's structure with stock XLA flags: the
  same CNN in ``flax.linen`` (stock conv gradients), a jitted per-step function, batches
  gathered on the host from NumPy and sent each step;
* in every process: the float32 matmul peak (2048x2048 ``jnp.dot``) and, for the
  engine, compile time and evaluation images/s.

Prints a table with training images/s (median epoch), the ratio to the baseline, FLOP/s
as a fraction of the measured peak (FLOPs per training image from
:mod:`convjax.analysis`, cross-checked with XLA's cost analysis of one step), and writes
the same as JSON (``benchmark_train.json``, atomically) to ``--output_dir``.

Targets: engine >= 2.0x baseline; >= 3,600 images/s here; >= 50% of peak;
compile <= 3 s; evaluation >= 15,000 images/s.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "MNIST IDX directory.")
flags.DEFINE_integer("epochs", 2, "Timed epochs per measurement (median reported); one "
                     "more epoch runs first, untimed, as a warm-up.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_list("ynn_values", ["", "-individual_dot", "stock"],
                  "Values of --xla_cpu_experimental_ynn_fusion_type for the engine "
                  "('off' or '': every YNN path off; 'stock': leave XLA's default).")
flags.DEFINE_integer("train_examples", 0, "Use only the first N training images (0: all; "
                     "for smoke tests).")
flags.DEFINE_bool("baseline", True, "Also time the Flax-example loop with stock flags.")
flags.DEFINE_string("output_dir", "runs/benchmark_train", "Where the JSON goes.")
flags.DEFINE_integer("seeds", 4, "Also time this many seeds trained at once against as "
                     "many separate single-seed runs (0: skip).")
flags.DEFINE_integer("seeds_train_examples", 20000, "Training images per epoch in the seeds "
                     "measurement (0: all).")
flags.DEFINE_enum("worker", None, ["engine", "baseline", "seeds"], "Internal: run one "
                  "measurement and print it as JSON.")


def _peak_gflops(repeats: int = 10) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * 2048 ** 3 / float(np.median(times)) / 1e9


def _engine(data_dir, epochs, batch_size, train_examples=0) -> dict:
    """The engine as the training command runs it: :func:`convjax.train.train_and_evaluate`
    for ``epochs + 1`` epochs, the first (already compiled) one untimed as a warm-up."""
    import numpy as np

    from convjax import analysis, models, train

    config = train.TrainConfig(model="flax-example", batch_size=batch_size,
                               epochs=epochs + 1, train_examples=train_examples)
    result = train.train_and_evaluate(config, data_dir=data_dir, progress=None)
    timed = result.epochs[1:]
    xla = analysis.xla_flops(models.get(config.model), (28, 28, 1), batch=batch_size)
    return {"images_per_second": float(np.median([e["images_per_second"] for e in timed])),
            "epoch_seconds": [e["train_seconds"] for e in timed],
            "compile_seconds": result.summary["compile_seconds"],
            "eval_images_per_second": float(np.median([e["eval_images_per_second"]
                                                       for e in timed])),
            "flops_per_image": result.summary["flops_per_image"],
            "xla_flops_per_image": xla.train_xla / batch_size,
            "final_train_loss": timed[-1]["train_loss"], "peak_gflops": _peak_gflops()}


def _seeds(data_dir, epochs, batch_size, train_examples=0) -> dict:
    """``--seeds`` seeds in one program (the engine's default strategy, and ``vmap``)
    against as many separate single-seed runs, same data and epochs; training seconds
    only (no compile, no evaluation), all in this process."""
    from convjax import data, train

    tr = data.load("mnist", "train", data_dir=data_dir)
    te = data.load("mnist", "test", data_dir=data_dir)
    n = FLAGS.seeds_train_examples or len(tr.labels)
    tr = data.Split(tr.images[:n], tr.labels[:n])
    s = FLAGS.seeds

    def seconds(seeds, seed=0, strategy="auto"):
        config = train.TrainConfig(model="flax-example", batch_size=batch_size,
                                   epochs=epochs, seed=seed, seeds=seeds)
        r = train.train_and_evaluate(config, train_split=tr, test_split=te, progress=None,
                                     seed_strategy=strategy)
        return r.summary["train_seconds"]

    together = seconds(s)
    vmapped = seconds(s, strategy="vmap")
    separate = sum(seconds(1, seed=i) for i in range(s))
    return {"seeds": s, "train_examples": n, "epochs": epochs, "together_seconds": together,
            "vmap_seconds": vmapped, "separate_seconds": separate,
            "ratio": together / separate, "vmap_ratio": vmapped / separate}


def _baseline(data_dir, epochs, batch_size, train_examples=0) -> dict:
    """The official Flax linen MNIST example's structure: a per-step jitted function fed
    from host NumPy batches, stock flax.linen layers."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from convjax import data

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(32, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Conv(64, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            x = x.reshape((x.shape[0], -1))
            x = nn.relu(nn.Dense(256)(x))
            return nn.Dense(10)(x)

    tr = data.load("mnist", "train", data_dir=data_dir)
    n = train_examples or len(tr.labels)
    images = np.asarray(tr.images[:n], np.float32) / 255.0
    labels = np.asarray(tr.labels[:n])
    model = CNN()
    params = model.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))["params"]
    tx = optax.sgd(0.1, 0.9)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    steps = len(labels) // batch_size
    rng = np.random.default_rng(0)

    def run_epoch(params, opt_state):
        perm = rng.permutation(len(labels))[:steps * batch_size].reshape(steps, batch_size)
        loss = None
        for idx in perm:
            params, opt_state, loss = step(params, opt_state, images[idx], labels[idx])
        loss.block_until_ready()
        return params, opt_state, loss

    t0 = time.perf_counter()
    step(params, opt_state, images[:batch_size], labels[:batch_size])[2].block_until_ready()
    compile_seconds = time.perf_counter() - t0
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        params, opt_state, loss = run_epoch(params, opt_state)
        times.append(time.perf_counter() - t0)
    return {"images_per_second": steps * batch_size / float(np.median(times)),
            "epoch_seconds": [float(t) for t in times], "compile_seconds": compile_seconds,
            "final_train_loss": float(loss), "peak_gflops": _peak_gflops()}


def _spawn(worker: str, xla_flags: str | None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    flags_ = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                      if "ynn_fusion_type" not in f)
    if xla_flags:
        flags_ = (flags_ + " " + xla_flags).strip()
    env["XLA_FLAGS"] = flags_
    cmd = [sys.executable, "-m", "experiments.benchmark_train", f"--worker={worker}",
           f"--epochs={FLAGS.epochs}", f"--batch_size={FLAGS.batch_size}",
           f"--train_examples={FLAGS.train_examples}", f"--seeds={FLAGS.seeds}",
           f"--seeds_train_examples={FLAGS.seeds_train_examples}"]
    if FLAGS.data_dir:
        cmd.append(f"--data_dir={FLAGS.data_dir}")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"benchmark worker {worker} failed:\n{p.stderr[-3000:]}")
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["xla_flags"] = flags_
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.worker:
        fn = {"engine": _engine, "baseline": _baseline, "seeds": _seeds}[FLAGS.worker]
        print(json.dumps(fn(FLAGS.data_dir, FLAGS.epochs, FLAGS.batch_size,
                            FLAGS.train_examples)))
        return 0
    if not FLAGS.ynn_values and not FLAGS.baseline:
        raise app.UsageError("nothing to measure: --ynn_values is empty and --nobaseline")
    rows = {}
    for value in FLAGS.ynn_values:
        value = "" if value == "off" else value
        flag = None if value == "stock" else f"--xla_cpu_experimental_ynn_fusion_type={value}"
        rows[f"engine[{value or '='}]" if value != "stock" else "engine[stock]"] = \
            _spawn("engine", flag)
    if FLAGS.baseline:
        rows["baseline (Flax example loop, stock)"] = _spawn("baseline", None)
    base = rows.get("baseline (Flax example loop, stock)")
    head = (f"{'run':<38} {'images/s':>9} {'x base':>7} {'GFLOP/s':>8} {'of peak':>8} "
            f"{'peak':>7} {'compile s':>9} {'eval img/s':>10}")
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"batch {FLAGS.batch_size}, Flax-example CNN, median of {FLAGS.epochs} "
             f"epochs of {FLAGS.train_examples or 60000:,} images", head, "-" * len(head)]
    for name, r in rows.items():
        fpi = r.get("flops_per_image") or rows[next(iter(rows))].get("flops_per_image")
        gflops = r["images_per_second"] * fpi / 1e9
        r["achieved_gflops"], r["fraction_of_peak"] = gflops, gflops / r["peak_gflops"]
        r["ratio_to_baseline"] = r["images_per_second"] / base["images_per_second"] \
            if base else None
        lines.append(
            f"{name:<38} {r['images_per_second']:>9,.0f} "
            f"{(r['ratio_to_baseline'] or float('nan')):>7.2f} {gflops:>8.1f} "
            f"{r['fraction_of_peak']:>8.2f} {r['peak_gflops']:>7.1f} "
            f"{r['compile_seconds']:>9.2f} {r.get('eval_images_per_second', float('nan')):>10,.0f}")
    first = rows[next(iter(rows))]
    lines.append(f"FLOPs per training image: {first['flops_per_image']:,} (analysis: forward + "
                 f"gradients, every tap) vs {first['xla_flops_per_image']:,.0f} (XLA cost "
                 f"analysis of one step / batch)")
    seeds = None
    if FLAGS.seeds:
        seeds = _spawn("seeds", "--xla_cpu_experimental_ynn_fusion_type=")
        lines.append(
            f"{seeds['seeds']} seeds at once: {seeds['together_seconds']:.1f} s (vmap: "
            f"{seeds['vmap_seconds']:.1f} s) vs {seeds['seeds']} separate runs "
            f"{seeds['separate_seconds']:.1f} s: ratio {seeds['ratio']:.3f} (vmap "
            f"{seeds['vmap_ratio']:.3f}); {seeds['epochs']} epoch(s) of "
            f"{seeds['train_examples']:,} images, training time only")
    print("\n".join(lines))
    from convjax.train import write_json
    write_json(os.path.join(FLAGS.output_dir, "benchmark_train.json"),
               {"rows": rows, "seeds": seeds, "table": lines, "batch_size": FLAGS.batch_size,
                "epochs": FLAGS.epochs})
    return 0


if __name__ == "__main__":
    app.run(main)
