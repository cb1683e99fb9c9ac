"""What the post-training variants add to world-model training data (Cosmos's recipe).

``cosmos-sim train world-model --variant NAME`` trains one model class
(:class:`~cosmos_sim.models.world_model.ActionWorldModel`); a variant only changes what a
clip carries and which controls the DiT is built with:

==============  ==================================  ==========================================
variant         extra batch keys                    DiT / data requirements
==============  ==================================  ==========================================
action          —                                   —
camera          rays (B, T, 6, h, w)                ``rays=True``; every camera has finite
                                                    per-frame K and ``world_from_camera``, and
                                                    moves (``record --task cameranav``)
multiview       time, view (B, T·V) long;           learned view embeddings; ≥ 2 cameras of
                step_* (per time step, see below)   one episode, views folded into time
instruction     instruction_ids (B, L) long         ``text_vocab`` = the preset's; per-episode
                                                    instructions in the store
==============  ==================================  ==========================================

Camera rays: per latent frame, the Plücker map of its *last* video frame's camera (the
frame the latent ends on, as for the state labels), from K rescaled to the latent grid,
relative to the clip's first frame's camera — the first context frame — so the model
never sees where the world origin is (:func:`~cosmos_sim.conditioning.rays.clip_plucker_rays`).
On cameranav the camera part of action t moves the camera before frame t + 1 is rendered,
so latent frame j's chunk (actions 4j − 4 … 4j − 1, camera part first, through the usual
action path) ends exactly at the pose its rays describe.

Multi-view: the V cameras of an episode are folded time-major into the clip
(:func:`~cosmos_sim.conditioning.multiview.fold_views`); the n context time steps become
n·V context frames and the target is all V views of the next time step. The diffusion
model and the frame probe see per-frame tensors (the time step's state, chunk, success and
reward repeated per view); the proprio-state dynamics head must step once per *time step*,
so the loader also gives the per-time-step tensors under ``step_*`` keys and
:class:`FoldedViewsWorldModel` feeds those to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from cosmos_sim.conditioning import points, warp
from cosmos_sim.conditioning.multiview import fold_views
from cosmos_sim.conditioning.rays import clip_plucker_rays, scale_intrinsics
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError, StoreError
from cosmos_sim.models.dit import DiTConfig
from cosmos_sim.models.dit import instruction_ids as _instruction_ids
from cosmos_sim.models.dit import preset as dit_preset
from cosmos_sim.models.world_model import ActionWorldModel

VARIANTS = ("action", "camera", "multiview", "instruction")
MOVE_TRANSLATION = 1e-3  # m: a camera "moves" when some frame is this far from its episode's first
MOVE_ROTATION = 1e-3  # rad: … or turned this much
STEP_KEYS = ("state", "actions_all", "success", "reward")  # per-time-step keys of folded batches


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ConfigError(
            "unknown variant", field="variant", expected=list(VARIANTS), found=variant
        )
    return variant


def variant_setup(
    variant: str, preset: str, stores: Sequence[EpisodeStore], cameras: Sequence[str] | None
) -> tuple[list[str], dict]:
    """Check the stores can train ``variant``; the cameras it trains on (in view order) and
    the DiT controls it needs on top of the preset."""
    check_variant(variant)
    cams = list(cameras) if cameras else stores[0].cameras
    for store in stores:
        store.check_cameras(cams)
    if variant == "camera":
        return camera_variant_cameras(stores, cameras), {"rays": True}
    if variant == "multiview":
        check_multiview_cameras(cams)
        return cams, {"max_views": max(dit_preset(preset).max_views, len(cams))}
    if variant == "instruction":
        check_instructions(stores)
        return cams, {"text_vocab": dit_preset(preset).text_vocab}
    return cams, {}


def state_point_controls(
    variant: str,
    stores: Sequence[EpisodeStore],
    cams: Sequence[str],
    mean: np.ndarray,
    std: np.ndarray,
    grid: tuple[int, int],
) -> dict:
    """``state_points`` for the DiT (``conditioning/points.py``): one homography per view
    from each camera's K and pose, which must be fixed over every store (checked on each
    store's first and last episode); point heights from the MuJoCo task the stores record."""
    from cosmos_sim.bridge.record import MUJOCO_SOURCE, source_task

    spec = stores[0].spec
    if variant == "camera" or (variant != "multiview" and len(cams) > 1):
        raise ConfigError(
            "state points need fixed cameras, one per view: train one camera (or --variant "
            "multiview)",
            field="state_points",
            found=f"variant {variant}, cameras {list(cams)}",
        )
    if not str(spec.source).startswith(MUJOCO_SOURCE):
        raise ConfigError(
            "state points need the height of each state point: built-in MuJoCo tasks only",
            path=stores[0].path,
            field="source",
            found=spec.source,
        )
    heights = points.mujoco_point_heights(source_task(spec.source))
    cameras = []
    for cam in cams:
        K, pose, where = [], [], []
        for store in stores:
            for ep in sorted({0, len(store) - 1}):
                w = store.read_window(
                    ep,
                    0,
                    store.episode_length(ep),
                    cameras=[cam],
                    fields=("intrinsics", "world_from_camera"),
                )
                K.append(w["intrinsics"][cam])
                pose.append(w["world_from_camera"][cam])
            where.append(str(store.path))
        cameras.append(
            points.fixed_camera(
                np.concatenate(K), np.concatenate(pose), f"{', '.join(where)}:{cam}"
            )
        )
    image = (spec.cameras[cams[0]].height, spec.cameras[cams[0]].width)
    found = points.state_point_config(spec.state_names, heights, mean, std, cameras, image, grid)
    if not found:
        raise ConfigError(
            "no planar <point>.x / <point>.y pairs with a known height in the state",
            path=stores[0].path,
            field="state_names",
            found=list(spec.state_names),
        )
    return {"state_points": found}


