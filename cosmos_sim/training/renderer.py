"""Fit an exported world model's state renderer (:class:`~cosmos_sim.models.heads.StateRenderer`).

The renderer maps (a reference latent frame of the episode, the states at the reference,
the previous and the new frame) to the new latent frame. It trains on every pair of
latent frames of the stores' training episodes — the reference drawn anywhere before the
target, so it serves the env's first frame as well as a training clip's — and is scored
on the held-out episodes from their first frame, as the env uses it. Minutes on a CPU; the
DiT is untouched, and afterwards trains against it as its residual base
(``train world-model --init M --keep-state-heads``).

A camera-control model's renderer (:class:`~cosmos_sim.models.heads.CameraRenderer`) is
fitted the same way on its frames with their cameras: each target frame from the episode's
first frame warped into the target's camera (the reference is always the first frame: the
warp, not the net, moves the view).

    cosmos-sim train renderer --model models/M --data STORE [--data MORE]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from cosmos_sim.errors import ConfigError, StoreError
from cosmos_sim.models import zoo
from cosmos_sim.models.heads import CameraRenderer, StateRenderer


def _pairs(seqs, cameras: list[str]) -> tuple[list, list, list[int]]:
    """Latents, states and view index (the camera's place in the model's order) per sequence."""
    return (
        [torch.from_numpy(x) for x in seqs.latents],
        [torch.from_numpy(x).float() for x in seqs.state],
        [cameras.index(camera) for _, _, camera in seqs.key],
    )


@torch.no_grad()
def predicted_states(model, seqs) -> list[torch.Tensor]:
    """Each sequence's states as the model itself predicts them: its dynamics head unrolled
    open loop over the recorded action chunks from the sequence's first state — what the
    env hands the renderer after its first frame. (n, S) per sequence."""
    out = []
    for state, chunks in zip(seqs.state, seqs.chunks, strict=True):
        s = torch.from_numpy(state[:1]).float()
        path = [s]
        for chunk in torch.from_numpy(chunks[1:]).float():
            s = model.step_state(s, chunk[None])
            path.append(s)
        out.append(torch.cat(path))
    return out


def _batch(latents, states, views, g: np.random.Generator, size: int):
    """``size`` random (reference, previous, target) triples of latent frames of one
    episode and camera, and the camera's view index."""
    ep = g.integers(0, len(latents), size)
    refs, s_ref, s_prev, s_new, target = [], [], [], [], []
    for e in ep:
        n = len(latents[e])
        t = int(g.integers(1, n))
        r = int(g.integers(0, t))
        refs.append(latents[e][r])
        s_ref.append(states[e][r])
        s_prev.append(states[e][t - 1])
        s_new.append(states[e][t])
        target.append(latents[e][t])
    view = torch.as_tensor([views[e] for e in ep])
    return [torch.stack(x) for x in (refs, s_ref, s_prev, s_new)] + [view, torch.stack(target)]


