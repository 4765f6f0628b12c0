"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time

import jax
import numpy as np


def median_time(fn, *args, repeats: int) -> float:
    """Median wall time in seconds of ``fn(*args)`` over ``repeats`` calls, after one
    untimed call that compiles and warms up; waits for the device each time."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
