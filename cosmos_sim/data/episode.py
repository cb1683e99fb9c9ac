"""In-memory episodes: what every bridge produces and the store writes.

A bridge emits one :class:`Frame` per control step (streamed into the store as it
goes) or a whole :class:`Episode`. Arrays follow the store contract of DESIGN.md::

    CameraFrame             one camera at one time step
      rgb                (H, W, 3) uint8
      depth              (H, W)    float32  metres, distance to the image plane (NaN = unknown)
      segmentation       (H, W)    int32    object id per pixel (-1 = background)
      intrinsics         (3, 3)    float32  OpenCV K (NaN when unknown)
      world_from_camera  (4, 4)    float32  OpenCV camera-to-world (NaN when unknown)
    Frame
      cameras            {name: CameraFrame}
      action             (A,) float32  the action taken *after* this observation
      state              (S,) float32
      reward             float
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNKNOWN_INTRINSICS = np.full((3, 3), np.nan, dtype=np.float32)
UNKNOWN_POSE = np.full((4, 4), np.nan, dtype=np.float32)


@dataclass
class CameraFrame:
    rgb: np.ndarray
    depth: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    intrinsics: np.ndarray = field(default_factory=lambda: UNKNOWN_INTRINSICS.copy())
    world_from_camera: np.ndarray = field(default_factory=lambda: UNKNOWN_POSE.copy())


@dataclass
class Frame:
    cameras: dict[str, CameraFrame]
    action: np.ndarray
    state: np.ndarray
    reward: float = 0.0


@dataclass
class CameraSeries:
    """One camera over a whole episode: the Frame fields stacked on a time axis."""

    rgb: np.ndarray  # (T, H, W, 3) uint8
    depth: np.ndarray | None  # (T, H, W) float32
    segmentation: np.ndarray | None  # (T, H, W) int32
    intrinsics: np.ndarray  # (T, 3, 3) float32
    world_from_camera: np.ndarray  # (T, 4, 4) float32


@dataclass
class Episode:
    cameras: dict[str, CameraSeries]
    action: np.ndarray  # (T, A) float32
    state: np.ndarray  # (T, S) float32
    reward: np.ndarray  # (T,) float32
    success: bool
    instruction: str = ""

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def frames(self):
        """Iterate the episode as Frames (for streaming into a store)."""
        for t in range(len(self)):
            cams = {
                name: CameraFrame(
                    rgb=c.rgb[t],
                    depth=None if c.depth is None else c.depth[t],
                    segmentation=None if c.segmentation is None else c.segmentation[t],
                    intrinsics=c.intrinsics[t],
                    world_from_camera=c.world_from_camera[t],
                )
                for name, c in self.cameras.items()
            }
            yield Frame(cams, self.action[t], self.state[t], float(self.reward[t]))

    @classmethod
    def from_frames(cls, frames: list[Frame], success: bool, instruction: str = "") -> Episode:
        if not frames:
            raise ValueError("an episode needs at least one frame")
        cams = {}
        for name, first in frames[0].cameras.items():

            def get(attr: str, name: str = name) -> list[np.ndarray]:
                return [getattr(f.cameras[name], attr) for f in frames]

            cams[name] = CameraSeries(
                rgb=np.stack(get("rgb")),
                depth=None if first.depth is None else np.stack(get("depth")),
                segmentation=None if first.segmentation is None else np.stack(get("segmentation")),
                intrinsics=np.stack(get("intrinsics")).astype(np.float32),
                world_from_camera=np.stack(get("world_from_camera")).astype(np.float32),
            )
        return cls(
            cameras=cams,
            action=np.stack([f.action for f in frames]).astype(np.float32),
            state=np.stack([f.state for f in frames]).astype(np.float32),
            reward=np.array([f.reward for f in frames], dtype=np.float32),
            success=success,
            instruction=instruction,
        )
