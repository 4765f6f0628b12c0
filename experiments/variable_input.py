r"""Any input size: a classifier trained on 28x28 MNIST, made fully convolutional, reads
strips and grids of digits in one pass; checked against the sliding window it replaces.

    python -m experiments.variable_input --data_dir=../shared/data/mnist

Trains (or, when ``--output_dir`` already holds it, loads) a VALID-padded classifier and
its SAME-padded twin on 28x28 digits, converts both with
:func:`convjax.fcn.to_fully_convolutional`, and runs them on canvases of held-out test
digits: 28x140 strips of 5 and 84x84 grids of 9. It reports

* equality: the converted model's map against the sliding window (max abs difference of
  the logits) at stride = jump (one pass) and at stride 1 (shift and stitch);
* reading: accuracy of the map at the digits' known positions (where a window covers
  exactly one digit), against the model on the digits alone (for a VALID trunk that is
  the same computation, so they must agree; the SAME twin shows the border effect). The
  positions are given, not found: locating digits on a canvas is another task;
* time: the converted model vs the batched sliding window on the same canvases, in one
  run, at stride = jump and at stride 1, beside the FLOP ratio from the analysis tables;

and writes ``results.json``, ``summary.md`` and ``canvas.png`` (a strip and a grid with
the per-position predictions over them) to ``--output_dir`` (the training run's files go
to ``<output_dir>/train``). Defaults: 1 epoch of all 60,000 training images, about 90
seconds on a 2-core CPU; ``--quick`` is a smoke run of about 30 seconds.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any

from absl import app, flags

from experiments import _sweep

FLAGS = flags.FLAGS
DIGIT = 28  # MNIST digits are 28 x 28
LAYOUTS = {"strip": (1, 5), "grid": (3, 3)}  # digits per canvas: rows, cols
QUICK = {"train_examples": 3000, "canvases": 20, "timing_canvases": 2, "repeats": 1}


def _specs() -> dict[str, tuple[Any, Any, str, dict]]:
    shared = _sweep._specs("variable_input", _sweep.Defaults(0, 1, ()))
    specs = {k: shared[k] for k in ("dataset", "data_dir", "seed", "epochs", "train_examples",
                                    "batch_size", "optimizer", "learning_rate",
                                    "warmup_epochs", "xla_cpu_defaults")}
    specs["output_dir"] = (flags.DEFINE_string, "runs/variable_input", "Where results.json, "
                           "summary.md and canvas.png go; the trained models are kept in "
                           "<output_dir>/train and reused by the next run (default with "
                           "--quick: runs/variable_input-quick).", {})
    specs["model"] = (flags.DEFINE_string, "plain-k3-w32.64-valid", "The classifier: a "
                      "model id with a flatten -> dense head and a VALID trunk (exact).", {})
    specs["same_model"] = (flags.DEFINE_string, None, "Its SAME-padded twin, converted to "
                           "measure the border effect (default: --model without -valid; "
                           "'none' to skip).", {})
    specs["canvases"] = (flags.DEFINE_integer, 200, "Strips and grids each (test digits "
                         "drawn without replacement where possible).", {})
    specs["timing_canvases"] = (flags.DEFINE_integer, 16, "Canvases of each kind in the "
                                "timed batches (and in the stride-1 equality check).", {})
    specs["repeats"] = (flags.DEFINE_integer, 5, "Timed calls of each function (median "
                        "reported; the first, compiling call is not timed).", {})
    specs["quick"] = (flags.DEFINE_bool, False, "A smoke run of about a minute: "
                      + ", ".join(f"--{k}={v}" for k, v in QUICK.items())
                      + " (unless given).", {})
    return specs


SPECS = _specs()
_sweep.define_flags(SPECS, __name__)


def make_canvases(images, labels, count: int, layout: tuple[int, int], rng):
    """``count`` canvases of ``rows x cols`` digits side by side, no gaps.

    Args:
      images: ``[N, 28, 28, 1]`` uint8; labels: ``[N]``.

    Returns:
      ``(canvases [count, 28 * rows, 28 * cols, 1] float32 in [0, 1], labels [count, rows,
      cols], indices [count, rows, cols])``.
    """
    import numpy as np

    rows, cols = layout
    need = count * rows * cols
    idx = rng.choice(len(images), size=need, replace=need > len(images))
    idx = idx.reshape(count, rows, cols)
    tiles = np.asarray(images)[idx]  # [count, rows, cols, 28, 28, 1]
    canvases = tiles.transpose(0, 1, 3, 2, 4, 5).reshape(count, rows * DIGIT, cols * DIGIT,
                                                         images.shape[-1])
    return canvases.astype(np.float32) / 255.0, np.asarray(labels)[idx], idx


def _timed(fn, repeats: int) -> dict[str, float]:
    """Compile (first call, not timed), then the median and min of ``repeats`` calls."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times), "min_s": min(times)}


