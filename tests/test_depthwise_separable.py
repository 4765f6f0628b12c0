"""depthwise_conv and separable_conv against NumPy per-channel loops, conv and Flax."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import convjax
from tests import numpy_reference as ref


def depthwise_ref(x, k, *, stride, padding, dilation):
    """Per-channel loops: output channel c*M + m is channel c with filter k[..., 0, c*M+m]."""
    c = x.shape[-1]
    m = k.shape[-1] // c
    outs = []
    for ci in range(c):
        for mi in range(m):
            outs.append(ref.conv(x[..., ci:ci + 1], k[..., :, ci * m + mi:ci * m + mi + 1],
                                 stride=stride, padding=padding, dilation=dilation))
    return np.concatenate(outs, axis=-1)


@pytest.mark.parametrize("rank,multiplier,stride,padding,dilation", [
    (1, 1, 1, "SAME", 1), (1, 2, 2, "VALID", 1), (1, 3, 1, "CIRCULAR", 2),
    (2, 1, 1, "SAME", 1), (2, 2, 2, "SAME", 1), (2, 1, 1, "VALID", 2), (2, 2, 1, [(1, 0), (2, 1)], 1),
    (2, 1, 2, "CIRCULAR", 1), (3, 1, 1, "SAME", 1), (3, 2, 2, "VALID", 1),
])
@pytest.mark.slow
@pytest.mark.parametrize("method", ["grouped", "taps"])
def test_depthwise_matches_per_channel_loops_and_grouped_conv(rng, rank, multiplier, stride,
                                                              padding, dilation, method):
    c = 3
    x = rng.normal(size=(2, *([6] * rank), c)).astype(np.float32)
    k = rng.normal(size=(*([3] * rank), 1, c * multiplier)).astype(np.float32)
    b = rng.normal(size=(c * multiplier,)).astype(np.float32)
    got = convjax.depthwise_conv(x, k, b, stride=stride, padding=padding, dilation=dilation,
                                 method=method)
    want = depthwise_ref(x, k, stride=[stride] * rank, padding=padding,
                         dilation=[dilation] * rank) + b
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    grouped = convjax.conv(x, k, b, stride=stride, padding=padding, dilation=dilation,
                           groups=c)
    np.testing.assert_allclose(np.asarray(got), np.asarray(grouped), rtol=1e-5, atol=1e-5)


def test_depthwise_parity_with_flax_feature_group_count(rng):
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
    layer = nn.Conv(features=8, kernel_size=(3, 3), feature_group_count=4, strides=2)
    params = layer.init(jax.random.key(1), x)["params"]
    assert params["kernel"].shape == (3, 3, 1, 8)
    got = convjax.depthwise_conv(x, params["kernel"], params["bias"], stride=2)
    np.testing.assert_allclose(np.asarray(got), np.asarray(layer.apply({"params": params}, x)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["grouped", "taps"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_separable_is_depthwise_then_pointwise(rng, rank, method):
    c, m, o = 3, 2, 5
    x = rng.normal(size=(2, *([5] * rank), c)).astype(np.float32)
    dk = rng.normal(size=(*([3] * rank), 1, c * m)).astype(np.float32)
    pk = rng.normal(size=(c * m, o)).astype(np.float32)
    b = rng.normal(size=(o,)).astype(np.float32)
    got = convjax.separable_conv(x, dk, pk, b, stride=2, padding="SAME", method=method)
    h = depthwise_ref(x, dk, stride=[2] * rank, padding="SAME", dilation=[1] * rank)
    want = np.einsum("...c,co->...o", h, pk) + b
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    # The conv form of the pointwise kernel gives the same result.
    got4 = convjax.separable_conv(x, dk, pk.reshape((1,) * rank + (c * m, o)), b, stride=2)
    np.testing.assert_allclose(np.asarray(got4), np.asarray(got), rtol=1e-5, atol=1e-6)


def test_separable_parameter_count_matches_keras():
    # Keras SeparableConv2D(64, 3, depth_multiplier=1) on 32 channels:
    # 3*3*32 (depthwise) + 32*64 (pointwise) + 64 (bias) = 2400 parameters.
    p = convjax.init.separable_params(jax.random.key(0), (3, 3), 32, 64)
    assert sum(v.size for v in p.values()) == 3 * 3 * 32 + 32 * 64 + 64 == 2400
    # Keras DepthwiseConv2D(3, depth_multiplier=2) on 32 channels: 3*3*32*2 + 64 = 640.
    p = convjax.init.depthwise_params(jax.random.key(0), (3, 3), 32, 2)
    assert p["kernel"].shape == (3, 3, 1, 64)
    assert sum(v.size for v in p.values()) == 640


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grouped", "taps"])
def test_check_grads(rng, method):
    x = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
    dk = jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32)
    pk = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    for backward, modes in (("canonical", ["rev"]), ("lax", ["fwd", "rev"])):
        check_grads(lambda a, k: convjax.depthwise_conv(a, k, stride=2, method=method,
                                                        backward=backward),
                    (x, dk), order=2, modes=modes, atol=5e-2, rtol=5e-2)
        check_grads(lambda a, k, p: convjax.separable_conv(a, k, p, method=method,
                                                           backward=backward),
                    (x, dk, pk), order=2, modes=modes, atol=5e-2, rtol=5e-2)


def test_auto_method_picks_taps_on_cpu_and_both_give_equal_gradients(rng):
    x = jnp.asarray(rng.normal(size=(2, 7, 7, 3)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 1, 6)), jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda a: convjax.depthwise_conv(a, k))(x))
    if jax.default_backend() == "cpu":
        assert "conv_general_dilated" not in jaxpr
    grads = {m: jax.jit(jax.grad(lambda a, w: jnp.sum(jnp.sin(convjax.depthwise_conv(
        a, w, stride=2, dilation=1, method=m))), argnums=(0, 1)))(x, k)
        for m in ("grouped", "taps")}
    for a, b in zip(grads["grouped"], grads["taps"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="method must be 'auto', 'grouped' or 'taps', got "
                                         "'fft'"):
        convjax.depthwise_conv(x, k, method="fft")


def _raises(pattern, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=pattern):
        fn(*args, **kwargs)


def test_depthwise_and_separable_errors():
    x = jnp.zeros((2, 8, 8, 3))
    _raises(re.escape("depthwise_conv: channel multiplier mismatch: kernel HWIO [KH, KW, 1, "
                      "C*M] has O=4 output channels, not a multiple C*M of x's C=3 channels "
                      "(x is NHWC [N, H, W, C]"),
            convjax.depthwise_conv, x, jnp.zeros((3, 3, 1, 4)))
    _raises(re.escape("depthwise_conv: kernel HWIO [KH, KW, 1, C*M] must have I=1 (each filter "
                      "sees one input channel), got I=3 (shape (3, 3, 3, 2)); a Keras-style "
                      "[*window, C, M] kernel converts with kernel.reshape(*window, 1, C * M)"),
            convjax.depthwise_conv, x, jnp.zeros((3, 3, 3, 2)))
    _raises("looks channels-first .*nchw_to_nhwc", convjax.depthwise_conv,
            jnp.zeros((2, 4, 8, 5)), jnp.zeros((3, 3, 1, 8)))
    _raises(re.escape("depthwise_conv: x must be rank 4 (NHWC [N, H, W, C]) for a 2D kernel"),
            convjax.depthwise_conv, jnp.zeros((2, 8, 3)), jnp.zeros((3, 3, 1, 3)))
    _raises(re.escape("separable_conv: pointwise_kernel [C*M, O] = (3, 8) expects I=3 input "
                      "channels but the depthwise part gives C*M=6"),
            convjax.separable_conv, x, jnp.zeros((3, 3, 1, 6)), jnp.zeros((3, 8)))
    _raises(re.escape("separable_conv: pointwise_kernel must be [I, O] or 1x1 HWIO [KH, KW, "
                      "I, O], got window (3, 3)"),
            convjax.separable_conv, x, jnp.zeros((3, 3, 1, 3)), jnp.zeros((3, 3, 3, 8)))
    _raises(re.escape("separable_conv: pointwise_kernel must be [I, O] or 1x1 HWIO [KH, KW, I, "
                      "O] (rank 2 or 4), got shape (1, 3, 8)"),
            convjax.separable_conv, x, jnp.zeros((3, 3, 1, 3)), jnp.zeros((1, 3, 8)))
    _raises("separable_conv: channel multiplier mismatch: depthwise_kernel",
            convjax.separable_conv, x, jnp.zeros((3, 3, 1, 5)), jnp.zeros((5, 8)))
    _raises(re.escape("separable_conv: bias must have shape [O]=(8,)"),
            convjax.separable_conv, x, jnp.zeros((3, 3, 1, 3)), jnp.zeros((3, 8)),
            jnp.zeros(3))


def test_wrong_kernel_ranks():
    x = jnp.zeros((2, 8, 8, 3))
    _raises(re.escape("depthwise_conv: x must be rank 3 (NWC [N, W, C]) for a 1D kernel"),
            convjax.depthwise_conv, x, jnp.zeros((3, 1, 3)))
    _raises(re.escape("depthwise_conv: kernel must be rank 3, 4 or 5"),
            convjax.depthwise_conv, x, jnp.zeros((1, 3)))
    _raises(re.escape("separable_conv: depthwise_kernel must be rank 3, 4 or 5"),
            convjax.separable_conv, x, jnp.zeros((3, 3)), jnp.zeros((3, 8)))
