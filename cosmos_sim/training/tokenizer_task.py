"""Tokenizer training and the latent cache: what ``cosmos-sim train tokenizer`` and
``cosmos-sim tokenize`` call.

Latent cache layout, written under the episode store's group::

    STORE.zarr/latents/<latent_hash>/
      zarr.json                         attrs: model path, kind, weights_hash (= the latent
                                        hash), frames, cameras
      <camera>/latents   (E, N, C, h, w) float16   cv: per-episode causal latents
      <camera>/codes     (E, N, h, w)    int32     dv: FSQ codes
      <camera>/frames    (E,)            int64     video frames each episode's latents cover

Each episode is encoded whole (its first ``1 + 4k`` frames), padded to the longest on N.
The group is keyed by the model's latent hash (its weights hash, or for a decoder-only
fine-tune the hash of the tokenizer whose encoder it kept): a changed encoder gets a new
group and stale groups of the same model directory are removed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cosmos_sim.data.clips import ClipSpec
from cosmos_sim.data.loader import ClipLoader
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError
from cosmos_sim.models import zoo
from cosmos_sim.models.tokenizer import (
    TokenizerConfig,
    VideoTokenizer,
    reconstruction_loss,
    tokenizer_config,
)
from cosmos_sim.training import checkpoint as ckpt
from cosmos_sim.training import distributed as D
from cosmos_sim.training.trainer import Trainer, TrainerConfig


def to_unit(video_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, 3, H, W) → float in [-1, 1]."""
    return video_u8.float() / 127.5 - 1


class TokenizerTask(nn.Module):
    """Reconstruction training of a :class:`VideoTokenizer` (the Trainer's task)."""

    def __init__(self, tokenizer: VideoTokenizer, decoder_only: bool = False) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.decoder_only = decoder_only
        if decoder_only:  # the latents stay bit-for-bit those of the init tokenizer
            tokenizer.encoder.requires_grad_(False)

    def training_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        video = to_unit(batch["video"])  # (B, T, 3, H, W)
        tok = self.tokenizer
        if self.decoder_only:
            with torch.no_grad():
                z = tok.quantize(tok.encode_raw(video))
            recon = tok._decode(z)
        else:
            recon = tok(video)
        return reconstruction_loss(recon, video)


@dataclass(frozen=True)
class TokenizerRecipe:
    """Training settings of a preset (sizes come from ``tokenizer.PRESETS``)."""

    batch_size: int
    frames: int
    lr: float
    warmup_steps: int
    steps: int
    num_workers: int


PCA_INIT_BATCHES = 8
RECIPES = {
    "cpu-small": TokenizerRecipe(
        batch_size=8, frames=9, lr=1e-4, warmup_steps=20, steps=3000, num_workers=1
    ),
    "gpu": TokenizerRecipe(
        batch_size=32, frames=17, lr=4e-4, warmup_steps=1000, steps=100_000, num_workers=8
    ),
}


