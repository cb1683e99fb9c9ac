"""World-model rollout quality on held-out episodes, beside two baselines in the same run.

From each held-out episode's real first frame, the shipped model rolls out with the
episode's true action chunks; generated frames are compared with the recorded ones at
1, 4 and 16 latent steps (or the longest the episodes allow). Baselines:

* copy-last: the first frame repeated (no dynamics at all);
* action-blind: the same recipe trained with the actions (and the proprio state they
  drive) hidden from the DiT (`cosmos-sim train world-model --action-blind`), where one
  is shipped (push);
* action-dropped: the model itself with its action conditioning dropped (the
  classifier-free-guidance branch it was trained with).

And a ceiling, "tokenizer": the recorded frames encoded and decoded by the model's own
tokenizer. Every generated frame passes through that decoder, so no model on this
tokenizer can score above it; `target_reachable` says whether copy-last + 6 dB at the
longest horizon is below it. Between the two, for a model with a state renderer:
"renderer (recorded states)", the renderer alone drawing the recorded states — the score
with perfect dynamics, so the gaps split the error into dynamics, renderer and tokenizer.

Also: action sensitivity (where the probe reads the end effector after the true chunks
vs after the reversed chunks, and how far the true-chunk one is from the recorded one),
and latent frames/s batched vs one at a time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table, video_u8, write_result
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.device import Precision
from cosmos_sim.envs.world_model_env import GUIDANCE, SIGMA_START, LoadedWorldModel
from cosmos_sim.envs.world_model_rollouts import CachedRollout, Sampler
from cosmos_sim.models.tokenizer import ssim
from cosmos_sim.models.zoo import shipped_models
from cosmos_sim.training.world_model_task import CHUNK, HELD_OUT_EVERY

# task → (shipped model, store with held-out episodes; recorded as in the model's card)
TASKS = {
    "reach": ("wm-diffusion-reach", Path("data/reach-wm.zarr")),
    "push": ("wm-diffusion-push", Path("data/push-wm.zarr")),
}
BLIND = {"push": "wm-diffusion-push-blind"}  # the separately trained action-blind baselines
HORIZONS = (1, 4, 16)
SAMPLER_STEPS = (1, 2, 4)  # the sampler's step counts compared at the longest horizon


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def ssim_u8(a: np.ndarray, b: np.ndarray) -> float:
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255
    return float(ssim(ta, tb))


def fp32_sampler(
    seed: int,
    sigma_start: float | None = SIGMA_START,
    guidance: float = GUIDANCE,
    steps: int | None = None,
) -> Sampler:
    """The env's sampler settings, seeded, in plain fp32 (figures comparable across CPUs);
    ``steps`` None: the model's own."""
    fp32 = Precision(torch.device("cpu"), None, 0.0, "fp32")
    return Sampler(steps, sigma_start, guidance, torch.Generator().manual_seed(seed), fp32)


@torch.no_grad()
def tokenizer_reconstruction(wm: LoadedWorldModel, video: np.ndarray) -> np.ndarray:
    """(B, T, H, W, 3) recorded frames → the same frames through the model's tokenizer. Both
    halves are causal, so frame t's reconstruction is that of the clip cut at t: the latents
    a perfect model would generate up to any horizon, decoded as `rollout` decodes."""
    x = torch.from_numpy(video).permute(0, 1, 4, 2, 3).float() / 127.5 - 1  # (B, T, 3, H, W)
    out = wm.tokenizer.decode(wm.tokenizer.encode(x))
    return video_u8(out)


