"""User videos → frames: find them (paths, globs, folders), decode them with PyAV, and fit
every frame to a model's image size (centre crop to its aspect ratio, then cv2 INTER_AREA).

Frames are ``(T, H, W, 3)`` uint8 RGB, as an episode store's ``cameras/<name>/rgb``.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cosmos_sim.errors import ConfigError, FormatError, MissingExtraError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")


def expand_videos(patterns: Sequence[str | Path]) -> list[Path]:
    """Paths, globs (``clips/*.mp4``) and folders (their videos) → video files, in order."""
    out: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern))
            if not found:
                raise ConfigError("no file matches", path=pattern, field="--videos")
        elif Path(pattern).is_dir():
            found = sorted(p for p in Path(pattern).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif Path(pattern).exists():
            found = [Path(pattern)]
        else:
            raise ConfigError("no such video", path=pattern, field="--videos")
        out += [p for p in found if p not in out]
    return out


def fit_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H0, W0, 3) → (H, W, 3): centre crop to the aspect ratio of ``size``, INTER_AREA resize."""
    import cv2

    h, w = size
    h0, w0 = rgb.shape[:2]
    if h0 * w > w0 * h:  # taller than the target: crop rows
        keep = round(w0 * h / w)
        rgb = rgb[(h0 - keep) // 2 : (h0 - keep) // 2 + keep]
    else:
        keep = round(h0 * w / h)
        rgb = rgb[:, (w0 - keep) // 2 : (w0 - keep) // 2 + keep]
    return cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=cv2.INTER_AREA)


def decode_video(path: Path, size: tuple[int, int], stride: int = 1) -> np.ndarray:
    """(T, H, W, 3) uint8: every ``stride``-th frame of the first video stream, fitted to ``size``."""
    try:
        import av
    except ImportError as e:
        raise MissingExtraError("av", "video", "Decoding videos") from e
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FormatError("no video stream", path=path, field="streams")
            stream = container.streams.video[0]
            frames = [
                fit_frame(frame.to_ndarray(format="rgb24"), size)
                for i, frame in enumerate(container.decode(stream))
                if i % stride == 0
            ]
    except av.error.FFmpegError as e:
        raise FormatError(f"cannot decode the video ({e})", path=path) from e
    if not frames:
        raise FormatError("the video has no frames", path=path, field="frames", found=0)
    return np.stack(frames)
