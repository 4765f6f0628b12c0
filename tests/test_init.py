"""convjax.init: HWIO fans, variances over large draws, and param makers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax
from convjax import init


# name -> (ours, jax's, expected variance as a function of (fan_in, fan_out))
INITS = {
    "lecun_normal": (init.lecun_normal, jax.nn.initializers.lecun_normal,
                     lambda i, o: 1 / i),
    "lecun_uniform": (init.lecun_uniform, jax.nn.initializers.lecun_uniform,
                      lambda i, o: 1 / i),
    "he_normal": (init.he_normal, jax.nn.initializers.he_normal, lambda i, o: 2 / i),
    "he_uniform": (init.he_uniform, jax.nn.initializers.he_uniform, lambda i, o: 2 / i),
    "glorot_normal": (init.glorot_normal, jax.nn.initializers.glorot_normal,
                      lambda i, o: 2 / (i + o)),
    "glorot_uniform": (init.glorot_uniform, jax.nn.initializers.glorot_uniform,
                       lambda i, o: 2 / (i + o)),
}


def test_fans_are_hwio():
    assert init.fans((3, 3, 16, 32)) == (3 * 3 * 16, 3 * 3 * 32)
    assert init.fans((5, 64, 48)) == (5 * 64, 5 * 48)
    assert init.fans((300, 200)) == (300, 200)
    assert init.fans((3, 3, 1, 96)) == (9, 9 * 96)  # depthwise: fan_in = KH * KW
    with pytest.raises(ValueError, match="at least \\[I, O\\] axes"):
        init.fans((7,))


# Every initializer on a 2D conv and a dense kernel; two of them on 1D, 3D and depthwise.
CASES = ([(name, shape) for name in INITS for shape in [(3, 3, 64, 128), (500, 400)]]
         + [(name, shape) for name in ("lecun_normal", "he_uniform")
            for shape in [(5, 128, 256), (3, 3, 3, 32, 64), (3, 3, 1, 4096)]])


@pytest.mark.slow
@pytest.mark.parametrize("name,shape", CASES)
def test_variance_matches_formula_and_jax(name, shape):
    ours, theirs, var_fn = INITS[name]
    fan_in, fan_out = init.fans(shape)
    want = var_fn(fan_in, fan_out)
    # Pool several draws to get >= 200k samples for a tight variance estimate.
    reps = max(1, 200_000 // int(np.prod(shape)))
    keys = jax.random.split(jax.random.key(0), reps)
    a = np.asarray(jax.vmap(lambda k: ours(k, shape, jnp.float32))(keys)).ravel()
    jax_init = theirs(in_axis=-2, out_axis=-1)
    b = np.asarray(jax.vmap(lambda k: jax_init(k, shape, jnp.float32))(keys)).ravel()
    n = a.size
    # Standard error of a sample variance is about var * sqrt(2 / n) (less for uniform).
    tol = 6 * want * np.sqrt(2 / n)
    assert abs(a.var() - want) < tol, (a.var(), want)
    assert abs(b.var() - want) < tol, (b.var(), want)
    assert abs(a.mean()) < 6 * np.sqrt(want / n)
    # Same family of distribution: same support and the same fourth moment (kurtosis).
    assert abs(np.abs(a).max() - np.abs(b).max()) < 0.1 * np.abs(b).max()
    kurt = lambda v: ((v - v.mean()) ** 4).mean() / v.var() ** 2  # noqa: E731
    assert abs(kurt(a) - kurt(b)) < 0.1


@pytest.mark.parametrize("key", [jax.random.key(0), jax.random.PRNGKey(0)])
def test_new_and_legacy_keys(key):
    p = init.conv_params(key, (3, 3), 4, 8)
    assert p["kernel"].shape == (3, 3, 4, 8) and p["bias"].shape == (8,)
    assert init.he_normal(key, (3, 3, 4, 8)).shape == (3, 3, 4, 8)
    assert convjax.dropout(key, jnp.ones(4), 0.5, deterministic=False).shape == (4,)


@pytest.mark.slow
def test_param_makers():
    key = jax.random.key(1)
    p = init.conv_params(key, (3, 3), 8, 16, groups=4, dtype=jnp.bfloat16)
    assert p["kernel"].shape == (3, 3, 2, 16) and p["kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(p["bias"], np.float32), 0)
    assert "bias" not in init.conv_params(key, (5,), 3, 4, use_bias=False)
    assert init.conv_params(key, (2, 3, 4), 3, 5)["kernel"].shape == (2, 3, 4, 3, 5)
    assert init.dense_params(key, 784, 10)["kernel"].shape == (784, 10)
    p = init.depthwise_params(key, (3, 3), 4, 2)
    assert p["kernel"].shape == (3, 3, 1, 8) and p["bias"].shape == (8,)
    params, state = init.batch_norm_params(6)
    assert sorted(params) == ["bias", "scale"] and sorted(state) == ["mean", "var"]
    np.testing.assert_array_equal(np.asarray(params["scale"]), 1)
    np.testing.assert_array_equal(np.asarray(state["var"]), 1)
    p = init.conv_params(key, (3, 3), 3, 4, kernel_init=jax.nn.initializers.zeros)
    np.testing.assert_array_equal(np.asarray(p["kernel"]), 0)  # any jax initializer works
    # The made params feed the ops.
    x = jnp.ones((2, 8, 8, 3))
    p = init.conv_params(key, (3, 3), 3, 4)
    assert convjax.conv(x, **p).shape == (2, 8, 8, 4)
    assert convjax.separable_conv(x, **init.separable_params(key, (3, 3), 3, 7)).shape == (
        2, 8, 8, 7)


def test_param_maker_errors():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="window must be a sequence of 1, 2 or 3 ints"):
        init.conv_params(key, 3, 3, 4)
    with pytest.raises(ValueError, match="in_channels=3 and out_channels=4 must both be "
                                         "divisible by groups=2"):
        init.conv_params(key, (3, 3), 3, 4, groups=2)
    with pytest.raises(ValueError, match="out_channels must be an int >= 1, got 0"):
        init.conv_params(key, (3, 3), 3, 0)
    with pytest.raises(ValueError, match="mode must be 'fan_in', 'fan_out' or 'fan_avg'"):
        init.variance_scaling(1.0, "fan_sum", "normal")


def test_default_kernel_init_matches_flax_conv():
    # Flax's Conv and ours start from the same distribution: LeCun normal, HWIO fan-in.
    x = jnp.zeros((1, 8, 8, 16))
    flax_k = np.concatenate([
        np.asarray(nn.Conv(32, (3, 3)).init(jax.random.key(i), x)["params"]["kernel"]).ravel()
        for i in range(8)])
    ours = np.concatenate([np.asarray(init.conv_params(jax.random.key(i), (3, 3), 16, 32)[
        "kernel"]).ravel() for i in range(8)])
    want = 1 / (3 * 3 * 16)
    tol = 6 * want * np.sqrt(2 / ours.size)
    assert abs(ours.var() - want) < tol and abs(flax_k.var() - want) < tol
