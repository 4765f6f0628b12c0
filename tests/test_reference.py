"""convjax.reference: the from-scratch conv and its hand-written backward pass."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax
from convjax import reference as R

PAIRS = [(1, 2), (2, 0), (0, 1)]


@pytest.mark.parametrize("rank,ksize,stride,dilation,padding", [
    *itertools.product([2], [2, 3], [1, 2], [1, 2], ["SAME", "VALID", 1, "pairs"]),
    (2, 3, 3, 1, "SAME"), (2, 2, 3, 2, "pairs"),
    (1, 3, 2, 1, "SAME"), (1, 2, 1, 2, "pairs"), (3, 2, 2, 1, "SAME"), (3, 3, 1, 1, "VALID"),
])
@pytest.mark.slow
def test_forward_and_backward_match_conv_vjp_and_conv_transpose(rng, rank, ksize, stride,
                                                                 dilation, padding):
    size = {1: 9, 2: 7, 3: 5}[rank]
    x = jnp.asarray(rng.normal(size=(2, *([size] * rank), 3)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*([ksize] * rank), 3, 4)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(4,)), jnp.float32)
    pad = PAIRS[:rank] if padding == "pairs" else padding
    kw = dict(stride=stride, padding=pad, dilation=dilation)
    y = convjax.conv(x, k, b, **kw)
    np.testing.assert_allclose(np.asarray(R.conv_forward(x, k, b, **kw)), np.asarray(y),
                               rtol=1e-4, atol=1e-4)
    if rank < 3 and dilation == 1:  # the direct loop is slow: a subset suffices
        np.testing.assert_allclose(np.asarray(R.conv_forward_direct(x, k, b, **kw)),
                                   np.asarray(y), rtol=1e-4, atol=1e-4)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    gx, gk, gb = R.conv_backward(x, k, g, **kw)
    _, vjp = jax.vjp(lambda a, w, c: convjax.conv(a, w, c, **kw), x, k, b)
    wx, wk, wb = vjp(g)
    for got, want in ((gx, wx), (gk, wk), (gb, wb)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-3)
    ct = convjax.conv_transpose(g, k, output_shape=x.shape, **kw)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(ct), rtol=1e-4, atol=1e-4)


def test_im2col_rows_are_windows():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    cols = R.im2col(x, (2, 2), (2, 2), (1, 1), ((0, 0), (0, 0)))
    assert cols.shape == (1, 2, 2, 4, 1)
    assert cols[0, 1, 0, :, 0].tolist() == [8.0, 9.0, 12.0, 13.0]  # window at row 2, col 0


def test_backward_by_hand_on_a_tiny_case():
    # 1D, x = [1, 2, 3], kernel [a, b] = [10, 1], VALID: y = [1*10 + 2, 2*10 + 3] = [12, 23].
    # With dy = [1, 1]: dx = [10, 10 + 1, 1] (each pixel collects the taps it fed),
    # dk = [1 + 2, 2 + 3] = [3, 5], db = 2.
    x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    k = jnp.array([10.0, 1.0]).reshape(2, 1, 1)
    assert R.conv_forward(x, k, padding="VALID")[0, :, 0].tolist() == [12.0, 23.0]
    gx, gk, gb = R.conv_backward(x, k, jnp.ones((1, 2, 1)), padding="VALID")
    assert gx[0, :, 0].tolist() == [10.0, 11.0, 1.0]
    assert gk[:, 0, 0].tolist() == [3.0, 5.0] and gb.tolist() == [2.0]


def test_errors():
    with pytest.raises(ValueError, match="zero padding only"):
        R.conv_forward(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), padding="CIRCULAR")
    with pytest.raises(ValueError, match=r"grad_out must have shape \(1, 4, 4, 2\)"):
        R.conv_backward(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2)), jnp.ones((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="kernel expects I=2 input channels"):
        R.conv_forward(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 2, 2)))
