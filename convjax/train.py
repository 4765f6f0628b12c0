"""Training engine: whole epochs on the device, one fused step, exact evaluation.

:func:`train_and_evaluate` is what the command (``python -m experiments.train``), a
notebook and the tests call. The design:

* the dataset lives on the device (``uint8`` images, converted per batch inside the step);
* an epoch is one jitted function: an on-device shuffle, then ``lax.scan`` over the
  batches of a fused step (forward, backward and optimizer update in one program), with
  the training state donated;
* evaluation scans over fixed-size batches with a mask for the last partial batch, so
  every test image counts exactly once;
* everything is a pure function of ``(state, key, data)``: the same seed and config give
  the same metrics (tested), and several seeds/devices (vmap, sharding) can wrap it.

Learning-rate schedules are functions of the optimizer step; the default recipe (see
:class:`TrainConfig`) reaches 99% MNIST test accuracy with the Flax-example CNN in 3
epochs (chosen on a validation split).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from convjax import analysis as A
from convjax import data as D
from convjax import models as M

__all__ = ["TrainConfig", "TrainState", "make_schedule", "make_optimizer", "create_state",
           "seed_keys", "epoch_order", "train_epoch_fn", "make_train_epoch", "evaluate_fn",
           "make_evaluate", "over_seeds", "SEED_STRATEGIES", "train_and_evaluate", "RunResult",
           "OPTIMIZERS", "SCHEDULES", "COMPUTE_DTYPES", "ADDED_FIELDS", "YNN_FLAG",
           "default_xla_flags", "write_json", "atomic_write", "count_compilations"]

#: Points of each epoch's training-loss curve in the metrics (means of equal runs of steps).
CURVE_POINTS = 20

OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "one_cycle")
#: ``TrainConfig.compute_dtype`` values: float32, or bfloat16 (TPU-native mixed precision).
COMPUTE_DTYPES = ("float32", "bfloat16")

#: :class:`TrainConfig` fields added after results and checkpoints were first written,
#: with the value that files without them were trained with (read as such on resume).
ADDED_FIELDS = {"compute_dtype": "float32"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
      model: a model id of :mod:`convjax.models` (``flax-example``, ``plain-k3-w32.64``).
      dataset: ``mnist``, ``fashion_mnist`` or ``kmnist``.
      epochs: passes over the training set (the last partial batch of each shuffled epoch
        is dropped; evaluation counts every image).
      batch_size: training batch.
      optimizer: ``sgd`` (with ``momentum``, Nesterov off), ``adam``, ``adamw`` or
        ``adadelta``.
      learning_rate: peak learning rate.
      momentum: SGD momentum.
      weight_decay: decoupled for ``adamw``, added to the gradient (L2) for the others.
      schedule: ``constant``, ``cosine`` (to 0 over the run), ``warmup_cosine`` (linear
        warm-up over ``warmup_epochs``, then cosine to 0) or ``one_cycle``.
      warmup_epochs: warm-up length for ``warmup_cosine`` (fraction of an epoch allowed).
      seed: initialization, shuffling and dropout of the first seed.
      seeds: seeds trained at once, in one compiled program (``jax.vmap`` over their
        initialization and data-order keys): ``seed, seed + 1, ..., seed + seeds - 1``.
        Each gives the same metrics as a run with ``seeds=1`` and that ``seed`` (within
        float round-off).
      validation_size: images held out of the training set for model selection
        (stratified, seeded); when > 0 they are evaluated every epoch.
      eval_batch_size: evaluation batch (the last one is masked).
      train_examples: use only the first this many training images (0: all), for quick
        runs and smoke tests.
      compute_dtype: ``float32``, or ``bfloat16`` for mixed precision: params, batch
        statistics and optimizer state stay float32 (the master copy the optimizer
        updates); each step casts the params and the images to bfloat16, so every conv,
        matmul and activation runs in bfloat16 (accumulating in float32, see
        :mod:`convjax.functional`), and the logits go back to float32 for the loss.
        Gradients reach the float32 params through the cast. Evaluation computes the
        same way. bfloat16 is what TPU matrix units run natively; on CPU it is emulated
        and slower than float32.
    """

    model: str = "flax-example"
    dataset: str = "mnist"
    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "warmup_cosine"
    warmup_epochs: float = 0.5
    seed: int = 0
    seeds: int = 1
    validation_size: int = 0
    eval_batch_size: int = 1000
    train_examples: int = 0
    compute_dtype: str = "float32"

    def __post_init__(self):
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 1, "epochs must be an int >= 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1,
             "batch_size must be an int >= 1"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (isinstance(self.seed, int) and self.seed >= 0, "seed must be an int >= 0"),
            (isinstance(self.seeds, int) and self.seeds >= 1, "seeds must be an int >= 1"),
            (isinstance(self.validation_size, int) and self.validation_size >= 0,
             "validation_size must be an int >= 0"),
            (isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1,
             "eval_batch_size must be an int >= 1"),
            (isinstance(self.train_examples, int) and self.train_examples >= 0,
             "train_examples must be an int >= 0"),
            (self.compute_dtype in COMPUTE_DTYPES,
             f"compute_dtype must be one of {COMPUTE_DTYPES}"),
        ]
        for ok, message in checks:
            if not ok:
                field = message.split()[0]
                raise ValueError(f"TrainConfig: {message}, got {getattr(self, field)!r}")
        M.parse(self.model)  # raises on a bad id

    @property
    def seed_list(self) -> list[int]:
        """``[seed, seed + 1, ..., seed + seeds - 1]``."""
        return list(range(self.seed, self.seed + self.seeds))


