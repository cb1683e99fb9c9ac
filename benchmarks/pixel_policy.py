"""Pixel policies in the world model vs the simulator: are the generated frames good
enough to evaluate a policy that acts on what it *sees*?

Every policy in benchmarks/policy_eval.py reads only the proprio ``state``, so the world
model's video never matters there. Here small CNN behaviour-cloning policies read only
the camera image (64×64, the front camera) and output an action chunk. They are trained
on the training episodes of the task's world-model store (every 10th episode held out, as
the world model itself was trained), at graded quality (training steps and the skill of
the demonstrations) so that their simulator success rates spread out, exported as
TorchScript (``camera`` attribute, see cosmos_sim/evaluation/policies.py), and evaluated
with ``evaluate`` beside two state-based references (expert@1, random) in the simulator
and in the shipped world model, from the same initial states.

Reported: per-policy success in both envs, the per-episode outcome agreement, Pearson r /
Spearman ρ / MMRV over the pixel policies alone and over all policies, each policy's
held-out BC loss, training and evaluation times; and the *frame gap* (:func:`frame_gap`):
the expert's actions replayed open loop in both envs, how differently each pixel policy
acts on the generated frames than on the simulator's. The trained policies are cached
under runs/pixel_policy/<task>/ (keyed by their training config); without the cache they
are retrained from scratch (seeded). Every 2nd frame of the first episode of each policy
(simulator above, world model below) is written to out/bench/pixel_policy/<task>/<policy>.png.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import cosmos_sim  # noqa: F401  (registers the envs)
from benchmarks.common import print_table, write_result
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.envs.registration import sim_env_id
from cosmos_sim.evaluation import metrics
from cosmos_sim.evaluation.policies import load_policy
from cosmos_sim.evaluation.policy_eval import EvaluationRun, evaluate
from cosmos_sim.models.zoo import shipped_models
from cosmos_sim.training.world_model_task import HELD_OUT_EVERY  # the world models' split

# task → (shipped world model, its training store). Not push yet: this BC from push-wm.zarr
# (36 near-expert or 144 episodes, 2000-3000 steps) never beat predicting zero on held-out
# episodes and succeeded in 0 of 24 simulator episodes, so there would be nothing to rank.
TASKS = {
    "reach": ("wm-diffusion-reach", Path("data/reach-wm.zarr")),
}
# the skills of the store's episodes, in equal blocks in this order (reach 30 each, push 20)
SKILLS = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1, 0.0)
CAMERA = "front"
REFERENCES = ["expert@1.0", "random"]
EPISODES = 48
SEED = 10_000  # the evaluation seeds, as benchmarks/policy_eval.py (not in the stores)
CACHE = Path("runs/pixel_policy")
OUT = Path("out/bench/pixel_policy")


@dataclass(frozen=True)
class BCConfig:
    """One behaviour-cloning run: which demonstrations, how long, how hard."""

    name: str
    min_skill: float  # demonstrations of skill ≥ this
    steps: int
    batch: int = 64
    lr: float = 1e-3
    shift: int = 4  # random-shift augmentation (DrQ), pixels
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


# Graded quality: fewer steps and noisier demonstrations → lower success.
POLICIES = [
    BCConfig("bc-expert-3000", min_skill=0.85, steps=3000),
    BCConfig("bc-all-3000", min_skill=0.0, steps=3000),
    BCConfig("bc-expert-1000", min_skill=0.85, steps=1000),
    BCConfig("bc-expert-400", min_skill=0.85, steps=400),
    BCConfig("bc-expert-150", min_skill=0.85, steps=150),
]


class PixelPolicy(nn.Module):
    """(3, H, W) image in [0, 1] → (chunk, A) action chunk in [-1, 1]: four stride-2 convs
    (16-32-64-64 channels), an MLP head; 0.32 M parameters."""

    def __init__(self, chunk: int, action_dim: int, size: int = 64, camera: str = CAMERA) -> None:
        super().__init__()
        self.camera = camera  # read by the TorchScript loader: which image to pass
        self.chunk, self.action_dim = chunk, action_dim
        layers, c = [], 3
        for width in (16, 32, 64, 64):
            layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.GELU()]
            c = width
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * (size // 16) ** 2, 256),
            nn.GELU(),
            nn.Linear(256, chunk * action_dim),
        )

    def act(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, chunk, A)."""
        b = images.shape[0]
        features = self.convs(images - 0.5)  # (B, 64, H/16, W/16)
        return torch.tanh(self.head(features)).reshape(b, self.chunk, self.action_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.act(image[None])[0]  # one observation: (3, H, W) → (chunk, A)


@dataclass
class Demonstrations:
    """Every (frame t, actions t … t+chunk−1) window of the chosen episodes."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    actions: torch.Tensor  # (N, chunk, A) float32

    @classmethod
    def from_store(cls, rgb, action, bounds, episodes: list[int], chunk: int) -> Demonstrations:
        times, actions = [], []
        for e in episodes:
            start, end = bounds[e]
            for t in range(start, end - chunk + 1):
                times.append(t)
                actions.append(action[t : t + chunk])
        frames = torch.from_numpy(rgb[np.array(times)]).permute(0, 3, 1, 2).contiguous()
        return cls(frames, torch.from_numpy(np.stack(actions)).float())


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ's augmentation (Kostrikov et al. 2020): pad by replication, crop back at a random
    offset per image."""
    if pad == 0:
        return images
    b, c, h, w = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, y : y + h, x : x + w] for i, (x, y) in enumerate(zip(dx, dy, strict=True))]
    )


