"""Flax NNX layers over the same functional ops as :mod:`convjax.layers`.

Signatures follow ``flax.nnx`` (``Conv(in_features, out_features, kernel_size, strides=1,
*, padding="SAME", kernel_dilation=1, feature_group_count=1, use_bias=True, dtype=None,
param_dtype=float32, kernel_init=..., bias_init=..., rngs)``, ``Dense`` as
``nnx.Linear``, ``BatchNorm`` and ``Dropout`` as theirs), parameters are ``nnx.Param``
attributes named ``kernel`` (HWIO) and ``bias``, batch statistics ``nnx.BatchStat``
``mean`` and ``var``, so the values of a ``flax.nnx`` layer with the same settings can be
assigned into ours and back, with the same output (tested). ``model.train()`` and
``model.eval()`` switch ``Dropout.deterministic`` and ``BatchNorm.use_running_average``
as for Flax's own layers. Every layer describes itself to :mod:`convjax.analysis`
(``describe(input_shape)``), so :func:`convjax.analysis.analyze_model` tabulates NNX
models too.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> conv = Conv(3, 32, (3, 3), rngs=nnx.Rngs(0))
>>> conv.kernel[...].shape, conv(jnp.ones((1, 28, 28, 3))).shape
((3, 3, 3, 32), (1, 28, 28, 32))
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from convjax import functional as F
from convjax import init as I
from convjax import layers as _linen
from convjax.analysis import specs as S

__all__ = ["Conv", "Pointwise", "DepthwiseConv", "SeparableConv", "ConvTranspose", "Dense",
           "BatchNorm", "Dropout", "MaxPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool",
           "Flatten"]

Initializer = Callable[..., jax.Array]
Dtype = Any
_tuple, _kernel_size, _padding = _linen._tuple, _linen._kernel_size, _linen._padding


def _positive(op: str, **values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")


def _bias(use_bias: bool, init: Initializer, rngs: nnx.Rngs, n: int, dtype: Dtype):
    return nnx.Param(init(rngs.params(), (n,), dtype)) if use_bias else nnx.data(None)


def _promoted(module: nnx.Module, x: jax.Array, *variables) -> tuple:
    """``x`` and the variables' values (None stays None) promoted to one dtype, as
    ``flax.nnx`` layers do (``module.dtype`` if set)."""
    values = tuple(None if v is None else v[...] for v in variables)
    return dtypes.promote_dtype((x, *values), dtype=module.dtype)


class _Windowed(nnx.Module):
    """Shared set-up of the conv-like layers: window fields and the kernel/bias params."""

    def _window(self, kernel_size, strides, padding, kernel_dilation, use_bias, dtype,
                param_dtype):
        self.kernel_size = _kernel_size(kernel_size)
        rank = len(self.kernel_size)
        self.strides = _tuple(strides, rank)
        self.padding = padding
        self.kernel_dilation = _tuple(kernel_dilation, rank)
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype


class Conv(_Windowed):
    """N-d convolution (:func:`convjax.conv`); kernel ``[*kernel_size, in_features /
    feature_group_count, out_features]``, bias ``[out_features]``."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int],
                 strides: int | Sequence[int] = 1, *, padding: Any = "SAME",
                 kernel_dilation: int | Sequence[int] = 1, feature_group_count: int = 1,
                 use_bias: bool = True, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, kernel_init: Initializer = I.lecun_normal,
                 bias_init: Initializer = I.zeros, rngs: nnx.Rngs):
        _positive("Conv", in_features=in_features, out_features=out_features,
                  feature_group_count=feature_group_count)
        if in_features % feature_group_count or out_features % feature_group_count:
            raise ValueError(f"Conv: in_features={in_features} and out_features="
                             f"{out_features} must both be divisible by feature_group_count="
                             f"{feature_group_count}")
        self._window(kernel_size, strides, padding, kernel_dilation, use_bias, dtype,
                     param_dtype)
        self.in_features, self.out_features = in_features, out_features
        self.feature_group_count = feature_group_count
        shape = (*self.kernel_size, in_features // feature_group_count, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias = _bias(use_bias, bias_init, rngs, out_features, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = _promoted(self, x, self.kernel, self.bias)
        return F.conv(x, kernel, bias, stride=self.strides, padding=self.padding,
                      dilation=self.kernel_dilation, groups=self.feature_group_count)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Conv(self.out_features, self.kernel_size, self.strides,
                      _padding(self.padding), self.kernel_dilation, self.feature_group_count,
                      self.use_bias)


class Pointwise(nnx.Module):
    """1x1 convolution (:func:`convjax.pointwise`); kernel ``[1, ..., 1, in, out]`` with
    ``rank`` ones (the params of ``nnx.Conv(in, out, (1,) * rank)``)."""

    def __init__(self, in_features: int, out_features: int, *, rank: int = 2,
                 use_bias: bool = True, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, kernel_init: Initializer = I.lecun_normal,
                 bias_init: Initializer = I.zeros, rngs: nnx.Rngs):
        _positive("Pointwise", in_features=in_features, out_features=out_features, rank=rank)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.use_bias, self.dtype = use_bias, dtype
        self.kernel = nnx.Param(kernel_init(rngs.params(),
                                            (*(1,) * rank, in_features, out_features),
                                            param_dtype))
        self.bias = _bias(use_bias, bias_init, rngs, out_features, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = _promoted(self, x, self.kernel, self.bias)
        return F.pointwise(x, kernel, bias)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Conv(self.out_features, (1,) * self.rank, 1, "VALID", 1, 1, self.use_bias)


class DepthwiseConv(_Windowed):
    """Depthwise conv (:func:`convjax.depthwise_conv`); kernel ``[*kernel_size, 1,
    in_features * depth_multiplier]`` (the params of ``nnx.Conv(C, C * M, kernel_size,
    feature_group_count=C)``)."""

    def __init__(self, in_features: int, kernel_size: int | Sequence[int],
                 strides: int | Sequence[int] = 1, *, depth_multiplier: int = 1,
                 padding: Any = "SAME", kernel_dilation: int | Sequence[int] = 1,
                 use_bias: bool = True, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, kernel_init: Initializer = I.lecun_normal,
                 bias_init: Initializer = I.zeros, rngs: nnx.Rngs):
        _positive("DepthwiseConv", in_features=in_features, depth_multiplier=depth_multiplier)
        self._window(kernel_size, strides, padding, kernel_dilation, use_bias, dtype,
                     param_dtype)
        self.in_features, self.depth_multiplier = in_features, depth_multiplier
        cm = in_features * depth_multiplier
        self.kernel = nnx.Param(kernel_init(rngs.params(), (*self.kernel_size, 1, cm),
                                            param_dtype))
        self.bias = _bias(use_bias, bias_init, rngs, cm, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = _promoted(self, x, self.kernel, self.bias)
        return F.depthwise_conv(x, kernel, bias, stride=self.strides, padding=self.padding,
                                dilation=self.kernel_dilation)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.DepthwiseConv(self.kernel_size, self.strides, _padding(self.padding),
                               self.kernel_dilation, self.depth_multiplier, self.use_bias)


class SeparableConv(_Windowed):
    """Depthwise-separable conv (:func:`convjax.separable_conv`), bias on the pointwise
    part: ``depthwise_kernel [*kernel_size, 1, C*M]``, ``pointwise_kernel [C*M, out]``."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int],
                 strides: int | Sequence[int] = 1, *, depth_multiplier: int = 1,
                 padding: Any = "SAME", kernel_dilation: int | Sequence[int] = 1,
                 use_bias: bool = True, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, kernel_init: Initializer = I.lecun_normal,
                 bias_init: Initializer = I.zeros, rngs: nnx.Rngs):
        _positive("SeparableConv", in_features=in_features, out_features=out_features,
                  depth_multiplier=depth_multiplier)
        self._window(kernel_size, strides, padding, kernel_dilation, use_bias, dtype,
                     param_dtype)
        self.in_features, self.out_features = in_features, out_features
        self.depth_multiplier = depth_multiplier
        cm = in_features * depth_multiplier
        self.depthwise_kernel = nnx.Param(kernel_init(rngs.params(),
                                                      (*self.kernel_size, 1, cm), param_dtype))
        self.pointwise_kernel = nnx.Param(kernel_init(rngs.params(), (cm, out_features),
                                                      param_dtype))
        self.bias = _bias(use_bias, bias_init, rngs, out_features, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, dw, pw, bias = _promoted(self, x, self.depthwise_kernel, self.pointwise_kernel,
                                    self.bias)
        return F.separable_conv(x, dw, pw, bias, stride=self.strides, padding=self.padding,
                                dilation=self.kernel_dilation)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.SeparableConv(self.out_features, self.kernel_size, self.strides,
                               _padding(self.padding), self.kernel_dilation,
                               self.depth_multiplier, self.use_bias)


class ConvTranspose(_Windowed):
    """Transposed conv (:func:`convjax.conv_transpose`, the exact adjoint of a conv);
    kernel ``[*kernel_size, out_features, in_features]``, the forward conv's kernel, as
    ``nnx.ConvTranspose(..., transpose_kernel=True)`` holds it."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int],
                 strides: int | Sequence[int] = 1, *, padding: Any = "SAME",
                 kernel_dilation: int | Sequence[int] = 1, use_bias: bool = True,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 kernel_init: Initializer = I.lecun_normal, bias_init: Initializer = I.zeros,
                 rngs: nnx.Rngs):
        _positive("ConvTranspose", in_features=in_features, out_features=out_features)
        self._window(kernel_size, strides, padding, kernel_dilation, use_bias, dtype,
                     param_dtype)
        self.in_features, self.out_features = in_features, out_features
        self.kernel = nnx.Param(kernel_init(
            rngs.params(), (*self.kernel_size, out_features, in_features), param_dtype))
        self.bias = _bias(use_bias, bias_init, rngs, out_features, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = _promoted(self, x, self.kernel, self.bias)
        return F.conv_transpose(x, kernel, bias, stride=self.strides, padding=self.padding,
                                dilation=self.kernel_dilation)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.ConvTranspose(self.out_features, self.kernel_size, self.strides,
                               _padding(self.padding), self.kernel_dilation, self.use_bias)


class Dense(nnx.Module):
    """Fully connected on the last axis (:func:`convjax.dense`), as ``nnx.Linear``:
    kernel ``[in_features, out_features]``, bias ``[out_features]``."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
                 kernel_init: Initializer = I.lecun_normal, bias_init: Initializer = I.zeros,
                 rngs: nnx.Rngs):
        _positive("Dense", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self.use_bias, self.dtype = use_bias, dtype
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features),
                                            param_dtype))
        self.bias = _bias(use_bias, bias_init, rngs, out_features, param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = _promoted(self, x, self.kernel, self.bias)
        return F.dense(x, kernel, bias)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Dense(self.out_features, self.use_bias)


class BatchNorm(nnx.Module):
    """Batch norm (:func:`convjax.batch_norm`) as ``nnx.BatchNorm``: ``scale``/``bias``
    params, ``mean``/``var`` batch stats, ``use_running_average`` (set by ``.eval()``)."""

    def __init__(self, num_features: int, *, use_running_average: bool | None = False,
                 momentum: float = 0.99, epsilon: float = 1e-5, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32, use_bias: bool = True,
                 use_scale: bool = True, bias_init: Initializer = I.zeros,
                 scale_init: Initializer = I.ones, axis_name: str | None = None,
                 rngs: nnx.Rngs):
        _positive("BatchNorm", num_features=num_features)
        self.num_features = num_features
        self.use_running_average = use_running_average
        self.momentum, self.epsilon, self.dtype = momentum, epsilon, dtype
        self.param_dtype = param_dtype
        self.use_bias, self.use_scale, self.axis_name = use_bias, use_scale, axis_name
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.scale = (nnx.Param(scale_init(rngs.params(), (num_features,), param_dtype))
                      if use_scale else nnx.data(None))
        self.bias = _bias(use_bias, bias_init, rngs, num_features, param_dtype)

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_ra = self.use_running_average if use_running_average is None \
            else use_running_average
        if use_ra is None:
            raise ValueError("BatchNorm: use_running_average is None; pass it to the "
                             "constructor or the call, or use model.train() / model.eval()")
        c = self.num_features
        scale = jnp.ones((c,), self.param_dtype) if self.scale is None else self.scale[...]
        bias = jnp.zeros((c,), self.param_dtype) if self.bias is None else self.bias[...]
        x, scale, bias = dtypes.promote_dtype((x, scale, bias), dtype=self.dtype)
        params = {"scale": scale, "bias": bias}
        y, new = F.batch_norm(params, {"mean": self.mean[...], "var": self.var[...]}, x,
                              training=not use_ra, momentum=self.momentum,
                              epsilon=self.epsilon, axis_name=self.axis_name)
        if not use_ra:
            self.mean[...], self.var[...] = new["mean"], new["var"]
        return y

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.BatchNorm(self.use_scale, self.use_bias, self.epsilon, self.momentum)


class Dropout(nnx.Module):
    """Inverted dropout (:func:`convjax.dropout`) as ``nnx.Dropout``: the key comes from the
    call's ``rngs``, else from the ``rngs`` given at construction (stream
    ``rng_collection``); ``deterministic`` is set by ``.eval()``/``.train()``."""

    def __init__(self, rate: float, *, deterministic: bool | None = False,
                 rng_collection: str = "dropout", rngs: nnx.Rngs | None = None):
        self.rate, self.deterministic, self.rng_collection = rate, deterministic, rng_collection
        if isinstance(rngs, nnx.Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"Dropout: rngs must be nnx.Rngs, nnx.RngStream or None, got "
                            f"{type(rngs).__name__}")

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None,
                 rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None) -> jax.Array:
        det = self.deterministic if deterministic is None else deterministic
        if det is None:
            raise ValueError("Dropout: deterministic is None; pass it to the constructor or "
                             "the call, or use model.train() / model.eval()")
        if det or self.rate == 0.0:
            return F.dropout(None, x, self.rate, deterministic=True)
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        elif isinstance(rngs, jax.Array):
            key = rngs
        else:
            raise ValueError(f"Dropout: deterministic=False (rate={self.rate}) needs a key: "
                             f"pass rngs=nnx.Rngs(dropout=...) to the constructor or the call")
        return F.dropout(key, x, self.rate, deterministic=False)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Dropout(self.rate)


class MaxPool(nnx.Module):
    """Max pooling (:func:`convjax.max_pool`); ``strides`` defaults to the window."""

    def __init__(self, window_shape: int | Sequence[int],
                 strides: int | Sequence[int] | None = None, padding: Any = "VALID"):
        self.window_shape, self.strides, self.padding = window_shape, strides, padding

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.max_pool(x, _linen._window(self.window_shape), self.strides, self.padding)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return _linen._pool_spec("max", self, input_shape)


class AvgPool(nnx.Module):
    """Average pooling (:func:`convjax.avg_pool`); ``strides`` defaults to the window."""

    def __init__(self, window_shape: int | Sequence[int],
                 strides: int | Sequence[int] | None = None, padding: Any = "VALID",
                 count_include_pad: bool = False):
        self.window_shape, self.strides, self.padding = window_shape, strides, padding
        self.count_include_pad = count_include_pad

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.avg_pool(x, _linen._window(self.window_shape), self.strides, self.padding,
                          count_include_pad=self.count_include_pad)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return _linen._pool_spec("avg", self, input_shape)


class GlobalAvgPool(nnx.Module):
    """Mean over the spatial axes: ``[N, *spatial, C] -> [N, C]``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_avg_pool(x)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.GlobalPool("avg")


class GlobalMaxPool(nnx.Module):
    """Max over the spatial axes: ``[N, *spatial, C] -> [N, C]``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_max_pool(x)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.GlobalPool("max")


class Flatten(nnx.Module):
    """``[N, *spatial, C] -> [N, prod(spatial) * C]`` in NHWC order."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.flatten(x)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Flatten()