class TrainState(NamedTuple):
    """The training state: a pytree, donated to each epoch."""

    params: Any
    batch_stats: Any
    opt_state: Any


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step."""
    total = max(config.epochs * steps_per_epoch, 1)
    lr = config.learning_rate
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total)
    if config.schedule == "warmup_cosine":
        warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 0), total)
    return optax.cosine_onecycle_schedule(total, lr)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax optimizer of ``config`` with its schedule and weight decay."""
    lr = make_schedule(config, steps_per_epoch)
    wd = config.weight_decay
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=wd)
    base = {"sgd": lambda: optax.sgd(lr, momentum=config.momentum or None),
            "adam": lambda: optax.adam(lr),
            "adadelta": lambda: optax.adadelta(lr)}[config.optimizer]()
    return optax.chain(optax.add_decayed_weights(wd), base) if wd else base


def create_state(model, tx: optax.GradientTransformation, key: jax.Array,
                 input_shape: tuple[int, ...]) -> TrainState:
    """Initialize params (and batch stats) for ``[1, *input_shape]`` inputs."""
    variables = model.init(key, jnp.zeros((1, *input_shape), jnp.float32))
    params = variables["params"]
    return TrainState(params, variables.get("batch_stats", {}), tx.init(params))


def _images(x: jax.Array) -> jax.Array:
    return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


def _compute_dtype(compute_dtype: Any) -> Any:
    """None for float32 (nothing to cast), else the numpy dtype."""
    if compute_dtype is None or jnp.dtype(compute_dtype) == jnp.float32:
        return None
    return jnp.dtype(compute_dtype)


def _cast_params(params: Any, compute_dtype: Any) -> Any:
    """The floating leaves of ``params`` in ``compute_dtype`` (unchanged for float32)."""
    dtype = _compute_dtype(compute_dtype)
    if dtype is None:
        return params
    return jax.tree.map(
        lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, params)


def _apply(model, params, batch_stats, x, *, train: bool, key=None, compute_dtype=None):
    """``(float32 logits, new_batch_stats)``; with a ``compute_dtype`` the model runs on
    a copy of ``params`` and ``x`` cast to it (batch statistics stay float32)."""
    params = _cast_params(params, compute_dtype)
    dtype = _compute_dtype(compute_dtype)
    if dtype is not None:
        x = x.astype(dtype)
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    if not train:
        logits = model.apply(variables, x)
    elif batch_stats:
        logits, updates = model.apply(variables, x, train=True, rngs={"dropout": key},
                                      mutable=["batch_stats"])
        batch_stats = updates["batch_stats"]
    else:
        logits = model.apply(variables, x, train=True, rngs={"dropout": key})
    return logits.astype(jnp.float32), batch_stats


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(init_key, data_key)`` of one seed: the first initializes the model; epoch ``e``
    shuffles (and draws dropout) with ``fold_in(data_key, e)``, so any epoch's data order
    can be recomputed, e.g. after resuming from a checkpoint."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    return init_key, data_key


