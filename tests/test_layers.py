"""convjax.layers: parity with flax.linen (params load both ways), transforms, analysis."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import analysis as A
from convjax import layers

KEY = jax.random.key(0)


def _x(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _swap(ours, theirs, x):
    """Init each module, run the other's params through it: outputs must agree."""
    v_ours = ours.init(KEY, x)
    v_theirs = theirs.init(jax.random.key(5), x)
    assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_theirs)
    for v in (v_ours, v_theirs):
        np.testing.assert_allclose(np.asarray(ours.apply(v, x)),
                                   np.asarray(theirs.apply(v, x)), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kw,shape", [
    (dict(features=8, kernel_size=(3, 3)), (2, 9, 9, 3)),
    (dict(features=8, kernel_size=(3, 3), strides=2, padding="VALID"), (2, 9, 10, 3)),
    (dict(features=8, kernel_size=(4, 3), strides=(2, 1), padding="SAME"), (2, 9, 9, 3)),
    (dict(features=8, kernel_size=(3, 3), kernel_dilation=2, padding=((1, 2), (0, 1))),
     (2, 9, 9, 3)),
    (dict(features=8, kernel_size=(3, 3), feature_group_count=2, use_bias=False),
     (2, 8, 8, 4)),
    (dict(features=6, kernel_size=(3, 3), padding="CIRCULAR"), (1, 6, 6, 2)),
    (dict(features=5, kernel_size=(5,), strides=3, padding="SAME"), (2, 20, 2)),
    (dict(features=5, kernel_size=4), (2, 20, 2)),  # an int kernel_size is 1D, as in Flax
    (dict(features=4, kernel_size=(2, 3, 3), padding="VALID"), (1, 4, 6, 6, 2)),
])
@pytest.mark.slow
def test_conv_params_interchange_with_flax_conv(kw, shape):
    _swap(layers.Conv(**kw), nn.Conv(**kw), _x(shape))


@pytest.mark.slow
def test_pointwise_depthwise_dense_transpose_interchange_with_flax():
    x = _x((2, 8, 8, 4))
    _swap(layers.Pointwise(6), nn.Conv(6, (1, 1)), x)
    _swap(layers.DepthwiseConv((3, 3), depth_multiplier=2, strides=2),
          nn.Conv(8, (3, 3), strides=2, feature_group_count=4), x)
    _swap(layers.Dense(7), nn.Dense(7), _x((3, 11)))
    for pad, s in (("SAME", 2), ("VALID", 2), ("SAME", 1)):
        _swap(layers.ConvTranspose(5, (3, 3), strides=s, padding=pad),
              nn.ConvTranspose(5, (3, 3), strides=(s, s), padding=pad, transpose_kernel=True),
              x)


@pytest.mark.parametrize("train", [False, True])
def test_batch_norm_matches_flax_with_its_variables(train):
    x = _x((4, 5, 5, 3)) * 3 + 1
    ours, theirs = layers.BatchNorm(momentum=0.9), nn.BatchNorm(momentum=0.9)
    v = theirs.init(KEY, x, use_running_average=True)
    v = {"params": {"scale": jnp.arange(1.0, 4.0), "bias": jnp.array([0.5, -1.0, 2.0])},
         "batch_stats": {"mean": jnp.array([0.1, 0.2, 0.3]), "var": jnp.array([1.5, 2., 3.])}}
    assert jax.tree.map(jnp.shape, ours.init(KEY, x, use_running_average=True)) == \
        jax.tree.map(jnp.shape, v)
    y1, s1 = ours.apply(v, x, use_running_average=not train, mutable=["batch_stats"])
    y2, s2 = theirs.apply(v, x, use_running_average=not train, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y2), rtol=1e-4, atol=1e-4)
    for k in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(s1["batch_stats"][k]),
                                   np.asarray(s2["batch_stats"][k]), rtol=1e-5, atol=1e-6)


