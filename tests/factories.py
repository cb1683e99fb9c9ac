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


def variant_stores(root: Path, size: int = 32) -> SimpleNamespace:
    """The world-model variants' data: a 2-episode cameranav store (moving orbit camera) and
    a 2-episode push store (front + side), ``size``², tokenized by one tiny untrained
    tokenizer. Fields: ``tok`` (its model directory), ``hash``, ``root``, ``nav``, ``push``."""
    import torch

    from cosmos_sim.bridge.record import MujocoSource, record
    from cosmos_sim.models import zoo
    from cosmos_sim.models.tokenizer import TokenizerConfig, VideoTokenizer
    from cosmos_sim.training.tokenizer_task import tokenize_store

    torch.manual_seed(0)
    tok = VideoTokenizer(
        TokenizerConfig(width=16, width_low=16, enc_blocks=(1, 1), dec_blocks=(1, 1))
    )
    tok_dir = zoo.save_model(
        root / "tok", "tokenizer", tok.cfg.to_dict(), tok.state_dict(), dtype="fp32"
    )
    paths = {}
    for name, task, cameras in (
        ("nav", "cameranav", ["orbit"]),
        ("push", "push", ["front", "side"]),
    ):
        source = MujocoSource(
            task, skill=1.0, cameras=cameras, size=size, depth=False, segmentation=False
        )
        record(source, root / f"{name}.zarr", episodes=2, seed=0)
        source.close()
        tokenize_store(root / f"{name}.zarr", tok_dir)
        paths[name] = root / f"{name}.zarr"
    return SimpleNamespace(
        tok=tok_dir, hash=zoo.load_model(tok_dir).weights_hash, root=root, **paths
    )


def tiny_world_model(store: Path, tok_dir: Path, out: Path, variant: str = "action") -> Path:
    """A ``variant`` world model trained 2 steps on ``store`` and exported to ``out``/wm."""
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
    )
    return export_world_model(run, out / "wm")
