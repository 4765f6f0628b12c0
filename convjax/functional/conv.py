"""Convolutions as pure functions of arrays: ``conv``, ``pointwise``, ``conv_transpose``.

Layouts (see :mod:`convjax.layout`): activations NWC / NHWC / NDHWC, kernels WIO / HWIO /
DHWIO. The rank of a conv is ``kernel.ndim - 2``.

Precision: the output dtype is the dtype of ``x``. The kernel and bias are cast to it;
for bfloat16 and float16 inputs the products are accumulated in float32
(``preferred_element_type=float32`` in ``lax.conv_general_dilated``, which maps onto the
f32 accumulators of TPU/GPU matrix units), the bias is added in float32, and the result
is rounded to the input dtype once, at the end.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax import layout as L

__all__ = ["conv", "pointwise", "conv_transpose"]


def _accum_dtype(dtype) -> Any:
    """float32 accumulation for half-precision inputs; None keeps XLA's default."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else None


def _finish(y: jax.Array, bias: jax.Array | None, dtype) -> jax.Array:
    """Add the bias in the accumulation dtype, then round once to ``dtype``."""
    if bias is not None:
        y = y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    return y.astype(dtype)


def _check_groups(groups: Any, op: str) -> int:
    if (not isinstance(groups, (int, np.integer)) or isinstance(groups, (bool, np.bool_))
            or groups < 1):
        raise ValueError(f"{op}: groups must be an int >= 1, got {groups!r}")
    return int(groups)


