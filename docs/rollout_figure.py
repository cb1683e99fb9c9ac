"""docs/rollout-push.png: recorded frames vs the shipped push world model, open loop.

Two held-out episodes of data/push-wm.zarr (recorded as in the model's card); from each
one's first frame and state, the model rolls out with the recorded actions (the world-model
benchmark's rollout). Rows: recorded, world model; columns: frames 4, 16, 32, 48, 64.

    python docs/rollout_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.world_model import rollout
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.envs.world_model_env import LoadedWorldModel

EPISODES, FRAMES = (19, 49), (4, 16, 32, 48, 64)


def main() -> None:
    wm = LoadedWorldModel.load("wm-diffusion-push")
    store = EpisodeStore.open("data/push-wm.zarr")
    fig, axes = plt.subplots(
        2 * len(EPISODES), len(FRAMES), figsize=(2 * len(FRAMES), 4.4 * len(EPISODES))
    )
    for i, e in enumerate(EPISODES):
        w = store.read_window(e, 0, 65, cameras=["front"], fields=("rgb", "state", "action"))
        real = w["rgb"]["front"]
        chunks = w["action"][:64].reshape(1, 16, 4, -1)
        gen, _ = rollout(wm, real[None, 0], chunks, False, 0, first_state=w["state"][:1])
        for j, f in enumerate(FRAMES):
            for k, (img, name) in enumerate(((real[f], "recorded"), (gen[0, f], "world model"))):
                ax = axes[2 * i + k, j]
                ax.imshow(img)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"ep {e}\n{name}")
                if i == 0 and k == 0:
                    ax.set_title(f"frame {f}")
    fig.tight_layout()
    out = Path(__file__).with_name("rollout-push.png")
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
