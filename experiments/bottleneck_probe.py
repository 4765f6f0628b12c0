r"""What does a 1x1 conv keep? Probes of the bottleneck experiment's trained networks.

    python -m experiments.bottleneck_probe --data_dir=../shared/data/mnist

In ``bottleneck-r{4,8,16,32}-k3-w32.64`` the second stage opens with a 1x1 conv that maps
the first stage's C = 32 feature maps (14x14, after ReLU and max pool) to r maps. For
each config and seed, on held-out test images, this script measures

1. the share of the 32-channel activation's variance (per-pixel channel vectors) held by
   its best rank-r subspace (PCA) and by the subspace the learned 1x1 kernel spans;
2. how well the 32 maps are linearly reconstructed from the r maps after the ReLU
   (held-out R^2 of a ridge regression; fit on one half of the images, scored on the
   other), beside the R^2 from the top r principal components (the best linear code);
3. the test accuracy of linear probes (logistic regression on globally average-pooled
   features) on the 32 maps and on the r maps, and the full network's;
4. the same for a random 1x1 kernel of the same shape (LeCun normal, the layer's
   initializer, no bias): the control that says whether learning mattered.

It reuses the bottleneck experiment's saved params in ``--experiment_dir`` (default
``runs/bottleneck``, where ``python -m experiments.bottleneck`` writes them) and trains,
with that experiment's settings, any (config, seed) that is missing. It writes
``results.json`` (every number per seed), ``summary.md`` (per seed and mean ± 95% CI over
seeds) and ``variance_captured.png`` to ``--output_dir``. Defaults: 4 configs x 5 seeds
(and the plain network's 5 for the reference), about 2 minutes on a 2-core CPU when the
experiment has run (plus about 4 minutes to train otherwise); ``--quick``: one config,
two seeds, small samples.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import app, flags

from experiments import _sweep
from experiments import bottleneck as B

FLAGS = flags.FLAGS
CONFIGS = tuple(f"bottleneck-r{r}-k3-w32.64" for r in B.REDUCE)
QUICK = {"configs": ["bottleneck-r8-k3-w32.64"], "seeds": 2, "train_examples": 5000,
         "probe_train_examples": 2000, "probe_test_examples": 2000, "pixel_images": 400}
METRICS = (("var_pca", "variance in the best rank-r subspace (PCA)"),
           ("var_learned", "variance in the learned 1x1's span"),
           ("var_random", "variance in a random 1x1's span"),
           ("r2_learned", "R^2 of the 32 maps from the r learned maps"),
           ("r2_random", "R^2 from the r random maps"),
           ("r2_pca", "R^2 from the top r principal components"),
           ("probe_32", "linear probe on the 32 maps"),
           ("probe_learned", "linear probe on the r learned maps"),
           ("probe_random", "linear probe on the r random maps"),
           ("network", "the full network"))


def _specs() -> dict[str, tuple[Any, Any, str, dict]]:
    shared = _sweep._specs("bottleneck", B.DEFAULTS)
    specs = {k: shared[k] for k in ("dataset", "data_dir", "seeds", "seed", "epochs",
                                    "train_examples", "test_examples", "batch_size", "optimizer",
                                    "learning_rate", "warmup_epochs", "parallel",
                                    "seed_strategy", "xla_cpu_defaults")}
    specs["configs"] = (flags.DEFINE_list, list(CONFIGS), "Bottleneck configs to probe "
                        "(their second stage's 1x1 reduction).", {})
    specs["experiment_dir"] = (flags.DEFINE_string, "runs/bottleneck", "The bottleneck "
                               "experiment's output_dir: its saved params are reused and "
                               "missing (config, seed) runs are trained there with the "
                               "training flags (default with --quick: "
                               "runs/bottleneck-quick).", {})
    specs["output_dir"] = (flags.DEFINE_string, "runs/bottleneck_probe", "Where "
                           "results.json, summary.md and variance_captured.png go "
                           "(default with --quick: runs/bottleneck_probe-quick).", {})
    specs["probe_train_examples"] = (flags.DEFINE_integer, 10000, "Training images the "
                                     "linear probes are fit on (the first N).", {})
    specs["probe_test_examples"] = (flags.DEFINE_integer, 10000, "Held-out test images "
                                    "the probes are scored on (the first N).", {})
    specs["pixel_images"] = (flags.DEFINE_integer, 2000, "Held-out test images whose "
                             "per-pixel vectors (196 each) give the variance and R^2 "
                             "figures (R^2: fit on the first half, scored on the "
                             "second).", {})
    specs["quick"] = (flags.DEFINE_bool, False, "A smoke run: " + ", ".join(
        f"--{k}={','.join(v) if isinstance(v, list) else v}" for k, v in QUICK.items())
        + " (unless given).", {})
    return specs


SPECS = _specs()
_sweep.define_flags(SPECS, __name__)


def reduction_path(model, config) -> str:
    """Module path of the second stage's 1x1 conv from ``widths[0]`` channels to
    ``reduce`` (the first such conv after the first pool)."""
    from convjax.analysis import analyze_model
    from convjax.analysis import specs as S

    c, r = config.scaled(config.widths[0]), config.scaled(config.reduce)
    for row in _after_first_pool(analyze_model(model, (28, 28, 1)).rows):
        if (isinstance(row.spec, S.Conv) and all(k == 1 for k in row.spec.kernel_size)
                and row.input_shape[-1] == c and row.output_shape[-1] == r):
            return row.path
    raise ValueError(f"no 1x1 conv from {c} to {r} channels after the first stage of "
                     f"{config.id}")


def _pooled(x, y, w_rand):
    """Globally average-pooled features of one batch: the layer's input ``x: [B, H, W,
    C]``, its output after the ReLU (``y: [B, H, W, r]``) and the random 1x1's."""
    import jax
    import jax.numpy as jnp

    rand = jax.nn.relu(jnp.einsum("bhwc,cr->bhwr", x, w_rand))
    return {"x": x.mean((1, 2)), "learned": jax.nn.relu(y).mean((1, 2)),
            "random": rand.mean((1, 2))}


