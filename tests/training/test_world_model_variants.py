"""World-model post-training variants on tiny real stores: a cameranav store (moving orbit
camera) and a 2-camera push store, recorded and tokenized here → batches → 2 training steps
→ export → load, and the clear errors for data a variant cannot use."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from factories import TINY_DIT, synthetic_frame, tiny_spec, variant_stores

from cosmos_sim.bridge.record import MujocoSource, record
from cosmos_sim.conditioning.rays import plucker_rays
from cosmos_sim.data.episode import UNKNOWN_POSE
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError, StoreError
from cosmos_sim.models import zoo
from cosmos_sim.models.dit import PRESETS, hash_instruction
from cosmos_sim.models.world_model import ActionWorldModel
from cosmos_sim.training.tokenizer_task import tokenize_store
from cosmos_sim.training.world_model_task import (
    CHUNK,
    LatentClipLoader,
    build_model,
    dataset_stats,
    export_world_model,
    fold_cameras,
    load_sequences,
    train_world_model,
)
from cosmos_sim.training.world_model_variants import clip_rays

SIZE = 32
LATENT = (16, SIZE // 8, SIZE // 8)
NAV_ACTIONS = ["cam_yaw", "cam_pitch", "cam_dolly", "ee_vx", "ee_vy"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 2-episode cameranav store (orbit camera) and a 2-episode push store (front + side),
    32×32, tokenized by one tiny untrained tokenizer."""
    return variant_stores(tmp_path_factory.mktemp("variants"), SIZE)


def _sequences(data, store_path, cameras, **kwargs):
    store = EpisodeStore.open(store_path)
    action_stats, state_stats = dataset_stats([store])
    seqs = load_sequences([store], data.hash, cameras, action_stats, state_stats, **kwargs)
    return store, seqs


def _window_of(seqs, latents: torch.Tensor) -> tuple[int, int]:
    """(sequence, start) of the clip whose latents are ``latents`` (T, …)."""
    t = latents.shape[0]
    for i, lat in enumerate(seqs.latents):
        for start in range(len(lat) - t + 1):
            if np.array_equal(lat[start : start + t], latents.numpy()):
                return i, start
    raise AssertionError("clip not found in the sequences")


def test_camera_rays_are_relative_to_the_first_context_frame(data):
    store, seqs = _sequences(data, data.nav, ["orbit"], geometry=True)
    assert seqs.intrinsics[0].shape == (len(seqs.latents[0]), 3, 3)
    loader = LatentClipLoader(seqs, frames=4, batch_size=3, n_context=2, seed=0)
    batch = loader.batch(0)
    rays = batch["rays"]
    assert rays.shape == (3, 4, 6, *LATENT[1:]) and rays.dtype == torch.float32
    for clip in range(3):
        i, start = _window_of(seqs, batch["latents"][clip])
        e = seqs.key[i][1]
        # the first context frame's camera is the reference: identity pose, zero moment
        identity = plucker_rays(seqs.intrinsics[i][start], np.eye(4), *LATENT[1:])
        torch.testing.assert_close(rays[clip, 0], identity)
        assert rays[clip, 0, 3:].abs().max() < 1e-6
        # every frame: K of its last video frame (image → latent grid) and its pose,
        # relative to the clip's first frame, straight from the store
        w = store.read_window(
            e,
            0,
            store.episode_length(e),
            cameras=["orbit"],
            fields=("intrinsics", "world_from_camera"),
        )
        last = (start + np.arange(4)) * CHUNK
        pose = w["world_from_camera"]["orbit"][last].astype(np.float64)
        expected = plucker_rays(
            w["intrinsics"]["orbit"][last], pose, *LATENT[1:], pose[0], image_size=(SIZE, SIZE)
        )
        torch.testing.assert_close(rays[clip], expected, atol=1e-5, rtol=1e-5)
    assert (rays[:, -1] - rays[:, 0]).abs().amax() > 1e-2  # the camera moved within the clips
    # training draws the context length: the reference is still each clip's first frame
    drawn = LatentClipLoader(seqs, frames=4, batch_size=3, n_context=None, seed=0)
    for k in range(4):
        b = drawn.batch(k)
        assert b["rays"].shape[:2] == b["latents"].shape[:2] == (3, b["n_context"] + 1)
        assert b["rays"][:, 0, 3:].abs().max() < 1e-6
    # invariant to the world origin: move the whole world, the rays stay
    k, pose = (
        torch.from_numpy(seqs.intrinsics[0][:4]),
        torch.from_numpy(seqs.world_from_camera[0][:4]),
    )
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, :3] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    shift[:3, 3] = torch.tensor([3.0, -2.0, 0.5])
    torch.testing.assert_close(
        clip_rays(k[None], (shift @ pose)[None], LATENT[1:]),
        clip_rays(k[None], pose[None], LATENT[1:]),
        atol=1e-5,
        rtol=1e-5,
    )