@torch.no_grad()
def rendered_from_states(wm: LoadedWorldModel, first: np.ndarray, states: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) first frames + (B, K + 1, S) recorded states at the latent frames → the
    state renderer's video alone (no DiT) from the recorded states: what the frames would
    score with perfect dynamics, between the model's rollout and the tokenizer ceiling."""
    tok, model = wm.tokenizer, wm.model
    video = torch.from_numpy(first).permute(0, 3, 1, 2)[:, None].float() / 127.5 - 1
    ref = tok.encode(video)  # (B, 1, C, h, w)
    s = torch.from_numpy((states - wm.state_mean) / wm.state_std).float()
    frames = [ref] + [
        model.render(ref[:, 0], s[:, 0], s[:, k - 1], s[:, k])[:, None]
        for k in range(1, s.shape[1])
    ]
    out = tok.decode(torch.cat(frames, 1))
    return video_u8(out)


@torch.no_grad()
def rollout(
    wm: LoadedWorldModel,
    first: np.ndarray,
    chunks: np.ndarray,
    drop_actions: bool,
    seed: int,
    sigma_start: float | None = SIGMA_START,
    guidance: float = GUIDANCE,
    first_state: np.ndarray | None = None,
    steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(B, H, W, 3) first frames (+ (B, S) states) + (B, K, c, A) chunks → generated video
    (B, 1 + cK, H, W, 3) and, for models with proprio state, the last predicted state (B, S)."""
    model, tok = wm.model, wm.tokenizer
    video = torch.from_numpy(first).permute(0, 3, 1, 2)[:, None].float() / 127.5 - 1
    latents = tok.encode(video)
    state = None
    if model.has_state:
        state = torch.from_numpy((first_state - wm.state_mean) / wm.state_std).float()
    sampler = fp32_sampler(seed, sigma_start, guidance, steps)
    roll = CachedRollout(model, wm.context_frames)  # what WorldModel-v0 steps with
    roll.start(latents, state, sampler)
    for k in range(chunks.shape[1]):
        a = torch.from_numpy(wm.action_stats.normalize(chunks[:, k])).float()
        if drop_actions:
            a = torch.zeros_like(a)
        if state is not None:
            state = model.step_state(state, a)
        z, _ = roll.step(a, state, sampler)
        latents = torch.cat([latents, z], 1)
    out = tok.decode(latents)
    video = video_u8(out)
    if state is None:
        return video, None
    return video, state.numpy() * wm.state_std + wm.state_mean


def run_task(model: str, store_path: Path, blind_model: str | None = None) -> dict:
    """Every figure of one model on its store's held-out episodes (printed as it goes)."""
    wm = LoadedWorldModel.load(model)
    store = EpisodeStore.open(store_path)
    cam = wm.cameras[0]
    held = [e for e in range(len(store)) if e % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    n_lat = min(1 + (store.episode_length(e) - 1) // CHUNK for e in held)
    horizons = sorted({min(h, n_lat - 1) for h in HORIZONS})
    k_max = horizons[-1]
    frames = 1 + CHUNK * k_max
    real = np.stack(
        [store.read_window(e, 0, frames, cameras=[cam])["rgb"][cam] for e in held]
    )  # (B, T, H, W, 3)
    recorded = [store.read_window(e, 0, frames, fields=("action", "state")) for e in held]
    actions = np.stack([r["action"] for r in recorded])
    states = np.stack([r["state"] for r in recorded])  # (B, T, S)
    chunks = actions[:, : CHUNK * k_max].reshape(len(held), k_max, CHUNK, -1)
    states0 = states[:, 0]

    def run(chunks_, drop=False, **kw):
        return rollout(wm, real[:, 0], chunks_, drop, 0, first_state=states0, **kw)

    t0 = time.perf_counter()
    gen, gen_state = run(chunks)
    batched_s = time.perf_counter() - t0
    dropped, _ = run(chunks, True)
    videos = {"world_model": gen, "action_dropped": dropped}
    if blind_model is not None and blind_model in shipped_models():
        blind_wm = LoadedWorldModel.load(blind_model)
        videos["action_blind"] = rollout(
            blind_wm, real[:, 0], chunks, False, 0, first_state=states0
        )[0]
    copy = np.repeat(real[:, :1], frames, axis=1)
    videos["copy_last"] = copy
    videos["tokenizer_ceiling"] = tokenizer_reconstruction(wm, real)
    if getattr(wm.model, "renderer", None) is not None:  # where the error comes from
        videos["renderer_recorded_states"] = rendered_from_states(
            wm, real[:, 0], states[:, ::CHUNK]
        )
    # The sampler's start, side by side: from pure noise at σ_max vs the previous frame (SDEdit).
    last = slice(1 + CHUNK * (k_max - 1), 1 + CHUNK * k_max)
    truth_last = real[:, last].reshape(-1, *real.shape[2:])
    starts = {}
    for start in (None, 0.5, 1.0, 2.0):
        video = gen if start == SIGMA_START else run(chunks, sigma_start=start)[0]
        starts["sigma_max" if start is None else f"previous+{start}"] = psnr(
            video[:, last].reshape(-1, *real.shape[2:]), truth_last
        )
    # The sampler's step count: PSNR at the longest horizon and the batched rollout's time.
    by_steps = {}
    for n in SAMPLER_STEPS:
        t0 = time.perf_counter()
        video = run(chunks, steps=n)[0]
        by_steps[n] = {
            "psnr": psnr(video[:, last].reshape(-1, *real.shape[2:]), truth_last),
            "seconds": time.perf_counter() - t0,
        }
    rows, result = (
        [],
        {
            "model": model,
            "store": str(store_path),
            "camera": cam,
            "held_out_episodes": held,
            "horizons": {},
        },
    )
    for h in horizons:
        sl = slice(1 + CHUNK * (h - 1), 1 + CHUNK * h)  # the c frames of latent step h
        truth = real[:, sl].reshape(-1, *real.shape[2:])
        scores = {}
        for method, video in videos.items():
            v = video[:, sl].reshape(-1, *real.shape[2:])
            scores[method] = {"psnr": psnr(v, truth), "ssim": ssim_u8(v, truth)}
        result["horizons"][h] = scores
        blind_psnr = scores["action_blind"]["psnr"] if "action_blind" in scores else None
        rows.append(
            [
                h,
                scores["world_model"]["psnr"],
                "-" if blind_psnr is None else blind_psnr,
                scores["action_dropped"]["psnr"],
                scores["copy_last"]["psnr"],
                scores.get("renderer_recorded_states", {}).get("psnr", "-"),
                scores["tokenizer_ceiling"]["psnr"],
                scores["world_model"]["psnr"] - scores["copy_last"]["psnr"],
                "-" if blind_psnr is None else scores["world_model"]["psnr"] - blind_psnr,
            ]
        )
    # Action sensitivity: where the probe reads the end effector after the true vs the
    # reversed chunks, with and without classifier-free guidance on the actions.
    names = list(store.spec.state_names)
    ee = [names.index("ee.x"), names.index("ee.y")]
    real_ee = states[:, -1][:, ee]

    def final_ee(video: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            lat = wm.tokenizer.encode(
                torch.from_numpy(video).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
            )
            state = wm.model.read(lat[:, -1:])[0][:, 0].numpy() * wm.state_std + wm.state_mean
        return state[:, ee]

    sensitivity = {}
    for g in (1.0, 3.0):
        fwd, fwd_state = (gen, gen_state) if g == GUIDANCE else run(chunks, guidance=g)
        rev, rev_state = run(-chunks, guidance=g)
        # where the end effector ends up: the model's own state (if it has one), else the
        # probe's reading of the last generated frame
        ee_fwd = final_ee(fwd) if fwd_state is None else fwd_state[:, ee]
        ee_rev = final_ee(rev) if rev_state is None else rev_state[:, ee]
        sensitivity[f"guidance_{g:g}"] = {
            # how far apart the end effector ends up under the true vs the reversed chunks
            "ee_distance_true_vs_reversed_m": float(np.linalg.norm(ee_fwd - ee_rev, axis=1).mean()),
            # and how far the true-action rollout's end effector is from the recorded one
            "ee_error_true_actions_m": float(np.linalg.norm(ee_fwd - real_ee, axis=1).mean()),
            # does the generated video show the arm where the state says? (probe on frames)
            "ee_probe_of_video_vs_model_m": float(
                np.linalg.norm(final_ee(fwd) - ee_fwd, axis=1).mean()
            ),
            "frame_difference_true_vs_reversed": float(
                np.abs(fwd.astype(float) - rev.astype(float)).mean()
            ),
        }
    result["action_sensitivity"] = sensitivity
    # Speed: the same rollout one episode at a time.
    t0 = time.perf_counter()
    for i in range(len(held)):
        rollout(wm, real[i : i + 1, 0], chunks[i : i + 1], False, 0, first_state=states0[i : i + 1])
    single_s = time.perf_counter() - t0
    n = len(held) * k_max
    result["speed"] = {
        "batched_latent_frames_per_s": n / batched_s,
        "single_latent_frames_per_s": n / single_s,
    }
    result["sampler_start_psnr_at_last_step"] = starts
    result["sampler_steps_at_last_step"] = {"model_default": wm.model.cfg.wm.steps, **by_steps}
    result["sigma_start"] = SIGMA_START
    result["baseline_note"] = (
        "action_blind = a separately trained model whose DiT never saw actions or state "
        f"({blind_model}, where shipped); action_dropped = this model with its actions "
        "dropped (CFG branch); tokenizer_ceiling = the recorded frames through this "
        "model's tokenizer (no model on it can score higher); renderer_recorded_states = "
        "this model's state renderer alone drawing the recorded states (perfect dynamics)"
    )
    result["targets"] = {
        "psnr_over_copy_last_db_at_16": 6.0,
        "psnr_over_action_blind_db_at_16": 3.0,
    }
    # Can any model on this tokenizer meet the copy-last target at all?
    at_last = result["horizons"][k_max]
    target_psnr = at_last["copy_last"]["psnr"] + result["targets"]["psnr_over_copy_last_db_at_16"]
    ceiling = at_last["tokenizer_ceiling"]["psnr"]
    result["target_reachable"] = bool(target_psnr < ceiling)
    print_table(
        f"world-model rollouts, {len(held)} held-out episodes ({cam})",
        [
            "latent steps",
            "WM PSNR",
            "action-blind",
            "action-dropped",
            "copy-last",
            "renderer, recorded states",
            "tokenizer",
            "WM − copy",
            "WM − blind",
        ],
        rows,
    )
    print(
        f"speed: {result['speed']['batched_latent_frames_per_s']:.1f} latent frames/s batched, "
        f"{result['speed']['single_latent_frames_per_s']:.1f} one at a time; sensitivity {result['action_sensitivity']}"
    )
    print(
        f"target at latent step {k_max}: copy-last + 6 dB = {target_psnr:.1f} dB vs tokenizer "
        f"ceiling {ceiling:.1f} dB: {'reachable' if result['target_reachable'] else 'unreachable'}"
    )
    print(
        f"PSNR at latent step {k_max} by sampler start: "
        + ", ".join(f"{k} {v:.1f} dB" for k, v in starts.items())
    )
    print(
        f"PSNR at latent step {k_max} by sampler steps (model default {wm.model.cfg.wm.steps}): "
        + ", ".join(f"{n}: {v['psnr']:.1f} dB in {v['seconds']:.1f} s" for n, v in by_steps.items())
    )
    return result


def main() -> dict:
    results = {}
    for task, (model, store_path) in TASKS.items():
        if model not in shipped_models():
            results[task] = {"model": model, "status": "not shipped yet"}
        elif not store_path.exists():
            results[task] = {"model": model, "status": f"{store_path} missing: see the card"}
            print(f"{task}: {store_path} missing, record it as models/{model}/card.md says")
        else:
            results[task] = run_task(model, store_path, BLIND.get(task))
    print(f"wrote {write_result('world_model', results)}")
    return results


if __name__ == "__main__":
    main()
