"""Our analytic FLOP count beside XLA's own ``cost_analysis()``, with the gap explained.

XLA's count for one compiled forward pass differs from ours in known ways, which
:func:`xla_flops` reports instead of hiding:

* XLA skips the taps of a window that fall on zero padding; we count every tap
  (``macs_on_padding`` of each row is that part); except for a conv with few input
  channels, which :func:`convjax.conv` computes tap by tap as elementwise multiplies and
  adds (:func:`convjax.functional.conv_grad.uses_taps`): XLA counts every one of those,
  padding included, and one add fewer per output element than multiplies;
* XLA adds one FLOP per bias add, activation element, pooling comparison or addition and
  batch-norm operation; we count only multiply-accumulates;
* XLA counts the body of a ``lax.scan`` once, so only one step is ever lowered here;
* with half-precision dtypes XLA also counts the casts to and from float32 accumulation.

So ``predicted = flops - padding - first products + bias_adds`` matches XLA for conv and
dense stacks without padding-free extras; the rest (``other``) is elementwise work.
For one training step (value and gradient of a sum-of-squares loss with respect to every
parameter) our estimate is ``3x`` the forward MACs minus the input gradients nobody needs
(those of the layers up to the first one with weights): each weighted layer costs its
forward MACs again for the kernel gradient and again for the input gradient. XLA's count
of a training step also skips padded taps, and at batch 1 it counts a dense layer's
kernel gradient (an outer product) as 1 FLOP per product, not 2. A tap-by-tap conv's
products are cheap enough that XLA recomputes them in each fusion that reads them, so a
training step with one (a grayscale first layer) can count more than our estimate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
from flax import nnx
import jax.numpy as jnp

from convjax.analysis import core
from convjax.analysis import specs as S
from convjax.analysis.model import analyze_model
from convjax.functional.conv_grad import uses_taps

__all__ = ["XlaFlops", "xla_flops", "compiled_flops", "train_macs"]


@dataclasses.dataclass(frozen=True)
class XlaFlops:
    """Our FLOP counts beside XLA's, for one forward pass and one training step.

    Attributes:
      flops: ours, ``2 * MACs``, every tap counted.
      padding_flops: ``2 * macs_on_padding`` of the layers XLA computes as convs or dots,
        the part XLA skips.
      tap_flops: one add per output element of the convs computed tap by tap
        (:func:`convjax.functional.conv_grad.uses_taps`): their first product needs no
        add; XLA counts their padded taps.
      bias_flops: one per bias add (XLA counts them; we do not).
      predicted: ``flops - padding_flops - tap_flops + bias_flops``: what XLA should
        report for the convs and dense layers.
      xla: XLA's ``cost_analysis()["flops"]`` of the compiled forward pass.
      train_flops: our estimate for one training step (see the module docstring).
      train_xla: XLA's count for the compiled training step.
    """

    flops: int
    padding_flops: int
    tap_flops: int
    bias_flops: int
    predicted: int
    xla: float
    train_flops: int
    train_xla: float

    @property
    def ratio(self) -> float:
        """``xla / flops``: how far XLA's forward count is from ours."""
        return self.xla / self.flops if self.flops else float("nan")

    @property
    def other(self) -> float:
        """``xla - predicted``: XLA's elementwise work (activations, pooling, norms)."""
        return self.xla - self.predicted

    @property
    def train_ratio(self) -> float:
        return self.train_xla / self.train_flops if self.train_flops else float("nan")

    def lines(self) -> list[str]:
        """A plain-text account, one line per figure."""
        return [
            f"ours, forward:          {self.flops:>16,} FLOPs (2 x MACs, every tap counted)",
            f"  - taps on padding:    {self.padding_flops:>16,} (XLA skips them)",
            *([f"  - first products:     {self.tap_flops:>16,} (one add fewer per output of "
               f"the tap-by-tap convs, whose padded taps XLA counts)"]
              if self.tap_flops else []),
            f"  + bias adds:          {self.bias_flops:>16,} (XLA counts them)",
            f"  = predicted for XLA:  {self.predicted:>16,}",
            f"XLA cost_analysis:      {self.xla:>16,.0f} (x{self.ratio:.3f} of ours; "
            f"{self.other:+,.0f} vs predicted: elementwise work such as activations, "
            f"pooling, norms, dtype casts)",
            f"ours, training step:    {self.train_flops:>16,} (3 x forward MACs x 2, minus "
            f"unneeded input gradients)",
            f"XLA, training step:     {self.train_xla:>16,.0f} (x{self.train_ratio:.3f} of "
            f"ours; XLA skips padded taps in the gradients too)",
        ]


