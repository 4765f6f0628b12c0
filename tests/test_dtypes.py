"""Every op in float32, bfloat16 and float16: output dtype = input dtype, values close to
the float32 computation on the same (rounded) inputs.

Tolerance, relative to the output's scale: one output rounding plus float32 accumulation
means a few units in the last place of the half type: bfloat16 (8 mantissa bits,
eps 2^-7 = 0.0078) within 2e-2, float16 (11 bits, eps 2^-10 = 0.00098) within 3e-3,
float32 within 1e-6. XLA:CPU happens to accumulate half-precision sums in float32 either
way, so values cannot show the accumulation dtype here; the last test checks the traced
programs instead (``preferred_element_type=float32`` or an explicit cast to float32).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax
from convjax.functional import conv_grad

TOL = {jnp.float32: 1e-6, jnp.bfloat16: 2e-2, jnp.float16: 3e-3}

rng0 = np.random.default_rng(0)
X = rng0.normal(size=(2, 6, 6, 4)).astype(np.float32)
K = (rng0.normal(size=(3, 3, 4, 5)) / 6).astype(np.float32)
B = rng0.normal(size=(5,)).astype(np.float32)
DK = (rng0.normal(size=(3, 3, 1, 8)) / 3).astype(np.float32)
PK = (rng0.normal(size=(8, 5)) / 3).astype(np.float32)
W = (rng0.normal(size=(4, 3)) / 2).astype(np.float32)
BN_P = {"scale": np.array([1.0, 2.0, 0.5, 1.5], np.float32), "bias": np.zeros(4, np.float32)}
BN_S = {"mean": np.zeros(4, np.float32), "var": np.ones(4, np.float32)}

OPS = {
    "conv": lambda x, d: convjax.conv(x, d(K), d(B), stride=2),
    "pointwise": lambda x, d: convjax.pointwise(x, d(K[1, 1]), d(B)),
    "conv_transpose": lambda x, d: convjax.conv_transpose(x, d(K.transpose(0, 1, 3, 2)),
                                                          stride=2),
    "depthwise_conv": lambda x, d: convjax.depthwise_conv(x, d(DK)),
    "separable_conv": lambda x, d: convjax.separable_conv(x, d(DK), d(PK),
                                                          d(B)),
    "dense": lambda x, d: convjax.dense(convjax.flatten(x)[:, :4], d(W)),
    "dropout": lambda x, d: convjax.dropout(jax.random.key(0), x, 0.25, deterministic=False),
    "batch_norm": lambda x, d: convjax.batch_norm(BN_P, BN_S, x, training=True)[0],
    "max_pool": lambda x, d: convjax.max_pool(x, 3, 2, "SAME"),
    "avg_pool": lambda x, d: convjax.avg_pool(x, 3, 2, "SAME"),
    "global_avg_pool": lambda x, d: convjax.global_avg_pool(x),
    "global_max_pool": lambda x, d: convjax.global_max_pool(x),
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", list(OPS))
def test_dtype_grid(name, dtype):
    op = OPS[name]
    x = jnp.asarray(X, dtype)
    y = op(x, lambda a: jnp.asarray(a, dtype))
    assert y.dtype == dtype, (name, y.dtype)
    # The same inputs and parameters, rounded to `dtype`, computed in float32.
    rounded = lambda a: jnp.asarray(jnp.asarray(a, dtype), jnp.float32)  # noqa: E731
    want = np.asarray(op(rounded(X), rounded))
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=TOL[dtype],
                               atol=TOL[dtype] * scale, err_msg=name)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_ops_ask_xla_for_float32_accumulation(dtype):
    # XLA:CPU happens to accumulate half-precision convs in float32 either way, so the
    # values above cannot tell; the program must say it, for TPU and GPU.
    x = jnp.zeros((1, 4, 4, 4), dtype)
    programs = {
        "conv": jax.make_jaxpr(lambda a: convjax.conv(
            jnp.concatenate([a, a], -1), jnp.zeros((3, 3, 8, 2), dtype)))(x),
        "conv_transpose": jax.make_jaxpr(lambda a: convjax.conv_transpose(
            a, jnp.zeros((3, 3, 2, 4), dtype)))(x),
        "depthwise_conv": jax.make_jaxpr(lambda a: convjax.depthwise_conv(
            a, jnp.zeros((3, 3, 1, 4), dtype), method="grouped"))(x),
        "pointwise": jax.make_jaxpr(lambda a: convjax.pointwise(
            a, jnp.zeros((4, 2), dtype)))(x),
        "dense": jax.make_jaxpr(lambda a: convjax.dense(a, jnp.zeros((4, 2), dtype)))(x),
    }
    for name, jaxpr in programs.items():
        assert "preferred_element_type=float32" in str(jaxpr), name
    # The ops that sum by casting: the input is converted to float32 before the sum.
    cast = {
        "avg_pool": jax.make_jaxpr(lambda a: convjax.avg_pool(a, 2, 1, "SAME"))(x),
        "global_avg_pool": jax.make_jaxpr(convjax.global_avg_pool)(x),
        "batch_norm": jax.make_jaxpr(lambda a: convjax.batch_norm(
            BN_P, BN_S, a, training=True)[0])(x),
        "depthwise_conv[taps]": jax.make_jaxpr(lambda a: convjax.depthwise_conv(
            a, jnp.zeros((3, 3, 1, 4), dtype), method="taps"))(x),
        # Few input channels: the conv's forward value is summed tap by tap.
        "conv[taps]": jax.make_jaxpr(lambda a: conv_grad.forward(
            a, jnp.zeros((3, 3, 1, 2), dtype), (1, 1), ((1, 1), (1, 1)), (1, 1), 1))(x[..., :1]),
    }
    first_sum = {"avg_pool": "reduce_window_sum", "global_avg_pool": "reduce_sum",
                 "batch_norm": "reduce_sum", "depthwise_conv[taps]": "slice", "conv[taps]": "slice"}
    for name, jaxpr in cast.items():
        ops = [str(e.primitive) for e in jaxpr.jaxpr.eqns]
        dtypes = [getattr(e.params.get("new_dtype"), "name", None) for e in jaxpr.jaxpr.eqns]
        to_f32 = [i for i, (op, d) in enumerate(zip(ops, dtypes))
                  if op == "convert_element_type" and d == "float32"]
        assert to_f32 and first_sum[name] in ops, (name, ops)
        # The cast comes before the summation, not after it.
        assert to_f32[0] < ops.index(first_sum[name]), (name, ops)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", ["dense", "pointwise", "conv"])
def test_half_precision_gradients(name, dtype):
    # Mixed-precision training differentiates these ops in half precision: the gradient
    # products must take half-precision operands (a float32 cotangent would promote
    # them), accumulate in float32, and match float32 gradients of the rounded inputs.
    x = jnp.asarray(X[:, :4, :4], dtype)
    kernels = {"dense": W, "pointwise": K[1, 1], "conv": K}
    k, b = jnp.asarray(kernels[name], dtype), jnp.asarray(B[:kernels[name].shape[-1]], dtype)
    op = {"dense": lambda x, k, b: convjax.dense(x, k, b),
          "pointwise": lambda x, k, b: convjax.pointwise(x, k, b),
          "conv": lambda x, k, b: convjax.conv(x, k, b)}[name]
    cot = jnp.asarray(rng0.normal(size=op(x, k, b).shape), dtype)

    def loss(*args):
        return jnp.sum(op(*args).astype(jnp.float32) * cot.astype(jnp.float32))

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, k, b)
    want = jax.grad(loss, argnums=(0, 1, 2))(*(a.astype(jnp.float32) for a in (x, k, b)))
    for g, w, a in zip(grads, want, "xkb"):
        assert g.dtype == dtype, (a, g.dtype)
        scale = max(1.0, float(jnp.abs(w).max()))
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w), rtol=TOL[dtype],
                                   atol=TOL[dtype] * scale, err_msg=f"{name} d{a}")
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(x, k, b)
    products = [e for e in _equations(jaxpr.jaxpr)
                if str(e.primitive) in ("dot_general", "conv_general_dilated")]
    assert len(products) >= 3, (name, [str(e.primitive) for e in jaxpr.jaxpr.eqns])
    for e in products:  # forward, input gradient, kernel gradient
        assert [v.aval.dtype for v in e.invars] == [dtype, dtype], (name, e)
        assert e.params["preferred_element_type"] == jnp.float32, (name, e)


def _equations(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in it (custom VJPs, pjit)."""
    for e in jaxpr.eqns:
        yield e
        for v in e.params.values():
            for sub in (v if isinstance(v, (list, tuple)) else [v]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)
