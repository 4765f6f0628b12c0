"""How backprop goes through a convolution, written out: the conv's hand-written VJP.

The forward conv (cross-correlation, stride ``s``, dilation ``d``, zero padding
``(lo, hi)``, channels-last) is, per spatial dim::

    y[n, i, o] = sum_{a, c} xpad[n, i*s + a*d, c] * k[a, c, o]

Its two gradients are convolutions too:

* **input gradient** ``dx[n, p, c] = sum_{i, a, o} dy[n, i, o] * k[a, c, o]`` over all
  ``(i, a)`` with ``i*s + a*d = p + lo``. Every output that a pixel fed sends its
  gradient back through the *same* weights, but seen from the pixel's side the window
  runs backwards: pixel ``p`` meets tap ``a`` of the window that starts at ``p - a*d``.
  Reversing the kernel (a 180-degree rotation in 2D) turns that into an ordinary
  correlation again, and swapping ``I`` and ``O`` maps ``O`` gradient channels back to
  ``I`` input channels. A stride skipped rows in the forward pass, so ``dy`` gets
  ``s - 1`` zeros between its rows (``lhs_dilation=s``); the padding
  ``(K_eff - 1 - lo, K_eff - 1 - hi + r)`` makes every pixel meet every tap it fed
  (``r``: rows the forward stride never reached). Correlation with the rotated kernel is
  *convolution* with the original one: the input gradient is the "full convolution" of
  ``dy`` with ``k``, i.e. the transposed conv (:func:`convjax.conv_transpose`).
* **kernel gradient** ``dk[a, c, o] = sum_{n, i} xpad[n, i*s + a*d, c] * dy[n, i, o]``:
  correlate the input with the output gradient. Written as a conv, the batch axis is
  summed over, so it plays the role of channels: ``x`` as ``[C, H, W, N]`` (an NHWC
  "batch" of ``C`` images with ``N`` channels) correlated with ``dy`` as a
  ``[H', W', N, O]`` kernel, dilated by the forward stride, stepping by the forward
  dilation, gives ``[C, KH, KW, O]``.

XLA autodiff emits the same two convs but with non-canonical dimension numbers (kernel
reversed and ``I``/``O`` swapped in the numbers, batch and features swapped for the
weight gradient). XLA:CPU only rewrites those into its fast NHWC/HWIO form in the
top-level computation, not inside ``lax.scan``/``while`` bodies, where they fall back to
a naive loop (jax-ml/jax#12868): 27x slower measured here. The functions below build
both gradients from canonical NHWC/HWIO convs, with the transposes done as explicit
array ops, so a whole training epoch under ``lax.scan`` stays on the fast path.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from convjax import layout as L
from convjax.functional._common import accum_dtype, effective, tap_slices

__all__ = ["conv_general", "lax_conv", "tap_conv", "uses_taps", "input_grad", "kernel_grad"]


def _conv(lhs, rhs, *, window_strides, pads, lhs_dilation=None, rhs_dilation=None,
          groups=1, batch_groups=1):
    """A canonical conv whose padding may be negative (a crop), done safely.

    XLA:CPU computes wrong values for a conv with *negative* padding and more than one
    input feature (seen with jax 0.10.2: ``lax.conv_general_dilated(x, w, (1, 1),
    [(0, 0), (-1, 1)])`` differs from cropping ``x`` first whenever ``C > 1``; JAX's own
    autodiff of a conv whose padding exceeds ``K - 1`` emits such convs). Negative
    padding (and the stride dilation, in the same op) therefore goes through ``lax.pad``,
    and the conv itself gets none.
    """
    rank = lhs.ndim - 2
    lhs_dilation = tuple(lhs_dilation or (1,) * rank)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        config = [(0, 0, 0), *((lo, hi, d - 1) for (lo, hi), d in zip(pads, lhs_dilation)),
                  (0, 0, 0)]
        lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), config)
        pads, lhs_dilation = ((0, 0),) * rank, (1,) * rank
    return lax.conv_general_dilated(
        lhs, rhs, window_strides=window_strides, padding=pads, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=L.dimension_numbers(rank),
        feature_group_count=groups, batch_group_count=batch_groups,
        preferred_element_type=accum_dtype(lhs.dtype))


#: :func:`conv_general` computes its forward value tap by tap (:func:`tap_conv`) when
#: ``groups == 1``, the kernel has at most ``TAP_MAX_CHANNELS`` input channels (a
#: grayscale first layer) and at most ``TAP_MAX_TERMS`` products per output element
#: (``I * KH * KW``). Measured on a 2-core CPU, forward + ReLU, batch 256, us per image,
#: library conv vs taps (noisy, +-30%): 3x3 C=1 37-76 vs 40-43, 5x5 C=1 77 vs 51, 7x7 C=1
#: 119 vs 73; more channels gain little or lose (3x3 C=4 55 vs 52, 5x5 C=2 85 vs 92,
#: 5x5 C=3 134 vs 158, 3x3 C=8 45 vs 107). With a pooling that fuses into the taps the
#: gain is far larger: the first layer of the Flax-example CNN with ReLU and 2x2 average
#: pooling, 59 vs 3.5.
TAP_MAX_CHANNELS = 1
TAP_MAX_TERMS = 49


def tap_conv(x, kernel, stride, pairs, dilation):
    """The forward conv as a sum over taps and input channels of scaled, shifted inputs.

    ``y = sum_{tap, c} xpad[:, tap-shifted, c:c+1] * kernel[tap][c]``: elementwise work
    only, which XLA fuses with whatever consumes ``y`` (bias, activation, a pooling
    written as slices), so the ``[N, H', W', O]`` output need never be written to memory.
    For a single input channel (a grayscale first layer) this beats a library conv,
    which is starved by its ``K = KH * KW * C`` contraction: measured on a 2-core CPU,
    MNIST's first layer (3x3, 1 -> 32, 28x28, batch 1000) with bias, ReLU and 2x2 average
    pooling, 3.5 vs 59 us per image. Same value as :func:`lax_conv` up to float
    round-off (different summation order).

    Args:
      x: ``[N, *S, C]``; kernel: ``[*K, C, O]`` (``groups == 1``); stride, pairs,
      dilation: the conv's (``pairs`` explicit zero padding, possibly negative).
    """
    rank = kernel.ndim - 2
    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pairs), (0, 0, 0)]
    acc = accum_dtype(x.dtype) or x.dtype
    xp = lax.pad(x.astype(acc), jnp.zeros((), acc), config)
    w = kernel.astype(acc)
    y = None
    for tap, xs in tap_slices(xp, kernel.shape[:rank], stride, dilation):
        for c in range(kernel.shape[-2]):
            term = xs[..., c:c + 1] * w[tap + (c,)].reshape((1,) * (rank + 1) + (-1,))
            y = term if y is None else y + term
    return y


def uses_taps(kernel_shape, groups: int = 1) -> bool:
    """Whether :func:`conv_general` computes a ``[*K, I, O]`` kernel's forward value tap by
    tap (see :data:`TAP_MAX_CHANNELS`)."""
    i = kernel_shape[-2]
    return groups == 1 and i <= TAP_MAX_CHANNELS and i * math.prod(kernel_shape[:-2]) \
        <= TAP_MAX_TERMS


def forward(x, kernel, stride, pairs, dilation, groups):
    """The forward value of :func:`conv_general`: :func:`tap_conv` where :func:`uses_taps`,
    else :func:`lax_conv`."""
    if uses_taps(kernel.shape, groups):
        return tap_conv(x, kernel, stride, pairs, dilation)
    return lax_conv(x, kernel, stride, pairs, dilation, groups)


def lax_conv(x, kernel, stride, pairs, dilation, groups):
    """The forward conv in convjax's layout, differentiated by JAX (``backward="lax"``)."""
    return _conv(x, kernel, window_strides=stride, pads=pairs, rhs_dilation=dilation,
                 groups=groups)


