"""Pure functional ops on arrays with explicit layouts (see :mod:`convjax.layout`)."""

from convjax.functional.conv import conv, conv_transpose, pointwise
from convjax.functional.pooling import avg_pool, global_avg_pool, global_max_pool, max_pool

__all__ = ["conv", "pointwise", "conv_transpose", "max_pool", "avg_pool",
           "global_avg_pool", "global_max_pool"]