def _effective(window: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Dilated window size ``(K - 1) * d + 1`` per dim."""
    return tuple((k - 1) * d + 1 for k, d in zip(window, dilation))


def conv(x: Any, kernel: Any, bias: Any = None, *, stride: Any = 1, padding: Any = "SAME",
         dilation: Any = 1, groups: int = 1) -> jax.Array:
    """N-d convolution (cross-correlation, as in every deep learning library).

    Args:
      x: ``[N, W, C]``, ``[N, H, W, C]`` or ``[N, D, H, W, C]`` (NWC / NHWC / NDHWC).
      kernel: ``[KW, I, O]``, ``[KH, KW, I, O]`` or ``[KD, KH, KW, I, O]`` (WIO / HWIO /
        DHWIO), ``I = C / groups``. Its rank picks the conv's rank.
      bias: ``[O]`` or None.
      stride: int or one per spatial dim.
      padding: ``"SAME"`` (TensorFlow: output ``ceil(H / s)``; an odd total padding puts
        the extra row/column at the end), ``"VALID"``, ``"CIRCULAR"`` (SAME's output size
        and pad split, filled by wrap-around), an int (both sides of every spatial dim)
        or one ``(low, high)`` pair per spatial dim.
      dilation: int or one per spatial dim (kernel dilation, "atrous").
      groups: feature groups; ``C`` and ``O`` must be divisible by it.

    Returns:
      ``[N, H', W', O]`` (same rank as ``x``, dtype of ``x``), with per spatial dim
      ``H' = floor((H + lo + hi - ((KH - 1) * d + 1)) / s) + 1``; that is
      ``ceil(H / s)`` for SAME/CIRCULAR and ``ceil((H - (KH - 1) * d) / s)`` for VALID.

    Example: a ones 3x3 kernel on a ones image, SAME padding, counts the in-bounds cells
    of each window: 4 at the corners, 6 on the edges, 9 inside.

    >>> y = conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)))
    >>> y[0, :, :, 0].astype(int).tolist()
    [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]
    """
    op = "conv"
    kernel = L.as_array(kernel, "kernel", op)
    klay = L.check_kernel(kernel, op)
    rank = klay.rank
    x = L.as_array(x, "x", op)
    lay = L.check_activation_rank(
        x, rank, op, because=f" for a {rank}D kernel {klay.describe_kernel()} of shape "
                             f"{tuple(kernel.shape)}")
    L.check_float(x, "x", op, lay.describe_x())
    groups = _check_groups(groups, op)
    *window, i, o = kernel.shape
    c = x.shape[-1]
    if c % groups:
        raise ValueError(f"{op}: x has C={c} channels ({lay.describe_x()}, shape "
                         f"{tuple(x.shape)}), not divisible by groups={groups}")
    if o % groups:
        raise ValueError(f"{op}: kernel has O={o} output channels ({klay.describe_kernel()}, "
                         f"shape {tuple(kernel.shape)}), not divisible by groups={groups}")
    if groups == 1:
        L.check_channels(x, i, lay, op)
    elif c != i * groups:
        raise ValueError(
            f"{op}: kernel expects I={i} input channels per group but x has C={c} channels "
            f"= {c // groups} per group for groups={groups} (x is {lay.describe_x()}, shape "
            f"{tuple(x.shape)}; kernel is {klay.describe_kernel()}, shape "
            f"{tuple(kernel.shape)})")
    stride = L.normalize_tuple(stride, rank, "stride", op=op)
    dilation = L.normalize_tuple(dilation, rank, "dilation", op=op)
    pad = L.normalize_padding(padding, x.shape[1:-1], _effective(window, dilation), stride,
                              op=op)
    bias = L.check_bias(bias, o, op, x.dtype)
    return _conv(x, kernel.astype(x.dtype), bias, stride, pad, dilation, groups)


def _conv(x, kernel, bias, stride, pad: L.Padding, dilation, groups):
    """The validated conv: one ``lax.conv_general_dilated`` (after wrap-around padding)."""
    pairs = pad.pairs
    if pad.circular:
        x = L.circular_pad(x, pairs)
        pairs = ((0, 0),) * len(pairs)
    y = lax.conv_general_dilated(
        x, kernel, window_strides=stride, padding=pairs, rhs_dilation=dilation,
        dimension_numbers=L.dimension_numbers(kernel.ndim - 2),
        feature_group_count=groups, preferred_element_type=_accum_dtype(x.dtype))
    return _finish(y, bias, x.dtype)


def pointwise(x: Any, kernel: Any, bias: Any = None) -> jax.Array:
    """The 1x1 convolution: the same ``C -> O`` matrix applied at every pixel.

    ``pointwise(x, k)[n, h, w, :] == x[n, h, w, :] @ k`` for every pixel: a 1x1 conv
    mixes channels and never looks at neighbours. Mapping 32 feature maps to 8 means
    each of the 8 output maps is a learned weighted sum of the 32 input maps at the
    same pixel (plus a bias): a linear projection of each pixel's 32-vector onto an
    8-dimensional subspace, ``32 * 8`` weights and ``8`` biases. It equals
    :func:`conv` with a ``[1, 1, C, O]`` kernel (tested) and is computed as that
    per-pixel matrix product (one ``lax.dot_general``).

    Args:
      x: ``[N, W, C]``, ``[N, H, W, C]`` or ``[N, D, H, W, C]``.
      kernel: ``[C, O]``, or the conv form ``[1, C, O]`` / ``[1, 1, C, O]`` /
        ``[1, 1, 1, C, O]`` matching ``x``'s rank.
      bias: ``[O]`` or None.

    Returns:
      ``[N, H, W, O]`` (same spatial shape as ``x``, dtype of ``x``).

    >>> x = jnp.ones((2, 5, 5, 32)); k = jnp.full((32, 8), 0.5)
    >>> pointwise(x, k).shape, float(pointwise(x, k)[0, 0, 0, 0])
    ((2, 5, 5, 8), 16.0)
    """
    op = "pointwise"
    kernel = L.as_array(kernel, "kernel", op)
    x = L.as_array(x, "x", op)
    kshape = tuple(kernel.shape)
    if kernel.ndim == 2:
        if x.ndim not in (3, 4, 5):
            raise ValueError(
                f"{op}: x must be rank 3, 4 or 5 (NWC, NHWC or NDHWC: [N, *spatial, C]), "
                f"got rank {x.ndim} with shape {tuple(x.shape)}")
        rank = x.ndim - 2
    else:
        rank = L.check_kernel(kernel, op).rank
        klay = L.layout_for_rank(rank)
        if any(k != 1 for k in kshape[:-2]):
            raise ValueError(f"{op}: kernel must be [C, O] or 1x1 {klay.describe_kernel()}, "
                             f"got window {kshape[:-2]} (shape {kshape}); use conv for "
                             f"larger windows")
    lay = L.check_activation_rank(x, rank, op, because=f" for a kernel of shape {kshape}")
    L.check_float(x, "x", op, lay.describe_x())
    if kernel.ndim == 2:
        for letter, v in zip("IO", kshape):
            if v == 0:
                raise ValueError(f"{op}: kernel [I, O] has {letter}=0 (shape {kshape}); "
                                 f"every axis must be >= 1")
        L.check_float(kernel, "kernel", op, "[I, O]")
    i, o = kshape[-2:]
    L.check_channels(x, i, lay, op)
    bias = L.check_bias(bias, o, op, x.dtype)
    w = kernel.reshape(i, o).astype(x.dtype)
    y = lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())),
                        preferred_element_type=_accum_dtype(x.dtype))
    return _finish(y, bias, x.dtype)


def _transpose_spatial(y_shape, kernel_shape, output_shape, lay: L.Layout, op: str):
    """The forward input's spatial shape for ``conv_transpose``, from ``output_shape``."""
    rank = lay.rank
    n_batch, *m, _ = y_shape
    *window, i, _ = kernel_shape
    if output_shape is None:
        return None
    try:
        shape = tuple(int(v) for v in output_shape)
    except TypeError as e:
        raise TypeError(f"{op}: output_shape must be a sequence of {rank} spatial sizes "
                        f"({', '.join(lay.spatial)}) or the full forward input shape "
                        f"{lay.describe_x()}, got {output_shape!r}") from e
    if len(shape) == rank + 2:
        if shape[0] != n_batch or shape[-1] != i:
            raise ValueError(
                f"{op}: output_shape {shape} ({lay.describe_x()}) must have N={n_batch} "
                f"(y's batch) and C={i} (the kernel's I), got N={shape[0]}, C={shape[-1]}")
        shape = shape[1:-1]
    elif len(shape) != rank:
        raise ValueError(f"{op}: output_shape must have {rank} spatial sizes "
                         f"({', '.join(lay.spatial)}) or be the full forward input shape "
                         f"{lay.describe_x()} of rank {rank + 2}, got {output_shape!r}")
    for axis, v in zip(lay.spatial, shape):
        if v < 1:
            raise ValueError(f"{op}: output_shape {axis}={v} must be >= 1")
    return shape


