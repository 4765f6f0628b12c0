"""Initializers with HWIO fan-in, and parameter makers that return plain dicts.

Fans of a kernel ``[*window, I, O]`` (HWIO and its 1D/3D/dense relatives):

* ``fan_in  = prod(window) * I``: the inputs one output unit sums over,
* ``fan_out = prod(window) * O``.

A dense kernel ``[D_in, D_out]`` is the case ``window = ()``. A depthwise kernel
``[KH, KW, 1, C*M]`` has ``fan_in = KH * KW``; a grouped conv's ``I`` is per group. These
are exactly the fans of ``jax.nn.initializers`` with ``in_axis=-2, out_axis=-1`` (tested).

Initializers have the ``jax.nn.initializers`` signature ``init(key, shape, dtype)``; keys
may be new-style ``jax.random.key(0)`` or legacy ``jax.random.PRNGKey(0)``. The
``*_normal`` initializers draw from a normal truncated at two standard deviations and
rescaled to the target variance, as ``jax.nn.initializers`` does.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "fans", "variance_scaling", "lecun_normal", "lecun_uniform", "he_normal", "he_uniform",
    "kaiming_normal", "kaiming_uniform", "glorot_normal", "glorot_uniform", "xavier_normal",
    "xavier_uniform", "zeros", "ones", "conv_params", "depthwise_params", "separable_params",
    "dense_params", "batch_norm_params",
]

Initializer = Callable[[Any, Sequence[int], Any], jax.Array]

# Standard deviation of a unit normal truncated to [-2, 2]: dividing by it restores the
# target variance after truncation (the constant jax.nn.initializers uses).
_TRUNCATED_STD = 0.87962566103423978


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel ``[*window, I, O]``.

    >>> fans((3, 3, 32, 64))     # HWIO: 3*3*32 in, 3*3*64 out
    (288, 576)
    >>> fans((784, 10))          # dense [D_in, D_out]
    (784, 10)
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"fans: a kernel needs at least [I, O] axes ([*window, I, O]), got "
                         f"shape {shape}; biases use zeros/ones")
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """Draws with variance ``scale / fan`` (``fan`` = fan_in, fan_out or their mean).

    ``distribution``: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``
    (uniform on ``[-a, a]`` with ``a = sqrt(3 * scale / fan)``).
    """
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"variance_scaling: mode must be 'fan_in', 'fan_out' or 'fan_avg', "
                         f"got {mode!r}")
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise ValueError(f"variance_scaling: distribution must be 'truncated_normal', "
                         f"'normal' or 'uniform', got {distribution!r}")

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        fan_in, fan_out = fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        if fan <= 0:
            raise ValueError(f"{mode} of shape {shape} is 0: every axis must be >= 1")
        var = scale / fan
        if distribution == "truncated_normal":
            z = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
            return (z * (math.sqrt(var) / _TRUNCATED_STD)).astype(dtype)
        if distribution == "normal":
            return (jax.random.normal(key, shape, jnp.float32) * math.sqrt(var)).astype(dtype)
        a = math.sqrt(3.0 * var)
        return jax.random.uniform(key, shape, jnp.float32, -a, a).astype(dtype)

    init.__doc__ = f"variance_scaling({scale}, {mode!r}, {distribution!r})"
    return init


lecun_normal = variance_scaling(1.0, "fan_in", "truncated_normal")
lecun_normal.__doc__ = "LeCun normal: variance ``1 / fan_in`` (Flax's default kernel init)."
lecun_uniform = variance_scaling(1.0, "fan_in", "uniform")
he_normal = variance_scaling(2.0, "fan_in", "truncated_normal")
he_normal.__doc__ = "He/Kaiming normal: variance ``2 / fan_in`` (for ReLU networks)."
he_uniform = variance_scaling(2.0, "fan_in", "uniform")
glorot_normal = variance_scaling(1.0, "fan_avg", "truncated_normal")
glorot_normal.__doc__ = "Glorot/Xavier normal: variance ``2 / (fan_in + fan_out)``."
glorot_uniform = variance_scaling(1.0, "fan_avg", "uniform")
kaiming_normal, kaiming_uniform = he_normal, he_uniform
xavier_normal, xavier_uniform = glorot_normal, glorot_uniform


def zeros(key, shape, dtype=jnp.float32):
    """All zeros (the default bias init); ``key`` is ignored."""
    del key
    return jnp.zeros(shape, dtype)


def ones(key, shape, dtype=jnp.float32):
    """All ones (batch norm's scale); ``key`` is ignored."""
    del key
    return jnp.ones(shape, dtype)


def _positive(op: str, **values) -> None:
    for name, v in values.items():
        if (not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_))
                or v < 1):
            raise ValueError(f"{op}: {name} must be an int >= 1, got {v!r}")