def _after_first_pool(rows):
    """The analysis rows after the first pooling layer (the second stage on)."""
    from convjax.analysis import specs as S

    pools = [i for i, row in enumerate(rows) if isinstance(row.spec, S.Pool)]
    return rows[pools[0] + 1:] if pools else ()


def probe_one(model, variables, path: str, train, test, pixel_images: int,
              random_key) -> dict:
    """The numbers of one trained network (see the module docstring)."""
    import jax.numpy as jnp
    import numpy as np

    from convjax import init as I
    from convjax import probe as P

    kernel = np.asarray(variables["params"][path]["kernel"])  # [1, 1, C, r]
    c, r = kernel.shape[-2:]
    w = kernel.reshape(c, r)
    w_rand = np.asarray(I.lecun_normal(random_key, (1, 1, c, r))).reshape(c, r)
    wr = (jnp.asarray(w_rand),)
    f_train = P.layer_io(model, variables, train.images, path, reduce=_pooled,
                         reduce_args=wr)
    f_test = P.layer_io(model, variables, test.images, path, reduce=_pooled,
                        reduce_args=wr)
    ytr, yte = np.asarray(train.labels), np.asarray(test.labels)
    probes = {f"probe_{k}": P.linear_probe(f_train[src], ytr, f_test[src], yte,
                                           num_classes=10)
              for k, src in (("32", "x"), ("learned", "learned"), ("random", "random"))}

    x, y = P.layer_io(model, variables, test.images[:pixel_images], path)
    n = len(x)
    x = np.asarray(x, np.float64).reshape(n, -1, c)
    learned = np.maximum(np.asarray(y, np.float64).reshape(n, -1, r), 0)
    random = np.maximum(x @ w_rand, 0)
    flat = x.reshape(-1, c)
    fractions = P.pca_fractions(flat)
    eigvec = np.linalg.eigh(np.cov(flat, rowvar=False))[1][:, ::-1][:, :r]
    pcs = x @ eigvec
    half = n // 2

    def r2(codes):
        return P.ridge_r2(codes[:half].reshape(-1, codes.shape[-1]), x[:half].reshape(-1, c),
                          codes[half:].reshape(-1, codes.shape[-1]), x[half:].reshape(-1, c))

    dead = int(np.sum(learned.reshape(-1, r).max(0) <= 0))
    return {"c": int(c), "r": int(r), "pca_curve": fractions.tolist(),
            "var_pca": float(fractions[r - 1]),
            "var_learned": P.subspace_fraction(flat, w),
            "var_random": P.subspace_fraction(flat, w_rand),
            "r2_learned": r2(learned), "r2_random": r2(random), "r2_pca": r2(pcs),
            **probes, "dead_learned_maps": dead, "pixels": int(flat.shape[0]),
            "probe_train_images": int(len(ytr)), "probe_test_images": int(len(yte))}


