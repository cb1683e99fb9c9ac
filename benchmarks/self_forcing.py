"""Drift with and without self-forcing, on push's held-out episodes.

Two post-trainings of the shipped push model, the same number of steps from the same
weights and the same data, differing only in self-forcing (the share of training steps
whose last context frame is the model's own generation instead of the recorded one)::

    cosmos-sim train world-model --data data/push-wm.zarr \\
        --tokenizer models/tokenizer-cv-4x8x8-pca --init models/wm-diffusion-push \\
        --steps 250 --self-forcing 0.5 --out runs/wm-push-sf --export runs/wm-push-sf/model
    # … and the same with --self-forcing 0 into runs/wm-push-plain

Each rolls out from every held-out episode's first frame with its recorded actions (the
env's sampler, fp32, seeded); PSNR against the recorded frames at 1, 4, 8 and 16 latent
steps. Drift is the fall from step 1 to step 16; copy-last is measured beside them. The
run directories are not shipped: without them the benchmark says which command makes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import print_table, write_result
from benchmarks.world_model import psnr, rollout
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.envs.world_model_env import LoadedWorldModel
from cosmos_sim.training.world_model_task import CHUNK, HELD_OUT_EVERY

STORE = Path("data/push-wm.zarr")
ARMS = {
    "self-forcing 0 (plain)": Path("runs/wm-push-plain/model"),
    "self-forcing 0.5": Path("runs/wm-push-sf/model"),
}
HORIZONS = (1, 4, 8, 16)


def psnr_by_horizon(model: str | Path, real, chunks, states0) -> dict[int, float]:
    """Rollout PSNR (dB) at each of HORIZONS latent steps."""
    video, _ = rollout(
        LoadedWorldModel.load(model), real[:, 0], chunks, False, 0, first_state=states0
    )
    out = {}
    for h in HORIZONS:
        sl = slice(1 + CHUNK * (h - 1), 1 + CHUNK * h)
        out[h] = psnr(video[:, sl], real[:, sl])
    return out


def main() -> dict:
    missing = [str(p) for p in ARMS.values() if not p.exists()]
    if missing or not STORE.exists():
        print(f"self_forcing: {missing or STORE} missing; the module docstring has the commands")
        return {"status": "not run", "missing": missing}
    store = EpisodeStore.open(STORE)
    held = [e for e in range(len(store)) if e % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    frames = 1 + CHUNK * HORIZONS[-1]
    real = np.stack(
        [store.read_window(e, 0, frames, cameras=["front"])["rgb"]["front"] for e in held]
    )
    actions = np.stack(
        [store.read_window(e, 0, frames, fields=("action",))["action"] for e in held]
    )
    chunks = actions[:, : CHUNK * HORIZONS[-1]].reshape(len(held), HORIZONS[-1], CHUNK, -1)
    states0 = np.stack([store.read_window(e, 0, 1, fields=("state",))["state"][0] for e in held])
    result: dict = {"store": str(STORE), "held_out_episodes": held, "arms": {}}
    rows = []
    copy = {}
    for h in HORIZONS:
        sl = slice(1 + CHUNK * (h - 1), 1 + CHUNK * h)
        copy[h] = psnr(np.repeat(real[:, :1], CHUNK, axis=1), real[:, sl])
    for name, path in {"shipped (no post-training)": "wm-diffusion-push", **ARMS}.items():
        scores = psnr_by_horizon(path, real, chunks, states0)
        result["arms"][name] = {
            "model": str(path),
            "psnr": scores,
            "drift_db": scores[1] - scores[16],
        }
        rows.append([name, *scores.values(), scores[1] - scores[16]])
    result["arms"]["copy-last"] = {"psnr": copy, "drift_db": copy[1] - copy[16]}
    rows.append(["copy-last", *copy.values(), copy[1] - copy[16]])
    print_table(
        f"drift with and without self-forcing, {len(held)} held-out push episodes",
        ["model", *[f"PSNR @{h}" for h in HORIZONS], "drift 1→16 (dB)"],
        rows,
    )
    print(f"wrote {write_result('self_forcing', result)}")
    return result


if __name__ == "__main__":
    main()
