"""Layouts: names, dimension numbers, argument normalization and input validation.

convjax fixes one layout per rank. Activations are *channels last*, kernels are
*spatial first, then input channels, then output channels*:

======  ===========  ========  ===========================================
rank    activations  kernel    kernel letters
======  ===========  ========  ===========================================
1D      ``NWC``      ``WIO``   ``W``: kernel width
2D      ``NHWC``     ``HWIO``  ``H, W``: kernel height, width
3D      ``NDHWC``    ``DHWIO`` ``D, H, W``: kernel depth, height, width
======  ===========  ========  ===========================================

Letters of the activation layouts: ``N`` batch, ``D``/``H``/``W`` spatial depth,
height and width, ``C`` channels (features). Letters of the kernel layouts: the
spatial window, then ``I`` input channels *per group* (``C / groups``) and ``O``
output channels (the number of filters). A 2D conv with ``K`` filters on ``C``
channels holds ``K`` filters of shape ``KH x KW x C``: ``K * C`` two-dimensional
``KH x KW`` slices, ``KH * KW * C * K`` weights plus ``K`` biases.

This module is the only place that knows these letters. It also holds the one helper
that normalizes stride/dilation/window arguments (:func:`normalize_tuple`), the one
that turns a padding argument into explicit ``(low, high)`` pairs
(:func:`normalize_padding`), the input checks shared by every op (errors name the
argument, the layout and the expected vs actual value, raised before anything is
traced into XLA), and conversions to and from PyTorch's channels-first layouts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "Layout",
    "LAYOUTS",
    "layout_for_rank",
    "dimension_numbers",
    "normalize_tuple",
    "normalize_padding",
    "Padding",
    "PADDING_FORMS",
    "channels_first_to_last",
    "channels_last_to_first",
    "ncw_to_nwc",
    "nwc_to_ncw",
    "nchw_to_nhwc",
    "nhwc_to_nchw",
    "ncdhw_to_ndhwc",
    "ndhwc_to_ncdhw",
    "oiw_to_wio",
    "wio_to_oiw",
    "oihw_to_hwio",
    "hwio_to_oihw",
    "oidhw_to_dhwio",
    "dhwio_to_oidhw",
]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The fixed layout of one rank.

    Attributes:
      rank: number of spatial dimensions (1, 2 or 3).
      activations: e.g. ``"NHWC"``.
      kernel: e.g. ``"HWIO"``.
      spatial: names of the spatial axes, e.g. ``("H", "W")``.
    """

    rank: int
    activations: str
    kernel: str
    spatial: tuple[str, ...]

    @property
    def kernel_spatial(self) -> tuple[str, ...]:
        """Names of the kernel's window axes, e.g. ``("KH", "KW")``."""
        return tuple("K" + s for s in self.spatial)

    def describe_x(self) -> str:
        """``"NHWC [N, H, W, C]"``: the activation layout, spelled out for messages."""
        return f"{self.activations} [{', '.join(self.activations)}]"

    def describe_kernel(self) -> str:
        """``"HWIO [KH, KW, I, O]"``: the kernel layout, spelled out for messages."""
        return f"{self.kernel} [{', '.join(self.kernel_spatial + ('I', 'O'))}]"


LAYOUTS: dict[int, Layout] = {
    1: Layout(1, "NWC", "WIO", ("W",)),
    2: Layout(2, "NHWC", "HWIO", ("H", "W")),
    3: Layout(3, "NDHWC", "DHWIO", ("D", "H", "W")),
}


def layout_for_rank(rank: int) -> Layout:
    """The :class:`Layout` of a spatial rank (1, 2 or 3).

    >>> layout_for_rank(2).activations, layout_for_rank(2).kernel
    ('NHWC', 'HWIO')
    """
    if rank not in LAYOUTS:
        raise ValueError(f"spatial rank must be 1, 2 or 3 (NWC/NHWC/NDHWC), got {rank}")
    return LAYOUTS[rank]


def dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    """``lax.ConvDimensionNumbers`` for ``(activations, kernel, activations)`` of a rank.

    >>> dimension_numbers(2)
    ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))
    """
    lay = layout_for_rank(rank)
    ones = (1,) * (rank + 2)
    return lax.conv_dimension_numbers(ones, ones, (lay.activations, lay.kernel, lay.activations))


