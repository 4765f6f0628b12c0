"""The hand-written conv VJP equals JAX's autodiff of lax.conv_general_dilated."""

import itertools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import convjax


def _grads(backward, x, k, b, **kw):
    def loss(x, k, b):
        y = convjax.conv(x, k, b, backward=backward, **kw)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)
    return jax.grad(loss, argnums=(0, 1, 2))(x, k, b)


def _check(rng, rank, ksize, stride, dilation, groups, padding, size=7, batch=2):
    c, o = 2 * groups, 3 * groups
    x = jnp.asarray(rng.normal(size=(batch, *([size] * rank), c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*([ksize] * rank), c // groups, o)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(o,)), jnp.float32)
    kw = dict(stride=stride, dilation=dilation, groups=groups, padding=padding)
    ours = _grads("canonical", x, k, b, **kw)
    stock = _grads("lax", x, k, b, **kw)
    for name, a, s in zip(("dx", "dk", "db"), ours, stock):
        scale = float(jnp.abs(s).max()) or 1.0
        np.testing.assert_allclose(np.asarray(a), np.asarray(s), rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=f"{name} {rank}D {kw}")


PAD2 = [(1, 2), (0, 1), (2, 0)]


@pytest.mark.parametrize("ksize,stride,dilation,groups,padding", list(itertools.product(
    [2, 3], [1, 2, 3], [1, 2], [1, 2], ["SAME", "VALID", "CIRCULAR", "pairs"])))
@pytest.mark.slow
def test_2d_grid_matches_stock_autodiff(rng, ksize, stride, dilation, groups, padding):
    _check(rng, 2, ksize, stride, dilation, groups, PAD2[:2] if padding == "pairs" else padding)


@pytest.mark.parametrize("rank,ksize,stride,dilation,groups,padding", [
    (1, 3, 2, 1, 1, "SAME"), (1, 4, 3, 2, 2, "VALID"), (1, 2, 1, 1, 1, "CIRCULAR"),
    (1, 3, 2, 2, 1, [(3, 1)]), (3, 3, 2, 1, 1, "SAME"), (3, 2, 1, 2, 2, "VALID"),
    (3, 3, 1, 1, 1, "CIRCULAR"), (3, 2, 3, 1, 1, [(1, 0), (0, 2), (1, 1)]),
])
@pytest.mark.slow
def test_1d_3d_match_stock_autodiff(rng, rank, ksize, stride, dilation, groups, padding):
    _check(rng, rank, ksize, stride, dilation, groups, padding, size=7 if rank == 1 else 5)


def test_large_explicit_padding_and_depthwise(rng):
    _check(rng, 2, 3, 2, 1, 1, [(4, 0), (0, 5)])  # padding wider than the kernel
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 1, 8)), jnp.float32)
    g = {b: jax.grad(lambda x, k: jnp.sum(jnp.sin(convjax.depthwise_conv(
        x, k, method="grouped", backward=b))), argnums=(0, 1))(x, k) for b in ("canonical", "lax")}
    for a, s in zip(g["canonical"], g["lax"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(s), rtol=1e-4, atol=1e-4)


def test_inside_scan_and_under_vmap(rng):
    xs = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 6)), jnp.float32)

    def epoch(backward):
        def step(k, x):
            g = jax.grad(lambda k: jnp.sum(jnp.sin(convjax.conv(
                x, k, stride=2, groups=2, backward=backward))))(k)
            return k - 0.1 * g, g.sum()
        return jax.jit(lambda k: lax.scan(step, k, xs))(k)

    (k1, s1), (k2, s2) = epoch("canonical"), epoch("lax")
    np.testing.assert_allclose(np.asarray(k1), np.asarray(k2), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(s1), np.asarray(s2), rtol=1e-4, atol=1e-4)
    # vmap over a batch of kernels (e.g. several seeds) and over examples.
    ks = jnp.stack([k, -k, 2 * k])
    per = {b: jax.vmap(lambda kk: jax.grad(lambda kk, x: jnp.sum(convjax.conv(
        x, kk, groups=2, backward=b) ** 2), argnums=(0, 1))(kk, xs[0]))(ks)
        for b in ("canonical", "lax")}
    for a, s in zip(per["canonical"], per["lax"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(s), rtol=1e-4, atol=1e-3)


def test_half_precision_gradients_keep_dtypes(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)), jnp.bfloat16)
    k = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.bfloat16)
    g = {b: jax.grad(lambda x, k: convjax.conv(x, k, stride=2, backward=b).astype(
        jnp.float32).sum(), argnums=(0, 1))(x, k) for b in ("canonical", "lax")}
    for a, s in zip(g["canonical"], g["lax"]):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(s, np.float32),
                                   rtol=2e-2, atol=5e-2)


