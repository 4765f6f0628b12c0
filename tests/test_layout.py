"""convjax.layout: letters, dimension numbers, normalizers and PyTorch conversions."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import convjax
from convjax import layout


def test_layout_table():
    assert [(l.activations, l.kernel) for l in layout.LAYOUTS.values()] == [
        ("NWC", "WIO"), ("NHWC", "HWIO"), ("NDHWC", "DHWIO")]
    assert layout.layout_for_rank(3).describe_kernel() == "DHWIO [KD, KH, KW, I, O]"
    with pytest.raises(ValueError, match="spatial rank must be 1, 2 or 3"):
        layout.layout_for_rank(4)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_dimension_numbers_put_batch_first_and_features_last(rank):
    dn = layout.dimension_numbers(rank)
    assert isinstance(dn, lax.ConvDimensionNumbers)
    # Batch is axis 0 and features the last axis; kernel O last, I before it.
    assert dn.lhs_spec[:2] == (0, rank + 1)
    assert dn.rhs_spec[:2] == (rank + 1, rank)
    # Spatial axes in order: H before W (after N for activations, first for kernels).
    assert dn.lhs_spec[2:] == tuple(range(1, rank + 1))
    assert dn.rhs_spec[2:] == tuple(range(rank))
    assert dn.out_spec == dn.lhs_spec


def test_normalize_tuple():
    assert layout.normalize_tuple(3, 3, "window") == (3, 3, 3)
    assert layout.normalize_tuple([1, 2], 2, "stride") == (1, 2)
    assert layout.normalize_tuple(np.int64(2), 1, "stride") == (2,)
    with pytest.raises(TypeError, match="got True"):
        layout.normalize_tuple(True, 2, "stride")
    with pytest.raises(ValueError, match="sequence of 3 ints >= 1"):
        layout.normalize_tuple((1, 1), 3, "dilation")


@pytest.mark.parametrize("size,window,stride,pairs", [
    (28, 3, 1, (1, 1)), (28, 3, 2, (0, 1)), (27, 3, 2, (1, 1)), (5, 4, 1, (1, 2)),
    (6, 4, 2, (1, 1)), (7, 1, 3, (0, 0)), (2, 5, 1, (2, 2)), (1, 7, 4, (3, 3)),
])
def test_same_padding_is_tensorflows(size, window, stride, pairs):
    pad = layout.normalize_padding("same", (size,), (window,), (stride,))
    assert pad.pairs == (pairs,) and not pad.circular
    assert layout.output_size(size, window, stride, pad.pairs[0]) == -(-size // stride)


def test_normalize_padding_forms():
    assert layout.normalize_padding("VALID", (5, 5), (3, 3), (1, 1)).pairs == ((0, 0), (0, 0))
    assert layout.normalize_padding(2, (5,), (3,), (1,)).pairs == ((2, 2),)
    assert layout.normalize_padding([1, (0, 2)], (5, 5), (3, 3), (1, 1)).pairs == (
        (1, 1), (0, 2))
    circ = layout.normalize_padding("CIRCULAR", (8,), (3,), (2,))
    assert circ.circular and circ.pairs == ((0, 1),)


def test_circular_pad_wraps_even_beyond_the_axis():
    x = jnp.arange(3.0).reshape(1, 3, 1)
    got = layout.circular_pad(x, [(4, 2)])[0, :, 0]
    assert got.tolist() == [2, 0, 1, 2, 0, 1, 2, 0, 1]


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conversions_round_trip(rng, rank):
    x = rng.normal(size=(2, 3, *([4] * rank))).astype(np.float32)
    w = rng.normal(size=(5, 3, *([2] * rank))).astype(np.float32)
    to_last = {1: layout.ncw_to_nwc, 2: layout.nchw_to_nhwc, 3: layout.ncdhw_to_ndhwc}[rank]
    to_first = {1: layout.nwc_to_ncw, 2: layout.nhwc_to_nchw, 3: layout.ndhwc_to_ncdhw}[rank]
    k_last = {1: layout.oiw_to_wio, 2: layout.oihw_to_hwio, 3: layout.oidhw_to_dhwio}[rank]
    k_first = {1: layout.wio_to_oiw, 2: layout.hwio_to_oihw, 3: layout.dhwio_to_oidhw}[rank]
    assert to_last(x).shape == (2, *([4] * rank), 3)
    assert k_last(w).shape == (*([2] * rank), 3, 5)
    np.testing.assert_array_equal(np.asarray(to_first(to_last(x))), x)
    np.testing.assert_array_equal(np.asarray(k_first(k_last(w))), w)
    with pytest.raises(ValueError, match="expected a rank-"):
        to_last(np.zeros((2,) * (rank + 3)))


def _torch_style_conv2d(x_nchw, w_oihw, b, stride, pad):
    """PyTorch's Conv2d semantics written in NumPy: NCHW data, OIHW weights."""
    x = np.pad(x_nchw, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    o, _, kh, kw = w_oihw.shape
    ho = (x.shape[2] - kh) // stride + 1
    wo = (x.shape[3] - kw) // stride + 1
    y = np.zeros((x.shape[0], o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w_oihw)
    return y + b[None, :, None, None]


def test_pytorch_weights_give_pytorch_outputs(rng):
    x = rng.normal(size=(2, 3, 9, 8)).astype(np.float32)
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=(6,)).astype(np.float32)
    want = _torch_style_conv2d(x.astype(np.float64), w.astype(np.float64), b, 2, 1)
    got = convjax.conv(layout.nchw_to_nhwc(x), layout.oihw_to_hwio(w), b, stride=2,
                       padding=1)
    np.testing.assert_allclose(np.asarray(layout.nhwc_to_nchw(got)), want, rtol=1e-4,
                               atol=1e-4)