@dataclass
class CameraFrames:
    """A camera renderer's inputs per sequence: the latents (n, C, h, w), the first frame's
    warp into every frame's camera (n, C, h, w; :func:`warp_base_sequence`), every frame's
    rays relative to the first camera (n, 6, h, w), latent-grid K (n, 3, 3) and pose (n, 4, 4)
    float32, and the normalised states (n, S)."""

    latents: list[Tensor]
    base: list[Tensor]
    rays: list[Tensor]
    intrinsics: list[Tensor]
    poses: list[Tensor]
    states: list[Tensor]

    @classmethod
    def of(cls, seqs) -> CameraFrames:
        """From camera-variant sequences with their warp bases (``seqs.base``, ``first``)."""
        from cosmos_sim.conditioning.rays import clip_plucker_rays

        h, w = seqs.latents[0].shape[-2:]
        return cls(
            [torch.from_numpy(x) for x in seqs.latents],
            [torch.from_numpy(x) for x in seqs.base],
            [
                clip_plucker_rays(k, pose, h, w)
                for k, pose in zip(seqs.intrinsics, seqs.world_from_camera, strict=True)
            ],
            [torch.as_tensor(k, dtype=torch.float32) for k in seqs.intrinsics],
            [torch.as_tensor(pose, dtype=torch.float32) for pose in seqs.world_from_camera],
            [torch.from_numpy(x).float() for x in seqs.state],
        )

    def inputs(self, e: int, t: slice) -> list[Tensor]:
        """Renderer inputs of sequence ``e``'s frames ``t`` (each ≥ 1), batched."""
        n = len(self.latents[e][t])
        first = lambda x: x[:1].expand(n, *x.shape[1:])  # noqa: E731
        s = self.states[e]
        idx = torch.arange(len(s))[t]
        return [
            first(self.latents[e]),
            self.base[e][t],
            self.rays[e][t],
            self.intrinsics[e][t],
            self.poses[e][t],
            first(s),
            s[idx - 1],
            s[idx],
        ]

    def batch(self, g: np.random.Generator, size: int) -> tuple[list[Tensor], Tensor]:
        """``size`` random frames (never a first one) → their inputs, their latents."""
        ep = g.integers(0, len(self.latents), size)
        rows = []
        for e in ep:
            t = int(g.integers(1, len(self.latents[e])))
            rows.append([*self.inputs(e, slice(t, t + 1)), self.latents[e][t : t + 1]])
        cols = [torch.cat(x) for x in zip(*rows, strict=True)]
        return cols[:-1], cols[-1]

    def base_error(self) -> float:
        """Mean squared latent error of the warp alone, every frame after the first."""
        pairs = zip(self.base, self.latents, strict=True)
        return float(np.mean([latent_loss(b[1:], x[1:], None).item() for b, x in pairs]))

    @torch.no_grad()
    def error(self, renderer, weights: Tensor | None) -> float:
        """Mean (channel-weighted) squared latent error of every frame after the first."""
        return float(
            np.mean(
                [
                    latent_loss(renderer(*self.inputs(e, slice(1, None))), lat[1:], weights).item()
                    for e, lat in enumerate(self.latents)
                ]
            )
        )


@torch.no_grad()
def camera_renderer_bases(model, seqs) -> list[np.ndarray]:
    """Each camera sequence's residual base under ``model``'s camera renderer (n, C, h, w):
    its first latent frame, then the renderer's frames (recorded states) — what a DiT post-
    trained over the renderer learns the residual of (``train world-model --init``)."""
    frames = CameraFrames.of(seqs)
    out = []
    for e, lat in enumerate(frames.latents):
        rendered = model.render_camera(*frames.inputs(e, slice(1, None)))
        out.append(torch.cat([lat[:1], rendered.float()]).numpy())
    return out


@torch.no_grad()
def held_out_error(
    renderer: StateRenderer,
    latents,
    states,
    views=None,
    weights: torch.Tensor | None = None,
    states_from: list[torch.Tensor] | None = None,
) -> float:
    """Mean squared latent error of every held-out frame rendered from its episode's first
    (each channel weighted by ``weights`` (C,), when given), from the recorded states or
    from ``states_from`` (e.g. :func:`predicted_states`)."""
    errs = []
    for i, (lat, st) in enumerate(zip(latents, states, strict=True)):
        if states_from is not None:  # the model's own states, from the recorded first one
            st = states_from[i]
        n = len(lat)
        view = torch.full((n - 1,), 0 if views is None else views[i], dtype=torch.long)
        pred = renderer(
            lat[:1].expand(n - 1, -1, -1, -1), st[:1].expand(n - 1, -1), st[:-1], st[1:], view
        )
        errs.append(latent_loss(pred, lat[1:], weights).item())
    return float(np.mean(errs))


def latent_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None):
    """MSE of (B, C, h, w) latents, channel c weighted by ``weights[c]`` (None: uniform)."""
    err = (pred - target).pow(2)
    if weights is not None:
        err = err * weights[:, None, None]
    return err.mean()


def pixel_weights(loaded: zoo.LoadedModel, latents: list[torch.Tensor]) -> torch.Tensor:
    """The model's tokenizer's channel gains (:meth:`VideoTokenizer.channel_gains`) around
    up to 16 of the training sequences: a latent loss weighted by them follows the PSNR."""
    tok = zoo.load_tokenizer_of(loaded).module
    n = min(len(x) for x in latents[:16])
    return tok.channel_gains(torch.stack([x[:n] for x in latents[:16]]).float())