def test_multiview_batch_folds_views_into_time(data):
    cams = ["front", "side"]
    store, per_camera = _sequences(data, data.push, cams)
    seqs = fold_cameras(per_camera, cams)
    assert len(seqs.latents) == 2 and seqs.latents[0].shape[1:] == (2, *LATENT)
    loader = LatentClipLoader(seqs, frames=3, batch_size=2, n_context=2, seed=0)
    b = loader.batch(0)
    assert b["latents"].shape == (2, 6, *LATENT) and b["n_context"] == 4  # 2 steps × 2 views
    assert b["time"].tolist() == [[0, 0, 1, 1, 2, 2]] * 2
    assert b["view"].tolist() == [[0, 1, 0, 1, 0, 1]] * 2  # position in the model's cameras
    for clip in range(2):  # view 0 is the front camera, view 1 the side camera, same instants
        i, start = _window_of(per_camera, b["latents"][clip, 0::2])
        assert per_camera.key[i][2] == "front"
        side = per_camera.key.index((0, per_camera.key[i][1], "side"))
        np.testing.assert_array_equal(
            b["latents"][clip, 1::2].numpy(), per_camera.latents[side][start : start + 3]
        )
    a = store.spec.action_dim
    assert b["step_actions_all"].shape == (2, 3, CHUNK, a) and b["step_state"].shape[1] == 3
    torch.testing.assert_close(b["actions"][:, 0::2], b["actions"][:, 1::2])  # one chunk per step
    torch.testing.assert_close(b["state"][:, 0::2], b["step_state"])
    torch.testing.assert_close(b["actions"][:, 0::2], b["step_actions_all"])

    model = build_model(
        "cpu-small", a, b["step_state"].shape[-1], LATENT, folded_views=True, **TINY_DIT
    )
    tb = model.wm.token_batch(
        {k: b[k] for k in ("latents", "n_context", "actions", "time", "view")}
    )
    assert tb.is_target.sum(1).tolist() == [2, 2]  # both views of the next time step
    assert tb.layout.frame_time[:, :6].tolist() == b["time"].tolist()
    index, found = tb.layout.previous_frame_tokens()
    target = tb.is_target.gather(1, tb.layout.token_frame)
    assert found[target].all()  # the residual base: the same view one time step earlier
    prev = tb.layout.token_frame.gather(1, index)[target]
    here = tb.layout.token_frame[target]
    assert (prev == here - 2).all()
    loss, metrics = model.training_step(b)
    assert torch.isfinite(loss) and "loss_dynamics" in metrics


def test_action_batches_carry_no_variant_keys(data):
    _, seqs = _sequences(data, data.nav, ["orbit"])
    b = LatentClipLoader(seqs, frames=3, batch_size=2, seed=0).batch(0)
    assert set(b) == {
        "actions_all",
        "latents",
        "n_context",
        "actions",
        "reward",
        "success",
        "state",
    }


def test_instruction_ids_come_from_the_episode(data):
    store, seqs = _sequences(data, data.nav, ["orbit"], text_vocab=64)
    text = store.instructions[0]
    assert text  # cameranav: "keep the green block in the centre of the view"
    np.testing.assert_array_equal(seqs.instruction_ids[0], hash_instruction(text, 64).numpy())
    b = LatentClipLoader(seqs, frames=3, batch_size=2, seed=0).batch(0)
    assert b["instruction_ids"].shape == (2, len(text.split())) and b["instruction_ids"].min() >= 2