# --------------------------------------------------------------------------------------
# Argument normalization
# --------------------------------------------------------------------------------------


def normalize_tuple(value: Any, rank: int, name: str, *, op: str = "conv",
                    minimum: int = 1) -> tuple[int, ...]:
    """Normalize a stride, dilation or window argument to ``rank`` ints ``>= minimum``.

    Accepted forms: an int (the same for every spatial dim) or a sequence of ``rank``
    ints, one per spatial dim in layout order (``(H, W)`` for NHWC).

    >>> normalize_tuple(2, 2, "stride")
    (2, 2)
    >>> normalize_tuple((1, 3), 2, "dilation")
    (1, 3)
    """
    lay = layout_for_rank(rank)
    forms = (f"an int >= {minimum}, or a sequence of {rank} ints >= {minimum} "
             f"(one per spatial dim {', '.join(lay.spatial)} of {lay.activations})")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be {forms}; got {value!r}")
    if isinstance(value, (int, np.integer)):
        values = (int(value),) * rank
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != rank or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                for v in value):
            raise ValueError(f"{op}: {name} must be {forms}; got {value!r}")
        values = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{op}: {name} must be {forms}; got {value!r}")
    for axis, v in zip(lay.spatial, values):
        if v < minimum:
            raise ValueError(f"{op}: {name} must be >= {minimum} for every spatial dim of "
                             f"{lay.activations}, got {name}={v} for {axis} "
                             f"(in {value!r})")
    return values


PADDING_FORMS = ('"SAME", "VALID", "CIRCULAR", an int >= 0 (both sides of every spatial '
                 'dim), or a sequence with one entry per spatial dim, each a (low, high) '
                 'int pair or an int (both sides)')


@dataclasses.dataclass(frozen=True)
class Padding:
    """Explicit padding of every spatial dim.

    Attributes:
      pairs: one ``(low, high)`` pair per spatial dim.
      circular: fill the padding by wrap-around instead of zeros.
    """

    pairs: tuple[tuple[int, int], ...]
    circular: bool = False


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one dim: output ``ceil(size / stride)``.

    ``window`` is the effective (dilated) window ``(K - 1) * dilation + 1``. When the
    total padding is odd, the extra row/column goes at the end (high side).

    >>> same_pads(28, 3, 1), same_pads(28, 3, 2), same_pads(5, 4, 1)
    ((1, 1), (0, 1), (1, 2))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def normalize_padding(padding: Any, sizes: Sequence[int], windows: Sequence[int],
                      strides: Sequence[int], *, op: str = "conv",
                      name: str = "padding", check_fits: bool = True,
                      window_note: str = " (after dilation)") -> Padding:
    """Turn a padding argument into explicit ``(low, high)`` pairs.

    Args:
      padding: one of :data:`PADDING_FORMS` (strings are case-insensitive).
      sizes: input spatial sizes, e.g. ``(H, W)``.
      windows: effective window sizes, ``(K - 1) * dilation + 1`` per dim.
      strides: strides per dim.
      op: name of the calling op, for messages.
      check_fits: raise if a window is larger than its padded input.
      window_note: said after the window size in that error.

    Returns:
      a :class:`Padding`. ``"SAME"`` and ``"CIRCULAR"`` give output
      ``ceil(size / stride)`` with :func:`same_pads`; ``"VALID"`` gives zeros.

    >>> normalize_padding("SAME", (28, 28), (3, 3), (2, 2))
    Padding(pairs=((0, 1), (0, 1)), circular=False)
    >>> normalize_padding(1, (5,), (3,), (1,)).pairs
    ((1, 1),)
    """
    rank = len(sizes)
    lay = layout_for_rank(rank)
    circular = False
    if isinstance(padding, str):
        mode = padding.upper()
        if mode in ("SAME", "CIRCULAR"):
            pairs = tuple(same_pads(n, k, s) for n, k, s in zip(sizes, windows, strides))
            circular = mode == "CIRCULAR"
        elif mode == "VALID":
            pairs = ((0, 0),) * rank
        else:
            raise ValueError(f"{op}: unknown {name} {padding!r}; expected {PADDING_FORMS}")
    elif isinstance(padding, (int, np.integer)) and not isinstance(padding, (bool, np.bool_)):
        if padding < 0:
            raise ValueError(f"{op}: {name} must be >= 0, got {padding}; expected "
                             f"{PADDING_FORMS}")
        pairs = ((int(padding), int(padding)),) * rank
    elif isinstance(padding, Sequence):
        if len(padding) != rank:
            raise ValueError(
                f"{op}: {name} needs {rank} (low, high) pairs, one per spatial dim "
                f"{', '.join(lay.spatial)} of {lay.activations}, got {len(padding)}: "
                f"{padding!r}; expected {PADDING_FORMS}")
        pairs = []
        for axis, p in zip(lay.spatial, padding):
            if isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_)):
                p = (p, p)
            if (not isinstance(p, Sequence) or len(p) != 2 or not all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                    for v in p)):
                raise ValueError(f"{op}: {name} for {axis} must be a (low, high) pair of "
                                 f"ints, got {p!r}; expected {PADDING_FORMS}")
            if p[0] < 0 or p[1] < 0:
                raise ValueError(f"{op}: {name} for {axis} must be >= 0, got {tuple(p)}")
            pairs.append((int(p[0]), int(p[1])))
        pairs = tuple(pairs)
    else:
        raise TypeError(f"{op}: {name} must be {PADDING_FORMS}; got {padding!r}")
    if check_fits:
        for axis, n, k, (lo, hi) in zip(lay.spatial, sizes, windows, pairs):
            if n + lo + hi < k:
                raise ValueError(
                    f"{op}: window K{axis}={k}{window_note} is larger than the padded "
                    f"input {axis}={n}+{lo}+{hi}={n + lo + hi} (x is {lay.describe_x()}, "
                    f"{name}={padding!r}); use a smaller window or more padding")
    return Padding(pairs, circular)


