"""Rerun logging of episodes: images per camera, depth, segmentation, camera frusta,
actions and state as time series, the instruction as text.

Entity tree of one logged episode (``prefix`` defaults to ``episode``)::

    world                                  ViewCoordinates (z up, as in the scenes)
    world/<prefix>/cameras/<name>          Transform3D (world_from_camera) + Pinhole (K, RDF)
    world/<prefix>/cameras/<name>/rgb      Image
    world/<prefix>/cameras/<name>/depth    DepthImage (metres)
    world/<prefix>/cameras/<name>/segmentation  SegmentationImage (+ AnnotationContext labels)
    <prefix>/action/<dim>                  Scalars
    <prefix>/state/<dim>                   Scalars
    <prefix>/reward                        Scalars
    <prefix>/instruction                   TextDocument

Time lines: ``frame`` (sequence) and ``time`` (seconds at the store's fps).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cosmos_sim.data.episode import Episode

os.environ.setdefault("RERUN_ANALYTICS", "0")  # no network from a headless tool

import rerun as rr  # noqa: E402


def new_recording(app_id: str, out: Path | None = None, spawn: bool = False) -> rr.RecordingStream:
    """A recording that streams to `out` (an .rrd file) and/or a spawned viewer."""
    rec = rr.RecordingStream(app_id)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        rec.save(str(out))
    if spawn:
        rec.spawn(connect=out is None)
    rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    return rec


def _has_pose(m: np.ndarray) -> bool:
    return bool(np.isfinite(m).all())


def log_episode(
    rec: rr.RecordingStream,
    episode: Episode,
    *,
    fps: float,
    prefix: str = "episode",
    action_names: list[str] | None = None,
    state_names: list[str] | None = None,
    segmentation_labels: dict[int, str] | None = None,
    first_frame: int = 0,
) -> None:
    """Log one episode; frames are placed on the timelines from `first_frame`."""
    if segmentation_labels:
        rec.log(
            f"world/{prefix}/cameras",
            rr.AnnotationContext([(int(i), name) for i, name in segmentation_labels.items()]),
            static=True,
        )
    if episode.instruction:
        rec.log(f"{prefix}/instruction", rr.TextDocument(episode.instruction), static=True)
    a_names = action_names or [f"a{i}" for i in range(episode.action.shape[1])]
    s_names = state_names or [f"s{i}" for i in range(episode.state.shape[1])]
    for t in range(len(episode)):
        rec.set_time("frame", sequence=first_frame + t)
        rec.set_time("time", duration=(first_frame + t) / fps)
        for name, cam in episode.cameras.items():
            path = f"world/{prefix}/cameras/{name}"
            h, w = cam.rgb.shape[1:3]
            pose, k = cam.world_from_camera[t], cam.intrinsics[t]
            if _has_pose(pose):
                rec.log(path, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
            if _has_pose(k):
                rec.log(
                    path,
                    rr.Pinhole(
                        image_from_camera=k, resolution=[w, h], camera_xyz=rr.ViewCoordinates.RDF
                    ),
                )
            rec.log(f"{path}/rgb", rr.Image(cam.rgb[t]))
            if cam.depth is not None:
                depth = np.where(np.isfinite(cam.depth[t]), cam.depth[t], 0.0).astype(np.float32)
                rec.log(f"{path}/depth", rr.DepthImage(depth, meter=1.0))
            if cam.segmentation is not None:
                rec.log(f"{path}/segmentation", rr.SegmentationImage(cam.segmentation[t]))
        for i, n in enumerate(a_names):
            rec.log(f"{prefix}/action/{n}", rr.Scalars([float(episode.action[t, i])]))
        for i, n in enumerate(s_names):
            rec.log(f"{prefix}/state/{n}", rr.Scalars([float(episode.state[t, i])]))
        rec.log(f"{prefix}/reward", rr.Scalars([float(episode.reward[t])]))


def entity_paths(rrd: Path) -> list[str]:
    """The entities an .rrd file holds, read back with rerun's own reader."""
    from rerun.chunk import RrdReader

    return list(RrdReader(str(rrd)).stream().collect().schema().entity_paths())