@pytest.mark.parametrize(
    ("variant", "store", "expected"),
    [
        ("action", "nav", {"views": 1, "rays": False, "instruction": False, "cameras": ["orbit"]}),
        (
            "camera",
            "nav",
            {
                "views": 1,
                "rays": True,
                "ray_reference": "first-context-frame",
                "instruction": False,
                "cameras": ["orbit"],
                "action_names": NAV_ACTIONS,
            },
        ),
        ("multiview", "push", {"views": 2, "rays": False, "cameras": ["front", "side"]}),
        ("instruction", "nav", {"views": 1, "rays": False, "instruction": True}),
    ],
)
def test_train_export_and_load(data, tmp_path, variant, store, expected):
    run = tmp_path / "run"
    summary = train_world_model(
        [getattr(data, store)],
        data.tok,
        run,
        variant=variant,
        steps=2,
        batch_size=2,
        progress=False,
        checkpoint_every=2,
        dit_overrides=TINY_DIT,
    )
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    loaded = zoo.load_model(export_world_model(run, tmp_path / "wm"))
    assert loaded.config["variant"] == variant
    assert {k: loaded.config.get(k) for k in expected} == expected
    assert "ray_reference" in loaded.config or not expected["rays"]
    model = loaded.module
    assert type(model) is ActionWorldModel  # folded views train a subclass, same weights
    dit = model.cfg.wm.dit
    assert dit.rays == expected["rays"]
    assert dit.text_vocab == (PRESETS["cpu-small"].text_vocab if variant == "instruction" else 0)
    # the exported model consumes the variant's batches
    cams = loaded.config["cameras"]
    _, seqs = _sequences(
        data,
        getattr(data, store),
        cams,
        geometry=dit.rays,
        text_vocab=dit.text_vocab,
    )
    if variant == "multiview":
        seqs = fold_cameras(seqs, cams)
    batch = LatentClipLoader(seqs, frames=3, batch_size=2, n_context=2, seed=1).batch(0)
    model.eval()
    with torch.no_grad():
        out = model.wm.training_step({k: v for k, v in batch.items() if not k.startswith("step_")})
    assert np.isfinite(out[1]["loss"])


@pytest.fixture(scope="module")
def odd_stores(data):
    """Stores a variant cannot use: unknown camera poses, no instructions (synthetic), and a
    push store with the front camera only."""
    no_poses = EpisodeStore.create(data.root / "no-poses.zarr", tiny_spec())
    no_text = EpisodeStore.create(data.root / "no-text.zarr", tiny_spec())
    for store, instruction in ((no_poses, "push it"), (no_text, "")):
        with store.writer() as w:
            for t in range(9):
                frame = synthetic_frame(store.spec, 0, t)
                if store is no_poses:
                    for cam in frame.cameras.values():
                        cam.world_from_camera = UNKNOWN_POSE.copy()
                w.add(frame)
            w.commit(success=True, instruction=instruction)
    source = MujocoSource("push", cameras=["front"], size=SIZE, depth=False, segmentation=False)
    record(source, data.root / "front-only.zarr", episodes=1, seed=0)
    source.close()
    return {
        "no-poses": no_poses.path,
        "no-text": no_text.path,
        "front-only": data.root / "front-only.zarr",
    }


@pytest.mark.parametrize(
    ("variant", "stores", "cameras", "error", "message"),
    [
        ("dance", ["nav"], None, ConfigError, "unknown variant"),
        ("camera", ["push"], None, StoreError, "the camera never moves"),
        ("camera", ["push"], ["side"], StoreError, "the camera never moves"),
        ("camera", ["no-poses"], None, StoreError, "no camera poses"),
        ("camera", ["nav"], ["front"], StoreError, "store has no such camera"),
        ("multiview", ["nav"], None, ConfigError, "folds several cameras"),
        ("multiview", ["push"], ["front"], ConfigError, "folds several cameras"),
        ("multiview", ["push"], ["front", "top"], StoreError, "store has no such camera"),
        ("multiview", ["push", "front-only"], None, StoreError, "front-only.zarr: camera: store"),
        ("action", ["push", "nav"], None, StoreError, "nav.zarr: action_space: one model"),
        ("instruction", ["no-text"], None, StoreError, "no episode has an instruction"),
    ],
)
def test_data_a_variant_cannot_use_is_a_clear_error(
    data, odd_stores, tmp_path, variant, stores, cameras, error, message
):
    paths = [odd_stores.get(s) or getattr(data, s) for s in stores]
    _assert_refused(data, paths, tmp_path, error, message, variant=variant, cameras=cameras)


