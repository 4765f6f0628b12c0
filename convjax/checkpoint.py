"""Training checkpoints with orbax: the state, the metrics so far and the config.

Why orbax rather than our own files: it saves sharded and multi-host arrays (each
process writes its own shards), restores them onto any sharding given by a target, and
commits atomically: a checkpoint is written under a temporary name and renamed into place
only once complete, so an interrupted save leaves nothing that
:meth:`Checkpoints.latest_epoch` would return (tested by leaving such a partial
directory behind).

A checkpoint holds what the next epoch needs and nothing that can be recomputed: the
seed-stacked :class:`~convjax.train.TrainState` (params, batch statistics, optimizer
state with its step count, so the schedule continues), the per-epoch metrics, and the
config (a resume with another config is refused). The data order and dropout of epoch
``e`` come from ``fold_in(data_key, e)`` (:func:`convjax.train.seed_keys`), so a resumed
run replays exactly the epochs an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax

__all__ = ["Checkpoints", "quiet_orbax"]


@contextlib.contextmanager
def quiet_orbax():
    """Hold absl logging at WARNING for the block: orbax logs dozens of INFO lines per
    save, which would bury the progress lines."""
    from absl import logging

    level = logging.get_verbosity()
    logging.set_verbosity(min(level, logging.WARNING))  # absl: higher is more verbose
    try:
        yield
    finally:
        logging.set_verbosity(level)


class Checkpoints:
    """The checkpoints of one run, in ``<output_dir>/checkpoints/<epoch>``.

    Args:
      output_dir: the run's output directory.
      config: the run's :class:`~convjax.train.TrainConfig`.
      max_to_keep: the newest this many are kept (older ones deleted by orbax).
    """

    def __init__(self, output_dir: str, config: Any, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.join(os.path.abspath(output_dir), "checkpoints")
        self.config = dataclasses.asdict(config)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False),
            item_names=("state", "meta"))

    def latest_epoch(self) -> int | None:
        """The last epoch with a complete checkpoint, or None."""
        self._manager.reload()
        return self._manager.latest_step()

    def save(self, epoch: int, state: Any, history: list[dict]) -> None:
        """Save after ``epoch``; returns once the checkpoint is committed."""
        ocp = self._ocp
        with quiet_orbax():
            self._manager.save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({"epoch": epoch, "config": self.config,
                                        "history": history})))
            self._manager.wait_until_finished()

    def restore(self, target: Any) -> tuple[Any, list[dict]] | None:
        """``(state, history)`` of the latest checkpoint, with ``target``'s structure,
        shapes, dtypes and shardings; None when there is none.

        Raises:
          ValueError: the checkpoint was written with another config.
        """
        epoch = self.latest_epoch()
        if epoch is None:
            return None
        ocp = self._ocp
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        with quiet_orbax():
            restored = self._manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        meta = restored["meta"]
        from convjax.train import ADDED_FIELDS
        saved = {**ADDED_FIELDS, **meta["config"]}  # written before a field existed
        if saved != self.config:
            diff = {k: (saved.get(k), v) for k, v in self.config.items()
                    if saved.get(k) != v}
            raise ValueError(
                f"resume: the checkpoint in {self.directory} (epoch {epoch}) was written "
                f"with another config; differing fields (checkpoint, now): {diff}. Use "
                f"the same flags, or another output_dir")
        return restored["state"], list(meta["history"])

    def close(self) -> None:
        self._manager.close()