def epoch_order(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """The training examples of one epoch, ``[S, batch_size]`` indices (``S = N //
    batch_size`` steps, the shuffled remainder dropped), for the epoch key ``key``."""
    steps = num_examples // batch_size
    perm_key, _ = _epoch_subkeys(key)
    return jax.random.permutation(perm_key, num_examples)[:steps * batch_size].reshape(
        steps, batch_size)


def _epoch_subkeys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(shuffle key, dropout key)`` of an epoch key."""
    perm_key, drop_key = jax.random.split(key)
    return perm_key, drop_key


SEED_STRATEGIES = ("auto", "vmap", "loop")


def over_seeds(fn: Callable, in_axes: tuple, strategy: str = "vmap") -> Callable:
    """``fn`` mapped over a leading seed axis of the arguments whose ``in_axes`` entry is
    0 (None: shared by every seed), the outputs stacked on a new leading axis.

    ``"vmap"``: ``jax.vmap``; on TPU and GPU a batched conv (JAX folds the seed axis
    into feature groups) is fast. ``"loop"``: an unrolled loop over the seeds in the same
    program, each seed's ops the plain ones; XLA:CPU runs grouped convs, and above all
    their gradients, far slower (4 seeds of the Flax-example CNN: 1.6x the time of 4
    separate runs with vmap). ``"auto"``: loop on CPU, vmap elsewhere.
    """
    if strategy == "auto":
        strategy = "loop" if jax.default_backend() == "cpu" else "vmap"
    if strategy == "vmap":
        return jax.vmap(fn, in_axes=in_axes)
    if strategy != "loop":
        raise ValueError(f"train: seed strategy must be one of {SEED_STRATEGIES}, got "
                         f"{strategy!r}")

    def looped(*args):
        size = next(jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes)
                    if ax == 0)
        outs = [fn(*(jax.tree.map(lambda v: v[i], a) if ax == 0 else a
                     for a, ax in zip(args, in_axes))) for i in range(size)]
        return jax.tree.map(lambda *v: jnp.stack(v), *outs)
    return looped


def train_epoch_fn(model, tx: optax.GradientTransformation, batch_size: int,
                   num_examples: int, batch_sharding: Any = None,
                   strategy: str = "auto", report: Callable | None = None,
                   report_every: int = 0, compute_dtype: Any = None) -> Callable:
    """The pure, un-jitted epoch of ``S`` seeds: ``epoch(state, keys, images, labels) ->
    (state, losses [S, steps], accuracies [S, steps])``. Every leaf of ``state`` and
    ``keys`` (one epoch key per seed, see :func:`seed_keys`) has a leading seed axis;
    ``images: [N, H, W, C]`` (uint8 or float) and ``labels: [N]`` are shared and stay on
    the device. Each seed's key shuffles the data for that seed and drives its dropout;
    ``steps = N // batch_size``. ``batch_sharding``: where each step's batch goes (data
    parallelism: split over a mesh axis), or None. ``strategy``: how the step maps over
    the seeds (:func:`over_seeds`). ``report``: called on the host as ``report(step,
    loss, accuracy)`` (that step's values, means over the seeds) after every
    ``report_every`` steps, for progress within an epoch (one device only).
    ``compute_dtype``: ``jnp.bfloat16`` for mixed precision (see
    :attr:`TrainConfig.compute_dtype`); None or float32: everything in float32."""
    steps = num_examples // batch_size
    if report is not None and report_every < 1:
        raise ValueError(f"train: report_every must be >= 1 with a report callback, got "
                         f"{report_every!r}")
    if steps < 1:
        raise ValueError(f"train: batch_size={batch_size} is larger than the {num_examples} "
                         f"training examples")

    def step(state, idx, key, images, labels):
        x, y = _images(images[idx]), labels[idx]
        if batch_sharding is not None:
            x = jax.lax.with_sharding_constraint(x, batch_sharding)
            y = jax.lax.with_sharding_constraint(y, batch_sharding)

        def loss_fn(params):
            logits, new_stats = _apply(model, params, state.batch_stats, x, train=True,
                                       key=key, compute_dtype=compute_dtype)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
        return TrainState(params, new_stats, opt_state), (loss, acc)

    seeds_step = over_seeds(step, (0, 0, 0, None, None), strategy)

    def body(carry, inputs):
        state, images, labels = carry
        idx, keys, i = inputs                               # [S, B], [S], step index
        state, out = seeds_step(state, idx, keys, images, labels)
        if report is not None:  # a host callback every report_every steps
            jax.lax.cond((i + 1) % report_every == 0,
                         lambda: jax.debug.callback(report, i + 1, out[0].mean(),
                                                    out[1].mean()),
                         lambda: None)
        return (state, images, labels), out

    def epoch(state, keys, images, labels):
        orders = jax.vmap(lambda k: epoch_order(k, labels.shape[0], batch_size))(keys)
        step_keys = jax.vmap(lambda k: jax.random.split(_epoch_subkeys(k)[1], steps))(keys)
        (state, _, _), (losses, accs) = jax.lax.scan(
            body, (state, images, labels), (jnp.swapaxes(orders, 0, 1),
                                            jnp.swapaxes(step_keys, 0, 1),
                                            jnp.arange(steps)))
        return state, losses.T, accs.T

    return epoch


def make_train_epoch(model, tx: optax.GradientTransformation, batch_size: int,
                     num_examples: int) -> Callable:
    """One seed's epoch, jitted, ``state`` donated: ``epoch(state, key, images, labels)
    -> (state, losses [steps], accuracies [steps])`` (:func:`train_epoch_fn` without the
    seed axis)."""
    fn = train_epoch_fn(model, tx, batch_size, num_examples)

    def epoch(state, key, images, labels):
        state, losses, accs = fn(jax.tree.map(lambda v: v[None], state), key[None], images,
                                 labels)
        return jax.tree.map(lambda v: v[0], state), losses[0], accs[0]
    return jax.jit(epoch, donate_argnums=(0,))


def evaluate_fn(model, eval_batch_size: int, num_examples: int,
                batch_sharding: Any = None, with_predictions: bool = False,
                compute_dtype: Any = None) -> Callable:
    """The pure evaluation of one seed: ``evaluate(params, batch_stats, images, labels)
    -> (mean loss, accuracy)`` over fixed batches of ``eval_batch_size``, the last one
    masked, every image counted once. ``with_predictions``: also return the predicted
    class of every image, ``[N]`` int32 (the argmax of the logits). ``compute_dtype``:
    as :func:`train_epoch_fn`."""
    batches = -(-num_examples // eval_batch_size)
    idx = np.minimum(np.arange(batches * eval_batch_size), num_examples - 1)
    mask = (np.arange(batches * eval_batch_size) < num_examples).astype(np.float32)
    idx, mask = idx.reshape(batches, eval_batch_size), mask.reshape(batches, eval_batch_size)

    def evaluate(params, batch_stats, images, labels):
        params = _cast_params(params, compute_dtype)  # once, not in every batch

        def body(totals, inputs):
            i, m = inputs
            x = _images(images[i])
            if batch_sharding is not None:
                x = jax.lax.with_sharding_constraint(x, batch_sharding)
            logits, _ = _apply(model, params, batch_stats, x, train=False,
                               compute_dtype=compute_dtype)
            y = labels[i]
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            classes = jnp.argmax(logits, -1).astype(jnp.int32)
            correct = (classes == y).astype(jnp.float32)
            return ((totals[0] + jnp.sum(loss * m), totals[1] + jnp.sum(correct * m)),
                    classes if with_predictions else None)

        (loss, correct), classes = jax.lax.scan(body, (jnp.zeros(()), jnp.zeros(())),
                                                (jnp.asarray(idx), jnp.asarray(mask)))
        if with_predictions:
            return (loss / num_examples, correct / num_examples,
                    classes.reshape(-1)[:num_examples])
        return loss / num_examples, correct / num_examples

    return evaluate


def make_evaluate(model, eval_batch_size: int, num_examples: int) -> Callable:
    """:func:`evaluate_fn` of one seed, jitted."""
    return jax.jit(evaluate_fn(model, eval_batch_size, num_examples))


@contextlib.contextmanager
def count_compilations():
    """Count the XLA compilations made while the block runs, by function name.

    Yields a :class:`collections.Counter` (``{fun_name: compilations}``) that fills as
    programs compile (JAX's ``/jax/core/compile/backend_compile_duration`` event: every
    backend compilation, a persistent-cache hit included; a program found in the
    in-memory cache of an earlier call is not compiled again and not counted). A run of
    :func:`train_and_evaluate` compiles its epoch (``epoch_fn``) and each evaluation
    once, however many epochs it trains (tested).

    >>> with count_compilations() as compiled:
    ...     _ = jax.jit(lambda x: x * 2)(jnp.ones(3))
    >>> compiled["jit(<lambda>)"]
    1
    """
    counts: collections.Counter = collections.Counter()
    event = "/jax/core/compile/backend_compile_duration"

    def listener(name, _duration, fun_name="?", **_):
        if name == event:
            counts[fun_name] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# --------------------------------------------------------------------------------------
# XLA flags for CPU
# --------------------------------------------------------------------------------------

#: XLA:CPU flag that turns YNNPACK's fusions off (its default list is INDIVIDUAL_DOT,
#: INDIVIDUAL_CONVOLUTION, REDUCE in jaxlib 0.10; they go back to Eigen); see README.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def _jaxlib_version() -> tuple[int, ...]:
    from importlib import metadata
    try:
        return tuple(int(p) for p in metadata.version("jaxlib").split(".")[:3])
    except Exception:  # noqa: BLE001 - unknown build: do not touch flags
        return (0,)


def default_xla_flags(enable: bool = True) -> str | None:
    """Append :data:`YNN_FLAG` to ``XLA_FLAGS`` when it helps and is safe to set.

    Only on jaxlib >= 0.10 (older XLA aborts on an unknown flag), only when the user has
    not set the flag, and only before JAX has created its CPU backend (call it first
    thing). Returns the flag that was added, or None.
    """
    if not enable or _jaxlib_version() < (0, 10):
        return None
    current = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in current:
        return None
    if "jax" in sys.modules:
        from jax._src import xla_bridge
        if getattr(xla_bridge, "_backends", None):
            return None  # too late: the backend has read XLA_FLAGS already
    os.environ["XLA_FLAGS"] = (current + " " + YNN_FLAG).strip()
    return YNN_FLAG


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What :func:`train_and_evaluate` returns.

    Attributes:
      epochs: one dict per epoch (``epoch``, ``train_loss``, ``train_accuracy``,
        ``test_loss``, ``test_accuracy``, ``validation_*`` when used: means over the
        seeds; ``per_seed``: the same per seed, each with its ``seed`` and its
        ``train_loss_curve`` (the epoch's training loss as :data:`CURVE_POINTS` means of
        consecutive runs of steps);
        ``images_per_second`` (all seeds' images), ``train_seconds``, ``eval_seconds``,
        ``learning_rate``), accuracies as fractions.
      summary: the run's ``metrics.json`` content.
      state: the final :class:`TrainState`, every leaf with a leading seed axis.
      predictions: the predicted class of every test image after the last epoch trained
        in this call, ``[S, N_test]`` int32 (None when a resumed run had nothing left to
        train).
    """

    epochs: list[dict[str, Any]]
    summary: dict[str, Any]
    state: TrainState
    predictions: np.ndarray | None = None


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory,
    flushed to disk, then renamed over ``path`` (a reader sees the old or the new file,
    never a part)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (:func:`atomic_write`)."""
    atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode())


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def default_progress(line: str) -> None:
    """absl logging on a terminal; a plain flushed print in a notebook cell."""
    if _in_notebook():
        print(line, flush=True)
    else:
        logging.info("%s", line)


def _flops_per_image(model, input_shape) -> tuple[int, int]:
    """``(forward, training)`` FLOPs per image, from one analysis of the model: training
    counts the forward pass, kernel gradients and the input gradients needed (see
    :mod:`convjax.analysis.xla`)."""
    analysis = A.analyze_model(model, input_shape)
    return int(analysis.total()["flops"]), 2 * A.xla.train_macs(analysis)


def train_and_evaluate(config: TrainConfig, *, data_dir: str | None = None,
                       output_dir: str | None = None,
                       progress: Callable[[str], None] | None = default_progress,
                       train_split: D.Split | None = None,
                       test_split: D.Split | None = None,
                       parallel: str = "auto",
                       checkpoint_every: int = 0,
                       resume: bool = False,
                       seed_strategy: str = "auto") -> RunResult:
    """Train ``config.model`` on ``config.dataset`` for each of ``config.seeds`` seeds at
    once, and evaluate every seed after every epoch.

    Args:
      config: the run.
      data_dir: IDX directory (see :func:`convjax.data.load`).
      output_dir: if given, ``metrics.jsonl`` (one line per epoch, appended as the run
        goes) and ``metrics.json`` (the summary, atomically) are written there, and the
        checkpoints under ``checkpoints/``; nothing else in it is touched.
      progress: called with one line per epoch (config, epoch, loss, accuracy, images/s,
        ETA) and one for the device layout; None for silence.
      train_split, test_split: data already loaded (tests pass small slices).
      parallel: ``auto``, ``single``, ``data`` or ``seeds``: how the seeds and batches
        are spread over ``jax.devices()`` (see :mod:`convjax.parallel`).
      checkpoint_every: save an orbax checkpoint (state and metrics so far) every this
        many epochs and after the last one; 0: only with ``resume``, after the last one.
        Needs ``output_dir``.
      resume: continue from the latest checkpoint in ``output_dir`` if there is one (the
        config must be the same); the result is bit-identical to an uninterrupted run
        on the same machine.
      seed_strategy: how the step maps over each device's seeds (:func:`over_seeds`);
        ``auto``: loop on CPU, vmap on TPU/GPU.

    Returns:
      :class:`RunResult`; ``state`` leaves carry a leading seed axis ``[S, ...]``.

    Raises:
      FloatingPointError: a seed's training loss became NaN or infinite; the message
        names the seed, the epoch, the step and the last finite loss.
      ValueError: checkpoints exist in ``output_dir`` but ``resume`` is off, or they
        belong to another config.
    """
    from convjax import checkpoint as C
    from convjax import parallel as PL

    model = M.get(config.model)
    seeds = config.seed_list
    val_split = None
    if train_split is None:
        train_split = D.load(config.dataset, "train", data_dir=data_dir,
                             validation_size=config.validation_size,
                             validation_seed=config.seed)
        if config.validation_size:
            val_split = D.load(config.dataset, "validation", data_dir=data_dir,
                               validation_size=config.validation_size,
                               validation_seed=config.seed)
    if test_split is None:
        test_split = D.load(config.dataset, "test", data_dir=data_dir)
    images, labels = np.asarray(train_split.images), np.asarray(train_split.labels)
    if config.train_examples:
        images, labels = images[:config.train_examples], labels[:config.train_examples]
    n = int(labels.shape[0])
    steps = n // config.batch_size
    placement = PL.place(parallel, len(seeds), config.batch_size, config.eval_batch_size)
    if progress:
        progress(f"{config.model}: {placement.describe(len(seeds), config.batch_size)}")
    tx = make_optimizer(config, steps)
    schedule = make_schedule(config, steps)
    input_shape = tuple(int(d) for d in images.shape[1:])

    keys = [seed_keys(s) for s in seeds]
    init_keys = jnp.stack([k[0] for k in keys])
    data_keys = jax.random.key_data(jnp.stack([k[1] for k in keys]))    # [S, 2] uint32
    state = jax.jit(jax.vmap(lambda k: create_state(model, tx, k, input_shape)))(init_keys)
    state = PL.put(state, placement.state)
    data_keys = PL.put(data_keys, placement.state)
    images, labels = PL.put(images, placement.data), PL.put(labels, placement.data)

    clock = {"epoch": 0, "start": time.perf_counter()}
    one_epoch = PL.per_device_seeds(
        train_epoch_fn(model, tx, config.batch_size, n, placement.batch, seed_strategy,
                       *_in_epoch_report(progress, placement, config, steps, len(seeds),
                                        clock), compute_dtype=config.compute_dtype),
        placement, n_shared=2, n_out=3)

    def epoch_fn(state, data_keys, epoch, images, labels):
        epoch_keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.wrap_key_data(k),
                                                           epoch))(data_keys)
        return one_epoch(state, epoch_keys, images, labels)

    t0 = time.perf_counter()
    compiled = jax.jit(epoch_fn, donate_argnums=(0,)).lower(
        state, data_keys, 1, images, labels).compile()
    compile_seconds = time.perf_counter() - t0
    evals = {"test": test_split}
    if val_split is not None:
        evals["validation"] = val_split
    compiled_evals = {}
    for name, split in evals.items():
        fn = PL.per_device_seeds(
            over_seeds(evaluate_fn(model, config.eval_batch_size, len(split.labels),
                                   placement.eval_batch, with_predictions=name == "test",
                                   compute_dtype=config.compute_dtype),
                       (0, 0, None, None), seed_strategy),
            placement, n_shared=2, n_out=3 if name == "test" else 2)
        x = PL.put(np.asarray(split.images), placement.data)
        y = PL.put(np.asarray(split.labels), placement.data)
        compiled_evals[name] = (jax.jit(fn).lower(state.params, state.batch_stats, x, y)
                                .compile(), x, y)

    history: list[dict[str, Any]] = []
    predictions = None
    manager = C.Checkpoints(output_dir, config) if output_dir and (checkpoint_every or
                                                                   resume) else None
    first_epoch = 1
    if manager is not None:
        restored = manager.restore(state) if resume else None
        if restored is None and manager.latest_epoch() is not None:
            raise ValueError(
                f"train: {manager.directory} already holds checkpoints (epoch "
                f"{manager.latest_epoch()}); pass resume=True (--resume) to continue that "
                f"run, or use another output_dir")
        if restored is not None:
            state, history = restored
            first_epoch = len(history) + 1
            if progress:
                progress(f"{config.model}: resumed from {manager.directory} after epoch "
                         f"{len(history)}")

    jsonl = None
    if output_dir and jax.process_index() == 0:  # one writer when several processes run
        os.makedirs(output_dir, exist_ok=True)
        jsonl = open(os.path.join(output_dir, "metrics.jsonl"), "w")
        for row in history:
            jsonl.write(json.dumps(row) + "\n")
        jsonl.flush()
    train_seconds = sum(h["train_seconds"] for h in history)
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            t0 = time.perf_counter()
            clock.update(epoch=epoch, start=t0)
            state, losses, accs = compiled(state, data_keys, epoch, images, labels)
            losses = PL.fetch(jax.block_until_ready(losses))               # [S, steps]
            accs = PL.fetch(accs)
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            for i, seed in enumerate(seeds):
                _check_finite(losses[i], epoch, history, seed, i)
            row = {"epoch": epoch, "train_seconds": seconds,
                   "images_per_second": len(seeds) * steps * config.batch_size / seconds,
                   "learning_rate": float(schedule(epoch * steps - 1))}
            per_seed = [{"seed": seed, "train_loss": float(losses[i].mean()),
                         "train_accuracy": float(accs[i].mean()),
                         "train_loss_curve": [float(c.mean()) for c in np.array_split(
                             losses[i], min(CURVE_POINTS, steps))]}
                        for i, seed in enumerate(seeds)]
            t0 = time.perf_counter()
            for name, (fn, x, y) in compiled_evals.items():
                loss, acc, *classes = fn(state.params, state.batch_stats, x, y)
                loss, acc = PL.fetch(loss), PL.fetch(acc)
                if classes:
                    predictions = classes[0]
                for i, r in enumerate(per_seed):
                    r[f"{name}_loss"], r[f"{name}_accuracy"] = float(loss[i]), float(acc[i])
            row["eval_seconds"] = time.perf_counter() - t0
            row["eval_images_per_second"] = len(seeds) * sum(
                len(v[2]) for v in compiled_evals.values()) / row["eval_seconds"]
            for k in per_seed[0]:
                if k not in ("seed", "train_loss_curve"):
                    row[k] = float(np.mean([r[k] for r in per_seed]))
            row["per_seed"] = per_seed
            history.append(row)
            if jsonl:
                jsonl.write(json.dumps(row) + "\n")
                jsonl.flush()
            if manager is not None and (epoch == config.epochs or (
                    checkpoint_every and epoch % checkpoint_every == 0)):
                manager.save(epoch, state, history)
            if progress:
                eta = (config.epochs - epoch) * (seconds + row["eval_seconds"])
                val = (f"validation acc {row['validation_accuracy']:.4f}, "
                       if "validation_accuracy" in row else "")
                mean = " (mean of seeds)" if len(seeds) > 1 else ""
                progress(f"{config.model} epoch {epoch}/{config.epochs}{mean}: train loss "
                         f"{row['train_loss']:.4f} acc {row['train_accuracy']:.4f}, {val}test "
                         f"loss {row['test_loss']:.4f} acc {row['test_accuracy']:.4f}, "
                         f"{row['images_per_second']:,.0f} images/s, ETA {eta:.0f} s")
    finally:
        if jsonl:
            jsonl.close()
        if manager is not None:
            manager.close()
    last = history[-1]["per_seed"]
    forward_flops, train_flops = _flops_per_image(model, input_shape)
    summary = {
        "config": dataclasses.asdict(config),
        "accuracy_unit": "fraction",
        "seeds": seeds,
        "test_accuracy": [r["test_accuracy"] for r in last],
        "per_seed": last,
        "parallel": placement.mode,
        "train_images_per_second": len(seeds) * steps * config.batch_size * len(history) /
        train_seconds,
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "eval_images_per_second": float(np.median([h["eval_images_per_second"]
                                                   for h in history])),
        "params": M.count_params({"params": jax.tree.map(  # one seed's, from shapes
            lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), state.params)}),
        "flops_per_image": train_flops,
        "forward_flops_per_image": forward_flops,
        "devices": [str(d) for d in placement.mesh.devices.flat],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_version": jax.__version__,
        "epochs": history,
    }
    if output_dir and jax.process_index() == 0:
        write_json(os.path.join(output_dir, "metrics.json"), summary)
    if predictions is not None:
        predictions = PL.fetch(predictions)
    return RunResult(history, summary, state, predictions)


def _in_epoch_report(progress, placement, config: TrainConfig, steps: int, n_seeds: int,
                     clock: dict) -> tuple[Callable | None, int]:
    """``(report, report_every)`` for :func:`train_epoch_fn`: a line a few times per
    epoch (never more than every 10 s) when ``progress`` is given and one device runs the
    epoch; ``(None, 0)`` otherwise (the compiled epoch is then exactly the plain one).
    ``clock``: ``{"epoch", "start"}``, kept current by the epoch loop."""
    if progress is None or placement.mode != "single" or jax.process_count() > 1:
        return None, 0
    every = max(1, steps // 8)
    last = [0.0]

    def report(step, loss, acc):
        now = time.perf_counter()
        if now - max(last[0], clock["start"]) < 10 or int(step) >= steps:
            return
        last[0] = now
        seconds = now - clock["start"]
        rate = n_seeds * int(step) * config.batch_size / max(seconds, 1e-9)
        eta = seconds / int(step) * (steps - int(step))
        mean = " (mean of seeds)" if n_seeds > 1 else ""
        progress(f"{config.model} epoch {clock['epoch']}/{config.epochs} step {int(step)}/"
                 f"{steps}{mean}: train loss {float(loss):.4f} acc {float(acc):.4f}, "
                 f"{rate:,.0f} images/s, epoch ETA {eta:.0f} s")
    return report, every


def _check_finite(losses: np.ndarray, epoch: int, history: list[dict], seed: int,
                  index: int) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size == 0:
        return
    step = int(bad[0])
    if step:
        last = f"{float(losses[step - 1]):.6g} (epoch {epoch}, step {step})"
    elif history:
        last = (f"{history[-1]['per_seed'][index]['train_loss']:.6g} (mean of epoch "
                f"{epoch - 1})")
    else:
        last = "none (the first step already failed)"
    raise FloatingPointError(
        f"train: the loss is {losses[step]} at epoch {epoch}, step {step + 1} of "
        f"{losses.size} (seed {seed}); last finite loss: {last}. Lower the learning rate "
        f"or check the data.")
