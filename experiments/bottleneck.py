r"""1x1 bottlenecks vs plain 3x3 blocks on MNIST, with and without residual connections.

    python -m experiments.bottleneck --data_dir=../shared/data/mnist

Every config has two stages of widths 32 and 64, each ending in a 2x2 max pool, and the
same dense head (128 hidden units). A plain stage is one 3x3 conv; a bottleneck stage is
a 1x1 conv down to ``r`` channels, a 3x3 conv at ``r`` channels and a 1x1 conv up to the
stage width. The second stage's 1x1 takes the first stage's C = 32 maps down to r = 4, 8,
16 or 32 (C/8, C/4, C/2, C). ``-res`` adds the stage's input to its output (through a 1x1
conv where the width changes). Defaults: 5 seeds, 1 epoch of 16,000 training images
(8 minutes on a 2-core CPU); ``--quick`` trains two configs on 5,000 images.
"""

from __future__ import annotations

from absl import app

from convjax.experiment import MNIST_MARGIN_REASON, Experiment, Pair
from experiments import _sweep

REDUCE = (4, 8, 16, 32)
PLAIN = "plain-k3-w32.64"


def _ids(res: str) -> list[str]:
    return [PLAIN + res] + [f"bottleneck-r{r}-k3-w32.64{res}" for r in REDUCE]


EXPERIMENT = Experiment(
    name="bottleneck",
    title="1x1 bottlenecks vs plain 3x3 blocks (MNIST)",
    configs=tuple(_ids("") + _ids("-res")),
    pairs=tuple(
        [Pair(f"bottleneck-r{r}-k3-w32.64{res}", PLAIN + res,
              f"bottleneck r={r} vs plain 3x3{' (residual)' if res else ''}")
         for res in ("", "-res") for r in REDUCE]
        + [Pair(b + "-res", b, f"residual vs none ({b})") for b in _ids("")]),
    margin=0.2, margin_reason=MNIST_MARGIN_REASON,
    notes=("Stages of widths 32 and 64 (2x2 max pool after each), dense head 128. "
           "Bottleneck: 1x1 to r, 3x3 at r, 1x1 back to the stage width; the second "
           "stage's 1x1 reduces the first stage's C = 32 maps to r = C/8, C/4, C/2, C.",))

DEFAULTS = _sweep.Defaults(train_examples=16000, epochs=1,
                           quick_configs=(PLAIN, "bottleneck-r8-k3-w32.64"))
main = _sweep.script(EXPERIMENT, DEFAULTS, __name__)


if __name__ == "__main__":
    app.run(main)
