"""World-model training: latent sequences from the store's latent cache, seeded resumable
clip batches, and what ``cosmos-sim train world-model`` calls.

Per (store, episode, camera) sequence, at latent-frame resolution (c = 4 video frames)::

    latents   (N, C, h, w)  float32  the frozen tokenizer's cached CV latents
    chunks    (N, c, A)     float32  normalised actions leading into each latent frame
                                     (chunk 0 is zeros; see conditioning/actions.py)
    reached   (N,)          float32  goal reached at the frame's last video frame (success label)
    reward    (N,)          float32  reward of the action that led to that video frame
    state     (N, S)        float32  normalised state at the frame's last video frame

and, for the post-training variants (``world_model_variants.py``)::

    intrinsics         (N, 3, 3)  float64  camera: K of the frame's last video frame, latent grid
    world_from_camera  (N, 4, 4)  float64  camera: its pose
    instruction_ids    (L,)       int64    instruction: the episode's hashed instruction
    latents            (N, V, C, h, w)     multiview: one sequence per episode, V = len(views)

A training clip is a window of latent frames; the first ``n_context`` are given clean,
the rest are predicted. By default (``n_context=None``) each batch draws its context length
from 1 … ``frames`` − 1 and predicts the one frame after it — exactly what the env does at
every step (a clean past of 1 … ``frames`` − 1 frames → one new frame), so training and
closed-loop inference see the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cosmos_sim.conditioning.actions import ActionStats, chunk_actions
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError, StoreError
from cosmos_sim.models import zoo
from cosmos_sim.training import world_model_variants as variants

CHUNK = 4
HELD_OUT_EVERY = 10  # every 10th episode is held out (by episode index)


@dataclass
class Sequences:
    latents: list[np.ndarray] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)
    reached: list[np.ndarray] = field(default_factory=list)
    reward: list[np.ndarray] = field(default_factory=list)
    state: list[np.ndarray] = field(default_factory=list)
    key: list[tuple[int, int, str]] = field(default_factory=list)  # (store, episode, camera)
    intrinsics: list[np.ndarray] = field(default_factory=list)  # camera variant
    world_from_camera: list[np.ndarray] = field(default_factory=list)
    instruction_ids: list[np.ndarray] = field(default_factory=list)  # instruction variant
    views: list[str] = field(default_factory=list)  # multiview: the cameras, in view order
    state_frames: list[np.ndarray] = field(default_factory=list)  # (1 + c·k, S) every frame's
    base: list[np.ndarray] = field(default_factory=list)  # camera warp base (N, C, h, w)


@dataclass
class StateStats:
    mean: np.ndarray
    std: np.ndarray

    def normalize(self, state: np.ndarray) -> np.ndarray:
        return ((state - self.mean) / self.std).astype(np.float32)

    def denormalize(self, state: np.ndarray) -> np.ndarray:
        return (state * self.std + self.mean).astype(np.float32)


def latent_cache(store: EpisodeStore, tokenizer_hash: str):
    """The store's cached latents of one tokenizer; a clear error when absent."""
    try:
        group = store.group["latents"][tokenizer_hash]
    except KeyError as e:
        raise StoreError(
            "no latent cache for this tokenizer: run `cosmos-sim tokenize STORE --model TOKENIZER`",
            path=store.path,
            field=f"latents/{tokenizer_hash}",
        ) from e
    if not group.attrs.get("complete"):
        raise StoreError(
            "latent cache is incomplete: run `cosmos-sim tokenize` again", path=store.path
        )
    return group


def dataset_stats(stores: Sequence[EpisodeStore]) -> tuple[ActionStats, StateStats]:
    """Action and state normalisation over every store (which must share both spaces)."""
    first = stores[0].spec
    for store in stores[1:]:
        for name, have, found in (
            ("action_space", first.action_dim, store.spec.action_dim),
            ("state_dim", first.state_dim, store.spec.state_dim),
        ):
            if have != found:
                raise StoreError(
                    f"one model trains on one {name.split('_')[0]} space: the stores differ",
                    path=store.path,
                    field=name,
                    expected=f"{have} (as {stores[0].path})",
                    found=found,
                )
    actions = np.concatenate([s._read("action", slice(0, s.num_frames)) for s in stores])
    states = np.concatenate([s._read("state", slice(0, s.num_frames)) for s in stores])
    std = states.std(0)
    return ActionStats.from_actions(actions), StateStats(
        states.mean(0), np.where(std > 1e-6, std, 1.0)
    )


