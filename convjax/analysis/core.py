"""Exact per-layer shapes, parameters, costs and receptive fields of a layer stack.

Conventions (stated in every rendered table):

* **MACs** count every tap of every window, padded positions included: a conv costs
  ``prod(output spatial) * O * prod(window) * I`` multiply-accumulates per example
  (``I = C / groups``); a dense layer ``D_in * D_out`` per position. A transposed conv
  costs what the conv it transposes costs (each input value meets every tap once).
  Pooling, activations, batch norm, dropout and bias adds have no multiply-accumulate
  and count 0.
* **FLOPs** ``= 2 * MACs``, exactly.
* **Receptive field** and **jump** are in input pixels per spatial axis: the extent of
  input a single output value depends on (padding included, not clipped to the input)
  and the distance in the input between neighbouring outputs (the product of strides).
  ``rf' = rf + (K_eff - 1) * jump``, ``jump' = jump * stride``; a transposed conv divides
  the jump by its stride first. Global pooling and a dense layer on a flattened map act
  as one window over the whole map.
* **Activation size** is the layer's output for the whole batch, in elements and in
  bytes of ``dtype``.

Shapes are validated by the functional ops themselves: every layer's output shape is
``jax.eval_shape`` of the op that computes it (:func:`layer_forward`), so the table
cannot disagree with what the library computes, and an impossible shape gets the op's
own error, prefixed with the layer's index and text.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from convjax import functional as F
from convjax import layout as L
from convjax.analysis import specs as S

__all__ = ["LayerRow", "Analysis", "analyze", "layer_forward", "forward", "param_structs",
           "NUMERIC_KEYS"]

#: keys of a row (and of the total) that hold numbers
NUMERIC_KEYS = ("filters", "kernel_slices", "weights", "biases", "params", "non_trainable",
                "macs", "flops", "macs_on_padding", "receptive_field", "jump",
                "activation_elements", "activation_bytes")


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer of an :class:`Analysis` (shapes without the batch axis).

    Attributes:
      index: 1-based position in the stack.
      spec: the layer's :class:`~convjax.analysis.specs.LayerSpec`.
      input_shape, output_shape: ``(H, W, C)``-style shapes (no batch axis).
      filters: number of filters (output channels of a conv; ``C*M + O`` for a separable
        conv, depthwise then pointwise); 0 for layers without filters.
      filter_shape: one filter's shape, ``"3x3x3"`` (``KH x KW x I``); None without.
      kernel_slices: number of 2D (``KH x KW``) kernel planes: ``filters * I`` for a 2D
        conv, ``filters * I * KD`` for a 3D one (each ``KD x KH x KW x I`` filter is ``KD * I``
        planes); for a 1D conv, the ``KW``-long rows, ``filters * I``.
      weights, biases: trained kernel entries and bias entries (batch norm: scale, offset).
      non_trainable: entries that are state, not trained (batch norm's running mean, var).
      macs: multiply-accumulates for the batch (every tap, padding included).
      macs_on_padding: the part of ``macs`` whose input tap falls on zero padding (XLA
        does not count those).
      bias_adds: additions of a bias (XLA counts one FLOP each).
      receptive_field, jump: per spatial axis of the input (empty for a 0-d input).
      activation_elements, activation_bytes: the output for the whole batch.
      param_shapes: ``{"kernel": (3, 3, 3, 32), "bias": (32,)}``, the arrays the op takes.
      state_shapes: non-trained arrays (batch norm's ``{"mean": (C,), "var": (C,)}``).
      input_size_dependent: a dense layer whose input is a flattened map: its kernel
        shape depends on the image size.
      flattened_map: for such a layer, the ``(H, W, C)`` map that was flattened.
      sentence: one plain sentence that says what the layer holds and computes.
      path: the Flax module path of the layer (``"Conv_0"``, ``"block1/Conv_2"``) when
        it comes from a model; "" for a spec list.
    """

    index: int
    spec: S.LayerSpec
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    filters: int
    filter_shape: str | None
    kernel_slices: int
    weights: int
    biases: int
    non_trainable: int
    macs: int
    macs_on_padding: int
    bias_adds: int
    receptive_field: tuple[Fraction, ...]
    jump: tuple[Fraction, ...]
    activation_elements: int
    activation_bytes: int
    param_shapes: Mapping[str, tuple[int, ...]]
    state_shapes: Mapping[str, tuple[int, ...]]
    input_size_dependent: bool
    flattened_map: tuple[int, ...] | None
    sentence: str
    path: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def text(self) -> str:
        return self.spec.spec_string()

    @property
    def params(self) -> int:
        """Trained parameters: ``weights + biases``."""
        return self.weights + self.biases

    @property
    def flops(self) -> int:
        """``2 * macs``, exactly."""
        return 2 * self.macs


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The per-layer table of a stack for one input shape (see :func:`analyze`).

    Render it with :mod:`convjax.analysis.render` (``str(analysis)`` is the text table;
    notebooks show the Markdown table).
    """

    input_shape: tuple[int, ...]
    batch: int
    dtype: str
    rows: tuple[LayerRow, ...]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.rows[-1].output_shape if self.rows else self.input_shape

    def total(self) -> dict[str, Any]:
        """Sums over the layers; ``receptive_field`` and ``jump`` are the last layer's."""
        tot = {k: sum(getattr(r, k) for r in self.rows) for k in
               ("filters", "kernel_slices", "weights", "biases", "params", "non_trainable",
                "macs", "flops", "macs_on_padding", "bias_adds", "activation_elements",
                "activation_bytes")}
        last = self.rows[-1] if self.rows else None
        tot["receptive_field"] = last.receptive_field if last else ()
        tot["jump"] = last.jump if last else ()
        return tot

    def __str__(self) -> str:
        from convjax.analysis import render
        return render.text(self)

    def _repr_markdown_(self) -> str:
        from convjax.analysis import render
        return render.markdown(self)