def evaluate(model_id: str, model, variables, canvases: dict, timing: int, repeats: int,
             time_it: bool) -> dict:
    """Equality, reading accuracy and (if ``time_it``) timings of one trained model."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from convjax import fcn as FC

    shape = (DIGIT, DIGIT, 1)
    t0 = time.perf_counter()
    fcn, fcn_vars = FC.to_fully_convolutional(model, variables, shape)
    out: dict[str, Any] = {"model": model_id, "exact": fcn.exact,
                           "padded_layers": list(fcn.padded_layers), "jump": list(fcn.jump),
                           "window": list(fcn.window),
                           "convert_s": time.perf_counter() - t0, "canvases": {}}
    fcn_apply = jax.jit(fcn.apply)
    model_apply = jax.jit(model.apply)
    examples = {}  # the first canvas of each kind with its maps, for the plot
    for kind, (x, labels, _) in canvases.items():
        n, rows, cols = labels.shape
        xs = jnp.asarray(x)
        one_pass = fcn_apply(fcn_vars, xs)
        slide = FC.sliding_window_predict(model, variables, xs, fcn.jump, input_shape=shape)
        dense = FC.shift_and_stitch(fcn, fcn_vars, xs)  # stride 1, every canvas
        xt = xs[:timing]
        stitched = dense[:timing]
        slide1 = FC.sliding_window_predict(model, variables, xt, 1, input_shape=shape)
        digits = xs.reshape(n, rows, DIGIT, cols, DIGIT, 1).transpose(0, 1, 3, 2, 4, 5)
        alone_logits = np.asarray(model_apply(variables, digits.reshape(-1, *shape)))
        alone = alone_logits.argmax(-1)
        r = np.arange(rows) * DIGIT
        c = np.arange(cols) * DIGIT
        at_logits = np.asarray(dense)[:, r][:, :, c].reshape(alone_logits.shape)  # digits
        at = at_logits.argmax(-1)
        examples[kind] = {"one_pass": np.asarray(one_pass[0]),
                          "stride1": np.asarray(dense[0])}
        res = {
            "canvas": list(x.shape[1:3]), "count": n, "digits": int(labels.size),
            "one_pass_map": list(one_pass.shape[1:3]), "stride1_map": list(stitched.shape[1:3]),
            "max_abs_diff_jump": float(jnp.max(jnp.abs(one_pass - slide))),
            "max_abs_diff_stride1": float(jnp.max(jnp.abs(stitched - slide1))),
            "max_abs_diff_digits": float(np.max(np.abs(at_logits - alone_logits))),
            "argmax_agreement_jump": float(jnp.mean(jnp.argmax(one_pass, -1)
                                                    == jnp.argmax(slide, -1))),
            "argmax_agreement_digits": float(np.mean(at == alone)),
            "logit_scale": float(jnp.max(jnp.abs(slide))),
            "accuracy_alone": float(np.mean(alone == labels.reshape(-1))),
            "accuracy_fcn_map": float(np.mean(at == labels.reshape(-1))),
        }
        if all(DIGIT % j == 0 for j in fcn.jump):  # the digits fall on the one-pass grid
            jr, jc = fcn.jump
            one = np.asarray(jnp.argmax(one_pass, -1))[:, r // jr][:, :, c // jc]
            res["accuracy_one_pass"] = float(np.mean(one.reshape(-1) == labels.reshape(-1)))
        if time_it:
            res["timing"] = {}
            for stride, fast, slow in [
                ("jump", lambda: fcn_apply(fcn_vars, xt),
                 lambda: FC.sliding_window_predict(model, variables, xt, fcn.jump,
                                                   input_shape=shape)),
                ("1", lambda: FC.shift_and_stitch(fcn, fcn_vars, xt),
                 lambda: FC.sliding_window_predict(model, variables, xt, 1,
                                                   input_shape=shape))]:
                flops = FC.predicted_flops(fcn, x.shape[1:], stride=None if stride == "jump"
                                           else 1)
                tf, ts = _timed(fast, repeats), _timed(slow, repeats)
                ratio = ts["median_s"] / tf["median_s"]
                res["timing"][stride] = {
                    "canvases": int(xt.shape[0]), "windows_per_canvas": flops["windows"],
                    "fcn": tf, "sliding": ts, "time_ratio": ratio,
                    "flop_ratio": flops["ratio"], "fcn_flops": flops["fcn_flops"],
                    "sliding_flops": flops["sliding_flops"],
                    "time_over_flop_ratio": ratio / flops["ratio"]}
        out["canvases"][kind] = res
    out["example"] = examples
    return out


def markdown(settings: dict, models: list[dict]) -> str:
    lines = [f"# Any input size: {settings['model']} made fully convolutional", "",
             f"Trained on 28x28 MNIST ({settings['train']}); canvases of held-out test "
             f"digits: {settings['canvases']} strips (28x140, 5 digits) and grids (84x84, "
             f"9 digits). Device: {settings['device']}.", ""]
    for m in models:
        kind = "VALID trunk: exact" if m["exact"] else (
            f"SAME trunk: {', '.join(m['padded_layers'])} read padding, so each window's "
            f"border saw zeros in training and neighbouring digits on the canvas")
        lines += [f"## {m['model']} (test accuracy {100 * m['test_accuracy']:.2f}%; "
                  f"{kind})", "",
                  f"Window {DIGIT}x{DIGIT}, jump {m['jump'][0]} (one prediction per "
                  f"{m['jump'][0]} pixels in one pass), head window "
                  f"{'x'.join(map(str, m['window']))}.", "",
                  "| canvas | one-pass map | stride-1 map | max abs diff of the logits: "
                  "stride = jump | stride 1 | at the digits | same class: every position | "
                  "at the digits | digits | read alone | read from the map |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for kind_name, c in m["canvases"].items():
            lines.append(
                f"| {kind_name} {'x'.join(map(str, c['canvas']))} | "
                f"{'x'.join(map(str, c['one_pass_map']))} | "
                f"{'x'.join(map(str, c['stride1_map']))} | {c['max_abs_diff_jump']:.2e} | "
                f"{c['max_abs_diff_stride1']:.2e} | {c['max_abs_diff_digits']:.2e} | "
                f"{100 * c['argmax_agreement_jump']:.2f}% | "
                f"{100 * c['argmax_agreement_digits']:.2f}% | {c['digits']:,} | "
                f"{100 * c['accuracy_alone']:.2f}% | {100 * c['accuracy_fcn_map']:.2f}% |")
        lines.append("")
        scale = max(c["logit_scale"] for c in m["canvases"].values())
        lines.append(f"Logits are of order {scale:.0f}. Differences against the sliding "
                     f"window at stride = jump over every canvas, at stride 1 over the "
                     f"first {settings['timing_canvases']} of each kind; at the digits: the "
                     f"stride-1 map at the digits' known positions (a window covers exactly "
                     f"one digit), against the model on that digit alone. Same class: the "
                     f"share of positions where both give the same class. Read from the "
                     f"map: accuracy of the map's class at the known positions.")
        lines.append("")
        timed = [(k, s, t) for k, c in m["canvases"].items()
                 for s, t in c.get("timing", {}).items()]
        if timed:
            lines += ["Time: the converted model vs the batched sliding window (same "
                      "canvases, same device, median of "
                      f"{settings['repeats']} calls after a compiling call).", "",
                      "| canvas | stride | windows | sliding window | converted | time ratio | "
                      "FLOP ratio | time / FLOP ratio |", "|---|---|---|---|---|---|---|---|"]
            for k, s, t in timed:
                lines.append(
                    f"| {t['canvases']} {k}s | {'jump' if s == 'jump' else '1 (shift and stitch)'} | "
                    f"{t['windows_per_canvas']} per canvas | {1e3 * t['sliding']['median_s']:.1f} ms | "
                    f"{1e3 * t['fcn']['median_s']:.1f} ms | {t['time_ratio']:.2f}x | "
                    f"{t['flop_ratio']:.2f}x | {t['time_over_flop_ratio']:.2f} |")
            lines.append("")
    return "\n".join(lines)


def plot(path: str, canvases: dict, result: dict) -> None:
    """A strip and a grid with the converted model's predictions over them."""
    import numpy as np
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from convjax.experiment import save_figure

    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2, gridspec_kw={"height_ratios": [1, 2.2]})
    jump = result["jump"][0]
    # the strip: the one-pass predictions (every `jump` pixels), digit positions in bold
    x, labels, _ = canvases["strip"]
    ex = result["example"]["strip"]
    for ax, key, step, title in [
            (axes[0, 0], "one_pass", jump, f"one pass: a prediction every {jump} px"),
            (axes[0, 1], "stride1", 1, "shift and stitch: a prediction at every pixel")]:
        probs = _softmax(ex[key][0])
        ax.imshow(x[0, :, :, 0], cmap="gray_r", extent=(0, x.shape[2], x.shape[1], 0))
        cls = probs.argmax(-1)
        centers = np.arange(len(cls)) * step + DIGIT / 2
        ax.scatter(centers, np.full(len(cls), -3), c=cls, cmap="tab10", vmin=0, vmax=9,
                   s=14 if step == 1 else 30, marker="s", clip_on=False)
        for d in range(labels.shape[2]):
            pos = d * DIGIT // step
            ax.text(centers[pos], -9, str(cls[pos]), ha="center", fontsize=11,
                    fontweight="bold", color="green" if cls[pos] == labels[0, 0, d] else "red")
        if step == jump:
            for j, (c, p) in enumerate(zip(cls, probs.max(-1))):
                if j % (DIGIT // step):
                    ax.text(centers[j], 33, str(c), ha="center", fontsize=6, alpha=0.5 + p / 2)
        ax.set_ylim(36, -14)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    # the grid: the stride-1 class map over the window centres, confidence as opacity
    x, labels, _ = canvases["grid"]
    probs = _softmax(result["example"]["grid"]["stride1"])
    cls, conf = probs.argmax(-1), probs.max(-1)
    h, w = cls.shape
    ax = axes[1, 0]
    ax.imshow(x[0, :, :, 0], cmap="gray_r")
    ax.set_title("9 test digits (84x84)", fontsize=9)
    ax.axis("off")
    ax = axes[1, 1]
    ax.imshow(x[0, :, :, 0], cmap="gray_r", extent=(0, x.shape[2], x.shape[1], 0))
    ax.imshow(cls, cmap="tab10", vmin=0, vmax=9, alpha=0.55 * conf,
              extent=(DIGIT / 2 - 0.5, DIGIT / 2 + w - 0.5, DIGIT / 2 + h - 0.5,
                      DIGIT / 2 - 0.5))
    for r in range(labels.shape[1]):
        for c in range(labels.shape[2]):
            k = cls[r * DIGIT, c * DIGIT]
            ax.text(DIGIT / 2 + c * DIGIT, DIGIT / 2 + r * DIGIT, str(k), ha="center",
                    va="center", fontsize=12, fontweight="bold",
                    color="green" if k == labels[0, r, c] else "red")
    ax.set_xlim(0, x.shape[2])
    ax.set_ylim(x.shape[1], 0)
    legend = fig.colorbar(ScalarMappable(Normalize(-0.5, 9.5), "tab10"), ax=ax,
                          ticks=range(10), fraction=0.04, pad=0.02)
    legend.set_label("class", fontsize=8)
    ax.set_title(f"the class predicted for the window centred at each pixel ({h}x{w} "
                 f"map, colour = class, opacity = confidence)", fontsize=9)
    ax.axis("off")
    fig.suptitle(f"{result['model']} trained on 28x28 digits, made fully convolutional "
                 f"(bold: the prediction at each digit's position; green = right)",
                 fontsize=10)
    save_figure(fig, path)


def _softmax(logits):
    import numpy as np

    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    value, setting, quick_dir = _sweep.settings(SPECS, QUICK)
    output_dir = quick_dir("output_dir")
    for flag in ("canvases", "timing_canvases", "repeats"):
        if setting(flag) < 1:
            raise app.UsageError(f"--{flag} must be >= 1, got {setting(flag)}")
    from convjax import train as T

    T.default_xla_flags(value("xla_cpu_defaults"))
    import jax
    import numpy as np

    from convjax import data as D
    from convjax import experiment as E
    from convjax import models as M

    model_id = value("model")
    same_id = value("same_model")
    try:
        config = M.parse(model_id)
        if same_id is None:
            same_id = dataclasses.replace(config, padding="SAME").id
        ids = [model_id] + ([] if same_id == "none" else [same_id])
        for i in ids:
            M.parse(i)
        train_config = T.TrainConfig(
            model=model_id, dataset=value("dataset"), epochs=value("epochs"),
            batch_size=value("batch_size"), optimizer=value("optimizer"),
            learning_rate=value("learning_rate"), warmup_epochs=value("warmup_epochs"),
            seed=value("seed"), seeds=1, train_examples=setting("train_examples"))
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if len(set(ids)) != len(ids):
        raise app.UsageError(f"--same_model must differ from --model ({model_id})")
    train_dir = os.path.join(output_dir, "train")
    experiment = E.Experiment(name="variable_input",
                              title="Classifiers converted to fully convolutional models",
                              configs=tuple(ids))
    summary = E.run(experiment, train_config, output_dir=train_dir,
                    data_dir=value("data_dir"))
    if summary["failures"]:
        print(f"training failed: {summary['failures']}")
        return 1
    accuracy = {r["config_id"]: r["test_accuracy"] for r in E.read_results(train_dir)
                if r["seed"] == train_config.seed}
    test = D.load(value("dataset"), "test", data_dir=value("data_dir"))
    rng = np.random.default_rng(value("seed"))
    n, timing = setting("canvases"), setting("timing_canvases")
    canvases = {kind: make_canvases(test.images, test.labels, n, layout, rng)
                for kind, layout in LAYOUTS.items()}
    timing = min(timing, n)
    results = []
    for i, mid in enumerate(ids):
        model = M.get(mid)
        variables = E.load_variables(train_dir, mid, train_config.seed)
        r = evaluate(mid, model, variables, canvases, timing, setting("repeats"),
                     time_it=i == 0)
        r["test_accuracy"] = accuracy[mid]
        results.append(r)
    device = jax.devices()[0]
    settings = {"model": model_id, "same_model": None if same_id == "none" else same_id,
                "train": f"{train_config.epochs} epoch(s) of "
                         f"{train_config.train_examples or 60000:,} images, "
                         f"{train_config.optimizer} lr {train_config.learning_rate}, "
                         f"seed {train_config.seed}",
                "canvases": n, "timing_canvases": timing, "repeats": setting("repeats"),
                "device": f"{device.platform} ({device.device_kind}, "
                          f"{jax.device_count()} device(s))"}
    os.makedirs(output_dir, exist_ok=True)
    plot(os.path.join(output_dir, "canvas.png"), canvases, results[0])
    for r in results:
        r.pop("example")
    text = markdown(settings, results)
    T.atomic_write(os.path.join(output_dir, "summary.md"), text.encode())
    T.write_json(os.path.join(output_dir, "results.json"),
                 {"settings": settings, "models": results})
    print(text)
    print(f"files: {output_dir}/summary.md, results.json, canvas.png; models in {train_dir}")
    return 0


if __name__ == "__main__":
    app.run(main)
