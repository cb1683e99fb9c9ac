"""Multi-view clips folded into the time axis (the Cosmos multi-view trick).

``V`` cameras over ``T`` latent frames become ``T·V`` frames, time-major, each with a time
index (its causal block: views of one instant see each other) and a view index (a learned
view embedding in the DiT)::

    views (B, V, T, ...)   →   folded (B, T·V, ...):  t0v0 t0v1 t0v2 t1v0 t1v1 ...
                               time = 0 0 0 1 1 1 ...,  view = 0 1 2 0 1 2 ...
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cosmos_sim.errors import ConfigError


@dataclass
class FoldedViews:
    x: Tensor  # (B, T·V, ...)
    time: Tensor  # (T·V,) long
    view: Tensor  # (T·V,) long
    n_views: int


def fold_views(x: Tensor) -> FoldedViews:
    """(B, V, T, ...) per-camera frames → (B, T·V, ...) with time and view indices."""
    b, v, t = x.shape[:3]
    folded = x.transpose(1, 2).reshape(b, t * v, *x.shape[3:])  # (B, T, V, ...) → (B, T·V, ...)
    time = torch.arange(t).repeat_interleave(v)
    view = torch.arange(v).repeat(t)
    return FoldedViews(folded, time, view, v)


def unfold_views(x: Tensor, n_views: int) -> Tensor:
    """(B, T·V, ...) → (B, V, T, ...): the inverse of :func:`fold_views`."""
    b, tv = x.shape[:2]
    if tv % n_views:
        raise ConfigError(
            "frames are not a multiple of the views",
            field="n_views",
            expected=f"divisor of {tv}",
            found=n_views,
        )
    t = tv // n_views
    return x.reshape(b, t, n_views, *x.shape[2:]).transpose(1, 2)
