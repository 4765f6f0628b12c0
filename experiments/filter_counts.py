r"""Filter counts on MNIST: 4 to 128 filters in the first stage, and a width multiplier
for all stages.

    python -m experiments.filter_counts --data_dir=../shared/data/mnist

Every config is two 3x3 stages, each ending in a 2x2 max pool, and the same dense head
(128 hidden units). ``plain-k3-w<F>.64`` varies the first stage's filters F = 4, 8, 16,
32, 64, 128 with the second stage fixed at 64; ``plain-k3-w32.64-x<m>`` scales both
stages (and so the dense head's input) by m = 0.25, 0.5, 2 (m = 1 is
``plain-k3-w32.64``). Defaults: 5 seeds, 1 epoch of 16,000 training images (8
minutes on a 2-core CPU); ``--quick`` trains F = 16 and 32 on 5,000 images.
"""

from __future__ import annotations

from absl import app

from convjax.experiment import MNIST_MARGIN_REASON, Experiment, Pair
from experiments import _sweep

FIRST = (4, 8, 16, 32, 64, 128)
MULT = ("0.25", "0.5", "1", "2")


def _first(f: int) -> str:
    return f"plain-k3-w{f}.64"


def _mult(m: str) -> str:
    return "plain-k3-w32.64" if m == "1" else f"plain-k3-w32.64-x{m}"


EXPERIMENT = Experiment(
    name="filter_counts",
    title="Filter counts: first-stage width and a width multiplier (MNIST)",
    configs=tuple(_first(f) for f in FIRST) + tuple(_mult(m) for m in MULT if m != "1"),
    pairs=tuple(Pair(_first(b), _first(a), f"{b} vs {a} first-stage filters")
                for a, b in zip(FIRST, FIRST[1:]))
    + tuple(Pair(_mult(b), _mult(a), f"width x{b} vs x{a}") for a, b in zip(MULT, MULT[1:])),
    margin=0.2, margin_reason=MNIST_MARGIN_REASON,
    notes=("Two 3x3 stages (2x2 max pool after each), dense head 128. w<F>.64: F filters "
           "in the first stage, 64 in the second. x<m>: both stages scaled by m from "
           "32 and 64.",))

DEFAULTS = _sweep.Defaults(train_examples=16000, epochs=1,
                           quick_configs=(_first(16), _first(32)))
main = _sweep.script(EXPERIMENT, DEFAULTS, __name__)


if __name__ == "__main__":
    app.run(main)
