"""Bad input: a ValueError/TypeError naming the argument, the layout and expected vs actual.

Every check runs on static shapes in Python, before anything reaches XLA: the
``no_xla`` fixture makes any call into ``lax.conv_general_dilated``/``reduce_window`` fail.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax


@pytest.fixture
def no_xla(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("validation must happen before any XLA op is built")

    monkeypatch.setattr(jax.lax, "conv_general_dilated", boom)
    monkeypatch.setattr(jax.lax, "reduce_window", boom)
    monkeypatch.setattr(jax.lax, "dot_general", boom)


X = jnp.zeros((2, 28, 28, 3))
K = jnp.zeros((3, 3, 3, 8))


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_channel_mismatch_names_layout_and_counts(no_xla):
    msg = _raises(ValueError, re.escape(
        "conv: kernel expects I=32 input channels but x has C=3 channels "
        "(x is NHWC [N, H, W, C]"), convjax.conv, X, jnp.zeros((3, 3, 32, 8)))
    assert "(2, 28, 28, 3)" in msg
    _raises(ValueError, re.escape("pointwise: kernel expects I=32 input channels but x has "
                                  "C=3 channels (x is NHWC"),
            convjax.pointwise, X, jnp.zeros((32, 8)))
    _raises(ValueError, re.escape("kernel expects I=4 input channels but x has C=3 channels "
                                  "(x is NDHWC [N, D, H, W, C]"),
            convjax.conv, jnp.zeros((1, 4, 4, 4, 3)), jnp.zeros((1, 1, 1, 4, 2)))


def test_nchw_input_gets_a_conversion_hint(no_xla):
    msg = _raises(ValueError, "looks channels-first", convjax.conv,
                  jnp.zeros((2, 3, 28, 28)), K)
    assert "convjax.layout.nchw_to_nhwc(x)" in msg and "NCHW" in msg
    msg = _raises(ValueError, "looks channels-first", convjax.conv,
                  jnp.zeros((2, 3, 28)), jnp.zeros((3, 3, 8)))
    assert "convjax.layout.ncw_to_nwc(x)" in msg
    # No hint when axis 1 does not match either.
    msg = _raises(ValueError, "expects I=3", convjax.conv, jnp.zeros((2, 5, 28, 28)), K)
    assert "channels-first" not in msg


def test_rank_mismatch(no_xla):
    msg = _raises(ValueError, re.escape("conv: x must be rank 4 (NHWC [N, H, W, C]) for a 2D "
                                        "kernel HWIO [KH, KW, I, O]"),
                  convjax.conv, jnp.zeros((2, 28, 3)), K)
    assert "batched rank-3 input is NWC, which needs a 1D kernel WIO [KW, I, O]" in msg
    assert "an unbatched HWC input needs a batch axis: x[None]" in msg
    msg = _raises(ValueError, "x must be rank 4", convjax.conv, jnp.zeros((28, 28, 3)), K)
    assert "unbatched HWC input needs a batch axis: x[None]" in msg
    _raises(ValueError, re.escape("x must be rank 3 (NWC [N, W, C]) for a 1D kernel"),
            convjax.conv, X, jnp.zeros((3, 3, 8)))
    _raises(ValueError, "kernel must be rank 3, 4 or 5", convjax.conv, X, jnp.zeros((3, 8)))
    _raises(ValueError, re.escape("pointwise: kernel must be [C, O] or a 1x1 conv kernel"),
            convjax.pointwise, X, jnp.zeros((3,)))
    _raises(TypeError, "conv: x must be an array, got None", convjax.conv, None, K)
    _raises(ValueError, "unbatched HWC input needs a batch axis", convjax.max_pool,
            jnp.zeros((28, 28, 3)), (2, 2))
    _raises(ValueError, "y must be rank 4", convjax.conv_transpose, jnp.zeros((2, 5, 8)), K)


def test_groups_divisibility(no_xla):
    _raises(ValueError, re.escape("conv: x has C=3 channels (NHWC [N, H, W, C], shape "
                                  "(2, 28, 28, 3)), not divisible by groups=2"),
            convjax.conv, X, jnp.zeros((3, 3, 1, 8)), groups=2)
    _raises(ValueError, re.escape("conv: kernel has O=5 output channels (HWIO [KH, KW, I, O], "
                                  "shape (3, 3, 2, 5)), not divisible by groups=2"),
            convjax.conv, jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 2, 5)), groups=2)
    msg = _raises(ValueError, re.escape("kernel expects I=1 input channels per group but x has "
                                        "C=4 channels = 2 per group for groups=2"),
                  convjax.conv, jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 1, 4)), groups=2)
    assert "channels-first" not in msg
    # NCHW with groups: axis 1 holds I * groups channels.
    _raises(ValueError, "x looks channels-first .*nchw_to_nhwc",
            convjax.conv, jnp.zeros((2, 4, 28, 28)), jnp.zeros((3, 3, 2, 8)), groups=2)
    _raises(ValueError, "groups must be an int >= 1, got 0", convjax.conv, X, K, groups=0)


@pytest.mark.parametrize("arg,value,pattern", [
    ("stride", 0, r"stride must be >= 1 for every spatial dim of NHWC, got stride=0 for H"),
    ("stride", (1, -2), r"stride must be >= 1 .* got stride=-2 for W"),
    ("dilation", 0, r"dilation must be >= 1 .* got dilation=0 for H"),
    ("stride", (1, 1, 1), r"stride must be an int >= 1, or a sequence of 2 ints >= 1 "
                          r"\(one per spatial dim H, W of NHWC\); got \(1, 1, 1\)"),
    ("stride", 1.5, r"stride must be an int >= 1, or a sequence of 2 ints"),
])
def test_non_positive_or_malformed_stride_dilation(no_xla, arg, value, pattern):
    _raises((ValueError, TypeError), pattern, convjax.conv, X, K, **{arg: value})


def test_non_positive_window(no_xla):
    _raises(ValueError, "max_pool: window must be >= 1 for every spatial dim of NHWC, got "
                        "window=0 for W", convjax.max_pool, X, (2, 0))
    _raises(ValueError, "avg_pool: stride must be >= 1", convjax.avg_pool, X, 2, 0)


def test_padding_errors_list_accepted_forms(no_xla):
    msg = _raises(ValueError, "conv: unknown padding 'FULL'", convjax.conv, X, K,
                  padding="FULL")
    assert '"SAME", "VALID", "CIRCULAR", an int >= 0' in msg
    msg = _raises(ValueError, re.escape("conv: padding needs 2 (low, high) pairs, one per "
                                        "spatial dim H, W of NHWC, got 1"),
                  convjax.conv, X, K, padding=[(1, 1)])
    assert "each a (low, high) int pair or an int (both sides)" in msg
    _raises(ValueError, "padding for W must be a \\(low, high\\) pair of ints, got \\(1, 2, 3\\)",
            convjax.conv, X, K, padding=[(1, 1), (1, 2, 3)])
    _raises(ValueError, "padding must be >= 0, got -1", convjax.conv, X, K, padding=-1)
    _raises(ValueError, "unknown padding 'REFLECT'", convjax.max_pool, X, 2, padding="REFLECT")


def test_window_larger_than_padded_input(no_xla):
    msg = _raises(ValueError, re.escape("conv: window KH=5 (after dilation) is larger than the "
                                        "padded input H=3+0+0=3 (x is NHWC [N, H, W, C]"),
                  convjax.conv, jnp.zeros((1, 3, 9, 2)), jnp.zeros((5, 5, 2, 1)),
                  padding="VALID")
    assert "padding='VALID'" in msg
    _raises(ValueError, "window KW=5 \\(after dilation\\)", convjax.conv,
            jnp.zeros((1, 9, 4, 2)), jnp.zeros((3, 3, 2, 1)), padding="VALID", dilation=2)
    msg = _raises(ValueError, "max_pool: window KH=4 is larger than the padded input H=3",
                  convjax.max_pool, jnp.zeros((1, 3, 3, 1)), 4)
    assert "dilation" not in msg


def test_pool_padding_not_smaller_than_window(no_xla):
    # Such a window would hold only padding: -inf for max, 0/0 for the average.
    for fn in (convjax.max_pool, convjax.avg_pool):
        _raises(ValueError, re.escape("padding (3, 0) for W must be smaller than the window "
                                      "KW=2 on each side"),
                fn, jnp.ones((1, 3, 1)), 2, 1, [(3, 0)])
        _raises(ValueError, re.escape("padding (0, 2) for H must be smaller than the window KH=2"),
                fn, jnp.ones((1, 3, 3, 1)), 2, 1, [(0, 2), (1, 1)])


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_])
def test_integer_or_boolean_x(no_xla, dtype):
    msg = _raises(TypeError, f"conv: x must be floating point .* got dtype "
                             f"{jnp.dtype(dtype).name} \\(x is NHWC \\[N, H, W, C\\]\\)",
                  convjax.conv, jnp.zeros((1, 5, 5, 3), dtype), K)
    if dtype == jnp.uint8:
        assert "astype(jnp.float32) / 255.0" in msg
    _raises(TypeError, "pointwise: x must be floating point", convjax.pointwise,
            jnp.zeros((1, 5, 5, 3), dtype), jnp.zeros((3, 2)))
    _raises(TypeError, "avg_pool: x must be floating point", convjax.avg_pool,
            jnp.zeros((1, 4, 4, 1), dtype), 2)
    _raises(TypeError, "conv_transpose: y must be floating point", convjax.conv_transpose,
            jnp.zeros((1, 5, 5, 8), dtype), K)
    _raises(TypeError, "conv: kernel must be floating point", convjax.conv, X,
            jnp.zeros((3, 3, 3, 8), dtype))


def test_boolean_max_pool(no_xla):
    _raises(TypeError, "max_pool: x must be numeric, got dtype bool", convjax.max_pool,
            jnp.zeros((1, 4, 4, 1), bool), 2)


@pytest.mark.parametrize("shape,letter", [((3, 3, 0, 8), "I"), ((3, 3, 3, 0), "O"),
                                          ((0, 3, 3, 8), "KH")])
def test_empty_kernel_axis(no_xla, shape, letter):
    _raises(ValueError, re.escape(f"conv: kernel HWIO [KH, KW, I, O] has {letter}=0 (shape "
                                  f"{shape})"), convjax.conv, X, jnp.zeros(shape))


def test_bias_shape(no_xla):
    _raises(ValueError, re.escape("conv: bias must have shape [O]=(8,), one per channel of "
                                  "the result, got shape (3,)"),
            convjax.conv, X, K, jnp.zeros(3))


def test_conv_transpose_output_shape_inconsistent(no_xla):
    y = jnp.zeros((2, 14, 14, 8))
    msg = _raises(ValueError, re.escape("conv_transpose: output_shape H=30 is inconsistent "
                                        "with y: conv of H=30 with stride 2, padding 'SAME' "
                                        "gives H'=15, but y has H'=14"),
                  convjax.conv_transpose, y, K, stride=2, output_shape=(30, 28))
    assert "H sizes that give H'=14: [27, 28]" in msg
    _raises(ValueError, re.escape("output_shape (2, 28, 28, 5) (NHWC [N, H, W, C]) must have "
                                  "N=2 (y's batch) and C=3 (the kernel's I)"),
            convjax.conv_transpose, y, K, stride=2, output_shape=(2, 28, 28, 5))
    _raises(ValueError, "output_shape must have 2 spatial sizes",
            convjax.conv_transpose, y, K, stride=2, output_shape=(28,))
    _raises(TypeError, "output_shape must be a sequence of 2 spatial sizes .* as Python ints",
            convjax.conv_transpose, y, K, stride=2, output_shape=(28.7, 28))
    _raises(ValueError, re.escape("conv_transpose: bias must have shape [I]=(3,), one per "
                                  "channel of the result, got shape (8,)"),
            convjax.conv_transpose, y, K, jnp.zeros(8), stride=2)
    _raises(ValueError, re.escape("conv_transpose: kernel (the forward kernel) expects O=8 "
                                  "output channels but y has C=3 channels"),
            convjax.conv_transpose, jnp.zeros((2, 14, 14, 3)), K)


def test_errors_also_raised_under_jit_and_vmap():
    with pytest.raises(ValueError, match="kernel expects I=32 input channels"):
        jax.jit(convjax.conv)(X, jnp.zeros((3, 3, 32, 8)))
    with pytest.raises(ValueError, match="unbatched HWC input needs a batch axis"):
        # vmap strips the leading axis: the per-example call sees an HWC image.
        jax.vmap(lambda a: convjax.conv(a, K))(X)
    # And valid input passes through numpy arrays and python lists.
    assert convjax.conv(np.zeros((1, 3, 3, 3), np.float32), K).shape == (1, 3, 3, 8)