def load_sequences(
    stores: Sequence[EpisodeStore],
    tokenizer_hash: str,
    cameras: Sequence[str],
    action_stats: ActionStats,
    state_stats: StateStats,
    split: str = "train",
    *,
    geometry: bool = False,
    text_vocab: int = 0,
    text_encoder: str = "hashed",
) -> Sequences:
    """Every (episode, camera) sequence of the split, in memory (latents are small).

    ``geometry``: also each latent frame's K (on the latent grid) and pose (camera variant);
    ``text_vocab`` > 0: also each episode's hashed instruction (instruction variant).
    """
    seqs = Sequences()
    for si, store in enumerate(stores):
        cache = latent_cache(store, tokenizer_hash)
        instructions = store.instructions if text_vocab else []
        for camera in store.check_cameras(cameras):
            lat = cache[camera]["latents"]
            covered = np.asarray(cache[camera]["frames"][:])
            spec = store.spec.cameras[camera]
            fields = ("action", "state", "reward")
            if geometry:
                fields += ("intrinsics", "world_from_camera")
            for e in range(len(store)):
                held_out = e % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
                if held_out != (split == "held-out"):
                    continue
                n_frames = int(covered[e])
                n = 1 + (n_frames - 1) // CHUNK
                w = store.read_window(e, 0, n_frames, cameras=[camera], fields=fields)
                last = _append_controls(seqs, w, action_stats, state_stats)
                seqs.latents.append(np.asarray(lat[e, :n], np.float32))
                seqs.key.append((si, e, camera))
                if geometry:
                    k, pose = variants.latent_geometry(
                        w["intrinsics"][camera][last],
                        w["world_from_camera"][camera][last],
                        (spec.height, spec.width),
                        tuple(lat.shape[-2:]),
                    )
                    seqs.intrinsics.append(k)
                    seqs.world_from_camera.append(pose)
                if text_vocab:
                    seqs.instruction_ids.append(
                        variants.instruction_ids(instructions[e], text_vocab, text_encoder)
                    )
    if not seqs.latents:
        raise StoreError("no episodes in this split", field=split)
    return seqs


def _append_controls(
    seqs: Sequences, window: dict, action_stats: ActionStats, state_stats: StateStats
) -> np.ndarray:
    """Append one episode window's action chunks, labels and state (one row per latent
    frame) to ``seqs``; returns the index of each latent frame's last video frame."""
    n = 1 + (len(window["state"]) - 1) // CHUNK
    last = np.arange(n) * CHUNK  # last video frame of each latent frame
    reward_in = np.concatenate([[0.0], window["reward"]])[last]  # reward[t-1] leads into t
    seqs.chunks.append(
        chunk_actions(action_stats.normalize(window["action"]), CHUNK).astype(np.float32)
    )
    seqs.reached.append((reward_in > 0.5).astype(np.float32))
    seqs.reward.append(reward_in.astype(np.float32))
    seqs.state.append(state_stats.normalize(window["state"][last]))
    return last