def export_fields(data: dict, dit: DiTConfig) -> dict:
    """What an env needs in config.toml to drive a variant, from a run's ``data`` config and
    the model's DiT (runs from before the variants are action models)."""
    variant = data.get("variant", "action")
    fields = {
        "variant": variant,
        "views": len(data["cameras"]) if variant == "multiview" else 1,  # cameras = view order
        "rays": bool(dit.rays),
        "instruction": bool(dit.text_vocab),
    }
    if dit.rays:
        fields["ray_reference"] = "first-context-frame"  # rays of each frame, in this camera
    if data.get("action_names"):
        fields["action_names"] = list(data["action_names"])  # which dimensions move the camera
    return fields


# -- camera control -------------------------------------------------------------------------


def _poses(store: EpisodeStore, camera: str) -> np.ndarray | StoreError:
    """(T, 4, 4) float64 poses of every frame, or why there are none (unknown K or pose)."""
    field = f"cameras/{camera}/world_from_camera"
    poses = store._read(field, slice(0, store.num_frames)).astype(np.float64)
    intrinsics = store._read(f"cameras/{camera}/intrinsics", slice(0, store.num_frames))
    if np.isfinite(poses).all() and np.isfinite(intrinsics).all():
        return poses
    return StoreError(
        "no camera poses: the camera variant needs a finite K and world_from_camera on "
        "every frame (record with `cosmos-sim record --task cameranav`)",
        path=store.path,
        field=field,
        expected="finite",
        found="NaN (unknown)",
    )


def _static(store: EpisodeStore, camera: str, poses: np.ndarray) -> StoreError | None:
    """A clear error when ``camera`` stays put within every episode (None when it moves)."""
    ends = store.episode_ends
    lengths = np.diff(np.concatenate([[0], ends]))
    first = poses[np.repeat(ends - lengths, lengths)]  # each frame's episode's first pose
    shift = np.linalg.norm(poses[:, :3, 3] - first[:, :3, 3], axis=-1).max(initial=0.0)
    cos = (np.einsum("tji,tji->t", first[:, :3, :3], poses[:, :3, :3]) - 1) / 2  # tr(R0ᵀR)
    turn = np.arccos(np.clip(cos, -1.0, 1.0)).max(initial=0.0)
    if shift > MOVE_TRANSLATION or turn > MOVE_ROTATION:
        return None
    return StoreError(
        "the camera never moves: camera control needs a moving camera "
        "(record with `cosmos-sim record --task cameranav`, or pick one with --cameras)",
        path=store.path,
        field=f"cameras/{camera}/world_from_camera",
        expected=f"> {MOVE_TRANSLATION} m or > {MOVE_ROTATION} rad within an episode",
        found=f"{shift:.2g} m, {turn:.2g} rad",
    )


