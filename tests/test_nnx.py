"""convjax.nnx: parity with flax.nnx (values assigned both ways), modes, errors, training,
and the analysis tables on an NNX model."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from convjax import analysis as A
from convjax import data
from convjax import nnx as cnnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


def _x(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _assign(dst, src, names):
    for name in names:
        getattr(dst, name)[...] = getattr(src, name)[...]


def _both_ways(ours, theirs, x, names=("kernel", "bias")):
    present = [n for n in names if getattr(theirs, n, None) is not None]
    assert [n for n in names if getattr(ours, n, None) is not None] == present
    for n in present:
        assert getattr(ours, n)[...].shape == getattr(theirs, n)[...].shape, n
    _assign(ours, theirs, present)          # theirs -> ours
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=2e-5,
                               atol=2e-5)
    for n in present:  # ours -> theirs, with values neither had
        getattr(ours, n)[...] = getattr(ours, n)[...] * 0.5 + 0.1
    _assign(theirs, ours, present)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=2e-5,
                               atol=2e-5)


@pytest.mark.parametrize("args,kw,shape", [
    ((3, 8, (3, 3)), {}, (2, 9, 9, 3)),
    ((3, 8, (3, 3), 2), dict(padding="VALID"), (2, 9, 10, 3)),
    ((3, 8, (4, 3), (2, 1)), {}, (2, 9, 9, 3)),
    ((3, 8, (3, 3)), dict(kernel_dilation=2, padding=((1, 2), (0, 1))), (2, 9, 9, 3)),
    ((4, 8, (3, 3)), dict(feature_group_count=2, use_bias=False), (2, 8, 8, 4)),
    ((2, 5, (5,), 3), {}, (2, 20, 2)),
    ((2, 4, (2, 3, 3)), dict(padding="VALID"), (1, 4, 6, 6, 2)),
])
def test_conv_matches_flax_nnx_conv_both_ways(args, kw, shape):
    _both_ways(cnnx.Conv(*args, **kw, rngs=nnx.Rngs(0)),
               nnx.Conv(*args, **kw, rngs=nnx.Rngs(1)), _x(shape))


def test_dense_pointwise_depthwise_transpose_match_flax_nnx():
    x = _x((2, 8, 8, 4))
    _both_ways(cnnx.Dense(11, 7, rngs=nnx.Rngs(0)), nnx.Linear(11, 7, rngs=nnx.Rngs(1)),
               _x((3, 11)))
    _both_ways(cnnx.Pointwise(4, 6, rngs=nnx.Rngs(0)),
               nnx.Conv(4, 6, (1, 1), rngs=nnx.Rngs(1)), x)
    _both_ways(cnnx.DepthwiseConv(4, (3, 3), 2, depth_multiplier=2, rngs=nnx.Rngs(0)),
               nnx.Conv(4, 8, (3, 3), 2, feature_group_count=4, rngs=nnx.Rngs(1)), x)
    for pad, s in (("SAME", 2), ("VALID", 2), ("SAME", 1)):
        _both_ways(cnnx.ConvTranspose(4, 5, (3, 3), s, padding=pad, rngs=nnx.Rngs(0)),
                   nnx.ConvTranspose(4, 5, (3, 3), (s, s), padding=pad,
                                     transpose_kernel=True, rngs=nnx.Rngs(1)), x)


@pytest.mark.parametrize("use_running_average", [True, False])
def test_batch_norm_matches_flax_nnx(use_running_average):
    x = _x((4, 5, 5, 3)) * 3 + 1
    ours = cnnx.BatchNorm(3, momentum=0.9, use_running_average=use_running_average,
                          rngs=nnx.Rngs(0))
    theirs = nnx.BatchNorm(3, momentum=0.9, use_running_average=use_running_average,
                           rngs=nnx.Rngs(0))
    for m in (ours, theirs):
        m.scale[...] = jnp.arange(1.0, 4.0)
        m.bias[...] = jnp.array([0.5, -1.0, 2.0])
        m.mean[...] = jnp.array([0.1, 0.2, 0.3])
        m.var[...] = jnp.array([1.5, 2.0, 3.0])
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-4,
                               atol=1e-4)
    for name in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(getattr(ours, name)[...]),
                                   np.asarray(getattr(theirs, name)[...]), rtol=1e-5,
                                   atol=1e-6)
    moved = not np.allclose(np.asarray(ours.mean[...]), [0.1, 0.2, 0.3])
    assert moved == (not use_running_average)


def test_dropout_matches_flax_nnx_and_follows_train_eval():
    x = jnp.ones((64, 64))
    ours = cnnx.Dropout(0.3, rngs=nnx.Rngs(dropout=7))
    theirs = nnx.Dropout(0.3, rngs=nnx.Rngs(dropout=7))
    np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(theirs(x)))
    key = jax.random.key(3)
    np.testing.assert_array_equal(np.asarray(ours(x, rngs=key)),
                                  np.asarray(theirs(x, rngs=key)))

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.drop = cnnx.Dropout(0.5, rngs=rngs)
            self.bn = cnnx.BatchNorm(64, rngs=rngs)

    block = Block(nnx.Rngs(0))
    block.eval()
    assert block.drop.deterministic and block.bn.use_running_average
    assert (block.drop(x) == x).all()
    block.train()
    assert not block.drop.deterministic and not block.bn.use_running_average
    with pytest.raises(ValueError, match="needs a key"):
        cnnx.Dropout(0.5)(x)


def test_errors_are_the_functional_ones():
    conv = cnnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"kernel expects I=3 input channels but x has C=28 "
                                         r"channels .* looks channels-first \(NCHW, as in "
                                         r"PyTorch\): convert it with "
                                         r"convjax.layout.nchw_to_nhwc\(x\)"):
        conv(jnp.ones((2, 3, 28, 28)))
    with pytest.raises(ValueError, match="must both be divisible by feature_group_count=2"):
        cnnx.Conv(3, 8, (3, 3), feature_group_count=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dense: kernel .* expects D_in=5"):
        cnnx.Dense(5, 2, rngs=nnx.Rngs(0))(jnp.ones((1, 6)))


def _readme_namespace():
    """Run the README's NNX example and return its globals (SmallCNN, model)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Flax NNX layers")[1].split("```python\n")[1].split("\n```")[0]
    namespace = {}
    exec(compile(block, "README.md NNX example", "exec"), namespace)
    return namespace