def test_backward_is_made_of_canonical_convs_only():
    # Every conv in the gradient program is NHWC/HWIO -> NHWC with no kernel reversal:
    # what XLA:CPU needs for its fast path inside loops.
    x = jnp.zeros((2, 8, 8, 4))
    k = jnp.zeros((3, 3, 2, 6))
    jaxpr = jax.make_jaxpr(jax.grad(lambda x, k: convjax.conv(
        x, k, stride=2, dilation=2, groups=2).sum(), argnums=(0, 1)))(x, k)
    stack = list(jaxpr.jaxpr.eqns)
    convs = []
    while stack:
        e = stack.pop()
        if e.primitive.name == "conv_general_dilated":
            convs.append(e)
        for p in e.params.values():
            for j in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(j, "jaxpr", None)
                if inner is not None:
                    stack.extend(getattr(inner, "eqns", []) or getattr(
                        getattr(inner, "jaxpr", None), "eqns", []))
    # forward, input gradient (one grouped conv), kernel gradient (one conv per group:
    # XLA:CPU has no fast path for batch_group_count when 1 < groups < C)
    assert len(convs) == 1 + 1 + 2
    canonical = convjax.layout.dimension_numbers(2)
    for e in convs:
        assert e.params["dimension_numbers"] == canonical, e.params["dimension_numbers"]
    stock = jax.make_jaxpr(jax.grad(lambda x, k: convjax.conv(
        x, k, stride=2, dilation=2, groups=2, backward="lax").sum(), argnums=(0, 1)))(x, k)
    dns = [e.params["dimension_numbers"] for e in stock.jaxpr.eqns
           if e.primitive.name == "conv_general_dilated"]
    assert any(d != canonical for d in dns)  # what the canonical VJP avoids


