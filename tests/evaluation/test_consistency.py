"""3-D consistency metrics on real renders: a cameranav episode (moving orbit camera) and a
push episode seen by two cameras, 32×32 with depth. The simulator's own frame must score far
below a frame that is shifted, blurred, or ignores the camera move / the other view."""

from __future__ import annotations

import numpy as np
import pytest

from cosmos_sim.bridge.mujoco_sim import MujocoSim, make_expert, rollout
from cosmos_sim.data.episode import CameraFrame, Episode
from cosmos_sim.errors import CameraError
from cosmos_sim.evaluation.consistency import (
    camera_consistency,
    consistency,
    cross_view_consistency,
    reproject,
)

SIZE = 32


def _episode(task: str, cameras: list[str], frames: int) -> Episode:
    sim = MujocoSim(task, cameras=cameras, height=SIZE, width=SIZE, segmentation=False)
    recorded = list(rollout(sim, make_expert(task, skill=1.0), seed=0))[:frames]
    sim.close()
    return Episode.from_frames(recorded, success=False)


@pytest.fixture(scope="module")
def orbit():
    return _episode("cameranav", ["orbit"], 64).cameras["orbit"]


@pytest.fixture(scope="module")
def two_views():
    ep = _episode("push", ["front", "side"], 40)
    return ep.cameras["front"], ep.cameras["side"]


def _shifted(frames: np.ndarray, pixels: int = 2) -> np.ndarray:
    return np.roll(frames, pixels, axis=2)


def _blurred(frames: np.ndarray) -> np.ndarray:
    """3×3 box blur of (T, H, W, 3) uint8 frames."""
    padded = np.pad(frames.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = frames.shape[1:3]
    box = sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
    return box.round().astype(np.uint8)


def _frame(series, t: int) -> CameraFrame:
    return CameraFrame(
        series.rgb[t],
        series.depth[t],
        intrinsics=series.intrinsics[t],
        world_from_camera=series.world_from_camera[t],
    )


def test_reprojecting_a_frame_into_its_own_camera_is_the_frame(orbit):
    frame = _frame(orbit, 10)
    warp = reproject(frame, frame)
    assert warp.valid.mean() > 0.95
    np.testing.assert_allclose(warp.rgb[warp.valid], frame.rgb[warp.valid] / 255.0, atol=1e-5)


@pytest.mark.parametrize("step", [1, 4])  # the next video frame; the next latent frame
def test_camera_consistency_floor_is_far_below_wrong_frames(orbit, step):
    own = camera_consistency(orbit, orbit.rgb, step)
    assert own.error == own.floor and own.pairs == 64 - step
    assert 0.3 < own.valid_fraction < 1 and own.floor < 0.02
    shifted = camera_consistency(orbit, _shifted(orbit.rgb), step)
    blurred = camera_consistency(orbit, _blurred(orbit.rgb), step)
    assert shifted.floor == own.floor and shifted.excess > 0
    assert shifted.error > 3 * own.floor
    assert blurred.error > 1.25 * own.floor
    if step == 4:  # a model that ignores the camera actions: the old view for the new pose
        stale = np.concatenate([orbit.rgb[:step], orbit.rgb[:-step]])
        assert camera_consistency(orbit, stale, step).error > 2 * own.floor


def test_cross_view_consistency_floor_is_far_below_wrong_views(two_views):
    front, side = two_views
    own = cross_view_consistency(front, side, side.rgb)
    assert own.error == own.floor < 0.02 and own.valid_fraction > 0.3
    assert cross_view_consistency(front, side, _shifted(side.rgb)).error > 1.8 * own.floor
    assert cross_view_consistency(front, side, _blurred(side.rgb)).error > 1.15 * own.floor
    # a model that copies the source view instead of rendering the other camera
    assert cross_view_consistency(front, side, front.rgb).error > 1.8 * own.floor
    back = cross_view_consistency(side, front, front.rgb)
    assert back.floor < 0.025 and back.valid_fraction > 0.3


def test_colour_matching_removes_a_global_brightness_change(orbit):
    darker = (orbit.rgb * 0.8).round().astype(np.uint8)
    matched = camera_consistency(orbit, darker, 4)
    raw = camera_consistency(orbit, darker, 4, match_colour=False)
    assert matched.error < 1.2 * matched.floor < raw.error


def test_bad_inputs_are_clear_errors(orbit):
    frame = _frame(orbit, 0)
    no_depth = CameraFrame(
        frame.rgb, None, intrinsics=frame.intrinsics, world_from_camera=frame.world_from_camera
    )
    with pytest.raises(CameraError, match="depth"):
        reproject(no_depth, frame)
    unknown = CameraFrame(frame.rgb, frame.depth)  # NaN K and pose
    with pytest.raises(CameraError, match="unknown camera"):
        consistency(frame, unknown, frame.rgb)
    with pytest.raises(CameraError, match="candidate frames"):
        camera_consistency(orbit, orbit.rgb[:-1])
    with pytest.raises(CameraError, match="frame and reprojection differ"):
        consistency(frame, _frame(orbit, 1), frame.rgb[:16])
