"""dense, flatten, dropout and batch_norm against NumPy and Flax."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import convjax


def test_dense_matches_numpy_and_flax(rng):
    x = rng.normal(size=(4, 12)).astype(np.float32)
    layer = nn.Dense(5)
    params = layer.init(jax.random.key(0), x)["params"]
    got = convjax.dense(x, params["kernel"], params["bias"])
    np.testing.assert_allclose(np.asarray(got), np.asarray(layer.apply({"params": params}, x)),
                               rtol=1e-5, atol=1e-5)
    want = x.astype(np.float64) @ np.asarray(params["kernel"]) + np.asarray(params["bias"])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # Leading axes are kept, as in flax.linen.Dense.
    x4 = rng.normal(size=(2, 3, 3, 12)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(convjax.dense(x4, params["kernel"])),
                               x4 @ np.asarray(params["kernel"]), rtol=1e-5, atol=1e-5)


def test_flatten_is_row_major_nhwc():
    x = jnp.arange(2 * 2 * 3 * 4.0).reshape(2, 2, 3, 4)
    f = convjax.flatten(x)
    assert f.shape == (2, 24)
    h, w, c = 1, 2, 3
    assert f[1, (h * 3 + w) * 4 + c] == x[1, h, w, c]


def test_dense_fixes_the_input_size():
    # A head built for 7x7x64 maps refuses a bigger image's 8x8x64 map.
    kernel = jnp.zeros((7 * 7 * 64, 10))
    msg = ("dense: kernel [D_in, D_out] = (3136, 10) expects D_in=3136 input features but x "
           "has 4096 on its last axis (x is [N, D_in], shape (1, 4096)); a dense kernel fixes "
           "the input size")
    with pytest.raises(ValueError, match=re.escape(msg)):
        convjax.dense(convjax.flatten(jnp.zeros((1, 8, 8, 64))), kernel)
    with pytest.raises(ValueError, match=re.escape("x looks unflattened: convjax.flatten(x) "
                                                   "gives [N, 3136]")):
        convjax.dense(jnp.zeros((1, 7, 7, 64)), kernel)
    with pytest.raises(ValueError, match=re.escape("dense: kernel must be rank 2 [D_in, D_out], "
                                                   "got rank 4")):
        convjax.dense(jnp.zeros((1, 10)), jnp.zeros((3, 3, 1, 10)))
    with pytest.raises(TypeError, match="dense: x must be floating point"):
        convjax.dense(jnp.zeros((1, 3), jnp.int32), jnp.zeros((3, 2)))


@pytest.mark.parametrize("key_fn", [jax.random.key, jax.random.PRNGKey])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_rate_and_scaling_match_flax(key_fn, rate):
    x = jnp.ones((200, 500))
    y = convjax.dropout(key_fn(3), x, rate, deterministic=False)
    flax_y = nn.Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": key_fn(3)})
    for out in (y, flax_y):
        vals = np.asarray(out)
        kept = vals != 0
        # Kept elements are scaled by 1 / (1 - rate); the rest are zero.
        np.testing.assert_allclose(vals[kept], 1.0 / (1.0 - rate), rtol=1e-6)
        # Fraction dropped within 5 standard errors of `rate` (100k draws).
        se = np.sqrt(rate * (1 - rate) / vals.size)
        assert abs((~kept).mean() - rate) < 5 * se
    np.testing.assert_array_equal(
        np.asarray(convjax.dropout(key_fn(3), x, rate, deterministic=True)), np.asarray(x))
    # Same key, same mask; different key, different mask.
    np.testing.assert_array_equal(np.asarray(y), np.asarray(
        convjax.dropout(key_fn(3), x, rate, deterministic=False)))
    assert not np.array_equal(np.asarray(y), np.asarray(
        convjax.dropout(key_fn(4), x, rate, deterministic=False)))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_bad_rate(rate):
    with pytest.raises(ValueError, match=re.escape(f"dropout: rate must be in [0, 1) (the "
                                                   f"probability of dropping an element), "
                                                   f"got rate={rate}")):
        convjax.dropout(jax.random.key(0), jnp.ones(3), rate, deterministic=False)


def test_dropout_other_errors():
    with pytest.raises(TypeError, match="rate must be a float in \\[0, 1\\), got '0.5'"):
        convjax.dropout(jax.random.key(0), jnp.ones(3), "0.5", deterministic=False)
    with pytest.raises(TypeError, match="deterministic must be a Python bool"):
        convjax.dropout(jax.random.key(0), jnp.ones(3), 0.5, deterministic=None)
    with pytest.raises(ValueError, match="key is required"):
        convjax.dropout(None, jnp.ones(3), 0.5, deterministic=False)


def _bn_numpy(x, scale, bias, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_batch_norm_training_inference_and_running_stats(rng):
    params, state = convjax.init.batch_norm_params(3)
    params = {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.array([0.0, -1.0, 3.0])}
    momentum, eps = 0.9, 1e-5
    run_mean, run_var = np.zeros(3), np.ones(3)
    for step in range(4):
        x = (rng.normal(size=(4, 5, 5, 3)) * [1.0, 3.0, 0.2] + [0.0, 5.0, -2.0]).astype(
            np.float32)
        y, state = convjax.batch_norm(params, state, x, training=True, momentum=momentum,
                                      epsilon=eps)
        xd = x.astype(np.float64)
        mean, var = xd.mean(axis=(0, 1, 2)), xd.var(axis=(0, 1, 2))
        np.testing.assert_allclose(np.asarray(y), _bn_numpy(xd, np.asarray(params["scale"]),
                                                             np.asarray(params["bias"]), mean,
                                                             var, eps), rtol=1e-4, atol=1e-4)
        run_mean = momentum * run_mean + (1 - momentum) * mean
        run_var = momentum * run_var + (1 - momentum) * var
        np.testing.assert_allclose(np.asarray(state["mean"]), run_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(state["var"]), run_var, rtol=1e-5, atol=1e-6)
    # Inference: running statistics, state unchanged.
    x = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    y, same = convjax.batch_norm(params, state, x, training=False, epsilon=eps)
    np.testing.assert_allclose(np.asarray(y), _bn_numpy(
        x.astype(np.float64), np.asarray(params["scale"]), np.asarray(params["bias"]),
        run_mean, run_var, eps), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(same["mean"]), np.asarray(state["mean"]))


@pytest.mark.parametrize("shape", [(8, 6), (4, 5, 6), (4, 3, 3, 6)])
def test_batch_norm_parity_with_flax(rng, shape):
    layer = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-3)
    x0 = jnp.asarray(rng.normal(size=shape), jnp.float32)
    variables = layer.init(jax.random.key(0), x0)
    params = {"scale": jnp.asarray(rng.uniform(0.5, 2, size=shape[-1]), jnp.float32),
              "bias": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)}
    stats = variables["batch_stats"]
    state = {"mean": stats["mean"], "var": stats["var"]}
    for _ in range(3):
        x = jnp.asarray(rng.normal(size=shape) * 2 + 1, jnp.float32)
        want, upd = layer.apply({"params": params, "batch_stats": stats}, x,
                                mutable=["batch_stats"])
        stats = upd["batch_stats"]
        got, state = convjax.batch_norm(params, state, x, training=True, momentum=0.9,
                                        epsilon=1e-3)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(state["mean"]), np.asarray(stats["mean"]),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(state["var"]), np.asarray(stats["var"]),
                                   rtol=1e-6, atol=1e-6)
    infer = nn.BatchNorm(use_running_average=True, epsilon=1e-3)
    want = infer.apply({"params": params, "batch_stats": stats}, x)
    got, _ = convjax.batch_norm(params, state, x, training=False, epsilon=1e-3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_batch_norm_axis_name_gives_global_batch_statistics(rng):
    # 4 "devices" of 2 examples each (vmap with a named axis): the same result as one
    # batch of 8, because the statistics are averaged over the named axis.
    params, state = convjax.init.batch_norm_params(3)
    x = jnp.asarray(rng.normal(size=(8, 4, 4, 3)) * 2 + 1, jnp.float32)
    whole, whole_state = convjax.batch_norm(params, state, x, training=True)
    per_dev = jax.vmap(lambda xs: convjax.batch_norm(params, state, xs, training=True,
                                                     axis_name="devices"),
                       axis_name="devices")(x.reshape(4, 2, 4, 4, 3))
    np.testing.assert_allclose(np.asarray(per_dev[0]).reshape(x.shape), np.asarray(whole),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(per_dev[1]["var"][0]),
                               np.asarray(whole_state["var"]), rtol=1e-5)
    # Without the axis name each device normalizes with its own 2 examples: different.
    local = jax.vmap(lambda xs: convjax.batch_norm(params, state, xs, training=True)[0])(
        x.reshape(4, 2, 4, 4, 3))
    assert not np.allclose(np.asarray(local).reshape(x.shape), np.asarray(whole), atol=1e-3)


def test_batch_norm_errors():
    params, state = convjax.init.batch_norm_params(3)
    x = jnp.zeros((2, 4, 4, 3))
    with pytest.raises(ValueError, match=re.escape("batch_norm: params must have exactly the "
                                                   "keys ['scale', 'bias'] (Flax's names), got "
                                                   "['beta', 'gamma']")):
        convjax.batch_norm({"gamma": 1, "beta": 0}, state, x, training=True)
    with pytest.raises(ValueError, match=re.escape("state must have exactly the keys ['mean', "
                                                   "'var'] (Flax's names), got ['mean', "
                                                   "'variance']")):
        convjax.batch_norm(params, {"mean": 0, "variance": 1}, x, training=True)
    with pytest.raises(ValueError, match=re.escape("batch_norm: params['scale'] must have shape "
                                                   "[C]=(5,), one per channel of x (NHWC [N, H, "
                                                   "W, C]), got shape (3,)")):
        convjax.batch_norm(params, state, jnp.zeros((2, 4, 4, 5)), training=True)
    with pytest.raises(TypeError, match="training must be a Python bool"):
        convjax.batch_norm(params, state, x, training="yes")
    with pytest.raises(TypeError, match="batch_norm: x must be floating point"):
        convjax.batch_norm(params, state, jnp.zeros((2, 3), jnp.int32), training=True)


@pytest.mark.slow
def test_check_grads_dense_and_batch_norm(rng):
    x = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
    check_grads(lambda a, w: convjax.dense(a, w), (x, k), order=2, modes=["fwd", "rev"],
                atol=2e-2, rtol=2e-2)
    params = {"scale": jnp.asarray([1.5, 0.5, 1.0, 2.0]), "bias": jnp.zeros(4)}
    _, state = convjax.init.batch_norm_params(4)
    def bn(a, s):
        return convjax.batch_norm({"scale": s, "bias": params["bias"]}, state, a,
                                  training=True)[0]

    check_grads(bn, (x * 3, params["scale"]), order=1, modes=["fwd", "rev"], atol=2e-2,
                rtol=2e-2)
    # Second order through 1/sqrt(var) by float32 finite differences is noisier.
    check_grads(bn, (x * 3, params["scale"]), order=2, modes=["fwd", "rev"], atol=0.1,
                rtol=0.1)
    key = jax.random.key(0)
    check_grads(lambda a: convjax.dropout(key, a, 0.3, deterministic=False), (x,), order=2,
                modes=["fwd", "rev"])