def _assert_refused(data, paths, tmp_path, error, message, **kw) -> None:
    """Training on ``paths`` fails with ``error`` matching ``message`` before it writes."""
    with pytest.raises(error, match=message):
        train_world_model(
            paths,
            data.tok,
            tmp_path / "run",
            steps=1,
            batch_size=2,
            progress=False,
            dit_overrides=TINY_DIT,
            **kw,
        )
    assert not (tmp_path / "run").exists()  # refused before anything is written


def _train(data, store, out, **kw):
    """2 steps of the tiny DiT on ``store`` into the run directory ``out`` (returned)."""
    train_world_model(
        [store],
        data.tok,
        out,
        steps=2,
        batch_size=2,
        progress=False,
        checkpoint_every=2,
        dit_overrides=TINY_DIT,
        **kw,
    )
    return out


@pytest.mark.parametrize(("variant", "cameras"), [("action", ["side"]), ("multiview", None)])
def test_state_points_train_export_and_load(data, tmp_path, variant, cameras):
    """--state-points: one homography per view, from the store's fixed cameras, saved in the
    model's config and read back; the exported model runs on the variant's batches."""
    run = tmp_path / "run"
    _train(data, data.push, run, variant=variant, cameras=cameras, state_points=True)
    loaded = zoo.load_model(export_world_model(run, tmp_path / "wm"))
    model, cams = loaded.module, loaded.config["cameras"]
    points = model.cfg.wm.dit.state_points
    assert [p["name"] for p in points] == ["ee", "block", "goal"]
    assert all(len(p["homographies"]) == len(cams) for p in points)
    assert model.wm.dit.points is not None and model.wm.dit.blocks[0].point_proj is not None
    _, seqs = _sequences(data, data.push, cams)
    if variant == "multiview":
        seqs = fold_cameras(seqs, cams)
    batch = LatentClipLoader(seqs, frames=3, batch_size=2, n_context=2, seed=1).batch(0)
    with torch.no_grad():
        out = model.wm.training_step({k: v for k, v in batch.items() if not k.startswith("step_")})
    assert np.isfinite(out[1]["loss"])


@pytest.mark.parametrize(
    ("variant", "store", "cameras", "message"),
    [
        ("camera", "nav", None, "state points need fixed cameras"),
        ("action", "push", None, "one per view"),  # two cameras, one view index
    ],
)
def test_state_points_refuse_cameras_they_cannot_use(
    data, tmp_path, variant, store, cameras, message
):
    _assert_refused(
        data,
        [getattr(data, store)],
        tmp_path,
        ConfigError,
        message,
        variant=variant,
        cameras=cameras,
        state_points=True,
    )


def test_post_training_keeps_the_state_heads_it_is_asked_to(data, odd_stores, tmp_path):
    """--init A --state-points --keep-state-heads: the export's diffusion part is the new
    run's, its proprio-state heads (and their settings) A's, bit for bit; heads trained on
    another state normalisation are refused."""

    def train(store, out, **kw):
        return _train(data, store, out, cameras=["front"], **kw)

    base = export_world_model(train(data.push, tmp_path / "a"), tmp_path / "a-wm")
    run = train(data.push, tmp_path / "b", init=base, state_points=True, seed=1)
    a = zoo.load_model(base).module.state_dict()
    b = zoo.load_model(export_world_model(run, tmp_path / "b-wm")).module.state_dict()
    kept = zoo.load_model(export_world_model(run, tmp_path / "k-wm", state_heads_from=base))
    k = kept.module.state_dict()
    assert kept.module.cfg.wm.dit.state_points and kept.module.cfg.dynamics_hidden
    heads = [n for n in a if not n.startswith("wm.")]
    assert heads and all(torch.equal(k[n], a[n]) for n in heads)
    assert all(torch.equal(k[n], b[n]) for n in b if n.startswith("wm."))
    assert any(not torch.equal(a[n], b[n]) for n in heads)  # the run moved its own heads
    other_store = tmp_path / "other.zarr"  # one more push episode: other state statistics
    shutil.copytree(odd_stores["front-only"], other_store)
    tokenize_store(other_store, data.tok)
    other = train(other_store, tmp_path / "c", init=base)
    with pytest.raises(ConfigError, match="another state normalisation") as e:
        export_world_model(other, tmp_path / "c-wm", state_heads_from=base)
    assert "stats.json" in str(e.value)