def reference_curve(model, variables, test, pixel_images: int) -> list[float]:
    """PCA curve of the plain network's 32 maps (the input of its second stage's conv):
    how many dimensions 32 maps made by a full 3x3 conv hold."""
    import numpy as np

    from convjax import probe as P
    from convjax.analysis import analyze_model
    from convjax.analysis import specs as S

    path = next(row.path for row in _after_first_pool(analyze_model(model, (28, 28, 1)).rows)
                if isinstance(row.spec, S.Conv))
    x, _ = P.layer_io(model, variables, test.images[:pixel_images], path)
    x = np.asarray(x, np.float64)
    return P.pca_fractions(x.reshape(-1, x.shape[-1])).tolist()


def summarize(rows: list[dict]) -> dict:
    """Per config: mean ± 95% t-interval over seeds of every metric."""
    from convjax import stats

    out = {}
    for cid in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == cid]
        out[cid] = {"r": mine[0]["r"], "seeds": [r["seed"] for r in mine],
                    **{k: stats.mean_ci([r[k] for r in mine]) for k, _ in METRICS}}
    return out


def _pm(ci: dict, pct: bool = True) -> str:
    scale = 100 if pct else 1
    mean = f"{scale * ci['mean']:.2f}" if pct else f"{ci['mean']:.3f}"
    if ci["n"] < 2:
        return mean
    half = f"{scale * ci['half_width']:.2f}" if pct else f"{ci['half_width']:.3f}"
    return f"{mean} ± {half}"


