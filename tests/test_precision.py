"""Mixed precision (``TrainConfig.compute_dtype="bfloat16"``) and recompilation: the
TPU-facing paths of the training engine, checked on CPU.

What a TPU would punish is checked in the compiled programs themselves: every conv and
matmul of the training step (forward and backward) takes bfloat16 operands and
accumulates in float32, nothing is float64, the state stays float32, and a run compiles
its epoch once however many epochs it trains.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax import models
from convjax import train as T
from tests.conftest import mnist_slices

# Batch norm, dropout, 1x1 (pointwise), 3x3 convs with C > 1 and dense layers.
MODEL = "bottleneck-r4-k3-w8.16-bn-do0.5-h32"
OP = re.compile(r"stablehlo\.(convolution|dot_general).*: \(tensor<([^>]*)>, "
                r"tensor<([^>]*)>\) -> tensor<([^>]*)>")


@pytest.fixture(scope="module")
def mnist():
    return mnist_slices(2048, 500)


def _element(tensor_type: str) -> str:
    return tensor_type.rsplit("x", 1)[-1]


def _programs(compute_dtype):
    """The StableHLO text of one seed's training epoch and evaluation, and the epoch's
    abstract output state."""
    model = models.get(MODEL)
    config = T.TrainConfig(model=MODEL, compute_dtype=compute_dtype)
    tx = T.make_optimizer(config, 4)
    state = jax.eval_shape(jax.vmap(lambda k: T.create_state(model, tx, k, (28, 28, 1))),
                           jax.random.split(jax.random.key(0), 1))
    keys = jax.random.split(jax.random.key(1), 1)
    images = jax.ShapeDtypeStruct((64, 28, 28, 1), jnp.uint8)
    labels = jax.ShapeDtypeStruct((64,), jnp.int32)
    epoch = T.train_epoch_fn(model, tx, 16, 64, compute_dtype=config.compute_dtype)
    evaluate = T.evaluate_fn(model, 32, 64, compute_dtype=config.compute_dtype)
    one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), state)
    return (jax.jit(epoch).lower(state, keys, images, labels).as_text(),
            jax.jit(evaluate).lower(one.params, one.batch_stats, images, labels).as_text(),
            state, jax.eval_shape(epoch, state, keys, images, labels)[0])


@pytest.mark.parametrize("compute_dtype,operand", [("bfloat16", "bf16"),
                                                   ("float32", "f32")])
def test_every_conv_and_matmul_runs_in_the_compute_dtype(compute_dtype, operand):
    train_text, eval_text, state, new_state = _programs(compute_dtype)
    for name, text, least in (("train", train_text, 12), ("eval", eval_text, 4)):
        ops = OP.findall(text)
        # forward: 4 pointwise + 2 convs (the first, C=1, is summed tap by tap) + 2 dense;
        # training adds their input and kernel gradients
        assert len(ops) >= least, (name, len(ops))
        # the pattern read every conv and matmul of the program (none skipped unread)
        assert len(ops) == text.count("stablehlo.convolution") + \
            text.count("stablehlo.dot_general"), name
        for kind, lhs, rhs, out in ops:
            assert (_element(lhs), _element(rhs)) == (operand, operand), (name, kind, lhs,
                                                                         rhs)
            assert _element(out) == "f32", (name, kind, out)  # float32 accumulation
        assert "f64" not in text, name
        assert "callback" not in text, name  # no host round-trip inside the loop
    # params, batch statistics and optimizer state: float32 in and out of the epoch
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
        assert before.dtype == after.dtype
        assert after.dtype in (jnp.float32, jnp.int32), after.dtype


def test_the_progress_callback_is_the_only_host_round_trip():
    # The check above can fail: with an in-epoch progress report (one device, a few
    # times per epoch) the program holds a host callback, and without it none.
    model = models.get("plain-k3-w8-h32")
    tx = T.make_optimizer(T.TrainConfig(), 4)
    state = jax.eval_shape(jax.vmap(lambda k: T.create_state(model, tx, k, (28, 28, 1))),
                           jax.random.split(jax.random.key(0), 1))
    args = (state, jax.random.split(jax.random.key(1), 1),
            jax.ShapeDtypeStruct((64, 28, 28, 1), jnp.uint8),
            jax.ShapeDtypeStruct((64,), jnp.int32))
    texts = [jax.jit(T.train_epoch_fn(model, tx, 16, 64, **kw)).lower(*args).as_text()
             for kw in ({}, {"report": lambda *a: None, "report_every": 2})]
    assert "callback" not in texts[0] and "callback" in texts[1]


@pytest.mark.slow
def test_bfloat16_training_is_close_to_float32(mnist):
    runs = {}
    for dtype in T.COMPUTE_DTYPES:
        config = T.TrainConfig(model="plain-k3-w8-bn-h32", epochs=2, batch_size=64,
                               optimizer="adam", learning_rate=3e-3, compute_dtype=dtype)
        runs[dtype] = T.train_and_evaluate(config, train_split=mnist[0],
                                           test_split=mnist[1], progress=None)
    f32, bf16 = runs["float32"], runs["bfloat16"]
    for leaf in jax.tree.leaves(bf16.state):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert bf16.summary["config"]["compute_dtype"] == "bfloat16"
    # bfloat16 really ran (not bit-identical to float32), and learned as much
    assert bf16.epochs[-1]["train_loss"] != f32.epochs[-1]["train_loss"]
    acc32, acc16 = f32.epochs[-1]["test_accuracy"], bf16.epochs[-1]["test_accuracy"]
    assert acc32 > 0.85, acc32
    assert abs(acc16 - acc32) < 0.03, (acc16, acc32)
    assert abs(bf16.epochs[-1]["train_loss"] - f32.epochs[-1]["train_loss"]) < 0.1


def test_bad_compute_dtype():
    with pytest.raises(ValueError, match=r"compute_dtype must be one of \('float32', "
                                         r"'bfloat16'\), got 'float16'"):
        T.TrainConfig(compute_dtype="float16")


@pytest.mark.slow
def test_compilations_do_not_grow_with_epochs(mnist):
    def compilations(epochs):
        jax.clear_caches()
        config = T.TrainConfig(model="plain-k3-w8-h32", epochs=epochs, batch_size=64,
                               train_examples=512)
        with T.count_compilations() as counts:
            T.train_and_evaluate(config, train_split=mnist[0], test_split=mnist[1],
                                 progress=None)
        return counts

    one, three = compilations(1), compilations(3)
    assert one == three, (one, three)
    assert three["jit(epoch_fn)"] == 1
    assert three["jit(looped)"] == 1  # the test evaluation (seeds looped on CPU)


def test_count_compilations_counts_shapes():
    f = jax.jit(lambda x: x * 2)
    with T.count_compilations() as counts:
        for n in (3, 3, 4, 3, 4):
            f(np.ones(n, np.float32))
    assert counts["jit(<lambda>)"] == 2
    with T.count_compilations() as counts:
        f(np.ones(3, np.float32))  # cached: nothing compiles
    assert counts["jit(<lambda>)"] == 0
