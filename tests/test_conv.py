"""convjax.conv and convjax.pointwise against NumPy loops, Flax, and hand-derived maps."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import convjax
from tests import numpy_reference as ref

PADDINGS = ["SAME", "VALID", "CIRCULAR", 1, "pairs"]


def _padding_arg(padding, rank):
    # Asymmetric explicit pairs, different per dim.
    return [(1, 2), (0, 1), (2, 0)][:rank] if padding == "pairs" else padding


def _case(rng, rank, size, ksize, stride, dilation, groups, padding, batch, cin_per_group,
          cout_per_group):
    x = rng.normal(size=(batch, *([size] * rank), cin_per_group * groups)).astype(np.float32)
    k = rng.normal(size=(*([ksize] * rank), cin_per_group, cout_per_group * groups))
    k = k.astype(np.float32)
    b = rng.normal(size=(cout_per_group * groups,)).astype(np.float32)
    pad = _padding_arg(padding, rank)
    got = convjax.conv(x, k, b, stride=stride, padding=pad, dilation=dilation, groups=groups)
    want = ref.conv(x, k, stride=[stride] * rank, padding=pad, dilation=[dilation] * rank,
                    groups=groups) + b
    assert got.shape == want.shape
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


# 1D and 2D: the full product of strides, dilations, groups, paddings and odd/even kernels
# (even kernels with SAME and stride 2 put the extra padding at the end).
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("ksize,stride,dilation,groups,padding", list(itertools.product(
    [2, 3], [1, 2], [1, 2], [1, 2], PADDINGS)))
def test_conv_matches_numpy_loops(rng, rank, ksize, stride, dilation, groups, padding):
    size = 7 if rank == 2 else 9
    _case(rng, rank, size, ksize, stride, dilation, groups, padding,
          batch=1 + (stride + groups) % 2, cin_per_group=2, cout_per_group=1 + groups)


@pytest.mark.parametrize("ksize,stride,dilation,groups,padding", [
    (3, 1, 1, 1, "SAME"), (2, 2, 1, 1, "SAME"), (3, 2, 1, 2, "VALID"), (3, 1, 2, 1, "CIRCULAR"),
    (2, 1, 1, 3, "pairs"), (3, 2, 1, 1, 1), (4, 2, 1, 1, "SAME"), (3, 3, 1, 1, "CIRCULAR"),
])
def test_conv3d_matches_numpy_loops(rng, ksize, stride, dilation, groups, padding):
    _case(rng, 3, 5, ksize, stride, dilation, groups, padding, batch=2, cin_per_group=2,
          cout_per_group=2)


def test_per_dim_stride_dilation_and_rectangular_kernel(rng):
    x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
    k = rng.normal(size=(3, 2, 3, 4)).astype(np.float32)
    got = convjax.conv(x, k, stride=(2, 1), dilation=(1, 3), padding="SAME")
    want = ref.conv(x, k, stride=(2, 1), padding="SAME", dilation=(1, 3))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_ones_kernel_on_ones_image_gives_4_6_9():
    # A 3x3 window centred on a SAME-padded ones image covers 4 cells at a corner, 6 on an
    # edge and 9 inside: the border pattern anyone can check in their head.
    y = convjax.conv(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 1)), padding="SAME")
    want = np.array([[4, 6, 6, 6, 4],
                     [6, 9, 9, 9, 6],
                     [6, 9, 9, 9, 6],
                     [6, 9, 9, 9, 6],
                     [4, 6, 6, 6, 4]])
    np.testing.assert_array_equal(np.asarray(y[0, :, :, 0]), want)
    # CIRCULAR wraps around: every window sees 9 real cells.
    y = convjax.conv(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 1)), padding="CIRCULAR")
    np.testing.assert_array_equal(np.asarray(y), 9.0)


def test_same_even_kernel_extra_padding_goes_at_the_end():
    # W=4, KW=2, stride 1: total padding 1, all of it on the right. With x = [1, 2, 3, 4]
    # and kernel [1, 10]: y[j] = x[j] + 10 * x[j + 1], x[4] = 0 -> [21, 32, 43, 4].
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    k = jnp.array([1.0, 10.0]).reshape(2, 1, 1)
    np.testing.assert_array_equal(np.asarray(convjax.conv(x, k)[0, :, 0]), [21, 32, 43, 4])


def test_circular_wraps_around():
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    k = jnp.array([1.0, 10.0, 100.0]).reshape(3, 1, 1)
    # y[j] = x[j-1] + 10 x[j] + 100 x[j+1], indices mod 4.
    want = [4 + 10 + 200, 1 + 20 + 300, 2 + 30 + 400, 3 + 40 + 100]
    got = convjax.conv(x, k, padding="CIRCULAR")
    np.testing.assert_array_equal(np.asarray(got[0, :, 0]), want)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_pointwise_is_a_per_pixel_matrix_product(rng, rank):
    # What a 1x1 conv does to 32 feature maps: each output map is a weighted sum of the
    # 32 input maps at the same pixel. Three ways to write it, one answer.
    x = rng.normal(size=(2, *([4] * rank), 32)).astype(np.float32)
    k = rng.normal(size=(32, 8)).astype(np.float32)
    b = rng.normal(size=(8,)).astype(np.float32)
    via_pointwise = convjax.pointwise(x, k, b)
    via_conv = convjax.conv(x, k.reshape((1,) * rank + (32, 8)), b)
    via_conv_kernel = convjax.pointwise(x, k.reshape((1,) * rank + (32, 8)), b)
    per_pixel = np.einsum("...c,co->...o", x.astype(np.float64), k) + b
    assert via_pointwise.shape == (2, *([4] * rank), 8)
    for got in (via_pointwise, via_conv, via_conv_kernel):
        np.testing.assert_allclose(np.asarray(got), per_pixel, rtol=1e-4, atol=1e-4)
    # Pixel by pixel, explicitly.
    pix = (1,) + (2,) * rank
    np.testing.assert_allclose(np.asarray(via_pointwise[pix]), x[pix] @ k + b, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_in_half_out_accumulated_in_float32(rng, dtype):
    x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    k = rng.normal(size=(3, 3, 16, 4)).astype(np.float32) / 12
    y16 = convjax.conv(jnp.asarray(x, dtype), jnp.asarray(k, dtype))
    assert y16.dtype == dtype
    # The float32 conv of the same (rounded) inputs, rounded once at the end, is what
    # float32 accumulation gives; allow a couple of ulps for summation order.
    xr = np.asarray(jnp.asarray(x, dtype), np.float32)
    kr = np.asarray(jnp.asarray(k, dtype), np.float32)
    y32 = convjax.conv(xr, kr)
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32),
                               rtol=2 * eps, atol=2 * eps)
    assert convjax.pointwise(jnp.asarray(x, dtype), jnp.asarray(k[0, 0], dtype)).dtype == dtype
    # A float32 kernel (e.g. params kept in float32) is cast to the input dtype.
    assert convjax.conv(jnp.asarray(x, dtype), k).dtype == dtype


def test_jit_grad_vmap(rng):
    x = jnp.asarray(rng.normal(size=(3, 6, 6, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
    f = jax.jit(lambda x, k: convjax.conv(x, k, stride=2, padding="SAME"))
    # Compiled and op-by-op results may differ in summation order (C=2 takes the tap
    # path, which XLA fuses into multiply-adds under jit): float32 round-off only.
    np.testing.assert_allclose(np.asarray(f(x, k)), np.asarray(convjax.conv(x, k, stride=2)),
                               rtol=1e-5, atol=1e-5)
    # vmap over a leading "model" axis of kernels.
    ks = jnp.stack([k, 2 * k])
    ys = jax.vmap(lambda kk: convjax.conv(x, kk))(ks)
    np.testing.assert_allclose(np.asarray(ys[1]), 2 * np.asarray(convjax.conv(x, k)),
                               rtol=1e-5, atol=1e-5)
    # Gradient of a linear function of the kernel: d/dk sum(conv(x, k)) = window sums of x.
    g = jax.grad(lambda kk: convjax.conv(x, kk, padding="VALID").sum())(k)
    want = np.zeros(k.shape)
    xn = np.asarray(x, np.float64)
    for a, b in np.ndindex(3, 3):
        want[a, b] = xn[:, a:a + 4, b:b + 4, :].sum(axis=(0, 1, 2))[:, None]
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backward,modes", [("canonical", ["rev"]), ("lax", ["fwd", "rev"])])
@pytest.mark.parametrize("padding,stride,dilation,groups", [
    ("SAME", 1, 1, 1), ("VALID", 2, 1, 2), ("CIRCULAR", 1, 2, 1), ([(1, 0), (2, 1)], 2, 1, 1)])
@pytest.mark.slow
def test_check_grads_second_order(rng, padding, stride, dilation, groups, backward, modes):
    x = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 2, 2 // groups, 2)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(2,)), jnp.float32)

    def f(x, k, b):
        return convjax.conv(x, k, b, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, backward=backward)

    check_grads(f, (x, k, b), order=2, modes=modes, atol=5e-2, rtol=5e-2)


def test_grad_in_half_precision_keeps_dtypes(rng):
    x = jnp.asarray(rng.normal(size=(2, 5, 5, 3)), jnp.bfloat16)
    k = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.bfloat16)
    gx, gk = jax.grad(lambda x, k: convjax.conv(x, k).astype(jnp.float32).sum(),
                      argnums=(0, 1))(x, k)
    assert gx.dtype == jnp.bfloat16 and gk.dtype == jnp.bfloat16
    assert gx.shape == x.shape and gk.shape == k.shape


@pytest.mark.parametrize("kernel_size,strides,padding,dilation,groups", [
    ((3, 3), (1, 1), "SAME", (1, 1), 1),
    ((3, 3), (2, 2), "VALID", (1, 1), 1),
    ((4, 4), (2, 2), "SAME", (1, 1), 1),
    ((3, 3), (1, 1), "SAME", (2, 2), 2),
    ((5, 3), (1, 1), "CIRCULAR", (1, 1), 4),
    ((3, 3), (1, 2), [(1, 2), (0, 1)], (1, 1), 1),
    ((3,), (1,), "SAME", (1,), 2),
    ((2, 2, 2), (1, 1, 1), "VALID", (1, 1, 1), 1),
])
@pytest.mark.slow
def test_parity_with_flax_linen_conv(rng, kernel_size, strides, padding, dilation, groups):
    rank = len(kernel_size)
    x = jnp.asarray(rng.normal(size=(2, *([8] * rank), 4)), jnp.float32)
    layer = nn.Conv(features=8, kernel_size=kernel_size, strides=strides, padding=padding,
                    kernel_dilation=dilation, feature_group_count=groups)
    params = layer.init(jax.random.key(0), x)["params"]
    want = layer.apply({"params": params}, x)
    got = convjax.conv(x, params["kernel"], params["bias"], stride=strides, padding=padding,
                       dilation=dilation, groups=groups)
    assert params["kernel"].shape == (*kernel_size, 4 // groups, 8)  # Flax is HWIO too
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_circular_stride2_uses_same_split_unlike_flax(rng):
    # Documented difference: with stride 2, CIRCULAR here uses SAME's pad split
    # (W=8, K=3, s=2 -> (0, 1)); flax.linen.Conv pads ((K-1)//2, K//2) = (1, 1).
    x = jnp.asarray(rng.normal(size=(1, 8, 1)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 1, 1)), jnp.float32)
    got = convjax.conv(x, k, stride=2, padding="CIRCULAR")
    xn = np.asarray(x)
    ours = np.concatenate([xn, xn[:, :1]], axis=1)          # pad (0, 1) by wrap-around
    flaxs = np.concatenate([xn[:, -1:], xn, xn[:, :1]], axis=1)  # pad (1, 1)
    np.testing.assert_allclose(np.asarray(got), ref.conv(ours, k, stride=[2], padding="VALID",
                                                         dilation=[1]), rtol=1e-5, atol=1e-5)
    layer = nn.Conv(1, (3,), strides=2, padding="CIRCULAR", use_bias=False)
    flax_out = layer.apply({"params": {"kernel": k}}, x)
    np.testing.assert_allclose(np.asarray(flax_out), ref.conv(
        flaxs, k, stride=[2], padding="VALID", dilation=[1]), rtol=1e-5, atol=1e-5)
    assert got.shape == flax_out.shape and not np.allclose(np.asarray(got),
                                                           np.asarray(flax_out))
