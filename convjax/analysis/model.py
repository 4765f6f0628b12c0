"""The tables of a Flax model: the same rows as a spec list, from the layers it calls.

:func:`analyze_model` runs ``model.init`` under ``jax.eval_shape`` (nothing is computed)
with :func:`flax.linen.intercept_methods`, and records every call of a module that can
describe itself (``describe(input_shape) -> LayerSpec``, as every
:mod:`convjax.layers` module does) with its input and output shapes. Each call then
becomes a row through the very function that builds the rows of a spec list, so a model
and its spec string give the same table.

Receptive fields follow the data: a layer's input is matched to the layer output it is
(by identity), and a value is given one field the first time a layer takes it, which
every later layer taking the same value reuses (a residual shortcut gets its block's
input field). A value made outside the layers (an activation, a residual sum) gets the
widest field among the earlier layer outputs of its shape: right for ``relu(conv(x))``
and for ``main(x) + shortcut(x)`` (a sum sees what its widest branch sees); where two
branches of one shape merge in other ways it is an upper bound.

A module called twice (shared weights) shows its MACs on every call and its parameters
once. Parameters held by modules that cannot describe themselves (``flax.linen.Conv``,
``flax.nnx.Linear``...) cannot be tabulated: :func:`analyze_model` raises rather than
print a table whose totals leave them out.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, Sequence

import flax.linen as nn
import jax
from flax import nnx
import jax.numpy as jnp

from convjax.analysis import core

__all__ = ["analyze_model", "trace_layers", "replaced_call"]

#: One set per active :func:`trace_layers`: ids of modules whose current call was replaced.
_REPLACED: list[set[int]] = []


def replaced_call(module: nn.Module) -> None:
    """Tell an active :func:`trace_layers` that ``module``'s current call does not run as
    written but is replaced, by a method interceptor, with the layers it calls instead
    (:mod:`convjax.fcn` replaces a flatten by nothing and a dense layer by a conv). The
    table then shows the replacements and not the module. A no-op outside a trace."""
    if _REPLACED:
        _REPLACED[-1].add(id(module))


@dataclasses.dataclass(frozen=True)
class _Call:
    path: str
    module: Any
    x: Any
    y: Any


def trace_layers(model: nn.Module, input_shape: Sequence[int], *, dtype: Any = jnp.float32,
                 **call_kwargs) -> list[_Call]:
    """Record the describable layer calls of ``model.init`` on one example (shapes only).

    The first record is the model's own call (``path`` ""): its ``x`` is the input and
    its ``y`` the number of parameters the model holds.
    """
    calls: list[_Call] = []
    params: list[int] = []
    replaced: set[int] = set()

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not calls and context.method_name == "__call__" and args:
            calls.append(_Call("", module, args[0], None))
        y = next_fun(*args, **kwargs)
        if id(module) in replaced:
            replaced.discard(id(module))
            return y
        if (context.method_name == "__call__" and hasattr(module, "describe") and args
                and hasattr(args[0], "shape") and hasattr(y, "shape")):
            calls.append(_Call("/".join(module.path), module, args[0], y))
        return y

    key = jax.random.key(0)

    def init(x):
        with nn.intercept_methods(interceptor):
            variables = model.init({"params": key, "dropout": key}, x, **call_kwargs)
        params.append(sum(math.prod(p.shape)
                          for p in jax.tree.leaves(variables.get("params", {}))))
        return ()

    _REPLACED.append(replaced)
    try:
        jax.eval_shape(init, jax.ShapeDtypeStruct((1, *input_shape), dtype))
    finally:
        _REPLACED.pop()
    calls[0] = dataclasses.replace(calls[0], y=params[0])  # the top call carries the count
    return calls


def _trace_nnx(model, input_shape, dtype, **call_kwargs) -> list[_Call]:
    """As :func:`trace_layers`, for a Flax NNX model: run a copy in eval mode under
    ``jax.eval_shape``, with the ``__call__`` of every describable layer class wrapped
    for the duration."""
    calls: list[_Call] = []
    paths: dict[int, str] = {}
    classes = {type(m) for _, m in nnx.iter_modules(model) if hasattr(m, "describe")}
    originals = {cls: cls.__call__ for cls in classes}

    def wrap(original):
        def call(self, x, *args, **kwargs):
            y = original(self, x, *args, **kwargs)
            if hasattr(x, "shape") and hasattr(y, "shape"):
                calls.append(_Call(paths.get(id(self), ""), self, x, y))
            return y
        return call

    graphdef, state = nnx.split(model)

    def run(state, x):
        copy = nnx.merge(graphdef, state)
        copy.eval()
        paths.update({id(m): "/".join(str(p) for p in path)
                      for path, m in nnx.iter_modules(copy)})
        calls.append(_Call("", copy, x, sum(math.prod(p.shape) for p in
                                            jax.tree.leaves(nnx.state(copy, nnx.Param)))))
        copy(x, **call_kwargs)
        return ()

    try:
        for cls in classes:
            cls.__call__ = wrap(originals[cls])
        jax.eval_shape(run, state, jax.ShapeDtypeStruct((1, *input_shape), dtype))
    finally:
        for cls, original in originals.items():
            cls.__call__ = original
    return calls


def analyze_model(model: Any, input_shape: Sequence[int], *, batch: int = 1,
                  dtype: Any = "float32", **call_kwargs) -> core.Analysis:
    """Per-layer table of a Flax model (linen or NNX) on inputs of ``input_shape``.

    Rows are the calls of :mod:`convjax.layers` / :mod:`convjax.nnx` layers (anything
    with a ``describe`` method) in the order the model makes them; extra keyword
    arguments go to the model's ``__call__`` (e.g. ``train=False``). An NNX model is
    traced on a copy in eval mode; the model itself is not changed.

    >>> from convjax import layers
    >>> class Tiny(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         x = jax.nn.relu(layers.Conv(8, (3, 3))(x))
    ...         return layers.Dense(10)(layers.Flatten()(x))
    >>> a = analyze_model(Tiny(), (28, 28, 1))
    >>> [(r.path, r.name, r.output_shape, r.params) for r in a.rows]
    [('Conv_0', 'conv2d', (28, 28, 8), 80), ('Flatten_0', 'flatten', (6272,), 0), \
('Dense_0', 'dense', (10,), 62730)]
    """
    shape = core._check_shape(input_shape)
    itemsize = jnp.dtype(dtype).itemsize
    if isinstance(model, nn.Module):
        top, *calls = trace_layers(model, shape, **call_kwargs)
    elif isinstance(model, nnx.Module):
        top, *calls = _trace_nnx(model, shape, jnp.float32, **call_kwargs)
    else:
        raise TypeError(f"analyze_model: expected a flax.linen or flax.nnx Module, got "
                        f"{type(model).__name__}")
    start = core._Field([Fraction(1)] * (len(shape) - 1), [Fraction(1)] * (len(shape) - 1))
    fields: dict[int, tuple[core._Field, tuple[int, ...]]] = {id(top.x): (start, shape)}
    order: list[tuple[core._Field, tuple[int, ...]]] = []
    first_call: dict[Any, int] = {}
    rows = []
    for index, call in enumerate(calls, start=1):
        in_shape = tuple(int(v) for v in call.x.shape[1:])
        out_shape = tuple(int(v) for v in call.y.shape[1:])
        field = _field_for(call.x, in_shape, fields, order)
        fields.setdefault(id(call.x), (_copy(field), in_shape))
        spec = call.module.describe(in_shape)
        row = core._row(index, spec, in_shape, out_shape, field, int(batch), itemsize,
                        path=call.path)
        key = call.path if isinstance(model, nn.Module) else id(call.module)
        if key in first_call and row.params + row.non_trainable:
            row = dataclasses.replace(
                row, weights=0, biases=0, non_trainable=0,
                sentence=f"{row.sentence} (weights shared with layer {first_call[key]}, "
                         f"counted there)")
        first_call.setdefault(key, index)
        rows.append(row)
        fields[id(call.y)] = (field, out_shape)
        order.append((field, out_shape))
    counted = sum(r.params for r in rows)
    if counted != top.y:
        raise ValueError(
            f"analyze_model: the model holds {top.y:,} parameters but its describable layers "
            f"hold {counted:,}: {top.y - counted:,} are in modules the analysis cannot see "
            f"(e.g. flax.linen.Conv or flax.nnx.Linear, which have no describe()); build "
            f"the model from convjax.layers / convjax.nnx to tabulate it")
    return core.Analysis(input_shape=shape, batch=int(batch), dtype=str(jnp.dtype(dtype)),
                         rows=tuple(rows))


def _copy(field: core._Field) -> core._Field:
    return dataclasses.replace(field, rf=list(field.rf), jump=list(field.jump))


def _field_for(x, in_shape, fields, order) -> core._Field:
    """The receptive field of a layer's input ``x`` (see the module docstring)."""
    spatial = max(len(in_shape) - 1, 0)
    if id(x) in fields:
        return _copy(fields[id(x)][0])
    same = [f for f, s in order if s == in_shape]
    if same:
        return _copy(max(reversed(same), key=lambda f: tuple(f.rf)))
    if order and len(order[-1][0].rf) == spatial:
        return _copy(order[-1][0])
    # the model's input (or a reshaped value with no recorded layer of its rank)
    return core._Field([Fraction(1)] * spatial, [Fraction(1)] * spatial)
