"""Helpers shared by the functional ops: accumulation dtype, bias add, dilated windows."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def accum_dtype(dtype) -> Any:
    """float32 accumulation for half-precision inputs; None keeps XLA's default."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else None


def finish(y: jax.Array, bias: jax.Array | None, dtype) -> jax.Array:
    """Add ``bias: [O]`` on the last axis in the accumulation dtype, then round to ``dtype``."""
    if bias is not None:
        y = y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    return y.astype(dtype)


def tap_slices(xp, window, stride, dilation):
    """For each kernel tap (row-major), the strided slice of padded ``xp: [N, *S, C]``
    that the tap meets at every output position: ``xp[:, p * stride + tap * dilation, :]``.

    Yields ``(tap, [N, *out, C])``; one ``lax.slice`` per tap (a loop over the
    ``prod(window)`` taps, never over pixels).
    """
    eff = effective(window, dilation)
    out = [(n - k) // s + 1 for n, k, s in zip(xp.shape[1:-1], eff, stride)]
    for tap in np.ndindex(*window):
        start = (0, *(t * d for t, d in zip(tap, dilation)), 0)
        limit = (xp.shape[0], *(b + (o - 1) * s + 1 for b, o, s in zip(start[1:], out, stride)),
                 xp.shape[-1])
        yield tap, lax.slice(xp, start, limit, (1, *stride, 1))


def effective(window: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Dilated window size ``(K - 1) * d + 1`` per dim."""
    return tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