def test_state_renderer_fits_saves_and_is_the_rollouts_base(data, odd_stores, tmp_path):
    """train renderer: on a model without state points it adds them (from the store's fixed
    camera); the renderer learns (error below the reference frame's own), is saved in the
    model and loads back; the env's rollout then draws each frame relative to the
    renderer's frame instead of the previous one."""
    from cosmos_sim.device import Precision
    from cosmos_sim.envs.world_model_rollouts import CachedRollout, Sampler
    from cosmos_sim.training.renderer import fit_renderer, held_out_error

    run = tmp_path / "run"
    _train(data, data.push, run, cameras=["front"])
    wm = export_world_model(run, tmp_path / "wm")
    with pytest.raises(ConfigError, match="no state renderer"):
        zoo.load_model(wm).module.render(*[None] * 4)
    result = fit_renderer(wm, [data.push], steps=150, hidden=16, progress=False)
    model = zoo.load_model(wm).module.float()
    assert model.cfg.renderer_hidden == 16 and model.renderer is not None
    assert [p["name"] for p in model.cfg.wm.dit.state_points] == ["ee", "block", "goal"]
    # (2 episodes: no held-out split) — score on the training episodes from their first frame
    store, seqs = _sequences(data, data.push, ["front"])
    lat = [torch.from_numpy(x) for x in seqs.latents]
    st = [torch.from_numpy(x).float() for x in seqs.state]
    copy = float(np.mean([((x[1:] - x[:1]) ** 2).mean().item() for x in lat]))
    assert result["held_out_mse_from_first_frame"] is None
    assert len(result["channel_weights"]) == model.cfg.probe.channels  # the pixel-weighted fit
    assert held_out_error(model.renderer, lat, st) < 0.8 * copy
    # the rollout's base is the renderer's frame
    torch.nn.init.normal_(model.renderer.out.weight, std=0.5)  # far from the previous frame
    sampler = Sampler(
        None,
        None,
        1.0,
        torch.Generator().manual_seed(0),
        Precision(torch.device("cpu"), None, 0, "fp32"),
    )
    roll = CachedRollout(model, context_frames=2)
    first, s0 = lat[0][:1][None], st[0][:1]
    roll.start(first, s0, sampler)
    chunk = torch.zeros(1, CHUNK, model.action_dim)
    z, _ = roll.step(chunk, st[0][1:2], sampler)
    with torch.no_grad():
        rendered = model.render(first[:, 0], s0, s0, st[0][1:2])
    assert (z[:, 0] - rendered).abs().mean() < 0.5 * (z[:, 0] - first[:, 0]).abs().mean()
    # post-training the DiT on top of the renderer: it comes along (frozen), and stays
    post = tmp_path / "post"
    _train(data, data.push, post, cameras=["front"], state_points=True, init=wm)
    kept = zoo.load_model(export_world_model(post, tmp_path / "post-wm", state_heads_from=wm))
    assert kept.module.cfg.renderer_hidden == 16
    assert kept.config["renderer"]["steps"] == 150 and kept.config["post_trained_from"]
    mine = zoo.load_model(wm).module.state_dict()
    assert all(
        torch.equal(v, mine[k])
        for k, v in kept.module.state_dict().items()
        if k.startswith("renderer.")
    )
    # more stores: other state statistics, which the frozen renderer does not read
    more = tmp_path / "more.zarr"
    shutil.copytree(odd_stores["front-only"], more)
    tokenize_store(more, data.tok)
    with pytest.raises(ConfigError, match="normalised as in its own stores") as e:
        train_world_model(
            [data.push, more], data.tok, tmp_path / "more", steps=1,
            batch_size=2, progress=False, cameras=["front"], dit_overrides=TINY_DIT,
            state_points=True, init=wm,
        )  # fmt: skip
    assert "stats.json" in str(e.value)


