"""Experiments: train a list of model configs over several seeds, write results a
reviewer can check, and judge each pair of configs over seeds and test images.

:func:`run` is what the scripts (``python -m experiments.bottleneck``,
``experiments.kernel_sizes``, ``experiments.filter_counts``) call; they only build the
:class:`Experiment` (which configs, which pairs to compare) and the
:class:`~convjax.train.TrainConfig`. Everything goes to the top level of ``output_dir``:

* ``results.jsonl``: one row per (config, seed), appended as soon as that run finishes
  (the file is rewritten atomically, so a kill leaves the old or the new file, never half
  a line); see :data:`ROW_KEYS`;
* ``params/<config_id>/seed_<seed>/``: the final variables (``params``, and
  ``batch_stats`` if any), saved with orbax (:func:`load_variables` reads them back);
* ``predictions/<config_id>/seed_<seed>.npy``: the predicted class of every test image
  (``uint8 [n_test]``, 10 KB for MNIST), and ``predictions/test_labels.npy``: the
  per-image outcomes every interval and verdict is computed from;
* ``summary.md``, ``summary.csv``: per config the mean and standard deviation of test
  accuracy over seeds and its 95% interval over seeds and test images, params, FLOPs,
  time; per pair of the experiment, the difference, its interval and a verdict
  (:func:`convjax.stats.compare`, Holm-adjusted over the experiment's pairs, equivalence
  within :attr:`Experiment.margin`); ``pairs.csv``: the same comparisons as numbers
  (:data:`PAIR_COLUMNS`);
* ``accuracy_vs_flops.png``, ``accuracy_vs_params.png``, ``learning_curves.png``;
* ``.convjax-experiment.lock``: held while a run writes (a second run into the same
  directory is refused instead of dropping rows).

Running the same command again resumes: the (config, seed) runs already in
``results.jsonl`` are skipped, the missing seeds of a config are trained together, and
the summary is rebuilt from all rows of the file. On CPU (the seed loop) a seed's result
does not depend on which seeds train beside it; with ``vmap`` (GPU/TPU) it may differ by
float round-off (``seeds_trained_together`` in each row says how it was trained). Rows
written with other training settings are refused, not mixed in. Nothing else in
``output_dir`` is touched.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import subprocess
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from convjax import data as D
from convjax import models as M
from convjax import stats
from convjax import train as T
from convjax.checkpoint import quiet_orbax

__all__ = ["Experiment", "Pair", "run", "read_results", "load_variables", "summarize",
           "save_figure", "ROW_KEYS", "TRAIN_KEYS", "PAIR_COLUMNS", "MNIST_MARGIN_REASON"]

#: The keys of every row of ``results.jsonl``, in order. Accuracies are fractions;
#: ``config`` is every field of the model config; ``train`` the training settings;
#: ``best_epoch`` / ``last_epoch`` / ``epochs``: per-epoch metrics (each with its
#: ``train_loss_curve``); ``flops_per_image``: forward FLOPs (the ``explain`` analysis),
#: ``train_flops_per_image``: forward and backward; ``train_seconds``: this seed's share
#: of its run's training time (the run's time / ``seeds_trained_together``);
#: ``images_per_second``: the run's training images per second, all its seeds together;
#: ``compile_seconds``: compiling the run's program (all its seeds); ``git_commit`` ends
#: in ``-dirty`` when tracked files had uncommitted changes.
ROW_KEYS = ("config_id", "config", "seed", "experiment", "train", "test_accuracy",
            "test_loss", "best_epoch", "last_epoch", "epochs", "params", "flops_per_image",
            "train_flops_per_image", "train_seconds", "compile_seconds", "images_per_second",
            "seeds_trained_together", "test_examples", "device_kind", "devices",
            "jax_version", "flax_version", "git_commit", "finished_at")

#: The training settings that must agree between rows that are summarized together.
TRAIN_KEYS = ("dataset", "epochs", "batch_size", "optimizer", "learning_rate", "momentum",
              "weight_decay", "schedule", "warmup_epochs", "validation_size",
              "train_examples", "compute_dtype")


#: Why 0.2 points is the default equivalence margin (MNIST and its IDX siblings).
MNIST_MARGIN_REASON = (
    "0.2 points is 20 of 10,000 MNIST test images, about twice the binomial standard "
    "deviation of one accuracy near 99% (0.1 points), and the scale at which published "
    "MNIST architectures stop being told apart; a smaller difference would not change "
    "which architecture a reader picks.")


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two configs the experiment compares: is ``a`` better or worse than ``b``?
    ``question`` says what the pair is about, e.g. ``"1x1 bottleneck r=8 vs plain 3x3"``."""

    a: str
    b: str
    question: str


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named list of model configs and the pairs it compares.

    Attributes:
      name: ``bottleneck``, ``kernel_sizes``, ...
      title: one line for the summary's heading.
      configs: model ids of :mod:`convjax.models`, in the order they are trained and
        shown.
      pairs: the comparisons the summary states in words.
      notes: lines under the heading (what is held fixed, what ``C`` or ``r`` mean).
      margin: the equivalence margin in accuracy points: a pair is called
        ``"equivalent"`` only when the difference is shown to lie within ``±margin``
        (:func:`convjax.stats.compare`).
      margin_reason: one or more sentences saying why that margin (printed in the
        summary).
    """

    name: str
    title: str
    configs: tuple[str, ...]
    pairs: tuple[Pair, ...] = ()
    notes: tuple[str, ...] = ()
    margin: float = 0.2
    margin_reason: str = MNIST_MARGIN_REASON

    def __post_init__(self):
        object.__setattr__(self, "configs", tuple(self.configs))
        object.__setattr__(self, "pairs", tuple(self.pairs))
        if not self.configs:
            raise ValueError(f"Experiment {self.name!r}: needs at least one config")
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) \
                or not 0 < self.margin < 100:
            raise ValueError(f"Experiment {self.name!r}: margin must be a number of accuracy "
                             f"points in (0, 100), got {self.margin!r}")
        if not self.margin_reason.strip():
            raise ValueError(f"Experiment {self.name!r}: margin_reason must say why the "
                             f"equivalence margin is {self.margin} points")
        for mid in self.configs:
            M.parse(mid)  # canonical ids only: one id per config
        if len(set(self.configs)) != len(self.configs):
            raise ValueError(f"Experiment {self.name!r}: a config is listed twice in "
                             f"{self.configs}")
        for p in self.pairs:
            for mid in (p.a, p.b):
                if mid not in self.configs:
                    raise ValueError(f"Experiment {self.name!r}: pair {p.question!r} names "
                                     f"{mid!r}, which is not one of its configs")

    def select(self, ids: Sequence[str] | None) -> "Experiment":
        """The experiment restricted to ``ids`` (in the experiment's order), keeping the
        pairs whose two configs are both kept; ``None`` or empty: all of it."""
        if not ids:
            return self
        unknown = [i for i in ids if i not in self.configs]
        if unknown:
            raise ValueError(f"configs: {unknown} are not configs of the {self.name} "
                             f"experiment; its configs are: {', '.join(self.configs)}")
        keep = tuple(c for c in self.configs if c in ids)
        return dataclasses.replace(self, configs=keep, pairs=tuple(
            p for p in self.pairs if p.a in keep and p.b in keep))


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def read_results(output_dir: str) -> list[dict]:
    """The rows of ``<output_dir>/results.jsonl`` (empty if there is none).

    Raises:
      ValueError: a line is not a JSON object with the :data:`ROW_KEYS`, or a
        (config_id, seed) appears twice.
    """
    path = os.path.join(output_dir, "results.jsonl")
    if not os.path.exists(path):
        return []
    rows, seen = [], set()
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"results: line {n} of {path} is not JSON ({e}); it was not "
                                 f"written by this code (rows are written atomically)") from e
            missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
            if missing:
                raise ValueError(f"results: line {n} of {path} lacks the keys {missing}")
            key = (row["config_id"], row["seed"])
            if key in seen:
                raise ValueError(f"results: {key} appears twice in {path} (line {n})")
            seen.add(key)
            for k, v in T.ADDED_FIELDS.items():  # rows written before the field existed
                if k in TRAIN_KEYS:
                    row["train"].setdefault(k, v)
            rows.append(row)
    return rows


def _append_row(output_dir: str, row: dict) -> None:
    path = os.path.join(output_dir, "results.jsonl")
    old = open(path, "rb").read() if os.path.exists(path) else b""
    if old and not old.endswith(b"\n"):
        raise ValueError(f"results: {path} does not end with a newline; it was not written "
                         f"by this code")
    T.atomic_write(path, old + (json.dumps(row) + "\n").encode())


def _params_dir(output_dir: str, config_id: str, seed: int) -> str:
    return os.path.join(os.path.abspath(output_dir), "params", config_id, f"seed_{seed}")


def _predictions_path(output_dir: str, config_id: str, seed: int) -> str:
    return os.path.join(output_dir, "predictions", config_id, f"seed_{seed}.npy")


def _labels_path(output_dir: str) -> str:
    return os.path.join(output_dir, "predictions", "test_labels.npy")


def _save_npy(path: str, classes: np.ndarray) -> None:
    """Class indices as ``uint8 .npy``, atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(classes).astype(np.uint8))
    T.atomic_write(path, buf.getvalue())


