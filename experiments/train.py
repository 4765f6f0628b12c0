r"""Train one model on MNIST (or Fashion-MNIST, KMNIST) and write its metrics.

    python -m experiments.train --model=flax-example --epochs=3 --batch_size=128 \
        --data_dir=../shared/data/mnist --output_dir=runs/flax-example

A thin shell around :func:`convjax.train.train_and_evaluate`. Writes ``metrics.jsonl``
(one line per epoch) and ``metrics.json`` (the summary: ``test_accuracy`` per seed as
fractions, ``train_images_per_second``, ``compile_seconds``, ``train_seconds``,
``params``, ``flops_per_image`` (training), ``forward_flops_per_image``, ``devices``,
``xla_flags``, ``jax_version``) to ``--output_dir``; other files there are left alone.

It adds ``--xla_cpu_experimental_ynn_fusion_type=`` to ``XLA_FLAGS`` (XLA:CPU only:
YNNPACK's dot, convolution and reduction paths off, Eigen instead: 1.4x faster training
than stock flags here, 3,910 vs 2,793 images/s, see the README) unless you set that
flag yourself or pass ``--noxla_cpu_defaults``.
"""

from __future__ import annotations

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "flax-example", "Model id of convjax.models, e.g. flax-example, "
                    "tf-tutorial, plain-k3-w32.64, bottleneck-r8-k3-w32.64-res.")
flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist", "kmnist"], "Dataset.")
flags.DEFINE_string("data_dir", None, "Directory of the IDX files (default: "
                    "$CONVJAX_DATA_DIR, then TFDS).")
flags.DEFINE_integer("epochs", 3, "Epochs.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam", "adamw", "adadelta"], "Optimizer.")
flags.DEFINE_float("learning_rate", 0.1, "Peak learning rate.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (decoupled for adamw).")
flags.DEFINE_enum("schedule", "warmup_cosine",
                  ["constant", "cosine", "warmup_cosine", "one_cycle"],
                  "Learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", 0.5, "Warm-up epochs of warmup_cosine.")
flags.DEFINE_integer("seed", 0, "Seed of initialization, shuffling and dropout (the first "
                     "one with --seeds).")
flags.DEFINE_integer("seeds", 1, "Seeds trained at once in one program: seed, seed+1, ..., "
                     "seed+seeds-1; metrics.json lists each seed's results in that order.")
flags.DEFINE_enum("parallel", "auto", ["auto", "single", "data", "seeds"],
                  "Devices: 'data' splits each batch over all devices, 'seeds' spreads the "
                  "seeds over them, 'single' uses one; 'auto': seeds when they divide "
                  "evenly over several devices, else data (logged).")
flags.DEFINE_enum("seed_strategy", "auto", ["auto", "vmap", "loop"],
                  "How one step maps over the seeds: jax.vmap, or a loop in the same "
                  "program (faster on CPU); auto: loop on CPU unless --parallel=seeds.")
flags.DEFINE_integer("checkpoint_every", 0, "Save an orbax checkpoint every N epochs (and "
                     "after the last) under <output_dir>/checkpoints; 0: off.")
flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --output_dir "
                  "(same flags); bit-identical to an uninterrupted run.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 "
                    "(jax.distributed); with --num_processes and --process_id.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.DEFINE_bool("distributed", False, "Multi-host with auto-detection (TPU pods, SLURM): "
                  "jax.distributed.initialize() without arguments.")
flags.DEFINE_integer("validation_size", 0, "Training images held out and evaluated every "
                     "epoch (for choosing settings without the test set).")
flags.DEFINE_integer("train_examples", 0, "Use only the first N training images (0: all), "
                     "for quick runs.")
flags.DEFINE_string("output_dir", "runs/train", "Where metrics.json and metrics.jsonl go "
                    "(may exist; other files in it are not touched).")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                  "bfloat16: mixed precision (params and optimizer state float32, convs "
                  "and matmuls in bfloat16): the TPU-native setting; emulated on CPU.")
flags.DEFINE_bool("xla_cpu_defaults", True, "Add the XLA:CPU flag that speeds training up "
                  "(see the module docstring).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from convjax import train  # after flag parsing: XLA flags are set before jax starts

    added = train.default_xla_flags(FLAGS.xla_cpu_defaults)
    import jax
    from absl import logging

    from convjax import parallel

    multi = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
    if any(v is not None for v in multi):
        if any(v is None for v in multi):
            raise app.UsageError("--coordinator_address, --num_processes and --process_id "
                                 "go together (or use --distributed to auto-detect)")
        parallel.initialize_distributed(*multi)
    elif FLAGS.distributed:
        parallel.initialize_distributed()

    config = train.TrainConfig(
        model=FLAGS.model, dataset=FLAGS.dataset, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay, schedule=FLAGS.schedule,
        warmup_epochs=FLAGS.warmup_epochs, seed=FLAGS.seed, seeds=FLAGS.seeds,
        validation_size=FLAGS.validation_size, train_examples=FLAGS.train_examples,
        compute_dtype=FLAGS.compute_dtype)
    logging.info("config %s on %s; XLA flag added: %s", config, jax.devices(), added)
    result = train.train_and_evaluate(
        config, data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir,
        parallel=FLAGS.parallel, seed_strategy=FLAGS.seed_strategy,
        checkpoint_every=FLAGS.checkpoint_every, resume=FLAGS.resume)
    s = result.summary
    accs = ", ".join(f"{100 * a:.2f}%" for a in s["test_accuracy"])
    print(f"{config.model}: test accuracy {accs} after {config.epochs} epochs "
          f"(seed{'s' if len(s['seeds']) > 1 else ''} "
          f"{', '.join(map(str, s['seeds']))}); {s['train_images_per_second']:,.0f} "
          f"training images/s, "
          f"compile {s['compile_seconds']:.1f} s, training {s['train_seconds']:.1f} s; "
          f"metrics in {FLAGS.output_dir}/metrics.json")
    return 0


if __name__ == "__main__":
    app.run(main)