@pytest.mark.slow
def test_forward_mode_needs_backward_lax(rng):
    x = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.float32)
    # Forward mode on the primal conv is what a custom_vjp cannot do (JAX's own error).
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff \\(jvp\\) to a "
                                        "custom_vjp function"):
        jax.jvp(lambda x: convjax.conv(x, k), (x,), (x,))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(lambda x: convjax.conv(x, k))(x)
    # backward="lax" supports jvp, jacfwd and hessian; they agree with reverse mode.
    y, t = jax.jvp(lambda x: convjax.conv(x, k, backward="lax"), (x,), (x,))
    np.testing.assert_allclose(np.asarray(t), np.asarray(y), rtol=1e-5, atol=1e-5)  # linear
    f = lambda k: jnp.sum(jnp.sin(convjax.conv(x, k, backward="lax")))  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.jacfwd(f)(k)), np.asarray(jax.grad(f)(k)),
                               rtol=1e-5, atol=1e-5)
    h = jax.hessian(f)(k)
    assert h.shape == k.shape * 2
    # jax.hessian is forward-over-reverse: the reverse pass is the canonical VJP, made of
    # plain convs that forward mode can differentiate, so it works on the default too.
    g0 = lambda k: jnp.sum(jnp.sin(convjax.conv(x, k)))  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.hessian(g0)(k)), np.asarray(h), rtol=1e-4,
                               atol=1e-4)
    g = lambda k: jnp.sum(jnp.sin(convjax.conv(x, k)))  # noqa: E731
    h_rev = jax.jacrev(jax.grad(g))(k)  # reverse-over-reverse with the canonical VJP
    np.testing.assert_allclose(np.asarray(h_rev), np.asarray(h), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="backward must be 'canonical' .* or 'lax'"):
        convjax.conv(x, k, backward="fast")


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU log check")
def test_no_unoptimized_convolution_fallback_in_scan(tmp_path):
    # XLA:CPU logs "Falling back to unoptimized convolution" (thunk_emitter, VLOG 2) for
    # each conv it cannot run on its fast path. A training step in lax.scan with the
    # canonical VJP must log none; the stock autodiff logs some (which shows the check
    # can fail).
    script = tmp_path / "scan.py"
    script.write_text(
        "import sys, jax, jax.numpy as jnp\n"
        "import convjax\n"
        "backward = sys.argv[1]\n"
        "xs = jnp.ones((2, 4, 8, 8, 3)); k = jnp.ones((3, 3, 3, 4))\n"
        "def step(k, x):\n"
        "    g = jax.grad(lambda k: convjax.conv(x, k, stride=2, backward=backward).sum())(k)\n"
        "    return k - g, None\n"
        "jax.block_until_ready(jax.jit(lambda k: jax.lax.scan(step, k, xs))(k))\n")
    env = dict(os.environ, TF_CPP_VMODULE="thunk_emitter=2", TF_CPP_MIN_LOG_LEVEL="0",
               JAX_PLATFORMS="cpu")
    logs = {}
    for backward in ("canonical", "lax"):
        out = subprocess.run([sys.executable, str(script), backward], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        logs[backward] = out.stderr.count("Falling back to unoptimized convolution")
    if logs["lax"] == 0:
        pytest.skip("this XLA build does not log the fallback; nothing to compare")
    assert logs["canonical"] == 0, logs


@pytest.mark.parametrize("c,o,padding,stride", [
    (1, 4, [(1, 2), (2, 0)], 1), (3, 4, [(4, 0), (0, 5)], 2), (1, 2, [(3, 3), (0, 4)], 3)])
@pytest.mark.slow
def test_padding_wider_than_the_kernel_matches_numpy(rng, c, o, padding, stride):
    # The adjoint then needs negative padding (a crop). XLA:CPU computes a conv with
    # negative padding wrongly when it has two or more input features (jax 0.10.2; the
    # input-gradient conv has O of them, and JAX's stock autodiff of the first case is
    # off by O(1) here), so conv_grad crops with lax.pad instead. Checked against the
    # NumPy scatter loop, not against stock.
    from tests import numpy_reference as ref

    x = rng.normal(size=(2, 7, 6, c)).astype(np.float32)
    k = rng.normal(size=(2, 3, c, o)).astype(np.float32)
    y = ref.conv(x, k, stride=[stride] * 2, padding=padding, dilation=[1, 1])
    g = rng.normal(size=y.shape).astype(np.float32)
    want_x = ref.conv_transpose(g, k, stride=[stride] * 2, padding=padding,
                                dilation=[1, 1], in_spatial=(7, 6))
    gx = jax.grad(lambda a: jnp.sum(convjax.conv(a, k, stride=stride, padding=padding) * g))(x)
    np.testing.assert_allclose(np.asarray(gx), want_x, rtol=1e-4, atol=1e-4)
    ct = convjax.conv_transpose(g, k, stride=stride, padding=padding, output_shape=(7, 6))
    np.testing.assert_allclose(np.asarray(ct), want_x, rtol=1e-4, atol=1e-4)
    # Kernel gradient: sum over batch and positions of input window times dy.
    gk = jax.grad(lambda w: jnp.sum(convjax.conv(x, w, stride=stride, padding=padding) * g))(k)
    eps = 1e-3
    e = np.zeros_like(k)
    e[1, 2, 0, o - 1] = eps
    fd = (ref.conv(x, k + e, stride=[stride] * 2, padding=padding, dilation=[1, 1])
          - ref.conv(x, k - e, stride=[stride] * 2, padding=padding, dilation=[1, 1]))
    assert abs(float(np.sum(fd * g)) / (2 * eps) - float(gk[1, 2, 0, o - 1])) < 1e-2


@pytest.mark.parametrize("rank,ksize,c,stride,dilation,pairs", [
    (2, 3, 1, 1, 1, ((1, 1), (1, 1))), (2, 5, 3, 2, 1, ((2, 1), (0, 3))),
    (2, 3, 4, 1, 2, ((-1, 2), (2, -1))), (1, 7, 1, 3, 1, ((3, 3),)),
    (3, 3, 1, 2, 1, ((1, 1), (0, 0), (1, 0))),
])
@pytest.mark.slow
def test_tap_conv_equals_lax_conv(rng, rank, ksize, c, stride, dilation, pairs):
    from convjax.functional import conv_grad as G
    x = jnp.asarray(rng.normal(size=(2, *([9] * rank), c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*([ksize] * rank), c, 5)), jnp.float32)
    args = ((stride,) * rank, pairs, (dilation,) * rank)
    want = G.lax_conv(x, k, *args, 1)
    got = G.tap_conv(x, k, *args)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # The custom-VJP conv takes the tap path exactly when the rule says so, with the
    # same value either way.
    taps = c <= G.TAP_MAX_CHANNELS and c * ksize ** rank <= G.TAP_MAX_TERMS
    jaxpr = str(jax.make_jaxpr(lambda x, k: G.forward(x, k, *args, 1))(x, k))
    assert ("conv_general_dilated" not in jaxpr) == taps
    np.testing.assert_allclose(np.asarray(G.conv_general(x, k, *args, 1)), np.asarray(want),
                               rtol=1e-5, atol=1e-5)


def test_tap_rule_small_first_layers_only():
    from convjax.functional import conv_grad as G
    def uses_taps(window, c, groups=1):
        r = len(window)
        x = jnp.zeros((1, *([9] * r), c))
        k = jnp.zeros((*window, c // groups, 4 * groups))
        jaxpr = jax.make_jaxpr(lambda x, k: G.forward(x, k, (1,) * r, ((0, 0),) * r,
                                                      (1,) * r, groups))(x, k)
        return "conv_general_dilated" not in str(jaxpr)
    assert uses_taps((3, 3), 1) and uses_taps((7, 7), 1) and uses_taps((5,), 1)
    assert not uses_taps((3, 3), 3)      # more channels: no gain, or a loss
    assert not uses_taps((9, 9), 1)      # 81 products per output
    assert not uses_taps((3, 3), 4, groups=4)