def _window(op: str, window: Any) -> tuple[int, ...]:
    if isinstance(window, (int, np.integer)) or not isinstance(window, Sequence):
        raise TypeError(f"{op}: window must be a sequence of 1, 2 or 3 ints (e.g. (3, 3) for "
                        f"HWIO), got {window!r}")
    if len(window) not in (1, 2, 3):
        raise ValueError(f"{op}: window must have 1, 2 or 3 entries, got {window!r}")
    _positive(op, **{f"window[{i}]": w for i, w in enumerate(window)})
    return tuple(int(w) for w in window)


def conv_params(key, window: Sequence[int], in_channels: int, out_channels: int, *,
                groups: int = 1, use_bias: bool = True,
                kernel_init: Initializer = lecun_normal, bias_init: Initializer = zeros,
                dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """``{"kernel": [*window, C/groups, O], "bias": [O]}`` for :func:`convjax.conv`.

    >>> p = conv_params(jax.random.key(0), (3, 3), 3, 32)
    >>> p["kernel"].shape, p["bias"].shape
    ((3, 3, 3, 32), (32,))
    """
    op = "conv_params"
    window = _window(op, window)
    _positive(op, in_channels=in_channels, out_channels=out_channels, groups=groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{op}: in_channels={in_channels} and out_channels={out_channels} "
                         f"must both be divisible by groups={groups}")
    k_key, b_key = jax.random.split(key)
    params = {"kernel": kernel_init(k_key, (*window, in_channels // groups, out_channels),
                                    dtype)}
    if use_bias:
        params["bias"] = bias_init(b_key, (out_channels,), dtype)
    return params


def depthwise_params(key, window: Sequence[int], channels: int, multiplier: int = 1, *,
                     use_bias: bool = True, kernel_init: Initializer = lecun_normal,
                     bias_init: Initializer = zeros,
                     dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """``{"kernel": [*window, 1, C*M], "bias": [C*M]}`` for :func:`convjax.depthwise_conv`.

    ``fan_in = prod(window)`` (each output sees one channel's window), as in
    ``flax.linen.Conv(feature_group_count=C)``.
    """
    op = "depthwise_params"
    window = _window(op, window)
    _positive(op, channels=channels, multiplier=multiplier)
    return conv_params(key, window, channels, channels * multiplier, groups=channels,
                       use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init,
                       dtype=dtype)


def separable_params(key, window: Sequence[int], in_channels: int, out_channels: int, *,
                     multiplier: int = 1, use_bias: bool = True,
                     kernel_init: Initializer = lecun_normal, bias_init: Initializer = zeros,
                     dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """Params of :func:`convjax.separable_conv` (bias on the pointwise part, as Keras).

    ``{"depthwise_kernel": [*window, 1, C*M], "pointwise_kernel": [C*M, O], "bias": [O]}``.

    >>> p = separable_params(jax.random.key(0), (3, 3), 32, 64)
    >>> {k: v.shape for k, v in p.items()}
    {'depthwise_kernel': (3, 3, 1, 32), 'pointwise_kernel': (32, 64), 'bias': (64,)}
    """
    op = "separable_params"
    window = _window(op, window)
    _positive(op, in_channels=in_channels, out_channels=out_channels, multiplier=multiplier)
    d_key, p_key, b_key = jax.random.split(key, 3)
    cm = in_channels * multiplier
    params = {"depthwise_kernel": kernel_init(d_key, (*window, 1, cm), dtype),
              "pointwise_kernel": kernel_init(p_key, (cm, out_channels), dtype)}
    if use_bias:
        params["bias"] = bias_init(b_key, (out_channels,), dtype)
    return params


def dense_params(key, in_features: int, out_features: int, *, use_bias: bool = True,
                 kernel_init: Initializer = lecun_normal, bias_init: Initializer = zeros,
                 dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """``{"kernel": [D_in, D_out], "bias": [D_out]}`` for :func:`convjax.dense`."""
    op = "dense_params"
    _positive(op, in_features=in_features, out_features=out_features)
    k_key, b_key = jax.random.split(key)
    params = {"kernel": kernel_init(k_key, (in_features, out_features), dtype)}
    if use_bias:
        params["bias"] = bias_init(b_key, (out_features,), dtype)
    return params


def batch_norm_params(channels: int, *, dtype: Any = jnp.float32
                      ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """``(params, state)`` for :func:`convjax.batch_norm`, as Flax initializes them.

    ``params = {"scale": ones [C], "bias": zeros [C]}``,
    ``state = {"mean": zeros [C], "var": ones [C]}``. Needs no key: nothing is random.
    """
    _positive("batch_norm_params", channels=channels)
    return ({"scale": jnp.ones((channels,), dtype), "bias": jnp.zeros((channels,), dtype)},
            {"mean": jnp.zeros((channels,), jnp.float32),
             "var": jnp.ones((channels,), jnp.float32)})
