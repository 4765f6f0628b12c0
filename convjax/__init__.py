"""convjax: convolutional networks in JAX with explicit layouts.

Activations are NWC / NHWC / NDHWC and kernels WIO / HWIO / DHWIO (see
:mod:`convjax.layout`). The ops are pure functions of arrays that work under ``jax.jit``,
``jax.grad`` and ``jax.vmap``.

Modules, in import order (each imports only those before it):
``layout`` -> ``functional`` -> ``init`` -> ``reference`` -> ``analysis`` -> ``layers``
-> ``models`` -> ``fcn`` -> ``probe`` -> ``data``. ``convjax.fcn.to_fully_convolutional``
turns a trained model's ``flatten -> dense`` head into convolutions (any input size);
``convjax.probe`` measures what a layer keeps (variance, reconstruction, linear probes).
Activations are ``jax.nn``'s (``jax.nn.relu``...). ``python -m convjax.explain`` prints
the exact table of a conv stack (:mod:`convjax.analysis`).
"""

from convjax import (analysis, data, fcn, functional, init, layers, layout, models, probe,
                     reference)
from convjax.functional import (avg_pool, batch_norm, conv, conv_transpose, dense,
                                depthwise_conv, dropout, flatten, global_avg_pool,
                                global_max_pool, max_pool, pointwise, separable_conv)

__version__ = "0.1.0"

__all__ = ["layout", "functional", "init", "reference", "analysis", "layers", "models", "fcn",
           "probe", "data",
           "conv", "pointwise", "conv_transpose", "depthwise_conv", "separable_conv", "dense", "flatten", "dropout", "batch_norm",
           "max_pool", "avg_pool", "global_avg_pool", "global_max_pool", "__version__"]