def _load_npy(path: str) -> np.ndarray | None:
    return np.load(path) if os.path.exists(path) else None


def _save_variables(output_dir: str, config_id: str, seed: int, variables: dict) -> str:
    import orbax.checkpoint as ocp

    path = _params_dir(output_dir, config_id, seed)
    with quiet_orbax(), ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, variables, force=True)  # a half-written save is never renamed in
        ckptr.wait_until_finished()
    return path


def load_variables(output_dir: str, config_id: str, seed: int) -> dict:
    """The final variables (``{"params": ...}``, plus ``"batch_stats"`` for models with
    batch norm) of one (config, seed) of an experiment, ready for
    ``models.get(config_id).apply(variables, x)``."""
    import orbax.checkpoint as ocp

    path = _params_dir(output_dir, config_id, seed)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_variables: no saved params for {config_id!r} seed "
                                f"{seed} in {output_dir} (expected {path})")
    with quiet_orbax(), ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path)


def _save_predictions(output_dir: str, config_id: str, seed: int, classes: np.ndarray):
    _save_npy(_predictions_path(output_dir, config_id, seed), classes)


def _save_labels(output_dir: str, labels: np.ndarray) -> None:
    old = _load_npy(_labels_path(output_dir))
    if old is None or not np.array_equal(old, labels):
        _save_npy(_labels_path(output_dir), labels)


