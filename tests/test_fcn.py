"""convjax.fcn: the converted model equals the sliding window it replaces (VALID trunks),
at the training size, on larger inputs at stride = jump, and at stride 1 (shift and
stitch); SAME trunks convert and differ near the window borders; unconvertible models
are refused with the reason."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convjax import fcn as FC
from convjax import layers as Lyr
from convjax import models
from convjax.analysis import analyze_model

#: float32 round-off between a dense layer and the conv that replaces it (sums of up to
#: ~10^3 products in another order), on logits of order 1.
TOL = 2e-5


class Small(nn.Module):
    """A strided VALID trunk (jump 2 x 4 = 8 per axis) and a dense head with batch norm,
    dropout and activations between its dense layers."""

    @nn.compact
    def __call__(self, x, train=False):
        x = jax.nn.relu(Lyr.Conv(4, (3, 3), strides=2, padding="VALID")(x))
        x = Lyr.MaxPool((2, 2))(x)
        x = jax.nn.relu(Lyr.Conv(6, (2, 2), padding="VALID")(x))
        x = Lyr.Flatten()(x)
        x = jnp.tanh(Lyr.Dense(12)(x))
        x = Lyr.BatchNorm(use_running_average=not train)(x)
        x = Lyr.Dropout(0.5)(x, deterministic=not train)
        x = jax.nn.relu(Lyr.Dense(7)(x))
        return Lyr.Dense(3)(x)


class Small1D(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(Lyr.Conv(5, (3,), strides=2, padding="VALID")(x))
        return Lyr.Dense(4)(Lyr.Flatten()(x))


def _init(model, shape, seed=0):
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, *shape)))
    if "batch_stats" in variables:  # running statistics that are not the identity
        k1, k2 = jax.random.split(jax.random.key(seed + 1))
        stats = variables["batch_stats"]
        variables = {**variables, "batch_stats": jax.tree.map(
            lambda a: a, {p: {"mean": 0.1 * jax.random.normal(k1, s["mean"].shape),
                              "var": 0.5 + jax.random.uniform(k2, s["var"].shape)}
                          for p, s in stats.items()})}
    return variables


def _windows(model, variables, x, shape, stride):
    """Loop over the windows one by one: the oracle of the batched baseline."""
    h, w = shape[:2]
    apply = jax.jit(model.apply)
    rows = (x.shape[1] - h) // stride + 1
    cols = (x.shape[2] - w) // stride + 1
    return np.stack([np.stack([np.asarray(apply(
        variables, x[:, i * stride:i * stride + h, j * stride:j * stride + w]))
        for j in range(cols)], axis=1) for i in range(rows)], axis=1)


@pytest.mark.slow
def test_small_model_equals_the_windows_at_every_size_and_stride(rng):
    shape = (16, 14, 2)
    model = Small()
    variables = _init(model, shape)
    fcn, fv = FC.to_fully_convolutional(model, variables, shape)
    assert (fcn.window, fcn.jump, fcn.exact, fcn.head) == ((2, 2), (4, 4), True,
                                                            ("Dense_0", "Dense_1", "Dense_2"))
    # the first dense kernel [2*2*6, 12] is reshaped exactly (NHWC flatten order)
    p, q = variables["params"], fv["params"]
    assert q["Dense_0"]["kernel"].shape == (2, 2, 6, 12)
    np.testing.assert_array_equal(np.asarray(q["Dense_0"]["kernel"]).reshape(24, 12),
                                  p["Dense_0"]["kernel"])
    assert q["Dense_2"]["kernel"].shape == (1, 1, 7, 3)
    for path in ("Conv_0", "Conv_1", "BatchNorm_0"):
        assert q[path] is p[path] or jax.tree.all(jax.tree.map(np.array_equal, q[path], p[path]))
    assert fv["batch_stats"] is variables["batch_stats"]

    x = jnp.asarray(rng.normal(size=(3, *shape)), jnp.float32)
    y = jax.jit(model.apply)(variables, x)
    assert float(jnp.std(y)) > 0.05  # the comparisons below are not between constants
    z = jax.jit(fcn.apply)(fv, x)
    assert z.shape == (3, 1, 1, 3)  # never squeezed
    np.testing.assert_allclose(z[:, 0, 0], y, atol=TOL, rtol=0)
    # 27: the trunk leaves a row unread (that window is cut); 18: 3 rows of windows, fewer
    # than the jump, so shift and stitch runs only 3 of the 4 row shifts
    for size in [(27, 22), (18, 30), (19, 17)]:
        big = jnp.asarray(rng.normal(size=(2, *size, 2)), jnp.float32)
        z = jax.jit(fcn.apply)(fv, big)
        assert z.shape[1:3] == FC.output_positions(fcn, size) == (
            (size[0] - 16) // 4 + 1, (size[1] - 14) // 4 + 1)
        np.testing.assert_allclose(z, _windows(model, variables, big, shape, 4), atol=TOL,
                                   rtol=0)
        slide = FC.sliding_window_predict(model, variables, big, 1, input_shape=shape,
                                          batch_size=5)
        np.testing.assert_allclose(slide[:, ::4, ::4], z, atol=TOL, rtol=0)
        dense = FC.shift_and_stitch(fcn, fv, big)
        assert dense.shape == (2, size[0] - 15, size[1] - 13, 3)
        np.testing.assert_allclose(dense, slide, atol=TOL, rtol=0)
    np.testing.assert_allclose(slide, _windows(model, variables, big, shape, 1), atol=TOL,
                               rtol=0)
    one = FC.sliding_window_predict(model, variables, big[0], (2, 3), input_shape=shape)
    assert one.shape == ((19 - 16) // 2 + 1, (17 - 14) // 3 + 1, 3)
    np.testing.assert_allclose(one[1, 1], jax.jit(model.apply)(variables, big[:1, 2:18, 3:17])[0],
                               atol=TOL, rtol=0)


def test_train_mode_is_passed_on_to_the_model(rng):
    model = Small()
    variables = _init(model, (16, 14, 2))
    fcn, fv = FC.to_fully_convolutional(model, variables, (16, 14, 2))
    x = jnp.asarray(rng.normal(size=(2, 20, 30, 2)), jnp.float32)
    infer = jax.jit(fcn.apply)(fv, x)
    dropped, _ = jax.jit(lambda v, x, k: fcn.apply(v, x, train=True, rngs={"dropout": k},
                                                   mutable=["batch_stats"]))(
        fv, x, jax.random.key(1))
    assert dropped.shape == infer.shape and not np.allclose(dropped, infer)


def test_one_dimensional_model(rng):
    model = Small1D()
    variables = _init(model, (9, 2))
    fcn, fv = FC.to_fully_convolutional(model, variables, (9, 2))
    assert fv["params"]["Dense_0"]["kernel"].shape == (4, 5, 4) and fcn.jump == (2,)
    x = jnp.asarray(rng.normal(size=(1, 20, 2)), jnp.float32)
    slide = FC.sliding_window_predict(model, variables, x, 1, input_shape=(9, 2))
    np.testing.assert_allclose(FC.shift_and_stitch(fcn, fv, x), slide, atol=TOL, rtol=0)
    np.testing.assert_allclose(jax.jit(fcn.apply)(fv, x), slide[:, ::2], atol=TOL, rtol=0)
    # by hand: a window costs conv 4 x 3 x 2 x 5 + dense 20 x 4 = 200 MACs; on 20 pixels
    # the conv runs at 9 positions (270 MACs) and the head conv at 6 (480 MACs)
    assert FC.predicted_flops(fcn, (20, 2)) == {
        "windows": 6, "sliding_flops": 6 * 400, "fcn_flops": 2 * 750, "ratio": 1.6}
    # stride 1: 12 windows; 2 shifts, each a pass on 9 + 5 x 2 = 19 pixels (750 MACs)
    assert FC.predicted_flops(fcn, (20, 2), stride=1) == {
        "windows": 12, "sliding_flops": 12 * 400, "fcn_flops": 2 * 2 * 750, "ratio": 1.6}


#: The fixed models and the ConvNet blocks (max and average pooling, batch norm, dropout,
#: no hidden layer); the doctest and the script test cover plain-k3 ConvNets.
FAMILIES = ["tf-tutorial-valid", "flax-example-valid", "bottleneck-r4-k3-w8.16-bn-do0.5-valid",
            "stacked-n2-w4.8-h0-valid"]


@pytest.mark.slow
@pytest.mark.parametrize("model_id", FAMILIES)
def test_model_families_valid_twins_are_exact(model_id, rng):
    model = models.get(model_id)
    shape = (28, 28, 1)
    variables = _init(model, shape)
    fcn, fv = FC.to_fully_convolutional(model, variables, shape)
    assert fcn.exact and fcn.padded_layers == () and fcn.jump == (4, 4)
    # the table of the converted model: no flatten, the head as convs, same parameters
    a, b = analyze_model(model, shape), analyze_model(fcn, (36, 45, 1))
    assert b.total()["params"] == a.total()["params"]
    assert "flatten" not in [r.name for r in b.rows]
    assert [r.path for r in b.rows if r.name == "conv2d"][-len(fcn.head):] == list(fcn.head)
    x = jnp.asarray(rng.uniform(size=(2, 36, 45, 1)), jnp.float32)
    z = jax.jit(fcn.apply)(fv, x)
    assert z.shape == (2, *b.output_shape) == (2, 3, 5, 10)
    slide = FC.sliding_window_predict(model, variables, x, 1, input_shape=shape)
    assert float(jnp.std(slide)) > 1e-3
    np.testing.assert_allclose(z, slide[:, ::4, ::4], atol=1e-4, rtol=0)
    np.testing.assert_allclose(FC.shift_and_stitch(fcn, fv, x), slide, atol=1e-4, rtol=0)


def test_same_trunk_converts_and_differs_near_the_window_borders(rng):
    model = models.get("plain-k3-w8.16-h16")  # SAME padding
    variables = _init(model, (28, 28, 1))
    fcn, fv = FC.to_fully_convolutional(model, variables, (28, 28, 1))
    assert not fcn.exact and fcn.padded_layers == ("Conv_0", "Conv_1")
    assert fcn.window == (7, 7) and fcn.jump == (4, 4)
    x = jnp.asarray(rng.uniform(size=(2, 28, 28, 1)), jnp.float32)
    np.testing.assert_allclose(jax.jit(fcn.apply)(fv, x)[:, 0, 0], jax.jit(model.apply)(variables, x),
                               atol=TOL, rtol=0)  # the training size is still exact
    big = jnp.asarray(rng.uniform(size=(2, 28, 44, 1)), jnp.float32)
    z = jax.jit(fcn.apply)(fv, big)
    slide = FC.sliding_window_predict(model, variables, big, 4, input_shape=(28, 28, 1))
    assert z.shape == slide.shape == (2, 1, 5, 10)
    # each window's border saw zeros in the original and neighbouring pixels on the canvas
    assert float(jnp.max(jnp.abs(z - slide))) > 1e-3


class Patchify(nn.Module):
    """SAME convs whose kernel does not exceed their stride read no padding at the
    training size, but would pad (and shift) on sizes of another remainder."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(Lyr.Conv(4, (4, 4), strides=4, padding="SAME")(x))
        x = jax.nn.relu(Lyr.Conv(6, (2, 2), strides=2, padding="SAME")(x))
        return Lyr.Dense(3)(Lyr.Flatten()(x))