# --------------------------------------------------------------------------------------
# The functional op of each spec
# --------------------------------------------------------------------------------------

_ACT = {"relu": jax.nn.relu, "relu6": jax.nn.relu6, "elu": jax.nn.elu, "gelu": jax.nn.gelu,
        "silu": jax.nn.silu, "swish": jax.nn.silu, "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh, "softmax": jax.nn.softmax, "log_softmax": jax.nn.log_softmax,
        "softplus": jax.nn.softplus, "leaky_relu": jax.nn.leaky_relu}


def _act(fn: str | None, y):
    return y if fn is None else _ACT[fn](y)


def layer_forward(spec: S.LayerSpec, params: Mapping[str, Any], state: Mapping[str, Any],
                  x: jax.Array) -> jax.Array:
    """Apply one spec with the functional ops, in inference mode (dropout is the identity,
    batch norm uses its running statistics).

    Args:
      spec: the layer.
      params: arrays of the shapes in its row's ``param_shapes``.
      state: arrays of the shapes in its row's ``state_shapes``.
      x: ``[N, *spatial, C]`` (or ``[N, D]`` after flatten).
    """
    p = params
    if isinstance(spec, S.Conv):
        y = F.conv(x, p["kernel"], p.get("bias"), stride=spec.strides, padding=spec.padding,
                   dilation=spec.dilation, groups=spec.groups)
    elif isinstance(spec, S.ConvTranspose):
        y = F.conv_transpose(x, p["kernel"], p.get("bias"), stride=spec.strides,
                             padding=spec.padding, dilation=spec.dilation)
    elif isinstance(spec, S.DepthwiseConv):
        y = F.depthwise_conv(x, p["kernel"], p.get("bias"), stride=spec.strides,
                             padding=spec.padding, dilation=spec.dilation)
    elif isinstance(spec, S.SeparableConv):
        y = F.separable_conv(x, p["depthwise_kernel"], p["pointwise_kernel"], p.get("bias"),
                             stride=spec.strides, padding=spec.padding,
                             dilation=spec.dilation)
    elif isinstance(spec, S.Pool):
        pool = F.max_pool if spec.kind == "max" else F.avg_pool
        return pool(x, spec.window, spec.strides, spec.padding)
    elif isinstance(spec, S.GlobalPool):
        return (F.global_max_pool if spec.kind == "max" else F.global_avg_pool)(x)
    elif isinstance(spec, S.Flatten):
        return F.flatten(x)
    elif isinstance(spec, S.Dense):
        y = F.dense(x, p["kernel"], p.get("bias"))
    elif isinstance(spec, S.Dropout):
        return F.dropout(None, x, spec.rate, deterministic=True)
    elif isinstance(spec, S.BatchNorm):
        c = x.shape[-1]
        bn = {"scale": p.get("scale", jnp.ones((c,), x.dtype)),
              "bias": p.get("bias", jnp.zeros((c,), x.dtype))}
        return F.batch_norm(bn, state, x, training=False, momentum=spec.momentum,
                            epsilon=spec.epsilon)[0]
    elif isinstance(spec, S.Activation):
        return _act(spec.fn, x)
    else:
        raise TypeError(f"not a layer spec: {spec!r}")
    return _act(spec.activation, y)


