"""Where a training run's arrays live: one device, data parallel, or seeds over devices.

The engine (:mod:`convjax.train`) always trains a leading axis of ``S`` seeds (``S = 1``
included) with ``jax.vmap``; this module only decides how that program is spread over
the devices, with ``jax.sharding``, so one, eight or many-host devices run the same code:

* ``single``: everything on the first device.
* ``data``: a 1-D ``Mesh`` over every device (axis ``"data"``); params and optimizer
  state replicated, the dataset replicated, and each step's batch split along the mesh
  (``with_sharding_constraint`` inside the step), so XLA computes each device's share and
  all-reduces the gradients. Needs ``batch_size % devices == 0``.
* ``seeds``: a 1-D ``Mesh`` (axis ``"seeds"``) over which the seed axis of the state is
  split: one or more whole seeds per device, no traffic between devices in the step
  (``jax.shard_map``: each device runs the plain per-seed program on its own seeds).
  Needs ``seeds % devices == 0``. For tiny MNIST models on an 8-core TPU this is often the
  better use of the hardware.
* ``auto``: ``single`` on one device; else ``seeds`` when the seeds fill the devices
  evenly (``seeds % devices == 0``), else ``data``.

Many hosts: call :func:`initialize_distributed` first (``jax.distributed``); then
``jax.devices()`` lists every process's devices, the mesh spans them, and
:func:`put` builds each global array from the value every process computed identically
(the dataset, the initial state), each process supplying only the shards its own devices
hold.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["MODES", "Placement", "place", "per_device_seeds", "put", "fetch",
           "initialize_distributed"]

MODES = ("auto", "single", "data", "seeds")


@dataclasses.dataclass(frozen=True)
class Placement:
    """A resolved device layout for a run.

    Attributes:
      mode: ``single``, ``data`` or ``seeds`` (never ``auto``).
      mesh: the 1-D mesh (``single``: of one device).
      state: sharding of every leaf of the seed-stacked state ``[S, ...]`` and of the
        per-seed keys and metrics.
      data: sharding of the dataset arrays (replicated).
      batch: sharding of one step's ``[B, ...]`` batch inside the step, or None.
      eval_batch: the same for an evaluation batch, or None.
    """

    mode: str
    mesh: Mesh
    state: NamedSharding
    data: NamedSharding
    batch: NamedSharding | None
    eval_batch: NamedSharding | None

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def describe(self, seeds: int, batch_size: int) -> str:
        """One line for the logs: mode, devices, per-device work."""
        n = self.num_devices
        kind = self.mesh.devices.flat[0].platform
        if self.mode == "data":
            return (f"data parallel over {n} {kind} devices: global batch {batch_size}, "
                    f"{batch_size // n} per device; {seeds} seed(s) on every device")
        if self.mode == "seeds":
            return (f"seeds over {n} {kind} devices: {seeds // n} seed(s) per device, "
                    f"batch {batch_size} per seed")
        return f"one {kind} device: {seeds} seed(s), batch {batch_size}"


def place(mode: str, seeds: int, batch_size: int, eval_batch_size: int,
          devices: list | None = None) -> Placement:
    """Resolve ``mode`` (one of :data:`MODES`) for ``seeds`` seeds over ``devices``
    (default: ``jax.devices()``, every process's devices).

    Raises:
      ValueError: an unknown mode, a global batch not divisible by the device count in
        ``data`` mode, or seeds not divisible by it in ``seeds`` mode.
    """
    if mode not in MODES:
        raise ValueError(f"parallel: mode must be one of {MODES}, got {mode!r}")
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if mode == "auto":
        mode = "single" if n == 1 else ("seeds" if seeds % n == 0 else "data")
    if mode == "single":
        devices, n = devices[:1], 1
    if mode == "data" and batch_size % n:
        raise ValueError(f"parallel=data: the global batch_size={batch_size} is not "
                         f"divisible by the {n} devices (each device gets batch_size / "
                         f"{n} examples of every step); use a multiple of {n}")
    if mode == "seeds" and seeds % n:
        raise ValueError(f"parallel=seeds: seeds={seeds} is not divisible by the {n} "
                         f"devices (each device trains seeds / {n} whole seeds); use a "
                         f"multiple of {n} or parallel=data")
    axis = "seeds" if mode == "seeds" else "data"
    mesh = Mesh(np.array(devices), (axis,))
    replicated = NamedSharding(mesh, P())
    split = NamedSharding(mesh, P(axis))
    return Placement(
        mode=mode, mesh=mesh,
        state=split if mode == "seeds" else replicated,
        data=replicated,
        batch=split if mode == "data" else None,
        eval_batch=split if mode == "data" and eval_batch_size % n == 0 else None)


def per_device_seeds(fn, placement: Placement, n_shared: int, n_out: int):
    """In ``seeds`` mode, ``fn`` run by each device on its own block of seeds
    (``jax.shard_map``): ``fn(*seeded, *shared)`` takes arrays with a leading seed axis
    first, then ``n_shared`` arrays every seed shares, and returns ``n_out`` seed-stacked
    results. Without it, XLA partitions the seed-batched program (grouped convs), which
    XLA:CPU runs far slower. Other modes: ``fn`` as it is."""
    if placement.mode != "seeds":
        return fn
    split, shared = P("seeds"), P()

    def wrapped(*args):
        n_seeded = len(args) - n_shared
        return jax.shard_map(fn, mesh=placement.mesh,
                             in_specs=(split,) * n_seeded + (shared,) * n_shared,
                             out_specs=(split,) * n_out, check_vma=False)(*args)
    return wrapped


def put(tree: Any, sharding: NamedSharding) -> Any:
    """Every leaf of ``tree`` (the same value in every process) as a global array with
    ``sharding``; in a multi-process run each process supplies only its devices' shards."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree.map(one, tree)


def fetch(x: Any) -> np.ndarray:
    """A global array as one NumPy array in every process (``process_allgather`` when
    the array spans several processes)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Start ``jax.distributed`` for a multi-process run. With no arguments JAX detects
    the cluster where it can (TPU pods, SLURM); otherwise pass all three. On CPU the
    collectives go through gloo."""
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - older JAX: option absent, nothing to set
        pass
    if coordinator_address is None and num_processes is None and process_id is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