class SharedHead(nn.Module):
    """One head dense layer called twice (shared weights)."""

    @nn.compact
    def __call__(self, x):
        x = Lyr.Flatten()(jax.nn.relu(Lyr.Conv(6, (3, 3), padding="VALID")(x)))
        d = Lyr.Dense(6)
        return d(jax.nn.relu(d(x)))


class InlineMean(nn.Module):
    """A trunk that subtracts its mean over the positions: right at the training size,
    not on a canvas."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(Lyr.Conv(4, (3, 3), padding="VALID")(x))
        x = x - x.mean(axis=(1, 2), keepdims=True)
        return Lyr.Dense(3)(Lyr.Flatten()(x))


@pytest.mark.parametrize("model, shape, sizes", [
    (Patchify(), (32, 32, 1), [(35, 45), (41, 38)]),
    (SharedHead(), (3, 3, 1), [(7, 5)]),
])
@pytest.mark.slow
def test_same_padding_that_reads_nothing_and_shared_head_layers(model, shape, sizes, rng):
    variables = _init(model, shape)
    fcn, fv = FC.to_fully_convolutional(model, variables, shape)
    assert fcn.exact
    for size in sizes:
        x = jnp.asarray(rng.normal(size=(2, *size, shape[-1])), jnp.float32)
        slide = FC.sliding_window_predict(model, variables, x, 1, input_shape=shape)
        np.testing.assert_allclose(jax.jit(fcn.apply)(fv, x),
                                   slide[:, ::fcn.jump[0], ::fcn.jump[1]], atol=TOL, rtol=0)
        np.testing.assert_allclose(FC.shift_and_stitch(fcn, fv, x), slide, atol=TOL, rtol=0)


class GlobalThenDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Lyr.GlobalAvgPool()(Lyr.Conv(4, (3, 3))(x))
        return Lyr.Dense(3)(x)


class InlineScale(nn.Module):
    """A head that divides by the flattened length: invisible to the conversion."""

    @nn.compact
    def __call__(self, x):
        x = Lyr.Flatten()(Lyr.Conv(4, (3, 3), padding="VALID")(x))
        return Lyr.Dense(3)(x / x.shape[-1])


class FlaxDenseHead(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Lyr.Flatten()(Lyr.Conv(4, (3, 3), padding="VALID")(x))
        return nn.Dense(3)(x)


class Upsampling(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Lyr.ConvTranspose(2, (2, 2), strides=2)(x)
        return Lyr.Dense(3)(Lyr.Flatten()(x))


@pytest.mark.slow
def test_models_it_cannot_convert_are_refused_with_the_reason():
    shape = (8, 8, 1)

    def convert(model, variables=None, input_shape=shape):
        variables = variables or _init(model, shape)
        return FC.to_fully_convolutional(model, variables, input_shape)

    with pytest.raises(ValueError, match=r"already fully convolutional.*any input size"):
        head = models.get("plain-k3-w8.16-convhead-valid")
        convert(head, _init(head, (28, 28, 1)), (28, 28, 1))
    with pytest.raises(ValueError, match=r"already fully convolutional"):
        convert(GlobalThenDense())
    with pytest.raises(ValueError, match=r"does not reproduce the original's outputs"):
        convert(InlineScale())
    with pytest.raises(ValueError, match=r"differs from the windows it replaces.*mixes|"
                                         r"whole image"):
        convert(InlineMean(), input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"cannot read the model's layers.*flax.linen"):
        convert(FlaxDenseHead())
    with pytest.raises(ValueError, match=r"upsamples"):
        convert(Upsampling())
    small = Small()
    other = _init(small, (20, 14, 2))  # trained at another size
    with pytest.raises(ValueError, match=r"'Dense_0'\]\['kernel'\] has shape \[36, 12\].*"
                                         r"needs \[24, 12\]"):
        FC.to_fully_convolutional(small, other, (16, 14, 2))
    with pytest.raises(ValueError, match=r"input_shape must be .*\(H, W, C\)"):
        FC.to_fully_convolutional(small, other, (16, 0, 2))
    with pytest.raises(TypeError, match=r"variables must be the dict .*'params'"):
        FC.to_fully_convolutional(small, other["params"], (16, 14, 2))
    with pytest.raises(TypeError, match=r"flax.linen model.*NNX"):
        FC.to_fully_convolutional(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), other, (16, 14, 2))


def test_inputs_are_checked_before_tracing():
    model = Small()
    variables = _init(model, (16, 14, 2))
    fcn, fv = FC.to_fully_convolutional(model, variables, (16, 14, 2))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\] with C = 2 .* at least the "
                                         r"training size 16 x 14.*\[1, 12, 40, 2\]"):
        jax.jit(fcn.apply)(fv, jnp.zeros((1, 12, 40, 2)))
    with pytest.raises(ValueError, match=r"C = 2"):
        FC.shift_and_stitch(fcn, fv, jnp.zeros((1, 20, 40, 3)))
    with pytest.raises(TypeError, match=r"FullyConvolutional"):
        FC.shift_and_stitch(model, variables, jnp.zeros((1, 20, 40, 2)))
    with pytest.raises(ValueError, match=r"image must be \[N, H, W, C\].*C = 2"):
        FC.sliding_window_predict(model, variables, jnp.zeros((1, 20, 40, 1)), 1,
                                  input_shape=(16, 14, 2))
    with pytest.raises(ValueError, match=r"stride must be a positive int"):
        FC.sliding_window_predict(model, variables, jnp.zeros((1, 20, 40, 2)), 0,
                                  input_shape=(16, 14, 2))


@pytest.mark.slow
def test_variable_input_script_end_to_end(tmp_path):
    """Two tiny models (VALID and its SAME twin) trained on 1,000 digits, read 4 strips
    and 4 grids; the files and the exactness of the VALID model are checked."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import MNIST_DIR

    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST at {MNIST_DIR}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "vi"
    cmd = [sys.executable, "-m", "experiments.variable_input", f"--data_dir={MNIST_DIR}",
           "--quick", "--model=plain-k3-w8.16-h16-valid", "--train_examples=1000",
           "--canvases=4", f"--output_dir={out}"]
    p = subprocess.run(cmd, cwd=root, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    valid, same = doc["models"]
    assert (valid["model"], same["model"]) == ("plain-k3-w8.16-h16-valid", "plain-k3-w8.16-h16")
    assert valid["exact"] and not same["exact"] and valid["jump"] == [4, 4]
    for kind, canvas, one_pass, stride1 in [("strip", [28, 140], [1, 29], [1, 113]),
                                            ("grid", [84, 84], [15, 15], [57, 57])]:
        v, s = valid["canvases"][kind], same["canvases"][kind]
        assert (v["canvas"], v["one_pass_map"], v["stride1_map"]) == (canvas, one_pass,
                                                                     stride1)
        assert max(v["max_abs_diff_jump"], v["max_abs_diff_stride1"],
                   v["max_abs_diff_digits"]) <= 1e-4
        assert v["accuracy_fcn_map"] == v["accuracy_alone"] == v["accuracy_one_pass"]
        assert v["argmax_agreement_jump"] == 1.0 and s["max_abs_diff_jump"] > 1e-3
        t = v["timing"]
        assert set(t) == {"jump", "1"} and t["jump"]["flop_ratio"] > 1
        assert t["1"]["windows_per_canvas"] == stride1[0] * stride1[1]
        assert "timing" not in s  # only the VALID model is timed
    assert v["digits"] == 4 * 9
    text = (out / "summary.md").read_text()
    assert "VALID trunk: exact" in text and "Conv_0, Conv_1 read padding" in text
    assert (out / "canvas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "train" / "results.jsonl").is_file()