def _git_commit() -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def _train_settings(config: T.TrainConfig, test_examples: int) -> dict:
    d = dataclasses.asdict(config)
    out = {k: d[k] for k in TRAIN_KEYS}
    out["test_examples"] = test_examples
    return out


def _groups(seeds: Sequence[int]) -> list[list[int]]:
    """Runs of consecutive seeds (each trains as one program)."""
    out: list[list[int]] = []
    for s in sorted(seeds):
        if out and out[-1][-1] == s - 1:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _epoch_metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seed"}


def run(experiment: Experiment, train_config: T.TrainConfig, *, output_dir: str,
        configs: Sequence[str] | None = None, data_dir: str | None = None,
        test_examples: int = 0,
        progress: Callable[[str], None] | None = T.default_progress,
        parallel: str = "auto", seed_strategy: str = "auto",
        train_split: D.Split | None = None, test_split: D.Split | None = None) -> dict:
    """Train the configs of ``experiment`` (or the subset ``configs``) for the seeds of
    ``train_config`` (``seed .. seed + seeds - 1``; the missing seeds of a config train
    together in one program), write the files listed in the module docstring, and return
    the summary of every row in ``results.jsonl`` (:func:`summarize`).

    Args:
      experiment: the configs and pairs (``train_config.model`` is ignored).
      train_config: the training settings shared by every config.
      output_dir: where everything goes (created if needed; may hold other files).
      configs: train only these config ids (the summary still covers every config
        with rows).
      data_dir: IDX directory (:func:`convjax.data.load`).
      test_examples: evaluate on the first this many test images (0: all).
      progress: called with progress lines (which config and seeds, then per epoch: loss,
        accuracy, images/s, ETA); None for silence.
      parallel, seed_strategy: see :func:`convjax.train.train_and_evaluate`.
      train_split, test_split: data already loaded (tests pass small slices).

    The returned summary has ``failures``: ``(config_id, message)`` of the configs whose
    loss became NaN or infinite (the others still train; rerunning retries them).
    """
    if not isinstance(test_examples, int) or test_examples < 0:
        raise ValueError(f"run: test_examples must be an int >= 0, got {test_examples!r}")
    if train_config.validation_size:
        raise ValueError(f"run: experiments train on the training split and report the "
                         f"test split; validation_size must be 0, got "
                         f"{train_config.validation_size}")
    if jax.process_count() > 1:
        raise ValueError(f"run: experiments write their files from one process; got "
                         f"{jax.process_count()} processes (use experiments.train for "
                         f"multi-host runs)")
    selected = experiment.select(configs)
    os.makedirs(output_dir, exist_ok=True)
    with _lock(output_dir):
        return _run_locked(experiment, selected, train_config, output_dir, data_dir,
                           test_examples, progress, parallel, seed_strategy, train_split,
                           test_split)


