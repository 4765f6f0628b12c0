"""experiments.bottleneck_probe: the layer it probes (the script runs end to end in
test_experiments.py, on the bottleneck script's trained networks)."""

import pytest

from convjax import models


@pytest.mark.parametrize("model_id, path", [
    ("bottleneck-r8-k3-w32.64", "Conv_3"),
    # r = 32: stage 1's 1x1 up-projection is also 32 -> 32; the probe takes stage 2's
    ("bottleneck-r32-k3-w32.64", "Conv_3"),
    ("bottleneck-r8-k3-w32.64-res", "Conv_4"),  # stage 1's shortcut conv comes first
])
def test_the_probed_layer_is_the_second_stages_reduction(model_id, path):
    from experiments import bottleneck_probe as BP

    assert BP.reduction_path(models.get(model_id), models.parse(model_id)) == path
