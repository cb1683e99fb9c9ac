"""The fast decoder against the full one, on the same latents, in the same run.

    python -m benchmarks fast_decoder

``tokenizer-cv-4x8x8-pca-fast`` decodes the latents of ``tokenizer-cv-4x8x8-pca`` (every
shipped diffusion world model's) with a ~6× narrower conv trunk. Three figures, each for
both decoders side by side:

* image quality: PSNR of held-out episodes (every 10th of each world-model store, as in
  the tokenizer's card), recorded frames encoded and decoded whole;
* speed: streamed decoding of one latent frame for a batch of 96 sequences (a 32-env
  multi-view step), in the precision the envs run (bf16 where it is faster);
* what a pixel policy makes of it: the reach BC policies of ``benchmarks/pixel_policy.py``
  in the reach simulator with every camera frame replaced by its encode → decode, same
  seeds as the simulator's own frames (does the cheaper decoder change their success?).

The env speed with either decoder is in ``benchmarks/envs.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cosmos_sim  # noqa: E402, F401
from benchmarks import pixel_policy  # noqa: E402
from benchmarks.common import print_table, video_u8, write_result  # noqa: E402
from cosmos_sim.data.store import EpisodeStore  # noqa: E402
from cosmos_sim.device import precision  # noqa: E402
from cosmos_sim.envs.registration import sim_env_id  # noqa: E402
from cosmos_sim.evaluation.policy_eval import evaluate  # noqa: E402
from cosmos_sim.models import zoo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FULL, FAST = "tokenizer-cv-4x8x8-pca", "tokenizer-cv-4x8x8-pca-fast"
STORES = {
    "push-wm": ["front"],
    "reach-wm": ["front"],
    "reach-color-wm": ["front"],
    "cameranav-wm": ["orbit"],
    "push-mv": ["front", "top", "side"],
}
HELD_OUT = 10  # episodes per store: every 10th, the world models' held-out split
POLICY_EPISODES = 48


@torch.no_grad()
def image_quality(tokenizers: dict[str, torch.nn.Module]) -> dict[str, dict[str, float]]:
    """PSNR (dB) per store/camera and tokenizer, held-out episodes decoded whole."""
    out = {}
    for name, cameras in STORES.items():
        path = ROOT / "data" / f"{name}.zarr"
        if not path.exists():
            continue
        store = EpisodeStore.open(path)
        held = [e for e in range(len(store)) if e % 10 == 9][:HELD_OUT]
        frames = min(store.episode_length(e) for e in held)
        frames = 1 + 4 * ((frames - 1) // 4)
        for camera in cameras:
            real = np.stack(
                [store.read_window(e, 0, frames, cameras=[camera])["rgb"][camera] for e in held]
            )
            x = torch.from_numpy(real).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
            row = {}
            for key, tok in tokenizers.items():
                mse = np.mean((video_u8(tok.decode(tok.encode(x))).astype(np.float64) - real) ** 2)
                row[key] = float(10 * np.log10(255**2 / mse))
            out[f"{name}/{camera}"] = row
    return out


@torch.no_grad()
def decode_speed(tok: torch.nn.Module, batch: int = 96, repeats: int = 3) -> float:
    """Frames/s of streamed decoding, one latent frame (4 video frames) per call for
    ``batch`` sequences: the best of ``repeats`` timings of 2 calls, after 2 warm-ups."""
    prec = precision("cpu")
    z = torch.randn(batch, 6, 16, 8, 8)
    best = 0.0
    for _ in range(repeats):
        stream = tok.stream()
        with prec.autocast():
            stream.decode(z[:, :1])
            stream.decode(z[:, 1:2])
            start = time.perf_counter()
            for i in range(2, 4):
                stream.decode(z[:, i : i + 1])
        best = max(best, batch * 2 * 4 / (time.perf_counter() - start))
    return best


class ThroughTokenizer(gym.ObservationWrapper):
    """The simulator env with its front frame replaced by the tokenizer's encode → decode."""

    def __init__(self, env: gym.Env, tok: torch.nn.Module) -> None:
        super().__init__(env)
        self.tok = tok

    @torch.no_grad()
    def observation(self, obs: dict) -> dict:
        x = torch.from_numpy(obs["front"]).permute(2, 0, 1)[None, None].float() / 127.5 - 1
        return {**obs, "front": video_u8(self.tok.decode(self.tok.encode(x)))[0, 0]}


def pixel_policies(tokenizers: dict[str, torch.nn.Module]) -> dict[str, dict[str, float]]:
    """Reach BC policies' success: the simulator's frames, and through each tokenizer."""
    reference = gym.make(sim_env_id("reach"), cameras="front", size=64)
    paths, _ = pixel_policy.trained_policies("reach", pixel_policy.TASKS["reach"][1], 4)
    policies = pixel_policy.load_named([str(p) for p in paths], reference)
    out: dict[str, dict[str, float]] = {p.name: {} for p in policies}
    for key, tok in tokenizers.items():
        candidate = ThroughTokenizer(gym.make(sim_env_id("reach"), cameras="front", size=64), tok)
        run = evaluate(
            "reach", reference, candidate, policies, episodes=POLICY_EPISODES,
            seed=pixel_policy.SEED,
        )  # fmt: skip
        for r in run.policies:
            out[r.name]["simulator"] = r.reference.success_rate
            out[r.name][key] = r.candidate.success_rate
    return out


def main() -> dict:
    shipped = zoo.shipped_models()
    if FAST not in shipped or FULL not in shipped:
        print(f"{FAST} is not shipped: nothing to compare")
        return {}
    tokenizers = {k: zoo.load_model(k).module.float().eval() for k in (FULL, FAST)}
    result: dict = {"full": FULL, "fast": FAST}
    params = {k: sum(p.numel() for p in t.decoder.parameters()) for k, t in tokenizers.items()}
    result["decoder_parameters"] = params
    result["psnr_db"] = image_quality(tokenizers)
    result["decode_frames_per_s"] = {k: decode_speed(t) for k, t in tokenizers.items()}
    result["pixel_policies_reach"] = pixel_policies(tokenizers)
    rows = [
        [where, f"{row[FULL]:.2f}", f"{row[FAST]:.2f}", f"{row[FAST] - row[FULL]:+.2f}"]
        for where, row in result["psnr_db"].items()
    ]
    speed = result["decode_frames_per_s"]
    rows.append(["decode frames/s (96 streams)", f"{speed[FULL]:.0f}", f"{speed[FAST]:.0f}",
                 f"{speed[FAST] / speed[FULL]:.1f}×"])  # fmt: skip
    for name, row in result["pixel_policies_reach"].items():
        rows.append([f"{name} success (sim {row['simulator']:.2f})", f"{row[FULL]:.2f}",
                     f"{row[FAST]:.2f}", f"{row[FAST] - row[FULL]:+.2f}"])  # fmt: skip
    print_table("fast decoder", ["", "full decoder", "fast decoder", "difference"], rows)
    print(f"wrote {write_result('fast_decoder', result)}")
    return result


if __name__ == "__main__":
    main()