def _rebuilt(model, cfg, new: str):
    """``model``'s weights in a world model of config ``cfg``, whose only new weights are
    those whose names contain ``new`` (they keep their initialisation)."""
    from cosmos_sim.models.world_model import ActionWorldModel

    out = ActionWorldModel(cfg)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(new in k for k in missing), (missing, unexpected)
    return out


def with_state_points(model, state_points: list[dict]):
    """The same world model with ``state_points`` added to its DiT (zero-initialised)."""
    from dataclasses import replace

    cfg = model.cfg
    cfg = replace(cfg, wm=replace(cfg.wm, dit=replace(cfg.wm.dit, state_points=state_points)))
    return _rebuilt(model, cfg, ".point_proj.")


def fit_renderer(
    model_dir: Path,
    data: list[Path],
    steps: int = 3000,
    hidden: int = 64,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    pixel_weighted: bool = True,
) -> dict:
    """Add (or refit) the state renderer of an exported action, instruction, multi-view or
    camera world model (one renderer, every view) on its task's tokenized stores, adding state
    points to its DiT when it has none (from the stores' fixed cameras); save the model in
    place. ``pixel_weighted``: each latent channel's error weighs what it costs in decoded
    pixels (:func:`pixel_weights`), so the fit follows the PSNR; else plain latent MSE.

    Besides its held-out error from the recorded states, a fixed-camera renderer's is
    reported from the model's *own* predicted states (:func:`predicted_states`), as the env
    renders them.

    A camera model (``--variant camera``) gets a :class:`CameraRenderer` over the first
    frame's warp; its DiT's residual base becomes the renderer's frame, so the model is
    switched to ``warp_reference = "first"`` and its DiT should be post-trained over it
    (``train world-model --init``)."""
    from cosmos_sim.training.state_heads import open_task_stores

    loaded = zoo.load_model(model_dir)
    meta, stats, model = loaded.config, loaded.stats or {}, loaded.module
    if not model.has_state:
        raise ConfigError(
            "a state renderer draws the proprio state: this model has none",
            path=Path(loaded.path) / "config.toml",
            field="dynamics_hidden",
        )
    stores, a_stats, s_stats = open_task_stores(loaded, data)
    setup = _camera_setup if meta.get("rays") else _fixed_setup
    model, renderer, draw, scores, first_latents = setup(
        loaded, model, stores, a_stats, s_stats, hidden, seed
    )
    weights = pixel_weights(loaded, first_latents) if pixel_weighted else None
    opt = torch.optim.AdamW(renderer.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: (
            min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / max(1, steps))))
        ),
    )
    g = np.random.default_rng(seed)
    t0, losses = time.perf_counter(), []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("renderer", total=steps)
        for _ in range(steps):
            inputs, target = draw(g, batch_size)
            loss = latent_loss(renderer(*inputs), target, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(task, advance=1, description=f"renderer loss {np.mean(losses[-50:]):.4f}")
    renderer.eval()
    result = {
        "steps": steps,
        "hidden": hidden,
        "train_loss_last100": float(np.mean(losses[-100:])),
        **scores(renderer, weights),
        "channel_weights": None if weights is None else [round(float(w), 4) for w in weights],
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "stores": [Path(path).name for path in data],
    }
    model.cfg.renderer_hidden = hidden
    model.renderer = renderer
    extra = {
        k: v for k, v in meta.items() if k not in ("kind", "format_version", "dtype", "config")
    }
    extra["renderer"] = result
    card = Path(loaded.path, "card.md")
    zoo.save_model(
        loaded.path,
        loaded.kind,
        model.cfg.to_dict(),
        model.state_dict(),
        stats=stats,
        card=card.read_text() if card.exists() else None,
        extra=extra,
    )
    return result


def _fixed_setup(loaded, model, stores, a_stats, s_stats, hidden, seed):
    """A fixed-camera renderer: (model with state points, renderer, batch drawer, held-out
    scorer, training latents)."""
    from cosmos_sim.training import world_model_variants as variants
    from cosmos_sim.training.world_model_task import load_sequences

    meta = loaded.config
    cams = list(meta["cameras"])
    load = lambda split: load_sequences(  # noqa: E731
        stores, meta["tokenizer_hash"], cams, a_stats, s_stats, split
    )
    train_seqs = load("train")
    train = _pairs(train_seqs, cams)
    try:
        held_seqs = load("held-out")
        held = _pairs(held_seqs, cams)
    except StoreError:  # too few episodes for a held-out split: nothing to score
        held_seqs = held = None
    if not model.cfg.wm.dit.state_points:  # the renderer's point maps; the DiT's new point
        # projections start at zero, so the DiT computes what it did (DiT.initialize_weights)
        grid = tuple(train[0][0].shape[-2:])
        points = variants.state_point_controls(
            meta.get("variant", "action"), stores, cams, s_stats.mean, s_stats.std, grid
        )["state_points"]
        model = with_state_points(model, points)
    p = model.cfg.probe
    torch.manual_seed(seed)
    renderer = StateRenderer(
        p.channels, p.height, p.width, p.state_dim, model.cfg.wm.dit.state_points, hidden
    )

    def draw(g, size):
        *inputs, target = _batch(*train, g, size)
        return inputs, target

    def scores(renderer, weights):
        if held is None:
            return dict.fromkeys(
                (
                    "held_out_mse_from_first_frame",
                    "held_out_weighted_mse_from_first_frame",
                    "held_out_mse_own_states",
                )
            )
        return {
            "held_out_mse_from_first_frame": held_out_error(renderer, *held),
            "held_out_weighted_mse_from_first_frame": (
                None if weights is None else held_out_error(renderer, *held, weights)
            ),
            "held_out_mse_own_states": held_out_error(  # channel-weighted as the fit is
                renderer, *held, weights, states_from=predicted_states(model, held_seqs)
            ),
        }

    return model, renderer, draw, scores, train[0]


def _camera_setup(loaded, model, stores, a_stats, s_stats, hidden, seed):
    """A camera renderer over the first frame's warp (:class:`CameraFrames`): the same five
    as :func:`_fixed_setup`; the model is switched to a first-frame warp base."""
    from dataclasses import replace

    from cosmos_sim.bridge.record import source_task
    from cosmos_sim.conditioning import points, warp
    from cosmos_sim.training import world_model_variants as variants
    from cosmos_sim.training.world_model_task import CHUNK, load_sequences

    meta, cfg = loaded.config, model.cfg
    task = source_task(stores[0].spec.source)
    height = cfg.warp_height if cfg.warp_base else warp.mujoco_table_height(task)
    tok = zoo.load_tokenizer_of(loaded).module.float()

    def load(split):
        seqs = load_sequences(
            stores, meta["tokenizer_hash"], meta["cameras"], a_stats, s_stats, split, geometry=True
        )
        seqs.base = variants.warp_base_sequences(seqs, stores, tok, height, CHUNK)
        return CameraFrames.of(seqs)

    train = load("train")
    try:
        held = load("held-out")
    except StoreError:
        held = None
    renderer_points = points.camera_point_config(
        stores[0].spec.state_names, points.mujoco_point_heights(task), s_stats.mean, s_stats.std
    )
    cfg = replace(
        cfg,
        warp_base=True,
        warp_height=height,
        warp_reference="first",
        renderer_points=renderer_points,
        renderer_hidden=hidden,
    )
    model = _rebuilt(model, cfg, "renderer.")  # the same weights, with the new base
    p = cfg.probe
    torch.manual_seed(seed)
    renderer = CameraRenderer(p.channels, p.height, p.width, p.state_dim, renderer_points, hidden)

    def scores(renderer, weights):
        plain = None if held is None else held.error(renderer, None)
        return {
            "held_out_mse_from_first_frame": plain,
            "held_out_weighted_mse_from_first_frame": (
                None if held is None or weights is None else held.error(renderer, weights)
            ),
            "held_out_warp_base_mse": None if held is None else held.base_error(),
        }

    return model, renderer, train.batch, scores, train.latents
