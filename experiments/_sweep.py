"""The flags and ``main`` shared by the experiment scripts (bottleneck, kernel_sizes,
filter_counts): each script builds its :class:`convjax.experiment.Experiment` and its
defaults, and gets its ``main`` from :func:`script`."""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS

#: What ``--quick`` sets, unless the flag is given on the command line.
QUICK = {"train_examples": 5000, "epochs": 1}


@dataclasses.dataclass(frozen=True)
class Defaults:
    """A script's defaults: sized for under 10 minutes on a 2-core CPU with 5 seeds."""

    train_examples: int
    epochs: int
    quick_configs: tuple[str, ...]


def _specs(name: str, defaults: Defaults) -> dict[str, tuple[Any, Any, str, dict]]:
    """flag name -> (definer, this script's default, help, extra arguments)."""
    return {
        "dataset": (flags.DEFINE_enum, "mnist", "Dataset (IDX files; fashion_mnist and "
                    "kmnist need their files in --data_dir or TFDS).",
                    {"enum_values": ["mnist", "fashion_mnist", "kmnist"]}),
        "data_dir": (flags.DEFINE_string, None, "Directory of the IDX files (default: "
                     "$CONVJAX_DATA_DIR, then TFDS).", {}),
        "seeds": (flags.DEFINE_integer, 5, "Seeds per config (seed .. seed+seeds-1), "
                  "trained at once in one program per config.", {}),
        "seed": (flags.DEFINE_integer, 0, "First seed.", {}),
        "epochs": (flags.DEFINE_integer, defaults.epochs, "Epochs per run.", {}),
        "train_examples": (flags.DEFINE_integer, defaults.train_examples,
                           "Train on the first N training images (0: all 60,000). The "
                           "default keeps the whole run under 10 minutes on a 2-core CPU; "
                           "use 0 and more epochs on a GPU/TPU.", {}),
        "test_examples": (flags.DEFINE_integer, 0, "Evaluate on the first N test images "
                          "(0: all 10,000).", {}),
        "batch_size": (flags.DEFINE_integer, 64, "Training batch size.", {}),
        "optimizer": (flags.DEFINE_enum, "adam", "Optimizer.",
                      {"enum_values": ["sgd", "adam", "adamw", "adadelta"]}),
        "learning_rate": (flags.DEFINE_float, 0.003, "Peak learning rate (linear warm-up "
                          "over --warmup_epochs, then cosine decay to 0).", {}),
        "warmup_epochs": (flags.DEFINE_float, 0.1, "Warm-up length in epochs.", {}),
        "configs": (flags.DEFINE_list, [], "Train only these config ids (comma-separated; "
                    "default: all of the experiment's configs, listed by --list_configs). "
                    "The summary still covers every config with rows.", {}),
        "list_configs": (flags.DEFINE_bool, False, "Print the experiment's config ids and "
                         "pairs, then exit.", {}),
        "output_dir": (flags.DEFINE_string, f"runs/{name}", "Where results.jsonl, "
                       "summary.md, summary.csv, pairs.csv, the plots, params/ and "
                       "predictions/ go (top level; it may exist and hold other files, "
                       "which are left alone). Rerunning the same command resumes. "
                       f"Default with --quick: runs/{name}-quick.", {}),
        "quick": (flags.DEFINE_bool, False, "A run of a few minutes on a 2-core CPU for "
                  f"smoke tests and demos: only the configs "
                  f"{', '.join(defaults.quick_configs)} (unless --configs), "
                  f"{QUICK['epochs']} epoch of {QUICK['train_examples']:,} training images "
                  f"(unless those flags are given).", {}),
        "parallel": (flags.DEFINE_enum, "auto", "How seeds and batches spread over the "
                     "devices (see experiments.train).",
                     {"enum_values": ["auto", "single", "data", "seeds"]}),
        "seed_strategy": (flags.DEFINE_enum, "auto", "How a step maps over the seeds: "
                          "jax.vmap, or a loop in the same program (faster on CPU); auto: "
                          "loop on CPU, vmap elsewhere.",
                          {"enum_values": ["auto", "vmap", "loop"]}),
        "compute_dtype": (flags.DEFINE_enum, "float32", "bfloat16: mixed precision "
                          "(params and optimizer state float32, convs and matmuls in "
                          "bfloat16), the TPU-native setting; emulated on CPU.",
                          {"enum_values": ["float32", "bfloat16"]}),
        "xla_cpu_defaults": (flags.DEFINE_bool, True, "Add the XLA:CPU flag that speeds "
                             "training up (see experiments.train).", {}),
    }


