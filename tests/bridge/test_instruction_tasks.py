"""Tasks with several instructions (reach-color, push-side): task.toml validation, the seeded
instruction draw, the instructed rule deciding success, recording, and the Gymnasium envs."""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import cosmos_sim  # noqa: F401  (registers the envs)
from cosmos_sim.bridge.mujoco_sim import MujocoSim, make_expert, record_episode
from cosmos_sim.bridge.record import MujocoSource, record
from cosmos_sim.bridge.tasks import load_task, tasks_root
from cosmos_sim.cli import app
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError, TaskError

RED, BLUE = "reach the red target", "reach the blue target"
LEFT, RIGHT = "push the block to the left", "push the block to the right"
# task -> (its instructions, the policy_obs key its expert steers to, the region of each instruction)
TASKS = {
    "reach-color": ((RED, BLUE), "target", ("target_red", "target_blue")),
    "push-side": ((LEFT, RIGHT), "goal", ("goal_left", "goal_right")),
}


@pytest.fixture(scope="module")
def sims():
    """State-only simulators (nothing rendered), one per task."""
    out = {task: MujocoSim(task, cameras=[]) for task in TASKS}
    yield out
    for s in out.values():
        s.close()


@pytest.fixture
def color_copy(tmp_path) -> Path:
    """A writable copy of envs/reach-color (+ envs/common for its includes)."""
    root = tasks_root()
    shutil.copytree(root / "common", tmp_path / "common")
    shutil.copytree(root / "reach-color", tmp_path / "reach-color")
    return tmp_path / "reach-color"


def _edit(folder: Path, old: str, new: str) -> None:
    toml = folder / "task.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new))


# ---------------------------------------------------------------------- task.toml


def test_instructions_load_with_their_rules():
    task = load_task(tasks_root() / "reach-color")
    assert task.instruction_texts == (RED, BLUE)
    assert [(i.success.point, i.success.region) for i in task.instructions] == [
        ("ee", "target_red"),
        ("ee", "target_blue"),
    ]
    assert {i.success.radius for i in task.instructions} == {0.04}  # shared [success] fields
    single = load_task(tasks_root() / "reach")  # one instruction: unchanged task file
    assert single.instruction_texts == ("reach the red target",)
    assert single.instructions[0].success == single.success


INSTRUCTIONS = """[[instructions]]
text = "reach the red target"
region = "target_red"

[[instructions]]
text = "reach the blue target"
region = "target_blue"
"""


@pytest.mark.parametrize(
    "old, new, field, words",
    [
        (INSTRUCTIONS, "instructions = []\n", "instructions", "at least one"),
        ('text = "reach the blue target"', f'text = "{RED}"', "instructions[1].text", "duplicate"),
        ('text = "reach the blue target"', 'text = "  "', "instructions[1].text", "empty"),
        ('region = "target_blue"', 'regoin = "target_blue"', "instructions[1].regoin", "'region'"),
        ('point = "ee"', "", "instructions[0].point", "missing"),
        ('name = "reach-color"', 'instruction = "reach"', "instruction", "not both"),
    ],
)
def test_bad_instructions_name_file_and_field(color_copy, old, new, field, words):
    _edit(color_copy, old, new)
    with pytest.raises(TaskError, match=words) as e:
        load_task(color_copy)
    assert e.value.field == field
    assert f"task.toml: {field}" in str(e.value) and "\n" not in str(e.value)


def test_unknown_site_names_the_instruction_field(color_copy):
    _edit(color_copy, 'region = "target_blue"', 'region = "target_green"')
    task = load_task(color_copy)  # sites are checked against the compiled scene
    with pytest.raises(TaskError, match="no site named 'target_green'") as e:
        MujocoSim(task, cameras=[])
    assert e.value.field == "instructions[1].region"
    assert "did you mean 'target_" in str(e.value) and e.value.path.endswith("scene.xml")


def test_unknown_forced_instruction_suggests_one(sims):
    with pytest.raises(ConfigError, match="did you mean 'reach the red target'") as e:
        sims["reach-color"].reset(seed=0, instruction="reach the red targte")
    assert e.value.field == "instruction"


# ---------------------------------------------------------------------- instruction draw


