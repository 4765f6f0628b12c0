"""convjax.analysis: exact tables checked against numbers computed by hand in this file,
against Flax's own layers, against brute-force tap counts, and against XLA."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax
from convjax import analysis as A
from convjax.analysis import render

TF_TUTORIAL = ("conv2d(32, 5, padding=same, activation=relu); maxpool2d(2); "
               "conv2d(64, 5, padding=same, activation=relu); maxpool2d(2); flatten; "
               "dense(1024, activation=relu); dense(10)")


def test_conv2d_32_3x3_on_rgb_by_hand():
    (r,) = A.analyze("conv2d(32, 3, padding=same)", (64, 64, 3)).rows
    assert r.output_shape == (64, 64, 32)
    assert (r.filters, r.filter_shape, r.kernel_slices) == (32, "3x3x3", 96)
    assert (r.weights, r.biases, r.params) == (864, 32, 896)
    assert r.macs == 64 * 64 * 32 * 27 == 3_538_944 and r.flops == 7_077_888
    assert r.receptive_field == (3, 3) and r.jump == (1, 1)
    assert (r.activation_elements, r.activation_bytes) == (131_072, 524_288)
    assert r.param_shapes == {"kernel": (3, 3, 3, 32), "bias": (32,)}
    assert "32 filters of 3x3x3" in r.sentence and "864 weights + 32 biases" in r.sentence


def test_pointwise_32_to_8_by_hand():
    (r,) = A.analyze("conv2d(8, 1)", (64, 64, 32)).rows
    assert r.output_shape == (64, 64, 8)
    assert (r.filters, r.filter_shape, r.kernel_slices, r.weights, r.biases) == (
        8, "1x1x32", 256, 256, 8)
    assert r.macs == 64 * 64 * 8 * 32 and r.macs_on_padding == 0
    assert r.receptive_field == (1, 1)
    assert r.sentence == (
        "layer 1: 8 filters of 1x1x32: each output pixel is a weighted sum of the 32 input "
        "values at the same position (a learned projection of each pixel's 32-vector onto 8 "
        "dimensions); 256 weights + 8 biases")


def test_conv3d_on_a_volume_by_hand():
    (r,) = A.analyze("conv3d(32, 3, padding=same)", (1, 64, 64, 3)).rows
    assert r.output_shape == (1, 64, 64, 32)
    # each 3x3x3x3 filter is KD * C = 9 planes of 3x3
    assert (r.filters, r.filter_shape, r.kernel_slices) == (32, "3x3x3x3", 32 * 3 * 3)
    assert (r.weights, r.biases) == (3 * 3 * 3 * 3 * 32, 32) == (2592, 32)
    assert r.macs == 1 * 64 * 64 * 32 * 27 * 3
    # depth 1 with SAME padding: only the middle of the 3 depth taps is on real data;
    # in H and W, 190 of the 3 * 64 taps per axis are in bounds
    assert r.macs - r.macs_on_padding == 1 * 190 * 190 * 3 * 32
    assert "Note: 67% of these MACs multiply zero padding (a window of 3x3x3 on a 1x64x64 " \
        "map)" in r.sentence


def test_tf_tutorial_network_by_hand():
    a = A.analyze(TF_TUTORIAL, (28, 28, 1))
    out = [r.output_shape for r in a.rows]
    assert out == [(28, 28, 32), (14, 14, 32), (14, 14, 64), (7, 7, 64), (3136,), (1024,),
                   (10,)]
    params = [r.params for r in a.rows]
    assert params == [5 * 5 * 1 * 32 + 32, 0, 5 * 5 * 32 * 64 + 64, 0, 0,
                      3136 * 1024 + 1024, 1024 * 10 + 10]
    assert sum(params) == 3_274_634 == a.total()["params"]
    macs = [r.macs for r in a.rows]
    assert macs == [28 * 28 * 32 * 25, 0, 14 * 14 * 64 * 25 * 32, 0, 0, 3136 * 1024,
                    1024 * 10]
    assert a.total()["flops"] == 2 * sum(macs) == 27_767_808
    assert [r.kernel_slices for r in a.rows][:3] == [32, 0, 64 * 32]
    assert [r.receptive_field[0] for r in a.rows] == [5, 6, 14, 16, 16, 40, 40]
    assert [r.jump[0] for r in a.rows] == [1, 2, 2, 4, 4, 4, 4]
    dense = a.rows[5]
    assert dense.input_size_dependent and dense.flattened_map == (7, 7, 64)
    assert not a.rows[6].input_size_dependent
    assert "kernel [3136, 1024] holds the input size fixed" in dense.sentence


def test_two_input_channels_by_hand():
    # a BER matrix and a line-rate matrix of the same size, stacked as C=2
    a = A.analyze("conv2d(16, 3, padding=same, activation=relu); globalavgpool; dense(1)",
                  (32, 32, 2))
    r = a.rows[0]
    assert (r.filter_shape, r.kernel_slices, r.weights) == ("3x3x2", 32, 288)
    assert a.rows[1].output_shape == (16,)
    assert a.rows[2].params == 17 and not a.rows[2].input_size_dependent
    assert a.rows[1].receptive_field == (3 + 31, 3 + 31)


@pytest.mark.parametrize("spec,shape,expect", [
    # (weights, biases, non_trainable), Keras' counts for the same layers
    ("separable2d(64, 3)", (28, 28, 32), (3 * 3 * 32 + 32 * 64, 64, 0)),
    ("separable2d(64, 3, depth_multiplier=2, use_bias=false)", (28, 28, 32),
     (3 * 3 * 64 + 64 * 64, 0, 0)),
    ("depthwise2d(3)", (28, 28, 32), (288, 32, 0)),
    ("depthwise2d(3, depth_multiplier=3)", (28, 28, 8), (3 * 3 * 24, 24, 0)),
    ("conv2d_transpose(16, 3, strides=2, padding=same)", (14, 14, 32), (4608, 16, 0)),
    ("conv2d(32, 3, groups=4)", (28, 28, 32), (3 * 3 * 8 * 32, 32, 0)),
    ("batchnorm", (7, 7, 64), (64, 64, 128)),
    ("batchnorm(center=false, scale=false)", (7, 7, 64), (0, 0, 128)),
    ("dense(10, use_bias=false)", (5,), (50, 0, 0)),
])
def test_parameter_counts_match_keras(spec, shape, expect):
    (r,) = A.analyze(spec, shape).rows
    assert (r.weights, r.biases, r.non_trainable) == expect
    assert sum(math.prod(s) for s in r.param_shapes.values()) == r.params


def test_separable_and_depthwise_costs_by_hand():
    (r,) = A.analyze("separable2d(64, 3, padding=same)", (28, 28, 32)).rows
    assert r.output_shape == (28, 28, 64)
    assert (r.filters, r.filter_shape, r.kernel_slices) == (32 + 64, "3x3x1 + 1x1x32",
                                                            32 + 64 * 32)
    assert r.macs == 28 * 28 * (32 * 9 + 32 * 64)
    (d,) = A.analyze("depthwise2d(3, strides=2)", (28, 28, 8)).rows
    assert d.output_shape == (13, 13, 8) and d.macs == 13 * 13 * 8 * 9
    assert "no channel mixing" in d.sentence


def test_transposed_conv_costs_and_field():
    (r,) = A.analyze("conv2d_transpose(16, 3, strides=2, padding=same)", (14, 14, 32)).rows
    assert r.output_shape == (28, 28, 16)
    assert (r.filters, r.filter_shape, r.kernel_slices) == (16, "3x3x32", 16 * 32)
    # what the conv it transposes costs: 14x14 outputs x 32 filters of 3x3x16
    assert r.macs == 14 * 14 * 32 * 9 * 16
    assert r.jump == (0.5, 0.5) and r.receptive_field == (2, 2)
    (v,) = A.analyze("conv1d_transpose(4, 3, strides=2)", (5, 2)).rows
    assert v.output_shape == ((5 - 1) * 2 + 3, 4)


@pytest.mark.parametrize("spec,shape,rf,jump", [
    ("conv2d(4, 3); conv2d(4, 3)", (16, 16, 1), 5, 1),
    ("conv2d(4, 3); conv2d(4, 3); conv2d(4, 3)", (16, 16, 1), 7, 1),
    ("conv2d(4, 5)", (16, 16, 1), 5, 1),
    ("conv2d(4, 7)", (16, 16, 1), 7, 1),
    ("conv2d(4, 3, strides=2); conv2d(4, 3)", (16, 16, 1), 7, 2),
    ("conv2d(4, 3, dilation_rate=2)", (16, 16, 1), 5, 1),
    ("maxpool2d(2); conv2d(4, 3)", (16, 16, 1), 6, 2),
    ("avgpool2d(3, strides=1); maxpool2d(2)", (16, 16, 1), 4, 2),
    ("conv1d(4, 3, strides=2); conv1d(4, 3, strides=2); conv1d(4, 3)", (32, 1), 15, 4),
])
def test_receptive_field_and_jump(spec, shape, rf, jump):
    last = A.analyze(spec, shape).rows[-1]
    assert set(last.receptive_field) == {rf} and set(last.jump) == {jump}


def test_rectangular_field_is_per_axis():
    a = A.analyze("conv2d(4, (5, 3), strides=(2, 1))", (16, 16, 1))
    assert a.rows[0].receptive_field == (5, 3) and a.rows[0].jump == (2, 1)
    assert render.to_dict(a)["layers"][0]["receptive_field"] == [5, 3]


@pytest.mark.parametrize("spec,shape", [
    ("conv2d(3, 3, padding=same)", (7, 9, 2)),
    ("conv2d(3, 4, strides=2, padding=same)", (9, 8, 2)),
    ("conv2d(3, 3, strides=2, padding=same, dilation_rate=2)", (11, 10, 2)),
    ("conv2d(3, 3, padding=2)", (6, 6, 2)),
    ("conv2d(3, 3, padding=((0, 2), (1, 0)))", (6, 6, 2)),
    ("conv2d(3, 3, padding=circular)", (6, 6, 2)),
    ("conv1d(3, 5, strides=3, padding=same)", (10, 2)),
    ("depthwise2d(3, strides=2, padding=same)", (9, 9, 2)),
    ("conv3d(2, 3, padding=same)", (3, 5, 4, 2)),
])
def test_taps_on_padding_match_a_brute_force_count(spec, shape):
    (r,) = A.analyze(spec, shape).rows
    spec_ = r.spec
    k = spec_.kernel_size
    # a ones image correlated with a ones kernel counts, at each output, the in-bounds
    # taps; CIRCULAR padding holds real (wrapped) cells, so every tap counts there
    ones = jnp.ones((1, *shape[:-1], 1))
    pad = "VALID" if spec_.padding == "CIRCULAR" else spec_.padding
    if spec_.padding == "CIRCULAR":
        pairs = convjax.layout.normalize_padding("SAME", shape[:-1], k, spec_.strides).pairs
        ones = jnp.pad(ones, ((0, 0), *pairs, (0, 0)), constant_values=1.0)
    counts = convjax.conv(ones, jnp.ones((*k, 1, 1)), stride=spec_.strides, padding=pad,
                          dilation=spec_.dilation, backward="lax")
    per_tap = r.macs // (math.prod(r.output_shape[:-1]) * math.prod(k))
    assert r.macs - r.macs_on_padding == int(counts.sum()) * per_tap


@pytest.mark.parametrize("spec,shape,flax_layer", [
    ("conv2d(8, 3, padding=same)", (10, 10, 3), nn.Conv(8, (3, 3), padding="SAME")),
    ("conv2d(8, 3, strides=2, padding=same)", (11, 10, 3),
     nn.Conv(8, (3, 3), strides=2, padding="SAME")),
    ("conv2d(8, (3, 2), dilation_rate=2)", (11, 10, 3),
     nn.Conv(8, (3, 2), kernel_dilation=2, padding="VALID")),
    ("conv2d(8, 3, groups=2, use_bias=false)", (9, 9, 4),
     nn.Conv(8, (3, 3), feature_group_count=2, use_bias=False, padding="VALID")),
    ("depthwise2d(3, depth_multiplier=2)", (9, 9, 4),
     nn.Conv(8, (3, 3), feature_group_count=4, padding="VALID")),
    ("conv1d(5, 4, strides=3, padding=same)", (20, 2), nn.Conv(5, (4,), 3, padding="SAME")),
    ("conv3d(5, 2)", (4, 5, 6, 2), nn.Conv(5, (2, 2, 2), padding="VALID")),
    ("dense(7)", (12,), nn.Dense(7)),
])
def test_shapes_and_params_match_flax(spec, shape, flax_layer):
    (r,) = A.analyze(spec, shape).rows
    variables = jax.eval_shape(flax_layer.init, jax.random.key(0), jnp.zeros((1, *shape)))
    out = jax.eval_shape(flax_layer.apply, variables, jnp.zeros((1, *shape)))
    assert r.output_shape == out.shape[1:]
    flax_shapes = {k: v.shape for k, v in variables["params"].items()}
    assert flax_shapes == dict(r.param_shapes)
    assert r.params == sum(math.prod(s) for s in flax_shapes.values())


def test_batch_and_dtype_scale_costs_and_bytes():
    one = A.analyze(TF_TUTORIAL, (28, 28, 1))
    many = A.analyze(TF_TUTORIAL, (28, 28, 1), batch=16, dtype="bfloat16")
    t1, t16 = one.total(), many.total()
    assert t16["macs"] == 16 * t1["macs"] and t16["params"] == t1["params"]
    assert t16["activation_bytes"] == 16 * t1["activation_bytes"] // 2


def test_forward_runs_the_stack_with_the_functional_ops(rng):
    a = A.analyze("conv2d(4, 3, padding=same, activation=relu); batchnorm; maxpool2d(2); "
                  "dropout(0.5); separable2d(6, 3); globalmaxpool; dense(3)", (8, 8, 2))
    params = [{k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in
               r.param_shapes.items()} for r in a.rows]
    state = [{k: jnp.ones(s) for k, s in r.state_shapes.items()} for r in a.rows]
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)
    y = A.forward([r.spec for r in a.rows], params, state, x)
    p0 = params[0]
    h = jax.nn.relu(convjax.conv(x, p0["kernel"], p0["bias"]))
    h = convjax.batch_norm(params[1], state[1], h, training=False, epsilon=1e-3)[0]
    h = convjax.max_pool(h, 2)
    h = convjax.separable_conv(h, params[4]["depthwise_kernel"],
                               params[4]["pointwise_kernel"], params[4]["bias"],
                               padding="VALID")
    h = convjax.dense(convjax.global_max_pool(h), params[6]["kernel"], params[6]["bias"])
    np.testing.assert_allclose(np.asarray(y), np.asarray(h), rtol=1e-5, atol=1e-5)
    assert y.shape[1:] == a.output_shape


def test_impossible_shapes_name_the_layer():
    with pytest.raises(A.SpecError, match=r"^layer 3 `maxpool2d\(4\)`: input \[2, 2, 8\]: "
                                          r"max_pool: window KH=4 is larger"):
        A.analyze("conv2d(8, 3); conv2d(8, 3); maxpool2d(4)", (6, 6, 1))
    with pytest.raises(A.SpecError, match=r"^layer 2 `conv2d\(3, 3\)`: input \[36\] is C \(0 "
                                          r"spatial axes\), but a conv2d needs 2 spatial "
                                          r"axes: a HWC input$"):
        A.analyze("flatten; conv2d(3, 3)", (6, 6, 1))
    with pytest.raises(A.SpecError, match=r"^layer 1 `conv3d\(3, 3\)`: input \[64, 64, 3\] is "
                                          r"HWC .* a DHWC input \(as the first layer: an "
                                          r"input shape of 4 ints, D,H,W,C\)$"):
        A.analyze("conv3d(3, 3)", (64, 64, 3))
    with pytest.raises(A.SpecError, match="C=3 channels, not divisible by groups=2"):
        A.analyze("conv2d(4, 3, groups=2)", (6, 6, 3))
    with pytest.raises(ValueError, match="input_shape must be positive ints"):
        A.analyze("flatten", (0, 3))
    with pytest.raises(TypeError, match="layer 1: expected a convjax.analysis layer spec"):
        A.analyze([nn.Dense(3)], (3,))


@pytest.mark.parametrize("text,message", [
    ("conv2d(32)", "missing a required argument: 'kernel_size'; conv2d takes (filters, "
                   "kernel_size, strides=1"),
    ("maxpol2d(2)", "unknown layer 'maxpol2d'; known layers: activation, avgpool1d"),
    ("conv2d(32, 3, padding=sme)", "padding must be same, valid, circular"),
    ("conv2d(32, 3, activation=rleu)", "unknown activation 'rleu'"),
    ("conv2d(32, 3, foo=1)", "got an unexpected keyword argument 'foo'"),
    ("conv2d(0, 3)", "filters must be a positive int, got 0"),
    ("conv2d(4, (3, 3, 3))", "kernel_size must be an int or 2 ints"),
    ("dropout(1.5)", "rate must be a number in [0, 1), got 1.5"),
    ("conv2d(32, 3", "cannot parse this"),
    ("dense(x + 1)", "cannot read the argument 'x + 1'"),
    ("os.system('ls')", "a layer is name or name(arg, ..., key=value)"),
])
def test_bad_specs_get_one_clear_error(text, message):
    with pytest.raises(A.SpecError) as e:
        A.parse_layers(f"flatten; {text}")
    assert str(e.value).startswith(f"layer 2 `{text}`: ")
    assert message in str(e.value)
    assert e.value.index == 2 and e.value.text == text


def test_keras_names_and_round_trip():
    keras = ("Conv2D(32, (3, 3), padding='same', activation='relu'); MaxPooling2D((2, 2)); "
             "SeparableConv2D(8, 3); DepthwiseConv2D(3, depth_multiplier=2); "
             "Conv2DTranspose(4, 2, strides=2); BatchNormalization(); "
             "GlobalAveragePooling2D(); Dropout(0.25); Dense(10, activation='softmax')")
    specs = A.parse_layers(keras)
    assert [s.name for s in specs] == [
        "conv2d", "maxpool2d", "separable2d", "depthwise2d", "conv2d_transpose", "batchnorm",
        "globalavgpool", "dropout", "dense"]
    for s in specs:  # the generated spec string parses back to the same spec
        generated = type(s)(**{f: getattr(s, f) for f in s.__dataclass_fields__
                               if f != "text"}).spec_string()
        assert A.parse_layers(generated)[0] == s, generated
    assert A.parse_layers("relu; activation(tanh); conv1d(2, 3, use_bias=False)")[2].use_bias \
        is False


def test_render_formats_agree():
    a = A.analyze(TF_TUTORIAL, (28, 28, 1))
    txt, md, doc = render.text(a), render.markdown(a), render.to_dict(a)
    for fmt in (txt, md):
        assert "3,274,634" in fmt and "27,767,808" in fmt
        assert "FLOPs = 2 x MACs exactly" in fmt
        assert "layer 3: 64 filters of 5x5x32" in fmt
    lines = txt.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  layer"))
    # every right-aligned column ends at the same place in the header and the rows
    assert len({len(line) for line in lines[header:header + 9]
                if not line.startswith("-")}) == 1
    assert doc["total"]["params"] == 3_274_634 and doc["input"] == [28, 28, 1]
    assert set(A.NUMERIC_KEYS) <= set(doc["total"])
    assert md.count("\n|") == 2 + 7 + 1  # header, rule, 7 layers, total
    assert str(a) == txt and a._repr_markdown_() == md


def test_fully_convolutional_head_equals_dense_head_and_the_sliding_window(rng):
    stack = "conv2d(4, 3, activation=relu); maxpool2d(2); flatten; dense(6, activation=relu); " \
            "dropout(0.5); dense(3)"
    a = A.analyze(stack, (10, 10, 2))
    fcn = A.fully_convolutional(stack, (10, 10, 2))
    assert [s.spec_string() for s in fcn] == [
        "conv2d(4, 3, activation=relu)", "maxpool2d(2)", "conv2d(6, 4, activation=relu)",
        "dropout(0.5)", "conv2d(3, 1)"]
    f = A.analyze(fcn, (10, 10, 2))
    assert f.total()["params"] == a.total()["params"] and f.output_shape == (1, 1, 3)
    params = [{k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in
               r.param_shapes.items()} for r in a.rows]
    # the dense kernel [H'*W'*C', units] is, in NHWC flatten order, an HWIO kernel
    fparams = [params[0], params[1], {"kernel": params[3]["kernel"].reshape(4, 4, 4, 6),
               "bias": params[3]["bias"]}, {}, {"kernel": params[5]["kernel"][None, None],
                                              "bias": params[5]["bias"]}]
    specs, nostate = [r.spec for r in a.rows], [{}] * 6
    big = jnp.asarray(rng.normal(size=(1, 14, 18, 2)), jnp.float32)
    y = A.forward(fcn, fparams, nostate, big)
    assert y.shape == (1, 3, 5, 3) == (1, *A.analyze(fcn, (14, 18, 2)).output_shape)
    jump = int(a.rows[3].jump[0])  # 2: one prediction per 2 input pixels
    for i, j in [(0, 0), (2, 4), (1, 3)]:
        crop = big[:, i * jump:i * jump + 10, j * jump:j * jump + 10]
        np.testing.assert_allclose(np.asarray(y[0, i, j]),
                                   np.asarray(A.forward(specs, params, nostate, crop)[0]),
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no flatten followed by dense"):
        A.fully_convolutional("conv2d(4, 3); globalavgpool; dense(3)", (8, 8, 1))


def test_input_size_report_explains_the_dense_head():
    stack = "conv2d(8, 3, strides=2); maxpool2d(2); flatten; dense(32); dense(10)"
    r = A.input_size_report(stack, [(32, 32, 3), (40, 64, 3)])
    assert r.changes == ((4, "dense(32)", "kernel", ((7 * 7 * 8, 32), (9 * 15 * 8, 32))),)
    assert r.fcn_outputs == ((1, 1, 10), (3, 9, 10))
    text = "\n".join(r.lines())
    assert "kernel [392, 32] at 32x32x3 (HWC), [1080, 32] at 40x64x3 (HWC)" in text
    assert "fully convolutional" in text and "27 predictions in one pass" in text
    same = A.input_size_report("conv2d(8, 3); globalavgpool; dense(10)", [(32, 32, 3),
                                                                          (40, 64, 3)])
    assert same.changes == () and "No weight shape depends on the input size" in \
        "\n".join(same.lines())


@pytest.mark.parametrize("stack,shape", [
    ("conv2d(32, 3, padding=same); conv2d(32, 3, padding=same)", (28, 28, 1)),
    ("conv2d(16, 3, padding=same); conv2d(32, 3, strides=2, padding=same); flatten; "
     "dense(64); dense(10)", (28, 28, 1)),
    ("conv2d(32, 3, padding=same); conv2d(8, 1)", (64, 64, 3)),
    ("conv1d(8, 5, padding=same); conv1d(8, 5, dilation_rate=2)", (100, 4)),
    ("conv3d(4, 3, padding=same)", (24, 24, 24, 2)),
])
def test_xla_counts_what_we_predict(stack, shape):
    r = A.xla_flops(stack, shape, batch=4)
    # exact once the known differences are accounted for: XLA skips taps on padding
    # and counts bias adds
    assert r.xla == r.predicted
    # the raw count: within 10% for SAME 3x3 stacks (padding is a thin border)
    assert abs(r.ratio - 1) <= 0.10, r.ratio
    # a training step: forward + kernel gradient + input gradient, within 10%
    assert abs(r.train_ratio - 1) <= 0.10, r.train_ratio


def test_xla_count_of_a_tap_by_tap_first_conv():
    # One input channel: convjax.conv sums the taps elementwise; XLA then counts every
    # tap, padded ones included, and one add fewer than products per output.
    r = A.xla_flops("conv3d(4, 3, padding=same)", (24, 24, 24, 1), batch=4)
    outputs = 4 * 24 ** 3 * 4
    assert r.padding_flops == 0 and r.tap_flops == outputs == r.bias_flops
    assert r.predicted == r.flops == r.xla
    assert any("first products" in line for line in r.lines())


def test_xla_cross_check_of_the_tf_tutorial_network():
    r = A.xla_flops(TF_TUTORIAL, (28, 28, 1), batch=2)
    # 5x5 SAME windows on 28x28 and 14x14 maps put 12% of the taps on padding; XLA also
    # counts the ReLUs and the pooling comparisons, which we do not
    assert r.flops == 2 * 27_767_808
    assert 0.85 <= r.ratio <= 0.92
    assert 0 < r.other < 0.01 * r.xla
    assert 0.80 <= r.train_ratio <= 1.0
    assert any("XLA cost_analysis" in line for line in r.lines())
