"""Pooling against NumPy loops and flax.linen pooling."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax
from tests import numpy_reference as ref


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("window,stride,padding", list(itertools.product(
    [2, 3], [None, 1, 2], ["VALID", "SAME", "CIRCULAR", "pairs"])))
@pytest.mark.slow
def test_pools_match_numpy_loops(rng, rank, window, stride, padding):
    size = (9, 7, 5)[rank - 1]
    x = rng.normal(size=(2, *([size] * rank), 3)).astype(np.float32)
    pad = [(1, 0), (0, 1), (1, 1)][:rank] if padding == "pairs" else padding
    s = window if stride is None else stride
    for mode, fn in (("max", convjax.max_pool), ("avg", convjax.avg_pool)):
        got = fn(x, window, stride, pad)
        want = ref.pool(x, [window] * rank, [s] * rank, pad, mode)
        assert got.shape == want.shape, (mode, got.shape, want.shape)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    got = convjax.avg_pool(x, window, stride, pad, count_include_pad=True)
    want = ref.pool(x, [window] * rank, [s] * rank, pad, "avg", count_include_pad=True)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_same_average_counts_only_in_bounds_cells():
    # TensorFlow semantics: a 3x3 SAME average of a ones image is 1 everywhere; counting
    # the zero padding would give 4/9 at corners and 6/9 on edges.
    x = jnp.ones((1, 4, 4, 1))
    np.testing.assert_allclose(np.asarray(convjax.avg_pool(x, 3, 1, "SAME")), 1.0)
    incl = np.asarray(convjax.avg_pool(x, 3, 1, "SAME", count_include_pad=True))[0, :, :, 0]
    np.testing.assert_allclose(incl[0], [4 / 9, 6 / 9, 6 / 9, 4 / 9], rtol=1e-6)
    np.testing.assert_allclose(incl[1], [6 / 9, 1, 1, 6 / 9], rtol=1e-6)


def test_per_dim_window_and_stride(rng):
    x = rng.normal(size=(1, 6, 9, 2)).astype(np.float32)
    got = convjax.max_pool(x, (2, 3), (2, 1), "SAME")
    want = ref.pool(x, (2, 3), (2, 1), "SAME", "max")
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


@pytest.mark.parametrize("window,strides,padding", [
    ((2, 2), None, "VALID"), ((3, 3), (2, 2), "SAME"), ((3, 2), (1, 2), "VALID"),
    ((3, 3), (1, 1), ((1, 1), (2, 0))),
])
def test_parity_with_flax_pooling(rng, window, strides, padding):
    x = jnp.asarray(rng.normal(size=(2, 7, 8, 3)), jnp.float32)
    if strides is None:  # ours defaults to the window (Keras, PyTorch); Flax's to 1
        assert convjax.max_pool(x, window).shape == (2, 3, 4, 3)
        strides = window
    np.testing.assert_allclose(
        np.asarray(convjax.max_pool(x, window, strides, padding)),
        np.asarray(nn.max_pool(x, window, strides, padding)), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(convjax.avg_pool(x, window, strides, padding, count_include_pad=True)),
        np.asarray(nn.avg_pool(x, window, strides, padding, count_include_pad=True)),
        rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(convjax.avg_pool(x, window, strides, padding)),
        np.asarray(nn.avg_pool(x, window, strides, padding, count_include_pad=False)),
        rtol=1e-5, atol=1e-6)


def test_global_pools(rng):
    x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(convjax.global_avg_pool(x)), x.mean(axis=(1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(convjax.global_max_pool(x)), x.max(axis=(1, 2)))
    assert convjax.global_avg_pool(x, keepdims=True).shape == (2, 1, 1, 3)
    x3 = rng.normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(convjax.global_avg_pool(x3)),
                               x3.mean(axis=(1, 2, 3)), rtol=1e-5)
    assert convjax.global_max_pool(x3[:, 0]).shape == (2, 6)


@pytest.mark.slow
def test_dtypes_jit_grad_vmap(rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    for dtype in (jnp.bfloat16, jnp.float16):
        xh = jnp.asarray(x, dtype)
        for fn in (convjax.max_pool, convjax.avg_pool):
            y = fn(xh, 2, padding="SAME")
            assert y.dtype == dtype
            np.testing.assert_allclose(np.asarray(y, np.float32),
                                       np.asarray(fn(x, 2, padding="SAME")), rtol=2e-2,
                                       atol=2e-2)
        assert convjax.global_avg_pool(xh).dtype == dtype
    # Integer images can be max-pooled (no conversion needed), not averaged.
    u8 = (np.arange(16, dtype=np.uint8) * 16).reshape(1, 4, 4, 1)
    assert convjax.max_pool(u8, 2).dtype == jnp.uint8
    assert np.asarray(convjax.max_pool(u8, 2, padding="SAME"))[0, :, :, 0].tolist() == [
        [80, 112], [208, 240]]
    # Signed integers: padded cells hold the dtype's minimum, so negatives survive.
    i8 = -np.arange(1, 17, dtype=np.int8).reshape(1, 4, 4, 1)
    assert np.asarray(convjax.max_pool(i8, 3, 2, "SAME"))[0, :, :, 0].tolist() == [
        [-1, -3], [-9, -11]]
    f = jax.jit(lambda a: convjax.avg_pool(a, 3, 2, "SAME"))
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(convjax.avg_pool(x, 3, 2, "SAME")),
                               rtol=1e-6)
    # Gradient of a max pool routes each window's gradient to its argmax.
    g = jax.grad(lambda a: convjax.max_pool(a, 2).sum())(jnp.asarray(x))
    assert float(g.sum()) == 2 * 3 * 3 * 3
    # ... also when the gradient is taken of, or inside, a jitted function.
    for fn in (convjax.max_pool, convjax.avg_pool):
        for pad in ("VALID", "SAME", "CIRCULAR"):
            loss = lambda a: fn(a, 3, 2, pad).sum()  # noqa: E731
            g_eager = np.asarray(jax.grad(loss)(jnp.asarray(x)))
            np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(loss))(x)), g_eager,
                                       rtol=1e-6)
            np.testing.assert_allclose(np.asarray(jax.grad(jax.jit(loss))(x)), g_eager,
                                       rtol=1e-6)
    ys = jax.vmap(lambda a: convjax.avg_pool(a, 2))(jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(np.asarray(ys[1]), 2 * np.asarray(convjax.avg_pool(x, 2)),
                               rtol=1e-5)
