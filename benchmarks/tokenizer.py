"""Tokenizer quality and speed on held-out episodes, against H.264 at the same bits per pixel.

    python -m benchmarks tokenizer            # shipped models, runs/data or data/ stores
    python benchmarks/tokenizer.py --data runs/data/reach.zarr runs/data/push.zarr

Per shipped tokenizer (CV and DV): PSNR / SSIM per (store, camera) over the held-out
episodes (the loader's split, each episode encoded whole: its first 1 + 4k frames),
encode / decode frames per second, and a rate–distortion comparison with H.264
(PyAV libx264, a CRF sweep on the very same frames, PSNR interpolated in log-bpp at the
tokenizer's rate). Rates: DV = log2(codebook) bits per token; CV = 16 channels quantised
to 8 bits each (per-channel min/max per episode, a few bytes). Training MFU comes from the
run's metrics.jsonl when the run directory is given (``--runs``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_result  # noqa: E402
from cosmos_sim.data.clips import split_episodes  # noqa: E402
from cosmos_sim.data.store import EpisodeStore  # noqa: E402
from cosmos_sim.models import zoo  # noqa: E402
from cosmos_sim.models.tokenizer import VideoTokenizer, psnr, ssim  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"cv": "tokenizer-cv-4x8x8", "dv": "tokenizer-dv-4x8x8"}
CRFS = (51, 48, 45, 42, 39, 36, 33, 30, 27, 24, 21, 18)


def default_stores() -> list[Path]:
    for root in (ROOT / "data", ROOT / "runs" / "data"):
        found = [root / f"{t}.zarr" for t in ("reach", "push") if (root / f"{t}.zarr").exists()]
        if found:
            return found
    return []


def heldout_videos(stores: list[Path], max_episodes: int) -> dict[str, list[np.ndarray]]:
    """{"store/camera": [(T, H, W, 3) uint8 per held-out episode, T = 1 + 4k]}."""
    out: dict[str, list[np.ndarray]] = {}
    for path in stores:
        store = EpisodeStore.open(path)
        _, held = split_episodes(len(store), 0.1)
        for e in held[:max_episodes]:
            n = store.episode_length(e)
            usable = 1 + 4 * ((n - 1) // 4)
            window = store.read_window(e, 0, usable, cameras=store.cameras)
            for cam, rgb in window["rgb"].items():
                out.setdefault(f"{path.stem}/{cam}", []).append(rgb)
    return out


def to_model(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(0, 3, 1, 2)[None].float() / 127.5 - 1  # (1, T, 3, H, W)


def to_unit(video: torch.Tensor) -> torch.Tensor:
    return ((video[0].float() + 1) / 2).clamp(0, 1)  # (T, 3, H, W)


def quantise_cv(z: torch.Tensor) -> torch.Tensor:
    """8 bits per channel: per-channel min/max over the episode, 256 uniform levels."""
    dims = (0, 1, 3, 4)
    lo, hi = z.amin(dims, keepdim=True), z.amax(dims, keepdim=True)
    scale = (hi - lo).clamp_min(1e-8) / 255
    return torch.round((z - lo) / scale) * scale + lo


def quality(ref: torch.Tensor, rec: torch.Tensor) -> tuple[float, float]:
    """(PSNR dB, SSIM) of (T, 3, H, W) in [0, 1] after rounding to 8-bit pixels."""
    rec = torch.round(rec * 255) / 255
    return float(psnr(rec, ref)), float(ssim(rec, ref))


@torch.no_grad()
def evaluate_tokenizer(model: VideoTokenizer, videos: dict[str, list[np.ndarray]]) -> dict:
    kind = model.cfg.kind
    per_cam, enc_time, dec_time, frames, bits, pixels = {}, 0.0, 0.0, 0, 0.0, 0
    for key, eps in videos.items():
        ps, ss = [], []
        for rgb in eps:
            x = to_model(rgb)
            t0 = time.perf_counter()
            z = model.encode(x)
            t1 = time.perf_counter()
            if kind == "cv":
                z = quantise_cv(z)
            rec = model.decode(z)
            t2 = time.perf_counter()
            enc_time, dec_time, frames = enc_time + t1 - t0, dec_time + t2 - t1, frames + x.shape[1]
            n_lat, h, w = z.shape[1], z.shape[-2], z.shape[-1]
            per_token = (
                math.log2(model.cfg.codebook_size)
                if kind == "dv"
                else 8 * model.cfg.latent_channels
            )
            bits += n_lat * h * w * per_token + (
                0 if kind == "dv" else 2 * 32 * model.cfg.latent_channels
            )
            pixels += x.shape[1] * x.shape[-2] * x.shape[-1]
            p, s = quality(to_unit(x), to_unit(rec))
            ps.append(p)
            ss.append(s)
        per_cam[key] = {
            "psnr": float(np.mean(ps)),
            "ssim": float(np.mean(ss)),
            "episodes": len(eps),
        }
    return {
        "per_camera": per_cam,
        "psnr": float(np.mean([v["psnr"] for v in per_cam.values()])),
        "ssim": float(np.mean([v["ssim"] for v in per_cam.values()])),
        "bpp": bits / pixels,
        "encode_frames_per_s": frames / enc_time,
        "decode_frames_per_s": frames / dec_time,
    }


def h264(rgb: np.ndarray, crf: int, pix_fmt: str = "yuv420p") -> tuple[np.ndarray, int]:
    """Encode + decode (T, H, W, 3) with libx264 at ``crf``; (decoded frames, stream bits)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], pix_fmt
        stream.options = {
            "crf": str(crf),
            "preset": "veryslow",
            "tune": "ssim",
            "x264-params": "log-level=error",
        }
        for f in rgb:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    data = buf.getvalue()
    with av.open(io.BytesIO(data), "r", format="h264") as inp:
        dec = np.stack([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)])
    return dec, 8 * len(data)


