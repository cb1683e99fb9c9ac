"""Steer the orbit camera in CameraNav-v0 with the scripted camera expert at a few skills.

    python examples/cameranav_env.py --episodes 5 --size 32

Each env step takes a chunk of 4 camera actions (cam_yaw, cam_pitch, cam_dolly); the
arm pushes the block by itself. Success: the block ends up in the image centre.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import cosmos_sim  # noqa: F401  (registers the envs)
from cosmos_sim.envs.camera_nav_env import CameraNavExpert


def main(argv: list[str] | None = None) -> dict[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--skills", default="1.0,0.5,0.0")
    parser.add_argument("--seed", type=int, default=1000, help="Episode i uses seed + i.")
    args = parser.parse_args(argv)

    env = gym.make("cosmos_sim/CameraNav-v0", size=args.size)
    rates = {}
    for skill in (float(s) for s in args.skills.split(",")):
        policy = CameraNavExpert.for_env(env, skill)
        successes, angles = [], []
        for seed in range(args.seed, args.seed + args.episodes):
            policy.reset(seed)
            obs, info = env.reset(seed=seed)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy(obs))
                done = terminated or truncated
            successes.append(info["is_success"])
            angles.append(np.degrees(info["goal_distance"]))
        rates[skill] = float(np.mean(successes))
        print(
            f"camera expert @ {skill:.2f}: success {rates[skill]:.2f}, "
            f"median final angle off the axis {np.median(angles):.1f} deg"
        )
    env.close()
    return rates


if __name__ == "__main__":
    main()
