"""State points: the homography from a normalised state pair to latent-grid coordinates
agrees with projecting the simulator's own site, and the DiT's maps peak where it says."""

import numpy as np
import pytest
import torch

from cosmos_sim.bridge.mujoco_sim import MujocoSim
from cosmos_sim.conditioning.points import (
    fixed_camera,
    mujoco_point_heights,
    planar_points,
    state_point_config,
)
from cosmos_sim.errors import CameraError


def test_planar_points_pairs_x_and_y_by_name():
    names = ["shoulder.pos", "ee.x", "ee.y", "block.x", "block.y", "block.yaw", "lone.x"]
    assert planar_points(names) == [("ee", 1, 2), ("block", 3, 4)]


def project(K, world_from_camera, point, image, grid):
    """A world point → latent-grid (column, row) the long way: camera frame, pixels, grid."""
    cam = np.linalg.inv(world_from_camera) @ np.append(point, 1.0)
    u, v, w = K @ cam[:3]
    (h, wd), (gh, gw) = image, grid
    return np.array([(u / w + 0.5) * gw / wd - 0.5, (v / w + 0.5) * gh / h - 0.5])


def test_homography_matches_the_simulators_sites_in_every_camera():
    sim = MujocoSim(
        "push", height=32, width=32, depth=False, segmentation=False, cameras=["front", "top"]
    )
    try:
        frame = sim.reset(seed=3)
        state = sim.state().astype(np.float64)
        sites = {n: sim.data.site(n).xpos.copy() for n, _, _ in planar_points(sim.state_names)}
    finally:
        sim.close()
    heights = mujoco_point_heights("push")
    assert set(heights) == {"ee", "block", "goal"} and heights["ee"] > heights["block"]
    # normalisation folded in: any mean / std must give the same grid point
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=state.size), rng.uniform(0.5, 2, size=state.size)
    cams = [frame.cameras[c] for c in ("front", "top")]
    config = state_point_config(
        sim.state_names,
        heights,
        mean,
        std,
        [(c.intrinsics, c.world_from_camera) for c in cams],
        (32, 32),
        (8, 8),
    )
    assert [p["name"] for p in config] == ["ee", "block", "goal"]
    for p in config:
        xn = (state[[p["x"], p["y"]]] - mean[[p["x"], p["y"]]]) / std[[p["x"], p["y"]]]
        for cam, flat in zip(cams, p["homographies"], strict=True):
            u, v, w = np.array(flat).reshape(3, 3) @ np.append(xn, 1.0)
            want = project(
                cam.intrinsics, cam.world_from_camera, sites[p["name"]], (32, 32), (8, 8)
            )
            np.testing.assert_allclose([u / w, v / w], want, atol=1e-6)
            assert ((-0.5 < want) & (want < 7.5)).all()  # in view: the grid is 8×8


def test_fixed_camera_refuses_a_moving_one():
    K = np.tile(np.eye(3), (4, 1, 1))
    poses = np.tile(np.eye(4), (4, 1, 1))
    assert fixed_camera(K, poses, "s.zarr:front")[1].shape == (4, 4)
    poses[2, 0, 3] = 0.1
    with pytest.raises(CameraError, match="fixed camera") as e:
        fixed_camera(K, poses, "s.zarr:front")
    assert "s.zarr:front" in str(e.value) and "world_from_camera" in str(e.value)
    poses[2, 0, 3] = np.nan
    with pytest.raises(CameraError, match="fixed camera"):
        fixed_camera(K, poses, "s.zarr:front")


def test_dit_state_point_maps_peak_at_the_projected_token_and_start_as_identity():
    from cosmos_sim.data.packing import Clip, pack_clips
    from cosmos_sim.models.dit import Conditioning, DiT, StatePoints, preset

    # view 0: identity (normalised state pair = grid column, row); view 1: shifted by 2 columns
    eye, shift = np.eye(3), np.array([[1.0, 0, 2], [0, 1, 0], [0, 0, 1]])
    pts = [
        {
            "name": "ee",
            "x": 0,
            "y": 1,
            "homographies": [eye.ravel().tolist(), shift.ravel().tolist()],
        }
    ]
    cfg = preset(
        "cpu-small",
        dim=48,
        depth=2,
        heads=2,
        text_vocab=0,
        latent_channels=4,
        action_dim=2,
        state_dim=3,
        state_points=pts,
    )
    states = torch.tensor([[3.0, 5.0, 0.0], [1.2, 0.0, 0.0]])  # one per frame
    clip = Clip(
        torch.randn(2, 4, 8, 8), 1, torch.zeros(2, 4, 2), view=torch.tensor([0, 1]), state=states
    )
    tb = pack_clips([clip], 1, [[0]])
    maps = StatePoints(cfg)(tb.states, tb.layout)  # (1, 128, 4)
    near = maps[0, :, 0].view(2, 8, 8)
    assert near[0].argmax() == 5 * 8 + 3  # frame 0, view 0: row 5, column 3
    assert near[1].argmax() == 0 * 8 + 3  # frame 1, view 1: (1.2 + 2, 0) → column 3
    torch.testing.assert_close(
        maps[0, 1, 2:], torch.tensor([3.0 - 1, 5.0 - 0]).clamp(-2, 2) * maps[0, 1, 0]
    )
    # zero-initialised projections: a fresh DiT ignores the points (post-training is safe)
    torch.manual_seed(0)
    dit = DiT(cfg)
    for block in dit.blocks:  # make the rest of the model non-trivial
        torch.nn.init.normal_(block.ada_ln[-1].weight, std=0.1)
    x, c_noise = tb.tokens, torch.zeros(tb.layout.frame_doc.shape)
    out = dit(x, c_noise, Conditioning.from_batch(tb))[1]  # hidden states (the output layer is 0)
    dit.points = None
    torch.testing.assert_close(out, dit(x, c_noise, Conditioning.from_batch(tb))[1])
    # ... and once trained, the frame depends on where the state puts the point
    torch.nn.init.normal_(dit.blocks[0].point_proj.weight, std=0.1)
    dit.points = StatePoints(cfg)
    moved = Conditioning.from_batch(tb)
    moved.states = tb.states + torch.tensor([2.0, 0.0, 0.0])
    assert (
        dit(x, c_noise, moved)[1] - dit(x, c_noise, Conditioning.from_batch(tb))[1]
    ).abs().max() > 1e-3
