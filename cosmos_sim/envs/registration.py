"""The one place that registers cosmos_sim's Gymnasium environments.

Called on ``import cosmos_sim``; ``gym.make("cosmos_sim:cosmos_sim/Reach-v0")`` imports
the package itself, so no explicit import is needed. (Gymnasium ≥ 1.0 no longer loads
plugins from package entry points.)
"""

from __future__ import annotations

import gymnasium as gym

NAMESPACE = "cosmos_sim"

# id -> (task, frames per env step); max_episode_steps = episode length / frames per step.
SIM_TASKS = {
    "Reach": ("reach", 40),
    "Push": ("push", 80),
    "CameraNav": ("cameranav", 64),
    "ReachColor": ("reach-color", 40),  # several instructions: "reach the red/blue target"
    "PushSide": ("push-side", 80),  # "push the block to the left/right"
}
# Envs whose class is not the plain SimEnv (a subclass keeping its chunked contract).
ENTRY_POINTS = {"CameraNav": "cosmos_sim.envs.camera_nav_env:CameraNavEnv"}
CHUNK = 4  # actions (= frames) per env step: the tokenizer's temporal compression


def sim_env_id(task: str) -> str:
    """The simulator env id of a task name (``reach`` → ``cosmos_sim/Reach-v0``)."""
    from cosmos_sim.errors import ConfigError

    for name, (t, _) in SIM_TASKS.items():
        if t == task:
            return f"{NAMESPACE}/{name}-v0"
    raise ConfigError(
        "unknown task", field="task", expected=sorted(t for t, _ in SIM_TASKS.values()), found=task
    )


def register_envs() -> None:
    if f"{NAMESPACE}/WorldModel-v0" not in gym.registry:
        gym.register(
            id=f"{NAMESPACE}/WorldModel-v0",
            entry_point="cosmos_sim.envs.world_model_env:WorldModelEnv",
            vector_entry_point="cosmos_sim.envs.world_model_env:WorldModelVectorEnv",
        )
    for name, (task, episode_length) in SIM_TASKS.items():
        env_id = f"{NAMESPACE}/{name}-v0"
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINTS.get(name, "cosmos_sim.envs.sim_env:SimEnv"),
            kwargs={"task": task, "chunk": CHUNK},
            max_episode_steps=episode_length // CHUNK,
        )
