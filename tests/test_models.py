"""convjax.models: hand-counted parameters, ids, shapes, analysis, jit and grad."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import analysis as A
from convjax import models

KEY = jax.random.key(0)


def _params(model, shape=(28, 28, 1)):
    v = jax.eval_shape(lambda x: model.init(KEY, x), jax.ShapeDtypeStruct((1, *shape),
                                                                          jnp.float32))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(v["params"]))


def test_fixed_models_by_hand():
    flax_same = (3 * 3 * 1 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (7 * 7 * 64 * 256 + 256) \
        + (256 * 10 + 10)
    flax_valid = (3 * 3 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (5 * 5 * 64 * 256 + 256) \
        + 2570
    tf_same = (5 * 5 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (7 * 7 * 64 * 1024 + 1024) \
        + (1024 * 10 + 10)
    tf_valid = 832 + 51264 + (4 * 4 * 64 * 1024 + 1024) + 10250
    assert (flax_same, flax_valid, tf_same, tf_valid) == (824_458, 431_242, 3_274_634,
                                                          1_111_946)
    assert _params(models.FlaxExampleCNN()) == flax_same
    assert _params(models.get("flax-example-valid")) == flax_valid
    assert _params(models.TFTutorialCNN()) == tf_same
    assert _params(models.TFTutorialCNN(padding="VALID")) == tf_valid
    assert models.parse("tf-tutorial-valid") == models.FixedConfig("tf-tutorial", "VALID")
    assert models.get("tf-tutorial-c100").num_classes == 100
    for model in (models.FlaxExampleCNN(), models.TFTutorialCNN(), models.ConvNet()):
        assert (model.padding, model.num_classes) == ("SAME", 10)
    assert models.get("plain-k3-w8-valid-c3").padding == "VALID"


CONFIGS = [
    models.CNNConfig(),
    models.CNNConfig(kernel_size=5),
    models.CNNConfig(kernel_size=7, widths=(16, 32, 64)),
    models.CNNConfig(block="bottleneck"),
    models.CNNConfig(block="bottleneck", reduce=16, residual=True),
    models.CNNConfig(block="bottleneck", reduce=32, residual=True, batch_norm=True),
    models.CNNConfig(block="stacked", depth=2),
    models.CNNConfig(block="stacked", depth=3, residual=True),
    models.CNNConfig(width_multiplier=0.5),
    models.CNNConfig(widths=(4,), width_multiplier=2.5),
    models.CNNConfig(pool="avg", dropout=0.25),
    models.CNNConfig(head="conv"),
    models.CNNConfig(head="conv", hidden=0, pool="none", widths=(8, 8)),
    models.CNNConfig(padding="VALID", hidden=64, num_classes=3),
    models.CNNConfig(block="plain", reduce=4),  # a field the block does not use still counts
    models.CNNConfig(block="stacked", kernel_size=5),
]


def test_ids_round_trip_and_are_distinct():
    ids = [c.id for c in CONFIGS]
    assert ids[:4] == ["plain-k3-w32.64", "plain-k5-w32.64", "plain-k7-w16.32.64",
                       "bottleneck-r8-k3-w32.64"]
    assert ids[4] == "bottleneck-r16-k3-w32.64-res"
    assert len(set(ids)) == len(ids)
    for c in CONFIGS:
        assert models.parse(c.id) == c, c.id
    tiny = models.CNNConfig(width_multiplier=1e-5, dropout=1e-5)
    assert tiny.id == "plain-k3-w32.64-x0.00001-do0.00001" and models.parse(tiny.id) == tiny
    for bad in (dict(hidden=True), dict(batch_norm="yes"), dict(residual=1)):
        with pytest.raises(ValueError, match="CNNConfig: "):
            models.CNNConfig(**bad)
    for name, padding in itertools.product(["flax-example", "tf-tutorial"], ["SAME", "VALID"]):
        fixed = models.FixedConfig(name, padding)
        assert models.parse(fixed.id) == fixed


def test_every_field_change_changes_the_id():
    base = models.CNNConfig()
    changes = dict(block="stacked", kernel_size=5, widths=(32,), reduce=4, depth=3,
                   residual=True, width_multiplier=2.0, pool="avg", batch_norm=True,
                   dropout=0.1, head="conv", hidden=0, padding="VALID", num_classes=2)
    assert set(changes) == {f.name for f in dataclasses.fields(models.CNNConfig)}
    seen = {base.id}
    for field, value in changes.items():
        c = dataclasses.replace(base, **{field: value})
        assert c.id not in seen, field
        seen.add(c.id)
        assert models.parse(c.id) == c


@pytest.mark.parametrize("bad,message", [
    ("plain-q3", "cannot read 'q3' in model id 'plain-q3'"),
    ("resnet50", "unknown model 'resnet50'; known: flax-example"),
    ("plain-k3-k5", "kernel_size given twice"),
    ("flax-example-k3", "flax-example takes -valid and -c<num_classes>"),
    ("plain-k0", "kernel_size must be a positive int"),
    ("plain-w32.64", "'plain-w32.64' is not a canonical model id; write 'plain-k3-w32.64'"),
    ("flax-example-valid-valid", "write 'flax-example-valid'"),
    ("bottleneck-r8-k3-w32-res-valid", "residual needs padding='SAME'"),
])
def test_bad_ids(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        models.parse(bad)


FAMILIES = ["flax-example", "tf-tutorial", "flax-example-valid", "plain-k3-w16.32",
            "bottleneck-r4-k3-w16.32-res-bn", "stacked-n2-w8.16-do0.5",
            "plain-k3-w8.16-convhead", "bottleneck-r4-k5-w8.16-res-do0.25-convhead",
            "bottleneck-r4-k3-w4.8-res-nonepool-convhead", "stacked-n3-w8-res-x1.5-avgpool"]


@pytest.mark.parametrize("model_id", FAMILIES)
def test_analysis_counts_the_initialized_params(model_id):
    model = models.get(model_id)
    a = A.analyze_model(model, (28, 28, 1))
    assert a.total()["params"] == _params(model)
    assert a.output_shape == (10,)


def test_bottleneck_vs_plain_cost_follows_the_formula():
    # one stage at width w on C inputs, HxW pixels, k x k: plain = HW k^2 C w;
    # bottleneck = HW (C r + k^2 r^2 + r w)
    h = w_ = 28
    c, w, r, k = 1, 32, 8, 3
    plain = A.analyze_model(models.get("plain-k3-w32"), (h, w_, c))
    bottle = A.analyze_model(models.get("bottleneck-r8-k3-w32"), (h, w_, c))
    plain_trunk = plain.rows[0].macs
    bottle_trunk = sum(row.macs for row in bottle.rows[:3])
    assert plain_trunk == h * w_ * k * k * c * w
    assert bottle_trunk == h * w_ * (c * r + k * k * r * r + r * w)
    # the ratio on the model family itself, at a stage with 32 input channels
    p2 = A.analyze_model(models.get("plain-k3-w32.64"), (h, w_, c)).rows[2]
    b2 = A.analyze_model(models.get("bottleneck-r8-k3-w32.64"), (h, w_, c)).rows[4:7]
    hw = 14 * 14
    assert p2.macs == hw * 9 * 32 * 64
    assert sum(row.macs for row in b2) / p2.macs == pytest.approx(
        (32 * 8 + 9 * 8 * 8 + 8 * 64) / (9 * 32 * 64))
    # at a wider input the bottleneck is cheaper: 64 -> 64 channels, r = 16
    p64 = A.analyze("conv2d(64, 3, padding=same)", (14, 14, 64)).total()["macs"]
    b64 = A.analyze("conv2d(16, 1); conv2d(16, 3, padding=same); conv2d(64, 1)",
                    (14, 14, 64)).total()["macs"]
    assert b64 / p64 == pytest.approx((64 * 16 + 9 * 16 * 16 + 16 * 64) / (9 * 64 * 64))


@pytest.mark.parametrize("model_id", ["plain-k3-w8.16-convhead",
                                      "bottleneck-r4-k3-w4.8-res-nonepool-convhead",
                                      "stacked-n2-w8-avgpool-bn-convhead"])
@pytest.mark.slow
@pytest.mark.parametrize("size", [28, 29, 36, 64])
def test_fully_convolutional_models_take_any_size(model_id, size):
    model = models.get(model_id)
    v = model.init(KEY, jnp.ones((1, 28, 28, 1)))
    y = model.apply(v, jnp.ones((3, size, size + 3, 1)))
    assert y.shape == (3, 10)
    assert A.analyze_model(model, (size, size + 3, 1)).output_shape == (10,)


@pytest.mark.parametrize("model_id,shape", [("flax-example", (28, 28, 1)),
                                            ("tf-tutorial-valid", (32, 32, 1)),
                                            ("bottleneck-r8-k3-w16.32-res", (20, 24, 3)),
                                            ("stacked-n3-w8.16.32-bn", (64, 48, 1))])
def test_dense_head_models_at_their_training_size(model_id, shape):
    model = models.get(model_id)
    v = jax.eval_shape(lambda x: model.init(KEY, x), jnp.ones((1, *shape)))
    out = jax.eval_shape(lambda v, x: model.apply(v, x), v, jnp.ones((2, *shape)))
    assert out.shape == (2, 10)
    assert A.analyze_model(model, shape).total()["params"] == _params(model, shape)


def test_dense_head_models_refuse_another_size_clearly():
    model = models.get("plain-k3-w8.16")
    v = model.init(KEY, jnp.ones((1, 28, 28, 1)))
    with pytest.raises(ValueError, match=r"dense: kernel .* expects D_in=784 input features "
                                         r"but x has 1296"):
        model.apply(v, jnp.ones((1, 36, 36, 1)))


@pytest.mark.slow
@pytest.mark.parametrize("model_id", FAMILIES)
def test_jit_and_grad_in_both_modes(model_id):
    model = models.get(model_id)
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    variables = model.init(KEY, x)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    @jax.jit
    def loss(params, x, train_key):
        def f(train):
            out = model.apply({"params": params, **rest}, x, train=train,
                              rngs={"dropout": train_key}, mutable=list(rest))
            y = out[0] if isinstance(out, tuple) else out
            return jnp.mean(y ** 2)
        return f(False) + f(True)

    value, grads = jax.value_and_grad(loss)(params, x, jax.random.key(2))
    assert np.isfinite(float(value))
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, params)
    y = model.apply(variables, x)  # inference by default, no rngs needed
    assert y.shape == (2, 10)