def test_dropout_uses_the_dropout_stream_and_is_identity_at_inference():
    x = jnp.ones((1000,))
    d = layers.Dropout(0.25)
    assert (d.apply({}, x, deterministic=True) == x).all()
    y = d.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    kept = np.asarray(y) != 0
    assert 0.65 < kept.mean() < 0.85 and np.allclose(np.asarray(y)[kept], 1 / 0.75)
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        d.apply({}, x, deterministic=False)


def test_separable_conv_and_pools():
    x = _x((2, 8, 8, 4))
    sep = layers.SeparableConv(6, (3, 3), depth_multiplier=2)
    v = sep.init(KEY, x)
    assert jax.tree.map(jnp.shape, v["params"]) == {
        "depthwise_kernel": (3, 3, 1, 8), "pointwise_kernel": (8, 6), "bias": (6,)}
    assert sep.apply(v, x).shape == (2, 8, 8, 6)
    assert layers.MaxPool((2, 2)).apply({}, x).shape == (2, 4, 4, 4)
    assert layers.AvgPool(2, strides=1).apply({}, x).shape == (2, 7, 7, 4)
    assert layers.GlobalAvgPool().apply({}, x).shape == (2, 4)
    assert layers.Flatten().apply({}, x).shape == (2, 256)
    np.testing.assert_allclose(np.asarray(layers.GlobalMaxPool().apply({}, x)),
                               np.asarray(x.max(axis=(1, 2))))


def test_bad_groups_get_the_functional_error():
    with pytest.raises(ValueError, match=r"conv: x has C=3 channels \(NHWC .*\), not divisible "
                                         r"by groups=2"):
        layers.Conv(8, (3, 3), feature_group_count=2).init(KEY, jnp.ones((1, 5, 5, 3)))


def test_nchw_input_gets_the_hint_with_existing_params():
    conv = layers.Conv(8, (3, 3))
    v = conv.init(KEY, jnp.ones((2, 28, 28, 3)))
    with pytest.raises(ValueError, match=r"kernel expects I=3 input channels but x has C=28 "
                                         r"channels .* looks channels-first"):
        conv.apply(v, jnp.ones((2, 3, 28, 28)))


