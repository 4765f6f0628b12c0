"""Pure functional ops on arrays with explicit layouts (see :mod:`convjax.layout`).

Activations are not wrapped: use ``jax.nn.relu``, ``jax.nn.gelu``, ``jax.nn.softmax``...
"""

from convjax.functional.conv import (conv, conv_transpose, depthwise_conv, pointwise,
                                     separable_conv)
from convjax.functional.dense import dense, dropout, flatten
from convjax.functional.norm import batch_norm
from convjax.functional.pooling import avg_pool, global_avg_pool, global_max_pool, max_pool

__all__ = ["conv", "pointwise", "conv_transpose", "depthwise_conv", "separable_conv",
           "dense", "flatten", "dropout", "batch_norm", "max_pool", "avg_pool",
           "global_avg_pool", "global_max_pool"]