def output_size(size: int, window: int, stride: int, pads: tuple[int, int]) -> int:
    """Output length of a strided window: ``floor((size + lo + hi - window) / stride) + 1``."""
    return (size + pads[0] + pads[1] - window) // stride + 1


def circular_pad(x: jax.Array, pairs: Sequence[tuple[int, int]]) -> jax.Array:
    """Pad the spatial axes of channels-last ``x`` ([N, *spatial, C]) by wrap-around.

    Padding may exceed the axis length (it wraps as often as needed). One gather per
    padded axis; its transpose (used by :func:`convjax.conv_transpose`) is a
    scatter-add that folds the border back.
    """
    for axis, (lo, hi) in enumerate(pairs, start=1):
        if lo == 0 and hi == 0:
            continue
        n = x.shape[axis]
        idx = np.arange(-lo, n + hi) % n
        x = jnp.take(x, idx, axis=axis)
    return x


# --------------------------------------------------------------------------------------
# Input validation (shared by every op)
# --------------------------------------------------------------------------------------

_CONVERTERS = {1: "convjax.layout.ncw_to_nwc(x)", 2: "convjax.layout.nchw_to_nhwc(x)",
               3: "convjax.layout.ncdhw_to_ndhwc(x)"}


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(a))


def as_array(a: Any, name: str, op: str) -> jax.Array:
    """``a`` as a jax array (tracers pass through); a TypeError names ``name`` otherwise."""
    if isinstance(a, jax.Array):
        return a
    if a is None:
        raise TypeError(f"{op}: {name} must be an array, got None")
    try:
        return jnp.asarray(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{op}: {name} must be an array, got {type(a).__name__}") from e


def check_float(a: jax.Array, name: str, op: str, layout: str) -> None:
    """Raise TypeError unless ``a`` has a floating dtype."""
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(
            f"{op}: {name} must be floating point (float32, bfloat16 or float16), got dtype "
            f"{a.dtype} ({name} is {layout}); convert first, e.g. {name}.astype(jnp.float32)"
            + (" / 255.0" if a.dtype == jnp.uint8 else ""))


def check_activation_rank(x: jax.Array, rank: int, op: str, name: str = "x",
                          because: str = "", window_word: str = "kernel") -> Layout:
    """Check that ``x`` is rank ``rank + 2`` channels-last; return the layout.

    ``because`` explains where ``rank`` came from (e.g. "for a 2D kernel HWIO [...]");
    ``window_word`` is what fixes the rank ("kernel" for convs, "window" for pooling).
    """
    lay = layout_for_rank(rank)
    shape = _shape(x)
    if len(shape) != rank + 2:
        msg = (f"{op}: {name} must be rank {rank + 2} ({lay.describe_x()}){because}, got "
               f"rank {len(shape)} with shape {shape}")
        if len(shape) == rank + 1:
            msg += (f"; an unbatched {lay.activations[1:]} input needs a batch axis: "
                    f"{name}[None]")
        if len(shape) in (3, 4, 5):
            other = layout_for_rank(len(shape) - 2)
            needs = (f"{other.rank}D kernel {other.describe_kernel()}"
                     if window_word == "kernel" else
                     f"{other.rank}-entry window ({', '.join(other.spatial)})")
            msg += (f"; a batched rank-{len(shape)} input is {other.activations}, which "
                    f"needs a {needs}")
        raise ValueError(msg)
    return lay


def check_kernel(kernel: jax.Array, op: str, name: str = "kernel") -> Layout:
    """Check a conv kernel ``[*window, I, O]`` (rank 1-3, non-empty, floating)."""
    shape = _shape(kernel)
    if len(shape) not in (3, 4, 5):
        raise ValueError(
            f"{op}: {name} must be rank 3, 4 or 5 (WIO, HWIO or DHWIO: [*window, I, O]), "
            f"got rank {len(shape)} with shape {shape}")
    lay = layout_for_rank(len(shape) - 2)
    for letter, v in zip(lay.kernel_spatial + ("I", "O"), shape):
        if v == 0:
            raise ValueError(f"{op}: {name} {lay.describe_kernel()} has {letter}=0 "
                             f"(shape {shape}); every axis must be >= 1")
    check_float(kernel, name, op, lay.describe_kernel())
    return lay


def check_channels(x: jax.Array, expected: int, lay: Layout, op: str, *, groups: int = 1,
                   name: str = "x", source: str = "kernel", letter: str = "I",
                   what: str = "input") -> None:
    """Check ``x.shape[-1] == expected``, with an NCHW hint when axis 1 matches instead.

    ``letter`` is the kernel axis that fixes the count (``I`` for a forward conv, ``O``
    for the ``y`` of a transposed conv).
    """
    shape = _shape(x)
    c = shape[-1]
    if c == expected:
        return
    if groups == 1:
        msg = (f"{op}: {source} expects {letter}={expected} {what} channels but {name} has "
               f"C={c} channels ({name} is {lay.describe_x()}, shape {shape})")
    else:
        msg = (f"{op}: {source} expects C=I*groups={expected} input channels "
               f"(I={expected // groups}, groups={groups}) but {name} has C={c} channels "
               f"({name} is {lay.describe_x()}, shape {shape})")
    if shape[1] == expected:
        msg += channels_first_hint(lay, name)
    raise ValueError(msg)


def channels_first_hint(lay: Layout, name: str = "x") -> str:
    """"; x looks channels-first (NCHW, as in PyTorch): convert it with ..." for messages."""
    return (f"; {name} looks channels-first (NC{lay.activations[1:-1]}, as in PyTorch): "
            f"convert it with {_CONVERTERS[lay.rank].replace('(x)', f'({name})')}")


def check_bias(bias: Any, features: int, op: str, dtype: Any,
               letter: str = "O") -> jax.Array | None:
    """Check ``bias: [O]`` (one per channel of the result) and cast it to ``dtype``.

    ``letter`` names the kernel axis that sets the count (``I`` for a transposed conv).
    None passes through.
    """
    if bias is None:
        return None
    bias = as_array(bias, "bias", op)
    if _shape(bias) != (features,):
        raise ValueError(f"{op}: bias must have shape [{letter}]=({features},), one per "
                         f"channel of the result, got shape {_shape(bias)}")
    check_float(bias, "bias", op, f"[{letter}]")
    return bias.astype(dtype)


# --------------------------------------------------------------------------------------
# Conversions to and from PyTorch's layouts
# --------------------------------------------------------------------------------------


def channels_first_to_last(x: Any) -> jax.Array:
    """``[N, C, *spatial]`` (NCW/NCHW/NCDHW) -> ``[N, *spatial, C]`` (NWC/NHWC/NDHWC)."""
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"channels_first_to_last: x must be rank >= 3 ([N, C, *spatial]), "
                         f"got shape {x.shape}")
    return jnp.moveaxis(x, 1, -1)