SmallCNN = _readme_namespace()["SmallCNN"]


def test_analysis_tables_on_an_nnx_model():
    model = SmallCNN(rngs=nnx.Rngs(0))
    a = A.analyze_model(model, (28, 28, 1))
    assert [r.path for r in a.rows] == ["conv1", "pool", "conv2", "pool", "flatten",
                                        "dropout", "fc"]
    params = nnx.state(model, nnx.Param)
    assert a.total()["params"] == sum(p.size for p in jax.tree.leaves(params))
    spec = A.analyze("conv2d(16, 3, padding=same); maxpool2d(2); conv2d(32, 3, padding=same);"
                     " maxpool2d(2); flatten; dropout(0.25); dense(10)", (28, 28, 1))
    for key in ("params", "macs", "kernel_slices", "activation_bytes"):
        assert a.total()[key] == spec.total()[key], key
    assert a.rows[-1].receptive_field == spec.rows[-1].receptive_field
    assert not model.dropout.deterministic  # the analysis ran on a copy in eval mode
    r = A.xla_flops(model, (28, 28, 1), batch=2)
    assert abs(r.ratio - 1) < 0.1


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST not found at {MNIST_DIR}")
def test_a_small_nnx_cnn_learns_on_mnist():
    train = data.load("mnist", "train", data_dir=MNIST_DIR, dtype="float32")
    x, y = train.images[:512], train.labels[:512]
    model = SmallCNN(rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    def loss_fn(model, x, y):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        optimizer.update(model, grads)
        return loss

    model.eval()
    before = float(loss_fn(model, x, y))
    model.train()
    for epoch in range(3):
        for i in range(0, 512, 64):
            step(model, optimizer, x[i:i + 64], y[i:i + 64])
    model.eval()
    after = float(loss_fn(model, x, y))
    assert after < 0.6 * before, (before, after)


def test_shared_and_foreign_layers_in_nnx_tables():
    class Shared(nnx.Module):
        def __init__(self, rngs):
            self.conv = cnnx.Conv(4, 4, (3, 3), rngs=rngs)

        def __call__(self, x):
            return self.conv(jax.nn.relu(self.conv(x)))

    a = A.analyze_model(Shared(nnx.Rngs(0)), (8, 8, 4))
    assert [r.params for r in a.rows] == [148, 0] and a.rows[1].macs == a.rows[0].macs

    class Mixed(nnx.Module):
        def __init__(self, rngs):
            self.ours = cnnx.Conv(1, 8, (3, 3), rngs=rngs)
            self.theirs = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.theirs(self.ours(x))

    with pytest.raises(ValueError, match="27 are in modules the analysis cannot see"):
        A.analyze_model(Mixed(nnx.Rngs(0)), (8, 8, 1))
