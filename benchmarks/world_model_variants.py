"""Camera-control and multi-view world models on held-out episodes, beside copy-last.

* camera (``wm-diffusion-cameranav`` on ``data/cameranav-wm.zarr``): from each held-out
  episode's first frame, the model rolls out with the recorded actions (camera + arm) and
  the Plücker rays of the recorded camera poses. Reported: PSNR at 1, 4 and the longest
  horizon; **3-D consistency** — each simulator frame t reprojected through the sim depth
  into the camera of frame t + 1 and compared with the generated frame t + 1 (error above
  the simulator's own frame, the floor); **camera pose error** — the orbit azimuth /
  elevation / distance the frame probe reads off the generated frames vs the commanded
  ones (the probe on the real frames is the floor, copy-last the baseline). Beside them the
  **warp base** alone: the first frame warped into each step's cameras by the table plane
  and passed through the tokenizer (cosmos_sim/conditioning/warp.py) — what a ``warp_base``
  model samples its residual over.
* multiview (``wm-diffusion-push-multiview`` on ``data/push-mv.zarr``): the views are
  generated jointly (folded into time); PSNR per horizon and **cross-view consistency**:
  the simulator's frame of one camera reprojected into another and compared with the
  model's frame of that camera at the same instant.

Both roll out with WorldModel-v0's own rollouts (cosmos_sim/envs/world_model_rollouts.py),
in fp32: the camera model's rays are relative to the first frame of its context window,
so the window is re-encoded every step; the multi-view model keeps its KV cache.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table, video_u8, write_result
from benchmarks.world_model import fp32_sampler, psnr
from cosmos_sim.conditioning.warp import mujoco_table_height
from cosmos_sim.data.episode import CameraSeries
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.envs.world_model_env import LoadedWorldModel
from cosmos_sim.envs.world_model_rollouts import CachedRollout, WarpBase, WindowRollout
from cosmos_sim.evaluation.consistency import camera_consistency, cross_view_consistency
from cosmos_sim.models import zoo
from cosmos_sim.training.world_model_task import CHUNK, HELD_OUT_EVERY

CAMERA = ("wm-diffusion-cameranav", Path("data/cameranav-wm.zarr"))
MULTIVIEW = ("wm-diffusion-push-multiview", Path("data/push-mv.zarr"))
HORIZONS = (1, 4, 16)
ORBIT = ("orbit.azimuth", "orbit.elevation", "orbit.distance")


def _held_out(store: EpisodeStore) -> list[int]:
    return [e for e in range(len(store)) if e % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]


def _encode(wm: LoadedWorldModel, frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 first frames → (B, 1, C, h, w) latents."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[:, None].float() / 127.5 - 1
    return wm.tokenizer.encode(video)


def _norm_state(wm: LoadedWorldModel, state: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((state - wm.state_mean) / wm.state_std).float()


def _warp_base_video(wm: LoadedWorldModel, first: torch.Tensor, poses, k_image) -> np.ndarray:
    """The warp base alone (B, T, H, W, 3) uint8: the first latent frames (B, 1, C, h, w)
    warped into the cameras of every step (poses (B, K + 1, 4, 4)), decoded."""
    warp = WarpBase(wm.tokenizer, k_image, mujoco_table_height(wm.task), CHUNK)
    warp.start(first, poses[:, 0])
    steps = [warp.base(poses[:, k - 1], poses[:, k]) for k in range(1, poses.shape[1])]
    return video_u8(wm.tokenizer.decode(torch.cat([first, *steps], 1)))


def _horizon_rows(task, real, videos, horizons) -> tuple[list, dict]:
    """PSNR of each method at each horizon (the c frames of that latent step)."""
    rows, out = [], {}
    for h in horizons:
        sl = slice(1 + CHUNK * (h - 1), 1 + CHUNK * h)
        truth = real[:, sl].reshape(-1, *real.shape[-3:])
        scores = {k: psnr(v[:, sl].reshape(-1, *real.shape[-3:]), truth) for k, v in videos.items()}
        out[h] = scores
        rows.append([task, h, *scores.values(), scores["world_model"] - scores["copy_last"]])
    return rows, out


@torch.no_grad()
def camera_task(model: str, store_path: Path, sampler_steps: int | None = None) -> dict:
    """The camera benchmark of ``model`` (``sampler_steps`` None: the model's own)."""
    wm = LoadedWorldModel.load(model)
    m, store, cam = wm.model, EpisodeStore.open(store_path), wm.cameras[0]
    held = _held_out(store)
    n_lat = min(1 + (store.episode_length(e) - 1) // CHUNK for e in held)
    horizons = sorted({min(h, n_lat - 1) for h in HORIZONS})
    k_max, frames = horizons[-1], 1 + CHUNK * horizons[-1]
    fields = ("rgb", "depth", "intrinsics", "world_from_camera")
    windows = [store.read_window(e, 0, frames, cameras=[cam], fields=fields) for e in held]
    real = np.stack([w["rgb"][cam] for w in windows])  # (B, T, H, W, 3)
    rec = [store.read_window(e, 0, frames, fields=("action", "state")) for e in held]
    chunks = np.stack([r["action"][: CHUNK * k_max] for r in rec]).reshape(
        len(held), k_max, CHUNK, -1
    )
    states = np.stack([r["state"] for r in rec])  # (B, T, S)
    lat = _encode(wm, real[:, 0])
    last = np.arange(k_max + 1) * CHUNK  # last video frame of each latent frame
    poses = torch.stack(
        [torch.as_tensor(x["world_from_camera"][cam][last], dtype=torch.float64) for x in windows]
    )
    state = _norm_state(wm, states[:, 0])
    k_image = torch.as_tensor(windows[0]["intrinsics"][cam][0], dtype=torch.float64)
    warp_video = _warp_base_video(wm, lat, poses, k_image)
    roll = WindowRollout(m, wm.context_frames, k_image, real.shape[2:4], wm.tokenizer)
    sampler = fp32_sampler(0, steps=sampler_steps)
    roll.start(lat, state, sampler, poses[:, 0])
    # as CameraNav's WM env: the camera is commanded, so the state's orbit.* is the exact one
    orbit = [list(store.spec.state_names).index(n) for n in ORBIT]
    exact_orbit = _norm_state(wm, states[:, last])[..., orbit]  # (B, K + 1, 3)
    t0 = time.perf_counter()
    for k in range(1, k_max + 1):
        a = torch.from_numpy(wm.action_stats.normalize(chunks[:, k - 1])).float()
        state = m.step_state(state, a)
        state[:, orbit] = exact_orbit[:, k]
        z, _ = roll.step(a, state, sampler, poses[:, k])
        lat = torch.cat([lat, z], 1)
    seconds = time.perf_counter() - t0
    video = video_u8(wm.tokenizer.decode(lat))
    copy = np.repeat(real[:, :1], frames, axis=1)
    methods = {"world_model": video, "copy_last": copy, "warp_base": warp_video}
    rows, scores = _horizon_rows("camera", real, methods, horizons)
    # 3-D consistency: frame t of the sim reprojected into frame t + 1's camera
    series = [
        CameraSeries(
            x["rgb"][cam], x["depth"][cam], None, x["intrinsics"][cam], x["world_from_camera"][cam]
        )
        for x in windows
    ]
    cons = {}
    for name, v in methods.items():
        s = [camera_consistency(se, v[i]) for i, se in enumerate(series)]
        cons[name] = {
            "error": float(np.mean([x.error for x in s])),
            "floor_sim": float(np.mean([x.floor for x in s])),
            "excess": float(np.mean([x.excess for x in s])),
        }
    # camera pose error: the probe's reading of the orbit pose, every latent frame
    names = list(store.spec.state_names)
    idx = [names.index(n) for n in ORBIT]
    truth_orbit = states[:, last][..., idx]

    def probe_orbit(frames_u8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames_u8).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
        s = m.read(wm.tokenizer.encode(x))[0].numpy() * wm.state_std + wm.state_mean
        return s[..., idx]

    pose_err = {}
    for name, v in [*methods.items(), ("real_frames_probe_floor", real)]:
        err = np.abs(probe_orbit(v)[:, 1:] - truth_orbit[:, 1:])  # (B, K, 3)
        err[..., 0] = np.abs((err[..., 0] + 180) % 360 - 180)  # azimuth wraps
        pose_err[name] = dict(
            zip(
                ("azimuth_deg", "elevation_deg", "distance_m"),
                err.mean((0, 1)).tolist(),
                strict=True,
            )
        )
    print_table(
        f"camera control, {len(held)} held-out episodes ({cam})",
        ["variant", "latent steps", "WM PSNR", "copy-last", "warp base", "WM − copy"],
        rows,
    )
    print(
        f"3-D consistency (mean |error|, 0-1; sim floor {cons['world_model']['floor_sim']:.4f}): "
        f"model {cons['world_model']['error']:.4f}, copy-last {cons['copy_last']['error']:.4f}, "
        f"warp base {cons['warp_base']['error']:.4f}"
    )
    print("camera pose error read by the probe:", pose_err)
    return {
        "model": model,
        "store": str(store_path),
        "camera": cam,
        "held_out_episodes": held,
        "psnr": scores,
        "consistency_3d": cons,
        "camera_pose_error": pose_err,
        "latent_frames_per_s": len(held) * k_max / seconds,
    }


@torch.no_grad()
def multiview_task(model: str, store_path: Path) -> dict:
    wm = LoadedWorldModel.load(model)
    m, store, cams = wm.model, EpisodeStore.open(store_path), wm.cameras
    v = len(cams)
    held = _held_out(store)
    n_lat = min(1 + (store.episode_length(e) - 1) // CHUNK for e in held)
    horizons = sorted({min(h, n_lat - 1) for h in HORIZONS})
    k_max, frames = horizons[-1], 1 + CHUNK * horizons[-1]
    fields = ("rgb", "depth", "intrinsics", "world_from_camera")
    windows = [store.read_window(e, 0, frames, cameras=cams, fields=fields) for e in held]
    real = np.stack([np.stack([w["rgb"][c] for c in cams], 1) for w in windows])  # (B, T, V, …)
    rec = [store.read_window(e, 0, frames, fields=("action", "state")) for e in held]
    chunks = np.stack([r["action"][: CHUNK * k_max] for r in rec]).reshape(
        len(held), k_max, CHUNK, -1
    )
    b = len(held)
    first = _encode(wm, real[:, 0].reshape(b * v, *real.shape[-3:]))  # (B·V, 1, C, h, w)
    lat = first.reshape(b, v, *first.shape[2:])  # one time step, views folded in order
    state = _norm_state(wm, np.stack([r["state"][0] for r in rec]))
    roll = CachedRollout(m, wm.context_frames, views=v)  # as WorldModel-v0
    sampler = fp32_sampler(0)
    roll.start(lat, state, sampler)
    out = [lat]
    t0 = time.perf_counter()
    for k in range(1, k_max + 1):
        a = torch.from_numpy(wm.action_stats.normalize(chunks[:, k - 1])).float()
        state = m.step_state(state, a)
        out.append(roll.step(a, state, sampler)[0])  # (B, V, C, h, w)
    seconds = time.perf_counter() - t0
    per_view = torch.stack(out, 1)  # (B, K + 1, V, C, h, w)
    videos = np.stack([video_u8(wm.tokenizer.decode(per_view[:, :, i])) for i in range(v)], 2)
    copy = np.repeat(real[:, :1], frames, axis=1)
    rows, scores = [], {}
    for i, c in enumerate(cams):
        r, s = _horizon_rows(
            f"multiview/{c}",
            real[:, :, i],
            {"world_model": videos[:, :, i], "copy_last": copy[:, :, i]},
            horizons,
        )
        rows += r
        scores[c] = s
    cons = {}
    for src, dst in ((0, 1), (1, 0), (0, 2)) if v > 2 else ((0, 1), (1, 0)):
        key = f"{cams[src]}->{cams[dst]}"
        cons[key] = {}
        for name, vid in (("world_model", videos), ("copy_last", copy)):
            s = [
                cross_view_consistency(
                    CameraSeries(
                        x["rgb"][cams[src]],
                        x["depth"][cams[src]],
                        None,
                        x["intrinsics"][cams[src]],
                        x["world_from_camera"][cams[src]],
                    ),
                    CameraSeries(
                        x["rgb"][cams[dst]],
                        x["depth"][cams[dst]],
                        None,
                        x["intrinsics"][cams[dst]],
                        x["world_from_camera"][cams[dst]],
                    ),
                    vid[i, :, dst],
                )
                for i, x in enumerate(windows)
            ]
            cons[key][name] = {
                "error": float(np.mean([x.error for x in s])),
                "floor_sim": float(np.mean([x.floor for x in s])),
            }
    print_table(
        f"multi-view, {len(held)} held-out episodes ({', '.join(cams)})",
        ["variant", "latent steps", "WM PSNR", "copy-last", "WM − copy"],
        rows,
    )
    print("cross-view consistency:", cons)
    return {
        "model": model,
        "store": str(store_path),
        "cameras": cams,
        "held_out_episodes": held,
        "psnr": scores,
        "cross_view_consistency": cons,
        "latent_frames_per_s": b * v * k_max / seconds,
    }


def main() -> dict:
    results = {}
    for name, (model, store_path), fn in (
        ("camera", CAMERA, camera_task),
        ("multiview", MULTIVIEW, multiview_task),
    ):
        if model not in zoo.shipped_models():
            results[name] = {"model": model, "status": "not shipped yet"}
        elif not store_path.exists():
            results[name] = {"model": model, "status": f"{store_path} missing: see the card"}
        else:
            results[name] = fn(model, store_path)
    print(f"wrote {write_result('world_model_variants', results)}")
    return results


if __name__ == "__main__":
    main()
