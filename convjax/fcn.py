"""Any input size: a trained classifier's ``flatten -> dense`` head turned into convolutions.

A classifier trained on 28x28 images ends in ``flatten -> dense -> ... -> dense``. Its
first dense kernel ``[h * w * C, units]`` is tied to the ``h x w x C`` feature map that
28x28 images leave, so a 28x140 strip is refused (``lhs shape= [4608,1024] rhs shape=
[2048,1024]``). Read in NHWC flatten order, the same weights are ``units`` filters of
``h x w x C``: a VALID conv over that map, ``[h, w, C, units]`` in HWIO. Every later dense
layer is a 1x1 conv. :func:`to_fully_convolutional` makes that model from the trained one,
without retraining (OverFeat; Long et al.'s FCN):

* at the training size it gives the same logits, as a ``[N, 1, 1, num_classes]`` map;
* on a larger input it gives ``[N, H', W', num_classes]``, one prediction per window
  position at a step of ``jump`` pixels (the product of the trunk's strides), in one pass
  that shares every conv between overlapping windows. For a trunk with VALID padding,
  entry ``(i, j)`` equals the original model on the window at ``(i * jump, j * jump)``
  exactly (up to float round-off). With SAME padding the original saw zeros around each
  window, where the canvas has the neighbouring pixels: the map differs from the windows
  near their borders (:attr:`FullyConvolutional.exact` says which case holds, and
  ``experiments.variable_input`` measures the difference);
* :func:`shift_and_stitch` gives a prediction at every pixel (stride 1) from ``jump x jump``
  shifted passes, interleaved;
* :func:`sliding_window_predict` is the baseline it replaces: the original model on every
  window, batched.

>>> import jax, jax.numpy as jnp
>>> from convjax import models
>>> model = models.get("plain-k3-w8.16-h16-valid")
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
>>> fcn, fcn_variables = to_fully_convolutional(model, variables, (28, 28, 1))
>>> fcn.window, fcn.jump, fcn.exact
((5, 5), (4, 4), True)
>>> fcn_variables["params"]["Dense_0"]["kernel"].shape  # was [5 * 5 * 16, 16]
(5, 5, 16, 16)
>>> fcn.apply(fcn_variables, jnp.zeros((2, 28, 140, 1))).shape  # (140 - 28) / 4 + 1 = 29
(2, 1, 29, 10)
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
from fractions import Fraction
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from convjax import layers as Lyr
from convjax.analysis import core
from convjax.analysis import specs as S
from convjax.analysis.model import analyze_model, replaced_call
from convjax.analysis.sizes import split_head

__all__ = ["FullyConvolutional", "to_fully_convolutional", "shift_and_stitch",
           "sliding_window_predict", "output_positions", "predicted_flops"]


class FullyConvolutional(nn.Module):
    """A model whose ``flatten -> dense`` head runs as convolutions (made by
    :func:`to_fully_convolutional`; its variables are the model's, with the head kernels
    in HWIO).

    The wrapped model runs as written (same trunk, same activations, dropout and batch
    norm between the head layers), except that its flatten keeps the map and each head
    dense layer runs as a conv: the first a VALID ``window`` conv, the later ones 1x1.
    It runs on the part of ``x`` that whole windows cover (``(count - 1) * jump +
    input`` per axis), so that SAME layers pad as they did at the training size.
    Called as every model: ``apply(variables, x)`` is inference; ``train=True`` is passed
    on to the wrapped model (dropout per position; a batch norm in the head then takes its
    statistics over the positions as well as the batch).

    ``x: [N, *spatial, C]``, each spatial size at least the training size; returns
    ``[N, *spatial', num_classes]`` with ``spatial' = (spatial - input) // jump + 1``,
    one entry per window that lies inside ``x`` (never squeezed: ``[N, 1, 1, K]`` at the
    training size).

    Attributes:
      model: the original model.
      input_shape: ``(H, W, C)`` it was trained on.
      window: the last feature map's spatial size at ``input_shape`` (the first head
        conv's window).
      jump: input pixels between neighbouring outputs (product of the trunk's strides).
      flatten: module path of the flatten that is skipped.
      head: module paths of the head's dense layers, in call order.
      exact: True when no trunk layer reads padding (VALID trunk): each output then equals
        the original model on its window.
      padded_layers: paths of the trunk layers that read padding (empty when ``exact``).
    """

    model: nn.Module
    input_shape: tuple[int, ...]
    window: tuple[int, ...]
    jump: tuple[int, ...]
    flatten: str
    head: tuple[str, ...]
    exact: bool
    padded_layers: tuple[str, ...] = ()

    def setup(self):
        nn.share_scope(self, self.model)  # the variables keep the model's paths

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` unless ``shape`` is ``[N, *spatial, C]`` with the training
        channels and every spatial size at least the training size."""
        shape = tuple(shape)
        rank = len(self.input_shape)
        layout = _layout(rank)
        need = " x ".join(map(str, self.input_shape[:-1]))
        if (len(shape) != rank + 1 or shape[-1] != self.input_shape[-1]
                or any(s < i for s, i in zip(shape[1:-1], self.input_shape[:-1]))):
            raise ValueError(
                f"FullyConvolutional: x must be [{layout}] with C = {self.input_shape[-1]} "
                f"and each spatial size at least the training size {need} (the head's "
                f"window covers one training-size input); got shape {list(shape)}")

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self.check_input(jnp.shape(x))
        # Run on the part of x that whole windows cover, (count - 1) * jump + input per
        # axis: every SAME layer then pads as it did at the training size (its padding
        # depends on the size modulo its stride), and a trunk that leaves rows unread
        # gives no position whose window ends past x.
        counts = output_positions(self, jnp.shape(x)[1:-1])
        x = x[(slice(None), *(slice(0, (c - 1) * j + i) for c, j, i in
                              zip(counts, self.jump, self.input_shape[:-1])))]
        first = self.head[0]

        def interceptor(next_fun, args, kwargs, context):
            module = context.module
            if context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            path = "/".join(module.path)
            if isinstance(module, Lyr.Flatten) and path == self.flatten:
                replaced_call(module)
                return args[0]
            if isinstance(module, Lyr.Dense) and path in self.head:
                replaced_call(module)
                common = dict(use_bias=module.use_bias, dtype=module.dtype,
                              param_dtype=module.param_dtype, kernel_init=module.kernel_init,
                              bias_init=module.bias_init, parent=module, name="as_conv")
                conv = (Lyr.Conv(module.features, self.window, padding="VALID", **common)
                        if path == first else Lyr.Pointwise(module.features, **common))
                nn.share_scope(module, conv)  # its kernel and bias are the dense layer's
                return conv(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            if _takes_train(self.model):
                y = self.model(x, train=train)
            elif train:
                raise ValueError(f"FullyConvolutional: train=True, but "
                                 f"{type(self.model).__name__}.__call__ has no train argument")
            else:
                y = self.model(x)
        if tuple(y.shape[1:-1]) != counts:
            raise ValueError(f"FullyConvolutional: the converted model gave a "
                             f"{list(y.shape[1:-1])} map where {list(counts)} windows fit; "
                             f"the model's trunk does not slide as one window per jump")
        return y


def _takes_train(model: nn.Module) -> bool:
    return "train" in inspect.signature(type(model).__call__).parameters


def _layout(rank: int) -> str:
    return {2: "N, W, C", 3: "N, H, W, C", 4: "N, D, H, W, C"}.get(rank, "N, ..., C")


def _reads_padding(row) -> bool:
    if row.macs_on_padding:
        return True
    if isinstance(row.spec, S.Pool):
        pad = row.spec.padding
        return not (pad == "VALID" or (not isinstance(pad, str)
                                       and all(p == (0, 0) for p in map(tuple, pad))))
    return False


def to_fully_convolutional(model: nn.Module, variables: Mapping[str, Any],
                           input_shape: Sequence[int], *, check: bool = True
                           ) -> tuple[FullyConvolutional, dict]:
    """The fully convolutional equivalent of a trained ``flatten -> dense`` classifier.

    Args:
      model: a linen model built from :mod:`convjax.layers` whose head is a
        :class:`~convjax.layers.Flatten` of the last feature map, then
        :class:`~convjax.layers.Dense` layers (dropout, batch norm and activations may sit
        between them).
      variables: everything ``model.init`` returned (``params``, and ``batch_stats`` for
        batch norm), trained.
      input_shape: ``(H, W, C)`` of the training input (``(W, C)``, ``(D, H, W, C)`` for
        1D/3D models).
      check: run both models on one batch of the training size and raise if the logits
        differ by more than float round-off (a guard against a head the conversion cannot
        see, such as a reshape written inline); for an exact (VALID) trunk, also compare
        the map on an input one jump larger per axis with the windows it covers (a guard
        against an inline operation that mixes positions). No check covers every input.

    Returns:
      ``(fcn_model, fcn_variables)``: a :class:`FullyConvolutional` and the same
      variables with the first head kernel ``[h * w * C, O]`` reshaped to HWIO
      ``[h, w, C, O]`` (NHWC flatten order: index ``(i * w + j) * C + c``) and each later
      head kernel ``[I, O]`` to ``[1, 1, I, O]``; no other value changes.

    Raises:
      TypeError: not a linen model, or ``variables`` without ``"params"``.
      ValueError: no flatten -> dense head (e.g. a global pooling head, which is already
        fully convolutional), a layer in the head that is not dense, dropout or batch
        norm, a trunk that upsamples, kernels that do not match ``input_shape``, or (with
        ``check``) logits that differ.
    """
    who = "to_fully_convolutional"
    if isinstance(model, nnx.Module):
        raise TypeError(f"{who}: takes a flax.linen model (model.init/model.apply with a "
                        f"variables dict); got the NNX module {type(model).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: model must be a flax.linen Module, got "
                        f"{type(model).__name__}")
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(f"{who}: variables must be the dict that model.init returned (with "
                        f"'params'), got {type(variables).__name__}"
                        + (f" with keys {sorted(variables)}" if isinstance(variables, Mapping)
                           else ""))
    shape = _shape(input_shape, who)
    try:
        analysis = analyze_model(model, shape)
    except ValueError as e:
        raise ValueError(f"{who}: cannot read the model's layers at input_shape "
                         f"{shape}: {e}") from e
    flat, head = split_head(analysis, who)
    dense = list({r.path: r for r in reversed(head) if isinstance(r.spec, S.Dense)}
                 .values())[::-1]  # a layer called twice (shared weights) once, in order
    if any(not r.path for r in dense):
        raise ValueError(f"{who}: the head's dense layers have no module path")
    jump = tuple(Fraction(j) for j in flat.jump)
    if any(j.denominator != 1 for j in jump):
        raise ValueError(f"{who}: the trunk's jump is {[str(j) for j in jump]} (it "
                         f"upsamples), so the head's outputs do not fall on whole input "
                         f"pixels; only downsampling trunks are converted")
    window, channels = flat.input_shape[:-1], flat.input_shape[-1]
    padded = tuple(r.path or f"layer {r.index}" for r in analysis.rows[:flat.index - 1]
                   if _reads_padding(r))
    params = _copy_tree(variables["params"])
    for k, row in enumerate(dense):
        d_in, d_out = row.param_shapes["kernel"]
        new = (*window, channels, d_out) if k == 0 else (*(1,) * len(window), d_in, d_out)
        node = _node(params, row.path, who)
        kernel = node.get("kernel")
        if kernel is None or tuple(np.shape(kernel)) != (d_in, d_out):
            raise ValueError(
                f"{who}: params[{row.path!r}]['kernel'] has shape "
                f"{None if kernel is None else list(np.shape(kernel))}, but the model at "
                f"input_shape {shape} needs [{d_in}, {d_out}] (were the variables trained "
                f"at another input size, or for another model?)")
        node["kernel"] = jnp.reshape(kernel, new)
    fcn = FullyConvolutional(model=model, input_shape=shape, window=tuple(window),
                             jump=tuple(int(j) for j in jump), flatten=flat.path,
                             head=tuple(r.path for r in dense), exact=not padded,
                             padded_layers=padded)
    fcn_variables = {**variables, "params": params}
    if check:
        _check_same(model, variables, fcn, fcn_variables, shape, who)
    return fcn, fcn_variables


def _shape(input_shape: Any, who: str) -> tuple[int, ...]:
    """The analysis's input_shape check, plus a spatial axis (a window needs one)."""
    try:
        shape = core._check_shape(input_shape)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{who}: {e}") from None
    if len(shape) < 2:
        raise ValueError(f"{who}: input_shape must have a spatial axis, (W, C), (H, W, C) "
                         f"or (D, H, W, C); got {input_shape!r}")
    return shape


def _copy_tree(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _copy_tree(v) for k, v in tree.items()}
    return tree


def _node(params: dict, path: str, who: str) -> dict:
    node = params
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"{who}: variables['params'] has no {path!r} (the model's head "
                             f"layer); the variables belong to another model")
        node = node[part]
    return node


def _check_same(model, variables, fcn, fcn_variables, shape, who) -> None:
    x = jax.random.normal(jax.random.key(0), (2, *shape), jnp.float32)
    y = np.asarray(jax.jit(model.apply)(variables, x), np.float64)  # jitted: eager op by
    z = np.asarray(jax.jit(fcn.apply)(fcn_variables, x), np.float64)  # op is slower
    z = z.reshape(z.shape[0], -1, z.shape[-1])
    if z.shape[1] != 1 or z.shape[-1] != y.shape[-1]:
        raise ValueError(f"{who}: at the training size the converted model gives "
                         f"{z.shape[1]} positions of {z.shape[-1]} outputs, not one of "
                         f"{y.shape[-1]}: the head does not end in the dense layers")
    _within_round_off(y, z[:, 0], lambda d: (
        f"{who}: the converted model does not reproduce the original's outputs at "
        f"input_shape {shape} ({d}): the head computes something the conversion cannot "
        f"see (an inline reshape, a layer that is not a convjax.layers module, or a value "
        f"that mixes positions); pass check=False to skip this check"))
    if not fcn.exact:
        return  # a SAME trunk differs from the windows on a larger input by design
    big = (*(i + j for i, j in zip(shape[:-1], fcn.jump)), shape[-1])  # 2 windows per axis
    x = jax.random.normal(jax.random.key(1), (1, *big), jnp.float32)
    z = np.asarray(jax.jit(fcn.apply)(fcn_variables, x), np.float64)
    y = np.asarray(sliding_window_predict(model, variables, x, fcn.jump, input_shape=shape),
                   np.float64)
    _within_round_off(y, z, lambda d: (
        f"{who}: on a {list(big)} input the converted model's map differs from the windows "
        f"it replaces ({d}), although no layer reads padding: the model computes something "
        f"over the whole image that the conversion cannot see (e.g. an inline mean over "
        f"positions); pass check=False to skip this check"))


def _within_round_off(want: np.ndarray, got: np.ndarray, message) -> None:
    """Raise ``ValueError(message(...))`` unless ``got`` equals ``want`` within float32
    round-off (1e-4 of the logits' scale)."""
    diff = float(np.max(np.abs(want - got)))
    tol = 1e-4 * (1.0 + float(np.max(np.abs(want))))
    if not diff <= tol:
        raise ValueError(message(f"max abs difference {diff:.3g} > {tol:.3g}"))


def output_positions(fcn_model: FullyConvolutional, spatial: Sequence[int],
                     stride: int | Sequence[int] | None = None) -> tuple[int, ...]:
    """Number of windows per spatial axis on an input of ``spatial`` size:
    ``(spatial - input) // stride + 1``, stride defaulting to the jump (what
    ``fcn_model`` gives in one pass); stride 1 is what :func:`shift_and_stitch` gives."""
    stride = fcn_model.jump if stride is None else _tuple(stride, len(fcn_model.jump))
    return tuple((s - i) // t + 1 for s, i, t in zip(spatial, fcn_model.input_shape[:-1],
                                                      stride))


def _tuple(v: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (int(v),) * n if isinstance(v, (int, np.integer)) else tuple(int(u) for u in v)


def shift_and_stitch(fcn_model: FullyConvolutional, fcn_variables: Mapping[str, Any],
                     x: jax.Array) -> jax.Array:
    """A prediction at every window position (stride 1) from ``prod(jump)`` passes.

    One pass gives the windows at multiples of ``jump``; the pass on the input shifted by
    ``(dy, dx)`` gives those at ``(i * jump + dy, j * jump + dx)``. The ``jump x jump``
    shifted copies run as one batch and their maps are interleaved (OverFeat); along an
    axis with fewer than ``jump`` windows, only the shifts that give one run. For a VALID
    trunk each entry equals the original model on its window (stride-1 sliding window).

    Args:
      x: ``[N, H, W, C]``, each spatial size at least the training size.

    Returns:
      ``[N, H - IH + 1, W - IW + 1, K]`` for the training size ``IH x IW``.

    The input is zero-padded at the far end (by less than ``jump``) so that every shift
    gives a map of one size; the padded positions fall only in windows past the input,
    which are cropped away. Memory: the shifted copies run as one batch, ``prod(jump)``
    times the input (16x for a jump of 4).
    """
    if not isinstance(fcn_model, FullyConvolutional):
        raise TypeError(f"shift_and_stitch: fcn_model must be a FullyConvolutional (from "
                        f"to_fully_convolutional), got {type(fcn_model).__name__}")
    fcn_model.check_input(jnp.shape(x))
    return _shift_and_stitch(fcn_model, fcn_variables, x)


def _stitch_plan(fcn_model: FullyConvolutional, spatial: Sequence[int]):
    """Shifts per axis, windows per shift, the crop each shift runs on and the padding.

    Shifts ``0 .. min(jump, out) - 1`` per axis: where fewer than ``jump`` positions are
    wanted (a 28-pixel-tall strip has one row of windows), the other shifts are skipped.
    """
    jump, inp = fcn_model.jump, fcn_model.input_shape[:-1]
    out = [s - i + 1 for s, i in zip(spatial, inp)]
    shifts = [min(j, o) for j, o in zip(jump, out)]
    maps = [-(-o // j) for o, j in zip(out, jump)]  # windows per shift: ceil(out / jump)
    crop = [i + (m - 1) * j for i, m, j in zip(inp, maps, jump)]
    pad = [max(0, t - 1 + c - s) for t, c, s in zip(shifts, crop, spatial)]
    return out, shifts, maps, crop, pad


@functools.partial(jax.jit, static_argnums=0)
def _shift_and_stitch(fcn_model, fcn_variables, x):
    out, shifts, maps, crop, pad = _stitch_plan(fcn_model, x.shape[1:-1])
    xp = jnp.pad(x, [(0, 0), *((0, p) for p in pad), (0, 0)])
    stack = jnp.concatenate([
        jax.lax.slice(xp, (0, *s, 0), (x.shape[0], *(a + c for a, c in zip(s, crop)),
                                       x.shape[-1]))
        for s in itertools.product(*(range(t) for t in shifts))])
    y = fcn_model.apply(fcn_variables, stack)  # [prod(shifts) * N, *maps, K]
    n, d, k = x.shape[0], len(shifts), y.shape[-1]
    y = y.reshape(*shifts, n, *maps, k)
    # axes: shift_0..shift_{d-1}, N, map_0..map_{d-1}, K -> N, (map_0, shift_0), ..., K:
    # position m * jump + s (where shift < jump, maps == 1 and the position is s)
    order = [d] + [a for i in range(d) for a in (d + 1 + i, i)] + [2 * d + 1]
    y = y.transpose(order).reshape(n, *(m * t for m, t in zip(maps, shifts)), k)
    return y[(slice(None), *(slice(0, o) for o in out))]


def predicted_flops(fcn_model: FullyConvolutional, input_shape: Sequence[int], *,
                    stride: int | None = None) -> dict[str, int]:
    """FLOPs per input of ``input_shape`` (``(H, W, C)``) from the exact analysis tables.

    ``stride=None`` (the jump): one pass of ``fcn_model`` vs the original model on each of
    its windows; ``stride=1``: :func:`shift_and_stitch`'s passes vs every window. Returns
    ``{"windows", "sliding_flops", "fcn_flops", "ratio"}`` (``ratio`` = sliding / fcn).
    """
    shape = _shape(input_shape, "predicted_flops")
    fcn_model.check_input((1, *shape))
    window = analyze_model(fcn_model.model, fcn_model.input_shape).total()["flops"]
    if stride is None:
        windows = math.prod(output_positions(fcn_model, shape[:-1]))
        fcn = analyze_model(fcn_model, shape).total()["flops"]
    elif stride == 1:
        out, shifts, _, crop, _ = _stitch_plan(fcn_model, shape[:-1])
        windows = math.prod(out)
        fcn = math.prod(shifts) * analyze_model(fcn_model, (*crop, shape[-1])).total()["flops"]
    else:
        raise ValueError(f"predicted_flops: stride must be None (the jump, "
                         f"{fcn_model.jump}) or 1, got {stride!r}")
    return {"windows": windows, "sliding_flops": windows * window, "fcn_flops": fcn,
            "ratio": windows * window / fcn}


def sliding_window_predict(model: nn.Module, variables: Mapping[str, Any], image: jax.Array,
                           stride: int | Sequence[int], *, input_shape: Sequence[int],
                           batch_size: int = 1024) -> jax.Array:
    """The baseline: the original model on every window of ``input_shape`` at ``stride``.

    Windows are cut on the device inside one jitted program and run through
    ``model.apply(variables, windows)`` (inference) ``batch_size`` at a time
    (``lax.map`` over batches, so memory stays at one batch of windows).

    Args:
      image: ``[N, H, W, C]`` (or ``[H, W, C]``).
      stride: pixels between windows, per spatial axis or one int.
      input_shape: ``(IH, IW, C)``, the model's training input.
      batch_size: windows per ``apply``.

    Returns:
      ``[N, P_h, P_w, K]`` (``[P_h, P_w, K]`` for one image), ``P = (H - IH) // stride + 1``.
    """
    who = "sliding_window_predict"
    shape = _shape(input_shape, who)
    d = len(shape) - 1
    single = jnp.ndim(image) == d + 1
    x = jnp.asarray(image)[None] if single else jnp.asarray(image)
    if (x.ndim != d + 2 or x.shape[-1] != shape[-1]
            or any(s < i for s, i in zip(x.shape[1:-1], shape[:-1]))):
        raise ValueError(f"{who}: image must be [{_layout(d + 1)}] (or without N) with "
                         f"C = {shape[-1]} and each spatial size at least {shape[:-1]}; got "
                         f"shape {list(jnp.shape(image))}")
    stride = _tuple(stride, d)
    if len(stride) != d or any(s < 1 for s in stride):
        raise ValueError(f"{who}: stride must be a positive int or {d} of them, got {stride}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int, got {batch_size!r}")
    y = _sliding(model, shape, stride, batch_size, variables, x)
    return y[0] if single else y


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sliding(model, shape, stride, batch_size, variables, x):
    n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    counts = [(s - i) // t + 1 for s, i, t in zip(spatial, shape[:-1], stride)]
    grids = np.meshgrid(np.arange(n), *(np.arange(p) * t for p, t in zip(counts, stride)),
                        indexing="ij")
    starts = np.stack([g.ravel() for g in grids], axis=1).astype(np.int32)  # [windows, 1+d]
    total = len(starts)
    chunks = -(-total // batch_size)
    batch = -(-total // chunks)  # balanced batches: at most chunks - 1 repeated windows
    starts = np.concatenate([starts, np.repeat(starts[-1:], chunks * batch - total, 0)])

    def run(chunk):
        cut = jax.vmap(lambda s: jax.lax.dynamic_slice(
            x, (s[0], *s[1:], 0), (1, *shape[:-1], c))[0])
        return model.apply(variables, cut(chunk))

    y = jax.lax.map(run, jnp.asarray(starts).reshape(chunks, batch, -1))
    y = y.reshape(chunks * batch, -1)[:total]
    return y.reshape(n, *counts, y.shape[-1])
