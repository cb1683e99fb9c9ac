"""World-model training end to end on a tiny real store: record → tokenize → train → export → load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factories import tiny_world_model as make_tiny_world_model

from cosmos_sim.bridge.record import MujocoSource, record
from cosmos_sim.data.store import EpisodeStore
from cosmos_sim.errors import ConfigError, StoreError
from cosmos_sim.models import zoo
from cosmos_sim.models.tokenizer import TokenizerConfig, VideoTokenizer
from cosmos_sim.training.state_heads import DELTA_FLOOR
from cosmos_sim.training.tokenizer_task import tokenize_store
from cosmos_sim.training.world_model_task import (
    CHUNK,
    LatentClipLoader,
    StateStats,
    build_model,
    dataset_stats,
    export_world_model,
    latent_cache,
    load_sequences,
    load_state_sequences,
    train_world_model,
)

TINY_DIT = {"dim": 32, "depth": 1, "heads": 2}
SIZE = 64  # the task's default frames (stable-baselines3's image encoder needs >= 36 px)
LATENT = (16, SIZE // 8, SIZE // 8)


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm")
    store_path = root / "reach.zarr"
    source = MujocoSource(
        "reach", skill=1.0, cameras=["front"], size=SIZE, depth=False, segmentation=False
    )
    record(source, store_path, episodes=3, seed=0)
    source.close()
    torch.manual_seed(0)
    tok = VideoTokenizer(
        TokenizerConfig(width=16, width_low=16, enc_blocks=(1, 1), dec_blocks=(1, 1))
    )
    tok_dir = zoo.save_model(
        root / "tok", "tokenizer", tok.cfg.to_dict(), tok.state_dict(), dtype="fp32"
    )
    tokenize_store(store_path, tok_dir)
    return store_path, tok_dir


def test_sequences_align_actions_and_labels(tokenized):
    store_path, tok_dir = tokenized
    store = EpisodeStore.open(store_path)
    a_stats, s_stats = dataset_stats([store])
    seqs = load_sequences(
        [store], zoo.load_model(tok_dir).weights_hash, ["front"], a_stats, s_stats
    )
    assert len(seqs.latents) == 3  # episodes 0-2 train (every 10th is held out)
    ep = store.read_episode(1)
    n = seqs.latents[1].shape[0]
    assert n == 1 + (len(ep) - 1) // CHUNK and seqs.latents[1].shape[1:] == LATENT
    # chunk j >= 1 holds the normalised actions taken after frames 4(j-1) .. 4j-1
    np.testing.assert_allclose(seqs.chunks[1][2], a_stats.normalize(ep.action[4:8]), rtol=1e-5)
    assert not seqs.chunks[1][0].any()
    # labels of latent frame j are those of video frame 4j
    np.testing.assert_allclose(
        s_stats.denormalize(seqs.state[1][3]), ep.state[12], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(
        seqs.reached[1][1:], (ep.reward[CHUNK - 1 : (n - 1) * CHUNK : CHUNK] > 0.5)
    )
    loader = LatentClipLoader(seqs, frames=3, batch_size=2, seed=1)
    b = loader.batch(0)
    assert b["latents"].shape == (2, 3, *LATENT) and b["actions"].shape == (2, 3, CHUNK, 2)
    # every chunk is kept (the next-action head learns the chunk after each context frame);
    # the model conditions only its target frames on theirs
    torch.testing.assert_close(b["actions"], b["actions_all"])
    assert b["actions"][:, 1:].abs().sum() > 0
    wm = build_model("cpu-small", 2, seqs.state[0].shape[1], LATENT, **TINY_DIT)
    tb = wm.wm.token_batch({k: b[k] for k in ("latents", "n_context", "actions", "state")})
    assert torch.equal(tb.has_action, tb.is_target)  # context frames: no action
    random_ctx = LatentClipLoader(seqs, frames=3, batch_size=2, n_context=None, seed=1)
    lengths = {random_ctx.batch(k)["latents"].shape[1] for k in range(8)}
    assert lengths == {2, 3}  # 1 or 2 context frames + the one frame after them
    again = LatentClipLoader(seqs, frames=3, batch_size=2, seed=1)
    torch.testing.assert_close(again.batch(5)["latents"], loader.batch(5)["latents"])


def test_missing_latent_cache_is_a_clear_error(tokenized):
    store_path, _ = tokenized
    with pytest.raises(StoreError, match="no latent cache for this tokenizer"):
        latent_cache(EpisodeStore.open(store_path), "0123456789abcdef")


def test_train_export_and_load(tokenized, tmp_path):
    store_path, tok_dir = tokenized
    run = tmp_path / "run"
    summary = train_world_model(
        [store_path],
        tok_dir,
        run,
        steps=3,
        batch_size=2,
        progress=False,
        checkpoint_every=3,
        dit_overrides=TINY_DIT,
    )
    assert summary["step"] == 3 if "step" in summary else True
    model_dir = export_world_model(run, tmp_path / "wm")
    (model_dir / "card.md").write_text("# wm\nwhat it is")
    assert export_world_model(run, model_dir) == model_dir  # re-export keeps the card
    assert (model_dir / "card.md").read_text() == "# wm\nwhat it is"
    loaded = zoo.load_model(model_dir)
    assert loaded.kind == "world-model-diffusion"
    assert loaded.config["tokenizer_hash"] == zoo.load_model(tok_dir).weights_hash
    stats = json.loads((model_dir / "stats.json").read_text())
    assert len(stats["action_mean"]) == 2 and len(stats["state_names"]) == len(stats["state_mean"])
    wm = loaded.module
    first = torch.zeros(1, 1, *LATENT)
    s0 = torch.zeros(1, wm.cfg.probe.state_dim)
    with pytest.raises(ConfigError, match="states"):
        wm.prefill(first)
    cache, next_action = wm.prefill(first, states=s0[:, None])
    assert next_action.shape == (1, CHUNK, 2)
    assert wm.cfg.wm.residual  # the trained model predicts the change from the last frame
    s1 = wm.step_state(s0, torch.zeros(1, CHUNK, 2))
    prob, reward = wm.read_state(s1)
    assert s1.shape == s0.shape and prob.shape == reward.shape == (1,)
    with pytest.raises(ConfigError, match="previous"):
        wm.next_frame(cache, torch.zeros(1, CHUNK, 2), 1, LATENT, steps=2, state=s1)
    z = wm.next_frame(cache, torch.zeros(1, CHUNK, 2), 1, LATENT, steps=2, previous=first, state=s1)
    assert z.shape == (1, 1, *LATENT) and torch.isfinite(z).all()


@pytest.fixture(scope="module")
def tiny_world_model(tokenized, tmp_path_factory):
    store_path, tok_dir = tokenized
    return make_tiny_world_model(store_path, tok_dir, tmp_path_factory.mktemp("wm-model"))


def test_world_model_env_contract(tiny_world_model):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import cosmos_sim  # noqa: F401

    env = gym.make("cosmos_sim/WorldModel-v0", model=str(tiny_world_model), sampler_steps=2)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=4)
    sim = gym.make("cosmos_sim/Reach-v0", size=SIZE)
    sim_obs, _ = sim.reset(seed=4)
    np.testing.assert_array_equal(obs["front"], sim_obs["front"])  # the same real first frame
    np.testing.assert_allclose(obs["state"], sim_obs["state"])
    steps = 0
    a = np.zeros(env.action_space.shape, np.float32)
    while True:
        obs, reward, terminated, truncated, info = env.step(a)
        steps += 1
        assert info["frames"]["front"].shape == (4, SIZE, SIZE, 3)
        assert 0.0 <= info["success_probability"] <= 1.0
        assert info["next_action"].shape == (4, 2)
        if terminated or truncated:
            break
    assert steps == 10  # reach: 40 frames = 10 chunks
    first = [env.reset(seed=7)[0]["front"]] + [env.step(a)[0]["front"] for _ in range(2)]
    again = [env.reset(seed=7)[0]["front"]] + [env.step(a)[0]["front"] for _ in range(2)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))  # reset(seed) is reproducible


def test_world_model_vector_env_is_one_batch(tiny_world_model):
    import gymnasium as gym

    import cosmos_sim  # noqa: F401

    envs = gym.make_vec(
        "cosmos_sim/WorldModel-v0", num_envs=3, model=str(tiny_world_model), sampler_steps=1
    )
    obs, _ = envs.reset(seed=[1, 2, 3])
    assert obs["front"].shape == (3, SIZE, SIZE, 3)
    obs, reward, terminated, truncated, info = envs.step(
        np.zeros(envs.action_space.shape, np.float32)
    )
    assert obs["state"].shape[0] == 3 and reward.shape == (3,)
    assert info["frames"]["front"].shape == (3, 4, SIZE, SIZE, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "push"}, "trained on another task"),
        ({"cameras": "top"}, "one camera at a time"),
        ({"family": "ar"}, "only diffusion"),
    ],
)
def test_world_model_env_refuses_bad_setups(tiny_world_model, kwargs, message):
    from cosmos_sim.envs.world_model_env import WorldModelEnv
    from cosmos_sim.errors import CosmosSimError

    with pytest.raises(CosmosSimError, match=message):
        WorldModelEnv(model=str(tiny_world_model), **kwargs)


def test_unknown_model_is_a_clear_error(tmp_path):
    from cosmos_sim.envs.world_model_env import WorldModelEnv
    from cosmos_sim.errors import ModelError

    with pytest.raises(ModelError, match="not a model directory"):
        WorldModelEnv(model=str(tmp_path / "nope"))


def test_cli_train_dry_run_and_rollout(tokenized, tiny_world_model, tmp_path):
    import os
    import subprocess
    import sys

    from cosmos_sim.viz.rerun_log import entity_paths

    store_path, tok_dir = tokenized
    env = {**os.environ, "MUJOCO_GL": "egl"}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "cosmos_sim.cli", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
        )

    r = cli(
        "train",
        "world-model",
        "--data",
        store_path,
        "--tokenizer",
        tok_dir,
        "--dry-run",
        "--out",
        tmp_path / "run",
    )
    assert r.returncode == 0, r.stderr
    assert "step 2" in r.stdout
    r = cli(
        "train",
        "world-model",
        "--data",
        store_path,
        "--tokenizer",
        tok_dir,
        "--variant",
        "dance",
        "--out",
        tmp_path / "x",
    )
    assert r.returncode == 2 and "unknown variant" in r.stderr
    rrd = tmp_path / "rollout.rrd"
    r = cli(
        "rollout", "--model", tiny_world_model, "--episode", 3, "--out", rrd, "--sampler-steps", 1
    )
    assert r.returncode == 0, r.stderr
    assert rrd.with_suffix(".mp4").stat().st_size > 1000
    assert {"/rollout/front/simulator", "/rollout/front/world_model"} <= set(entity_paths(rrd))


def test_stable_baselines3_ppo_learns_on_the_world_model_env(tiny_world_model):
    """PPO runs on the WM env as it is: Dict observations, (chunk, A) Box actions (rl extra)."""
    sb3 = pytest.importorskip("stable_baselines3")
    import gymnasium as gym

    import cosmos_sim  # noqa: F401

    env = gym.make("cosmos_sim/WorldModel-v0", model=str(tiny_world_model), sampler_steps=1)
    model = sb3.PPO(
        "MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu"
    )
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == env.action_space.shape


def test_evaluation_runs_every_episode_of_a_policy_in_one_batch(tiny_world_model):
    import gymnasium as gym

    import cosmos_sim  # noqa: F401
    from cosmos_sim.evaluation.policies import load_policy
    from cosmos_sim.evaluation.policy_eval import evaluate

    seeds = 3
    wm = gym.make_vec(
        "cosmos_sim/WorldModel-v0", num_envs=seeds, model=str(tiny_world_model), sampler_steps=1
    )
    sim_env = gym.make("cosmos_sim/Reach-v0", size=SIZE)
    sim = sim_env.unwrapped
    policies = [
        load_policy(
            p, task=sim.task, state_names=sim.sim.state_names, action_space=sim_env.action_space
        )
        for p in ("expert@1.0", "random")
    ]
    run = evaluate("reach", sim_env, wm, policies, episodes=seeds, n_boot=20, keep_frames=1)
    for p in run.policies:
        assert p.candidate.success.shape == (seeds,)
        assert p.candidate.success_probability.shape == (seeds,)
        assert p.candidate.frames[0]["front"].shape == (40, SIZE, SIZE, 3)  # 10 steps × 4 frames
    assert run.brier is not None and 0.0 <= run.brier <= 1.0


def test_post_training_starts_from_a_model_and_self_forcing_trains(tokenized, tmp_path):
    """`train world-model --init M --self-forcing 1`: the run starts from M's weights (its
    first checkpoint is M after one step) and every step conditions on a generated frame."""
    from cosmos_sim.training.world_model_task import TASK_STATE_MODULES, init_from

    store_path, tok_dir = tokenized
    base = make_tiny_world_model(store_path, tok_dir, tmp_path / "base")
    loaded = zoo.load_model(base)
    model = build_model("cpu-small", 2, len(loaded.stats["state_mean"]), LATENT, 0.5, **TINY_DIT)
    assert init_from(model, base) == []
    for k, v in loaded.module.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v.float())
    # an instruction model can start from the action model: only its text layers are new
    instructed = build_model(
        "cpu-small", 2, len(loaded.stats["state_mean"]), LATENT, 0.5, **TINY_DIT, text_vocab=64
    )
    new = init_from(instructed, base)
    assert new and all("text" in k or "cross" in k or k.startswith("readout.") for k in new), new
    # another task's state (3 more dims): its state modules start anew, the DiT loads
    other = build_model(
        "cpu-small", 2, len(loaded.stats["state_mean"]) + 3, LATENT, 0.5, **TINY_DIT
    )
    fresh = init_from(other, base)
    assert fresh and all(k.startswith(TASK_STATE_MODULES) for k in fresh)
    wider = build_model("cpu-small", 2, len(loaded.stats["state_mean"]), LATENT, 0.5, dim=64)
    with pytest.raises(ConfigError, match="another architecture"):
        init_from(wider, base)
    summary = train_world_model(
        [store_path],
        tok_dir,
        tmp_path / "post",
        steps=2,
        batch_size=2,
        progress=False,
        checkpoint_every=2,
        dit_overrides=TINY_DIT,
        self_forcing=1.0,
        init=base,
    )
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    exported = zoo.load_model(export_world_model(tmp_path / "post", tmp_path / "post-wm"))
    assert exported.config["config"]["wm"]["self_forcing"] == 1.0


def test_state_sequences_match_the_latent_sequences_controls(tokenized):
    """Stage 2 reads actions, labels and state without latents: the same rows as the DiT's."""
    store_path, tok_dir = tokenized
    store = EpisodeStore.open(store_path)
    a_stats, s_stats = dataset_stats([store])
    full = load_sequences(
        [store], zoo.load_model(tok_dir).weights_hash, ["front"], a_stats, s_stats
    )
    light = load_state_sequences([store], a_stats, s_stats)
    assert not light.latents and [k[:2] for k in light.key] == [k[:2] for k in full.key]
    for name in ("chunks", "reached", "reward", "state"):
        for a, b in zip(getattr(light, name), getattr(full, name), strict=True):
            np.testing.assert_array_equal(a, b)
    wrong = StateStats(np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(StoreError, match="proprio state"):
        load_state_sequences([store], a_stats, wrong)


def test_state_heads_refuse_a_store_of_another_task(tokenized, tmp_path):
    from cosmos_sim.training.state_heads import refine_exported

    store_path, tok_dir = tokenized
    model_dir = make_tiny_world_model(store_path, tok_dir, tmp_path)
    other = tmp_path / "push.zarr"
    source = MujocoSource(
        "push", skill=1.0, cameras=["front"], size=16, depth=False, segmentation=False
    )
    record(source, other, episodes=1, seed=0)
    source.close()
    before = (model_dir / "weights.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="push.*reach"):
        refine_exported(model_dir, [other], steps=2, unroll=2)
    assert (model_dir / "weights.safetensors").read_bytes() == before  # nothing written


def test_state_heads_refit_changes_only_the_state_heads(tokenized, tmp_path):
    """Stage 2 (`cosmos-sim train state-heads`): the dynamics and readout heads are refit on
    every window of the store and saved back; every other weight is unchanged."""
    from cosmos_sim.training.state_heads import refine_exported

    store_path, tok_dir = tokenized
    model_dir = make_tiny_world_model(store_path, tok_dir, tmp_path)
    before = zoo.load_model(model_dir).module.state_dict()
    result = refine_exported(model_dir, [store_path], steps=20, unroll=2)
    assert result["windows"] > 0 and result["steps"] == 20
    after = zoo.load_model(model_dir)
    assert after.config["state_heads"]["unroll"] == 2
    changed = {k for k, v in after.module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("dynamics.", "readout.")) for k in changed)
    # --hidden rebuilds both heads wider; the rest of the model loads unchanged
    refine_exported(model_dir, [store_path], steps=5, unroll=2, hidden=48)
    wide = zoo.load_model(model_dir)
    assert wide.config["config"]["dynamics_hidden"] == 48
    assert wide.module.dynamics.net[0].out_features == 48
    assert wide.module.readout.net[0].out_features == 48
    for k, v in wide.module.state_dict().items():
        if not k.startswith(("dynamics.", "readout.")):
            assert torch.equal(v, before[k]), k
    # --substeps: the dynamics steps once per control action, learning every recorded frame
    result = refine_exported(model_dir, [store_path], steps=200, unroll=2, substeps=True)
    sub = zoo.load_model(model_dir)
    assert sub.config["config"]["dynamics_substeps"] and sub.module.dynamics.substeps
    # the rebuilt head predicts each dimension's change in units of its recorded change
    # per control step (delta-weighted, the default), saved in the config
    scale = sub.config["config"]["dynamics_delta_scale"]
    assert len(scale) == sub.module.cfg.probe.state_dim and min(scale) >= DELTA_FLOOR
    assert sub.module.dynamics.delta_scale.tolist() == pytest.approx(scale)
    assert result["delta_weighted"] and sub.config["state_heads"]["delta_weighted"]
    s0 = torch.zeros(3, sub.module.cfg.probe.state_dim)
    chunk = torch.randn(3, CHUNK, 2)
    with torch.no_grad():
        path = sub.module.dynamics(s0, chunk, frames=True)
        assert path.shape == (3, CHUNK, s0.shape[1])
        torch.testing.assert_close(path[:, -1], sub.module.step_state(s0, chunk))
        # a control step only moves what follows it: the first frame ignores later actions
        later = chunk.clone()
        later[:, 1:] = -later[:, 1:]
        torch.testing.assert_close(sub.module.dynamics(s0, later, frames=True)[:, 0], path[:, 0])
    # it learned the store's frames: the first frame after a chunk's first action is closer
    # to the recorded one than "nothing moves" is
    store = EpisodeStore.open(store_path)
    ep = store.read_episode(1)
    mean, std = (np.asarray(sub.stats[k], np.float32) for k in ("state_mean", "state_std"))
    a_mean, a_std = (np.asarray(sub.stats[k], np.float32) for k in ("action_mean", "action_std"))
    x = torch.from_numpy((ep.state[8:9] - mean) / std)
    ch = torch.from_numpy((ep.action[8:12] - a_mean) / a_std)[None]
    with torch.no_grad():
        pred = sub.module.dynamics(x, ch, frames=True)[0].numpy() * std + mean
    err = np.abs(pred - ep.state[9:13]).mean()
    assert err < np.abs(ep.state[8:9] - ep.state[9:13]).mean()
    # --no-delta-weighted with --hidden: a fresh head on plain MSE, without a scale
    refine_exported(model_dir, [store_path], steps=5, unroll=2, hidden=48, delta_weighted=False)
    plain = zoo.load_model(model_dir)
    assert "dynamics_delta_scale" not in plain.config["config"]
    assert plain.module.dynamics.delta_scale.tolist() == [1.0] * len(scale)


def test_state_heads_report_the_error_at_a_long_horizon(tokenized, tmp_path):
    """Stage 2 scores the held-out split after its training unroll and after ``horizon``
    chunks, the figure recipes with different unrolls are compared by; training lowers both."""
    from cosmos_sim.training.state_heads import fit_state_heads, open_task_stores

    store_path, tok_dir = tokenized
    loaded = zoo.load_model(make_tiny_world_model(store_path, tok_dir, tmp_path))
    stores, a_stats, s_stats = open_task_stores(loaded, [store_path])
    seqs = load_state_sequences(stores, a_stats, s_stats, "train")
    result = fit_state_heads(loaded.module, seqs, seqs, steps=150, unroll=2, horizon=5)
    assert result["horizon"] == 5
    state_dim = loaded.module.cfg.probe.state_dim
    for key in ("unroll", "horizon"):
        before = np.mean(result[f"held_out_{key}_error_before"])
        after = np.mean(result[f"held_out_{key}_error_after"])
        assert len(result[f"held_out_{key}_error_after"]) == state_dim
        assert after < before, key
    # the horizon is capped by the shortest episode (40 frames, 4 per chunk: 9 chunks)
    capped = fit_state_heads(loaded.module, seqs, seqs, steps=1, unroll=2, horizon=100)
    assert capped["horizon"] == min(len(s) for s in seqs.state) - 1


def test_train_state_heads_cli_rebuilds_delta_weighted_heads(tokenized, tmp_path):
    """`cosmos-sim train state-heads --substeps --hidden H`: fresh delta-weighted heads saved
    in place; --no-delta-weighted builds them without a delta scale."""
    import subprocess
    import sys

    store_path, tok_dir = tokenized
    model_dir = make_tiny_world_model(store_path, tok_dir, tmp_path)
    args = [sys.executable, "-m", "cosmos_sim.cli", "train", "state-heads", "--model", model_dir]
    args += ["--data", store_path, "--steps", "30", "--unroll", "2", "--substeps"]
    r = subprocess.run([*map(str, args), "--hidden", "40"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "refit" in r.stdout and "× 30 steps" in r.stdout
    config = zoo.load_model(model_dir).config
    assert config["config"]["dynamics_hidden"] == 40
    assert len(config["config"]["dynamics_delta_scale"]) == config["config"]["probe"]["state_dim"]
    assert config["state_heads"]["delta_weighted"]
    r = subprocess.run(
        [*map(str, args), "--hidden", "40", "--no-delta-weighted"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    config = zoo.load_model(model_dir).config
    assert "dynamics_delta_scale" not in config["config"]
    assert not config["state_heads"]["delta_weighted"]


def test_world_model_takes_a_decoder_only_tokenizer_upgrade_and_refuses_another_encoder(
    tokenized, tmp_path
):
    import shutil

    from cosmos_sim.envs.loaded_world_model import LoadedWorldModel
    from cosmos_sim.errors import ModelError
    from cosmos_sim.training.tokenizer_task import export_tokenizer, train_tokenizer

    store_path, tok_dir = tokenized
    tok = shutil.copytree(tok_dir, tmp_path / "tok")  # same weights: the store's cache fits
    model_dir = make_tiny_world_model(store_path, tok, tmp_path)
    z = torch.randn(1, 2, *LATENT)
    before = LoadedWorldModel.load(str(model_dir)).tokenizer.decode(z)
    train_tokenizer(
        [store_path], "cv", "cpu-small", tmp_path / "dec", steps=2, batch_size=2,
        progress=False, checkpoint_every=2, lr=1e-2, init_from=tok, decoder_only=True,
    )  # fmt: skip
    export_tokenizer(tmp_path / "dec", tok)  # the tokenizer directory upgraded in place
    after = LoadedWorldModel.load(str(model_dir)).tokenizer.decode(z)
    assert (after - before).abs().max() > 1e-4  # the model now decodes with the new decoder
    other = zoo.load_model(tok).module
    with torch.no_grad():
        other.encoder.stem.weight.mul_(1.5)
    zoo.save_model(tok, "tokenizer", other.cfg.to_dict(), other.state_dict(), dtype="fp32")
    with pytest.raises(ModelError, match="different tokenizer") as e:
        LoadedWorldModel.load(str(model_dir))
    assert "\n" not in str(e.value) and "config.toml: tokenizer_hash" in str(e.value)


def test_world_model_decodes_with_a_fast_decoder_of_its_latents_only(tokenized, tmp_path):
    import shutil

    from cosmos_sim.envs.loaded_world_model import LoadedWorldModel
    from cosmos_sim.errors import ModelError
    from cosmos_sim.training.tokenizer_task import export_tokenizer, train_tokenizer

    store_path, tok_dir = tokenized
    tok = shutil.copytree(tok_dir, tmp_path / "tok")
    model_dir = make_tiny_world_model(store_path, tok, tmp_path)
    train_tokenizer(
        [store_path], "cv", "cpu-small", tmp_path / "dec", steps=2, batch_size=2,
        progress=False, checkpoint_every=2, lr=1e-2, init_from=tok, decoder_only=True,
        decoder_sizes={"dec_width": 8, "dec_width_low": 8},
    )  # fmt: skip
    fast = export_tokenizer(tmp_path / "dec", tmp_path / "fast")
    wm = LoadedWorldModel.load(str(model_dir), decoder=str(fast))
    assert wm.tokenizer.cfg.decoder_widths == (8, 8)
    z = torch.randn(1, 2, *LATENT)
    own = LoadedWorldModel.load(str(model_dir)).tokenizer
    assert wm.tokenizer.decode(z).shape == own.decode(z).shape
    other = zoo.load_model(tok).module
    with torch.no_grad():
        other.encoder.stem.weight.mul_(1.5)
    zoo.save_model(
        tmp_path / "other", "tokenizer", other.cfg.to_dict(), other.state_dict(), dtype="fp32"
    )
    with pytest.raises(ModelError, match="not for this world model's latents") as e:
        LoadedWorldModel.load(str(model_dir), decoder=str(tmp_path / "other"))
    assert "\n" not in str(e.value) and "other/config.toml: latents_of" in str(e.value)
