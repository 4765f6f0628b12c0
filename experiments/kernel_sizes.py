r"""Kernel sizes on MNIST: 1, 3, 5, 7 at matched filter counts, and the VGG argument
measured: one 5x5 vs two stacked 3x3, one 7x7 vs three stacked 3x3.

    python -m experiments.kernel_sizes --data_dir=../shared/data/mnist

Every config has two stages of 32 and 64 filters, each ending in a 2x2 max pool, and the
same dense head (128 hidden units). ``plain-k<k>`` has one k x k conv per stage;
``stacked-n<n>`` has n 3x3 convs per stage (ReLU between them), whose receptive field
matches one (2n+1) x (2n+1) conv with fewer weights per stage (n * 9 * C^2 vs
(2n+1)^2 * C^2 at equal widths) but more nonlinearities and activations. Defaults: 5
seeds, 1 epoch of 10,000 training images (7 minutes on a 2-core CPU: the 7x7 and
stacked configs cost 5 to 8 times the FLOPs of the 3x3 one); ``--quick`` trains 3x3
and 5x5 on 5,000 images.
"""

from __future__ import annotations

from absl import app

from convjax.experiment import MNIST_MARGIN_REASON, Experiment, Pair
from experiments import _sweep

K = {k: f"plain-k{k}-w32.64" for k in (1, 3, 5, 7)}
STACKED = {n: f"stacked-n{n}-w32.64" for n in (2, 3)}

EXPERIMENT = Experiment(
    name="kernel_sizes",
    title="Kernel sizes, and stacked 3x3 vs one large kernel (MNIST)",
    configs=tuple(K.values()) + tuple(STACKED.values()),
    pairs=(Pair(K[3], K[1], "3x3 vs 1x1 (a 1x1 trunk sees one pixel per stage)"),
           Pair(K[5], K[3], "5x5 vs 3x3"),
           Pair(K[7], K[5], "7x7 vs 5x5"),
           Pair(STACKED[2], K[5], "two stacked 3x3 vs one 5x5 (same 5x5 receptive field)"),
           Pair(STACKED[3], K[7], "three stacked 3x3 vs one 7x7 (same 7x7 receptive "
                                  "field)")),
    margin=0.2, margin_reason=MNIST_MARGIN_REASON,
    notes=("Stages of 32 and 64 filters (2x2 max pool after each), dense head 128. "
           "stacked-n2 / stacked-n3: two / three 3x3 convs per stage with ReLUs between, "
           "the receptive field of one 5x5 / 7x7.",))

DEFAULTS = _sweep.Defaults(train_examples=10000, epochs=1, quick_configs=(K[3], K[5]))
main = _sweep.script(EXPERIMENT, DEFAULTS, __name__)


if __name__ == "__main__":
    app.run(main)
