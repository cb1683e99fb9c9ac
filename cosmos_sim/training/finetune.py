"""Post-training a world model on a handful of the user's own videos (Cosmos's general
post-training), by full fine-tuning or with LoRA adapters, through the one Trainer.

    cosmos-sim finetune --model wm-diffusion-reach --videos clips/*.mp4 --out runs/ft

Each video is decoded with PyAV, centre-cropped to the model's aspect ratio and resized
to its image size (cv2 INTER_AREA), then encoded by the model's frozen tokenizer. The
latent clips carry no actions (video-only post-training): the world model's own
diffusion loss learns how the user's scenes move, with 1 … ``frames`` − 1 clean context
frames and the next frame to predict (a residual model diffuses its change from the
previous frame). The probe and the action head need labels and stay as they were.

Output directory::

    <out>/
      checkpoints/  metrics.jsonl   the Trainer's run (resumable)
      stats.json                    the base model's normalisation statistics
      summary.json                  last metrics, trainable parameters, peak memory
      adapter/                      LoRA: config.toml + weights.safetensors + card.md
                                    (loads on top of the base: models/lora.py load_lora)
      model/                        --full: a whole model directory (export_world_model)
"""

from __future__ import annotations

import json
import resource
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos_sim.data.videos import decode_video, expand_videos
from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.models import lora, zoo
from cosmos_sim.models.tokenizer import VideoTokenizer
from cosmos_sim.models.world_model import ActionWorldModel
from cosmos_sim.training.world_model_task import ClipWindows

MIN_VIDEOS = 5
ENCODE_FRAMES = 65  # longest piece of a video encoded at once (1 + 4·16 frames)
LORA_LR, FULL_LR = 5e-4, 1e-4


@dataclass
class FinetuneConfig:
    """How to fine-tune. ``full=False`` trains LoRA adapters of rank ``lora_rank`` only."""

    full: bool = False
    lora_rank: int = 8
    lora_alpha: float | None = None  # default: lora_rank (scale α/r = 1)
    lora_dropout: float = 0.0
    targets: tuple[str, ...] = lora.DIT_TARGETS
    steps: int = 300
    lr: float | None = None  # default: LORA_LR or FULL_LR
    batch_size: int = 4
    frames: int | None = None  # latent frames per clip; default: the model's context + 1
    stride: int = 1  # keep every stride-th video frame (match the model's frame rate)
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "stride", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError("must be ≥ 1", field=name, found=getattr(self, name))
        if not self.full and self.lora_rank < 1:
            raise ConfigError(
                "LoRA rank must be ≥ 1 (or fine-tune every weight with --full)",
                field="lora_rank",
                found=self.lora_rank,
            )
        if self.lr is not None and self.lr <= 0:
            raise ConfigError("must be positive", field="lr", found=self.lr)
        if self.frames is not None and self.frames < 2:
            raise ConfigError(
                "a clip needs ≥ 1 context frame and 1 frame to predict",
                field="frames",
                found=self.frames,
            )
        self.targets = tuple(self.targets)

    @property
    def mode(self) -> str:
        return "full" if self.full else "lora"

    @property
    def learning_rate(self) -> float:
        return self.lr or (FULL_LR if self.full else LORA_LR)


@torch.no_grad()
def encode_video(
    tokenizer: VideoTokenizer, frames: np.ndarray, min_frames: int
) -> list[np.ndarray]:
    """(T, H, W, 3) uint8 → latent sequences (N, C, h, w) float32, one per piece of at most
    ENCODE_FRAMES (or ``min_frames``) frames, trimmed to 1 + 4k; shorter pieces are dropped."""
    device = next(tokenizer.parameters()).device
    step = max(ENCODE_FRAMES, min_frames)
    out = []
    for start in range(0, len(frames), step):
        piece = frames[start : start + step]
        piece = piece[: VideoTokenizer.video_frames(VideoTokenizer.latent_frames(len(piece)))]
        if len(piece) < min_frames:
            continue
        video = torch.from_numpy(piece).permute(0, 3, 1, 2)[None].float() / 127.5 - 1
        out.append(tokenizer.encode(video.to(device))[0].float().cpu().numpy())  # (N, C, h, w)
    return out


# -- the base model, the data, the task ----------------------------------------------------