def load_state_sequences(
    stores: Sequence[EpisodeStore],
    action_stats: ActionStats,
    state_stats: StateStats,
    split: str = "train",
    text_vocab: int = 0,
    text_encoder: str = "hashed",
) -> Sequences:
    """Every episode of the split as actions, labels and proprio state alone (per latent
    frame, and every frame's in ``state_frames``) — no latents, so any store of the task
    serves (stage 2 of training needs nothing else); with
    ``text_vocab`` > 0 also each episode's hashed instruction (its success depends on it)."""
    seqs = Sequences()
    for si, store in enumerate(stores):
        if text_vocab:
            variants.check_instructions([store])
        if list(store.spec.state_names) and len(state_stats.mean) != len(store.spec.state_names):
            raise StoreError(
                "the store's proprio state does not match the model's",
                path=store.path,
                field="state",
                expected=len(state_stats.mean),
                found=len(store.spec.state_names),
            )
        for e in range(len(store)):
            if (e % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) != (split == "held-out"):
                continue
            n_frames = 1 + (store.episode_length(e) - 1) // CHUNK * CHUNK  # whole chunks
            if n_frames < 1 + CHUNK:
                continue
            w = store.read_window(e, 0, n_frames, fields=("action", "state", "reward"))
            _append_controls(seqs, w, action_stats, state_stats)
            seqs.state_frames.append(state_stats.normalize(w["state"]))
            seqs.key.append((si, e, ""))
            if text_vocab:
                seqs.instruction_ids.append(
                    variants.instruction_ids(store.instructions[e], text_vocab, text_encoder)
                )
    if not seqs.state:
        raise StoreError("no episodes in this split", field=split)
    return seqs


def fold_cameras(seqs: Sequences, cameras: Sequence[str]) -> Sequences:
    """Per-(episode, camera) sequences → one per episode with (N, V, C, h, w) latents, views
    in the order of ``cameras`` (actions, labels and state are the episode's, shared)."""
    by_episode: dict[tuple[int, int], dict[str, int]] = {}
    for i, (si, e, camera) in enumerate(seqs.key):
        by_episode.setdefault((si, e), {})[camera] = i
    out = Sequences(views=list(cameras))
    for (si, e), index in by_episode.items():
        rows = [index[c] for c in cameras]
        shapes = {seqs.latents[i].shape for i in rows}
        if len(shapes) != 1:
            raise StoreError(
                "the cameras' latent sequences differ: views of one episode must share the "
                "latent grid and length",
                field=f"episode[{e}].latents",
                expected="one shape",
                found=sorted(shapes),
            )
        first = rows[0]
        out.latents.append(np.stack([seqs.latents[i] for i in rows], 1))  # (N, V, C, h, w)
        out.chunks.append(seqs.chunks[first])
        out.reached.append(seqs.reached[first])
        out.reward.append(seqs.reward[first])
        out.state.append(seqs.state[first])
        out.key.append((si, e, "+".join(cameras)))
        if seqs.instruction_ids:
            out.instruction_ids.append(seqs.instruction_ids[first])
    return out


class ClipWindows:
    """Seeded, resumable windows of ``frames`` latent frames over sequences of the given
    lengths, ``batch_size`` per batch (the core of the Trainer's StatefulData loaders).
    Subclasses turn the rows of :meth:`rows` into a batch in ``batch(k)``."""

    source = "data"  # what changed when a checkpoint's window count no longer matches

    def __init__(self, lengths: Sequence[int], frames: int, batch_size: int, seed: int = 0):
        self.frames, self.batch_size, self.seed = frames, batch_size, seed
        self.windows = np.array(
            [(i, s) for i, n in enumerate(lengths) for s in range(n - frames + 1)], np.int64
        ).reshape(-1, 2)
        if len(self.windows) < batch_size:
            raise ConfigError(
                f"only {len(self.windows)} clips of {frames} latent frames in the {self.source}",
                field="batch_size",
                found=batch_size,
            )
        self.consumed = 0

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "seed": self.seed, "clips": len(self.windows)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("clips") != len(self.windows):
            raise ConfigError(
                f"the {self.source} changed since the checkpoint",
                field="clips",
                expected=state.get("clips"),
                found=len(self.windows),
            )
        self.consumed = int(state["consumed"])

    def rows(self, k: int) -> np.ndarray:
        """(batch_size, 2) (sequence, start) of batch ``k``: a fresh permutation per epoch."""
        epoch, j = divmod(k, len(self.windows) // self.batch_size)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.windows))
        return self.windows[order[j * self.batch_size : (j + 1) * self.batch_size]]

    def random_context(self, k: int) -> int:
        """Batch ``k``'s context length, 1 … ``frames`` − 1 (then the one frame after it)."""
        return int(np.random.default_rng([self.seed, k, 1]).integers(1, self.frames))

    def batch(self, k: int) -> dict:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict]:
        while True:
            batch = self.batch(self.consumed)
            self.consumed += 1
            yield batch


