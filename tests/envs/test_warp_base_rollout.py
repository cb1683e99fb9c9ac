"""Camera-control models with a warp base (``warp_base = true``): tiny models trained 2 steps
on a tiny real cameranav store (tests/factories.py). The flagged model draws every new frame
over the env's first frame (or, ``warp_reference = "previous"``, the last frame it generated)
warped into the commanded camera; a model without the flag rolls out exactly as before (over
the previous latent frame)."""

from __future__ import annotations

import tomllib
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from factories import TINY_DIT, drive_beside_sim, tiny_world_model, variant_stores

import cosmos_sim  # noqa: F401  (registers the envs)
from cosmos_sim.conditioning.warp import decode_frames, reference_frames, warp_base_latents
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.envs.world_model_rollouts import WindowRollout
from cosmos_sim.errors import ConfigError
from cosmos_sim.models import zoo
from cosmos_sim.training import world_model_variants as variants
from cosmos_sim.training.world_model_task import (
    CHUNK,
    dataset_stats,
    load_sequences,
    train_world_model,
)

SIZE = 32
WM = "cosmos_sim/WorldModel-v0"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("warp-base")
    data = variant_stores(root, SIZE)
    return SimpleNamespace(
        data=data,
        plain=tiny_world_model(data.nav, data.tok, root / "plain", "camera"),
        warp=tiny_world_model(data.nav, data.tok, root / "warp", "camera", warp_base=True),
        previous=tiny_world_model(
            data.nav, data.tok, root / "prev", "camera", warp_base=True, warp_reference="previous"
        ),
    )


def _config(model_dir) -> dict:
    return tomllib.loads((model_dir / "config.toml").read_text())["config"]


def _record_bases(env) -> list[torch.Tensor]:
    """Every base (``previous``) the env's rollout hands the model's next_frame."""
    model, seen = env.unwrapped.vec.wm.model, []
    next_frame = model.next_frame

    def recording(*args, **kwargs):
        seen.append(kwargs["previous"].clone())
        return next_frame(*args, **kwargs)

    model.next_frame = recording
    return seen


