"""Flax linen layers: thin modules over the functional ops, with ``flax.linen``'s names.

Each module declares its parameters and calls one op of :mod:`convjax.functional`; no op
is implemented twice. Field names and defaults are ``flax.linen``'s (``features``,
``kernel_size``, ``strides``, ``padding``, ``kernel_dilation``, ``feature_group_count``,
``use_bias``, ``dtype``, ``param_dtype``, ``kernel_init``, ``bias_init``), parameters are
named ``kernel`` (HWIO) and ``bias``, so the params of ``convjax.layers.Conv`` and of
``flax.linen.Conv`` with the same settings load into each other (tested), and so do
those of ``Dense`` and ``BatchNorm`` (``batch_stats`` ``mean``/``var``).

Every layer also describes itself to :mod:`convjax.analysis` (``describe(input_shape)``
returns a layer spec), so :func:`convjax.analysis.analyze_model` tabulates a model built
from these layers with the same code that tabulates a spec string. Pooling and flatten
are modules here (``MaxPool``, ``Flatten``...) so that the tables see them; the plain
functions are :func:`convjax.max_pool` and friends.

Where we differ from ``flax.linen`` on purpose: ``MaxPool``/``AvgPool`` default their
stride to the window (Keras, PyTorch; ``nn.max_pool`` defaults to 1) and ``AvgPool``
does not count padded cells (``count_include_pad=False``, TensorFlow's SAME); every op
needs a batch axis; ``ConvTranspose`` is the exact adjoint of a conv
(``nn.ConvTranspose(transpose_kernel=True)``); no ``precision``, ``input_dilation``,
``mask``, ``broadcast_dims`` or ``axis`` fields, and padding has no ``CAUSAL`` or
``REFLECT`` form.

>>> import jax, jax.numpy as jnp
>>> conv = Conv(features=32, kernel_size=(3, 3))
>>> variables = conv.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))
>>> jax.tree.map(jnp.shape, variables["params"])
{'bias': (32,), 'kernel': (3, 3, 1, 32)}
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes

from convjax import functional as F
from convjax import init as I
from convjax.analysis import specs as S

__all__ = ["Conv", "Pointwise", "DepthwiseConv", "SeparableConv", "ConvTranspose", "Dense",
           "BatchNorm", "Dropout", "MaxPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool",
           "Flatten"]

Initializer = Callable[..., jax.Array]
Dtype = Any


def _tuple(value: Any, rank: int) -> tuple[int, ...] | Any:
    """Flax's int-or-sequence fields as a tuple of ``rank`` (left as is if malformed:
    the functional op then raises its own error naming the argument)."""
    if value is None:
        return (1,) * rank
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * rank
    return tuple(value) if isinstance(value, Sequence) else value


def _kernel_size(kernel_size: Any) -> tuple[int, ...]:
    # as flax.linen.Conv: an int is a 1D kernel
    return (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)


def _param(module: nn.Module, name: str, init: Initializer, shape: tuple, dtype: Dtype,
           free: tuple[int, ...] = ()):
    """``module.param`` with the layer's own check of existing params.

    Axes in ``free`` follow the input's channels: a mismatch there is left to the
    functional op, whose error names the layout and gives the NCHW hint. Any other
    mismatch (another window size or feature count than the layer's settings) raises
    here, as ``flax.linen`` does.
    """
    if not module.has_variable("params", name):
        return module.param(name, init, shape, dtype)
    value = module.get_variable("params", name)
    have = tuple(jnp.shape(value))
    free = {a % len(shape) for a in free}
    if len(have) != len(shape) or any(h != w for i, (h, w) in enumerate(zip(have, shape))
                                      if i not in free):
        raise ValueError(
            f"{type(module).__name__} {'/'.join(module.path) or '(top)'}: param {name!r} has "
            f"shape {have}, but this layer's settings give {shape} (axes that follow the "
            f"input channels may differ); the params belong to another layer")
    return value


def _pool_spec(kind: str, module: Any, input_shape: Sequence[int]) -> S.LayerSpec:
    """The spec of a pooling module (linen or NNX: both hold ``window_shape``,
    ``strides`` and ``padding``)."""
    return S.Pool(kind, _tuple(module.window_shape, len(input_shape) - 1), module.strides,
                  _padding(module.padding))


def _window(window: Any) -> Any:
    return tuple(window) if isinstance(window, Sequence) else window


def _padding(padding: Any) -> Any:
    return padding.upper() if isinstance(padding, str) else padding


class Conv(nn.Module):
    """N-d convolution (:func:`convjax.conv`); the rank is ``len(kernel_size)``.

    Input ``[N, *spatial, C]``, kernel ``[*kernel_size, C / feature_group_count,
    features]``, bias ``[features]``, output ``[N, *spatial', features]``.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = I.lecun_normal
    bias_init: Initializer = I.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = _kernel_size(self.kernel_size)
        c = jnp.shape(x)[-1]
        groups = self.feature_group_count
        in_per_group = c // groups if isinstance(groups, int) and groups > 0 and c % groups == 0 \
            else c
        kernel = _param(self, "kernel", self.kernel_init, (*k, in_per_group, self.features),
                        self.param_dtype, free=(-2,))
        bias = (_param(self, "bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.conv(x, kernel, bias, stride=_tuple(self.strides, len(k)),
                      padding=self.padding, dilation=_tuple(self.kernel_dilation, len(k)),
                      groups=groups)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        k = _kernel_size(self.kernel_size)
        return S.Conv(self.features, k, _tuple(self.strides, len(k)), _padding(self.padding),
                      _tuple(self.kernel_dilation, len(k)), self.feature_group_count,
                      self.use_bias)


class Pointwise(nn.Module):
    """1x1 convolution (:func:`convjax.pointwise`): the same ``C -> features`` matrix at
    every pixel. Kernel ``[1, 1, C, features]`` (ones for every spatial axis of ``x``), so
    its params are those of ``flax.linen.Conv(features, (1, 1))``."""

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = I.lecun_normal
    bias_init: Initializer = I.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        rank = max(jnp.ndim(x) - 2, 1)
        kernel = _param(self, "kernel", self.kernel_init,
                        (*(1,) * rank, jnp.shape(x)[-1], self.features), self.param_dtype,
                        free=(-2,))
        bias = (_param(self, "bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.pointwise(x, kernel, bias)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Conv(self.features, (1,) * max(len(input_shape) - 1, 1), 1, "VALID", 1, 1,
                      self.use_bias)


class DepthwiseConv(nn.Module):
    """Depthwise conv (:func:`convjax.depthwise_conv`): ``depth_multiplier`` filters per
    channel. Kernel ``[*kernel_size, 1, C * depth_multiplier]``: the params of
    ``flax.linen.Conv(C * M, kernel_size, feature_group_count=C)``."""

    kernel_size: int | Sequence[int]
    depth_multiplier: int = 1
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = I.lecun_normal
    bias_init: Initializer = I.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = _kernel_size(self.kernel_size)
        cm = jnp.shape(x)[-1] * self.depth_multiplier
        kernel = _param(self, "kernel", self.kernel_init, (*k, 1, cm), self.param_dtype,
                        free=(-1,))
        bias = (_param(self, "bias", self.bias_init, (cm,), self.param_dtype, free=(0,))
                if self.use_bias else None)
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.depthwise_conv(x, kernel, bias, stride=_tuple(self.strides, len(k)),
                                padding=self.padding,
                                dilation=_tuple(self.kernel_dilation, len(k)))

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        k = _kernel_size(self.kernel_size)
        return S.DepthwiseConv(k, _tuple(self.strides, len(k)), _padding(self.padding),
                               _tuple(self.kernel_dilation, len(k)), self.depth_multiplier,
                               self.use_bias)


class SeparableConv(nn.Module):
    """Depthwise-separable conv (:func:`convjax.separable_conv`), bias on the pointwise
    part (Keras). Params ``depthwise_kernel [*kernel_size, 1, C*M]``,
    ``pointwise_kernel [C*M, features]``, ``bias [features]``."""

    features: int
    kernel_size: int | Sequence[int]
    depth_multiplier: int = 1
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = I.lecun_normal
    bias_init: Initializer = I.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = _kernel_size(self.kernel_size)
        cm = jnp.shape(x)[-1] * self.depth_multiplier
        dw = _param(self, "depthwise_kernel", self.kernel_init, (*k, 1, cm), self.param_dtype,
                    free=(-1,))
        pw = _param(self, "pointwise_kernel", self.kernel_init, (cm, self.features),
                    self.param_dtype, free=(0,))
        bias = (_param(self, "bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, dw, pw, bias = dtypes.promote_dtype(x, dw, pw, bias, dtype=self.dtype)
        return F.separable_conv(x, dw, pw, bias, stride=_tuple(self.strides, len(k)),
                                padding=self.padding,
                                dilation=_tuple(self.kernel_dilation, len(k)))

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        k = _kernel_size(self.kernel_size)
        return S.SeparableConv(self.features, k, _tuple(self.strides, len(k)),
                               _padding(self.padding), _tuple(self.kernel_dilation, len(k)),
                               self.depth_multiplier, self.use_bias)


class ConvTranspose(nn.Module):
    """Transposed conv (:func:`convjax.conv_transpose`): the exact adjoint of a conv, as
    TensorFlow's ``conv2d_transpose``; ``padding="SAME"`` gives ``H * strides``.

    Kernel ``[*kernel_size, features, C]``: the *forward* conv's kernel (it maps
    ``features`` channels to ``C``), as Keras' ``Conv2DTranspose`` stores it. This is
    ``flax.linen.ConvTranspose(..., transpose_kernel=True)``'s layout, not that of its
    default (a fractionally strided conv with kernel ``[*kernel_size, C, features]``).
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = I.lecun_normal
    bias_init: Initializer = I.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = _kernel_size(self.kernel_size)
        kernel = _param(self, "kernel", self.kernel_init, (*k, self.features, jnp.shape(x)[-1]),
                        self.param_dtype, free=(-1,))
        bias = (_param(self, "bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.conv_transpose(x, kernel, bias, stride=_tuple(self.strides, len(k)),
                                padding=self.padding,
                                dilation=_tuple(self.kernel_dilation, len(k)))

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        k = _kernel_size(self.kernel_size)
        return S.ConvTranspose(self.features, k, _tuple(self.strides, len(k)),
                               _padding(self.padding), _tuple(self.kernel_dilation, len(k)),
                               self.use_bias)


class Dense(nn.Module):
    """Fully connected on the last axis (:func:`convjax.dense`): kernel ``[D_in, features]``,
    bias ``[features]``, as ``flax.linen.Dense``."""

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Initializer = I.lecun_normal
    bias_init: Initializer = I.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = _param(self, "kernel", self.kernel_init, (jnp.shape(x)[-1], self.features),
                        self.param_dtype, free=(0,))
        bias = (_param(self, "bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.dense(x, kernel, bias)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Dense(self.features, self.use_bias)


class BatchNorm(nn.Module):
    """Batch norm (:func:`convjax.batch_norm`) with ``flax.linen.BatchNorm``'s fields and
    variables: params ``scale``/``bias``, ``batch_stats`` ``mean``/``var``. Normalizes over
    every axis but the last."""

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = I.zeros
    scale_init: Initializer = I.ones
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_ra = nn.merge_param("use_running_average", self.use_running_average,
                                use_running_average)
        c = jnp.shape(x)[-1]
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = (_param(self, "scale", self.scale_init, (c,), self.param_dtype, free=(0,))
                 if self.use_scale else jnp.ones((c,), self.param_dtype))
        bias = (_param(self, "bias", self.bias_init, (c,), self.param_dtype, free=(0,))
                if self.use_bias else jnp.zeros((c,), self.param_dtype))
        x, scale, bias = dtypes.promote_dtype(x, scale, bias, dtype=self.dtype)
        y, new = F.batch_norm({"scale": scale, "bias": bias},
                              {"mean": mean.value, "var": var.value}, x,
                              training=not use_ra, momentum=self.momentum,
                              epsilon=self.epsilon, axis_name=self.axis_name)
        if not use_ra and not self.is_initializing():
            mean.value, var.value = new["mean"], new["var"]
        return y

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.BatchNorm(self.use_scale, self.use_bias, self.epsilon, self.momentum)


class Dropout(nn.Module):
    """Inverted dropout (:func:`convjax.dropout`); draws from the rng stream
    ``rng_collection`` (``"dropout"``) unless deterministic."""

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None,
                 rng: jax.Array | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0.0:
            return F.dropout(None, x, self.rate, deterministic=True)
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        return F.dropout(rng, x, self.rate, deterministic=False)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Dropout(self.rate)


class MaxPool(nn.Module):
    """Max pooling (:func:`convjax.max_pool`); ``strides`` defaults to the window."""

    window_shape: int | Sequence[int]
    strides: int | Sequence[int] | None = None
    padding: Any = "VALID"

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.max_pool(x, _window(self.window_shape), self.strides, self.padding)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return _pool_spec("max", self, input_shape)


class AvgPool(nn.Module):
    """Average pooling (:func:`convjax.avg_pool`); ``strides`` defaults to the window."""

    window_shape: int | Sequence[int]
    strides: int | Sequence[int] | None = None
    padding: Any = "VALID"
    count_include_pad: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.avg_pool(x, _window(self.window_shape), self.strides, self.padding,
                          count_include_pad=self.count_include_pad)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return _pool_spec("avg", self, input_shape)


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes: ``[N, *spatial, C] -> [N, C]``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_avg_pool(x)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.GlobalPool("avg")


class GlobalMaxPool(nn.Module):
    """Max over the spatial axes: ``[N, *spatial, C] -> [N, C]``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.global_max_pool(x)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.GlobalPool("max")


class Flatten(nn.Module):
    """``[N, *spatial, C] -> [N, prod(spatial) * C]`` in NHWC order (:func:`convjax.flatten`)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.flatten(x)

    def describe(self, input_shape: Sequence[int]) -> S.LayerSpec:
        return S.Flatten()
