"""Dense layers as pure functions: ``dense``, ``flatten``, ``dropout``.

``dense`` is the same per-position matrix product as :func:`convjax.pointwise`: both are
``x[..., :] @ kernel`` on the last (channel/feature) axis, and share one implementation.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax import layout as L
from convjax.functional._common import accum_dtype, finish

__all__ = ["dense", "flatten", "dropout"]


def linear(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """``x @ kernel + bias`` on the last axis of validated arrays (no checks).

    One ``lax.dot_general``; half-precision inputs accumulate in float32 and are rounded
    once after the bias add. ``kernel`` is cast to ``x.dtype``.

    Half precision has a hand-written VJP (:func:`_half_linear`): JAX's own transpose of
    a ``dot_general`` with a float32 result would run both gradient products in float32
    (the float32 cotangent promotes the half-precision operand), where mixed-precision
    training wants them on half-precision operands, accumulating in float32, as the
    forward product. Forward-mode differentiation (``jax.jvp``) of a half-precision
    ``linear`` is therefore not defined; float32 is plain JAX autodiff. On XLA:CPU, run
    half-precision gradients under ``jax.jit`` (as training does): un-jitted, a batched
    (``vmap``) gradient product can hit XLA:CPU's missing eager bf16 x bf16 -> f32 dot.
    """
    kernel = kernel.astype(x.dtype)
    if accum_dtype(x.dtype) is None:
        return _linear(x, kernel, bias)
    return _half_linear(x, kernel, bias)


def _linear(x, kernel, bias):
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
                        preferred_element_type=accum_dtype(x.dtype))
    return finish(y, bias, x.dtype)


@jax.custom_vjp
def _half_linear(x, kernel, bias):
    """:func:`_linear` of half-precision ``x`` and ``kernel`` (same dtype) whose
    gradient products take half-precision operands and accumulate in float32."""
    return _linear(x, kernel, bias)


def _half_linear_fwd(x, kernel, bias):
    return _linear(x, kernel, bias), (x, kernel, bias)


def _half_linear_bwd(res, dy):
    x, kernel, bias = res
    acc = jnp.float32
    dy = dy.astype(x.dtype)                                 # [..., O]
    dx = lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())),
                         preferred_element_type=acc)        # [..., I]
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    dk = lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())), preferred_element_type=acc)
    db = None if bias is None else jnp.sum(dy2.astype(acc), 0).astype(bias.dtype)
    return dx.astype(x.dtype), dk.astype(kernel.dtype), db


_half_linear.defvjp(_half_linear_fwd, _half_linear_bwd)


def dense(x: Any, kernel: Any, bias: Any = None) -> jax.Array:
    """Fully connected layer on the last axis: ``y = x @ kernel + bias``.

    Args:
      x: ``[N, D_in]`` (or ``[..., D_in]``: like ``flax.linen.Dense``, leading axes are
        kept, so a rank-4 NHWC ``x`` gets a per-pixel product; flatten it first with
        :func:`flatten` for a classifier head).
      kernel: ``[D_in, D_out]``.
      bias: ``[D_out]`` or None.

    Returns:
      ``[N, D_out]`` (``[..., D_out]``), dtype of ``x``.

    ``D_in`` is fixed when the kernel is made: a head built for 7x7x64 feature maps
    (``D_in = 3136``) refuses a larger image, whose flattened map is longer. That is the
    limit that a fully convolutional head removes.

    >>> dense(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.arange(4.0)).tolist()
    [[3.0, 4.0, 5.0, 6.0], [3.0, 4.0, 5.0, 6.0]]
    """
    op = "dense"
    x = L.as_array(x, "x", op)
    kernel = L.as_array(kernel, "kernel", op)
    if kernel.ndim != 2:
        raise ValueError(f"{op}: kernel must be rank 2 [D_in, D_out], got rank {kernel.ndim} "
                         f"with shape {tuple(kernel.shape)}")
    d_in, d_out = kernel.shape
    if d_in == 0 or d_out == 0:
        raise ValueError(f"{op}: kernel [D_in, D_out] has a zero axis (shape "
                         f"{tuple(kernel.shape)}); every axis must be >= 1")
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have a feature axis ([N, D_in]), got a scalar")
    L.check_float(x, "x", op, "[N, D_in]")
    L.check_float(kernel, "kernel", op, "[D_in, D_out]")
    if x.shape[-1] != d_in:
        msg = (f"{op}: kernel [D_in, D_out] = {tuple(kernel.shape)} expects D_in={d_in} input "
               f"features but x has {x.shape[-1]} on its last axis (x is [N, D_in], shape "
               f"{tuple(x.shape)})")
        if x.ndim > 2 and int(np.prod(x.shape[1:])) == d_in:
            msg += (f"; x looks unflattened: convjax.flatten(x) gives [N, "
                    f"{int(np.prod(x.shape[1:]))}]")
        elif x.ndim == 2:
            msg += ("; a dense kernel fixes the input size: a larger image flattens to more "
                    "features (use a fully convolutional head or global pooling to accept "
                    "any size)")
        raise ValueError(msg)
    bias = L.check_bias(bias, d_out, op, x.dtype)
    return linear(x, kernel, bias)


def flatten(x: Any) -> jax.Array:
    """Keep the batch axis, flatten the rest in row-major order.

    ``[N, H, W, C] -> [N, H * W * C]``, index ``(h * W + w) * C + c``: channels vary
    fastest (NHWC order, as Keras' ``Flatten`` with channels-last data; PyTorch's
    ``flatten`` of NCHW data orders ``(c * H + h) * W + w`` instead).

    >>> flatten(jnp.zeros((8, 7, 7, 64))).shape
    (8, 3136)
    """
    x = L.as_array(x, "x", "flatten")
    if x.ndim < 1:
        raise ValueError("flatten: x must have a batch axis [N, ...], got a scalar")
    return x.reshape(x.shape[0], -1)


def dropout(key: Any, x: Any, rate: float, *, deterministic: bool) -> jax.Array:
    """Inverted dropout: zero each element with probability ``rate``, scale the rest.

    Kept elements are divided by ``1 - rate`` so that the expectation is unchanged and
    inference (``deterministic=True``) is the identity.

    Args:
      key: ``jax.random.key(...)`` or a legacy ``jax.random.PRNGKey(...)``; unused
        (may be None) when ``deterministic`` or ``rate == 0``.
      x: any shape, floating.
      rate: drop probability in ``[0, 1)``.
      deterministic: True at inference: return ``x`` unchanged.

    Returns:
      same shape and dtype as ``x``.

    >>> y = dropout(jax.random.key(0), jnp.ones((1000,)), 0.5, deterministic=False)
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    """
    op = "dropout"
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.number)):
        raise TypeError(f"{op}: rate must be a float in [0, 1), got {rate!r}")
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"{op}: rate must be in [0, 1) (the probability of dropping an "
                         f"element), got rate={rate}")
    if not isinstance(deterministic, (bool, np.bool_)):
        raise TypeError(f"{op}: deterministic must be a Python bool, got {deterministic!r}")
    x = L.as_array(x, "x", op)
    L.check_float(x, "x", op, "any shape")
    if deterministic or rate == 0.0:
        return x
    if key is None:
        raise ValueError(f"{op}: key is required when deterministic=False and rate={rate}")
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