class LatentClipLoader(ClipWindows):
    """Seeded, resumable batches of latent clips with actions, states and labels."""

    def __init__(
        self,
        seqs: Sequences,
        frames: int,
        batch_size: int,
        n_context: int | None = 1,
        seed: int = 0,
    ) -> None:
        if n_context is not None and not 1 <= n_context < frames:
            raise ConfigError(
                "need 1 <= n_context < frames", field="n_context", found=(n_context, frames)
            )
        super().__init__([len(x) for x in seqs.latents], frames, batch_size, seed)
        self.seqs, self.n_context = seqs, n_context

    def batch(self, k: int) -> dict:
        rows = self.rows(k)
        s = self.seqs
        t = self.frames

        def take(arrays):
            return torch.from_numpy(np.stack([arrays[i][st : st + t] for i, st in rows]))

        n_ctx = self.n_context
        if n_ctx is None:  # random context length, then the one frame after it
            n_ctx = self.random_context(k)
            t = n_ctx + 1
            rows = np.stack([rows[:, 0], rows[:, 1] + self.frames - t], 1)  # same clip ends
        chunks = take(s.chunks)
        # Every chunk stays: the DiT ignores the context frames' chunks (packing marks only
        # target frames as having an action), the next-action head is trained on the chunk
        # after each context frame, and the state dynamics head steps through all of them.
        every_chunk = chunks
        batch = {
            "actions_all": every_chunk,  # (B, T, c, A)
            "latents": take(s.latents),  # (B, T, C, h, w); multiview (B, T, V, C, h, w)
            "n_context": n_ctx,
            "actions": chunks,  # (B, T, c, A)
            "reward": take(s.reward),  # (B, T)
            "success": take(s.reached),  # (B, T)
            "state": take(s.state),  # (B, T, S)
        }
        if s.world_from_camera:  # camera variant: rays relative to each clip's first frame
            latent_size = tuple(s.latents[0].shape[-2:])
            rays = variants.clip_rays(take(s.intrinsics), take(s.world_from_camera), latent_size)
            batch["rays"] = rays  # (B, T, 6, h, w)
        if s.base:  # camera warp base: the first frame warped into each frame's camera
            batch["base"] = take(s.base)  # (B, T, C, h, w)
        if s.instruction_ids:
            batch["instruction_ids"] = variants.pad_ids([s.instruction_ids[i] for i in rows[:, 0]])
        if s.views:
            batch = variants.fold_clip_batch(batch)
        return batch


@dataclass(frozen=True)
class WorldModelRecipe:
    frames: int  # latent frames per clip
    batch_size: int
    lr: float
    warmup_steps: int
    steps: int


RECIPES = {
    "cpu-small": WorldModelRecipe(frames=4, batch_size=16, lr=4e-4, warmup_steps=100, steps=3000),
    "gpu": WorldModelRecipe(frames=8, batch_size=64, lr=2e-4, warmup_steps=1000, steps=100_000),
}


def stats_payload(
    action_stats: ActionStats, state_stats: StateStats, state_names: list[str]
) -> dict:
    return {
        "action_mean": action_stats.mean.tolist(),
        "action_std": action_stats.std.tolist(),
        "count": action_stats.count,
        "state_mean": state_stats.mean.tolist(),
        "state_std": state_stats.std.tolist(),
        "state_names": list(state_names),
    }


def prepare(data: Sequence[Path], tokenizer: Path, cameras: Sequence[str] | None):
    """Open the stores, check the latent caches, compute the normalisation statistics."""
    stores = [EpisodeStore.open(p) for p in data]
    loaded = zoo.load_model(tokenizer)
    cams = list(cameras) if cameras else stores[0].cameras
    action_stats, state_stats = dataset_stats(stores)
    return stores, loaded, cams, action_stats, state_stats


