"""One renderer for an :class:`~convjax.analysis.Analysis`: text, Markdown and JSON.

``text`` is for a terminal (aligned columns), ``markdown`` for docs and notebooks
(``Analysis._repr_markdown_``), ``to_dict``/``json`` for programs. All three show the same
numbers, exact (integers with thousands separators in the tables).
"""

from __future__ import annotations

import json as _json
from fractions import Fraction
from typing import Any, Sequence

from convjax import layout as L
from convjax.analysis.core import NUMERIC_KEYS, Analysis, LayerRow

__all__ = ["CONVENTIONS", "text", "markdown", "to_dict", "json", "shape_name", "number",
           "sentences", "layout_letters"]

CONVENTIONS = (
    "MACs count every tap of every window, padded positions included (a conv: "
    "prod(output spatial) x O x prod(window) x I); FLOPs = 2 x MACs exactly; pooling, "
    "activations, batch norm, dropout and bias adds count 0. RF = receptive field and "
    "jump = distance between neighbouring outputs, both in input pixels (padding "
    "included, so RF can exceed the input). Activation sizes are the layer's output for "
    "the whole batch. Totals sum over the layers (act.: every layer's output, what "
    "backprop keeps); RF and jump are the last layer's.")

_COLUMNS = (("#", "index"), ("layer", "text"), ("output", "output"), ("filters", "filters"),
            ("filter", "filter_shape"), ("2D slices", "kernel_slices"),
            ("weights", "weights"), ("biases", "biases"), ("params", "params"),
            ("MACs", "macs"), ("FLOPs", "flops"), ("RF", "receptive_field"),
            ("jump", "jump"), ("act. elems", "activation_elements"),
            ("act. bytes", "activation_bytes"))
_TEXT_WIDTH = 60


def number(v: Fraction | int) -> int | float:
    """A Fraction as an int when whole, else a float."""
    v = Fraction(v)
    return int(v) if v.denominator == 1 else float(v)


def _axes(values: Sequence[Fraction]) -> Any:
    """One number when every axis agrees, else a list; None without spatial axes."""
    if not values:
        return None
    nums = [number(v) for v in values]
    return nums[0] if len(set(nums)) == 1 else nums


def shape_name(shape: Sequence[int]) -> str:
    """``(64, 64, 3)`` -> ``"64x64x3 (HWC)"``."""
    return f"{'x'.join(str(v) for v in shape)} ({layout_letters(shape)})"


def _cell(row: LayerRow | None, key: str, total: dict | None = None) -> str:
    if row is None:  # the total row
        if key == "index":
            return ""
        if key == "text":
            return "total"
        if key in ("output", "filter_shape"):
            return ""
        v = total[key]
    elif key == "text":
        v = f"{row.path}: {row.text}" if row.path else row.text
        return v if len(v) <= _TEXT_WIDTH else v[:_TEXT_WIDTH - 3] + "..."
    elif key == "output":
        return "x".join(str(d) for d in row.output_shape)
    else:
        v = getattr(row, key)
    if key in ("receptive_field", "jump"):
        a = _axes(v)
        if a is None:
            return "-"
        return "x".join(_fmt(x) for x in a) if isinstance(a, list) else _fmt(a)
    if key == "filter_shape":
        return v or "-"
    if key in ("filters", "kernel_slices") and not v:
        return "-"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _fmt(v: int | float) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def _header(analysis: Analysis) -> str:
    return (f"input {shape_name(analysis.input_shape)}, batch {analysis.batch}, "
            f"{analysis.dtype}")


def _grid(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    total = analysis.total()
    heads = [h for h, _ in _COLUMNS]
    body = [[_cell(r, k) for _, k in _COLUMNS] for r in analysis.rows]
    body.append([_cell(None, k, total) for _, k in _COLUMNS])
    return heads, body


def sentences(analysis: Analysis) -> list[str]:
    """One plain sentence for each layer that has something to say."""
    return [r.sentence for r in analysis.rows if r.sentence]


def text(analysis: Analysis, *, with_sentences: bool = True) -> str:
    """The table with aligned columns, the conventions, then one sentence per layer."""
    heads, body = _grid(analysis)
    widths = [max(len(row[i]) for row in [heads, *body]) for i in range(len(heads))]
    left = {0, 1, 2, 4}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(heads))
    out = [_header(analysis), line(heads), rule]
    out += [line(r) for r in body[:-1]]
    out += [rule, line(body[-1]), "", CONVENTIONS]
    if with_sentences:
        out += [""] + sentences(analysis)
    return "\n".join(out)


def markdown(analysis: Analysis, *, with_sentences: bool = True) -> str:
    """The same table in GitHub Markdown."""
    heads, body = _grid(analysis)
    body[-1] = [f"**{c}**" if c else c for c in body[-1]]
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    out = [f"*{_header(analysis)}*", "", "| " + " | ".join(heads) + " |",
           "|" + "|".join("---" if i in (1, 2, 4) else "---:" for i in range(len(heads)))
           + "|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    out += ["", CONVENTIONS]
    if with_sentences:
        out += [""] + [f"- {s}" for s in sentences(analysis)]
    return "\n".join(out)


def _row_dict(row: LayerRow) -> dict[str, Any]:
    d = {"index": row.index, "name": row.name, "spec": row.text, "path": row.path,
         "input_shape": list(row.input_shape), "output_shape": list(row.output_shape),
         "filter_shape": row.filter_shape}
    for k in NUMERIC_KEYS:
        v = getattr(row, k)
        d[k] = _axes(v) if k in ("receptive_field", "jump") else v
    d["bias_adds"] = row.bias_adds
    d["param_shapes"] = {k: list(v) for k, v in row.param_shapes.items()}
    d["input_size_dependent"] = row.input_size_dependent
    d["sentence"] = row.sentence
    return d


def to_dict(analysis: Analysis) -> dict[str, Any]:
    """``{"input": [...], "layers": [...], "total": {...}}``, nothing else at the top.

    Every row has ``name`` (the spec type), ``output_shape`` (ints, no batch axis),
    ``filters``, ``filter_shape``, ``kernel_slices``, ``weights``, ``biases``,
    ``params``, ``macs``, ``flops``, ``receptive_field`` (an int, or one per axis when they
    differ), ``activation_bytes`` and more; ``total`` has the same numeric keys, plus
    ``output_shape``, ``batch`` (MACs, FLOPs and activation sizes are for that many
    examples) and ``dtype``. The conventions are :data:`CONVENTIONS`.
    """
    total = analysis.total()
    tot = {k: (_axes(total[k]) if k in ("receptive_field", "jump") else total[k])
           for k in NUMERIC_KEYS}
    tot["bias_adds"] = total["bias_adds"]
    tot["output_shape"] = list(analysis.output_shape)
    tot["batch"], tot["dtype"] = analysis.batch, analysis.dtype
    return {"input": list(analysis.input_shape),
            "layers": [_row_dict(r) for r in analysis.rows], "total": tot}


def json(analysis: Analysis, **kwargs) -> str:
    """:func:`to_dict` as a JSON document."""
    return _json.dumps(to_dict(analysis), **kwargs)


def layout_letters(shape: Sequence[int]) -> str:
    """``"HWC"`` for a rank-3 shape (no batch axis), as in :mod:`convjax.layout`."""
    if len(shape) == 1:
        return "C"
    return L.layout_for_rank(len(shape) - 1).activations[1:]