def h264_curve(videos: dict[str, list[np.ndarray]], pix_fmt: str) -> list[dict]:
    """H.264 (bpp, PSNR, SSIM) over all held-out episodes, per CRF."""
    curve = []
    for crf in CRFS:
        bits, pixels, ps, ss = 0, 0, [], []
        for eps in videos.values():
            cam_p, cam_s = [], []
            for rgb in eps:
                dec, b = h264(rgb, crf, pix_fmt)
                bits, pixels = bits + b, pixels + rgb.shape[0] * rgb.shape[1] * rgb.shape[2]
                ref = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
                rec = torch.from_numpy(dec).permute(0, 3, 1, 2).float() / 255
                p, s = quality(ref, rec)
                cam_p.append(p)
                cam_s.append(s)
            ps.append(np.mean(cam_p))
            ss.append(np.mean(cam_s))
        curve.append(
            {
                "pix_fmt": pix_fmt,
                "crf": crf,
                "bpp": bits / pixels,
                "psnr": float(np.mean(ps)),
                "ssim": float(np.mean(ss)),
            }
        )
    return curve


def at_rate(curves: list[list[dict]], bpp: float) -> dict:
    """The best H.264 curve's PSNR / SSIM at ``bpp`` (log-bpp interpolation).

    ``reachable`` False: H.264 cannot go that low (its lowest rate is given);
    ``above_sweep``: the rate is above the CRF sweep, the figure is at a lower rate.
    """
    return max((_at_rate(c, bpp) for c in curves), key=lambda r: (r["reachable"], r["psnr"]))


def _at_rate(curve: list[dict], bpp: float) -> dict:
    pts = sorted(curve, key=lambda r: r["bpp"])
    if bpp < pts[0]["bpp"]:
        return {
            "bpp": pts[0]["bpp"],
            "psnr": pts[0]["psnr"],
            "ssim": pts[0]["ssim"],
            "reachable": False,
        }
    for a, b in zip(pts, pts[1:], strict=False):
        if a["bpp"] <= bpp <= b["bpp"]:
            w = (math.log(bpp) - math.log(a["bpp"])) / (
                math.log(b["bpp"]) - math.log(a["bpp"]) or 1
            )
            mix = {k: a[k] + w * (b[k] - a[k]) for k in ("psnr", "ssim")}
            return {"bpp": bpp, **mix, "reachable": True, "pix_fmt": a["pix_fmt"]}
    # above the sweep: H.264 already reaches this quality at its highest measured rate
    return {**pts[-1], "reachable": True, "above_sweep": True}


