"""python -m convjax.explain: output formats, the two-input explanation, and bad specs."""

import json
import os
import subprocess
import sys

import pytest

from convjax import explain

TF_TUTORIAL = ("conv2d(32, 5, padding=same, activation=relu); maxpool2d(2); "
               "conv2d(64, 5, padding=same, activation=relu); maxpool2d(2); flatten; "
               "dense(1024, activation=relu); dense(10)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *args):
    status = explain.main(["explain", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_text_table_for_the_tf_tutorial_network(capsys):
    status, out, err = run(capsys, "--input=28,28,1", f"--layers={TF_TUTORIAL}")
    assert status == 0 and err == ""
    assert out.startswith("input 28x28x1 (HWC), batch 1, float32\n")
    total = next(line for line in out.splitlines() if "total" in line).split()
    assert total[:8] == ["total", "96", "2,080", "3,273,504", "1,130", "3,274,634",
                         "13,883,904", "27,767,808"]
    assert "layer 3: 64 filters of 5x5x32" in out
    assert "FLOPs = 2 x MACs exactly" in out


def test_json_is_the_only_thing_on_stdout(capsys):
    status, out, _ = run(capsys, "--input=64,64,3", "--format=json",
                         "--layers=conv2d(32, 3, padding=same, activation=relu); "
                         "conv2d(8, 1, activation=relu); maxpool2d(2)")
    assert status == 0
    doc = json.loads(out)
    assert list(doc) == ["input", "layers", "total"]
    assert doc["input"] == [64, 64, 3] and len(doc["layers"]) == 3
    assert doc["total"]["batch"] == 1 and doc["total"]["dtype"] == "float32"
    first, second, pool = doc["layers"]
    assert first["name"] == "conv2d" and pool["name"] == "maxpool2d"
    assert first["output_shape"] == [64, 64, 32] and second["output_shape"] == [64, 64, 8]
    assert (first["filters"], first["filter_shape"], first["kernel_slices"]) == (32, "3x3x3",
                                                                                96)
    assert (second["weights"], second["biases"], second["params"]) == (256, 8, 264)
    assert first["flops"] == 2 * first["macs"] == 7_077_888
    assert pool["receptive_field"] == 4 and isinstance(pool["receptive_field"], int)
    assert pool["activation_bytes"] == 32 * 32 * 8 * 4
    keys = ["name", "output_shape", "filters", "filter_shape", "kernel_slices", "weights",
            "biases", "params", "macs", "flops", "receptive_field", "activation_bytes"]
    for row in doc["layers"]:
        assert set(keys) <= set(row)
    numeric = {k for k, v in first.items() if isinstance(v, (int, float))
               and not isinstance(v, bool) and k != "index"}
    assert numeric <= set(doc["total"])
    assert doc["total"]["params"] == 896 + 264
    assert all(isinstance(doc["total"][k], (int, float)) for k in numeric)


def test_markdown_format(capsys):
    status, out, _ = run(capsys, "--input=1,64,64,3", "--format=markdown",
                         "--layers=conv3d(32, 3, padding=same)")
    assert status == 0
    assert "| 1 | conv3d(32, 3, padding=same) | 1x64x64x32 | 32 | 3x3x3x3 | 288 | 2,592 |" \
        in out


def test_two_input_sizes_explain_the_dense_head(capsys):
    layers = ("conv2d(64, 3, strides=2, activation=relu); maxpool2d(2); "
              "conv2d(128, 3, strides=2, activation=relu); maxpool2d(2); "
              "conv2d(512, 3, strides=2); flatten; dense(1024); dense(10)")
    status, out, err = run(capsys, "--input=224,224,3", "--input=455,256,3",
                           f"--layers={layers}")
    assert status == 0 and err == ""
    assert out.count("input 224x224x3 (HWC)") == 1 and out.count("input 455x256x3") == 1
    assert ("layer 7 `dense(1024)`: kernel [18432, 1024] at 224x224x3 (HWC), [46592, 1024] "
            "at 455x256x3 (HWC)") in out
    assert "would accept both" in out and "fully convolutional" in out
    assert "conv2d(1024, 6); conv2d(10, 1)" in out
    assert "at 455x256x3 (HWC): output [8, 2, 10], 16 predictions in one pass" in out
    status, out, _ = run(capsys, "--input=224,224,3", "--input=455,256,3", "--format=json",
                         f"--layers={layers}")
    doc = json.loads(out)
    assert [d["input"] for d in doc["inputs"]] == [[224, 224, 3], [455, 256, 3]]
    assert doc["input_size"]["changes"] == [{"index": 7, "spec": "dense(1024)",
                                             "param": "kernel",
                                             "shapes": [[18432, 1024], [46592, 1024]]}]


def test_xla_flag_prints_both_counts(capsys):
    status, out, _ = run(capsys, "--input=28,28,1", "--xla",
                         "--layers=conv2d(8, 3, padding=same); flatten; dense(10)")
    assert status == 0
    assert "XLA cost_analysis:" in out and "taps on padding" in out
    status, out, _ = run(capsys, "--input=28,28,1", "--xla", "--format=json",
                         "--layers=conv2d(8, 3, padding=same); flatten; dense(10)")
    x = json.loads(out)["total"]["xla"]
    assert x["xla"] == x["predicted"]


@pytest.mark.parametrize("args,message", [
    (["--input=64,64,3", "--layers=conv2d(32, 3); maxpol2d(2)"],
     "explain: layer 2 `maxpol2d(2)`: unknown layer 'maxpol2d'"),
    (["--input=4,4,3", "--layers=conv2d(32, 3); maxpool2d(4)"],
     "explain: layer 2 `maxpool2d(4)`: input [2, 2, 32]: max_pool: window KH=4 is larger"),
    (["--input=64,64,3", "--layers=conv2d(32, 3, strides=0)"],
     "explain: layer 1 `conv2d(32, 3, strides=0)`: strides must be >= 1"),
    (["--input=64,64", "--layers=conv2d(8, 3)"], "explain: layer 1 `conv2d(8, 3)`: input "
                                                 "[64, 64] is WC (1 spatial axis), but a "
                                                 "conv2d needs 2 spatial axes"),
    (["--input=64,64,3", "--input=8,8,3", "--layers=conv2d(8, 9)"],
     "explain: layer 1 `conv2d(8, 9)`: input [8, 8, 3]"),
    (["--input=64,a,3", "--layers=flatten"], "explain: --input='64,a,3': expected"),
    (["--layers=flatten"], "explain: --input is required"),
    (["--input=3"], "explain: --layers (or --model) is required"),
    (["--input=3", "--layers=dense(2)", "--format=yaml"], "explain: flag --format=yaml"),
    (["--input=3", "--layers=dense(2)", "extra"], "explain: unexpected argument 'extra'"),
])
def test_bad_command_lines_exit_2_with_one_line(capsys, args, message):
    status, out, err = run(capsys, *args)
    assert status == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.slow
def test_the_module_runs_as_a_command():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    ok = subprocess.run([sys.executable, "-m", "convjax.explain", "--input=8,8,1",
                         "--layers=conv2d(2, 3)"], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=120)
    assert ok.returncode == 0 and "2 filters of 3x3x1" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "convjax.explain", "--input=8,8,1",
                          "--layers=conv2d(2, 3); dense(2, activation=foo)"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip() == ("explain: layer 2 `dense(2, activation=foo)`: unknown "
                                  "activation 'foo'; expected one of relu, relu6, elu, gelu, "
                                  "silu, swish, sigmoid, tanh, softmax, log_softmax, "
                                  "softplus, leaky_relu or linear")
    helped = subprocess.run([sys.executable, "-m", "convjax.explain", "--help"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert helped.returncode == 0 and "--layers" in helped.stdout


def test_model_ids_are_explained_like_spec_strings(capsys):
    status, out, _ = run(capsys, "--model=tf-tutorial", "--format=json")
    assert status == 0
    doc = json.loads(out)
    assert doc["input"] == [28, 28, 1] and doc["total"]["params"] == 3_274_634
    assert [r["path"] for r in doc["layers"]][:2] == ["Conv_0", "MaxPool_0"]
    with_dropout = TF_TUTORIAL.replace("dense(1024, activation=relu)",
                                       "dense(1024, activation=relu); dropout(0.5)")
    status, spec_out, _ = run(capsys, "--input=28,28,1", "--format=json",
                              f"--layers={with_dropout}")
    spec_doc = json.loads(spec_out)
    for key in ("params", "macs", "flops", "kernel_slices", "activation_bytes"):
        assert doc["total"][key] == spec_doc["total"][key], key
    status, out, _ = run(capsys, "--model=plain-k3-w8.16", "--input=28,28,1",
                         "--input=36,36,1")
    assert status == 0 and "kernel [784, 128] at 28x28x1 (HWC), [1296, 128] at 36x36x1" in out
    status, out, _ = run(capsys, "--model=flax-example", "--xla")
    assert status == 0 and "XLA cost_analysis:" in out
    status, out, err = run(capsys, "--model=plain-k3-w8.16-convhead", "--input=3,3,1")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("explain: the model cannot take --input=3,3,1: ")
    status, _, err = run(capsys, "--model=resnet50")
    assert status == 2 and err.startswith("explain: --model='resnet50': parse: unknown model")
    status, _, err = run(capsys, "--model=tf-tutorial", "--layers=flatten")
    assert status == 2 and err == "explain: give --layers or --model, not both\n"