def conv_transpose(y: Any, kernel: Any, bias: Any = None, *, stride: Any = 1,
                   padding: Any = "SAME", dilation: Any = 1,
                   output_shape: Sequence[int] | None = None) -> jax.Array:
    """The exact adjoint of :func:`conv`: the gradient of ``conv`` with respect to ``x``.

    ``kernel`` is the *forward* kernel ``[*window, I, O]`` (the same HWIO array you would
    pass to ``conv``); ``y`` has ``O`` channels and the result has ``I``. For every ``x``
    of the forward input shape, ``<conv(x, k), y> == <x, conv_transpose(y, k,
    output_shape=x.shape)>``, which is TensorFlow's ``conv2d_transpose`` contract.
    (``flax.linen.ConvTranspose`` is a fractionally strided conv, not this adjoint;
    ``jax.lax.conv_transpose`` is this adjoint only with ``transpose_kernel=True`` and
    matching padding.)

    How it is computed, which is also how backprop reaches a conv's input: insert
    ``stride - 1`` zeros between the rows of ``y`` (``lhs_dilation``), pad it by
    ``K_eff - 1 - lo`` low and ``K_eff - 1 - hi + r`` high (``r`` the rows the forward
    stride skipped at the end), and correlate it with the kernel rotated by 180 degrees
    (every spatial axis reversed) with ``I`` and ``O`` swapped: a *full convolution*
    with the original kernel. One ``lax.conv_general_dilated`` in the canonical
    NHWC/HWIO layout. CIRCULAR padding is undone by folding the wrapped border back.

    Args:
      y: ``[N, H', W', O]`` (NWC / NHWC / NDHWC, matching the kernel's rank).
      kernel: ``[KH, KW, I, O]`` (WIO / HWIO / DHWIO), the forward kernel.
      bias: ``[I]`` or None, added to the result.
      stride, padding, dilation: those of the forward conv (see :func:`conv`).
      output_shape: the forward input's spatial shape ``(H, W)``, or its full shape
        ``(N, H, W, C)``. Strided convs map several input sizes to one output size; this
        picks one. Default: ``H = H' * s`` for SAME/CIRCULAR (as Keras'
        ``Conv2DTranspose``), ``H = (H' - 1) * s + (KH - 1) * d + 1 - lo - hi`` otherwise.

    Returns:
      ``[N, H, W, I]``, dtype of ``y``.

    >>> k = jnp.ones((3, 3, 1, 1))
    >>> conv_transpose(jnp.ones((1, 2, 2, 1)), k, stride=2).shape
    (1, 4, 4, 1)
    """
    op = "conv_transpose"
    kernel = L.as_array(kernel, "kernel", op)
    klay = L.check_kernel(kernel, op)
    rank = klay.rank
    y = L.as_array(y, "y", op)
    lay = L.check_activation_rank(
        y, rank, op, name="y", because=f" for a {rank}D kernel {klay.describe_kernel()} of "
                                       f"shape {tuple(kernel.shape)}")
    L.check_float(y, "y", op, lay.describe_x())
    *window, i, o = kernel.shape
    L.check_channels(y, o, lay, op, name="y", letter="O", what="output",
                     source="kernel (the forward kernel)")
    stride = L.normalize_tuple(stride, rank, "stride", op=op)
    dilation = L.normalize_tuple(dilation, rank, "dilation", op=op)
    eff = _effective(window, dilation)
    m = tuple(y.shape[1:-1])
    spatial = _transpose_spatial(tuple(y.shape), tuple(kernel.shape), output_shape, lay, op)
    if spatial is None:
        if isinstance(padding, str) and padding.upper() in ("SAME", "CIRCULAR"):
            spatial = tuple(mi * s for mi, s in zip(m, stride))
        else:
            pairs = L.normalize_padding(padding, eff, eff, stride, op=op).pairs
            spatial = tuple((mi - 1) * s + k - lo - hi
                            for mi, s, k, (lo, hi) in zip(m, stride, eff, pairs))
            for axis, v in zip(lay.spatial, spatial):
                if v < 1:
                    raise ValueError(f"{op}: the default forward input size {axis}={v} is "
                                     f"not positive for padding={padding!r}; pass "
                                     f"output_shape")
    pad = L.normalize_padding(padding, spatial, eff, stride, op=op)
    for d, (axis, n, k, s, mi) in enumerate(zip(lay.spatial, spatial, eff, stride, m)):
        got = L.output_size(n, k, s, pad.pairs[d])
        if got != mi:
            dim_padding = padding if isinstance(padding, str) else [pad.pairs[d]]
            raise ValueError(
                f"{op}: output_shape {axis}={n} is inconsistent with y: conv of {axis}={n} "
                f"with stride {s}, padding {padding!r} gives {axis}'={got}, but y has "
                f"{axis}'={mi} (y is {lay.describe_x()}, shape {tuple(y.shape)}); "
                f"{axis} sizes that give {axis}'={mi}: "
                f"{_sizes_giving(dim_padding, mi, k, s, op)}")
    bias = L.check_bias(bias, i, op, y.dtype)
    return _conv_transpose(y, kernel.astype(y.dtype), bias, stride, pad, dilation, spatial)


