"""Why a dense head fixes the input size, and the fully convolutional head that does not.

A dense layer after ``flatten`` has a kernel ``[H' * W' * C', units]``: its first axis is
the length of the flattened last feature map, which grows with the image. Trained at
one size, it cannot take another (loading its weights into the model built for another
size fails with both kernel shapes in the message, e.g. ``lhs shape= [4608,1024] rhs
shape= [2048,1024]``). The same weights, read as ``units`` filters of ``H' x W' x C'``, are a
VALID conv over that map; later dense layers are 1x1 convs. That head gives one
prediction per window position on a larger image, in one pass instead of a sliding
window (OverFeat; Long et al.'s FCN).

>>> fcn = fully_convolutional("conv2d(8, 3); flatten; dense(16, activation=relu); dense(10)",
...                           (6, 6, 1))
>>> [s.spec_string() for s in fcn]
['conv2d(8, 3)', 'conv2d(16, 4, activation=relu)', 'conv2d(10, 1)']
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
from flax import nnx

from convjax.analysis import core
from convjax.analysis import specs as S
from convjax.analysis.model import analyze_model
from convjax.analysis.render import shape_name

__all__ = ["fully_convolutional", "split_head", "HEAD_PASSTHROUGH", "SizeReport",
           "input_size_report"]


def _as_specs(layers) -> tuple[S.LayerSpec, ...]:
    return S.parse_layers(layers) if isinstance(layers, str) else tuple(layers)


def fully_convolutional(layers: Sequence[S.LayerSpec] | str,
                        input_shape: Sequence[int]) -> tuple[S.LayerSpec, ...]:
    """The stack with ``flatten -> dense -> ... -> dense`` turned into convolutions.

    The first dense after a flatten becomes a VALID conv whose window is the flattened
    map's spatial size at ``input_shape`` (the training size); every later dense layer
    becomes a 1x1 conv; dropout and activations stay. Same parameter count, same
    output at ``input_shape`` (as ``[1, 1, units]`` instead of ``[units]``).

    Raises:
      ValueError: no flatten followed by dense (see :func:`split_head`), or a layer
        between the flatten and the dense layers that is not dropout, batch norm or an
        activation.
    """
    specs = _as_specs(layers)
    analysis = core.analyze(specs, input_shape)
    flat, head = split_head(analysis, "fully_convolutional")
    out = [r.spec for r in analysis.rows[:flat.index - 1]]
    for row in head:
        spec = row.spec
        if isinstance(spec, S.Dense):
            window = (row.flattened_map[:-1] if row.input_size_dependent
                      else (1,) * (len(flat.input_shape) - 1))
            spec = S.Conv(spec.features, window, 1, "VALID", 1, 1, spec.use_bias,
                          spec.activation)
        out.append(spec)
    return tuple(out)


#: Layers that may sit between the dense layers of a head being converted: they act on
#: each feature alone (per position once the head is convolutional).
HEAD_PASSTHROUGH = (S.Dropout, S.Activation, S.BatchNorm)


def split_head(analysis: core.Analysis, who: str) -> tuple[core.LayerRow,
                                                             tuple[core.LayerRow, ...]]:
    """The flatten row and the rows after it of a ``flatten -> dense -> ... -> dense``
    head (dropout, activations and batch norm may sit between the dense layers).

    Raises ``ValueError`` (its message starting with ``who``) saying why a stack has no
    such head: a global pooling head (already fully convolutional), a dense layer whose
    input is not a flattened map, more than one flatten, or another layer in the head.
    """
    rows = analysis.rows
    flats = [r for r in rows if isinstance(r.spec, S.Flatten) and len(r.input_shape) > 1]
    if not flats:
        pools = [r for r in rows if isinstance(r.spec, S.GlobalPool)]
        dense = [r for r in rows if isinstance(r.spec, S.Dense)]
        if pools:
            p = pools[0]
            raise ValueError(
                f"{who}: there is no flatten followed by dense layers to convert: layer "
                f"{p.index} `{p.text}`{f' ({p.path})' if p.path else ''} pools the whole map "
                f"to one vector per channel, so the head is already fully convolutional and "
                f"the model takes any input size as it is (one prediction per image; a "
                f"per-position map needs the model without its global pool)")
        if dense:
            d = dense[0]
            raise ValueError(
                f"{who}: there is no flatten followed by dense layers to convert: dense "
                f"layer {d.index}{f' ({d.path})' if d.path else ''} takes "
                f"{list(d.input_shape)}, not a flattened spatial map (the head must flatten "
                f"the last feature map with a Flatten layer)")
        raise ValueError(f"{who}: there is no flatten followed by dense layers to convert "
                         f"(the stack has no head that fixes its input size)")
    if len(flats) > 1:
        raise ValueError(f"{who}: the stack flattens {len(flats)} times (layers "
                         f"{', '.join(str(r.index) for r in flats)}); only one "
                         f"flatten -> dense -> ... -> dense head is converted")
    flat = flats[0]
    head = rows[flat.index:]
    for row in head:
        if not isinstance(row.spec, (S.Dense, *HEAD_PASSTHROUGH)):
            raise ValueError(
                f"{who}: layer {row.index} `{row.text}`{f' ({row.path})' if row.path else ''}"
                f" after the flatten is not dense, dropout, batch norm or an activation; "
                f"only flatten -> dense -> ... -> dense heads are converted")
    if not any(isinstance(r.spec, S.Dense) for r in head):
        raise ValueError(f"{who}: the flatten (layer {flat.index}) is not followed by a "
                         f"dense layer; there is no head to convert")
    return flat, tuple(head)


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """How a stack's weights and outputs change across input sizes.

    Attributes:
      analyses: one :class:`~convjax.analysis.Analysis` per input shape.
      changes: ``(row index, spec text, param name, [shape per input])`` for every
        parameter whose shape differs between the inputs.
      fcn: the fully convolutional stack (:func:`fully_convolutional` at the first input)
        when there are changes, else None.
      fcn_outputs: its output shape at each input, or the error text where it does not fit.
    """

    analyses: tuple[core.Analysis, ...]
    changes: tuple[tuple[int, str, str, tuple[tuple[int, ...], ...]], ...]
    fcn: tuple[S.LayerSpec, ...] | None
    fcn_outputs: tuple[tuple[int, ...] | str, ...]

    def lines(self) -> list[str]:
        """The report in plain words."""
        names = [shape_name(a.input_shape) for a in self.analyses]
        out = ["Input sizes: " + " vs ".join(names)]
        if not self.changes:
            outs = ", ".join(f"[{', '.join(map(str, a.output_shape))}] at {n}"
                             for a, n in zip(self.analyses, names))
            out.append("No weight shape depends on the input size: the same parameters "
                       f"take every input here (outputs {outs}).")
            return out
        for index, text, pname, shapes in self.changes:
            per = ", ".join(f"[{', '.join(map(str, s))}] at {n}"
                            for s, n in zip(shapes, names))
            out.append(f"layer {index} `{text}`: {pname} {per}.")
        first = self.changes[0][3]
        k0, k1 = (", ".join(map(str, k)) for k in first[:2])
        out.append(
            f"Weights trained at {names[0]} do not fit the other size: a model built for "
            f"{names[1]} needs the kernel [{k1}], the trained one is [{k0}] (loading it "
            f"fails with both shapes in the message, e.g. TensorFlow's `lhs shape= [{k0}] "
            f"rhs shape= [{k1}]`), and fed the new image directly, the trained dense layer "
            f"gets {first[1][0]:,} inputs where it expects {first[0][0]:,}. Every conv and "
            f"pooling layer keeps its weights: only the dense head is tied to the size.")
        advice = ("A fully convolutional head (a conv over the last feature map instead of "
                  "flatten + dense) would accept both")
        if self.fcn is None:
            out.append(advice + ".")
            return out
        fcn_text = "; ".join(s.spec_string() for s in self.fcn)
        out.append(
            f"{advice}: the first dense layer becomes a VALID conv whose window is the last "
            "feature map at the training size, with the dense kernel reshaped into it, and "
            f"each later dense layer a 1x1 conv: `{fcn_text}`.")
        for n, o in zip(names, self.fcn_outputs):
            if isinstance(o, str):
                out.append(f"  at {n}: does not fit ({o})")
            else:
                npos = 1
                for v in o[:-1]:
                    npos *= v
                out.append(f"  at {n}: output [{', '.join(map(str, o))}], {npos} "
                           f"prediction{'s' if npos != 1 else ''} in one pass")
        return out


def input_size_report(layers: Sequence[S.LayerSpec] | str | nn.Module | nnx.Module,
                      input_shapes: Sequence[Sequence[int]], *, batch: int = 1,
                      dtype="float32") -> SizeReport:
    """Analyze ``layers`` (specs, a spec string or a linen model) at several input shapes
    and say what changes and why. The fully convolutional stack is proposed for specs
    only (a model's graph need not be a chain).

    >>> r = input_size_report("conv2d(4, 3); flatten; dense(10)", [(8, 8, 1), (10, 12, 1)])
    >>> r.changes
    ((3, 'dense(10)', 'kernel', ((144, 10), (320, 10))),)
    >>> r.fcn_outputs
    ((1, 1, 10), (3, 5, 10))
    """
    if isinstance(layers, (nn.Module, nnx.Module)):
        specs = None
        analyses = tuple(analyze_model(layers, s, batch=batch, dtype=dtype)
                         for s in input_shapes)
    else:
        specs = _as_specs(layers)
        analyses = tuple(core.analyze(specs, s, batch=batch, dtype=dtype)
                         for s in input_shapes)
    changes = []
    for rows in zip(*(a.rows for a in analyses)):
        for pname in rows[0].param_shapes:
            shapes = tuple(tuple(r.param_shapes[pname]) for r in rows)
            if len(set(shapes)) > 1:
                changes.append((rows[0].index, rows[0].text, pname, shapes))
    fcn, outputs = None, ()
    if changes and specs is not None:
        try:
            fcn = fully_convolutional(specs, analyses[0].input_shape)
        except ValueError:
            fcn = None
        if fcn is not None:
            outs = []
            for a in analyses:
                try:
                    outs.append(core.analyze(fcn, a.input_shape).output_shape)
                except S.SpecError as e:
                    outs.append(e.reason)
            outputs = tuple(outs)
    return SizeReport(analyses, tuple(changes), fcn, outputs)