def write_run_stats(out_dir: Path, payload: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").write_text(json.dumps(payload, indent=1))


def recipe_dict(recipe: WorldModelRecipe) -> dict:
    return asdict(recipe)


def build_model(
    preset: str,
    action_dim: int,
    state_dim: int,
    latent_shape: tuple[int, int, int],
    sigma_data: float = 0.5,
    *,
    folded_views: bool = False,
    action_blind: bool = False,
    self_forcing: float = 0.0,
    renderer_hidden: int = 0,
    warp_height: float | None = None,
    warp_reference: str = "first",
    renderer_points: list[dict] | None = None,
    **dit_overrides,
):
    """The world model of ``preset`` with the given controls (``dit_overrides``); trained on
    folded views, as :class:`~cosmos_sim.training.world_model_variants.FoldedViewsWorldModel`
    (same parameters, its state dynamics stepping once per time step).

    ``action_blind``: the baseline the benchmarks compare against — the DiT never sees the
    actions (every clip's are dropped) nor the proprio state (which the actions drive); the
    state heads still train, so it loads and runs like any other model.

    ``warp_height``: a camera model whose residual base is the first frame warped by the
    table plane at this height (m) (``warp_reference``: the first frame or the previous one);
    None: the previous frame itself. ``renderer_points``: a camera renderer refines that
    warp (post-training over it)."""
    from cosmos_sim.models.diffusion import EDMConfig, WorldModelConfig
    from cosmos_sim.models.dit import preset as dit_preset
    from cosmos_sim.models.world_model import ActionWorldModel, ActionWorldModelConfig, ProbeConfig

    c, h, w = latent_shape
    dit_overrides = {"state_dim": 0 if action_blind else state_dim} | dit_overrides
    cfg = ActionWorldModelConfig(
        wm=WorldModelConfig(
            dit=dit_preset(
                preset,
                **{
                    "latent_channels": c,
                    "action_dim": action_dim,
                    "action_chunk": CHUNK,
                    "text_vocab": 0,
                }
                | dit_overrides,
            ),
            edm=EDMConfig(sigma_data=sigma_data),
            self_forcing=self_forcing,
            residual=True,
            p_drop_action=1.0 if action_blind else 0.1,
        ),
        probe=ProbeConfig(channels=c, height=h, width=w, state_dim=state_dim),
        dynamics_hidden=256,
        renderer_hidden=renderer_hidden,
        warp_base=warp_height is not None,
        warp_height=0.0 if warp_height is None else warp_height,
        warp_reference=warp_reference,
        renderer_points=renderer_points,
    )
    return (variants.FoldedViewsWorldModel if folded_views else ActionWorldModel)(cfg)


# Modules whose shapes follow the task's proprio state: another task's start anew.
TASK_STATE_MODULES = (
    "probe.",
    "dynamics.",
    "readout.",
    "wm.denoiser.inner_model.state_embed.",
)


def init_from(model: torch.nn.Module, model_dir: Path) -> list[str]:
    """Start ``model`` from an exported world model's weights (post-training: more steps,
    new settings such as self-forcing, or a new control on top of an action model, as
    Cosmos post-trains its base model, or another task on the same robot). The DiT's
    weights must fit ``model``'s; ``model``'s own extra modules (an instruction variant's
    text layers) keep their initialisation, zero-gated; the modules of the proprio state
    (``TASK_STATE_MODULES``) start anew when the state differs. Returns the names of the
    weights that start anew."""
    loaded = zoo.load_model(model_dir)
    theirs = {k: v.float() for k, v in loaded.module.state_dict().items()}
    ours = model.state_dict()
    for prefix in TASK_STATE_MODULES:
        # a module that does not fit starts anew: another task's state, or an instruction
        # model's success head (its first layer also reads the instruction's embedding)
        mine = [k for k in theirs if k.startswith(prefix)]
        if any(k not in ours or ours[k].shape != theirs[k].shape for k in mine):
            theirs = {k: v for k, v in theirs.items() if not k.startswith(prefix)}
    misfits = sorted(k for k in theirs if k not in ours or ours[k].shape != theirs[k].shape)
    if misfits:
        raise ConfigError(
            "the model to start from has another architecture",
            path=loaded.path,
            field=misfits[0],
            expected="the preset's and the store's shapes",
        )
    model.load_state_dict(theirs, strict=False)
    return sorted(ours.keys() - theirs.keys())


def train_world_model(
    data: Sequence[Path],
    tokenizer: Path,
    out_dir: Path,
    *,
    variant: str = "action",
    preset: str = "cpu-small",
    cameras: Sequence[str] | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    resume: bool = True,
    progress: bool = True,
    checkpoint_every: int = 100,
    seed: int = 0,
    dit_overrides: dict | None = None,
    action_blind: bool = False,
    self_forcing: float = 0.0,
    init: Path | None = None,
    state_points: bool = False,
    warp_base: bool = False,
    warp_reference: str = "first",
    text_encoder: str = "hashed",
) -> dict:
    """Train a diffusion world model on cached latents (resumable): action-conditioned, plus
    camera rays, folded views or the instruction for the other ``variant``s; with
    ``state_points``, the DiT also sees where the state's points fall in each view; with
    ``warp_base`` (camera variant), the DiT samples the residual over the first frame warped
    into each new camera by the task's table plane (``warp_reference``: the episode's first
    frame, or the previous latent frame's last one); ``text_encoder`` (instruction variant):
    ``hashed`` words, or the frozen pretrained ``minilm`` (``conditioning/text.py``)."""
    from cosmos_sim.training.trainer import Trainer, TrainerConfig

    variants.check_variant(variant)
    if preset not in RECIPES:
        raise ConfigError("unknown preset", field="preset", expected=sorted(RECIPES), found=preset)
    recipe = RECIPES[preset]
    stores, tok, _, action_stats, state_stats = prepare(data, tokenizer, cameras)
    cams, controls = variants.variant_setup(variant, preset, stores, cameras)
    controls |= dit_overrides or {}
    if text_encoder != "hashed":
        controls["text_encoder"] = text_encoder
    encoder = controls.get("text_encoder", "hashed")
    if encoder != "hashed":  # a pretrained encoder reads its own ids
        from cosmos_sim.conditioning.text import MINILM_VOCAB, check_text_encoder

        check_text_encoder(encoder)
        if variant != "instruction":
            raise ConfigError(
                "a text encoder reads the instruction: instruction variant only",
                field="text_encoder",
                expected="--variant instruction",
                found=variant,
            )
        controls["text_vocab"] = MINILM_VOCAB
    warp_height = _warp_height(variant, stores[0], warp_reference) if warp_base else None
    seqs = load_sequences(
        stores,
        tok.latent_hash,
        cams,
        action_stats,
        state_stats,
        "train",
        geometry=variant == "camera",
        text_vocab=controls["text_vocab"] if variant == "instruction" else 0,
        text_encoder=encoder,
    )
    if variant == "multiview":
        seqs = fold_cameras(seqs, cams)
    if warp_base:
        seqs.base = variants.warp_base_sequences(
            seqs, stores, tok.module, warp_height, CHUNK, progress, warp_reference
        )
    loader = LatentClipLoader(
        seqs, recipe.frames, batch_size or recipe.batch_size, n_context=None, seed=seed
    )
    latent_shape = tuple(seqs.latents[0].shape[-3:])
    if state_points and not action_blind:
        controls |= variants.state_point_controls(
            variant, stores, cams, state_stats.mean, state_stats.std, latent_shape[1:]
        )
    torch.manual_seed(seed)
    # EDM's sigma_data is the latents' standard deviation (Karras et al. 2022, sec. 5).
    # The residual model diffuses frame-to-frame differences: their std is its sigma_data.
    sigma_data = round(
        float(np.concatenate([np.diff(x, axis=0).ravel() for x in seqs.latents]).std()), 3
    )
    init_config = zoo.read_config(init)["config"] if init else {}
    if init_config.get("renderer_hidden"):  # its frozen renderer reads states in its units
        check_same_state_stats(
            init,
            {"state_mean": state_stats.mean, "state_std": state_stats.std},
            "the model's renderer draws states normalised as in its own stores: "
            "post-train it on those stores",
        )
    model = build_model(
        preset,
        action_stats.action_dim,
        seqs.state[0].shape[1],
        latent_shape,
        sigma_data,
        folded_views=variant == "multiview",
        action_blind=action_blind,
        self_forcing=self_forcing,
        # post-training a model with a state renderer: its DiT learns the renderer's residual
        renderer_hidden=init_config.get("renderer_hidden", 0),
        warp_height=warp_height,
        warp_reference=warp_reference,
        renderer_points=init_config.get("renderer_points"),
        **controls,
    )
    if init is not None:
        init_from(model, init)
    if model.cfg.renderer_points:  # a camera renderer (frozen): its frames are the base
        from cosmos_sim.training.renderer import camera_renderer_bases

        seqs.base = camera_renderer_bases(model, seqs)
    steps = steps or recipe.steps
    tcfg = TrainerConfig(
        steps=steps,
        lr=recipe.lr,
        warmup_steps=min(recipe.warmup_steps, steps // 10),
        weight_decay=0.01,
        ema_decay=0.995,
        checkpoint_every=checkpoint_every,
        seed=seed,
        progress=progress,
    )
    out_dir = Path(out_dir)
    stats = stats_payload(action_stats, state_stats, stores[0].spec.state_names)
    write_run_stats(out_dir, stats)
    run_config = {
        "model": model.cfg.to_dict(),
        "data": {
            "stores": [str(Path(p).resolve()) for p in data],
            "tokenizer": str(tok.path.resolve()),
            "tokenizer_hash": tok.latent_hash,
            "cameras": cams,
            "recipe": recipe_dict(recipe),
            "task": stores[0].spec.source,
            "image_size": [
                stores[0].spec.cameras[cams[0]].height,
                stores[0].spec.cameras[cams[0]].width,
            ],
        },
    }
    if init is not None:  # post-training: a resumed run must start from the same weights
        run_config["data"]["init"] = str(Path(init).resolve())
    if variant != "action":  # (an action run's config stays as it was: older runs resume)
        run_config["data"] |= {
            "variant": variant,
            "action_names": list(stores[0].spec.action_names),
        }
    trainer = Trainer(model, tcfg, loader, out_dir, run_config=run_config)
    summary = trainer.fit(resume=resume)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _warp_height(variant: str, store: EpisodeStore, reference: str) -> float:
    """The table height (m) of the store's MuJoCo task: the plane of the camera warp base."""
    from cosmos_sim.bridge.record import source_task
    from cosmos_sim.conditioning.warp import check_warp_reference, mujoco_table_height

    check_warp_reference(reference)  # before the sequences load: they are warped with it
    if variant != "camera":
        raise ConfigError(
            "the warp base moves the first frame with the camera: camera variant only",
            field="warp_base",
            expected="--variant camera",
            found=variant,
        )
    return mujoco_table_height(source_task(store.spec.source))


def check_same_state_stats(model_dir: Path, stats: dict, message: str) -> None:
    """Refuse (``message``, naming the model's stats.json) unless the exported model
    ``model_dir`` normalises the proprio state as ``stats`` (``state_mean`` / ``state_std``)
    does: heads or a renderer taken from it read states in its units."""
    path = zoo.resolve(model_dir) / "stats.json"
    theirs = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("state_mean", "state_std"):
        if not np.allclose(theirs.get(key, []), stats.get(key, []), rtol=1e-5, atol=1e-7):
            raise ConfigError(message, path=path, field=key)


def with_state_heads_of(model, source: Path, stats: dict):
    """``model``'s diffusion part (DiT, next-action and reward heads) with the proprio-state
    heads (probe, dynamics, readout) and their settings of the exported model ``source`` —
    post-training the DiT of a model whose stage-2 heads are done keeps them as they were.
    Both must normalise the state alike."""
    from cosmos_sim.models.world_model import ActionWorldModel, ActionWorldModelConfig

    check_same_state_stats(
        source,
        stats,
        "the state heads to keep were trained with another state normalisation "
        "(train on the same stores)",
    )
    src = zoo.load_model(source)
    cfg = ActionWorldModelConfig(**{**src.module.cfg.to_dict(), "wm": model.cfg.wm.to_dict()})
    out = ActionWorldModel(cfg)
    ours, theirs = model.state_dict(), src.module.state_dict()
    out.load_state_dict(
        {k: (ours[k] if k.startswith("wm.") else theirs[k].float()) for k in out.state_dict()}
    )
    return out


def export_world_model(
    run_dir: Path,
    model_dir: Path,
    card: str | None = None,
    use_ema: bool = True,
    state_heads_from: Path | None = None,
) -> Path:
    """Write the newest checkpoint of `run_dir` (EMA weights) as a zoo model directory;
    with ``state_heads_from``, that model's proprio-state heads (:func:`with_state_heads_of`).

    Besides the model, config.toml records what an env needs to drive it: the ``variant``,
    the ``cameras`` (the view order of a multi-view model), ``views``, whether it takes
    ``rays`` (and relative to which camera), whether it reads an ``instruction``, and the
    store's ``action_names`` (which action dimensions move the camera).
    """
    from cosmos_sim.models.world_model import ActionWorldModel, ActionWorldModelConfig
    from cosmos_sim.training import checkpoint as ckpt
    from cosmos_sim.training.trainer import param_groups

    path = ckpt.latest_checkpoint(run_dir)
    if path is None:
        raise ConfigError("no checkpoint to export", path=run_dir)
    tensors, meta = ckpt.load_checkpoint(path)
    cfg = ActionWorldModelConfig(**meta["config"]["model"])
    model = ActionWorldModel(cfg)
    model.load_state_dict(ckpt.strip_prefix(tensors, "model"))
    if use_ema and any(k.startswith("ema.") for k in tensors):
        order = [p for g in param_groups(model, 1.0) for p in g["params"]]
        with torch.no_grad():
            for i, p in enumerate(order):
                p.copy_(tensors[f"ema.{i}"])
    data = meta["config"]["data"]
    stats = json.loads((Path(run_dir) / "stats.json").read_text())
    if state_heads_from is not None:
        model = with_state_heads_of(model, Path(state_heads_from), stats)
        cfg = model.cfg
    extra = {
        "trained_steps": int(meta["step"]),
        "wall_time_s": round(float(meta.get("wall_time", 0.0)), 1),
        "tokenizer": Path(data["tokenizer"]).name,  # looked up in the zoo first
        "tokenizer_path": zoo.portable_path(data["tokenizer"]),
        "tokenizer_hash": data["tokenizer_hash"],
        "task": data["task"],
        "cameras": data["cameras"],
        "context_frames": int(data["recipe"]["frames"]) - 1,
        "image_size": data["image_size"],
        **variants.export_fields(data, cfg.wm.dit),
    }
    if state_heads_from is not None:  # how the kept heads were fitted, and from where
        source = zoo.read_config(state_heads_from)
        extra["post_trained_from"] = zoo.portable_path(state_heads_from)
        extra |= {k: source[k] for k in ("state_heads", "renderer") if k in source}
    elif model.renderer is not None and data.get("init") and Path(data["init"]).is_dir():
        # post-trained over the init model's (frozen) renderer: how that one was fitted
        source = zoo.read_config(data["init"])
        extra |= {k: source[k] for k in ("renderer",) if k in source}
    old_card = Path(model_dir) / "card.md"
    if card is None and old_card.exists():  # re-exporting keeps the model's card
        card = old_card.read_text()
    return zoo.save_model(
        model_dir,
        "world-model-diffusion",
        cfg.to_dict(),
        model.state_dict(),
        stats=stats,
        card=card,
        extra=extra,
    )