def _camera_problem(stores: Sequence[EpisodeStore], camera: str) -> StoreError | None:
    """Why ``camera`` cannot condition a camera-control model: no poses in some store, or
    it moves in none of them (None: it can)."""
    poses = []
    for store in stores:
        store.check_cameras([camera])
        found = _poses(store, camera)
        if isinstance(found, StoreError):
            return found
        poses.append(found)
    static = [_static(s, camera, p) for s, p in zip(stores, poses, strict=True)]
    return static[0] if all(static) else None


def camera_variant_cameras(
    stores: Sequence[EpisodeStore], cameras: Sequence[str] | None
) -> list[str]:
    """The cameras a camera-control model trains on: the given ones, each with poses in every
    store and moving in at least one; by default every such camera of the first store.

    A static camera's rays are constant and teach nothing about camera control; a camera
    without poses has no rays at all. Both are refused by name.
    """
    candidates = list(cameras) if cameras else stores[0].cameras
    problems = {camera: _camera_problem(stores, camera) for camera in candidates}
    if cameras:
        for problem in problems.values():
            if problem is not None:
                raise problem
    chosen = [camera for camera, problem in problems.items() if problem is None]
    if not chosen:
        raise problems[candidates[0]]
    return chosen


def latent_geometry(
    intrinsics: np.ndarray,
    world_from_camera: np.ndarray,
    image_size: tuple[int, int],
    latent_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Per latent frame (N, 3, 3) image K and (N, 4, 4) poses → K on the latent grid, poses
    (float64: the relative poses of a clip are differences of nearby large numbers)."""
    k = scale_intrinsics(torch.as_tensor(intrinsics, dtype=torch.float64), image_size, *latent_size)
    return k.numpy(), np.asarray(world_from_camera, np.float64)


def clip_rays(
    intrinsics: Tensor, world_from_camera: Tensor, latent_size: tuple[int, int]
) -> Tensor:
    """(B, T, 3, 3) latent-grid K and (B, T, 4, 4) poses → (B, T, 6, h, w) Plücker rays, each
    clip relative to its own first frame (the first context frame: identity pose)."""
    h, w = latent_size
    return torch.stack(
        [
            clip_plucker_rays(k, pose, h, w)
            for k, pose in zip(intrinsics, world_from_camera, strict=True)
        ]
    )


def warp_base_sequence(
    tokenizer: torch.nn.Module,
    latents: np.ndarray,
    intrinsics: np.ndarray,
    poses: np.ndarray,
    height: float,
    chunk: int,
    reference: str = "first",
) -> np.ndarray:
    """One episode's warp base (N, C, h, w) float32: latent frame 0 itself, then every latent
    frame n a decoded frame warped into the cameras from pose n − 1 to pose n and encoded
    (``conditioning/warp.py``) — what the camera rollout builds. The ``reference`` frame is
    frame 0 (``first``), or the last video frame of latent frame n − 1 (``previous``; the
    real one here, decoded with its causal past as the env's stream decodes it).
    ``latents`` (N, C, h, w), ``intrinsics`` (3, 3) of the store's images, ``poses`` (N, 4, 4)
    at each latent frame's last video frame."""
    n = len(latents)
    if n == 1:
        return np.asarray(latents[:1], np.float32)
    lat = torch.from_numpy(np.asarray(latents, np.float32))
    if reference == "first":
        frames = np.repeat(warp.reference_frames(tokenizer, lat[:1]), n - 1, 0)
        frame_poses = np.repeat(poses[:1], n - 1, 0)
    else:  # the previous latent frame's last video frame: frames 0, c, 2c, …
        frames = warp.decode_frames(tokenizer, lat[None])[0, : chunk * (n - 1) : chunk]
        frame_poses = poses[:-1]
    warped = warp.warp_base_latents(
        tokenizer, frames, intrinsics, frame_poses, poses[:-1], poses[1:], height, chunk
    )
    return np.concatenate([latents[:1], warped.cpu().numpy()]).astype(np.float32)


def warp_base_sequences(
    seqs,
    stores: Sequence[EpisodeStore],
    tokenizer: torch.nn.Module,
    height: float,
    chunk: int,
    progress: bool = False,
    reference: str = "first",
) -> list[np.ndarray]:
    """:func:`warp_base_sequence` of every camera-variant sequence of ``seqs`` (its episodes'
    image K from the stores; the poses ``seqs`` already holds), computed once before training:
    the base depends only on the recorded first frame and poses."""
    from rich.progress import Progress

    out = []
    rows = list(zip(seqs.key, seqs.latents, seqs.world_from_camera, strict=True))
    with Progress(disable=not progress, transient=True) as bar:
        for (si, e, camera), lat, poses in bar.track(rows, description="warp base"):
            k = stores[si].read_window(e, 0, 1, cameras=[camera], fields=("intrinsics",))
            image_k = k["intrinsics"][camera][0]
            out.append(warp_base_sequence(tokenizer, lat, image_k, poses, height, chunk, reference))
    return out


# -- instruction control ---------------------------------------------------------------------


def check_instructions(stores: Sequence[EpisodeStore]) -> None:
    """The instruction variant needs each store's episodes to say what they do."""
    for store in stores:
        if not any(text.strip() for text in store.instructions):
            raise StoreError(
                "no episode has an instruction: the instruction variant conditions on it",
                path=store.path,
                field="episode_instruction",
                expected="a non-empty instruction per episode",
                found="''",
            )


def instruction_ids(text: str, vocab: int, encoder: str = "hashed") -> np.ndarray:
    """(L,) int64 ids of an instruction in the DiT's vocabulary (hashed words, 0 = padding;
    or the pretrained ``encoder``'s WordPiece ids)."""
    return _instruction_ids(text, vocab, encoder).numpy().astype(np.int64)


def pad_ids(ids: Sequence[np.ndarray]) -> Tensor:
    """Variable-length word ids → (B, L) long, zero-padded (at least one column)."""
    out = torch.zeros(len(ids), max(1, max(len(x) for x in ids)), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.from_numpy(x)
    return out


# -- multi-view ------------------------------------------------------------------------------


def check_multiview_cameras(cameras: Sequence[str]) -> None:
    if len(cameras) < 2 or len(set(cameras)) != len(cameras):
        raise ConfigError(
            "the multiview variant folds several cameras of an episode into one clip",
            field="cameras",
            expected="≥ 2 distinct cameras (e.g. --cameras front,top)",
            found=list(cameras),
        )


def fold_clip_batch(batch: dict) -> dict:
    """A batch of per-time-step clips with (B, T, V, C, h, w) latents → views folded into time.

    Per-frame keys (latents, actions, state, success, reward) become (B, T·V, …), each time
    step's values repeated for its V views; ``n_context`` counts folded frames; ``time`` and
    ``view`` say where each folded frame sits; ``step_*`` keep the per-time-step tensors.
    """
    latents = batch["latents"]
    b, t, v = latents.shape[:3]
    folded = fold_views(latents.transpose(1, 2))  # (B, V, T, …) → (B, T·V, C, h, w)
    per_view = lambda x: x.repeat_interleave(v, dim=1)  # noqa: E731  t0 t0 t1 t1 … for V = 2
    out = {
        "latents": folded.x,  # (B, T·V, C, h, w)
        "n_context": batch["n_context"] * v,
        "time": folded.time.repeat(b, 1),  # (B, T·V) long
        "view": folded.view.repeat(b, 1),  # (B, T·V) long: position in the model's cameras
        "actions": per_view(batch["actions"]),  # (B, T·V, c, A)
        "state": per_view(batch["state"]),  # (B, T·V, S)
        "success": per_view(batch["success"]),  # (B, T·V)
        "reward": per_view(batch["reward"]),  # (B, T·V)
    }
    out |= {f"step_{k}": batch[k] for k in STEP_KEYS}  # (B, T, …)
    return out | {k: val for k, val in batch.items() if k not in out and k not in STEP_KEYS}


class FoldedViewsWorldModel(ActionWorldModel):
    """The action world model trained on folded views: its proprio-state dynamics head steps
    once per time step, so it reads the per-time-step ``step_*`` tensors, not the per-view
    repeats the DiT and the frame probe see. Same parameters: exported as the base class."""

    def _state_losses(self, batch: dict, metrics: dict) -> Tensor:
        return super()._state_losses({k: batch[f"step_{k}"] for k in STEP_KEYS}, metrics)