@contextlib.contextmanager
def _lock(output_dir: str):
    """One run per output_dir at a time: rows are appended by rewriting the file, so two
    writers would drop each other's rows."""
    import fcntl

    path = os.path.join(output_dir, ".convjax-experiment.lock")
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise RuntimeError(f"run: another experiment run is writing to {output_dir} "
                               f"(it holds {path}); wait for it or use another "
                               f"output_dir") from e
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_locked(experiment, selected, train_config, output_dir, data_dir, test_examples,
                progress, parallel, seed_strategy, train_split, test_split) -> dict:
    settings = _train_settings(train_config, test_examples)
    rows = read_results(output_dir)
    for r in rows:
        if r["experiment"] != experiment.name:
            raise ValueError(
                f"run: {output_dir}/results.jsonl holds rows of the {r['experiment']!r} "
                f"experiment; use another output_dir for {experiment.name!r}")
        if r["train"] != settings:
            diff = {k: (r["train"].get(k), v) for k, v in settings.items()
                    if r["train"].get(k) != v}
            raise ValueError(
                f"run: {output_dir}/results.jsonl holds rows trained with other settings "
                f"(row {r['config_id']} seed {r['seed']}; differing (in the file, now): "
                f"{diff}); rerun with the same flags to resume, or use another output_dir")

    seeds = train_config.seed_list
    todo = []
    for mid in selected.configs:
        done = {r["seed"] for r in rows if r["config_id"] == mid}
        todo += [(mid, g) for g in _groups([s for s in seeds if s not in done])]
    skipped = len(selected.configs) * len(seeds) - sum(len(g) for _, g in todo)
    if progress:
        progress(f"{experiment.name}: {len(selected.configs)} configs x {len(seeds)} seeds "
                 f"({seeds[0]}..{seeds[-1]}); {skipped} run(s) already in "
                 f"{output_dir}/results.jsonl, {sum(len(g) for _, g in todo)} to train")

    if todo:
        if train_split is None:
            train_split = D.load(train_config.dataset, "train", data_dir=data_dir)
        if test_split is None:
            test_split = D.load(train_config.dataset, "test", data_dir=data_dir)
        n_train, n_test = int(train_split.labels.shape[0]), int(test_split.labels.shape[0])
        if train_config.train_examples > n_train:
            raise ValueError(f"run: train_examples must be <= the {n_train:,} training "
                             f"images of {train_config.dataset}, got "
                             f"{train_config.train_examples:,}")
        if test_examples > n_test:
            raise ValueError(f"run: test_examples must be <= the {n_test:,} test images "
                             f"of {train_config.dataset}, got {test_examples:,}")
        if test_examples:
            test_split = D.Split(test_split.images[:test_examples],
                                 test_split.labels[:test_examples])
        _save_labels(output_dir, np.asarray(test_split.labels))
    commit = _git_commit()
    started, done_runs, failures = time.perf_counter(), 0, []
    for k, (mid, group) in enumerate(todo, start=1):
        if progress:
            left = sum(len(g) for _, g in todo[k - 1:])
            eta = ((time.perf_counter() - started) / done_runs * left) if done_runs else None
            progress(f"{experiment.name} [{k}/{len(todo)}] {mid}: seed"
                     f"{'s' if len(group) > 1 else ''} {group[0]}"
                     f"{'..' + str(group[-1]) if len(group) > 1 else ''}"
                     + (f"; about {eta:.0f} s left in this experiment" if eta else ""))
        config = dataclasses.replace(train_config, model=mid, seed=group[0],
                                     seeds=len(group))
        mode = parallel
        if parallel == "seeds" and len(group) % jax.device_count():
            mode = "auto"  # a resumed remainder that does not divide over the devices
            if progress:
                progress(f"{mid}: {len(group)} seed(s) do not divide over "
                         f"{jax.device_count()} devices; parallel=auto for them")
        try:
            result = T.train_and_evaluate(config, train_split=train_split,
                                          test_split=test_split, progress=progress,
                                          parallel=mode, seed_strategy=seed_strategy)
        except FloatingPointError as e:
            failures.append((mid, str(e)))
            if progress:
                progress(f"{experiment.name}: {mid} failed, going on with the next config: "
                         f"{e}")
            continue
        _write_group(experiment, output_dir, config, group, result, test_split, settings,
                     commit)
        done_runs += len(group)

    summary = summarize(experiment, read_results(output_dir), output_dir, failures)
    if progress:
        progress(f"{experiment.name}: summary in {output_dir}/summary.md")
    return summary