def input_grad(dy, kernel, spatial, stride, pairs, dilation, groups=1):
    """Gradient of a zero-padded conv w.r.t. its input: dy correlated with the rotated kernel.

    Args:
      dy: ``[N, H', W', O]`` output gradient.
      kernel: ``[KH, KW, I, O]`` forward kernel.
      spatial: the forward input's spatial shape ``(H, W)``.
      stride, pairs, dilation, groups: the forward conv's (``pairs`` explicit zero padding).

    Returns:
      ``[N, H, W, I * groups]`` in the accumulation dtype.
    """
    rank = kernel.ndim - 2
    eff = effective(kernel.shape[:rank], dilation)
    pads = tuple((k - 1 - lo, k - 1 - hi + (n + lo + hi - k) % s)
                 for n, k, s, (lo, hi) in zip(spatial, eff, stride, pairs))
    *window, i, o = kernel.shape
    # Rotate (reverse every spatial axis) and swap I/O; per group for grouped convs:
    # group g's [*K, I, O/G] block becomes the [*K, O/G, I] block of output group g.
    rotated = jnp.flip(kernel, axis=tuple(range(rank)))
    rotated = rotated.reshape(*window, i, groups, o // groups)        # [*K, I, G, O/G]
    rotated = jnp.moveaxis(rotated, (-3, -2, -1), (-1, -2, -3))        # [*K, O/G, G, I]
    rotated = rotated.reshape(*window, o // groups, groups * i)
    return _conv(dy, rotated, window_strides=(1,) * rank, pads=pads, lhs_dilation=stride,
                 rhs_dilation=dilation, groups=groups)


def kernel_grad(x, dy, window, stride, pairs, dilation, groups=1, split_groups=True):
    """Gradient of a zero-padded conv w.r.t. its kernel: x correlated with dy.

    Args:
      x: ``[N, H, W, C]`` forward input.
      dy: ``[N, H', W', O]`` output gradient.
      window: the kernel window ``(KH, KW)``.
      stride, pairs, dilation, groups: the forward conv's.
      split_groups: for ``1 < groups < C``, one conv per group (fast on XLA:CPU) instead
        of one conv with ``batch_group_count=groups``.

    Returns:
      ``[KH, KW, C / groups, O]`` in the accumulation dtype.
    """
    lhs = jnp.swapaxes(x, 0, -1)       # [C, H, W, N]: channels as batch, batch as features
    rhs = jnp.moveaxis(dy, 0, -2)      # [H', W', N, O]: dy as an HWIO kernel
    m = dy.shape[1:-1]
    # High padding chosen so the output is exactly the window (negative crops unused rows).
    pads = tuple((lo, (k - 1) * d + (mi - 1) * s + 1 - n - lo)
                 for n, k, s, d, mi, (lo, _) in zip(x.shape[1:-1], window, stride, dilation,
                                                    m, pairs))
    def corr(lhs, rhs, batch_groups):
        return _conv(lhs, rhs, window_strides=dilation, pads=pads, rhs_dilation=stride,
                     batch_groups=batch_groups)

    c, o = x.shape[-1], dy.shape[-1]
    if groups == 1 or groups == c or not split_groups:
        # Group g pairs "batch" rows g*I..(g+1)*I of lhs with output channels of group g.
        # XLA:CPU keeps this on its fast path inside lax.scan for depthwise convs with
        # M = 1 (checked with TF_CPP_VMODULE=thunk_emitter=2); with M > 1 it falls back
        # (still correct; depthwise_conv's default "taps" method avoids the grouped conv
        # on CPU).
        out = corr(lhs, rhs, groups)
    else:
        # 1 < groups < C: one canonical conv per group (batch_group_count would fall back
        # to XLA:CPU's slow loop inside lax.scan).
        i, og = c // groups, o // groups
        out = jnp.concatenate([corr(lhs[g * i:(g + 1) * i], rhs[..., g * og:(g + 1) * og], 1)
                               for g in range(groups)], axis=-1)
    return jnp.moveaxis(out, 0, -2)    # [C/G, KH, KW, O] -> [KH, KW, C/G, O]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv_general(x, kernel, stride, pairs, dilation, groups):
    """A zero-padded conv whose VJP is made of canonical NHWC/HWIO convs only.

    Same value as ``lax.conv_general_dilated`` in convjax's layout (accumulation dtype
    output). Reverse mode (``jax.grad``, ``jax.vjp``) uses :func:`input_grad` and
    :func:`kernel_grad`, made of plain convs, so forward-over-reverse (``jax.hessian``)
    works too; forward mode on this function itself (``jax.jvp``, ``jax.jacfwd``) is not
    defined for a ``jax.custom_vjp``: use ``convjax.conv(..., backward="lax")`` for it.
    """
    return forward(x, kernel, stride, pairs, dilation, groups)


def _fwd(x, kernel, stride, pairs, dilation, groups):
    return forward(x, kernel, stride, pairs, dilation, groups), (x, kernel)


def _bwd(stride, pairs, dilation, groups, res, dy):
    x, kernel = res
    dy = dy.astype(x.dtype)
    dx = input_grad(dy, kernel, x.shape[1:-1], stride, pairs, dilation, groups)
    dk = kernel_grad(x, dy, kernel.shape[:-2], stride, pairs, dilation, groups)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv_general.defvjp(_fwd, _bwd)