class _Small(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jax.nn.relu(layers.Conv(8, (3, 3), padding="VALID")(x))
        x = layers.BatchNorm(use_running_average=not train)(x)
        x = layers.MaxPool((2, 2))(x)
        x = layers.SeparableConv(16, (3, 3), padding="SAME")(x)
        x = layers.Dropout(0.5)(x, deterministic=not train)
        x = layers.Flatten()(x)
        return layers.Dense(10)(x)


SMALL_SPEC = ("conv2d(8, 3, activation=relu); batchnorm(epsilon=1e-5); maxpool2d(2); "
              "separable2d(16, 3, padding=same); dropout(0.5); flatten; dense(10)")


def test_a_model_and_its_spec_string_give_the_same_table():
    from_model = A.analyze_model(_Small(), (16, 16, 1))
    from_spec = A.analyze(SMALL_SPEC, (16, 16, 1))
    keys = ["output_shape", "filters", "filter_shape", "kernel_slices", "weights", "biases",
            "non_trainable", "macs", "macs_on_padding", "receptive_field", "jump",
            "activation_bytes", "param_shapes", "input_size_dependent"]
    assert len(from_model.rows) == len(from_spec.rows) == 7
    for m, s in zip(from_model.rows, from_spec.rows):
        assert m.name == s.name
        for k in keys:
            assert getattr(m, k) == getattr(s, k), (m.name, k)
    assert [r.path for r in from_model.rows][:3] == ["Conv_0", "BatchNorm_0", "MaxPool_0"]
    variables = _Small().init(KEY, jnp.ones((1, 16, 16, 1)))
    assert from_model.total()["params"] == sum(
        p.size for p in jax.tree.leaves(variables["params"]))


def test_tabulate_eval_shape_jit_and_grad():
    model, x = _Small(), jnp.ones((2, 16, 16, 1))
    table = model.tabulate(KEY, x, console_kwargs={"width": 240})
    assert "SeparableConv_0" in table and "depthwise_kernel" in table
    assert "Total Parameters: 8,178" in table  # 8,162 params + 16 batch stats
    shapes = jax.eval_shape(model.init, KEY, x)
    assert shapes["params"]["Conv_0"]["kernel"].shape == (3, 3, 1, 8)
    variables = model.init(KEY, x)

    @jax.jit
    def loss(params, x):
        y, _ = model.apply({**variables, "params": params}, x, train=True,
                           rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
        return jnp.mean(y ** 2)

    g = jax.grad(loss)(variables["params"], x)
    assert jax.tree.map(jnp.shape, g) == jax.tree.map(jnp.shape, variables["params"])
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(g))


def test_params_of_another_layer_are_refused():
    x = jnp.ones((1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"Conv \(top\): param 'kernel' has shape \(5, 5, 3, "
                                         r"16\), but this layer's settings give \(3, 3, 3, 8\)"):
        layers.Conv(8, (3, 3)).apply(nn.Conv(16, (5, 5)).init(KEY, x), x)
    with pytest.raises(ValueError, match=r"param 'kernel' has shape \(5, 32\)"):
        layers.Dense(10).apply(nn.Dense(32).init(KEY, jnp.ones((1, 5))), jnp.ones((1, 5)))


def test_batch_norm_promotes_like_flax():
    x = jnp.ones((4, 3, 3, 2), jnp.bfloat16)
    for bn in (layers.BatchNorm(use_running_average=True),
               nn.BatchNorm(use_running_average=True)):
        assert bn.apply(bn.init(KEY, x), x).dtype == jnp.float32
    bn = layers.BatchNorm(use_running_average=True, dtype=jnp.bfloat16)
    assert bn.apply(bn.init(KEY, x), x).dtype == jnp.bfloat16


class _Shared(nn.Module):
    def setup(self):
        self.conv = layers.Conv(4, (3, 3))

    def __call__(self, x):
        return self.conv(jax.nn.relu(self.conv(x)))


class _Branches(nn.Module):
    """x0 = relu(a(x)); out = d(relu(b(x0)) + c(x0)): c's input is x0, not b's output."""

    @nn.compact
    def __call__(self, x):
        x0 = jax.nn.relu(layers.Conv(4, (3, 3), name="a")(x))
        y = jax.nn.relu(layers.Conv(4, (3, 3), name="b")(x0))
        z = layers.Conv(4, (1, 1), name="c")(x0)
        return layers.Conv(1, (3, 3), name="d")(y + z)


def _support(model, variables, size):
    """Brute force: the input pixels the centre output depends on (gradient support)."""
    x = jax.random.normal(jax.random.key(2), (1, size, size, 4))
    g = jax.grad(lambda x: model.apply(variables, x)[0, size // 2, size // 2, 0])(x)
    rows, cols = np.nonzero(np.abs(np.asarray(g[0])).sum(-1))
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.slow
def test_shared_modules_and_branches_in_the_tables():
    a = A.analyze_model(_Shared(), (8, 8, 4))
    assert [r.path for r in a.rows] == ["conv", "conv"]
    assert [r.params for r in a.rows] == [148, 0] and a.rows[1].macs == a.rows[0].macs
    assert "weights shared with layer 1" in a.rows[1].sentence
    model = _Branches()
    b = A.analyze_model(model, (16, 16, 4))
    rf = {r.path: int(r.receptive_field[0]) for r in b.rows}
    variables = model.init(KEY, jnp.ones((1, 16, 16, 4)))
    assert rf == {"a": 3, "b": 5, "c": 3, "d": 7}
    assert _support(model, variables, 16) == (7, 7)


def test_layers_the_analysis_cannot_see_are_not_silently_left_out():
    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return layers.Conv(8, (3, 3))(nn.Conv(8, (5, 5))(x))

    with pytest.raises(ValueError, match=r"the model holds 792 parameters but its describable "
                                         r"layers hold 584: 208 are in modules the analysis "
                                         r"cannot see"):
        A.analyze_model(Mixed(), (16, 16, 1))