def markdown(settings: dict, rows: list[dict], summary: dict) -> str:
    lines = ["# What does a 1x1 conv keep? (bottleneck experiment, second stage: C = 32 "
             "maps to r)", "",
             f"Networks: {settings['experiment_dir']} ({settings['train']}). Held-out test "
             f"images: {settings['pixel_images']:,} for the per-pixel figures "
             f"({settings['pixels']:,} vectors of 32; R^2 fit on the first half of the "
             f"images, scored on the second), {settings['probe_test_examples']:,} for the "
             f"probes "
             f"(fit on {settings['probe_train_examples']:,} training images). Random: a "
             f"LeCun-normal 1x1 kernel of the same shape, no bias. Mean ± 95% t-interval "
             f"over seeds; percentages.", "",
             "| config | r | var. PCA top-r | var. learned span | var. random span | "
             "R^2 learned | R^2 random | R^2 PCA top-r | probe 32 maps | probe r learned | "
             "probe r random | network |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cid, s in summary.items():
        if cid != "reference":
            lines.append(f"| {cid} | {s['r']} | "
                         + " | ".join(_pm(s[k]) for k, _ in METRICS) + " |")
    ref = summary["reference"]
    rs = sorted({r["r"] for r in rows})
    lines += ["", f"Reference: the 32 maps of `{ref['config']}` (first stage a full 3x3 "
              f"conv, no 1x1), mean over its seeds: the best rank-r subspace holds "
              + ", ".join(f"{100 * ref['pca_curve_mean'][r - 1]:.2f}% at r = {r}"
                          for r in rs) + " of their variance."]
    lines += ["", "Per seed:", "",
              "| config | seed | " + " | ".join(k for k, _ in METRICS)
              + " | dead learned maps |", "|---|---|" + "---|" * (len(METRICS) + 1)]
    for r in rows:
        lines.append(f"| {r['config']} | {r['seed']} | "
                     + " | ".join(f"{100 * r[k]:.2f}" for k, _ in METRICS)
                     + f" | {r['dead_learned_maps']} of {r['r']} |")
    lines += ["", "Columns: " + "; ".join(f"{k}: {text}" for k, text in METRICS) + "."]
    return "\n".join(lines) + "\n"


def plot(path: str, rows: list[dict], summary: dict) -> None:
    """Variance captured vs r: each config's PCA curve (mean over seeds), its learned
    1x1 (filled) and random 1x1 (cross) at its r."""
    import numpy as np
    from matplotlib.figure import Figure

    from convjax.experiment import save_figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    configs = [(k, v) for k, v in summary.items() if k != "reference"]
    for (cid, s), color in zip(configs, colors * 4):
        curves = np.array([r["pca_curve"] for r in rows if r["config"] == cid])
        rs = np.arange(1, curves.shape[1] + 1)
        ax.plot(rs, 100 * curves.mean(0), color=color, lw=1, alpha=0.8,
                label=f"{cid}: best rank-r (PCA)")
        learned = [100 * r["var_learned"] for r in rows if r["config"] == cid]
        random = [100 * r["var_random"] for r in rows if r["config"] == cid]
        ax.scatter([s["r"]] * len(learned), learned, color=color, s=22, zorder=3,
                   label=f"learned 1x1 to r={s['r']} (per seed)")
        ax.scatter([s["r"]] * len(random), random, color=color, marker="x", s=22, zorder=3,
                   label=f"random 1x1 to r={s['r']}")
    ref = summary["reference"]
    ax.plot(np.arange(1, len(ref["pca_curve_mean"]) + 1),
            100 * np.asarray(ref["pca_curve_mean"]), color="black", lw=1.5, ls="--",
            label=f"{ref['config']}: best rank-r (PCA)")
    c = len(rows[0]["pca_curve"])
    ax.plot([0, c], [0, 100], color="gray", ls=":", lw=1, label="r / C (isotropic data)")
    ax.set_xlabel("r (dimensions kept of the C = 32 channel vector)")
    ax.set_ylabel("variance captured (%)")
    ax.set_xlim(0, c + 0.5)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("What the 1x1 reduction's span holds of the 32 maps' variance", fontsize=10)
    save_figure(fig, path)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    value, setting, quick_dir = _sweep.settings(SPECS, QUICK)
    experiment_dir, output_dir = quick_dir("experiment_dir"), quick_dir("output_dir")
    for flag in ("probe_train_examples", "probe_test_examples", "pixel_images"):
        if setting(flag) < 2:
            raise app.UsageError(f"--{flag} must be >= 2, got {setting(flag)}")
    from convjax import train as T

    T.default_xla_flags(value("xla_cpu_defaults"))
    import jax

    from convjax import data as D
    from convjax import experiment as E
    from convjax import models as M

    configs = list(setting("configs"))
    try:
        B.EXPERIMENT.select(configs)
        parsed = {cid: M.parse(cid) for cid in configs}
        for cid, cfg in parsed.items():
            if cfg.block != "bottleneck" or cfg.batch_norm:
                raise ValueError(f"{cid}: probes need a bottleneck block without batch norm")
        config = T.TrainConfig(
            model=configs[0], dataset=value("dataset"), epochs=value("epochs"),
            batch_size=value("batch_size"), optimizer=value("optimizer"),
            learning_rate=value("learning_rate"), warmup_epochs=value("warmup_epochs"),
            seed=value("seed"), seeds=setting("seeds"),
            train_examples=setting("train_examples"))
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    start = time.perf_counter()
    summary = E.run(B.EXPERIMENT, config, output_dir=experiment_dir,
                    configs=configs + [B.PLAIN], data_dir=value("data_dir"),
                    test_examples=value("test_examples"), parallel=value("parallel"),
                    seed_strategy=value("seed_strategy"))
    if summary["failures"]:
        print(f"training failed: {summary['failures']}")
        return 1
    accuracy = {(r["config_id"], r["seed"]): r["test_accuracy"]
                for r in E.read_results(experiment_dir)}
    train = D.load(value("dataset"), "train", data_dir=value("data_dir"))
    test = D.load(value("dataset"), "test", data_dir=value("data_dir"))
    n_train, n_test = setting("probe_train_examples"), setting("probe_test_examples")
    if n_train > len(train.labels) or n_test > len(test.labels):
        raise app.UsageError(f"--probe_train_examples ({n_train}) and --probe_test_examples "
                             f"({n_test}) must not exceed the splits ({len(train.labels)}, "
                             f"{len(test.labels)})")
    train = D.Split(train.images[:n_train], train.labels[:n_train])
    test = D.Split(test.images[:n_test], test.labels[:n_test])
    pixel_images = min(setting("pixel_images"), n_test)
    seeds = range(config.seed, config.seed + config.seeds)
    rows = []
    for cid in configs:
        model = M.get(cid)
        path = reduction_path(model, parsed[cid])
        for seed in seeds:
            variables = E.load_variables(experiment_dir, cid, seed)
            row = probe_one(model, variables, path, train, test, pixel_images,
                            jax.random.fold_in(jax.random.key(20261126), seed))
            rows.append({"config": cid, "seed": seed, "layer": path,
                         "network": accuracy[(cid, seed)], **row})
            print(f"{cid} seed {seed}: {path} {row['c']} -> {row['r']}: variance PCA "
                  f"{100 * row['var_pca']:.1f}%, learned {100 * row['var_learned']:.1f}%, "
                  f"random {100 * row['var_random']:.1f}%; R^2 learned "
                  f"{100 * row['r2_learned']:.1f}%, random {100 * row['r2_random']:.1f}%; "
                  f"probes 32 maps {100 * row['probe_32']:.1f}%, learned "
                  f"{100 * row['probe_learned']:.1f}%, random "
                  f"{100 * row['probe_random']:.1f}%", flush=True)
    reference = [reference_curve(M.get(B.PLAIN), E.load_variables(experiment_dir, B.PLAIN,
                                                                   seed), test, pixel_images)
                 for seed in seeds]
    stats = summarize(rows)
    stats["reference"] = {"config": B.PLAIN, "pca_curve_mean": [
        sum(v) / len(v) for v in zip(*reference)], "pca_curves": reference}
    settings = {"experiment_dir": experiment_dir, "configs": configs, "seeds": list(seeds),
                "train": f"{config.epochs} epoch(s) of {config.train_examples or 60000:,} "
                         f"training images, {config.optimizer} lr {config.learning_rate}",
                "probe_train_examples": n_train, "probe_test_examples": n_test,
                "pixel_images": pixel_images, "pixels": rows[0]["pixels"],
                "seconds": time.perf_counter() - start}
    os.makedirs(output_dir, exist_ok=True)
    text = markdown(settings, rows, stats)
    T.atomic_write(os.path.join(output_dir, "summary.md"), text.encode())
    T.write_json(os.path.join(output_dir, "results.json"),
                 {"settings": settings, "rows": rows, "summary": stats})
    plot(os.path.join(output_dir, "variance_captured.png"), rows, stats)
    print(text)
    print(f"files: {output_dir}/summary.md, results.json, variance_captured.png")
    return 0


if __name__ == "__main__":
    app.run(main)