def compiled_flops(fn, *args) -> float:
    """XLA's FLOP count of ``jax.jit(fn)`` compiled for ``args`` (arrays or structs)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
        cost = cost[0]
    return float(cost["flops"])


def train_macs(analysis: core.Analysis) -> int:
    """MACs of one training step: forward, kernel gradients, and input gradients for
    every layer after the first one with weights (see the module docstring)."""
    macs = 3 * sum(r.macs for r in analysis.rows)
    for r in analysis.rows:  # no input gradient up to the first layer with weights
        macs -= r.macs
        if r.param_shapes:
            break
    return macs


def xla_flops(layers: Sequence[S.LayerSpec] | str | core.Analysis | nn.Module | nnx.Module,
              input_shape: Sequence[int] | None = None, *, batch: int = 8,
              dtype: Any = jnp.float32) -> XlaFlops:
    """Lower one forward pass and one training step with ``jax.jit`` and compare FLOPs.

    Nothing is run: the functions are compiled for shapes only
    (``jax.ShapeDtypeStruct``), so this is cheap for any size.

    Args:
      layers: specs, a spec string, an :class:`~convjax.analysis.Analysis` of specs (then
        ``input_shape`` and ``batch`` come from it), or a Flax linen or NNX model built
        from :mod:`convjax.layers` / :mod:`convjax.nnx` (lowered in inference mode).
      input_shape: one example's shape, ``(H, W, C)``.
      batch: examples per batch.
      dtype: parameter and activation dtype.

    >>> r = xla_flops("conv2d(32, 3, padding=same)", (64, 64, 3), batch=1)
    >>> r.flops, r.predicted, int(r.xla)
    (7077888, 7062272, 7062272)
    """
    model = isinstance(layers, (nn.Module, nnx.Module))
    if isinstance(layers, core.Analysis):
        analysis = layers
    elif input_shape is None:
        raise TypeError(f"xla_flops: input_shape is required with a "
                        f"{'model' if model else 'layer stack'}")
    elif model:
        analysis = analyze_model(layers, input_shape, batch=batch, dtype=dtype)
    else:
        analysis = core.analyze(layers, input_shape, batch=batch, dtype=dtype)
    x = jax.ShapeDtypeStruct((analysis.batch, *analysis.input_shape), dtype)
    if model:
        fwd, params, rest = _model_forward(layers, x)
    else:
        specs = [r.spec for r in analysis.rows]
        params, rest = core.param_structs(analysis, dtype)

        def fwd(params, state, x):
            return core.forward(specs, params, state, x)

    def loss(params, rest, x):
        return jnp.sum(jnp.square(fwd(params, rest, x).astype(jnp.float32)))

    tot = analysis.total()
    taps = [_taps(r) for r in analysis.rows]
    pad = sum(2 * r.macs_on_padding for r, t in zip(analysis.rows, taps) if not t)
    first = sum(r.activation_elements for r, t in zip(analysis.rows, taps) if t)
    bias = tot["bias_adds"]
    return XlaFlops(flops=tot["flops"], padding_flops=pad, tap_flops=first, bias_flops=bias,
                    predicted=tot["flops"] - pad - first + bias,
                    xla=compiled_flops(fwd, params, rest, x),
                    train_flops=2 * train_macs(analysis),
                    train_xla=compiled_flops(jax.value_and_grad(loss), params, rest, x))


def _taps(row: core.LayerRow) -> bool:
    """Whether :func:`convjax.conv` computes ``row`` tap by tap."""
    kernel = row.param_shapes.get("kernel")
    return bool(isinstance(row.spec, S.Conv) and kernel
                and uses_taps(kernel, row.spec.groups))


def _model_forward(model, x):
    """``(fwd(params, rest, x), params, rest)`` of a linen or NNX model in inference mode,
    with ``params`` the trained parameters (what the training step differentiates)."""
    if isinstance(model, nn.Module):
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
        rest = {k: v for k, v in variables.items() if k != "params"}

        def fwd(params, rest, x):
            return model.apply({"params": params, **rest}, x)

        return fwd, variables["params"], rest
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def fwd(params, rest, x):
        copy = nnx.merge(graphdef, params, rest)
        copy.eval()
        return copy(x)

    return fwd, params, rest
