"""Record robot episodes from Isaac Sim straight into a cosmos_sim episode store.

Run with Isaac Sim's Python (cosmos-sim installed into it first)::

    ./python.sh -m pip install 'cosmos-sim[omniverse]'
    ./python.sh examples/isaac_sim_writer.py --out franka.zarr --episodes 5 --steps 60

A Franka arm reaches for a randomly placed cube while two Replicator render products
("front" and "wrist-ish" side view) feed rgb, distance_to_image_plane,
semantic_segmentation and camera_params to ``CosmosSimWriter``; each control step the
joint positions (state) and the joint-target delta (action) go to the writer with
``set_step`` before the frame is rendered, and ``end_episode`` commits the episode.
Killing the script loses at most the episode in progress.

Only ``main()`` needs Isaac Sim; the control maths (``reach_action``) is plain numpy.
"""

from __future__ import annotations

import argparse

import numpy as np

FRANKA_USD = "/Isaac/Robots/Franka/franka.usd"  # under the Isaac assets root
ARM_JOINTS = 7
MAX_DELTA = 0.05  # rad per control step


def reach_action(
    joint_positions: np.ndarray, target: np.ndarray, gain: float = 0.2, limit: float = MAX_DELTA
) -> np.ndarray:
    """Normalised joint-target delta in [-1, 1] that moves the arm joints toward ``target``."""
    delta = gain * (np.asarray(target, np.float64) - np.asarray(joint_positions, np.float64))
    return np.clip(delta[:ARM_JOINTS] / limit, -1.0, 1.0).astype(np.float32)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="episode store (.zarr), appended to")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="control steps per episode")
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--headless", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from isaacsim import SimulationApp  # must exist before any omni import

    app = SimulationApp({"headless": args.headless})
    import omni.replicator.core as rep
    from isaacsim.core.api import World
    from isaacsim.core.api.objects import DynamicCuboid
    from isaacsim.core.prims import SingleArticulation
    from isaacsim.core.utils.stage import add_reference_to_stage
    from isaacsim.core.utils.types import ArticulationAction
    from isaacsim.storage.native import get_assets_root_path

    from cosmos_sim.bridge.omniverse.kit import register_writer

    world = World(stage_units_in_meters=1.0, physics_dt=1 / 120, rendering_dt=1 / args.fps)
    world.scene.add_default_ground_plane()
    add_reference_to_stage(get_assets_root_path() + FRANKA_USD, "/World/Franka")
    robot = world.scene.add(SingleArticulation("/World/Franka", name="franka"))
    with rep.get.prim_at_path("/World/Franka"):
        rep.modify.semantics([("class", "robot")])
    cube = world.scene.add(
        DynamicCuboid("/World/Cube", name="cube", size=0.05, position=(0.5, 0, 0.025))
    )
    with rep.get.prim_at_path("/World/Cube"):
        rep.modify.semantics([("class", "cube")])

    size = (args.size, args.size)
    front = rep.create.camera(position=(1.6, 0.0, 0.9), look_at=(0.3, 0.0, 0.2))
    side = rep.create.camera(position=(0.4, 1.3, 0.7), look_at=(0.4, 0.0, 0.1))
    render_products = [
        rep.create.render_product(front, size, name="front"),
        rep.create.render_product(side, size, name="side"),
    ]

    register_writer()  # or enable the 'omniverse' Kit extension (cosmos-sim omniverse path)
    writer = rep.WriterRegistry.get("CosmosSimWriter")
    writer.initialize(
        output_dir=args.out,
        fps=args.fps,
        action_low=[-1.0] * ARM_JOINTS,
        action_high=[1.0] * ARM_JOINTS,
        action_names=[f"joint{i + 1}.delta" for i in range(ARM_JOINTS)],
        state_names=[f"joint{i + 1}.pos" for i in range(9)],
        classes=["robot", "cube"],
        instruction="reach the cube",
    )
    writer.attach(render_products)

    rng = np.random.default_rng(0)
    world.reset()
    for episode in range(args.episodes):
        world.reset()
        cube.set_world_pose(position=(rng.uniform(0.35, 0.6), rng.uniform(-0.25, 0.25), 0.025))
        target = robot.get_joint_positions() + rng.uniform(-0.6, 0.6, 9)
        for _ in range(args.steps):
            q = robot.get_joint_positions()
            action = reach_action(q, target)
            # The frame rendered next is the observation this action follows.
            writer.set_step(action, state=q, reward=-float(np.abs(target - q)[:ARM_JOINTS].sum()))
            rep.orchestrator.step(rt_subframes=4, pause_timeline=False)
            command = q.copy()
            command[:ARM_JOINTS] += action * MAX_DELTA
            robot.apply_action(ArticulationAction(joint_positions=command))
            for _ in range(round(120 / args.fps)):
                world.step(render=False)
        reached = bool(np.abs(target - robot.get_joint_positions())[:ARM_JOINTS].max() < 0.05)
        writer.end_episode(success=reached)
        print(f"episode {episode}: success={reached}")
    rep.orchestrator.wait_until_complete()
    writer.detach()
    app.close()


if __name__ == "__main__":
    main()