def _rollout(env, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    frames = [obs["orbit"]]
    for a in actions:
        obs, *_, info = env.step(a)
        frames.append(info["frames"]["orbit"])
    return frames


def test_the_flag_is_in_the_config_only_when_set(models):
    assert _config(models.warp)["warp_base"] is True
    assert _config(models.warp)["warp_height"] == pytest.approx(0.0)  # cameranav's table top
    assert "warp_base" not in _config(models.plain)  # older models' configs stay as they were
    assert "warp_reference" not in _config(models.warp)  # the first frame: the default
    assert _config(models.previous)["warp_reference"] == "previous"


def test_a_model_without_the_flag_rolls_out_over_the_previous_frame_bit_for_bit(models):
    actions = np.random.default_rng(2).uniform(-1, 1, (3, 4, 5)).astype(np.float32)
    env = gym.make(WM, model=str(models.plain), sampler_steps=1, arm="policy")
    vec = env.unwrapped.vec
    assert vec.rollout.warp is None
    bases = _record_bases(env)
    latents, step = [], vec.rollout.step

    def recording_step(*args, **kwargs):  # the frames the rollout generates
        z, next_action = step(*args, **kwargs)
        latents.append(z.clone())
        return z, next_action

    vec.rollout.step = recording_step
    new = _rollout(env, 7, actions)
    # each step's base is the frame generated the step before (the reset frame first)
    for before, base in zip(latents[:-1], bases[1:], strict=True):
        torch.testing.assert_close(base, before, rtol=0, atol=0)
    # the rollout as built before the warp base existed (no tokenizer): the same frames
    vec.rollout = WindowRollout(
        vec.wm.model, vec.wm.context_frames, vec.rollout.intrinsics, vec.rollout.image_size
    )
    old = _rollout(env, 7, actions)
    for a, b in zip(new, old, strict=True):
        np.testing.assert_array_equal(a, b)
    env.close()


def test_a_flagged_model_draws_over_the_first_frame_warped_into_the_commanded_camera(models):
    env = gym.make(WM, model=str(models.warp), sampler_steps=1, arm="policy")
    nav = gym.make("cosmos_sim/CameraNav-v0", size=SIZE, arm="policy").unwrapped
    vec = env.unwrapped.vec
    bases = _record_bases(env)
    obs, _ = env.reset(seed=5)
    nav.reset(seed=5)
    k = nav.sim.intrinsics("orbit")
    actions = np.random.default_rng(1).uniform(-1, 1, (4, 4, 5)).astype(np.float32)
    poses, _ = drive_beside_sim(env, nav, actions)
    tok = vec.wm.tokenizer
    video = torch.from_numpy(obs["orbit"]).permute(2, 0, 1)[None, None].float() / 127.5 - 1
    reference = reference_frames(tok, tok.encode(video)[:, 0])  # (1, H, W, 3) the decoded reset
    for step, base in enumerate(bases):
        expected = warp_base_latents(
            tok, reference, k, poses[0][None], poses[step][None], poses[step + 1][None], 0.0, CHUNK
        )
        torch.testing.assert_close(base[:, 0], expected, atol=1e-5, rtol=1e-5)
    # a base of its own, not the previous frame: the camera moved, the warp moved the view
    assert (bases[-1] - bases[-2]).abs().max() > 1e-3
    env.close()
    nav.close()


def test_a_previous_frame_model_warps_the_last_frame_it_generated(models):
    env = gym.make(WM, model=str(models.previous), sampler_steps=1, arm="policy")
    nav = gym.make("cosmos_sim/CameraNav-v0", size=SIZE, arm="policy").unwrapped
    vec = env.unwrapped.vec
    bases, latents, step = _record_bases(env), [], vec.rollout.step

    def recording_step(*args, **kwargs):
        z, next_action = step(*args, **kwargs)
        latents.append(z.clone())
        return z, next_action

    vec.rollout.step = recording_step
    obs, _ = env.reset(seed=6)
    nav.reset(seed=6)
    actions = np.random.default_rng(3).uniform(-1, 1, (3, 4, 5)).astype(np.float32)
    poses, _ = drive_beside_sim(env, nav, actions)
    tok, k = vec.wm.tokenizer, nav.sim.intrinsics("orbit")
    video = torch.from_numpy(obs["orbit"]).permute(2, 0, 1)[None, None].float() / 127.5 - 1
    generated = torch.cat([tok.encode(video), *latents], 1)  # (1, 1 + steps, C, h, w)
    for step_, base in enumerate(bases):
        frame = decode_frames(tok, generated[:, : step_ + 1])[:, -1]  # newest frame's last
        p0, p1 = poses[step_][None], poses[step_ + 1][None]
        expected = warp_base_latents(tok, frame, k, p0, p0, p1, 0.0, CHUNK)
        torch.testing.assert_close(base[:, 0], expected, atol=1e-3, rtol=1e-3)
    env.close()
    nav.close()


@pytest.mark.parametrize("reference", ["first", "previous"])
def test_training_bases_are_the_warped_reference_frames_of_each_episode(models, reference):
    data = models.data
    store = EpisodeStore.open(data.nav)
    action_stats, state_stats = dataset_stats([store])
    tok = zoo.load_model(data.tok)
    seqs = load_sequences(
        [store], tok.latent_hash, ["orbit"], action_stats, state_stats, geometry=True
    )
    bases = variants.warp_base_sequences(seqs, [store], tok.module, 0.0, CHUNK, reference=reference)
    assert len(bases) == len(seqs.latents)
    for (_, e, _), lat, base in zip(seqs.key, seqs.latents, bases, strict=True):
        assert base.shape == lat.shape and base.dtype == np.float32
        np.testing.assert_array_equal(base[0], lat[0])  # the first frame is its own base
        w = store.read_window(e, 0, store.episode_length(e), fields=("world_from_camera",))
        poses = w["world_from_camera"]["orbit"].astype(np.float64)[::CHUNK][: len(lat)]
        k = store.read_window(e, 0, 1, fields=("intrinsics",))["intrinsics"]["orbit"][0]
        n = len(lat) - 1
        if reference == "first":
            frames = np.repeat(reference_frames(tok.module, torch.from_numpy(lat[:1])), n, 0)
            frame_poses = np.repeat(poses[:1], n, 0)
        else:  # the last video frame of each latent frame before: 0, c, 2c, …
            frames = decode_frames(tok.module, torch.from_numpy(lat[None]))[0, ::CHUNK][:n]
            frame_poses = poses[:-1]
        expected = warp_base_latents(
            tok.module, frames, k, frame_poses, poses[:-1], poses[1:], 0.0, CHUNK
        )
        np.testing.assert_allclose(base[1:], expected.numpy(), atol=1e-5)


def test_the_warp_base_is_refused_outside_the_camera_variant(models, tmp_path):
    data = models.data

    def refused(store, variant: str, field: str, **kw) -> None:
        with pytest.raises(ConfigError, match=field):
            train_world_model(
                [store], data.tok, tmp_path / variant, variant=variant, steps=1, batch_size=2,
                progress=False, warp_base=True, **kw,
            )  # fmt: skip

    refused(data.push, "action", "warp_base")
    refused(data.nav, "camera", "warp_reference", warp_reference="last")


def test_a_camera_renderer_refines_the_warp_and_is_the_rollouts_base(models, tmp_path):
    """train renderer on a camera model: a CameraRenderer over the first frame's warp, fitted
    (its error below the warp's own), saved with the state's planar points, the model switched
    to a first-frame warp. In the env each step's base is the renderer's frame over that
    step's warp, at the commanded camera, from the model's states; post-training the DiT
    over it carries the renderer along unchanged."""
    import shutil

    from cosmos_sim.training.renderer import CameraFrames, fit_renderer
    from cosmos_sim.training.world_model_task import export_world_model

    data = models.data
    wm = tmp_path / "wm"
    shutil.copytree(models.previous, wm)  # a previous-frame model: the renderer needs "first"
    result = fit_renderer(wm, [data.nav], steps=150, hidden=16, progress=False)
    cfg = _config(wm)
    assert cfg["renderer_hidden"] == 16 and "warp_reference" not in cfg  # "first"
    assert [p["name"] for p in cfg["renderer_points"]] == ["ee", "block", "goal"]
    assert cfg["renderer_points"][0]["height"] == pytest.approx(0.03)  # the ee site
    assert result["held_out_mse_from_first_frame"] is None  # 2 episodes: no held-out split
    model = zoo.load_model(wm).module.float()
    store = EpisodeStore.open(data.nav)
    action_stats, state_stats = dataset_stats([store])
    tok = zoo.load_model(data.tok)
    seqs = load_sequences(
        [store], tok.latent_hash, ["orbit"], action_stats, state_stats, geometry=True
    )
    seqs.base = variants.warp_base_sequences(seqs, [store], tok.module, 0.0, CHUNK)
    frames = CameraFrames.of(seqs)
    warp_error = np.mean(
        [
            ((b[1:] - x[1:]) ** 2).mean().item()
            for b, x in zip(frames.base, frames.latents, strict=True)
        ]
    )
    assert frames.error(model.renderer, None) < 0.8 * warp_error
    # the env: the renderer draws every base, over the warp, at the commanded camera
    env = gym.make(WM, model=str(wm), sampler_steps=1, arm="policy")
    nav = gym.make("cosmos_sim/CameraNav-v0", size=SIZE, arm="policy").unwrapped
    vec = env.unwrapped.vec
    bases, calls, warps = _record_bases(env), [], []
    render, warp_base = vec.wm.model.render_camera, vec.rollout.warp.base

    def recording_render(*args):
        calls.append((args, render(*args)))
        return calls[-1][1]

    def recording_warp(*args):
        warps.append(warp_base(*args))
        return warps[-1]

    vec.wm.model.render_camera, vec.rollout.warp.base = recording_render, recording_warp
    obs, _ = env.reset(seed=8)
    nav.reset(seed=8)
    actions = np.random.default_rng(4).uniform(-1, 1, (3, 4, 5)).astype(np.float32)
    poses, _ = drive_beside_sim(env, nav, actions)
    assert len(calls) == len(bases) == len(warps) == 3
    for step, ((args, out), base, warped) in enumerate(zip(calls, bases, warps, strict=True)):
        first, w, rays, k, pose, s_ref, s_prev, s_new = args
        torch.testing.assert_close(base[:, 0], out.to(base))  # the base is the renderer's
        torch.testing.assert_close(w, warped[:, 0].float())  # drawn over that step's warp
        np.testing.assert_allclose(pose[0].numpy(), poses[step + 1], atol=1e-5)
        torch.testing.assert_close(s_ref, calls[0][0][5])  # the reset's state throughout
        if step:  # the state it moved from is the one the step before moved to
            torch.testing.assert_close(s_prev, calls[step - 1][0][7])
    assert (bases[-1] - warps[-1]).abs().max() > 1e-4  # the renderer changed the warp
    env.close()
    nav.close()
    # post-training the DiT over the renderer: it comes along, frozen
    run = tmp_path / "post"
    train_world_model(
        [data.nav], data.tok, run, variant="camera", steps=2, batch_size=2, progress=False,
        checkpoint_every=2, dit_overrides=TINY_DIT, init=wm, warp_base=True,
    )  # fmt: skip
    exported = zoo.load_model(export_world_model(run, tmp_path / "post-wm"))
    post = exported.module
    assert exported.config["renderer"]["steps"] == 150  # how its renderer was fitted
    mine = model.state_dict()
    renderer = {k: v for k, v in post.state_dict().items() if k.startswith("renderer.")}
    assert renderer and all(torch.equal(v.float(), mine[k]) for k, v in renderer.items())
    with pytest.raises(ConfigError, match="warp_reference"):  # it refines the first frame's
        train_world_model(
            [data.nav], data.tok, tmp_path / "prev", variant="camera", steps=1, batch_size=2,
            progress=False, dit_overrides=TINY_DIT, init=wm, warp_base=True,
            warp_reference="previous",
        )  # fmt: skip