def test_renderer_is_scored_on_the_models_own_states_too(data, tmp_path):
    """The renderer's fit reports its error from the dynamics head's own open-loop states
    (from the episode's first frame and recorded state, as the env renders) beside the
    error from the recorded ones; those states are the head unrolled over the recording's
    action chunks."""
    from cosmos_sim.training.renderer import fit_renderer, held_out_error, predicted_states

    run = _train(data, data.push, tmp_path / "run", cameras=["front"])
    wm = export_world_model(run, tmp_path / "wm")
    model = zoo.load_model(wm).module.float()
    _, seqs = _sequences(data, data.push, ["front"])
    own = predicted_states(model, seqs)
    for path, state, chunks in zip(own, seqs.state, seqs.chunks, strict=True):
        assert path.shape == state.shape
        assert torch.equal(path[0], torch.from_numpy(state[0]))  # starts where it was recorded
        with torch.no_grad():  # each next state is one step of the head on the last
            step = model.step_state(path[2:3], torch.from_numpy(chunks[3:4]).float())
        torch.testing.assert_close(path[3:4], step)
        assert not torch.allclose(path[1:], torch.from_numpy(state[1:]))  # not the recording
    fit_renderer(wm, [data.push], steps=30, hidden=8, progress=False)
    renderer = zoo.load_model(wm).module.float().renderer
    lat = [torch.from_numpy(x) for x in seqs.latents]
    st = [torch.from_numpy(x).float() for x in seqs.state]
    recorded, mine = (
        held_out_error(renderer, lat, st),
        held_out_error(renderer, lat, st, states_from=own),
    )
    assert recorded != mine and held_out_error(renderer, lat, st, states_from=st) == recorded


def test_multiview_renderer_draws_every_view_and_is_the_dits_residual_base(data, tmp_path):
    from cosmos_sim.device import Precision
    from cosmos_sim.envs.world_model_rollouts import CachedRollout, Sampler
    from cosmos_sim.training.renderer import fit_renderer

    wm = export_world_model(
        _train(data, data.push, tmp_path / "run", variant="multiview"), tmp_path / "wm"
    )
    fit_renderer(wm, [data.push], steps=5, hidden=16, progress=False)
    model = zoo.load_model(wm).module.float()
    assert all(len(p["homographies"]) == 2 for p in model.cfg.wm.dit.state_points)
    _, seqs = _sequences(data, data.push, ["front", "side"])
    first = torch.stack([torch.from_numpy(seqs.latents[i][:1]) for i in (0, 1)], 1)  # (1, 2, …)
    s0 = torch.from_numpy(seqs.state[0][:1]).float()
    precision = Precision(torch.device("cpu"), None, 0, "fp32")
    sampler = Sampler(None, None, 1.0, torch.Generator().manual_seed(0), precision)
    roll = CachedRollout(model, context_frames=2, views=2)
    roll.start(first, s0, sampler)
    base = roll._base(s0)  # every view drawn from its own first frame, in its own camera
    with torch.no_grad():
        for v in (0, 1):
            want = model.render(first[:, v], s0, s0, s0, torch.tensor([v]))
            torch.testing.assert_close(base[:, v], want)
    z, _ = roll.step(torch.zeros(1, CHUNK, model.action_dim), s0, sampler)
    assert z.shape == first.shape
    # training's residual base for a folded clip: each view from its own first frame
    lat = torch.stack([torch.from_numpy(seqs.latents[i][:2]) for i in (0, 1)], 1)  # (T, V, …)
    states = torch.from_numpy(seqs.state[0][:2]).float()
    clip = lat.flatten(0, 1)[None]  # (1, T·V, …) time-major
    folded_state = states.repeat_interleave(2, 0)[None]
    base = model.render_clip(clip, folded_state, torch.tensor([[0, 1, 0, 1]]))
    torch.testing.assert_close(base[:, :2], clip[:, :2])  # the first time step is kept
    with torch.no_grad():
        for v in (0, 1):
            want = model.render(
                lat[0, v][None], states[:1], states[:1], states[1:], torch.tensor([v])
            )
            torch.testing.assert_close(base[:, 2 + v], want)
    with pytest.raises(ConfigError, match="folded time-major"):
        model.render_clip(clip, folded_state, torch.tensor([[1, 0, 1, 0]]))
    # and the multi-view DiT post-trains on that residual, the renderer kept
    post = _train(
        data, data.push, tmp_path / "post", variant="multiview", state_points=True, init=wm
    )
    kept = zoo.load_model(export_world_model(post, tmp_path / "post-wm", state_heads_from=wm))
    assert kept.module.renderer is not None and kept.config["views"] == 2