def train_tokenizer(
    data: list[Path],
    kind: str,
    preset: str,
    out_dir: Path,
    steps: int | None = None,
    resume: bool = True,
    *,
    batch_size: int | None = None,
    progress: bool = True,
    checkpoint_every: int = 100,
    seed: int = 0,
    lr: float | None = None,
    init_from: Path | None = None,
    decoder_only: bool = False,
    heldout_every: int = 0,
    decoder_sizes: dict | None = None,
) -> dict:
    """Train a tokenizer on ``data`` stores into ``out_dir`` (resumable); returns the summary.

    ``init_from`` (a tokenizer model directory of the same kind) starts from its weights and
    architecture instead of a random init — a second schedule after a first one ends (the
    preset then only chooses the recipe).
    ``decoder_only`` (needs ``init_from``) freezes the encoder: the latents stay exactly
    the init tokenizer's, so its latent caches and the world models trained on them keep
    working with the better decoder (the export records ``latents_of``).
    ``heldout_every`` > 0 holds out every k-th episode of each store (the world models'
    split) instead of the seeded hash split, so their held-out episodes stay unseen.
    ``decoder_sizes`` (with ``decoder_only``: ``dec_width``, ``dec_width_low``,
    ``dec_blocks``) gives the new decoder other sizes than the init's — a fast decoder for
    the same latents. Its linear bypass starts as the init's (the linear PCA decoder, where
    there is one) and its conv trunk from scratch, silent at step 0.
    """
    if preset not in RECIPES:
        raise ConfigError("unknown preset", field="preset", expected=sorted(RECIPES), found=preset)
    if decoder_sizes and not decoder_only:
        raise ConfigError(
            "other decoder sizes need a decoder-only run",
            field="decoder_sizes",
            expected="--decoder-only --init TOKENIZER",
            found=decoder_sizes,
        )
    if decoder_only and init_from is None:
        raise ConfigError(
            "a decoder-only fine-tune needs the tokenizer whose encoder it keeps",
            field="init",
            expected="a tokenizer model directory",
            found=None,
        )
    recipe = RECIPES[preset]
    info = D.init_distributed()
    model_cfg = tokenizer_config(preset, kind)
    if init_from is not None:
        loaded = zoo.load_model(init_from)
        if loaded.kind != "tokenizer" or loaded.module.cfg.kind != kind:
            raise ConfigError(
                f"init model is not a {kind} tokenizer",
                path=init_from,
                field="kind",
                expected=f"tokenizer ({kind})",
                found=f"{loaded.kind} ({loaded.config.get('config', {}).get('kind')})",
            )
        model_cfg = loaded.module.cfg
        if decoder_sizes:
            model_cfg = replace(model_cfg, **decoder_sizes)
    spec = ClipSpec(frames=recipe.frames, heldout_every=heldout_every)
    batch = batch_size or recipe.batch_size
    loader = ClipLoader(
        data,
        spec,
        batch,
        seed=seed,
        num_workers=recipe.num_workers,
        rank=info.rank,
        world_size=info.world_size,
    )
    steps = steps or recipe.steps
    tcfg = TrainerConfig(
        steps=steps,
        lr=lr or recipe.lr,
        warmup_steps=min(recipe.warmup_steps, steps // 10),
        weight_decay=0.0,  # fine-tuning around the PCA code; decay diverged here (see card)
        beta2=0.99,
        ema_decay=0.995,
        checkpoint_every=checkpoint_every,
        seed=seed,
        progress=progress,
    )
    torch.manual_seed(seed)
    task = TokenizerTask(VideoTokenizer(model_cfg), decoder_only)
    run_config = {
        "model": model_cfg.to_dict(),
        "data": {
            "stores": [str(Path(p).resolve()) for p in data],
            "clips": asdict(spec),
            "batch_size": batch,
        },
    }
    fresh = not (resume and ckpt.latest_checkpoint(out_dir) is not None)
    if init_from is None and model_cfg.linear_bypass:
        # Data-dependent init: the bypass starts as the PCA code of the first batches
        # (read directly, so the loader's position is untouched).
        run_config["pca_init_batches"] = PCA_INIT_BATCHES
        if fresh:
            video = torch.cat([loader.batch(k)["video"] for k in range(PCA_INIT_BATCHES)])
            task.tokenizer.init_bypass_pca(to_unit(video))
    if init_from is not None:
        init_state = loaded.module.state_dict()
        if decoder_sizes:  # a new decoder: the init's encoder, and its linear bypass decoder
            init_state = {
                k: v
                for k, v in init_state.items()
                if k.startswith(("encoder.", "decoder.bypass.")) or not k.startswith("decoder.")
            }
            task.tokenizer.load_state_dict(init_state, strict=False)
            run_config["decoder_sizes"] = decoder_sizes
        else:
            task.tokenizer.load_state_dict(init_state)
        run_config["init"] = {
            "model": str(Path(init_from).resolve()),
            "weights_hash": loaded.weights_hash,
            "latent_hash": loaded.latent_hash,
            "decoder_only": decoder_only,
        }
    trainer = Trainer(task, tcfg, loader, out_dir, run_config=run_config, dist_info=info)
    summary = trainer.fit(resume=resume)
    if info.is_main:
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def export_tokenizer(
    run_dir: Path,
    model_dir: Path,
    card: str | None = None,
    use_ema: bool = True,
    checkpoint: Path | None = None,
) -> Path:
    """Write a checkpoint (default: the newest of ``run_dir``), EMA weights, as a model directory."""
    from cosmos_sim.training import checkpoint as ckpt

    path = Path(checkpoint) if checkpoint is not None else ckpt.latest_checkpoint(run_dir)
    if path is None:
        raise ConfigError("no checkpoint to export", path=run_dir)
    tensors, meta = ckpt.load_checkpoint(path)
    cfg = TokenizerConfig(**meta["config"]["model"])
    model = VideoTokenizer(cfg)
    model.load_state_dict(
        {k.removeprefix("tokenizer."): v for k, v in ckpt.strip_prefix(tensors, "model").items()}
    )
    init = meta["config"].get("init", {})
    if init.get("decoder_only"):  # frozen in the run: not in its EMA list
        model.encoder.requires_grad_(False)
    if use_ema and any(k.startswith("ema.") for k in tensors):
        # the Trainer's EMA list follows its AdamW groups: decayed params first, then the rest
        from cosmos_sim.training.trainer import param_groups

        order = [p for g in param_groups(model, 1.0) for p in g["params"]]
        n_ema = sum(k.startswith("ema.") for k in tensors)
        if n_ema != len(order):
            raise ConfigError(
                "the checkpoint's EMA does not match the trained parameters",
                path=path,
                field="ema",
                expected=len(order),
                found=n_ema,
            )
        with torch.no_grad():
            for i, p in enumerate(order):
                p.copy_(tensors[f"ema.{i}"])
    extra = {
        "trained_steps": int(meta["step"]),
        "wall_time_s": round(float(meta.get("wall_time", 0.0)), 1),
    }
    dtype = "fp16"
    if init.get("decoder_only"):
        _check_encoder_kept(model, Path(init["model"]), path)
        source = zoo.read_config(init["model"])
        skip = ("kind", "format_version", "dtype", "config", *extra)
        extra = {k: v for k, v in source.items() if k not in skip} | extra  # encoder provenance
        extra |= {"latents_of": init["latent_hash"], "decoder_of": zoo.portable_path(init["model"])}
        dtype = source["dtype"]  # the encoder's exact weights
    return zoo.save_model(
        model_dir,
        "tokenizer",
        cfg.to_dict(),
        model.state_dict(),
        dtype=dtype,
        card=card,
        extra=extra,
    )


def _check_encoder_kept(model: VideoTokenizer, init_dir: Path, checkpoint: Path) -> None:
    """A decoder-only export must encode exactly as its init tokenizer does."""
    init = zoo.load_model(init_dir).module
    mine, theirs = model.encoder.state_dict(), init.encoder.state_dict()
    changed = [k for k in theirs if not torch.equal(mine[k], theirs[k])]
    if changed:
        raise ConfigError(
            "the decoder-only run changed the encoder",
            path=checkpoint,
            field=f"encoder.{changed[0]}",
            expected=f"the weights of {init_dir}",
        )


# -- latent cache ---------------------------------------------------------------------------


def _episode_video(store: EpisodeStore, episode: int, camera: str) -> np.ndarray:
    n = store.episode_length(episode)
    usable = 1 + 4 * ((n - 1) // 4)
    w = store.read_window(episode, 0, usable, cameras=[camera])
    return w["rgb"][camera].transpose(0, 3, 1, 2)  # (T, 3, H, W)


@torch.no_grad()
def tokenize_store(store_path: Path, model_dir: Path, batch_frames: int = 65) -> dict:
    """Encode every episode × camera of a store into ``latents/<latent_hash>/``."""
    import zarr

    loaded = zoo.load_model(model_dir)
    tok: VideoTokenizer = loaded.module
    store = EpisodeStore.open(store_path, writable=True)
    root = store.group.require_group("latents")
    key = loaded.latent_hash  # a decoder-only fine-tune shares its encoder's latents
    for name in list(root.group_keys()):  # invalidate stale caches of this model directory
        if name != key and root[name].attrs.get("model") == str(loaded.path.resolve()):
            del root[name]
    if key in root and root[key].attrs.get("complete"):
        return dict(root[key].attrs)
    grp = root.require_group(key)
    t0, frames_done = time.perf_counter(), 0
    n_eps = len(store)
    lat_n = [
        VideoTokenizer.latent_frames(1 + 4 * ((store.episode_length(e) - 1) // 4))
        for e in range(n_eps)
    ]
    max_n = max(lat_n)
    for camera in store.cameras:
        cam = grp.require_group(camera)
        h, w = store.spec.cameras[camera].height // 8, store.spec.cameras[camera].width // 8
        if tok.cfg.kind == "cv":
            arr = cam.create_array(
                "latents",
                shape=(n_eps, max_n, tok.cfg.latent_channels, h, w),
                dtype="float16",
                chunks=(1, max_n, tok.cfg.latent_channels, h, w),
                overwrite=True,
            )
        else:
            arr = cam.create_array(
                "codes",
                shape=(n_eps, max_n, h, w),
                dtype="int32",
                chunks=(1, max_n, h, w),
                fill_value=-1,
                overwrite=True,
            )
        frames_arr = cam.create_array(
            "frames", shape=(n_eps,), dtype="int64", chunks=(max(1, n_eps),), overwrite=True
        )
        counts = np.zeros(n_eps, np.int64)
        for e in range(n_eps):
            video = torch.from_numpy(_episode_video(store, e, camera))[None]  # (1, T, 3, H, W)
            out = tok.encode(video.float() / 127.5 - 1)[0]
            arr[e, : out.shape[0]] = out.numpy().astype(
                np.float16 if tok.cfg.kind == "cv" else np.int32
            )
            counts[e] = video.shape[1]
            frames_done += video.shape[1]
        frames_arr[:] = counts
    grp.attrs.update(
        {
            "model": str(loaded.path.resolve()),
            "kind": tok.cfg.kind,
            "weights_hash": key,
            "cameras": store.cameras,
            "episodes": n_eps,
            "encode_frames_per_s": frames_done / (time.perf_counter() - t0),
            "complete": True,
        }
    )
    del zarr
    return dict(grp.attrs)


# -- model card --------------------------------------------------------------------------


def training_curve(run_dir: Path, every: int = 100, window: int = 20) -> list[dict]:
    """Rows of (step, loss, train PSNR, lr, wall time) from metrics.jsonl, window-averaged."""
    rows = [
        json.loads(ln)
        for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        if ln.strip()
    ]
    out = []
    for i, r in enumerate(rows):
        if r["step"] % every == 0 or i == len(rows) - 1:
            win = rows[max(0, i - window + 1) : i + 1]
            out.append(
                {
                    "step": r["step"],
                    "loss": float(np.mean([w["loss"] for w in win])),
                    "psnr": float(np.mean([w["psnr"] for w in win])),
                    "lr": r["lr"],
                    "wall_time_s": r["wall_time"],
                    "mfu": float(np.mean([w.get("mfu", 0.0) for w in win])),
                }
            )
    return out


def write_card(
    model_dir: Path,
    run_dir: Path,
    command: str,
    data_note: str,
    hardware_note: str,
    bench: dict | None = None,
    earlier_runs: tuple[Path, ...] = (),
) -> Path:
    """card.md: what the model is, the data, the exact command, wall time, metrics, curve.

    ``earlier_runs``: runs this one was initialised from (``--init``), oldest first; their
    curves are listed too and their wall time counted.
    """
    from cosmos_sim.training import checkpoint as ckpt

    meta = zoo.read_config(model_dir)
    run = json.loads((ckpt.latest_checkpoint(run_dir) / ckpt.META_FILE).read_text())["config"]
    cfg = TokenizerConfig(**meta["config"])
    n_params = sum(p.numel() for p in VideoTokenizer(cfg).parameters())
    curve = training_curve(run_dir)
    last = curve[-1]
    head = (
        f"{cfg.latent_channels} continuous channels"
        if cfg.kind == "cv"
        else f"FSQ levels {list(cfg.fsq_levels)} = {cfg.codebook_size} codes"
    )
    lines = [
        f"# {Path(model_dir).name}",
        "",
        f"Causal video tokenizer ({cfg.kind.upper()}), 4× time × 8×8 space, {head}; "
        f"{n_params / 1e6:.1f} M parameters, weights stored as {meta['dtype']} "
        f"(EMA of the training weights). Layout and causality: `cosmos_sim/models/tokenizer.py`.",
        "",
        "## Data",
        "",
        data_note,
        "",
        "## Training",
        "",
        f"Command (run directory `{run_dir}`, resumable):",
        "",
        "```",
        command,
        "```",
        "",
        f"{last['step']} steps, {last['wall_time_s'] / 60:.0f} min of training wall time, "
        f"batch {run['data']['batch_size']} clips of {run['data']['clips']['frames']} frames, "
        f"peak lr {run['trainer']['lr']}, warm-up {run['trainer']['warmup_steps']} steps then cosine. "
        + hardware_note,
        "",
        "| step | loss | train PSNR dB | lr | wall time min | MFU |",
        "|---:|---:|---:|---:|---:|---:|",
    ]

    def table(rows: list[dict]) -> list[str]:
        return [
            f"| {r['step']} | {r['loss']:.4f} | {r['psnr']:.2f} | {r['lr']:.2e} | {r['wall_time_s'] / 60:.1f} | {100 * r['mfu']:.0f}% |"
            for r in rows
        ]

    if earlier_runs:
        lines = lines[:-2]
        total = last["wall_time_s"]
        for i, run_i in enumerate([*earlier_runs, run_dir]):
            rows = training_curve(run_i)
            total += rows[-1]["wall_time_s"] if run_i != run_dir else 0
            lines += [
                f"Schedule {i + 1} (`{run_i}`):",
                "",
                "| step | loss | train PSNR dB | lr | wall time min | MFU |",
            ]
            lines += ["|---:|---:|---:|---:|---:|---:|", *table(rows), ""]
        lines += [f"Total training wall time over all schedules: {total / 60:.0f} min."]
    else:
        lines += table(curve)
    if bench:
        h = bench["h264_at_same_bpp"]
        lines += [
            "",
            "## Held-out metrics (`benchmarks/tokenizer.py`, `benchmarks/results/tokenizer.json`)",
            "",
            f"PSNR **{bench['psnr']:.2f} dB** (target {bench['target_psnr']:.0f} dB), SSIM {bench['ssim']:.3f} "
            f"at {bench['bpp']:.4f} bits per pixel; encode {bench['encode_frames_per_s']:.0f} frames/s, "
            f"decode {bench['decode_frames_per_s']:.0f} frames/s.",
            f"H.264 (libx264 veryslow, {h.get('pix_fmt', '')}) at the same rate: {h['psnr']:.2f} dB"
            + (
                ""
                if h["reachable"]
                else f" — H.264 cannot go that low; this is its lowest rate, {h['bpp']:.4f} bpp"
            )
            + (
                f" — reached already at {h['bpp']:.3f} bpp, the top of the CRF sweep"
                if h.get("above_sweep")
                else ""
            )
            + ".",
            "",
            "| store/camera | PSNR dB | SSIM |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {k} | {v['psnr']:.2f} | {v['ssim']:.3f} |" for k, v in bench["per_camera"].items()
        ]
    path = Path(model_dir) / "card.md"
    path.write_text("\n".join(lines) + "\n")
    return path
