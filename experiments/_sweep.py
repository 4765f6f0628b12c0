"""The flags and ``main`` shared by the experiment scripts (bottleneck, kernel_sizes,
filter_counts): each script builds its :class:`convjax.experiment.Experiment` and its
defaults, and calls :func:`define_flags` then :func:`main`."""

from __future__ import annotations

import dataclasses

from absl import app, flags

FLAGS = flags.FLAGS

#: What ``--quick`` sets, unless the flag is given on the command line.
QUICK = {"train_examples": 5000, "epochs": 1}


@dataclasses.dataclass(frozen=True)
class Defaults:
    """A script's defaults: sized for about 10 minutes on a 2-core CPU with 5 seeds."""

    train_examples: int
    epochs: int
    quick_configs: tuple[str, ...]


def define_flags(name: str, defaults: Defaults) -> None:
    """Define the shared flags with this script's defaults (once per process: a second
    script imported beside the first, e.g. by the tests, reuses them; :func:`main` then
    applies its own defaults to the flags not given)."""
    if "seeds" in FLAGS:
        return
    flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist", "kmnist"],
                      "Dataset (IDX files; fashion_mnist and kmnist need their files in "
                      "--data_dir or TFDS).")
    flags.DEFINE_string("data_dir", None, "Directory of the IDX files (default: "
                        "$CONVJAX_DATA_DIR, then TFDS).")
    flags.DEFINE_integer("seeds", 5, "Seeds per config (seed .. seed+seeds-1), trained at "
                         "once in one program per config.")
    flags.DEFINE_integer("seed", 0, "First seed.")
    flags.DEFINE_integer("epochs", defaults.epochs, "Epochs per run.")
    flags.DEFINE_integer("train_examples", defaults.train_examples,
                         "Train on the first N training images (0: all 60,000). The "
                         "default keeps the whole run near 10 minutes on a 2-core CPU; "
                         "use 0 and more epochs on a GPU/TPU.")
    flags.DEFINE_integer("test_examples", 0, "Evaluate on the first N test images (0: all "
                         "10,000).")
    flags.DEFINE_integer("batch_size", 64, "Training batch size.")
    flags.DEFINE_enum("optimizer", "adam", ["sgd", "adam", "adamw", "adadelta"],
                      "Optimizer.")
    flags.DEFINE_float("learning_rate", 0.003, "Peak learning rate (linear warm-up over "
                       "--warmup_epochs, then cosine decay to 0).")
    flags.DEFINE_float("warmup_epochs", 0.1, "Warm-up length in epochs.")
    flags.DEFINE_list("configs", [], "Train only these config ids (comma-separated; "
                      "default: all of the experiment's configs, listed in --help's module "
                      "text and by --list_configs).")
    flags.DEFINE_bool("list_configs", False, "Print the experiment's config ids and pairs, "
                      "then exit.")
    flags.DEFINE_string("output_dir", f"runs/{name}", "Where results.jsonl, summary.md, "
                        "summary.csv, the plots, params/ and predictions/ go (top level; it "
                        "may exist and hold other files, which are left alone). Rerunning "
                        "the same command resumes. Default with --quick: "
                        f"runs/{name}-quick.")
    flags.DEFINE_bool("quick", False, f"A run of a few minutes on a 2-core CPU for smoke "
                      f"tests and demos: only the configs {', '.join(defaults.quick_configs)}"
                      f" (unless --configs), {QUICK['epochs']} epoch of "
                      f"{QUICK['train_examples']:,} training images (unless those flags are "
                      f"given).")
    flags.DEFINE_enum("parallel", "auto", ["auto", "single", "data", "seeds"],
                      "How seeds and batches spread over the devices (see "
                      "experiments.train).")
    flags.DEFINE_enum("seed_strategy", "auto", ["auto", "vmap", "loop"],
                      "How a step maps over the seeds: jax.vmap, or a loop in the same "
                      "program (faster on CPU); auto: loop on CPU, vmap elsewhere.")
    flags.DEFINE_bool("xla_cpu_defaults", True, "Add the XLA:CPU flag that speeds training "
                      "up (see experiments.train).")


def main(argv, experiment, defaults: Defaults) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from convjax import train as T  # after flag parsing: XLA flags before jax starts

    T.default_xla_flags(FLAGS.xla_cpu_defaults)
    import jax
    from absl import logging

    from convjax import experiment as E

    if FLAGS.list_configs:
        print("\n".join(experiment.configs))
        for p in experiment.pairs:
            print(f"pair: {p.a} vs {p.b} ({p.question})")
        return 0
    def given(flag, default):
        return FLAGS[flag].value if FLAGS[flag].present else default

    configs = FLAGS.configs
    train_examples = given("train_examples", defaults.train_examples)
    epochs = given("epochs", defaults.epochs)
    output_dir = given("output_dir", f"runs/{experiment.name}")
    if FLAGS.quick:
        configs = configs or list(defaults.quick_configs)
        if not FLAGS["train_examples"].present:
            train_examples = QUICK["train_examples"]
        if not FLAGS["epochs"].present:
            epochs = QUICK["epochs"]
        if not FLAGS["output_dir"].present:
            output_dir += "-quick"
    try:
        first = experiment.select(configs).configs[0]  # unknown ids: a usage error
        config = T.TrainConfig(
            model=first, dataset=FLAGS.dataset, epochs=epochs,
            batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
            learning_rate=FLAGS.learning_rate, warmup_epochs=FLAGS.warmup_epochs,
            seed=FLAGS.seed, seeds=FLAGS.seeds, train_examples=train_examples)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    logging.info("%s on %s: %s", experiment.name, jax.devices(), config)
    summary = E.run(experiment, config, output_dir=output_dir, configs=configs,
                    data_dir=FLAGS.data_dir, test_examples=FLAGS.test_examples,
                    parallel=FLAGS.parallel, seed_strategy=FLAGS.seed_strategy)
    print(summary["markdown"])
    print(f"files: {output_dir}/summary.md, summary.csv, pairs.csv, results.jsonl, "
          f"accuracy_vs_flops.png, accuracy_vs_params.png, learning_curves.png")
    return 1 if summary["failures"] else 0
