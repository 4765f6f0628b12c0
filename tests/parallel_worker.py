"""Runs a few tiny training runs in a fresh process and prints their results as JSON.

Used by tests/test_seeds_devices.py in subprocesses, because the device count
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) and ``jax.distributed`` must be
set before JAX starts:

    python -m tests.parallel_worker MNIST_DIR devices
    python -m tests.parallel_worker MNIST_DIR process PORT NUM_PROCESSES PROCESS_ID
"""

import json
import sys


def _splits(data_dir):
    from tests.conftest import mnist_slices
    return mnist_slices(512, 200, data_dir)


class _Interrupt(Exception):
    pass


def _stop_after_epoch_1(line):
    if " epoch 1/2" in line:
        raise _Interrupt


def _run(splits, parallel, seeds=1, batch_size=64, strategy="auto", output_dir=None,
         resume=False, progress=None, compute_dtype="float32"):
    import jax
    import numpy as np
    from convjax import train
    config = train.TrainConfig(model="plain-k3-w8-h32", epochs=2, batch_size=batch_size,
                               seeds=seeds, eval_batch_size=40, compute_dtype=compute_dtype)
    with train.count_compilations() as compiled:
        r = train.train_and_evaluate(config, train_split=splits[0], test_split=splits[1],
                                     progress=progress, parallel=parallel,
                                     seed_strategy=strategy, output_dir=output_dir,
                                     checkpoint_every=1 if output_dir else 0, resume=resume)
    from convjax.parallel import fetch
    kernel = fetch(jax.tree.leaves(r.state.params)[0])
    return {"mode": r.summary["parallel"], "devices": len(r.summary["devices"]),
            "per_seed": [e["per_seed"] for e in r.epochs],
            "kernel_sum": [float(np.abs(kernel[i]).sum()) for i in range(seeds)],
            "epoch_compilations": compiled["jit(epoch_fn)"],
            "state_dtypes": sorted({str(x.dtype) for x in jax.tree.leaves(r.state)})}


def main(argv):
    data_dir, what = argv[1], argv[2]
    if what == "devices":
        import jax
        splits = _splits(data_dir)
        out = {"count": jax.device_count(),
               "single": _run(splits, "single", seeds=8),
               "data": _run(splits, "data", seeds=8),
               "seeds": _run(splits, "seeds", seeds=8),
               "auto_1": _run(splits, "auto", seeds=1),
               "auto_8": _run(splits, "auto", seeds=8),
               # the notebook's TPU setting: mixed precision, seeds over the devices
               "seeds_bf16": _run(splits, "seeds", seeds=8, compute_dtype="bfloat16")}
        try:
            _run(splits, "data", batch_size=60)
        except ValueError as e:
            out["error"] = str(e)
        # Checkpoints of seed-sharded state: interrupted after epoch 1, then resumed.
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            try:
                _run(splits, "seeds", seeds=8, output_dir=tmp, progress=_stop_after_epoch_1)
            except _Interrupt:
                pass
            out["seeds_resumed"] = _run(splits, "seeds", seeds=8, output_dir=tmp,
                                        resume=True)
    else:
        port, num, pid = int(argv[3]), int(argv[4]), int(argv[5])
        from convjax import parallel
        if num > 1:
            parallel.initialize_distributed(f"127.0.0.1:{port}", num, pid)
        import jax
        out = {"processes": jax.process_count(), "run": _run(_splits(data_dir), "data",
                                                                   seeds=2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