def train(config: BCConfig, data: Demonstrations, held: Demonstrations, chunk: int) -> tuple:
    """Train one policy from scratch; returns it, its held-out MSE and the seconds it took."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    policy = PixelPolicy(chunk, data.actions.shape[-1])
    # Scripted now, before training (it shares the parameters): TorchScript compiles from the
    # source file, which may be edited while a long run trains.
    scripted = torch.jit.script(policy)
    optim = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, config.lr, total_steps=config.steps)
    start = time.perf_counter()
    policy.train()
    for _ in range(config.steps):
        idx = torch.randint(0, len(data.images), (config.batch,), generator=generator)
        images = random_shift(data.images[idx].float() / 255.0, config.shift, generator)
        loss = nn.functional.mse_loss(policy.act(images), data.actions[idx])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
    seconds = time.perf_counter() - start
    policy.eval()
    with torch.no_grad():
        mse = float(
            np.mean(
                [
                    nn.functional.mse_loss(
                        policy.act(held.images[i : i + 256].float() / 255.0),
                        held.actions[i : i + 256],
                    ).item()
                    for i in range(0, len(held.images), 256)
                ]
            )
        )
    return scripted, mse, seconds


def load_store(path: Path, chunk: int):
    """The store's front-camera frames, actions and episode bounds, and the split."""
    store = EpisodeStore.open(path)
    n = len(store.episode_ends)
    if n % len(SKILLS):
        raise RuntimeError(f"{path}: {n} episodes are not {len(SKILLS)} equal skill blocks")
    ends = np.asarray(store.episode_ends)
    bounds = list(zip(np.concatenate([[0], ends[:-1]]), ends, strict=True))
    rgb = np.asarray(store.group[f"cameras/{CAMERA}/rgb"][: ends[-1]])  # (T, H, W, 3) uint8
    action = np.asarray(store.group["action"][: ends[-1]], np.float32)  # (T, A)
    skill = [SKILLS[e // (n // len(SKILLS))] for e in range(n)]
    train_eps = [e for e in range(n) if e % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    # held out, and near-expert (skill ≥ 0.85): the loss says how well a policy imitates the expert
    held_eps = [
        e for e in range(n) if e % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 and skill[e] >= 0.85
    ]
    return rgb, action, bounds, skill, train_eps, held_eps


def trained_policies(task: str, store: Path, chunk: int) -> tuple[list[Path], list[dict]]:
    """Each BC policy's TorchScript file: from the cache, or trained now."""
    folder = CACHE / task
    folder.mkdir(parents=True, exist_ok=True)
    paths, records, loaded = [], [], None
    for config in POLICIES:
        path = folder / f"{config.name}-{config.key()}.pt"
        meta = path.with_suffix(".json")
        if not (path.is_file() and meta.is_file()):
            if loaded is None:
                loaded = load_store(store, chunk)
            rgb, action, bounds, skill, train_eps, held_eps = loaded
            eps = [e for e in train_eps if skill[e] >= config.min_skill]
            data = Demonstrations.from_store(rgb, action, bounds, eps, chunk)
            held = Demonstrations.from_store(rgb, action, bounds, held_eps, chunk)
            policy, mse, seconds = train(config, data, held, chunk)
            tmp = path.with_suffix(".tmp")
            policy.save(str(tmp))
            tmp.rename(path)  # never a partial policy file in the cache
            record = asdict(config) | {
                "train_episodes": len(eps),
                "train_windows": len(data.images),
                "held_out_episodes": len(held_eps),
                "held_out_mse": mse,
                "train_seconds": seconds,
            }
            meta.write_text(json.dumps(record, indent=2) + "\n")
            print(f"trained {config.name}: held-out MSE {mse:.4f} in {seconds:.0f} s", flush=True)
        paths.append(path)
        records.append(json.loads(meta.read_text()))
    return paths, records


def save_frames(run: EvaluationRun, folder: Path) -> None:
    """Every 2nd frame of the first episode, simulator over world model, one PNG per policy."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for p in run.policies:
        if not (p.reference.frames and p.candidate.frames):
            continue
        sim, wm = p.reference.frames[0][CAMERA], p.candidate.frames[0][CAMERA]  # (T, H, W, 3)
        t = min(len(sim), len(wm))
        rows = [np.concatenate(list(f[:t:2]), axis=1) for f in (sim, wm)]
        Image.fromarray(np.concatenate(rows, axis=0)).save(folder / f"{p.name}.png")


def agreement(run: EvaluationRun, names: list[str]) -> dict:
    chosen = [p for p in run.policies if p.name in names]
    return metrics.agreement(
        [p.reference.success for p in chosen],
        [p.candidate.success for p in chosen],
        n_boot=1000,
        seed=SEED,
    ).as_dict()


def frame_gap(reference, candidate, bc_policies: list, expert, seeds: list[int]) -> dict:
    """Do the generated frames alone change what a pixel policy does?

    The expert's action chunks from simulator episodes are replayed open loop in the world
    model (same seeds, same first frame), so both envs see the same actions; at every step
    after the first each BC policy acts on the simulator's frame and on the world model's.
    Reported: the policies' mean squared action difference between the two frames; their
    error against the expert in each env (the expert acting on that env's state: the world
    model's frames follow its own state, which drifts from the simulator's); the frames'
    PSNR and the world model's end-effector error (m) against the simulator.
    """
    sim_images, sim_states, chunks = [], [], []  # each (steps, N, …)
    for seed in seeds:
        expert.reset(seed)
        obs, _ = reference.reset(seed=seed)
        images, states, actions = [], [], []
        for _ in range(candidate.max_steps):
            images.append(obs[CAMERA])
            states.append(obs["state"])
            actions.append(expert(obs))
            obs, *_ = reference.step(actions[-1])
        sim_images.append(images)
        sim_states.append(states)
        chunks.append(actions)
    sim_images, sim_states = np.stack(sim_images, 1), np.stack(sim_states, 1)  # (K, N, …)
    chunks = np.stack(chunks, 1)  # (K, N, chunk, A)
    wm_obs, _ = candidate.reset(seed=list(seeds))
    wm_images, wm_states = [wm_obs[CAMERA]], [wm_obs["state"]]
    for k in range(len(chunks) - 1):
        wm_obs, *_ = candidate.step(chunks[k])
        wm_images.append(wm_obs[CAMERA])
        wm_states.append(wm_obs["state"])
    wm_images, wm_states = np.stack(wm_images), np.stack(wm_states)  # (K, N, …)
    later = slice(1, None)  # step 0 is the same real frame in both
    diff = (sim_images[later].astype(np.float64) - wm_images[later]) ** 2
    psnr = float(10 * np.log10(255.0**2 / diff.mean(axis=(2, 3, 4))).mean())
    ee = [i for i, n in enumerate(reference.unwrapped.sim.state_names) if n in ("ee.x", "ee.y")]
    ee_error = np.linalg.norm(sim_states[later][..., ee] - wm_states[later][..., ee], axis=-1)
    expert_on_wm = np.stack(
        [[expert({"state": state}) for state in step] for step in wm_states[later]]
    )  # (K-1, N, chunk, A): the noiseless expert, acting on the world model's state
    gaps = {}
    for policy in bc_policies:
        on_sim, on_wm = (
            np.stack([[policy({CAMERA: im}) for im in step] for step in images[later]])
            for images in (sim_images, wm_images)
        )  # (K-1, N, chunk, A)
        gaps[policy.name] = {
            "action_mse_wm_vs_sim_frames": float(((on_wm - on_sim) ** 2).mean()),
            "action_mse_vs_expert_on_sim_frames": float(((on_sim - chunks[later]) ** 2).mean()),
            "action_mse_vs_expert_on_wm_frames": float(((on_wm - expert_on_wm) ** 2).mean()),
        }
    return {
        "episodes": len(seeds),
        "psnr_db": psnr,
        "ee_error_m": float(ee_error.mean()),
        "policies": gaps,
    }


def load_named(specs: list[str], reference: gym.Env) -> list:
    """``specs`` (the BC policies' files first, in ``POLICIES`` order) as policies of the
    simulator env ``reference``, each BC policy named by its config, not its cache file."""
    sim = reference.unwrapped
    policies = [
        load_policy(
            s, task=sim.task, state_names=sim.sim.state_names, action_space=reference.action_space
        )
        for s in specs
    ]
    for policy, config in zip(policies, POLICIES, strict=False):
        policy.name = config.name
    return policies


def run_task(task: str, model: str, store: Path) -> dict:
    candidate = gym.make_vec("cosmos_sim/WorldModel-v0", num_envs=EPISODES, model=model)
    camera, size, chunk = candidate.camera, candidate.sim.height, candidate.chunk
    assert camera == CAMERA, f"{model} observes {camera}, the policies read {CAMERA}"
    reference = gym.make(sim_env_id(task), cameras=camera, size=size)
    t0 = time.perf_counter()
    paths, records = trained_policies(task, store, chunk)
    train_seconds = time.perf_counter() - t0
    policies = load_named([str(p) for p in paths] + REFERENCES, reference)
    names = [c.name for c in POLICIES]
    t0 = time.perf_counter()
    run = evaluate(task, reference, candidate, policies, episodes=EPISODES, seed=SEED)
    eval_seconds = time.perf_counter() - t0
    save_frames(run, OUT / task)
    t0 = time.perf_counter()
    expert = policies[len(names) + REFERENCES.index("expert@1.0")]
    gap = frame_gap(reference, candidate, policies[: len(names)], expert, run.seeds)
    gap_seconds = time.perf_counter() - t0
    bc = {r["name"]: r for r in records}
    rows = []
    for p in run.policies:
        same = float((p.reference.success == p.candidate.success).mean())
        rows.append(
            {
                "policy": p.name,
                "reads": "image" if p.name in bc else "state",
                "simulator": p.reference.success_rate,
                "world_model": p.candidate.success_rate,
                "episode_agreement": same,
                "held_out_mse": bc[p.name]["held_out_mse"] if p.name in bc else None,
            }
        )
    return {
        "model": model,
        "store": str(store),
        "camera": camera,
        "episodes_per_policy": EPISODES,
        "seeds": [SEED, SEED + EPISODES - 1],
        "policies": rows,
        "agreement_pixel_policies": agreement(run, names),
        "agreement_all": run.agreement.as_dict(),
        "training": records,
        "frame_gap": gap,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "frame_gap_seconds": gap_seconds,
    }


def main() -> dict:
    torch.manual_seed(0)
    available = set(shipped_models())
    results: dict = {
        "episodes_per_policy": EPISODES,
        "bc_policies": [asdict(c) for c in POLICIES],
        "references": REFERENCES,
    }
    for task, (model, store) in TASKS.items():
        if model not in available or not store.exists():
            results[task] = {"model": model, "status": "model or store missing"}
            continue
        r = run_task(task, model, store)
        results[task] = r
        print_table(
            f"{task}: pixel policies, simulator vs {model} ({EPISODES} episodes each)",
            ["policy", "reads", "sim success", "WM success", "same outcome", "held-out MSE"],
            [
                [
                    p["policy"],
                    p["reads"],
                    p["simulator"],
                    p["world_model"],
                    p["episode_agreement"],
                    p["held_out_mse"] if p["held_out_mse"] is not None else "-",
                ]
                for p in r["policies"]
            ],
        )
        a, b = r["agreement_pixel_policies"], r["agreement_all"]
        print_table(
            f"{task}: ranking agreement",
            ["policies", "Pearson r", "Spearman ρ", "MMRV"],
            [
                ["pixel (BC)", a["pearson"], a["spearman"], a["mmrv"]],
                ["all", b["pearson"], b["spearman"], b["mmrv"]],
            ],
        )
        g = r["frame_gap"]
        print_table(
            f"{task}: the expert's actions replayed in both envs ({g['episodes']} episodes): "
            f"frames {g['psnr_db']:.1f} dB PSNR, end effector off by {g['ee_error_m']:.3f} m",
            ["policy", "action MSE: WM vs sim frames", "vs expert: in sim", "vs expert: in WM"],
            [
                [
                    name,
                    v["action_mse_wm_vs_sim_frames"],
                    v["action_mse_vs_expert_on_sim_frames"],
                    v["action_mse_vs_expert_on_wm_frames"],
                ]
                for name, v in g["policies"].items()
            ],
        )
        print(
            f"training {r['train_seconds']:.0f} s, evaluation {r['eval_seconds']:.0f} s, "
            f"frame gap {r['frame_gap_seconds']:.0f} s"
        )
    print(f"wrote {write_result('pixel_policy', results)}")
    return results


if __name__ == "__main__":
    main()
