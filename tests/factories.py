"""Shared fixture factories: tiny real stores and frames, no mocks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from cosmos_sim.data.episode import CameraFrame, Frame
from cosmos_sim.data.store import CameraSpec, EpisodeStore, StoreSpec

CAMERAS = ("front", "top")
TINY_DIT = {"dim": 32, "depth": 1, "heads": 2}  # a world model that trains in a blink


def tiny_spec(cameras=CAMERAS, size=(16, 24), action_dim=3, state_dim=5) -> StoreSpec:
    h, w = size
    return StoreSpec(
        fps=10.0,
        action_low=[-1.0] * action_dim,
        action_high=[1.0] * action_dim,
        action_names=[f"a{i}" for i in range(action_dim)],
        cameras={c: CameraSpec(h, w) for c in cameras},
        state_dim=state_dim,
        source="test:synthetic",
        segmentation_labels={0: "table", 1: "block"},
    )


def synthetic_frame(spec: StoreSpec, episode: int, t: int) -> Frame:
    """A frame whose every value encodes (episode, t), so reads can be checked exactly."""
    cams = {}
    for i, (name, cam) in enumerate(spec.cameras.items()):
        h, w = cam.height, cam.width
        k = np.array([[20.0, 0, (w - 1) / 2], [0, 20.0, (h - 1) / 2], [0, 0, 1]], np.float32)
        pose = np.eye(4, dtype=np.float32)
        pose[:3, 3] = [episode, t, i]
        cams[name] = CameraFrame(
            rgb=np.full((h, w, 3), (episode * 31 + t * 7 + i) % 256, np.uint8),
            depth=np.full((h, w), 0.5 + t, np.float32),
            segmentation=np.full((h, w), episode, np.int32),
            intrinsics=k,
            world_from_camera=pose,
        )
    a = spec.action_dim
    return Frame(
        cams,
        action=np.full(a, episode + t / 100, np.float32),
        state=np.full(spec.state_dim, -t, np.float32),
        reward=float(t),
    )


def write_synthetic_episodes(store: EpisodeStore, lengths, first_episode: int = 0) -> None:
    for j, n in enumerate(lengths):
        e = first_episode + j
        with store.writer(flush_every=4) as w:
            for t in range(n):
                w.add(synthetic_frame(store.spec, e, t))
            w.commit(success=e % 2 == 0, instruction=f"episode {e}")


def synthetic_store(path: Path, lengths=(9, 13), **spec_kwargs) -> EpisodeStore:
    store = EpisodeStore.create(path, tiny_spec(**spec_kwargs))
    write_synthetic_episodes(store, lengths)
    return store


def tiny_tokenizer(root: Path) -> Path:
    """A tiny untrained video tokenizer (seeded: the same weights every time), saved to
    ``root``/tok; returns its model directory."""
    import torch

    from cosmos_sim.models import zoo
    from cosmos_sim.models.tokenizer import TokenizerConfig, VideoTokenizer

    torch.manual_seed(0)
    tok = VideoTokenizer(
        TokenizerConfig(width=16, width_low=16, enc_blocks=(1, 1), dec_blocks=(1, 1))
    )
    return zoo.save_model(
        root / "tok", "tokenizer", tok.cfg.to_dict(), tok.state_dict(), dtype="fp32"
    )


def recorded_store(
    path: Path, task: str, cameras: list[str], size: int, tok_dir: Path, episodes: int = 2
) -> Path:
    """``episodes`` scripted-expert episodes of ``task`` (seeds 0, 1, …) recorded at
    ``size``² from ``cameras`` and tokenized by ``tok_dir``: a world model's training data."""
    from cosmos_sim.bridge.record import MujocoSource, record
    from cosmos_sim.training.tokenizer_task import tokenize_store

    source = MujocoSource(
        task, skill=1.0, cameras=cameras, size=size, depth=False, segmentation=False
    )
    record(source, path, episodes=episodes, seed=0)
    source.close()
    tokenize_store(path, tok_dir)
    return path


def variant_stores(root: Path, size: int = 32) -> SimpleNamespace:
    """The world-model variants' data: a 2-episode cameranav store (moving orbit camera) and
    a 2-episode push store (front + side), ``size``², tokenized by one tiny untrained
    tokenizer. Fields: ``tok`` (its model directory), ``hash``, ``root``, ``nav``, ``push``."""
    from cosmos_sim.models import zoo

    tok_dir = tiny_tokenizer(root)
    paths = {
        name: recorded_store(root / f"{name}.zarr", task, cameras, size, tok_dir)
        for name, task, cameras in (
            ("nav", "cameranav", ["orbit"]),
            ("push", "push", ["front", "side"]),
        )
    }
    return SimpleNamespace(
        tok=tok_dir, hash=zoo.load_model(tok_dir).weights_hash, root=root, **paths
    )


def tiny_world_model(
    store: Path, tok_dir: Path, out: Path, variant: str = "action", **train_kwargs
) -> Path:
    """A ``variant`` world model trained 2 steps on ``store`` and exported to ``out``/wm
    (``train_kwargs``: more options of ``train_world_model``, e.g. ``warp_base=True``)."""
    from cosmos_sim.training.world_model_task import export_world_model, train_world_model

    run = out / "run"
    train_world_model(
        [store],
        tok_dir,
        run,
        variant=variant,
        steps=2,
        batch_size=2,
        progress=False,
        checkpoint_every=2,
        dit_overrides=TINY_DIT,
        **train_kwargs,
    )
    return export_world_model(run, out / "wm")


def randomise_dit(model_dir: Path, std: float = 0.1, seed: int = 0) -> Path:
    """Redraw every DiT weight of a saved world model ~ N(0, std²) (seeded), in place.

    A DiT trained a few steps is still nearly its adaLN-Zero init: every gate ~1e-4, so its
    controls move a generated frame by ~1e-6, far below one uint8 level. Wiring tests break
    that, as tests/models/test_dit.py's ``tiny_model(randomise=True)`` does."""
    import torch
    from safetensors.torch import load_file, save_file

    path = Path(model_dir) / "weights.safetensors"
    weights = load_file(path)
    g = torch.Generator().manual_seed(seed)
    for name, w in weights.items():
        if name.startswith("wm.denoiser.") and w.is_floating_point():
            weights[name] = (torch.randn(w.shape, generator=g) * std).to(w.dtype)
    save_file(weights, str(path))
    return Path(model_dir)


def drive_beside_sim(env, nav, actions, camera: str = "orbit") -> tuple[list, list]:
    """Step a world-model env and the simulator env ``nav`` (both reset already) with the same
    ``actions``: the simulator's ``camera`` poses (the reset's first) and the env's infos."""
    poses, infos = [nav.sim.world_from_camera(camera)], []
    for a in actions:
        infos.append(env.step(a)[-1])
        nav.step(a)
        poses.append(nav.sim.world_from_camera(camera))
    return poses, infos
