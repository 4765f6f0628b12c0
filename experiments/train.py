r"""Train one model on MNIST (or Fashion-MNIST, KMNIST) and write its metrics.

    python -m experiments.train --model=flax-example --epochs=3 --batch_size=128 \
        --data_dir=../shared/data/mnist --output_dir=runs/flax-example

A thin shell around :func:`convjax.train.train_and_evaluate`. Writes ``metrics.jsonl``
(one line per epoch) and ``metrics.json`` (the summary: ``test_accuracy`` per seed as
fractions, ``train_images_per_second``, ``compile_seconds``, ``train_seconds``,
``params``, ``flops_per_image``, ``devices``, ``xla_flags``, ``jax_version``) to
``--output_dir``; other files there are left alone.

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
flags.DEFINE_integer("seed", 0, "Seed of initialization, shuffling and dropout.")
flags.DEFINE_integer("validation_size", 0, "Training images held out and evaluated every "
                     "epoch (for choosing settings without the test set).")
flags.DEFINE_integer("train_examples", 0, "Use only the first N training images (0: all), "
                     "for quick runs.")
flags.DEFINE_string("output_dir", "runs/train", "Where metrics.json and metrics.jsonl go "
                    "(may exist; other files in it are not touched).")
flags.DEFINE_bool("xla_cpu_defaults", True, "Add the XLA:CPU flag that speeds training up "
                  "(see the module docstring).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from convjax import train  # after flag parsing: XLA flags are set before jax starts

    added = train.default_xla_flags(FLAGS.xla_cpu_defaults)
    import jax
    from absl import logging

    config = train.TrainConfig(
        model=FLAGS.model, dataset=FLAGS.dataset, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay, schedule=FLAGS.schedule,
        warmup_epochs=FLAGS.warmup_epochs, seed=FLAGS.seed,
        validation_size=FLAGS.validation_size, train_examples=FLAGS.train_examples)
    logging.info("config %s on %s; XLA flag added: %s", config, jax.devices(), added)
    result = train.train_and_evaluate(config, data_dir=FLAGS.data_dir,
                                      output_dir=FLAGS.output_dir)
    s = result.summary
    print(f"{config.model}: test accuracy {100 * s['test_accuracy'][0]:.2f}% after "
          f"{config.epochs} epochs; {s['train_images_per_second']:,.0f} training images/s, "
          f"compile {s['compile_seconds']:.1f} s, training {s['train_seconds']:.1f} s; "
          f"metrics in {FLAGS.output_dir}/metrics.json")
    return 0


if __name__ == "__main__":
    app.run(main)
