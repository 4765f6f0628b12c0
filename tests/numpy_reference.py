"""Independent NumPy oracles with explicit loops (float64, small sizes only).

Written from the definitions, not from convjax's code: padding is derived here again,
windows are walked one output position and one kernel tap at a time.
"""

import math

import numpy as np


def pads_for(padding, sizes, windows, strides):
    """((lo, hi) per dim, circular) from a padding argument; TF's SAME rule by definition."""
    if isinstance(padding, str):
        if padding in ("SAME", "CIRCULAR"):
            pairs = []
            for n, k, s in zip(sizes, windows, strides):
                out = math.ceil(n / s)
                total = max((out - 1) * s + k - n, 0)
                pairs.append((total // 2, total - total // 2))  # extra one at the end
            return pairs, padding == "CIRCULAR"
        assert padding == "VALID"
        return [(0, 0)] * len(sizes), False
    if isinstance(padding, int):
        return [(padding, padding)] * len(sizes), False
    return [tuple(p) for p in padding], False


def _pad(x, pairs, circular, value=0.0):
    width = [(0, 0)] + list(pairs) + [(0, 0)]
    if circular:
        return np.pad(x, width, mode="wrap")
    return np.pad(x, width, mode="constant", constant_values=value)


def conv(x, k, *, stride, padding, dilation, groups=1):
    """x: [N, *S, C], k: [*K, C/groups, O] -> [N, *S', O], by explicit loops."""
    x = np.asarray(x, np.float64)
    k = np.asarray(k, np.float64)
    rank = k.ndim - 2
    window = k.shape[:rank]
    eff = [(kk - 1) * d + 1 for kk, d in zip(window, dilation)]
    pairs, circular = pads_for(padding, x.shape[1:-1], eff, stride)
    xp = _pad(x, pairs, circular)
    out = [(n - e) // s + 1 for n, e, s in zip(xp.shape[1:-1], eff, stride)]
    i, o = k.shape[-2:]
    og = o // groups
    y = np.zeros((x.shape[0], *out, o))
    for pos in np.ndindex(*out):
        for tap in np.ndindex(*window):
            src = tuple(p * s + t * d for p, t, s, d in zip(pos, tap, stride, dilation))
            xv = xp[(slice(None), *src)]  # [N, C]
            for g in range(groups):
                y[(slice(None), *pos, slice(g * og, (g + 1) * og))] += (
                    xv[:, g * i:(g + 1) * i] @ k[tap][:, g * og:(g + 1) * og])
    return y


def conv_transpose(y, k, *, stride, padding, dilation, in_spatial):
    """The adjoint of :func:`conv` (groups=1) by scattering each output back to its taps."""
    y = np.asarray(y, np.float64)
    k = np.asarray(k, np.float64)
    rank = k.ndim - 2
    window = k.shape[:rank]
    eff = [(kk - 1) * d + 1 for kk, d in zip(window, dilation)]
    pairs, circular = pads_for(padding, in_spatial, eff, stride)
    padded = [n + lo + hi for n, (lo, hi) in zip(in_spatial, pairs)]
    xp = np.zeros((y.shape[0], *padded, k.shape[-2]))
    for pos in np.ndindex(*y.shape[1:-1]):
        for tap in np.ndindex(*window):
            dst = tuple(p * s + t * d for p, t, s, d in zip(pos, tap, stride, dilation))
            xp[(slice(None), *dst)] += y[(slice(None), *pos)] @ k[tap].T
    x = np.zeros((y.shape[0], *in_spatial, k.shape[-2]))
    for pos in np.ndindex(*padded):
        src = []
        for p, n, (lo, _) in zip(pos, in_spatial, pairs):
            q = p - lo
            if circular:
                q %= n
            src.append(q)
        if all(0 <= q < n for q, n in zip(src, in_spatial)):
            x[(slice(None), *src)] += xp[(slice(None), *pos)]
    return x


def pool(x, window, stride, padding, mode, count_include_pad=False):
    """Max or average pooling by explicit loops over output positions."""
    x = np.asarray(x, np.float64)
    pairs, circular = pads_for(padding, x.shape[1:-1], window, stride)
    xp = _pad(x, pairs, circular, value=np.nan)
    out = [(n - k) // s + 1 for n, k, s in zip(xp.shape[1:-1], window, stride)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for pos in np.ndindex(*out):
        idx = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, stride, window))
        win = xp[(slice(None), *idx)].reshape(x.shape[0], -1, x.shape[-1])
        if mode == "max":
            y[(slice(None), *pos)] = np.nanmax(win, axis=1)
        elif count_include_pad:
            y[(slice(None), *pos)] = np.nansum(win, axis=1) / np.prod(window)
        else:
            y[(slice(None), *pos)] = np.nanmean(win, axis=1)
    return y