@dataclass
class BaseModel:
    """A shipped diffusion world model with its frozen tokenizer."""

    world_model: zoo.LoadedModel
    tokenizer: zoo.LoadedModel

    @classmethod
    def load(cls, model: str | Path) -> BaseModel:
        wm = zoo.load_model(model)
        if wm.kind != "world-model-diffusion":
            raise ModelError(
                "not a diffusion world model", path=wm.path, field="kind", found=wm.kind
            )
        meta = wm.config
        if "image_size" not in meta:
            raise ModelError("missing field", path=wm.path / "config.toml", field="image_size")
        tok = zoo.load_tokenizer_of(wm)
        if tok.module.cfg.kind != "cv":
            raise ModelError("need a continuous (cv) tokenizer", path=tok.path, field="kind")
        return cls(wm, tok)

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.world_model.config["image_size"]
        return int(h), int(w)

    @property
    def clip_frames(self) -> int:
        """Latent frames of one training clip: the context the model was trained with, + 1."""
        return int(self.world_model.config.get("context_frames", 3)) + 1


class VideoClipLoader(ClipWindows):
    """Seeded, resumable batches of latent clips without actions (the Trainer's StatefulData).

    As world_model_task's LatentClipLoader: each batch draws its context length n from
    1 … ``frames`` − 1 and predicts the one frame after it, what the env does every step.
    """

    source = "videos"

    def __init__(self, latents: list[np.ndarray], frames: int, batch_size: int, seed: int = 0):
        super().__init__([len(x) for x in latents], frames, batch_size, seed)
        self.latents = latents

    def batch(self, k: int) -> dict:
        rows = self.rows(k)
        n_ctx = self.random_context(k)
        first = self.frames - (n_ctx + 1)  # the window's last n + 1 frames
        clips = [self.latents[i][s + first : s + self.frames] for i, s in rows]
        return {"latents": torch.from_numpy(np.stack(clips)), "n_context": n_ctx}  # (B, T, C, h, w)


class VideoOnlyWorldModel(ActionWorldModel):
    """The world model trained on video alone: its diffusion loss with no actions (the
    frames are predicted as in classifier-free guidance's unconditional branch)."""

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return self.wm.training_step({"latents": batch["latents"], "n_context": batch["n_context"]})


def video_only_model(model: ActionWorldModel) -> tuple[VideoOnlyWorldModel, bool]:
    """The fine-tuning copy of ``model``, and whether its state renderer was dropped.

    Videos carry no states, so the DiT learns its residual over the previous frame; a
    renderer (which would replace that base in the env) is dropped, so the fine-tuned
    model draws each frame from the previous one, as it was trained."""
    from dataclasses import replace

    state = model.state_dict()
    dropped = model.cfg.renderer_hidden > 0
    cfg = replace(model.cfg, renderer_hidden=0) if dropped else model.cfg
    task = VideoOnlyWorldModel(cfg)
    task.load_state_dict({k: v for k, v in state.items() if not k.startswith("renderer.")})
    return task, dropped


def encode_videos(
    paths: list[Path], base: BaseModel, frames: int, stride: int = 1, progress: bool = False
) -> list[np.ndarray]:
    """Decode, fit and encode every video: latent sequences (N, C, h, w), ≥ ``frames`` long.
    A video too short for one training clip is a ConfigError naming the file."""
    need = VideoTokenizer.video_frames(frames)  # video frames of one training clip
    latents = []
    with _progress_bar(progress, len(paths)) as advance:
        for path in paths:
            video = decode_video(path, base.image_size, stride)
            if len(video) < need:
                raise ConfigError(
                    f"video too short for one training clip of {frames} latent frames",
                    path=path,
                    field="frames",
                    expected=f"≥ {need} (after --stride {stride})",
                    found=len(video),
                )
            latents += encode_video(base.tokenizer.module, video, need)
            advance(f"{path.name} ({len(video)} frames)")
    return latents


@contextmanager
def _progress_bar(enabled: bool, total: int):
    """A rich bar over the videos (closed before the Trainer opens its own), or nothing."""
    if not enabled:
        yield lambda name: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]encode videos"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[name]}"),
    ) as bar:
        task = bar.add_task("encode", total=total, name="")
        yield lambda name: bar.update(task, advance=1, name=name)


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak memory of this process: CUDA allocations on a GPU, else the peak resident set."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _card(base: BaseModel, videos: list[Path], cfg: FinetuneConfig, summary: dict) -> str:
    what = "Full fine-tune" if cfg.full else f"LoRA adapter (rank {cfg.lora_rank})"
    cmd = f"cosmos-sim finetune --model {base.world_model.path.name} --videos {' '.join(map(str, videos))}"
    cmd += f" --steps {cfg.steps} --lr {cfg.learning_rate:g}"
    cmd += " --full" if cfg.full else f" --lora-rank {cfg.lora_rank}"
    return (
        f"# {what} of {base.world_model.path.name}\n\n"
        f"Video-only post-training on {len(videos)} videos, {summary.get('clips', 0)} latent clips "
        f"of {summary.get('frames', 0)} latent frames, {summary['step']} steps.\n\n"
        f"* base weights hash: `{base.world_model.weights_hash}`\n"
        f"* trainable parameters: {summary['trainable_parameters']:,} of "
        f"{summary['total_parameters']:,}\n"
        f"* final loss: {summary.get('loss', float('nan')):.4f}\n"
        f"* peak memory: {summary['peak_memory_mb']:.0f} MB (process); weights, gradients and "
        f"Adam state {summary['train_state_mb']:.1f} MB\n"
        + (
            "* the base's state renderer is left out: videos carry no states, so the DiT "
            "learned each frame's residual over the previous one, which is what it is drawn "
            "from\n"
            if summary.get("renderer_dropped")
            else ""
        )
        + f"\n```\n{cmd}\n```\n"
    )


