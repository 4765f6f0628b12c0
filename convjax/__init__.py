"""convjax: convolutional networks in JAX with explicit layouts.

Activations are NWC / NHWC / NDHWC and kernels WIO / HWIO / DHWIO (see
:mod:`convjax.layout`). The ops are pure functions of arrays that work under ``jax.jit``,
``jax.grad`` and ``jax.vmap``.

Modules, in import order (each imports only those before it):
``layout`` -> ``functional``.
"""

from convjax import layout
from convjax.functional import (avg_pool, conv, conv_transpose, global_avg_pool,
                                global_max_pool, max_pool, pointwise)

__version__ = "0.1.0"

__all__ = ["layout", "conv", "pointwise", "conv_transpose", "max_pool", "avg_pool",
           "global_avg_pool", "global_max_pool", "__version__"]
