"""Model families for the experiments: linen modules built from :mod:`convjax.layers`.

Every model is called as ``model.apply(variables, x, train=False)``: inference by
default; ``train=True`` turns on dropout (rng stream ``"dropout"``) and batch statistics
(pass ``mutable=["batch_stats"]`` when the model has batch norm). Every model can be built
with no arguments, has ``num_classes=10`` and a ``padding`` field (``"SAME"``) for its
conv trunk, and takes ``x: [N, H, W, C]``, returning logits ``[N, num_classes]``.

* :class:`FlaxExampleCNN` (id ``flax-example``): the model of Flax's MNIST example.
* :class:`TFTutorialCNN` (id ``tf-tutorial``): TensorFlow's classic MNIST tutorial.
* :class:`ConvNet`: the configurable family the experiments sweep, one factor at a time,
  built from a :class:`CNNConfig` whose :attr:`~CNNConfig.id` names it exactly
  (``plain-k3-w32.64``, ``bottleneck-r8-k3-w32.64-res``, ``stacked-n2-w32.64``).

:func:`get` turns an id or a config into a model; :func:`parse` turns an id into its
config (``parse(config.id) == config`` for every config).

>>> import jax, jax.numpy as jnp
>>> model = get("flax-example")
>>> variables = model.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))
>>> sum(p.size for p in jax.tree.leaves(variables["params"]))
824458
>>> parse("bottleneck-r8-k3-w32.64-res")
CNNConfig(block='bottleneck', kernel_size=3, widths=(32, 64), reduce=8, depth=2, \
residual=True, width_multiplier=1.0, pool='max', batch_norm=False, dropout=0.0, head='dense', \
hidden=128, padding='SAME', num_classes=10)
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from convjax import layers as Lyr

__all__ = ["FlaxExampleCNN", "TFTutorialCNN", "ConvNet", "CNNConfig", "FixedConfig",
           "FIXED", "get", "parse", "count_params"]


def _pool(kind: str):
    return Lyr.MaxPool if kind == "max" else Lyr.AvgPool


class FlaxExampleCNN(nn.Module):
    """Flax's MNIST example: conv 32 3x3, avg-pool 2, conv 64 3x3, avg-pool 2, dense 256,
    dense 10. 824,458 parameters with SAME padding (431,242 with VALID) on 28x28x1."""

    num_classes: int = 10
    padding: Any = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jax.nn.relu(Lyr.Conv(32, (3, 3), padding=self.padding)(x))
        x = Lyr.AvgPool((2, 2))(x)
        x = jax.nn.relu(Lyr.Conv(64, (3, 3), padding=self.padding)(x))
        x = Lyr.AvgPool((2, 2))(x)
        x = Lyr.Flatten()(x)
        x = jax.nn.relu(Lyr.Dense(256)(x))
        return Lyr.Dense(self.num_classes)(x)


class TFTutorialCNN(nn.Module):
    """TensorFlow's MNIST tutorial: conv 5x5 32, max-pool 2, conv 5x5 64, max-pool 2,
    dense 1024, dropout, dense 10. 3,274,634 parameters with SAME padding (1,111,946 with
    VALID) on 28x28x1."""

    num_classes: int = 10
    padding: Any = "SAME"
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = jax.nn.relu(Lyr.Conv(32, (5, 5), padding=self.padding)(x))
        x = Lyr.MaxPool((2, 2))(x)
        x = jax.nn.relu(Lyr.Conv(64, (5, 5), padding=self.padding)(x))
        x = Lyr.MaxPool((2, 2))(x)
        x = Lyr.Flatten()(x)
        x = jax.nn.relu(Lyr.Dense(1024)(x))
        x = Lyr.Dropout(self.dropout)(x, deterministic=not train)
        return Lyr.Dense(self.num_classes)(x)


# --------------------------------------------------------------------------------------
# The configurable family
# --------------------------------------------------------------------------------------

BLOCKS = ("plain", "bottleneck", "stacked")


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """One member of the :class:`ConvNet` family.

    Attributes:
      block: ``"plain"`` (one ``k x k`` conv per stage), ``"bottleneck"`` (1x1 down to
        ``reduce`` channels, ``k x k``, 1x1 up to the stage width) or ``"stacked"``
        (``depth`` 3x3 convs: two match a 5x5's receptive field, three a 7x7's).
      kernel_size: ``k`` of plain and bottleneck blocks (stacked blocks use 3).
      widths: output channels of each stage (before ``width_multiplier``); each stage
        ends with a 2x2 pool (if ``pool`` is not ``"none"``).
      reduce: bottleneck width (channels of the 1x1 reduction), scaled with the widths.
      depth: number of 3x3 convs of a stacked block.
      residual: add the block's input (through a 1x1 conv where the width changes).
      width_multiplier: scales every width (and ``reduce``), rounded, at least 1.
      pool: ``"max"``, ``"avg"`` or ``"none"``.
      batch_norm: batch norm after every conv of the trunk.
      dropout: dropout rate before the classifier.
      head: ``"dense"`` (flatten, dense ``hidden``, dense ``num_classes``: fixed input
        size) or ``"conv"`` (1x1 conv ``hidden``, 1x1 conv ``num_classes``, global
        average pool: any input size).
      hidden: units of the head's hidden layer (0: none).
      padding: padding of the trunk's convs.
      num_classes: outputs.
    """

    block: str = "plain"
    kernel_size: int = 3
    widths: tuple[int, ...] = (32, 64)
    reduce: int = 8
    depth: int = 2
    residual: bool = False
    width_multiplier: float = 1.0
    pool: str = "max"
    batch_norm: bool = False
    dropout: float = 0.0
    head: str = "dense"
    hidden: int = 128
    padding: str = "SAME"
    num_classes: int = 10

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        checks = [
            (self.block in BLOCKS, f"block must be one of {BLOCKS}, got {self.block!r}"),
            (_pos_int(self.kernel_size), f"kernel_size must be a positive int, got "
                                         f"{self.kernel_size!r}"),
            (len(self.widths) >= 1 and all(_pos_int(w) for w in self.widths),
             f"widths must be one or more positive ints, got {self.widths!r}"),
            (_pos_int(self.reduce), f"reduce must be a positive int, got {self.reduce!r}"),
            (_pos_int(self.depth), f"depth must be a positive int, got {self.depth!r}"),
            (isinstance(self.width_multiplier, (int, float))
             and not isinstance(self.width_multiplier, bool) and self.width_multiplier > 0,
             f"width_multiplier must be > 0, got {self.width_multiplier!r}"),
            (self.pool in ("max", "avg", "none"),
             f"pool must be 'max', 'avg' or 'none', got {self.pool!r}"),
            (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
             f"dropout must be in [0, 1), got {self.dropout!r}"),
            (self.head in ("dense", "conv"), f"head must be 'dense' or 'conv', got "
                                             f"{self.head!r}"),
            (isinstance(self.hidden, int) and not isinstance(self.hidden, bool)
             and self.hidden >= 0, f"hidden must be an int >= 0, got {self.hidden!r}"),
            (isinstance(self.residual, bool), f"residual must be a bool, got "
                                              f"{self.residual!r}"),
            (isinstance(self.batch_norm, bool), f"batch_norm must be a bool, got "
                                                f"{self.batch_norm!r}"),
            (self.padding in ("SAME", "VALID"),
             f"padding must be 'SAME' or 'VALID', got {self.padding!r}"),
            (_pos_int(self.num_classes), f"num_classes must be a positive int, got "
                                         f"{self.num_classes!r}"),
        ]
        checks.append((not (self.residual and self.padding == "VALID"),
                       "residual needs padding='SAME' (a VALID block shrinks the map, so its "
                       "input cannot be added to its output)"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"CNNConfig: {message}")
        object.__setattr__(self, "width_multiplier", float(self.width_multiplier))
        object.__setattr__(self, "dropout", float(self.dropout))

    def scaled(self, channels: int) -> int:
        """``channels`` times the width multiplier, rounded, at least 1."""
        return max(1, round(channels * self.width_multiplier))

    @property
    def id(self) -> str:
        """The stable string id: block, kernel (or depth) and widths always, then every
        other field that differs from the defaults, in a fixed order."""
        d = CNNConfig()
        parts = [self.block]
        if self.block == "bottleneck":
            parts.append(f"r{self.reduce}")
        parts.append(f"n{self.depth}" if self.block == "stacked" else f"k{self.kernel_size}")
        parts.append("w" + ".".join(str(w) for w in self.widths))
        if self.block != "bottleneck" and self.reduce != d.reduce:
            parts.append(f"r{self.reduce}")
        if self.block != "stacked" and self.depth != d.depth:
            parts.append(f"n{self.depth}")
        if self.block == "stacked" and self.kernel_size != d.kernel_size:
            parts.append(f"k{self.kernel_size}")
        if self.residual:
            parts.append("res")
        if self.width_multiplier != 1.0:
            parts.append(f"x{_num(self.width_multiplier)}")
        if self.pool != d.pool:
            parts.append(f"{self.pool}pool")
        if self.batch_norm:
            parts.append("bn")
        if self.dropout:
            parts.append(f"do{_num(self.dropout)}")
        if self.head != d.head:
            parts.append(f"{self.head}head")
        if self.hidden != d.hidden:
            parts.append(f"h{self.hidden}")
        if self.padding != d.padding:
            parts.append(self.padding.lower())
        if self.num_classes != d.num_classes:
            parts.append(f"c{self.num_classes}")
        return "-".join(parts)


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _num(v: float) -> str:
    """A float as plain decimals (never an exponent), so that ids parse back."""
    return np.format_float_positional(float(v), trim="-")


class ConvNet(nn.Module):
    """The configurable CNN of :class:`CNNConfig` (see its fields).

    The config is the one place its settings live; ``padding`` and ``num_classes`` read
    through to it, so every model answers ``model.padding`` and ``model.num_classes``.
    """

    config: CNNConfig = CNNConfig()

    @property
    def padding(self) -> str:
        return self.config.padding

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config

        def conv(x, features, k):
            x = Lyr.Conv(features, (k, k), padding=cfg.padding)(x)
            if cfg.batch_norm:
                x = Lyr.BatchNorm(use_running_average=not train)(x)
            return x

        for width in cfg.widths:
            w = cfg.scaled(width)
            inp = x
            if cfg.block == "plain":
                x = conv(x, w, cfg.kernel_size)
            elif cfg.block == "stacked":
                for i in range(cfg.depth):
                    x = conv(x, w, 3)
                    if i < cfg.depth - 1:
                        x = jax.nn.relu(x)
            else:
                r = cfg.scaled(cfg.reduce)
                x = jax.nn.relu(conv(x, r, 1))
                x = jax.nn.relu(conv(x, r, cfg.kernel_size))
                x = conv(x, w, 1)
            if cfg.residual:
                if inp.shape[-1] != w:
                    inp = conv(inp, w, 1)
                x = x + inp
            x = jax.nn.relu(x)
            if cfg.pool != "none":
                x = _pool(cfg.pool)((2, 2))(x)
        if cfg.head == "dense":
            x = Lyr.Flatten()(x)
            if cfg.hidden:
                x = jax.nn.relu(Lyr.Dense(cfg.hidden)(x))
            if cfg.dropout:
                x = Lyr.Dropout(cfg.dropout)(x, deterministic=not train)
            return Lyr.Dense(cfg.num_classes)(x)
        if cfg.hidden:
            x = jax.nn.relu(Lyr.Pointwise(cfg.hidden)(x))
        if cfg.dropout:
            x = Lyr.Dropout(cfg.dropout)(x, deterministic=not train)
        x = Lyr.Pointwise(cfg.num_classes)(x)
        return Lyr.GlobalAvgPool()(x)


# --------------------------------------------------------------------------------------
# Ids
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FixedConfig:
    """One of the fixed models: ``name`` is ``"flax-example"`` or ``"tf-tutorial"``."""

    name: str
    padding: str = "SAME"
    num_classes: int = 10

    def __post_init__(self):
        if self.name not in FIXED:
            raise ValueError(f"FixedConfig: name must be one of {sorted(FIXED)}, got "
                             f"{self.name!r}")
        if self.padding not in ("SAME", "VALID"):
            raise ValueError(f"FixedConfig: padding must be 'SAME' or 'VALID', got "
                             f"{self.padding!r}")
        if not _pos_int(self.num_classes):
            raise ValueError(f"FixedConfig: num_classes must be a positive int, got "
                             f"{self.num_classes!r}")

    @property
    def id(self) -> str:
        parts = [self.name]
        if self.padding != "SAME":
            parts.append("valid")
        if self.num_classes != 10:
            parts.append(f"c{self.num_classes}")
        return "-".join(parts)


FIXED = {"flax-example": FlaxExampleCNN, "tf-tutorial": TFTutorialCNN}


def get(config: "str | CNNConfig | FixedConfig") -> nn.Module:
    """The model of an id (``"flax-example"``, ``"plain-k3-w32.64"``...) or a config."""
    if isinstance(config, str):
        config = parse(config)
    if isinstance(config, FixedConfig):
        return FIXED[config.name](num_classes=config.num_classes, padding=config.padding)
    if isinstance(config, CNNConfig):
        return ConvNet(config)
    raise TypeError(f"get: expected a model id or a config, got {type(config).__name__}")


_TOKENS = [
    (re.compile(r"r(\d+)$"), "reduce", int),
    (re.compile(r"k(\d+)$"), "kernel_size", int),
    (re.compile(r"n(\d+)$"), "depth", int),
    (re.compile(r"w(\d+(?:\.\d+)*)$"), "widths",
     lambda s: tuple(int(v) for v in s.split("."))),
    (re.compile(r"x(\d+(?:\.\d+)?)$"), "width_multiplier", float),
    (re.compile(r"(max|avg|none)pool$"), "pool", str),
    (re.compile(r"do(\d+(?:\.\d+)?)$"), "dropout", float),
    (re.compile(r"(dense|conv)head$"), "head", str),
    (re.compile(r"h(\d+)$"), "hidden", int),
    (re.compile(r"c(\d+)$"), "num_classes", int),
]
_FLAGS = {"res": ("residual", True), "bn": ("batch_norm", True), "valid": ("padding", "VALID"),
          "same": ("padding", "SAME")}


def parse(model_id: str) -> "CNNConfig | FixedConfig":
    """The config of a model id; ``parse(config.id) == config`` for every config.

    Only canonical ids are accepted (each config has exactly one id, so runs named by id
    never collide): ``plain-w32.64`` is refused with its canonical form
    ``plain-k3-w32.64`` in the message. Raises ``ValueError`` naming the part of the id
    it cannot read.
    """
    config = _parse(model_id)
    if config.id != model_id:
        raise ValueError(f"parse: {model_id!r} is not a canonical model id; write "
                         f"{config.id!r} (block, k<kernel> or n<depth>, w<widths>, then only "
                         f"the fields that differ from the defaults, in a fixed order)")
    return config


def _parse(model_id: str) -> "CNNConfig | FixedConfig":
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"parse: a model id is a non-empty string, got {model_id!r}")
    known = ("flax-example, tf-tutorial (and -valid twins), or <block>-... with block one "
             f"of {', '.join(BLOCKS)}, e.g. plain-k3-w32.64 or bottleneck-r8-k3-w32.64-res")
    for name in FIXED:
        if model_id == name or model_id.startswith(name + "-"):
            fields: dict[str, Any] = {}
            for tok in model_id[len(name) + 1:].split("-") if model_id != name else []:
                if tok == "valid":
                    fields["padding"] = "VALID"
                elif re.fullmatch(r"c\d+", tok):
                    fields["num_classes"] = int(tok[1:])
                else:
                    raise ValueError(f"parse: cannot read {tok!r} in model id {model_id!r}; "
                                     f"{name} takes -valid and -c<num_classes>")
            return FixedConfig(name, **fields)
    block, *tokens = model_id.split("-")
    if block not in BLOCKS:
        raise ValueError(f"parse: unknown model {model_id!r}; known: {known}")
    fields = {"block": block}
    for tok in tokens:
        if tok in _FLAGS:
            key, value = _FLAGS[tok]
        else:
            for pattern, key, conv in _TOKENS:
                m = pattern.match(tok)
                if m:
                    value = conv(m.group(1))
                    break
            else:
                raise ValueError(f"parse: cannot read {tok!r} in model id {model_id!r}; "
                                 f"known: {known}")
        if key in fields:
            raise ValueError(f"parse: {key} given twice in model id {model_id!r}")
        fields[key] = value
    return CNNConfig(**fields)


def count_params(variables: Any) -> int:
    """Number of trained parameters in ``variables["params"]``."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))

