"""Layer specs: plain descriptions of layers, and the Keras-like spec language.

A spec says what a layer *is* (its kind and hyperparameters), never what it holds: no
arrays, no input size. :func:`convjax.analysis.analyze` turns a sequence of specs and an
input shape into exact per-layer tables; Flax layers describe themselves with the same
types, so one code path serves a spec string and a model.

The spec language is the one Keras users already write, semicolon-separated::

    conv2d(32, 3, padding=same, activation=relu); maxpool2d(2); flatten; dense(10)

with Keras' argument names and defaults (``padding=valid``, no activation, bias on).
Keras class names are accepted too (``Conv2D``, ``MaxPooling2D``,
``GlobalAveragePooling2D``, ``BatchNormalization``...).

>>> [s.name for s in parse_layers("conv2d(8, 1); maxpool2d(2); flatten; dense(10)")]
['conv2d', 'maxpool2d', 'flatten', 'dense']
>>> parse_layers("conv2d(32, 3, strides=2, padding=same)")[0].kernel_size
(3, 3)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from typing import Any, Callable

__all__ = [
    "LayerSpec",
    "Conv",
    "ConvTranspose",
    "DepthwiseConv",
    "SeparableConv",
    "Pool",
    "GlobalPool",
    "Flatten",
    "Dense",
    "Dropout",
    "BatchNorm",
    "Activation",
    "ACTIVATIONS",
    "SpecError",
    "parse_layers",
    "spec_names",
]

#: Activation names accepted by the spec language and the ``activation`` arguments.
ACTIVATIONS = ("relu", "relu6", "elu", "gelu", "silu", "swish", "sigmoid", "tanh",
               "softmax", "log_softmax", "softplus", "leaky_relu")


class SpecError(ValueError):
    """A bad layer spec: ``layer <index> `<text>`: <what is wrong>``.

    Attributes:
      index: 1-based position of the layer in the stack (0 for the stack as a whole).
      text: the layer's spec text.
      reason: what is wrong, without the location.
    """

    def __init__(self, index: int, text: str, reason: str):
        self.index, self.text, self.reason = index, text, reason
        where = f"layer {index} `{text}`" if index else f"`{text}`"
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------------------
# Spec types
# --------------------------------------------------------------------------------------


def _ints(value: Any, rank: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be an int or {rank} ints, got {value!r}")
    if isinstance(value, int):
        value = (value,) * rank
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or {rank} ints, got {value!r}") from None
    if len(value) != rank or not all(isinstance(v, int) and not isinstance(v, bool)
                                     for v in value):
        raise ValueError(f"{name} must be an int or {rank} ints (one per spatial dim), "
                         f"got {value!r}")
    if any(v < minimum for v in value):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _padding(value: Any) -> Any:
    if isinstance(value, str):
        if value.upper() not in ("SAME", "VALID", "CIRCULAR"):
            raise ValueError(f"padding must be same, valid, circular, an int or one "
                             f"(low, high) pair per spatial dim, got {value!r}")
        return value.upper()
    return value


def _activation(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.lower() in ("linear", "none")):
        return None
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise ValueError(f"unknown activation {value!r}; expected one of "
                         f"{', '.join(ACTIVATIONS)} or linear")
    return value.lower()


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _size(t: tuple[int, ...]) -> Any:
    return t[0] if len(set(t)) == 1 else t


class LayerSpec:
    """Base of every spec. ``name`` is the spec-language name (``conv2d``, ``dense``...)."""

    #: the spec-language text the spec came from ("" when built in code)
    text: str

    @property
    def name(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    @property
    def rank(self) -> int | None:
        """Number of spatial dims the layer needs (None: any)."""
        return None

    def _args(self) -> list[str]:
        return []

    def spec_string(self) -> str:
        """The layer in the spec language: ``text`` if it came from there, else generated.

        >>> Conv(8, (1, 1), activation="relu").spec_string()
        'conv2d(8, 1, activation=relu)'
        """
        if self.text:
            return self.text
        args = self._args()
        return f"{self.name}({', '.join(args)})" if args else self.name


def _window_args(spec, *, strides_default=1, padding_default="VALID") -> list[str]:
    out = []
    strides = getattr(spec, "strides", None)
    if strides is not None and strides != (strides_default,) * len(strides):
        out.append(f"strides={_size(strides)}")
    if spec.padding != padding_default:
        pad = spec.padding.lower() if isinstance(spec.padding, str) else spec.padding
        out.append(f"padding={pad}")
    dilation = getattr(spec, "dilation", None)
    if dilation is not None and dilation != (1,) * len(dilation):
        out.append(f"dilation_rate={_size(dilation)}")
    return out


def _tail(spec) -> list[str]:
    out = []
    if spec.activation:
        out.append(f"activation={spec.activation}")
    if not spec.use_bias:
        out.append("use_bias=false")
    return out


@dataclasses.dataclass(frozen=True)
class Conv(LayerSpec):
    """A conv with ``features`` filters of ``kernel_size x C/groups`` (also pointwise: 1s).

    Attributes mirror ``flax.linen.Conv`` (``features``, ``kernel_size``, ``strides``,
    ``padding``, ``kernel_dilation`` as ``dilation``, ``feature_group_count`` as
    ``groups``, ``use_bias``), plus an optional fused ``activation``. The rank is
    ``len(kernel_size)``.
    """

    features: int
    kernel_size: tuple[int, ...]
    strides: Any = 1
    padding: Any = "VALID"
    dilation: Any = 1
    groups: int = 1
    use_bias: bool = True
    activation: str | None = None
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        _normalize_window(self)
        _set(self, features=_positive(self.features, "filters"),
             groups=_positive(self.groups, "groups"))

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    @property
    def name(self) -> str:
        return f"conv{self.rank}d"

    def _args(self):
        extra = [] if self.groups == 1 else [f"groups={self.groups}"]
        return ([str(self.features), str(_size(self.kernel_size))] + _window_args(self)
                + extra + _tail(self))


@dataclasses.dataclass(frozen=True)
class ConvTranspose(LayerSpec):
    """A transposed conv (:func:`convjax.conv_transpose`): ``features`` output channels.

    Output size: ``H * s`` for SAME, ``(H - 1) * s + (K - 1) * d + 1 - lo - hi`` otherwise
    (:func:`convjax.conv_transpose`'s default).
    """

    features: int
    kernel_size: tuple[int, ...]
    strides: Any = 1
    padding: Any = "VALID"
    dilation: Any = 1
    use_bias: bool = True
    activation: str | None = None
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        _normalize_window(self)
        _set(self, features=_positive(self.features, "filters"))

    rank = Conv.rank

    @property
    def name(self) -> str:
        return f"conv{self.rank}d_transpose"

    def _args(self):
        return ([str(self.features), str(_size(self.kernel_size))] + _window_args(self)
                + _tail(self))


@dataclasses.dataclass(frozen=True)
class DepthwiseConv(LayerSpec):
    """``multiplier`` filters of ``kernel_size x 1`` per input channel (no channel mixing)."""

    kernel_size: tuple[int, ...]
    strides: Any = 1
    padding: Any = "VALID"
    dilation: Any = 1
    multiplier: int = 1
    use_bias: bool = True
    activation: str | None = None
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        _normalize_window(self)
        _set(self, multiplier=_positive(self.multiplier, "depth_multiplier"))

    rank = Conv.rank

    @property
    def name(self) -> str:
        return f"depthwise{self.rank}d"

    def _args(self):
        extra = [] if self.multiplier == 1 else [f"depth_multiplier={self.multiplier}"]
        return [str(_size(self.kernel_size))] + _window_args(self) + extra + _tail(self)


@dataclasses.dataclass(frozen=True)
class SeparableConv(LayerSpec):
    """Depthwise (no bias) then a 1x1 conv to ``features`` (bias here), as Keras."""

    features: int
    kernel_size: tuple[int, ...]
    strides: Any = 1
    padding: Any = "VALID"
    dilation: Any = 1
    multiplier: int = 1
    use_bias: bool = True
    activation: str | None = None
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        _normalize_window(self)
        _set(self, features=_positive(self.features, "filters"),
             multiplier=_positive(self.multiplier, "depth_multiplier"))

    rank = Conv.rank

    @property
    def name(self) -> str:
        return f"separable{self.rank}d"

    def _args(self):
        extra = [] if self.multiplier == 1 else [f"depth_multiplier={self.multiplier}"]
        return ([str(self.features), str(_size(self.kernel_size))] + _window_args(self)
                + extra + _tail(self))


@dataclasses.dataclass(frozen=True)
class Pool(LayerSpec):
    """Max or average pooling over ``window`` (stride defaults to the window)."""

    kind: str
    window: tuple[int, ...]
    strides: Any = None
    padding: Any = "VALID"
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        if self.kind not in ("max", "avg"):
            raise ValueError(f"pool kind must be 'max' or 'avg', got {self.kind!r}")
        if isinstance(self.window, int) or len(tuple(self.window)) not in (1, 2, 3):
            raise ValueError(f"pool_size must be a sequence of 1, 2 or 3 ints, got "
                             f"{self.window!r}")
        r = len(tuple(self.window))
        window = _ints(self.window, r, "pool_size")
        strides = window if self.strides is None else _ints(self.strides, r, "strides")
        _set(self, window=window, strides=strides, padding=_padding(self.padding))

    @property
    def rank(self) -> int:
        return len(self.window)

    @property
    def name(self) -> str:
        return f"{self.kind}pool{self.rank}d"

    def _args(self):
        out = [str(_size(self.window))]
        if self.strides != self.window:
            out.append(f"strides={_size(self.strides)}")
        if self.padding != "VALID":
            pad = self.padding.lower() if isinstance(self.padding, str) else self.padding
            out.append(f"padding={pad}")
        return out


@dataclasses.dataclass(frozen=True)
class GlobalPool(LayerSpec):
    """Max or mean over every spatial axis: ``[*spatial, C] -> [C]``."""

    kind: str
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        if self.kind not in ("max", "avg"):
            raise ValueError(f"pool kind must be 'max' or 'avg', got {self.kind!r}")

    @property
    def name(self) -> str:
        return f"global{self.kind}pool"


@dataclasses.dataclass(frozen=True)
class Flatten(LayerSpec):
    """``[*spatial, C] -> [prod(spatial) * C]`` in NHWC (row-major) order."""

    text: str = dataclasses.field(default="", compare=False)

    @property
    def name(self) -> str:
        return "flatten"


@dataclasses.dataclass(frozen=True)
class Dense(LayerSpec):
    """A fully connected layer on the last axis (``units`` outputs)."""

    features: int
    use_bias: bool = True
    activation: str | None = None
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        _set(self, features=_positive(self.features, "units"),
             use_bias=_flag(self.use_bias, "use_bias"),
             activation=_activation(self.activation))

    @property
    def name(self) -> str:
        return "dense"

    def _args(self):
        return [str(self.features)] + _tail(self)


@dataclasses.dataclass(frozen=True)
class Dropout(LayerSpec):
    """Dropout with drop probability ``rate`` (the identity at inference)."""

    rate: float
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        if (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))
                or not 0 <= self.rate < 1):
            raise ValueError(f"rate must be a number in [0, 1), got {self.rate!r}")

    @property
    def name(self) -> str:
        return "dropout"

    def _args(self):
        return [repr(float(self.rate))]


@dataclasses.dataclass(frozen=True)
class BatchNorm(LayerSpec):
    """Batch norm over the channel (last) axis: scale and offset per channel (if on),
    running mean and variance per channel (not trained)."""

    use_scale: bool = True
    use_bias: bool = True
    epsilon: float = 1e-3
    momentum: float = 0.99
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        _set(self, use_scale=_flag(self.use_scale, "scale"),
             use_bias=_flag(self.use_bias, "center"))
        for name, ok, rule in (("epsilon", lambda v: v > 0, "> 0"),
                               ("momentum", lambda v: 0 <= v <= 1, "in [0, 1]")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
                raise ValueError(f"{name} must be a number {rule}, got {v!r}")

    @property
    def name(self) -> str:
        return "batchnorm"


@dataclasses.dataclass(frozen=True)
class Activation(LayerSpec):
    """An elementwise activation (one of :data:`ACTIVATIONS`)."""

    fn: str
    text: str = dataclasses.field(default="", compare=False)

    def __post_init__(self):
        fn = _activation(self.fn)
        if fn is None:
            raise ValueError("activation must not be linear/None as a layer of its own")
        _set(self, fn=fn)

    @property
    def name(self) -> str:
        return self.fn


def _set(obj, **values):
    for k, v in values.items():
        object.__setattr__(obj, k, v)


def _normalize_window(spec) -> None:
    """Normalize the fields every conv-like spec has (the rank is ``len(kernel_size)``)."""
    if isinstance(spec.kernel_size, int) or len(tuple(spec.kernel_size)) not in (1, 2, 3):
        raise ValueError(f"kernel_size must be a sequence of 1, 2 or 3 ints, got "
                         f"{spec.kernel_size!r}")
    r = len(tuple(spec.kernel_size))
    _set(spec, kernel_size=_ints(spec.kernel_size, r, "kernel_size"),
         strides=_ints(spec.strides, r, "strides"),
         dilation=_ints(spec.dilation, r, "dilation_rate"), padding=_padding(spec.padding),
         use_bias=_flag(spec.use_bias, "use_bias"), activation=_activation(spec.activation))


# --------------------------------------------------------------------------------------
# The spec language
# --------------------------------------------------------------------------------------

# Builders take Keras' argument names and defaults; ``rank`` comes from the name.


def _conv(rank):
    def conv(filters, kernel_size, strides=1, padding="valid", dilation_rate=1, groups=1,
             activation=None, use_bias=True):
        return Conv(filters, _ints(kernel_size, rank, "kernel_size"), strides, padding,
                    dilation_rate, groups, use_bias, activation)
    return conv


def _conv_transpose(rank):
    def conv_transpose(filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                       activation=None, use_bias=True):
        return ConvTranspose(filters, _ints(kernel_size, rank, "kernel_size"), strides,
                             padding, dilation_rate, use_bias, activation)
    return conv_transpose


def _depthwise(rank):
    def depthwise(kernel_size, strides=1, padding="valid", depth_multiplier=1,
                  dilation_rate=1, activation=None, use_bias=True):
        return DepthwiseConv(_ints(kernel_size, rank, "kernel_size"), strides, padding,
                             dilation_rate, depth_multiplier, use_bias, activation)
    return depthwise


def _separable(rank):
    def separable(filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                  depth_multiplier=1, activation=None, use_bias=True):
        return SeparableConv(filters, _ints(kernel_size, rank, "kernel_size"), strides,
                             padding, dilation_rate, depth_multiplier, use_bias, activation)
    return separable


def _pool(kind, rank):
    def pool(pool_size=2, strides=None, padding="valid"):
        return Pool(kind, _ints(pool_size, rank, "pool_size"),
                    None if strides is None else _ints(strides, rank, "strides"), padding)
    return pool


def _global(kind):
    def global_pool():
        return GlobalPool(kind)
    return global_pool


def flatten():
    return Flatten()


def dense(units, activation=None, use_bias=True):
    return Dense(units, use_bias, activation)


def dropout(rate):
    return Dropout(rate)


def batchnorm(center=True, scale=True, epsilon=1e-3, momentum=0.99):
    return BatchNorm(scale, center, epsilon, momentum)


def activation(fn):
    return Activation(fn)


def _activation_layer(fn):
    def act():
        return Activation(fn)
    return act


_BUILDERS: dict[str, Callable[..., LayerSpec]] = {"flatten": flatten, "dense": dense,
                                                  "dropout": dropout, "batchnorm": batchnorm,
                                                  "activation": activation}
for _r in (1, 2, 3):
    _BUILDERS[f"conv{_r}d"] = _conv(_r)
    _BUILDERS[f"conv{_r}d_transpose"] = _conv_transpose(_r)
    _BUILDERS[f"depthwise{_r}d"] = _depthwise(_r)
    _BUILDERS[f"separable{_r}d"] = _separable(_r)
    _BUILDERS[f"maxpool{_r}d"] = _pool("max", _r)
    _BUILDERS[f"avgpool{_r}d"] = _pool("avg", _r)
for _k in ("avg", "max"):
    _BUILDERS[f"global{_k}pool"] = _global(_k)
for _fn in ACTIVATIONS:
    _BUILDERS[_fn] = _activation_layer(_fn)

# Keras class names and spellings, compared lower-case without underscores.
_ALIASES = {"batchnormalization": "batchnorm", "fc": "dense", "linear": "dense"}
for _r in (1, 2, 3):
    _ALIASES.update({
        f"conv{_r}dtranspose": f"conv{_r}d_transpose",
        f"convolution{_r}d": f"conv{_r}d",
        f"depthwiseconv{_r}d": f"depthwise{_r}d",
        f"separableconv{_r}d": f"separable{_r}d",
        f"maxpooling{_r}d": f"maxpool{_r}d",
        f"averagepooling{_r}d": f"avgpool{_r}d",
        f"avgpooling{_r}d": f"avgpool{_r}d",
    })
    for _k, _long in (("avg", "average"), ("max", "max")):
        for _spelling in (f"global{_k}pool{_r}d", f"global{_long}pooling{_r}d",
                          f"global{_k}pooling{_r}d"):
            _ALIASES[_spelling] = f"global{_k}pool"
_ALIASES.update({"globalaveragepool": "globalavgpool", "globalaveragepooling":
                 "globalavgpool", "globalmaxpooling": "globalmaxpool"})
_CANONICAL = {k.replace("_", ""): k for k in _BUILDERS}


def spec_names() -> list[str]:
    """Every layer name the spec language accepts (canonical spellings)."""
    return sorted(_BUILDERS)


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name):  # bare words: same, relu, true, none
        word = node.id.lower()
        return {"true": True, "false": False, "none": None}.get(word, word)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _value(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_value(e) for e in node.elts)
    raise ValueError(f"cannot read the argument {ast.unparse(node)!r}: use numbers, "
                     f"(a, b) tuples or words such as same, relu, true")


def _lookup(name: str) -> str:
    key = name.lower().replace("_", "")
    key = _ALIASES.get(key, key)
    key = key.replace("_", "")
    if key in _CANONICAL:
        return _CANONICAL[key]
    raise ValueError(f"unknown layer {name!r}; known layers: {', '.join(spec_names())}")


def parse_layer(text: str, index: int = 0) -> LayerSpec:
    """Parse one layer of the spec language (see :func:`parse_layers`)."""
    text = " ".join(text.split())
    try:
        try:
            tree = ast.parse(text, mode="eval").body
        except SyntaxError:
            raise ValueError("cannot parse this; write name(arg, ..., key=value), e.g. "
                             "conv2d(32, 3, padding=same)") from None
        if isinstance(tree, ast.Name):
            name, args, kwargs = tree.id, (), {}
        elif isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name):
            name = tree.func.id
            if any(isinstance(a, ast.Starred) for a in tree.args) or any(
                    k.arg is None for k in tree.keywords):
                raise ValueError("* and ** arguments are not part of the spec language")
            args = tuple(_value(a) for a in tree.args)
            kwargs = {k.arg: _value(k.value) for k in tree.keywords}
        else:
            raise ValueError("a layer is name or name(arg, ..., key=value), e.g. flatten or "
                             "dense(10, activation=relu)")
        canonical = _lookup(name)
        builder = _BUILDERS[canonical]
        sig = inspect.signature(builder)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise ValueError(f"{e}; {canonical} takes ({_describe(sig)})") from None
        spec = builder(*bound.args, **bound.kwargs)
    except ValueError as e:
        raise SpecError(index, text, str(e)) from None
    _set(spec, text=text)
    return spec


def _describe(sig: inspect.Signature) -> str:
    parts = []
    for p in sig.parameters.values():
        if p.default is inspect.Parameter.empty:
            parts.append(p.name)
        else:
            d = p.default
            parts.append(f"{p.name}={'none' if d is None else str(d).lower()}")
    return ", ".join(parts)


def parse_layers(text: str) -> tuple[LayerSpec, ...]:
    """Parse a semicolon-separated stack of layers.

    Raises :class:`SpecError` naming the 1-based index and text of the first bad layer.

    >>> parse_layers("dense(10, activation=relu)")[0]
    Dense(features=10, use_bias=True, activation='relu', text='dense(10, activation=relu)')
    >>> parse_layers("conv2d(32)")
    Traceback (most recent call last):
    ...
    convjax.analysis.specs.SpecError: layer 1 `conv2d(32)`: missing a required argument: \
'kernel_size'; conv2d takes (filters, kernel_size, strides=1, padding=valid, \
dilation_rate=1, groups=1, activation=none, use_bias=true)
    """
    pieces = [p.strip() for p in re.split(r"[;\n]", text)]
    pieces = [p for p in pieces if p]
    if not pieces:
        raise SpecError(0, text, "no layers given; e.g. \"conv2d(32, 3); flatten; dense(10)\"")
    return tuple(parse_layer(p, i) for i, p in enumerate(pieces, start=1))
