"""Batch normalization as a pure function of ``(params, state, x)``."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax import layout as L

__all__ = ["batch_norm"]


def _check_dict(d: Any, name: str, keys: tuple[str, str], channels: int, op: str,
                x_desc: str) -> None:
    if not isinstance(d, Mapping):
        raise TypeError(f"{op}: {name} must be a dict with keys {list(keys)}, got "
                        f"{type(d).__name__}")
    if set(d) != set(keys):
        raise ValueError(f"{op}: {name} must have exactly the keys {list(keys)} (Flax's "
                         f"names), got {sorted(d)}")
    for k in keys:
        shape = tuple(np.shape(d[k]))
        if shape != (channels,):
            raise ValueError(f"{op}: {name}[{k!r}] must have shape [C]=({channels},), one "
                             f"per channel of x ({x_desc}), got shape {shape}")


def batch_norm(params: Mapping[str, Any], state: Mapping[str, Any], x: Any, *,
               training: bool, momentum: float = 0.99, epsilon: float = 1e-5,
               axis_name: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch normalization over every axis but the channel (last) axis.

    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias``, per channel. In training the
    batch statistics are used (``mean = E[x]``, ``var = E[x^2] - E[x]^2``, biased, as
    ``flax.linen.BatchNorm``) and the running averages move towards them:
    ``new = momentum * old + (1 - momentum) * batch``. In inference the running averages
    are used and the state is returned unchanged.

    Args:
      params: ``{"scale": [C], "bias": [C]}`` (Flax's names).
      state: ``{"mean": [C], "var": [C]}`` running averages (Flax's ``batch_stats``).
      x: ``[N, C]``, ``[N, W, C]``, ``[N, H, W, C]`` or ``[N, D, H, W, C]``, floating.
      training: use and update batch statistics (a Python bool).
      momentum: decay of the running averages (Flax's default 0.99).
      epsilon: added to the variance (Flax's default 1e-5).
      axis_name: a mapped axis name (``shard_map``, ``pmap``, ``vmap``): statistics are
        averaged over it with one ``lax.pmean``, so every device normalizes with the
        statistics of the global batch.

    Returns:
      ``(y, new_state)``: ``y`` has the shape and dtype of ``x`` (statistics and the
      normalization are computed in float32 for half-precision inputs); ``new_state``
      has the dtypes of ``state``.

    >>> p = {"scale": jnp.ones(2), "bias": jnp.zeros(2)}
    >>> s = {"mean": jnp.zeros(2), "var": jnp.ones(2)}
    >>> y, s2 = batch_norm(p, s, jnp.array([[1.0, 2.0], [3.0, 6.0]]), training=True)
    >>> y.round(3).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
    >>> s2["mean"]  # 0.99 * 0 + 0.01 * [2, 4]
    Array([0.02, 0.04], dtype=float32)
    """
    op = "batch_norm"
    x = L.as_array(x, "x", op)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be rank >= 2 ([N, C] or [N, *spatial, C]), got shape "
                         f"{tuple(x.shape)}")
    desc = (L.layout_for_rank(x.ndim - 2).describe_x() if x.ndim in (3, 4, 5)
            else "[N, C]" if x.ndim == 2 else "[N, ..., C]")
    L.check_float(x, "x", op, desc)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a Python bool, got {training!r}")
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{op}: momentum must be in [0, 1], got {momentum}")
    if not float(epsilon) > 0.0:
        raise ValueError(f"{op}: epsilon must be > 0, got {epsilon}")
    c = x.shape[-1]
    _check_dict(params, "params", ("scale", "bias"), c, op, desc)
    _check_dict(state, "state", ("mean", "var"), c, op, desc)
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(acc)
    if training:
        axes = tuple(range(x.ndim - 1))
        mean, mean_sq = jnp.mean(xf, axes), jnp.mean(jnp.square(xf), axes)
        if axis_name is not None:
            mean, mean_sq = lax.pmean((mean, mean_sq), axis_name)
        var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
        new_state = {
            k: (momentum * jnp.asarray(state[k]).astype(acc)
                + (1.0 - momentum) * v).astype(jnp.asarray(state[k]).dtype)
            for k, v in (("mean", mean), ("var", var))}
    else:
        mean = jnp.asarray(state["mean"]).astype(acc)
        var = jnp.asarray(state["var"]).astype(acc)
        new_state = {"mean": jnp.asarray(state["mean"]), "var": jnp.asarray(state["var"])}
    mul = lax.rsqrt(var + epsilon) * jnp.asarray(params["scale"]).astype(acc)
    shape = (1,) * (x.ndim - 1) + (c,)
    y = (xf - mean.reshape(shape)) * mul.reshape(shape) + jnp.asarray(
        params["bias"]).astype(acc).reshape(shape)
    return y.astype(x.dtype), new_state