def forward(layers: Sequence[S.LayerSpec], params: Sequence[Mapping[str, Any]],
            state: Sequence[Mapping[str, Any]], x: jax.Array) -> jax.Array:
    """Apply a stack of specs (inference mode); ``params[i]``/``state[i]`` for layer i."""
    for spec, p, s in zip(layers, params, state):
        x = layer_forward(spec, p, s, x)
    return x


def param_structs(analysis: Analysis, dtype: Any = jnp.float32):
    """``(params, state)`` lists of ``jax.ShapeDtypeStruct`` for :func:`forward`."""
    params = [{k: jax.ShapeDtypeStruct(v, dtype) for k, v in r.param_shapes.items()}
              for r in analysis.rows]
    state = [{k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in r.state_shapes.items()}
             for r in analysis.rows]
    return params, state


# --------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------


def _param_shapes(spec: S.LayerSpec, in_shape: tuple[int, ...]):
    """``(params, state)`` shapes of a layer for an input ``in_shape`` (no batch axis)."""
    c = in_shape[-1] if in_shape else 0
    bias = lambda n, on: {"bias": (n,)} if on else {}  # noqa: E731
    if isinstance(spec, S.Conv):
        if c % spec.groups:
            raise ValueError(f"the input has C={c} channels, not divisible by "
                             f"groups={spec.groups}")
        return ({"kernel": (*spec.kernel_size, c // spec.groups, spec.features),
                 **bias(spec.features, spec.use_bias)}, {})
    if isinstance(spec, S.ConvTranspose):
        return ({"kernel": (*spec.kernel_size, spec.features, c),
                 **bias(spec.features, spec.use_bias)}, {})
    if isinstance(spec, S.DepthwiseConv):
        cm = c * spec.multiplier
        return {"kernel": (*spec.kernel_size, 1, cm), **bias(cm, spec.use_bias)}, {}
    if isinstance(spec, S.SeparableConv):
        cm = c * spec.multiplier
        return ({"depthwise_kernel": (*spec.kernel_size, 1, cm),
                 "pointwise_kernel": (cm, spec.features),
                 **bias(spec.features, spec.use_bias)}, {})
    if isinstance(spec, S.Dense):
        return {"kernel": (c, spec.features), **bias(spec.features, spec.use_bias)}, {}
    if isinstance(spec, S.BatchNorm):
        p = {}
        if spec.use_scale:
            p["scale"] = (c,)
        if spec.use_bias:
            p["bias"] = (c,)
        return p, {"mean": (c,), "var": (c,)}
    return {}, {}


def _in_bounds(n: int, k: int, s: int, d: int, lo: int, out: int) -> int:
    """Number of (output position, tap) pairs of one axis whose tap is inside [0, n)."""
    pos = np.arange(out)[:, None] * s - lo + np.arange(k)[None, :] * d
    return int(((pos >= 0) & (pos < n)).sum())


def _taps(in_spatial, window, strides, dilation, padding, out_spatial, op):
    """``(all taps, in-bounds taps)`` of a windowed op, summed over output positions."""
    eff = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
    pad = L.normalize_padding(padding, in_spatial, eff, strides, op=op, check_fits=False)
    total, inside = 1, 1
    for n, k, s, d, (lo, _), o in zip(in_spatial, window, strides, dilation, pad.pairs,
                                      out_spatial):
        total *= o * k
        inside *= o * k if pad.circular else _in_bounds(n, k, s, d, lo, o)
    return total, inside


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def _n(v: int) -> str:
    return f"{v:,}"


def _weights_sentence(weights: int, biases: int) -> str:
    b = f"{_n(biases)} bias{'es' if biases > 1 else ''}" if biases else "no bias"
    return f"{_n(weights)} weights + {b}"


@dataclasses.dataclass
class _Field:
    """Receptive field and jump per input axis, and what a flatten left behind."""

    rf: list[Fraction]
    jump: list[Fraction]
    flattened: tuple[int, ...] | None = None

    def window(self, eff: Sequence[int], strides: Sequence[int], transpose=False):
        for i, (k, s) in enumerate(zip(eff, strides)):
            if transpose:
                self.jump[i] /= s
            self.rf[i] += (k - 1) * self.jump[i]
            if not transpose:
                self.jump[i] *= s


def _row(index: int, spec: S.LayerSpec, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
         field: _Field, batch: int, itemsize: int, path: str = "") -> LayerRow:
    pshapes, sshapes = _param_shapes(spec, in_shape)
    c = in_shape[-1] if in_shape else 1
    o = out_shape[-1] if out_shape else 1
    in_sp, out_sp = in_shape[:-1], out_shape[:-1]
    filters = slices = weights = biases = macs = inside = 0
    non_trainable = bias_adds = 0
    filter_shape = None
    dependent, flat = False, None
    sentence = ""
    out_elems = batch * math.prod(out_shape)
    if "bias" in pshapes and not isinstance(spec, S.BatchNorm):
        biases = pshapes["bias"][0]
        bias_adds = out_elems
    where = f"layer {index}: "

    if isinstance(spec, (S.Conv, S.DepthwiseConv, S.SeparableConv, S.ConvTranspose)):
        k = spec.kernel_size
        eff = tuple((kk - 1) * d + 1 for kk, d in zip(k, spec.dilation))
        window = _dims(k)
        depth = math.prod(k[:-2])  # KD for a 3D kernel: planes per channel
        if isinstance(spec, S.ConvTranspose):
            # the conv it transposes maps out_sp (C'=features... ) back to in_sp
            total, inside = _taps(out_sp, k, spec.strides, spec.dilation, spec.padding,
                                  in_sp, spec.name)
            per_tap = c * spec.features
            field.window(eff, spec.strides, transpose=True)
        else:
            total, inside = _taps(in_sp, k, spec.strides, spec.dilation, spec.padding,
                                  out_sp, spec.name)
            field.window(eff, spec.strides)
        stride_note = ("" if all(s == 1 for s in spec.strides)
                       else f", at stride {_dims(spec.strides)}")
        dil_note = ("" if all(d == 1 for d in spec.dilation)
                    else f" (dilated by {_dims(spec.dilation)}: it spans {_dims(eff)})")
        if isinstance(spec, S.Conv):
            i = c // spec.groups
            filters, filter_shape, slices = o, f"{window}x{i}", o * i * depth
            weights = math.prod(k) * i * o
            per_tap = i * o
            if all(kk == 1 for kk in k):
                values = "single input value" if i == 1 else f"{i} input values"
                what = (f"each output pixel is a weighted sum of the {values} at the same "
                        f"position")
                if o < i:
                    what += (f" (a learned projection of each pixel's {i}-vector onto "
                             f"{o} dimensions)")
            else:
                over = ("its single input channel" if i == 1 else
                        "both input channels" if i == 2 and spec.groups == 1 else
                        f"{'all ' if spec.groups == 1 else ''}{i} input channels")
                what = (f"each output value is a weighted sum of a {window}{dil_note} "
                        f"window over {over} ({_n(math.prod(k) * i)} inputs)")
            if spec.groups > 1:
                what += (f"; {spec.groups} groups: each filter sees only its group's {i} of "
                         f"the {c} channels")
            sentence = (f"{where}{o} filters of {filter_shape}: {what}{stride_note}; "
                        f"{_weights_sentence(weights, biases)}")
        elif isinstance(spec, S.ConvTranspose):
            filters, filter_shape, slices = o, f"{window}x{c}", o * c * depth
            weights = math.prod(k) * c * o
            sentence = (f"{where}{o} filters of {filter_shape}: each input value adds a "
                        f"{window}{dil_note} patch, weighted by each filter's slice for its "
                        f"channel, to each of the {o} output maps"
                        + ("" if all(s == 1 for s in spec.strides)
                           else f"; upsamples by {_dims(spec.strides)}")
                        + f" (the transpose of a conv); {_weights_sentence(weights, biases)}")
        elif isinstance(spec, S.DepthwiseConv):
            m = spec.multiplier
            filters, filter_shape, slices = c * m, f"{window}x1", c * m * depth
            weights = math.prod(k) * c * m
            per_tap = c * m
            per = "one" if m == 1 else f"{m}"
            sentence = (f"{where}{c * m} filters of {filter_shape}, {per} per input channel: "
                        f"each output map filters a single input map over a {window}"
                        f"{dil_note} window{stride_note}, no channel mixing; "
                        f"{_weights_sentence(weights, biases)}")
        else:
            m = spec.multiplier
            cm = c * m
            filters = cm + o
            filter_shape = f"{window}x1 + {_dims((1,) * len(k))}x{cm}"
            slices = cm * depth + o * cm
            dw, pw = math.prod(k) * cm, cm * o
            weights = dw + pw
            per_tap = cm
            full = math.prod(k) * c * o
            sentence = (f"{where}{cm} depthwise filters of {window}x1 (one per input "
                        f"channel{'' if m == 1 else f', {m} each'}), then {o} pointwise "
                        f"filters of {_dims((1,) * len(k))}x{cm} that mix the channels; "
                        f"{_n(dw)} + {_n(pw)} = {_weights_sentence(weights, biases)}, vs "
                        f"{_n(full)} weights for a full conv of the same shape")
        if isinstance(spec, S.SeparableConv):
            macs = batch * (total * per_tap + math.prod(out_sp) * cm * o)
            inside = batch * (inside * per_tap + math.prod(out_sp) * cm * o)
        else:
            macs, inside = batch * total * per_tap, batch * inside * per_tap
        if macs and (macs - inside) * 4 >= macs:
            sentence += (f". Note: {100 * (macs - inside) / macs:.0f}% of these MACs multiply "
                         f"zero padding (a window of {_dims(eff)} on a "
                         f"{_dims(out_sp if isinstance(spec, S.ConvTranspose) else in_sp)} "
                         f"map)")
    elif isinstance(spec, S.Pool):
        field.window(spec.window, spec.strides)
        verb = "the maximum" if spec.kind == "max" else "the mean"
        sentence = (f"{where}{verb} of each {_dims(spec.window)} window of each channel"
                    f"{'' if spec.strides == spec.window else f', stride {_dims(spec.strides)}'}"
                    f": {_dims(in_shape)} -> {_dims(out_shape)}, no weights")
    elif isinstance(spec, S.GlobalPool):
        field.window(in_sp, (1,) * len(in_sp))
        verb = "maximum" if spec.kind == "max" else "mean"
        sentence = (f"{where}one value per channel, the {verb} over the whole "
                    f"{_dims(in_sp)} map: {_dims(in_shape)} -> {_dims(out_shape)}; its size "
                    f"does not depend on the input size")
    elif isinstance(spec, S.Flatten):
        if in_sp:
            field.flattened = in_shape
            sentence = (f"{where}{_dims(in_shape)} -> {_n(out_shape[0])} values in NHWC order "
                        f"(channels fastest); the length depends on the input size")
    elif isinstance(spec, S.Dense):
        d_in = c
        filters = 0
        weights = d_in * o
        macs = inside = batch * math.prod(in_sp) * d_in * o
        what = (f"{_n(o)} unit{'s' if o > 1 else ''}, "
                f"{'each ' if o > 1 else ''}a weighted sum of "
                + (f"all {_n(d_in)} inputs" if d_in > 1 else "its single input"))
        if in_sp:
            what += f" at each of the {_dims(in_sp)} positions (a 1x1 conv)"
        sentence = f"{where}{what}; {_weights_sentence(weights, biases)}"
        if field.flattened is not None:
            m = field.flattened
            dependent, flat = True, m
            field.window(m[:-1], (1,) * (len(m) - 1))
            field.flattened = None
            sentence += (f". Its {_n(d_in)} inputs are the flattened {_dims(m)} map, so the "
                         f"kernel [{d_in}, {o}] holds the input size fixed: another image "
                         f"size flattens to another length and this kernel no longer fits. "
                         f"It equals {o} filters of {_dims(m)} over the whole map (a VALID "
                         f"conv), which is how a fully convolutional head accepts any size")
    elif isinstance(spec, S.BatchNorm):
        weights = c if spec.use_scale else 0
        biases = c if spec.use_bias else 0
        non_trainable = 2 * c
        sentence = (f"{where}normalizes each of the {c} channels with its running mean and "
                    f"variance ({2 * c} values, not trained)"
                    + (f", then scales and shifts it ({weights + biases} trained values)"
                       if weights + biases else ""))
    return LayerRow(
        index=index, spec=spec, input_shape=in_shape, output_shape=out_shape,
        filters=filters, filter_shape=filter_shape, kernel_slices=slices, weights=weights,
        biases=biases, non_trainable=non_trainable, macs=macs, macs_on_padding=macs - inside,
        bias_adds=bias_adds, receptive_field=tuple(field.rf), jump=tuple(field.jump),
        activation_elements=out_elems, activation_bytes=out_elems * itemsize,
        param_shapes=pshapes, state_shapes=sshapes, input_size_dependent=dependent,
        flattened_map=flat, sentence=sentence, path=path)


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a sequence of ints such as (H, W, C), got "
                        f"{input_shape!r}") from None
    if not shape or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                            and v >= 1 for v in shape):
        raise ValueError(f"input_shape must be positive ints without the batch axis: (C,), "
                         f"(W, C), (H, W, C) or (D, H, W, C); got {input_shape!r}")
    if len(shape) > 4:
        raise ValueError(f"input_shape has {len(shape)} dims; at most 4 (D, H, W, C) "
                         f"without the batch axis, got {input_shape!r}")
    return tuple(int(v) for v in shape)


