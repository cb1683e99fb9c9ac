"""cosmos_sim: simulator bridge, Cosmos-style world models and Gymnasium envs for robotics."""

import os

# Headless rendering by default: EGL with Mesa's software renderer works without a screen.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

__version__ = "0.1.0"

from cosmos_sim.envs.registration import register_envs  # noqa: E402

register_envs()
