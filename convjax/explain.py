"""Explain a conv stack exactly: shapes, filters, parameters, MACs/FLOPs, receptive fields.

    python -m convjax.explain --input=64,64,3 \\
        --layers="conv2d(32, 3, padding=same, activation=relu); conv2d(8, 1)"
    python -m convjax.explain --model=tf-tutorial

``--input`` is one example's shape without the batch axis: ``H,W,C`` (NHWC), ``W,C``
(NWC) or ``D,H,W,C`` (NDHWC). Give it twice to see what depends on the input size.
``--layers`` is a semicolon-separated Keras-like stack: conv1d/conv2d/conv3d(filters,
kernel_size, strides=1, padding=valid, dilation_rate=1, groups=1, activation=none,
use_bias=true), depthwise2d, separable2d, conv2d_transpose, maxpool2d(2), avgpool2d(2),
globalavgpool, globalmaxpool, flatten, dense(units, activation=none), dropout(rate),
batchnorm, relu, ... (Keras class names such as Conv2D or MaxPooling2D work too).

A bad spec prints one line naming the layer (index and text) and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Sequence

import flax.linen as nn
from absl import flags

from convjax import analysis as A
from convjax import models
from convjax.analysis import render

FLAGS = flags.FlagValues()  # private: importing this module defines no global flags
flags.DEFINE_multi_string("input", None, "One example's shape without the batch axis: "
                          "H,W,C (or W,C; D,H,W,C; C); repeat it to compare input sizes",
                          flag_values=FLAGS)
flags.DEFINE_string("layers", None, "The stack, Keras-like and semicolon-separated, e.g. "
                    "\"conv2d(32, 3, padding=same, activation=relu); maxpool2d(2); flatten; "
                    "dense(10)\".", flag_values=FLAGS)
flags.DEFINE_string("model", None, "Instead of --layers: a model id of convjax.models "
                    "(flax-example, tf-tutorial, flax-example-valid, plain-k3-w32.64, "
                    "bottleneck-r8-k3-w32.64-res, ...); --input defaults to 28,28,1.",
                    flag_values=FLAGS)
flags.DEFINE_enum("format", "text", ["text", "markdown", "json"],
                  "text: aligned table and one sentence per layer; markdown: the same as "
                  "Markdown; json: only a JSON document on stdout.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 1, "Examples per batch: MACs, FLOPs and activation sizes are "
                     "for the whole batch.", flag_values=FLAGS)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                  "Activation dtype, for bytes.", flag_values=FLAGS)
flags.DEFINE_bool("xla", False, "Also compile one forward pass and one training step with "
                  "XLA and print its FLOP count beside ours, with the difference explained.",
                  flag_values=FLAGS)


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def parse_input(text: str) -> tuple[int, ...]:
    """``"64,64,3"`` -> ``(64, 64, 3)`` (also ``64x64x3``)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--input={text!r}: expected comma-separated positive ints such "
                         f"as 64,64,3 (H,W,C)") from None
    if not 1 <= len(shape) <= 4 or any(v < 1 for v in shape):
        raise UsageError(f"--input={text!r}: expected 1 to 4 positive ints: C, W,C, H,W,C "
                         f"or D,H,W,C (no batch axis)")
    return shape


def _xla_dict(r: A.XlaFlops) -> dict:
    return {**dataclasses.asdict(r), "ratio": r.ratio, "train_ratio": r.train_ratio}


def explain(layers: Any, inputs: Sequence[Sequence[int]], *, fmt: str = "text",
            batch: int = 1, dtype: str = "float32", xla: bool = False) -> str:
    """The command's output as a string.

    ``layers`` is a spec string or a linen model (raises SpecError on a bad stack).
    """
    if batch < 1:
        raise UsageError(f"--batch={batch}: must be >= 1")
    if isinstance(layers, str):
        layers = A.parse_layers(layers)
    try:
        report = A.input_size_report(layers, inputs, batch=batch, dtype=dtype)
    except (ValueError, TypeError) as e:
        if isinstance(layers, nn.Module) and not isinstance(e, A.SpecError):
            given = " ".join("--input=" + ",".join(map(str, i)) for i in inputs)
            raise UsageError(f"the model cannot take {given}: {e}") from None
        raise
    if not xla:
        checks = []
    else:
        checks = [A.xla_flops(layers, a.input_shape, batch=batch, dtype=dtype)
                  for a in report.analyses]
    if fmt == "json":
        docs = []
        for i, a in enumerate(report.analyses):
            d = render.to_dict(a)
            if xla:
                d["total"]["xla"] = _xla_dict(checks[i])
            docs.append(d)
        if len(docs) == 1:
            return json.dumps(docs[0], indent=1)
        return json.dumps({
            "inputs": docs,
            "input_size": {
                "changes": [{"index": i, "spec": t, "param": p, "shapes": [list(s) for s in sh]}
                            for i, t, p, sh in report.changes],
                "fully_convolutional": (None if report.fcn is None else
                                        "; ".join(s.spec_string() for s in report.fcn)),
                "fully_convolutional_outputs": [o if isinstance(o, str) else list(o)
                                                for o in report.fcn_outputs],
                "explanation": report.lines()}}, indent=1)
    table = render.markdown if fmt == "markdown" else render.text
    blocks = []
    for i, a in enumerate(report.analyses):
        block = table(a)
        if xla:
            block += "\n\nXLA cross-check (one forward pass and one training step, "
            block += "compiled, not run):\n" + "\n".join(checks[i].lines())
        blocks.append(block)
    if len(report.analyses) > 1:
        blocks.append("\n".join(report.lines()))
    return "\n\n".join(blocks)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, or 2 for a bad command line)."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "-help", "--helpfull", "--helpshort") for a in argv[1:]):
        print(__doc__.strip() + "\n\nflags:\n" + FLAGS.get_help())
        return 0
    try:
        FLAGS.unparse_flags()
        rest = FLAGS(argv)[1:]
        if rest:
            raise UsageError(f"unexpected argument {rest[0]!r}; every option is a --flag "
                             f"(see --help)")
        if FLAGS.model and FLAGS.layers:
            raise UsageError("give --layers or --model, not both")
        if FLAGS.model:
            try:
                layers = models.get(FLAGS.model)
            except ValueError as e:
                raise UsageError(f"--model={FLAGS.model!r}: {e}") from None
            inputs = [parse_input(t) for t in FLAGS.input or ["28,28,1"]]
        elif not FLAGS.layers:
            raise UsageError("--layers (or --model) is required, e.g. "
                             "--layers=\"conv2d(32, 3, padding=same); flatten; dense(10)\"")
        elif not FLAGS.input:
            raise UsageError("--input is required, e.g. --input=64,64,3 (H,W,C)")
        else:
            layers, inputs = FLAGS.layers, [parse_input(t) for t in FLAGS.input]
        out = explain(layers, inputs, fmt=FLAGS.format, batch=FLAGS.batch,
                      dtype=FLAGS.dtype, xla=FLAGS.xla)
    except (flags.Error, UsageError, A.SpecError) as e:
        print(f"explain: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        print(out)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