def finetune(
    model: str | Path,
    videos: Sequence[str | Path],
    out_dir: str | Path,
    config: FinetuneConfig | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model`` on ``videos`` into ``out_dir``; returns the run's summary."""
    from cosmos_sim.training.trainer import Trainer, TrainerConfig
    from cosmos_sim.training.world_model_task import export_world_model, write_run_stats

    cfg = config or FinetuneConfig()
    paths = expand_videos(videos)
    if len(paths) < MIN_VIDEOS:
        raise ConfigError(
            "fine-tuning needs at least 5 videos",
            field="--videos",
            expected=f"≥ {MIN_VIDEOS}",
            found=len(paths),
        )
    base = BaseModel.load(model)
    frames = cfg.frames or base.clip_frames
    latents = encode_videos(paths, base, frames, cfg.stride, progress)
    loader = VideoClipLoader(latents, frames, cfg.batch_size, cfg.seed)

    torch.manual_seed(cfg.seed)
    task, dropped = video_only_model(base.world_model.module)
    if cfg.full:
        task.requires_grad_(True)
    else:
        lora.add_lora(task, cfg.lora_rank, cfg.lora_alpha, cfg.targets, cfg.lora_dropout)
    task.train()
    trainable, total = lora.count_parameters(task)
    tcfg = TrainerConfig(
        steps=cfg.steps,
        lr=cfg.learning_rate,
        warmup_steps=min(20, cfg.steps // 10),
        weight_decay=0.01 if cfg.full else 0.0,
        ema_decay=0.0,  # a short run: keep the last weights
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
        progress=progress,
    )
    out_dir = Path(out_dir)
    meta = base.world_model.config
    run_config = {
        "model": task.cfg.to_dict(),
        "finetune": {
            **{k: v for k, v in asdict(cfg).items() if k not in ("steps", "checkpoint_every")},
            "targets": list(cfg.targets),
            "frames": frames,
        },
        "data": {  # what export_world_model needs, carried over from the base model
            "base_model": str(base.world_model.path.resolve()),
            "base_weights_hash": base.world_model.weights_hash,
            "videos": [str(p.resolve()) for p in paths],
            "tokenizer": str(base.tokenizer.path.resolve()),
            "tokenizer_hash": base.tokenizer.latent_hash,
            "task": meta.get("task", "video"),
            "cameras": list(meta.get("cameras", ["video"])),
            "recipe": {"frames": base.clip_frames},
            "image_size": list(base.image_size),
        },
    }
    trainer = Trainer(task, tcfg, loader, out_dir, run_config=run_config)
    summary = trainer.fit(resume=resume)
    write_run_stats(out_dir, base.world_model.stats or {})  # what export_world_model copies
    summary |= {
        "mode": cfg.mode,
        "videos": len(paths),
        "clips": len(loader.windows),
        "frames": frames,
        "renderer_dropped": dropped,
        "trainable_parameters": trainable,
        "total_parameters": total,
        # fp32 weights + gradients and Adam's two moments of the trainable ones
        "train_state_mb": (total + 3 * trainable) * 4 / 2**20,
        "peak_memory_mb": peak_memory_mb(trainer.prec.device),
    }
    card = _card(base, paths, cfg, summary)
    if cfg.full:
        summary["model_dir"] = str(export_world_model(out_dir, out_dir / "model", card=card))
    else:
        adapter = lora.save_lora(
            task,
            out_dir / "adapter",
            targets=cfg.targets,
            base_model=base.world_model.path.name,
            base_weights_hash=base.world_model.weights_hash,
            card=card,
            extra={
                "trained_steps": int(summary["step"]),
                "videos": len(paths),
                "drops_renderer": dropped,  # export_merged drops the base's renderer
            },
        )
        summary["adapter_dir"] = str(adapter)
        summary["adapter_mb"] = (adapter / "weights.safetensors").stat().st_size / 2**20
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