def script(experiment, defaults: Defaults, module: str):
    """Define the shared flags for the script ``module`` (its ``__name__``) with its
    defaults, and return its ``main`` for ``app.run``.

    The flags are registered as the script's own, so its ``--help`` lists them. A flag
    that another module of the process already defined (a second script, or
    ``experiments.train``, imported by the tests or a notebook) is reused: :func:`main`
    reads a flag's value only when it was given on the command line, and this script's
    default otherwise."""
    define_flags(_specs(experiment.name, defaults), module)
    return functools.partial(main, experiment=experiment, defaults=defaults)


def define_flags(specs: dict[str, tuple[Any, Any, str, dict]], module: str) -> None:
    """Register ``specs`` (flag name -> (definer, default, help, extra arguments)) as the
    flags of the script ``module``, reusing any flag another module already defined
    (read them with :func:`flag_value`)."""
    owner = sys.argv[0] if module == "__main__" else module  # absl's name for __main__
    for flag, (define, default, help_, extra) in specs.items():
        if flag not in FLAGS:
            define(flag, default, help=help_, module_name=owner, **extra)


def flag_value(specs: dict[str, tuple[Any, Any, str, dict]], flag: str) -> Any:
    """The flag's value when given on the command line, else this script's default."""
    return FLAGS[flag].value if FLAGS[flag].present else specs[flag][1]


def settings(specs: dict[str, tuple[Any, Any, str, dict]], quick: dict[str, Any]):
    """``(value, setting, quick_dir)`` for a script whose ``--quick`` sets ``quick``:
    ``value(flag)`` is :func:`flag_value`; ``setting(flag)`` is ``quick``'s value under
    ``--quick`` unless the flag is given; ``quick_dir(flag)`` appends ``-quick`` to a
    directory flag's default under ``--quick``."""
    value = functools.partial(flag_value, specs)
    on = value("quick")

    def setting(flag):
        if on and flag in quick and not FLAGS[flag].present:
            return quick[flag]
        return value(flag)

    def quick_dir(flag):
        return value(flag) + ("-quick" if on and not FLAGS[flag].present else "")

    return value, setting, quick_dir


def main(argv, experiment, defaults: Defaults) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    specs = _specs(experiment.name, defaults)
    value, setting, quick_dir = settings(specs, {**QUICK,
                                                 "configs": list(defaults.quick_configs)})

    from convjax import train as T  # after flag parsing: XLA flags before jax starts

    T.default_xla_flags(value("xla_cpu_defaults"))
    import jax
    from absl import logging

    from convjax import experiment as E

    if value("list_configs"):
        print("\n".join(experiment.configs))
        for p in experiment.pairs:
            print(f"pair: {p.a} vs {p.b} ({p.question})")
        return 0
    configs, train_examples = setting("configs"), setting("train_examples")
    epochs, output_dir = setting("epochs"), quick_dir("output_dir")
    try:
        first = experiment.select(configs).configs[0]  # unknown ids: a usage error
        config = T.TrainConfig(
            model=first, dataset=value("dataset"), epochs=epochs,
            batch_size=value("batch_size"), optimizer=value("optimizer"),
            learning_rate=value("learning_rate"), warmup_epochs=value("warmup_epochs"),
            seed=value("seed"), seeds=value("seeds"), train_examples=train_examples,
            compute_dtype=value("compute_dtype"))
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    logging.info("%s on %s: %s", experiment.name, jax.devices(), config)
    summary = E.run(experiment, config, output_dir=output_dir, configs=configs,
                    data_dir=value("data_dir"), test_examples=value("test_examples"),
                    parallel=value("parallel"), seed_strategy=value("seed_strategy"))
    print(summary["markdown"])
    print(f"files: {output_dir}/summary.md, summary.csv, pairs.csv, results.jsonl, "
          f"accuracy_vs_flops.png, accuracy_vs_params.png, learning_curves.png")
    return 1 if summary["failures"] else 0
