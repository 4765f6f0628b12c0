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

from convjax import layout as L
from convjax.functional._common import effective, finish, tap_slices
from convjax.functional.conv_grad import conv_general, input_grad, lax_conv
from convjax.functional.dense import linear

__all__ = ["conv", "pointwise", "conv_transpose", "depthwise_conv", "separable_conv"]


def _check_groups(groups: Any, op: str) -> int:
    if (not isinstance(groups, (int, np.integer)) or isinstance(groups, (bool, np.bool_))
            or groups < 1):
        raise ValueError(f"{op}: groups must be an int >= 1, got {groups!r}")
    return int(groups)


def conv(x: Any, kernel: Any, bias: Any = None, *, stride: Any = 1, padding: Any = "SAME",
         dilation: Any = 1, groups: int = 1, backward: str = "canonical") -> jax.Array:
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
      backward: how reverse mode differentiates it. ``"canonical"`` (default): a
        hand-written VJP made of canonical NHWC/HWIO convs (input gradient = correlation
        of the output gradient with the rotated kernel, kernel gradient = correlation of
        the input with the output gradient; see :mod:`convjax.functional.conv_grad`),
        which keeps XLA:CPU on its fast path inside ``lax.scan``. It is a
        ``jax.custom_vjp``: reverse mode and forward-over-reverse (``jax.hessian``)
        work, but forward mode on the conv itself (``jax.jvp``, ``jax.jacfwd``) raises
        JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp function": pass
        ``backward="lax"`` (JAX's own autodiff of ``lax.conv_general_dilated``) there.

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
    x, kernel, lay, klay = _conv_operands(op, x, kernel)
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
        msg = (f"{op}: kernel expects I={i} input channels per group but x has C={c} channels "
               f"= {c // groups} per group for groups={groups} (x is {lay.describe_x()}, "
               f"shape {tuple(x.shape)}; kernel is {klay.describe_kernel()}, shape "
               f"{tuple(kernel.shape)})")
        if x.shape[1] == i * groups:
            msg += L.channels_first_hint(lay)
        raise ValueError(msg)
    stride, dilation, pad = _window_args(op, x, window, stride, padding, dilation)
    backward = _check_backward(op, backward)
    bias = L.check_bias(bias, o, op, x.dtype)
    return _conv(x, kernel.astype(x.dtype), bias, stride, pad, dilation, groups, backward)


def _check_backward(op: str, backward: Any) -> str:
    if backward not in ("canonical", "lax"):
        raise ValueError(f"{op}: backward must be 'canonical' (hand-written VJP, fast in "
                         f"lax.scan on CPU; reverse mode only) or 'lax' (JAX autodiff; "
                         f"forward mode too), got {backward!r}")
    return backward


def _conv_operands(op, x, kernel, kernel_name="kernel"):
    """Arrays, rank and layouts of a conv's ``x`` and kernel, checked."""
    kernel = L.as_array(kernel, kernel_name, op)
    klay = L.check_kernel(kernel, op, name=kernel_name)
    x = L.as_array(x, "x", op)
    lay = L.check_activation_rank(
        x, klay.rank, op, because=f" for a {klay.rank}D {kernel_name} "
                                  f"{klay.describe_kernel()} of shape {tuple(kernel.shape)}")
    L.check_float(x, "x", op, lay.describe_x())
    return x, kernel, lay, klay


def _window_args(op, x, window, stride, padding, dilation):
    """Normalized ``(stride, dilation, Padding)`` of a conv over ``x``'s spatial axes."""
    rank = len(window)
    stride = L.normalize_tuple(stride, rank, "stride", op=op)
    dilation = L.normalize_tuple(dilation, rank, "dilation", op=op)
    pad = L.normalize_padding(padding, x.shape[1:-1], effective(window, dilation), stride,
                              op=op)
    return stride, dilation, pad


def _conv(x, kernel, bias, stride, pad: L.Padding, dilation, groups, backward="canonical"):
    """The validated conv: one ``lax.conv_general_dilated`` (after wrap-around padding).

    With ``backward="canonical"`` it is :func:`conv_grad.conv_general`, whose VJP is
    hand-written; CIRCULAR padding is a gather before it, differentiated by JAX.
    """
    pairs = pad.pairs
    if pad.circular:
        x = L.circular_pad(x, pairs)
        pairs = ((0, 0),) * len(pairs)
    conv_fn = conv_general if backward == "canonical" else lax_conv
    y = conv_fn(x, kernel, tuple(stride), tuple(pairs), tuple(dilation), groups)
    return finish(y, bias, x.dtype)


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
    if kernel.ndim == 2:
        if x.ndim not in (3, 4, 5):
            raise ValueError(
                f"{op}: x must be rank 3, 4 or 5 (NWC, NHWC or NDHWC: [N, *spatial, C]), "
                f"got rank {x.ndim} with shape {tuple(x.shape)}")
        rank = x.ndim - 2
    elif kernel.ndim in (3, 4, 5):
        rank = kernel.ndim - 2
    else:
        raise ValueError(f"{op}: kernel must be [C, O] or a 1x1 conv kernel (WIO, HWIO or "
                         f"DHWIO, rank 3-5), got shape {tuple(kernel.shape)}")
    lay = L.check_activation_rank(x, rank, op,
                                  because=f" for a kernel of shape {tuple(kernel.shape)}")
    L.check_float(x, "x", op, lay.describe_x())
    i, o = _pointwise_kernel(op, "kernel", kernel, rank)
    L.check_channels(x, i, lay, op)
    bias = L.check_bias(bias, o, op, x.dtype)
    return linear(x, kernel.reshape(i, o), bias)


def _pointwise_kernel(op, name, kernel, rank) -> tuple[int, int]:
    """Check a 1x1 kernel ``[I, O]`` or ``[1, ..., 1, I, O]`` of ``rank``; return ``(I, O)``."""
    shape = tuple(kernel.shape)
    lay = L.layout_for_rank(rank)
    if kernel.ndim == 2:
        for letter, v in zip("IO", shape):
            if v == 0:
                raise ValueError(f"{op}: {name} [I, O] has {letter}=0 (shape {shape}); "
                                 f"every axis must be >= 1")
        L.check_float(kernel, name, op, "[I, O]")
    else:
        if kernel.ndim != rank + 2:
            raise ValueError(f"{op}: {name} must be [I, O] or 1x1 {lay.describe_kernel()} "
                             f"(rank 2 or {rank + 2}), got shape {shape}")
        L.check_kernel(kernel, op, name=name)
        if any(k != 1 for k in shape[:-2]):
            raise ValueError(f"{op}: {name} must be [I, O] or 1x1 {lay.describe_kernel()}, "
                             f"got window {shape[:-2]} (shape {shape}); use conv for "
                             f"larger windows")
    return shape[-2], shape[-1]


def _depthwise_args(op, x, kernel, stride, padding, dilation, kernel_name="kernel"):
    """Checks shared by ``depthwise_conv`` and ``separable_conv``; normalized arguments."""
    x, kernel, lay, klay = _conv_operands(op, x, kernel, kernel_name)
    *window, i, o = kernel.shape
    c = x.shape[-1]
    desc = klay.describe_kernel().replace("I, O]", "1, C*M]")
    if i != 1:
        msg = (f"{op}: {kernel_name} {desc} must have I=1 (each filter sees one input "
               f"channel), got I={i} (shape {tuple(kernel.shape)})")
        if i == c:
            msg += (f"; a Keras-style [*window, C, M] kernel converts with "
                    f"{kernel_name}.reshape(*window, 1, C * M)")
        raise ValueError(msg)
    if o % c:
        msg = (f"{op}: channel multiplier mismatch: {kernel_name} {desc} has O={o} output "
               f"channels, not a multiple C*M of x's C={c} channels (x is "
               f"{lay.describe_x()}, shape {tuple(x.shape)})")
        if x.ndim > 2 and o % x.shape[1] == 0 and x.shape[1] != c:
            msg += L.channels_first_hint(lay)
        raise ValueError(msg)
    stride, dilation, pad = _window_args(op, x, window, stride, padding, dilation)
    return x, kernel.astype(x.dtype), stride, dilation, pad, lay


def depthwise_conv(x: Any, kernel: Any, bias: Any = None, *, stride: Any = 1,
                   padding: Any = "SAME", dilation: Any = 1, method: str = "auto",
                   backward: str = "canonical") -> jax.Array:
    """Depthwise conv: each input channel convolved with its own ``M`` filters.

    Equal to :func:`conv` with ``groups=C``: output channel ``c * M + m`` is input
    channel ``c`` correlated with filter ``kernel[..., 0, c*M + m]``. No channel mixing;
    ``prod(window) * C * M`` weights.

    Two computations, one result (tested equal):

    * ``method="grouped"``: one ``lax.conv_general_dilated`` with
      ``feature_group_count=C``, the native kernel on GPU and TPU;
    * ``method="taps"``: the sum over the ``prod(window)`` kernel taps of a strided slice
      of the padded input times that tap's ``C*M`` weights, elementwise work that XLA
      fuses. XLA:CPU has no fast grouped conv: measured on a 2-core CPU (batch 128,
      28x28x32, 3x3) ``taps`` takes 0.02x the time of ``grouped`` forward (1.9 vs 85 ms),
      0.27x forward+backward (66 vs 249 ms) and 0.20x per step inside ``lax.scan``
      (49 vs 246 ms); see ``python -m experiments.benchmark_depthwise``.
    * ``method="auto"`` (default): ``taps`` when the default backend is CPU, else
      ``grouped``.

    Args:
      x: ``[N, W, C]``, ``[N, H, W, C]`` or ``[N, D, H, W, C]``.
      kernel: ``[*window, 1, C*M]`` (``M`` the channel multiplier), the layout of
        ``flax.linen.Conv(feature_group_count=C)`` and Haiku. A Keras
        ``DepthwiseConv2D`` kernel ``[KH, KW, C, M]`` converts with
        ``kernel.reshape(KH, KW, 1, C * M)``.
      bias: ``[C*M]`` or None.
      stride, padding, dilation: as for :func:`conv`.
      method: ``"auto"``, ``"grouped"`` or ``"taps"`` (see above).
      backward: for ``method="grouped"``, as for :func:`conv` (``taps`` is plain JAX
        autodiff, forward mode included).

    Returns:
      ``[N, H', W', C*M]`` with ``H'`` as for :func:`conv`.

    >>> depthwise_conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 1, 6))).shape
    (2, 8, 8, 6)
    """
    op = "depthwise_conv"
    method = _depthwise_method(op, method)
    backward = _check_backward(op, backward)
    x, kernel, stride, dilation, pad, _ = _depthwise_args(op, x, kernel, stride, padding,
                                                          dilation)
    bias = L.check_bias(bias, kernel.shape[-1], op, x.dtype)
    return _depthwise(x, kernel, bias, stride, pad, dilation, method, backward)


def _depthwise_method(op: str, method: Any) -> str:
    if method not in ("auto", "grouped", "taps"):
        raise ValueError(f"{op}: method must be 'auto', 'grouped' or 'taps', got {method!r}")
    if method == "auto":
        return "taps" if jax.default_backend() == "cpu" else "grouped"
    return method


def _depthwise(x, kernel, bias, stride, pad: L.Padding, dilation, method, backward):
    """The validated depthwise conv, by a grouped conv or by a sum over kernel taps."""
    if method == "grouped":
        return _conv(x, kernel, bias, stride, pad, dilation, x.shape[-1], backward)
    rank = kernel.ndim - 2
    window, cm = kernel.shape[:rank], kernel.shape[-1]
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xa = x.astype(acc)
    if cm != x.shape[-1]:  # channel multiplier M: output channel c*M + m reads channel c
        xa = jnp.repeat(xa, cm // x.shape[-1], axis=-1)
    if pad.circular:
        xa = L.circular_pad(xa, pad.pairs)
    else:
        xa = jnp.pad(xa, ((0, 0), *pad.pairs, (0, 0)))
    w = kernel.astype(acc)
    y = None
    for tap, xs in tap_slices(xa, window, stride, dilation):
        term = xs * w[tap].reshape((1,) * (rank + 1) + (cm,))
        y = term if y is None else y + term
    return finish(y, bias, x.dtype)


def separable_conv(x: Any, depthwise_kernel: Any, pointwise_kernel: Any, bias: Any = None, *,
                   stride: Any = 1, padding: Any = "SAME", dilation: Any = 1,
                   method: str = "auto", backward: str = "canonical") -> jax.Array:
    """Depthwise-separable conv: :func:`depthwise_conv`, then :func:`pointwise`.

    The spatial filtering (one small filter per channel) and the channel mixing (a 1x1
    conv) are factored apart: ``prod(window) * C * M + C * M * O`` weights instead of a
    full conv's ``prod(window) * C * O``. The bias is on the pointwise part only, as in
    Keras' ``SeparableConv2D``, so parameter counts match Keras.

    Args:
      x: ``[N, W, C]``, ``[N, H, W, C]`` or ``[N, D, H, W, C]``.
      depthwise_kernel: ``[*window, 1, C*M]``.
      pointwise_kernel: ``[C*M, O]`` or ``[1, ..., 1, C*M, O]``.
      bias: ``[O]`` or None.
      stride, padding, dilation: of the depthwise part (as for :func:`conv`).
      method, backward: how the depthwise part is computed and differentiated (see
        :func:`depthwise_conv`).

    Returns:
      ``[N, H', W', O]``.

    >>> separable_conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 1, 6)), jnp.ones((6, 16))).shape
    (2, 8, 8, 16)
    """
    op = "separable_conv"
    method = _depthwise_method(op, method)
    backward = _check_backward(op, backward)
    x, dk, stride, dilation, pad, lay = _depthwise_args(
        op, x, depthwise_kernel, stride, padding, dilation, "depthwise_kernel")
    pointwise_kernel = L.as_array(pointwise_kernel, "pointwise_kernel", op)
    i, o = _pointwise_kernel(op, "pointwise_kernel", pointwise_kernel, lay.rank)
    cm = dk.shape[-1]
    if i != cm:
        raise ValueError(f"{op}: pointwise_kernel [C*M, O] = {tuple(pointwise_kernel.shape)} "
                         f"expects I={i} input channels but the depthwise part gives "
                         f"C*M={cm} (x has C={x.shape[-1]}, depthwise_kernel "
                         f"{tuple(dk.shape)})")
    bias = L.check_bias(bias, o, op, x.dtype)
    h = _depthwise(x, dk, None, stride, pad, dilation, method, backward)
    return linear(h, pointwise_kernel.reshape(i, o), bias)


def _transpose_spatial(y_shape, kernel_shape, output_shape, lay: L.Layout, op: str):
    """The forward input's spatial shape for ``conv_transpose``, from ``output_shape``."""
    rank = lay.rank
    n_batch, *m, _ = y_shape
    *window, i, _ = kernel_shape
    if output_shape is None:
        return None
    forms = (f"a sequence of {rank} spatial sizes ({', '.join(lay.spatial)}) or the full "
             f"forward input shape {lay.describe_x()}, as Python ints")
    try:
        values = list(output_shape)
    except TypeError as e:
        raise TypeError(f"{op}: output_shape must be {forms}, got {output_shape!r}") from e
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
               for v in values):
        raise TypeError(f"{op}: output_shape must be {forms} (static under jit), got "
                        f"{output_shape!r}")
    shape = tuple(int(v) for v in values)
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
    This is the adjoint of an ungrouped conv (``groups=1``); there is no ``groups``
    argument.

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
    eff = effective(window, dilation)
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
    bias = L.check_bias(bias, i, op, y.dtype, letter="I")
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
    """The validated adjoint: :func:`conv_grad.input_grad`, one canonical conv."""
    rank = kernel.ndim - 2
    if pad.circular:  # the forward conv is VALID on the wrap-padded input
        conv_pairs = ((0, 0),) * rank
        sizes = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pad.pairs))
    else:
        conv_pairs, sizes = pad.pairs, spatial
    z = input_grad(y, kernel, sizes, stride, conv_pairs, dilation)
    if pad.circular:
        x_shape = (z.shape[0], *spatial, z.shape[-1])
        (z,) = jax.linear_transpose(lambda a: L.circular_pad(a, pad.pairs),
                                    jax.ShapeDtypeStruct(x_shape, z.dtype))(z)
    return finish(z, bias, y.dtype)
