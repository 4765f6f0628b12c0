"""Helpers shared by the functional ops: accumulation dtype, bias add, dilated windows."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp


def accum_dtype(dtype) -> Any:
    """float32 accumulation for half-precision inputs; None keeps XLA's default."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else None


def finish(y: jax.Array, bias: jax.Array | None, dtype) -> jax.Array:
    """Add ``bias: [O]`` on the last axis in the accumulation dtype, then round to ``dtype``."""
    if bias is not None:
        y = y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    return y.astype(dtype)


def effective(window: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Dilated window size ``(K - 1) * d + 1`` per dim."""
    return tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