def training_figures(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    tail = [r for r in rows if r.get("mfu")][-50:]
    return {
        "steps": rows[-1]["step"],
        "wall_time_s": rows[-1]["wall_time"],
        "train_psnr_last50": float(np.mean([r["psnr"] for r in rows[-50:]])),
        "mfu": float(np.mean([r["mfu"] for r in tail])) if tail else None,
        "samples_per_s": float(np.mean([r["samples_per_s"] for r in tail])) if tail else None,
    }


def training_speed(model: VideoTokenizer, stores: list[Path], steps: int) -> dict:
    """MFU and samples/s of the Trainer on this model's config, measured now (fresh weights)."""
    import os
    import tempfile

    from cosmos_sim.data.clips import ClipSpec
    from cosmos_sim.data.loader import ClipLoader
    from cosmos_sim.training.tokenizer_task import RECIPES, TokenizerTask
    from cosmos_sim.training.trainer import Trainer, TrainerConfig

    recipe = RECIPES["cpu-small"]
    loader = ClipLoader(stores, ClipSpec(frames=recipe.frames), recipe.batch_size, seed=5)
    task = TokenizerTask(VideoTokenizer(model.cfg))
    cfg = TrainerConfig(steps=steps, warmup_steps=0, progress=False, checkpoint_every=10_000)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        s = Trainer(task, cfg, loader, Path(tmp) / "run").fit(resume=False)
    return {
        "mfu": s["mfu"],
        "samples_per_s": s["samples_per_s"],
        "flops_per_step": s["flops_per_step"],
        "peak_flops": s["peak_flops"],
        "precision": s["precision"],
        "threads": torch.get_num_threads(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", type=Path, default=None)
    ap.add_argument(
        "--models", nargs="*", default=None, help="model dirs (default: the shipped CV and DV)"
    )
    ap.add_argument("--runs", nargs="*", type=Path, default=None, help="training run dirs for MFU")
    ap.add_argument("--episodes", type=int, default=6, help="held-out episodes per store")
    ap.add_argument("--speed-steps", type=int, default=4, help="Trainer steps for the MFU figure")
    args = ap.parse_args(argv if argv is not None else [])
    stores = args.data or default_stores()
    if not stores:
        print("no stores: record data/reach.zarr and data/push.zarr first", file=sys.stderr)
        return {}
    models = args.models or [str(ROOT / "models" / m) for m in MODELS.values()]
    runs = args.runs or [ROOT / "runs" / f"tokenizer-{k}" for k in MODELS]
    videos = heldout_videos(stores, args.episodes)
    curves = [h264_curve(videos, fmt) for fmt in ("yuv420p", "yuv444p")]
    results, rows = {}, []
    for model_dir, run in zip(models, runs, strict=False):
        if not (Path(model_dir) / "config.toml").exists():
            print(f"skip {model_dir}: not exported yet", file=sys.stderr)
            continue
        loaded = zoo.load_model(model_dir)
        r = evaluate_tokenizer(loaded.module, videos)
        r["h264_at_same_bpp"] = at_rate(curves, r["bpp"])
        r["training"] = training_figures(Path(run))
        r["training_speed_now"] = training_speed(loaded.module, stores, args.speed_steps)
        r["weights_hash"] = loaded.weights_hash
        kind = loaded.module.cfg.kind
        r["target_psnr"] = 34.0 if kind == "cv" else 30.0
        results[Path(model_dir).name] = r
        h = r["h264_at_same_bpp"]
        for cam, v in r["per_camera"].items():
            rows.append([Path(model_dir).name, cam, v["psnr"], v["ssim"], "", "", "", ""])
        rows.append(
            [
                Path(model_dir).name,
                "ALL",
                r["psnr"],
                r["ssim"],
                r["bpp"],
                f"{h['psnr']:.2f} dB{'' if h['reachable'] else ' (H.264 min rate ' + format(h['bpp'], '.3f') + ')'}",
                f"{r['encode_frames_per_s']:.0f}/{r['decode_frames_per_s']:.0f}",
                f"{100 * r['training_speed_now']['mfu']:.0f}% / {100 * (r['training'].get('mfu') or 0):.0f}%",
            ]
        )
    print_table(
        "Tokenizer, held-out episodes",
        [
            "model",
            "store/camera",
            "PSNR dB",
            "SSIM",
            "bpp",
            "H.264 @ bpp",
            "enc/dec fps",
            "MFU now / in run",
        ],
        rows,
    )
    print_table(
        "H.264 (libx264 veryslow) on the same frames",
        ["crf", "bpp", "PSNR dB", "SSIM"],
        [
            [f"{c['crf']} {c['pix_fmt']}", c["bpp"], c["psnr"], c["ssim"]]
            for cv in curves
            for c in cv
        ],
    )
    payload = {
        "stores": [str(s) for s in stores],
        "heldout_episodes_per_store": args.episodes,
        "frames": {k: int(sum(v.shape[0] for v in eps)) for k, eps in videos.items()},
        "models": results,
        "h264_curves": curves,
    }
    path = write_result("tokenizer", payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