def _write_group(experiment: Experiment, output_dir: str, config: T.TrainConfig,
                 group: list[int], result: T.RunResult, test_split: D.Split,
                 settings: dict, commit: str | None) -> None:
    state = jax.device_get(result.state)  # one copy to the host for all seeds
    n_test = int(test_split.labels.shape[0])
    classes = np.asarray(result.predictions)
    s = result.summary
    model_config = dataclasses.asdict(M.parse(config.model))
    device = jax.devices()[0]
    import flax
    for i, seed in enumerate(group):
        variables = {"params": jax.tree.map(lambda v: v[i], state.params)}
        if jax.tree.leaves(state.batch_stats):
            variables["batch_stats"] = jax.tree.map(lambda v: v[i], state.batch_stats)
        _save_variables(output_dir, config.model, seed, variables)
        _save_predictions(output_dir, config.model, seed, classes[i])
        epochs = [dict(_epoch_metrics(e["per_seed"][i]), epoch=e["epoch"])
                  for e in result.epochs]
        best = max(epochs, key=lambda e: (e["test_accuracy"], -e["epoch"]))
        row = {
            "config_id": config.model,
            "config": model_config,
            "seed": seed,
            "experiment": experiment.name,
            "train": settings,
            "test_accuracy": epochs[-1]["test_accuracy"],
            "test_loss": epochs[-1]["test_loss"],
            "best_epoch": best,
            "last_epoch": epochs[-1],
            "epochs": epochs,
            "params": s["params"],
            "flops_per_image": s["forward_flops_per_image"],
            "train_flops_per_image": s["flops_per_image"],
            "train_seconds": s["train_seconds"] / len(group),
            "compile_seconds": s["compile_seconds"],
            "images_per_second": s["train_images_per_second"],
            "seeds_trained_together": len(group),
            "test_examples": n_test,
            "device_kind": device.device_kind,
            "devices": len(s["devices"]),
            "jax_version": jax.__version__,
            "flax_version": flax.__version__,
            "git_commit": commit,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _append_row(output_dir, row)


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def _pts(v: float) -> str:
    return "nan" if math.isnan(v) else f"{100 * v:.2f}"


def summarize(experiment: Experiment, rows: list[dict], output_dir: str | None = None,
              failures: Sequence[tuple[str, str]] = ()) -> dict:
    """Per-config statistics and per-pair verdicts of ``rows`` (those of ``experiment``'s
    configs, every seed present); with ``output_dir``, also write ``summary.md``,
    ``summary.csv``, ``pairs.csv`` and the plots there (atomically).

    The intervals and verdicts need the per-image outcomes: they are read from the
    predictions saved in ``output_dir`` (without it, or without a config's predictions,
    the configs get no interval and the pairs are "not compared"). Each pair is judged by
    :func:`convjax.stats.compare` (seeds and test images, equivalence margin
    ``experiment.margin``) with Holm's adjustment over the pairs compared in this summary
    (one experiment, one dataset: ``results.jsonl`` holds one training setting).

    Returns:
      ``{"configs": [...], "pairs": [...], "failures": [...], "markdown": str,
      "detectable": (low, high) or None}``: per config ``config_id``, ``seeds``,
      ``test_accuracy`` (:func:`convjax.stats.mean_ci` of the rows' accuracies: seed
      mean and s.d.), ``interval`` (:func:`convjax.stats.accuracy_interval`, points, or
      None), ``params``, ``flops_per_image``, ``train_seconds`` and
      ``images_per_second`` (means); per pair ``a``, ``b``, ``question``, ``seeds``
      (those both have), ``sentence``, ``verdict`` (one of
      :data:`convjax.stats.VERDICTS`, or ``"not compared"``), and when compared
      ``comparison`` (the :class:`convjax.stats.Comparison` at the raw p-values),
      ``p_holm``, ``p_equivalence_holm``, ``mde`` (points detectable with 80% power at
      the 5% level) and ``mcnemar`` (one exact test per seed, a detail). ``detectable``
      is the range of ``mde`` over the pairs.
    """
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        if r["config_id"] in experiment.configs:
            by.setdefault(r["config_id"], {})[r["seed"]] = r
    outcomes, missing = _outcomes(output_dir, by)
    configs = []
    for mid in experiment.configs:
        runs = by.get(mid, {})
        if not runs:
            continue
        rs = [runs[s] for s in sorted(runs)]
        correct = _correct(outcomes.get(mid, {}), sorted(runs))
        configs.append({
            "config_id": mid,
            "seeds": sorted(runs),
            "test_accuracy": stats.mean_ci([r["test_accuracy"] for r in rs]),
            "interval": stats.accuracy_interval(correct)
            if correct is not None and len(runs) >= 2 else None,
            "test_loss": float(np.mean([r["test_loss"] for r in rs])),
            "params": rs[0]["params"],
            "flops_per_image": rs[0]["flops_per_image"],
            "train_flops_per_image": rs[0]["train_flops_per_image"],
            "train_seconds": float(np.mean([r["train_seconds"] for r in rs])),
            "images_per_second": float(np.mean([r["images_per_second"] for r in rs])),
            "accuracy_curve": [float(np.mean([r["epochs"][e]["test_accuracy"] for r in rs]))
                               for e in range(min(len(r["epochs"]) for r in rs))],
            "loss_curve": _loss_curve(rs),
        })
    pairs = [_compare(p, by.get(p.a, {}), by.get(p.b, {}), outcomes, missing,
                      experiment.margin) for p in experiment.pairs]
    _holm(pairs)
    mdes = [p["mde"] for p in pairs if "mde" in p and not math.isnan(p["mde"])]
    out = {"configs": configs, "pairs": pairs, "failures": list(failures),
           "detectable": (min(mdes), max(mdes)) if mdes else None}
    out["markdown"] = _markdown(experiment, configs, pairs, rows, failures)
    if output_dir:
        T.atomic_write(os.path.join(output_dir, "summary.md"), out["markdown"].encode())
        T.atomic_write(os.path.join(output_dir, "summary.csv"), _csv(configs).encode())
        T.atomic_write(os.path.join(output_dir, "pairs.csv"), _pairs_csv(pairs).encode())
        if configs:
            _plots(experiment, configs, output_dir)
    return out


def _outcomes(output_dir: str | None, by: dict[str, dict[int, dict]]
              ) -> tuple[dict[str, dict[int, np.ndarray]], str | None]:
    """``({config_id: {seed: bool [N] correct flags}}, None)``, each saved prediction read
    once (a seed without predictions is left out); ``({}, why)`` when there is nothing to
    read them against."""
    if output_dir is None:
        return {}, "no output_dir holding the per-image predictions"
    labels = _load_npy(_labels_path(output_dir))
    if labels is None:
        return {}, f"{_labels_path(output_dir)} is missing"
    out: dict[str, dict[int, np.ndarray]] = {}
    for mid, runs in by.items():
        for s in runs:
            pred = _load_npy(_predictions_path(output_dir, mid, s))
            if pred is not None and pred.shape == labels.shape:
                out.setdefault(mid, {})[s] = pred == labels
    return out, None


def _correct(outcomes: dict[int, np.ndarray], seeds: Sequence[int]) -> np.ndarray | None:
    """Bool ``[len(seeds), N]``: which test images each seed got right; None when a
    seed's predictions are missing."""
    if not seeds or any(s not in outcomes for s in seeds):
        return None
    return np.stack([outcomes[s] for s in seeds])


def _loss_curve(rows: list[dict]) -> list[tuple[float, float]]:
    """``(epochs so far, training loss)`` points, the mean over the seeds' curves."""
    points = []
    for e in range(min(len(r["epochs"]) for r in rows)):
        curves = [r["epochs"][e].get("train_loss_curve") for r in rows]
        if not all(curves) or len({len(c) for c in curves}) != 1:
            return []
        n = len(curves[0])
        points += [(e + (j + 0.5) / n, float(np.mean([c[j] for c in curves])))
                   for j in range(n)]
    return points


def _compare(pair: Pair, a: dict, b: dict, outcomes: dict[str, dict[int, np.ndarray]],
             missing: str | None, margin: float) -> dict:
    common = sorted(set(a) & set(b))
    out: dict[str, Any] = {"a": pair.a, "b": pair.b, "question": pair.question,
                           "seeds": common, "verdict": "not compared", "margin": margin}
    why = None
    if not common:
        why = f"{pair.a} and {pair.b} share no finished seed yet"
    elif len(common) < 2:
        why = "one seed cannot measure the seed noise"
    else:
        why = missing
    ca = _correct(outcomes.get(pair.a, {}), common) if not why else None
    cb = _correct(outcomes.get(pair.b, {}), common) if not why else None
    if not why and (ca is None or cb is None):
        why = "the per-image predictions of a seed are missing"
    if why:
        out["sentence"] = f"{pair.question}: not compared ({why})."
        return out
    c = stats.compare(ca, cb, margin=margin)
    out["comparison"] = c
    out["mde"] = c.mde()
    out["mcnemar"] = [dict(stats.mcnemar(x, y), seed=s) for s, x, y in zip(common, ca, cb)]
    return out


def _holm(pairs: list[dict]) -> None:
    """Holm-adjust the compared pairs' p-values (difference, and equivalence) as one
    family, set each pair's verdict from the adjusted ones and write its sentence."""
    done = [p for p in pairs if "comparison" in p]
    if not done:
        return

    def one(v):  # a comparison without a noise estimate counts, as a p of 1
        return 1.0 if math.isnan(v) else v

    p_holm = stats.holm([one(p["comparison"].p_value) for p in done])
    eq_holm = stats.holm([one(p["comparison"].p_equivalence) for p in done])
    for p, ph, eh in zip(done, p_holm, eq_holm):
        c = p["comparison"]
        judged = c.with_p(ph, eh)
        p.update(p_holm=ph, p_equivalence_holm=eh, verdict=judged.verdict)
        if c.se == 0:
            same = ("the models agree on every seed and image" if c.difference == 0 else
                    "the same difference on every seed and image")
            p["sentence"] = (f"{p['question']}: {p['a']} minus {p['b']} = "
                             f"{c.difference:+.2f} points ({same}): no noise estimate, "
                             f"inconclusive.")
            continue
        words = {
            "a better": f"**{p['a']} is more accurate**",
            "b better": f"**{p['b']} is more accurate**",
            "equivalent": f"**equivalent** within ±{c.margin:g} points (two one-sided "
                          f"tests, Holm p = {eh:.2g})",
            "inconclusive": f"inconclusive: neither a difference nor equivalence within "
                            f"±{c.margin:g} points shown",
        }[judged.verdict]
        p["sentence"] = (f"{p['question']}: {p['a']} minus {p['b']} = {c.difference:+.2f} "
                         f"points (unadjusted 95% CI {c.low:+.2f} to {c.high:+.2f}; p = "
                         f"{c.p_value:.2g}, Holm p = {ph:.2g}): {words}.")


PAIR_COLUMNS = ("a", "b", "question", "seeds", "difference_pts", "ci_low_pts",
                "ci_high_pts", "p", "p_holm", "verdict", "margin_pts", "se_pts", "df",
                "p_equivalence", "p_equivalence_holm", "mde_pts", "seed_sd_pts",
                "mcnemar_p_per_seed")


def _pairs_csv(pairs: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PAIR_COLUMNS)
    for p in pairs:
        head = [p["a"], p["b"], p["question"], len(p["seeds"])]
        if "comparison" not in p:
            w.writerow(head + [""] * 5 + [p["verdict"], p["margin"]] + [""] * 7)
            continue
        c = p["comparison"]
        w.writerow(head + [c.difference, c.low, c.high, c.p_value, p["p_holm"], p["verdict"],
                           c.margin, c.se, c.df, c.p_equivalence, p["p_equivalence_holm"],
                           p["mde"], c.seed_sd,
                           ";".join(f"{m['p']:.4g}" for m in p["mcnemar"])])
    return buf.getvalue()


def _markdown(experiment: Experiment, configs: list[dict], pairs: list[dict],
              rows: list[dict], failures: Sequence[tuple[str, str]] = ()) -> str:
    lines = [f"# {experiment.title}", ""]
    lines += list(experiment.notes) + ([""] if experiment.notes else [])
    if rows:
        r = rows[0]
        t = r["train"]
        lines.append(
            f"Training: {t['dataset']}, {t['epochs']} epoch(s) of "
            f"{t['train_examples'] or 'all'} training images, batch {t['batch_size']}, "
            f"{t['optimizer']} lr {t['learning_rate']} ({t['schedule']}), "
            f"{t['compute_dtype']} compute; test on "
            f"{r['test_examples']:,} images. Device: {r['device_kind']}; jax "
            f"{r['jax_version']}, flax {r['flax_version']}, commit {r['git_commit']}.")
        lines.append("")
    lines.append("| config | seeds | test acc % (mean ± seed std) | 95% CI (seeds + test "
                 "images) | params | MFLOPs/image | train s/seed | images/s |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for c in configs:
        a, iv = c["test_accuracy"], c["interval"]
        std = "" if math.isnan(a["std"]) else f" ± {_pts(a['std'])}"
        ci = "-" if iv is None or math.isnan(iv.low) else f"{iv.low:.2f} to {iv.high:.2f}"
        lines.append(f"| {c['config_id']} | {a['n']} | {_pts(a['mean'])}{std} | {ci} | "
                     f"{c['params']:,} | {c['flops_per_image'] / 1e6:.2f} | "
                     f"{c['train_seconds']:.1f} | {c['images_per_second']:,.0f} |")
    lines += ["", "MFLOPs/image: forward (inference) FLOPs of one image, every tap counted "
              "(`python -m convjax.explain --model=<config>`). 95% CI: the interval of the "
              "config's accuracy over seeds *and* test sets of this size "
              "(`convjax.stats.accuracy_interval`; the seeds share one test set, so its "
              "sampling noise does not shrink with more seeds). train s/seed: a seed's "
              "share of its run's training time (seeds train together); images/s: training "
              "images per second of the run, all its seeds together.", ""]
    if pairs:
        done = [p for p in pairs if "comparison" in p]
        lines += ["## Comparisons", "", _method_text(experiment, done), ""]
        lines += [f"- {p['sentence']}" for p in pairs]
        lines.append("")
    missing = [c for c in experiment.configs if c not in {x["config_id"] for x in configs}]
    if missing:
        lines += [f"Not trained yet: {', '.join(missing)}.", ""]
    for mid, message in failures:
        lines += [f"**Failed** {mid}: {message}", ""]
    return "\n".join(lines)


def _method_text(experiment: Experiment, done: list[dict]) -> str:
    m = len(done)
    text = ("Each pair is judged on the per-image outcomes of the seeds both configs have "
            "(`convjax.stats.compare`): the difference a - b in accuracy points, its 95% "
            "interval over seeds *and* test images (a crossed two-way variance "
            "decomposition; the interval is the pair's own, unadjusted), and a verdict from "
            "p-values adjusted by Holm's method over the "
            f"{m} pair{'s' if m != 1 else ''} compared here, so that the chance of any false "
            "\"more accurate\" among them stays at or below 5%: a pair whose unadjusted "
            "interval excludes 0 can still be inconclusive. "
            f"\"Equivalent\" needs two one-sided tests (Holm-adjusted) to place the "
            f"difference within ±{experiment.margin:g} points, this experiment's equivalence "
            f"margin: {experiment.margin_reason} \"Inconclusive\" means neither a difference "
            "nor equivalence was shown: it is not \"no difference\".")
    mdes = [p["mde"] for p in done if not math.isnan(p["mde"])]
    if mdes:
        seeds = sorted({p["comparison"].seeds for p in done})
        images = done[0]["comparison"].images
        strict = [p["comparison"].mde(alpha=0.05 / m) for p in done
                  if not math.isnan(p["mde"])]
        at = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
        text += (f" At {at} seeds and {images:,} test images, the smallest "
                 f"difference a pair here detects with 80% power is {min(mdes):.2f} to "
                 f"{max(mdes):.2f} points at the 5% level ({min(strict):.2f} to "
                 f"{max(strict):.2f} at Holm's strictest threshold, 0.05/{m}).")
    text += (" `pairs.csv` also lists, per seed, McNemar's exact p: whether the images "
             "only one of the two models gets right lean to one side on that seed (a detail "
             "per seed, not a verdict).")
    return text


def _csv(configs: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["config_id", "seeds", "test_accuracy_mean", "test_accuracy_std",
                "test_accuracy_ci95_low", "test_accuracy_ci95_high", "test_loss_mean",
                "params", "flops_per_image", "train_flops_per_image", "train_seconds_mean",
                "images_per_second_mean"])
    for c in configs:
        a, iv = c["test_accuracy"], c["interval"]
        low, high = (math.nan, math.nan) if iv is None else (iv.low / 100, iv.high / 100)
        w.writerow([c["config_id"], a["n"], a["mean"], a["std"], low, high,
                    c["test_loss"], c["params"], c["flops_per_image"],
                    c["train_flops_per_image"], c["train_seconds"], c["images_per_second"]])
    return buf.getvalue()


def save_figure(fig, path: str) -> None:
    """Write a matplotlib figure to ``path`` as PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    T.atomic_write(path, buf.getvalue())


def _plots(experiment: Experiment, configs: list[dict], output_dir: str) -> None:
    # matplotlib's object API (no pyplot): no global state, no display backend needed.
    from matplotlib.figure import Figure

    for key, label, name in (("flops_per_image", "forward FLOPs per image", "flops"),
                             ("params", "parameters", "params")):
        fig = Figure(figsize=(8, 5.5))
        ax = fig.add_subplot()
        for c in configs:
            a, iv = c["test_accuracy"], c["interval"]
            err = 0 if iv is None or math.isnan(iv.low) else [[100 * a["mean"] - iv.low],
                                                              [iv.high - 100 * a["mean"]]]
            ax.errorbar(c[key], 100 * a["mean"], yerr=err, fmt="o", capsize=4)
            ax.annotate(c["config_id"], (c[key], 100 * a["mean"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} (log scale)")
        ax.set_ylabel("test accuracy % (mean over seeds; 95% CI, seeds + test images)")
        ax.set_title(f"{experiment.title}: accuracy vs {label}", fontsize=10)
        ax.grid(True, alpha=0.3)
        save_figure(fig, os.path.join(output_dir, f"accuracy_vs_{name}.png"))

    fig = Figure(figsize=(12, 5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for c in configs:
        if c["loss_curve"]:
            xs, ys = zip(*c["loss_curve"])
            loss_ax.plot(xs, ys, label=c["config_id"])
        acc = 100 * np.asarray(c["accuracy_curve"])
        acc_ax.plot(np.arange(1, len(acc) + 1), acc, marker="o", label=c["config_id"])
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("epochs of training")
    loss_ax.set_ylabel("training loss (mean over seeds)")
    loss_ax.set_title("training loss during training", fontsize=10)
    acc_ax.set_xlabel("after epoch")
    acc_ax.set_ylabel("test accuracy % (mean over seeds)")
    acc_ax.set_title("test accuracy after each epoch", fontsize=10)
    acc_ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
    acc_ax.legend(fontsize=7)
    fig.suptitle(f"{experiment.title}: learning curves", fontsize=11)
    save_figure(fig, os.path.join(output_dir, "learning_curves.png"))