def channels_last_to_first(x: Any) -> jax.Array:
    """``[N, *spatial, C]`` (NWC/NHWC/NDHWC) -> ``[N, C, *spatial]`` (NCW/NCHW/NCDHW)."""
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"channels_last_to_first: x must be rank >= 3 ([N, *spatial, C]), "
                         f"got shape {x.shape}")
    return jnp.moveaxis(x, -1, 1)


def _checked(x: Any, ndim: int, name: str, src: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a rank-{ndim} {src} array, got shape {x.shape}")
    return x


def ncw_to_nwc(x):
    """PyTorch ``[N, C, W]`` -> ``[N, W, C]``."""
    return channels_first_to_last(_checked(x, 3, "ncw_to_nwc", "NCW"))


def nwc_to_ncw(x):
    """``[N, W, C]`` -> PyTorch ``[N, C, W]``."""
    return channels_last_to_first(_checked(x, 3, "nwc_to_ncw", "NWC"))


def nchw_to_nhwc(x):
    """PyTorch ``[N, C, H, W]`` -> ``[N, H, W, C]``.

    >>> nchw_to_nhwc(jnp.zeros((8, 3, 32, 32))).shape
    (8, 32, 32, 3)
    """
    return channels_first_to_last(_checked(x, 4, "nchw_to_nhwc", "NCHW"))


def nhwc_to_nchw(x):
    """``[N, H, W, C]`` -> PyTorch ``[N, C, H, W]``."""
    return channels_last_to_first(_checked(x, 4, "nhwc_to_nchw", "NHWC"))


def ncdhw_to_ndhwc(x):
    """PyTorch ``[N, C, D, H, W]`` -> ``[N, D, H, W, C]``."""
    return channels_first_to_last(_checked(x, 5, "ncdhw_to_ndhwc", "NCDHW"))


def ndhwc_to_ncdhw(x):
    """``[N, D, H, W, C]`` -> PyTorch ``[N, C, D, H, W]``."""
    return channels_last_to_first(_checked(x, 5, "ndhwc_to_ncdhw", "NDHWC"))


def _kernel_to_last(w, ndim, name, src):
    w = _checked(w, ndim, name, src)
    return jnp.transpose(w, tuple(range(2, ndim)) + (1, 0))


def _kernel_to_first(w, ndim, name, src):
    w = _checked(w, ndim, name, src)
    return jnp.transpose(w, (ndim - 1, ndim - 2) + tuple(range(ndim - 2)))


def oiw_to_wio(w):
    """PyTorch ``Conv1d.weight`` ``[O, I, KW]`` -> ``[KW, I, O]``."""
    return _kernel_to_last(w, 3, "oiw_to_wio", "OIW")


def wio_to_oiw(w):
    """``[KW, I, O]`` -> PyTorch ``[O, I, KW]``."""
    return _kernel_to_first(w, 3, "wio_to_oiw", "WIO")


def oihw_to_hwio(w):
    """PyTorch ``Conv2d.weight`` ``[O, I, KH, KW]`` -> ``[KH, KW, I, O]``.

    >>> oihw_to_hwio(jnp.zeros((64, 3, 5, 5))).shape
    (5, 5, 3, 64)
    """
    return _kernel_to_last(w, 4, "oihw_to_hwio", "OIHW")


def hwio_to_oihw(w):
    """``[KH, KW, I, O]`` -> PyTorch ``[O, I, KH, KW]``."""
    return _kernel_to_first(w, 4, "hwio_to_oihw", "HWIO")


def oidhw_to_dhwio(w):
    """PyTorch ``Conv3d.weight`` ``[O, I, KD, KH, KW]`` -> ``[KD, KH, KW, I, O]``."""
    return _kernel_to_last(w, 5, "oidhw_to_dhwio", "OIDHW")


def dhwio_to_oidhw(w):
    """``[KD, KH, KW, I, O]`` -> PyTorch ``[O, I, KD, KH, KW]``."""
    return _kernel_to_first(w, 5, "dhwio_to_oidhw", "DHWIO")