@pytest.mark.parametrize("task", TASKS)
def test_seeded_draw_is_reproducible_and_covers_every_instruction(sims, task):
    sim = sims[task]

    def draw(seed: int) -> str:
        sim.reset(seed=seed)
        return sim.instruction

    first = [draw(s) for s in range(20)]
    assert first == [draw(s) for s in range(20)]
    assert set(first) == set(TASKS[task][0])


@pytest.mark.parametrize("task", TASKS)
def test_state_holds_every_region_and_not_the_instruction(sims, task):
    sim = sims[task]
    texts, _, regions = TASKS[task]
    for region in regions:
        assert f"{region}.x" in sim.state_names and f"{region}.y" in sim.state_names
    # Forcing either instruction gives the seed's layout: the state cannot tell them apart.
    a, b = (sim.reset(seed=7, instruction=t).state for t in texts)
    assert np.array_equal(a, b)
    for region in regions:  # the state's positions are the scene's
        i = sim.state_names.index(f"{region}.x")
        assert np.allclose(a[i : i + 2], sim.data.site(region).xpos[:2], atol=1e-6)


# ---------------------------------------------------------------------- success


class _Follow:
    """The task's expert steering to ``region`` whatever the episode's instruction says."""

    def __init__(self, task: str, region: str, seed: int) -> None:
        self.expert, self.key, self.region = make_expert(task, 1.0, seed), TASKS[task][1], region

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)

    def __call__(self, obs: dict) -> np.ndarray:
        return self.expert({**obs, self.key: obs[self.region]})


@pytest.mark.parametrize("task", TASKS)
def test_the_instructed_rule_decides_success(sims, task):
    sim = sims[task]
    texts, _, regions = TASKS[task]
    for seed in (3, 4):
        for k, text in enumerate(texts):
            assert record_episode(sim, make_expert(task, 1.0, seed), seed, text).success
            other = regions[1 - k]
            episode = record_episode(sim, _Follow(task, other, seed), seed, text)
            assert episode.instruction == text and not episode.success
            point = sim.rule.point
            done = np.linalg.norm(sim.data.site(point).xpos[:2] - sim.data.site(other).xpos[:2])
            assert done <= sim.rule.radius  # it did what the other instruction asks


# ---------------------------------------------------------------------- recording


def test_recorded_store_keeps_each_episodes_instruction(tmp_path):
    source = MujocoSource(
        "push-side", cameras=["top"], size=16, depth=False, segmentation=False, skill=1.0
    )
    drawn = []
    for seed in range(20):  # two consecutive seeds that draw different instructions
        source.sim.reset(seed=seed)
        drawn.append(source.sim.instruction)
    seed = next(s for s in range(19) if drawn[s] != drawn[s + 1])
    stats = record(source, tmp_path / "side.zarr", episodes=2, seed=seed)
    source.close()
    store = EpisodeStore.open(tmp_path / "side.zarr")
    assert store.instructions == drawn[seed : seed + 2] and stats.successes == 2
    assert store.spec.state_names[-4:] == [
        f"{g}.{a}" for g in ("goal_left", "goal_right") for a in "xy"
    ]


def test_record_command_forces_the_instruction(tmp_path):
    out = tmp_path / "blue.zarr"
    args = ["record", "--task", "reach-color", "--episodes", "2", "--cameras", "top"]
    args += ["--size", "16", "--no-depth", "--no-segmentation", "--out", str(out)]
    app([*args, "--instruction", BLUE], standalone_mode=False)
    store = EpisodeStore.open(out)
    assert store.instructions == [BLUE, BLUE] and store.success.tolist() == [True, True]
    with pytest.raises(ConfigError, match="has no instruction 'reach the green target'"):
        app([*args, "--instruction", "reach the green target"], standalone_mode=False)
    assert len(EpisodeStore.open(out)) == 2  # nothing appended


# ---------------------------------------------------------------------- Gymnasium


@pytest.mark.parametrize(
    "env_id, texts",
    [("cosmos_sim/ReachColor-v0", (RED, BLUE)), ("cosmos_sim/PushSide-v0", (LEFT, RIGHT))],
)
def test_gym_env_passes_check_env_and_takes_the_instruction(env_id, texts):
    env = gym.make(env_id, size=32)
    check_env(env.unwrapped, skip_render_check=False)
    _, info = env.reset(seed=5)
    assert info["instruction"] in texts
    for text in texts:
        obs, info = env.reset(seed=5, options={"instruction": text})
        assert info["instruction"] == text
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert info["instruction"] == text
    env.close()
