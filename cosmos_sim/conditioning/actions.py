"""Actions as world-model conditioning: per-dimension normalisation and per-latent-frame chunks.

The causal tokenizer maps ``1 + c·k`` video frames to ``1 + k`` latent frames (c = 4).
Latent frame ``j ≥ 1`` covers video frames ``c(j−1)+1 … cj``; the actions that *lead
into* it are the ``c`` actions taken after frames ``c(j−1) … cj−1``::

    video frames   0 | 1 2 3 4 | 5 6 7 8 |
    actions        a0 a1 a2 a3 | a4 a5 a6 a7 | a8 ...   (a_i is taken after frame i)
    latent frames  0 |    1    |    2    |
    chunks         - | a0..a3  | a4..a7  |      chunk 0 is zero (nothing leads into it)

One world-model env step therefore consumes one chunk of ``c`` actions.
Statistics live beside the model as ``stats.json``::

    {"action_mean": [...A floats], "action_std": [...A floats], "count": N}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_sim.errors import ActionError

STD_FLOOR = 1e-6  # a constant dimension normalises to 0 instead of dividing by zero


def check_actions(
    actions, action_dim: int, field: str = "action", path=None, chunk: int | None = None
) -> None:
    """Refuse a wrong last dimension (or chunk size) and non-finite values, naming ``field``."""
    shape = tuple(actions.shape)
    if (
        not shape
        or shape[-1] != action_dim
        or (chunk is not None and (len(shape) < 2 or shape[-2] != chunk))
    ):
        want = f"(..., {chunk}, {action_dim})" if chunk is not None else f"(..., {action_dim})"
        raise ActionError("wrong action shape", path=path, field=field, expected=want, found=shape)
    finite = (
        torch.isfinite(actions).all()
        if isinstance(actions, torch.Tensor)
        else np.isfinite(actions).all()
    )
    if not bool(finite):
        raise ActionError(
            "non-finite action values (NaN or inf)",
            path=path,
            field=field,
            expected="finite",
            found="NaN/inf",
        )


@dataclass
class ActionStats:
    """Per-dimension mean and standard deviation of a store's actions."""

    mean: np.ndarray  # (A,) float32
    std: np.ndarray  # (A,) float32
    count: int = 0

    @property
    def action_dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_actions(cls, actions: np.ndarray, field: str = "action") -> ActionStats:
        """Statistics of (T, A) actions, e.g. ``store["action"]`` over every episode."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise ActionError(
                "need a non-empty (T, A) array", field=field, expected="(T, A)", found=actions.shape
            )
        check_actions(actions, actions.shape[1], field)
        return cls(
            actions.mean(0).astype(np.float32), actions.std(0).astype(np.float32), len(actions)
        )

    @classmethod
    def from_store(cls, *stores) -> ActionStats:
        """Statistics over every complete episode of one or more episode stores."""
        chunks = [
            store.read_window(i, 0, store.episode_length(i), cameras=[], fields=("action",))[
                "action"
            ]
            for store in stores
            for i in range(len(store))
        ]
        if not chunks:
            raise ActionError("no episodes to compute action statistics from", field="action")
        return cls.from_actions(np.concatenate(chunks), field="action")

    def normalize(self, actions):
        """(..., A) → (..., A) zero-mean, unit-variance per dimension (numpy or torch)."""
        check_actions(actions, self.action_dim)
        mean, std = self._like(actions)
        return (actions - mean) / std

    def denormalize(self, actions):
        mean, std = self._like(actions)
        return actions * std + mean

    def _like(self, x):
        std = np.maximum(self.std, STD_FLOOR)
        if isinstance(x, torch.Tensor):
            return torch.as_tensor(self.mean, dtype=x.dtype), torch.as_tensor(std, dtype=x.dtype)
        return self.mean, std

    def to_dict(self) -> dict:
        return {
            "action_mean": self.mean.tolist(),
            "action_std": self.std.tolist(),
            "count": self.count,
        }

    def save(self, path: str | Path) -> None:
        """Write ``stats.json`` atomically (never a partial file)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".stats-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> ActionStats:
        try:
            d = json.loads(Path(path).read_text())
            mean = np.asarray(d["action_mean"], dtype=np.float32)
            std = np.asarray(d["action_std"], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ActionError(
                f"cannot read action statistics: {e}", path=path, field="action_mean/action_std"
            ) from e
        if (
            mean.shape != std.shape
            or mean.ndim != 1
            or not np.all(np.isfinite(mean))
            or not np.all(std >= 0)
        ):
            raise ActionError(
                "inconsistent statistics",
                path=path,
                field="action_std",
                expected=mean.shape,
                found=std.shape,
            )
        return cls(mean, std, int(d.get("count", 0)))


def chunk_actions(actions, chunk: int = 4, field: str = "action"):
    """(1 + c·k, A) per-frame actions of a clip → ((1 + k), c, A) chunks per latent frame.

    Chunk ``j ≥ 1`` holds the actions taken after video frames ``c(j−1) … cj−1``; chunk 0
    is zeros (no action leads into the first frame). The clip's last action (taken after
    its last frame) is not used. Works on numpy arrays and torch tensors.
    """
    n = actions.shape[0]
    if actions.ndim != 2 or (n - 1) % chunk:
        raise ActionError(
            f"clip actions must be (1 + {chunk}k, A)",
            field=field,
            expected=f"(1 + {chunk}k, A)",
            found=tuple(actions.shape),
        )
    check_actions(actions, actions.shape[1], field)
    k, a = (n - 1) // chunk, actions.shape[1]
    body = actions[: k * chunk].reshape(k, chunk, a)
    lib = torch if isinstance(actions, torch.Tensor) else np
    zero = lib.zeros_like(body[:1]) if k else lib.zeros((1, chunk, a), dtype=actions.dtype)
    return lib.concatenate([zero, body]) if lib is np else torch.cat([zero, body])


def n_latent_frames(n_frames: int, chunk: int = 4) -> int:
    """Video frames → latent frames of the causal tokenizer (1 + ⌈(T−1)/c⌉)."""
    return 1 + math.ceil((n_frames - 1) / chunk)