def _sizes_giving(padding, m: int, k: int, s: int, op: str) -> list[int]:
    """The input sizes of one dim whose conv output size is ``m`` (for error messages)."""
    sizes = []
    for n in range(1, (m + 1) * s + k + 1):
        pr = L.normalize_padding(padding, (n,), (k,), (s,), op=op, check_fits=False).pairs[0]
        if n + pr[0] + pr[1] >= k and L.output_size(n, k, s, pr) == m:
            sizes.append(n)
    return sizes


def _conv_transpose(y, kernel, bias, stride, pad: L.Padding, dilation, spatial):
    """The validated adjoint: one canonical conv with the rotated, I/O-swapped kernel."""
    rank = kernel.ndim - 2
    eff = _effective(kernel.shape[:rank], dilation)
    if pad.circular:  # the forward conv is VALID on the wrap-padded input
        conv_pairs = ((0, 0),) * rank
        sizes = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pad.pairs))
    else:
        conv_pairs, sizes = pad.pairs, spatial
    adj = tuple((k - 1 - lo, k - 1 - hi + (n + lo + hi - k) % s)
                for n, k, s, (lo, hi) in zip(sizes, eff, stride, conv_pairs))
    rotated = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(rank))), -1, -2)
    z = lax.conv_general_dilated(
        y, rotated, window_strides=(1,) * rank, padding=adj, lhs_dilation=stride,
        rhs_dilation=dilation, dimension_numbers=L.dimension_numbers(rank),
        preferred_element_type=_accum_dtype(y.dtype))
    if pad.circular:
        x_shape = (z.shape[0], *spatial, z.shape[-1])
        (z,) = jax.linear_transpose(lambda a: L.circular_pad(a, pad.pairs),
                                    jax.ShapeDtypeStruct(x_shape, z.dtype))(z)
    return _finish(z, bias, y.dtype)
