"""convjax.conv_transpose is the exact adjoint of convjax.conv."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax
from tests import numpy_reference as ref


def _inner(a, b):
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


# The dot-product (adjoint) test over strides 1-3, SAME/VALID, odd and even kernels, on
# input sizes that leave a remainder under the stride (the ambiguous case).
@pytest.mark.parametrize("stride,padding,ksize,size", list(itertools.product(
    [1, 2, 3], ["SAME", "VALID"], [2, 3, 4], [7, 8])))
def test_dot_product_adjoint_identity(rng, stride, padding, ksize, size):
    x = rng.normal(size=(2, size, size - 1, 3)).astype(np.float32)
    k = rng.normal(size=(ksize, ksize, 3, 5)).astype(np.float32)
    y_fwd = convjax.conv(x, k, stride=stride, padding=padding)
    y = rng.normal(size=y_fwd.shape).astype(np.float32)
    xt = convjax.conv_transpose(y, k, stride=stride, padding=padding, output_shape=x.shape)
    assert xt.shape == x.shape
    lhs, rhs = _inner(y_fwd, y), _inner(x, xt)
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs)), (lhs, rhs)


@pytest.mark.parametrize("rank,stride,padding,dilation", [
    (1, 2, "SAME", 1), (1, 3, "VALID", 2), (1, 2, "CIRCULAR", 1), (1, 1, [(3, 0)], 1),
    (2, 2, "SAME", 1), (2, 2, "CIRCULAR", 1), (2, 1, "CIRCULAR", 2), (2, 2, [(2, 1), (0, 3)], 1),
    (2, (1, 2), "VALID", (2, 1)), (3, 2, "SAME", 1), (3, 1, "CIRCULAR", 1),
])
@pytest.mark.slow
def test_equals_vjp_of_conv_and_numpy_scatter(rng, rank, stride, padding, dilation):
    spatial = (7, 6, 5)[:rank]
    x = rng.normal(size=(2, *spatial, 3)).astype(np.float32)
    k = rng.normal(size=(*([3] * rank), 3, 4)).astype(np.float32)
    y_fwd, vjp = jax.vjp(lambda a: convjax.conv(a, k, stride=stride, padding=padding,
                                                dilation=dilation), jnp.asarray(x))
    y = rng.normal(size=y_fwd.shape).astype(np.float32)
    got = convjax.conv_transpose(y, k, stride=stride, padding=padding, dilation=dilation,
                                 output_shape=spatial)
    np.testing.assert_allclose(np.asarray(got), np.asarray(vjp(jnp.asarray(y))[0]),
                               rtol=1e-4, atol=1e-4)
    tup = lambda v: (v,) * rank if isinstance(v, int) else tuple(v)  # noqa: E731
    want = ref.conv_transpose(y, k, stride=tup(stride), padding=padding,
                              dilation=tup(dilation), in_spatial=spatial)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_default_output_shape():
    k = jnp.ones((3, 3, 2, 4))
    y = jnp.ones((1, 5, 6, 4))
    # SAME: H = H' * s (Keras' Conv2DTranspose); VALID: H = (H' - 1) * s + KH.
    assert convjax.conv_transpose(y, k, stride=2).shape == (1, 10, 12, 2)
    assert convjax.conv_transpose(y, k, stride=2, padding="VALID").shape == (1, 11, 13, 2)
    assert convjax.conv_transpose(y, k, stride=1, padding=1).shape == (1, 5, 6, 2)
    # Both sizes that a stride-2 SAME conv maps to 5 are accepted.
    assert convjax.conv_transpose(y, k, stride=2, output_shape=(9, 11)).shape == (1, 9, 11, 2)


def test_bias_and_half_precision(rng):
    y = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    b = np.array([1.0, -2.0], np.float32)
    base = convjax.conv_transpose(y, k, stride=2)
    np.testing.assert_allclose(np.asarray(convjax.conv_transpose(y, k, b, stride=2)),
                               np.asarray(base) + b, rtol=1e-6, atol=1e-6)
    half = convjax.conv_transpose(jnp.asarray(y, jnp.bfloat16), k, stride=2)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), np.asarray(base), rtol=5e-2,
                               atol=5e-2)


def test_flax_conv_transpose_is_not_the_adjoint_but_lax_with_transpose_kernel_is(rng):
    # Why conv_transpose exists: flax.linen.ConvTranspose (and lax.conv_transpose without
    # transpose_kernel) do not rotate the kernel, so the dot-product test fails for them.
    x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    k = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    y = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
    lhs = _inner(convjax.conv(x, k), y)
    ours = convjax.conv_transpose(y, k, output_shape=x.shape)
    assert abs(lhs - _inner(x, ours)) < 1e-3
    layer = nn.ConvTranspose(features=2, kernel_size=(3, 3), padding="SAME", use_bias=False)
    flax_out = layer.apply({"params": {"kernel": jnp.swapaxes(k, 2, 3)}}, y)
    assert abs(lhs - _inner(x, flax_out)) > 1e-2
    lax_adj = jax.lax.conv_transpose(y, k, (1, 1), "SAME", dimension_numbers=(
        "NHWC", "HWIO", "NHWC"), transpose_kernel=True)
    np.testing.assert_allclose(np.asarray(lax_adj), np.asarray(ours), rtol=1e-4, atol=1e-4)