def analyze(layers: Sequence[S.LayerSpec] | str, input_shape: Sequence[int], *,
            batch: int = 1, dtype: Any = "float32") -> Analysis:
    """Exact per-layer table of a layer stack on inputs of ``input_shape``.

    Args:
      layers: layer specs, or a spec-language string (see
        :func:`convjax.analysis.parse_layers`).
      input_shape: one example's shape without the batch axis: ``(H, W, C)`` for NHWC,
        ``(W, C)``, ``(D, H, W, C)``, or ``(C,)``.
      batch: examples per batch; MACs and activation sizes are for the whole batch.
      dtype: activation dtype, for bytes.

    Raises:
      SpecError: a layer cannot take its input (rank, channels, a window larger than
        its input...); the message starts with ``layer <i> `<text>`:`` and gives the
        input shape the layer received.

    >>> a = analyze("conv2d(32, 3, padding=same)", (64, 64, 3))
    >>> r = a.rows[0]
    >>> r.output_shape, r.filters, r.filter_shape, r.kernel_slices, r.weights, r.params
    ((64, 64, 32), 32, '3x3x3', 96, 864, 896)
    >>> r.macs == 64 * 64 * 32 * 3 * 3 * 3, r.flops == 2 * r.macs
    (True, True)
    """
    if isinstance(layers, str):
        layers = S.parse_layers(layers)
    layers = tuple(layers)
    for i, spec in enumerate(layers, start=1):
        if not isinstance(spec, S.LayerSpec):
            raise TypeError(f"layer {i}: expected a convjax.analysis layer spec, got "
                            f"{type(spec).__name__}")
    input_shape = shape = _check_shape(input_shape)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    itemsize = jnp.dtype(dtype).itemsize
    field = _Field([Fraction(1)] * (len(shape) - 1), [Fraction(1)] * (len(shape) - 1))
    rows = []
    for index, spec in enumerate(layers, start=1):
        text = spec.spec_string()
        if spec.rank is not None and len(shape) - 1 != spec.rank:
            want = L.layout_for_rank(spec.rank).activations[1:]
            have = ("C" if len(shape) == 1 else
                    L.layout_for_rank(len(shape) - 1).activations[1:])
            raise S.SpecError(index, text, (
                f"input {list(shape)} is {have} ({len(shape) - 1} spatial "
                f"ax{'i' if len(shape) == 2 else 'e'}s), but a "
                f"{spec.name} needs {spec.rank} spatial axes: a {want} input"
                + (f" (as the first layer: an input shape of {len(want)} ints, "
                   f"{','.join(want)})" if index == 1 else "")))
        try:
            pshapes, sshapes = _param_shapes(spec, shape)
            params = {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in pshapes.items()}
            state = {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in sshapes.items()}
            x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
            out = jax.eval_shape(lambda p, s, x, spec=spec: layer_forward(spec, p, s, x),
                                 params, state, x)
        except (ValueError, TypeError) as e:
            raise S.SpecError(index, text, f"input {list(shape)}: {e}") from None
        out_shape = tuple(int(v) for v in out.shape[1:])
        rows.append(_row(index, spec, shape, out_shape, field, int(batch), itemsize))
        shape = out_shape
        if not shape:
            raise S.SpecError(index, text, "the output has no axes left")
    return Analysis(input_shape=input_shape, batch=int(batch),
                    dtype=str(jnp.dtype(dtype)), rows=tuple(rows))
