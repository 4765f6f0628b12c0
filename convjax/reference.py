"""A convolution written from scratch, forward and backward: teaching code and test oracle.

Nothing here calls ``lax.conv_general_dilated``. The forward pass is written twice, as
``im2col`` (gather every window into a row, then one matrix product) and as a direct
loop over output positions; the backward pass is written by hand. Both are checked
against :func:`convjax.conv`, ``jax.vjp`` of it and :func:`convjax.conv_transpose`.

Layouts as everywhere in convjax: ``x`` ``[N, *spatial, C]`` (NWC/NHWC/NDHWC), kernel
``[*window, C, O]`` (WIO/HWIO/DHWIO); ``groups=1``; padding ``"SAME"``, ``"VALID"``, an int or
``(low, high)`` pairs (zero padding; CIRCULAR is not covered here).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax import layout as L
from convjax.functional._common import tap_slices

__all__ = ["conv_forward", "conv_forward_direct", "conv_backward", "im2col"]


def _setup(x, kernel, stride, padding, dilation, op):
    x = jnp.asarray(x)
    kernel = jnp.asarray(kernel)
    klay = L.check_kernel(kernel, op)
    rank = klay.rank
    lay = L.check_activation_rank(x, rank, op, because=f" for a {rank}D kernel")
    L.check_channels(x, kernel.shape[-2], lay, op)
    if isinstance(padding, str) and padding.upper() == "CIRCULAR":
        raise ValueError(f"{op}: the reference conv covers zero padding only "
                         f"(SAME, VALID, ints, pairs), got {padding!r}")
    stride = L.normalize_tuple(stride, rank, "stride", op=op)
    dilation = L.normalize_tuple(dilation, rank, "dilation", op=op)
    window = kernel.shape[:rank]
    eff = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    pairs = L.normalize_padding(padding, x.shape[1:-1], eff, stride, op=op).pairs
    out = tuple(L.output_size(n, k, s, p)
                for n, k, s, p in zip(x.shape[1:-1], eff, stride, pairs))
    return x, kernel, rank, window, stride, dilation, pairs, out


def im2col(x, window, stride, dilation, pairs):
    """Every window of ``x`` as a row: ``[N, *out, prod(window), C]``.

    Tap ``t`` (row-major over the window) of output position ``p`` is
    ``xpad[n, p * stride + t * dilation, :]``. One strided slice per tap (a loop over
    the ``prod(window)`` taps, not over pixels).
    """
    xp = jnp.pad(x, ((0, 0), *pairs, (0, 0)))
    cols = [xs for _, xs in tap_slices(xp, window, stride, dilation)]
    return jnp.stack(cols, axis=len(window) + 1)


def conv_forward(x: Any, kernel: Any, bias: Any = None, *, stride: Any = 1,
                 padding: Any = "SAME", dilation: Any = 1) -> jax.Array:
    """Conv by im2col: ``y[n, p, o] = sum_{t, c} cols[n, p, t, c] * kernel[t, c, o]``.

    ``x: [N, H, W, C]``, ``kernel: [KH, KW, C, O]`` -> ``[N, H', W', O]``. The window's
    ``KH*KW`` taps times ``C`` channels form the rows of one matrix, the kernel reshaped to
    ``[KH*KW*C, O]`` its columns: a conv is a matrix product over windows.

    >>> conv_forward(jnp.ones((1, 3, 3, 1)), jnp.ones((3, 3, 1, 1)))[0, :, :, 0].tolist()
    [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]
    """
    x, kernel, rank, window, stride, dilation, pairs, out = _setup(
        x, kernel, stride, padding, dilation, "reference.conv_forward")
    cols = im2col(x, window, stride, dilation, pairs)
    t = int(np.prod(window))
    y = jnp.einsum("n...tc,tco->n...o", cols, kernel.reshape(t, *kernel.shape[-2:]))
    return y if bias is None else y + jnp.asarray(bias).reshape((1,) * (y.ndim - 1) + (-1,))


def conv_forward_direct(x: Any, kernel: Any, bias: Any = None, *, stride: Any = 1,
                        padding: Any = "SAME", dilation: Any = 1) -> jax.Array:
    """Conv by explicit windows: a Python loop over output positions (small inputs only).

    For each output position ``p``, take the dilated window of the padded input that
    starts at ``p * stride`` and contract it with the kernel over window and channels.
    """
    x, kernel, rank, window, stride, dilation, pairs, out = _setup(
        x, kernel, stride, padding, dilation, "reference.conv_forward_direct")
    xp = jnp.pad(x, ((0, 0), *pairs, (0, 0)))
    y = jnp.zeros((x.shape[0], *out, kernel.shape[-1]), jnp.result_type(x, kernel))
    for pos in np.ndindex(*out):
        idx = tuple(slice(p * s, p * s + (k - 1) * d + 1, d)
                    for p, s, k, d in zip(pos, stride, window, dilation))
        win = xp[(slice(None), *idx)]                       # [N, *window, C]
        axes = list(range(1, rank + 2))
        y = y.at[(slice(None), *pos)].set(jnp.tensordot(win, kernel, (axes, list(range(rank + 1)))))
    return y if bias is None else y + jnp.asarray(bias).reshape((1,) * (y.ndim - 1) + (-1,))


def conv_backward(x: Any, kernel: Any, grad_out: Any, *, stride: Any = 1,
                  padding: Any = "SAME", dilation: Any = 1
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The three gradients of ``conv_forward``, written by hand.

    Args:
      x: ``[N, H, W, C]``; kernel: ``[KH, KW, C, O]``; grad_out: ``[N, H', W', O]``.

    Returns:
      ``(grad_x [N, H, W, C], grad_kernel [KH, KW, C, O], grad_bias [O])``.

    * ``grad_bias``: every output position adds the bias once: sum ``grad_out`` over
      ``N, H', W'``.
    * ``grad_kernel[t, c, o] = sum_{n, p} xpad[n, p*s + t*d, c] * grad_out[n, p, o]``: the
      *correlation* of the input with the output gradient; in im2col terms,
      ``cols^T @ grad_out``.
    * ``grad_x``: pixel ``q`` of the padded input fed output ``p`` through tap ``t`` when
      ``q = p*s + t*d``. Spread ``grad_out`` back onto the input grid (zeros between rows
      for a stride: "dilate by the stride"), pad it by ``K_eff - 1`` so every tap reaches,
      and correlate it with the kernel *rotated 180 degrees* with ``I`` and ``O`` swapped:
      seen from the pixel, the taps come in reverse order. Correlating with a rotated
      kernel is convolving with the original, so the input gradient is a (full)
      convolution, i.e. :func:`convjax.conv_transpose`. Finally drop the padding rows.
    """
    x, kernel, rank, window, stride, dilation, pairs, out = _setup(
        x, kernel, stride, padding, dilation, "reference.conv_backward")
    g = jnp.asarray(grad_out)
    if g.shape != (x.shape[0], *out, kernel.shape[-1]):
        raise ValueError(f"reference.conv_backward: grad_out must have shape "
                         f"{(x.shape[0], *out, kernel.shape[-1])} (the conv's output), got "
                         f"{tuple(g.shape)}")
    grad_bias = g.sum(axis=tuple(range(rank + 1)))
    cols = im2col(x, window, stride, dilation, pairs)          # [N, *out, T, C]
    grad_kernel = jnp.einsum("n...tc,n...o->tco", cols, g).reshape(kernel.shape)

    # grad_x: dilate grad_out by the stride (zeros between rows) onto the padded grid ...
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[1:-1], pairs))
    eff = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    spread_shape = tuple((o - 1) * s + 1 for o, s in zip(out, stride))
    spread = jnp.zeros((g.shape[0], *spread_shape, g.shape[-1]), g.dtype)
    spread = spread.at[(slice(None), *(slice(None, None, s) for s in stride))].set(g)
    # ... pad by K_eff - 1 on the low side, enough on the high side to cover the grid ...
    full_pairs = tuple((k - 1, n - so) for k, n, so in zip(eff, padded, spread_shape))
    # ... and correlate with the rotated, I/O-swapped kernel at stride 1.
    rotated = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(rank))), -1, -2)
    grad_xpad = conv_forward(spread, rotated, stride=1, padding=list(full_pairs),
                             dilation=dilation)
    crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[1:-1], pairs))
    grad_x = grad_xpad[(slice(None), *crop)]
    return grad_x, grad_kernel, grad_bias
