"""Stage 2 of world-model training: the proprio-state heads alone, on every transition.

The DiT's training clips are a few latent frames each, so in stage 1 the state dynamics
head sees one- to three-chunk unrolls of 16 clips per step. It is a small MLP: here it
trains on *every* window of the training episodes, unrolled over ``unroll`` chunks from
the window's first recorded state (with a little input noise), which is what keeps its
closed-loop error small over a whole episode in the env; the readout (success, reward)
trains on every recorded state. Minutes on a CPU; the DiT is untouched.

    cosmos-sim train state-heads --model models/M --data STORE [--data MORE]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from cosmos_sim.errors import ConfigError, StoreError
from cosmos_sim.models import zoo

# Stage 2 weighs each state dimension's error by 1 / (its typical change per step), floored
# here (normalised units): positions count as much as the velocities that move them.
DELTA_FLOOR = 0.01


def _episodes(seqs) -> list[int]:
    """One sequence per (store, episode): camera sequences of an episode repeat its states."""
    seen, keep = set(), []
    for i, (store, episode, _) in enumerate(seqs.key):
        if (store, episode) not in seen:
            seen.add((store, episode))
            keep.append(i)
    return keep


def _windows(seqs, keep: list[int], length: int, with_frames: bool = False):
    """(N, length, S) states, (N, length, c, A) chunks of every window of every episode,
    and with ``with_frames`` (N, length − 1, c, S) the states of every frame within its
    chunks (else, or when the sequences carry no per-frame states, None)."""
    states, chunks, frames = [], [], []
    for i in keep:
        s, c = seqs.state[i], seqs.chunks[i]
        per_frame = seqs.state_frames[i] if with_frames and seqs.state_frames else None
        n_chunk = c.shape[1]
        for start in range(max(0, len(s) - length + 1)):
            states.append(s[start : start + length])
            chunks.append(c[start : start + length])
            if per_frame is not None:  # chunk j leads from frame c(j−1) to frames c(j−1)+1 … cj
                f = per_frame[n_chunk * start + 1 : n_chunk * (start + length - 1) + 1]
                frames.append(f.reshape(length - 1, n_chunk, -1))
    if not states:
        raise ConfigError("episodes shorter than one unroll window", field="unroll", found=length)
    return (
        torch.from_numpy(np.stack(states)),
        torch.from_numpy(np.stack(chunks)),
        torch.from_numpy(np.stack(frames)) if frames else None,
    )


def delta_std(seqs, keep: list[int], substeps: bool, floor: float = DELTA_FLOOR) -> torch.Tensor:
    """(S,) std of one dynamics step's change of each normalised state dimension (one
    control step with ``substeps``, one chunk without), at least ``floor`` (a goal that never
    moves would otherwise weigh without bound)."""
    paths = seqs.state_frames if substeps and seqs.state_frames else seqs.state
    steps = np.concatenate([np.diff(paths[i], axis=0) for i in keep])
    return torch.from_numpy(np.maximum(steps.std(0), floor)).float()


def unroll_error(model, states: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
    """(T−1, S) mean absolute error (normalised units) of the dynamics head unrolled from
    each window's first state with the recorded chunks (chunk j leads into frame j)."""
    with torch.no_grad():
        s, errs = states[:, 0], []
        for j in range(1, states.shape[1]):
            s = model.dynamics(s, chunks[:, j])
            errs.append((s - states[:, j]).abs().mean(0))
    return torch.stack(errs)


def _rows_equal(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(M,) bool: which 0-padded rows (M, W) hold exactly the words ``ids`` (L,)."""
    if len(ids) > rows.shape[1]:
        return torch.zeros(len(rows), dtype=torch.bool)
    return (rows == F.pad(ids, (0, rows.shape[1] - len(ids)))).all(1)


def instruction_relabel(task, state_names, state_stats, vocab: int, encoder: str = "hashed"):
    """For an instruction task whose state holds each rule's point and region (``ee.x``,
    ``target_red.x``, …): a function from normalised states (M, S) to, per instruction,
    its hashed words (L,) and whether each state satisfies its rule (M,). None when the
    state does not say (then only the recorded labels train the success head)."""
    from cosmos_sim.training.world_model_variants import instruction_ids

    names = list(state_names)
    rules = []
    for instruction in task.instructions:
        rule = instruction.success
        cols = [
            [names.index(f"{site}.{axis}") for axis in rule.axes if f"{site}.{axis}" in names]
            for site in (rule.point, rule.region)
        ]
        if any(len(c) != len(rule.axes) for c in cols):
            return None
        ids = torch.from_numpy(instruction_ids(instruction.text, vocab, encoder))
        rules.append((ids, cols, rule.radius))
    mean = torch.as_tensor(state_stats.mean)
    std = torch.as_tensor(state_stats.std)

    def relabel(states: torch.Tensor):
        metres = states * std + mean
        return [
            (ids, (torch.linalg.norm(metres[:, p] - metres[:, r], dim=1) < radius).float())
            for ids, (p, r), radius in rules
        ]

    return relabel


def _readout_data(train, keep: list[int], relabel):
    """Every recorded state with its labels for the success head: states (M, S), their
    episode's instruction ids (M, L) or None, reached (M,), reward (M,), reward weight (M,)."""
    all_states = torch.from_numpy(np.concatenate([train.state[i] for i in keep]))
    reached = torch.from_numpy(np.concatenate([train.reached[i] for i in keep]))
    reward = torch.from_numpy(np.concatenate([train.reward[i] for i in keep]))
    all_ids = None  # instruction models: each state's episode instruction, for the readout
    reward_weight = torch.ones(len(all_states))
    if train.instruction_ids:
        from cosmos_sim.training.world_model_variants import pad_ids

        counts = torch.tensor([len(train.state[i]) for i in keep])
        all_ids = pad_ids([train.instruction_ids[i] for i in keep]).repeat_interleave(counts, 0)
        if relabel is not None:
            # Hindsight: every state under every *other* instruction, labelled by that
            # instruction's rule (the recorded episodes hardly ever end at the wrong target,
            # so the head sees few examples of that failing). Their reward is unknown
            # (shaped by the episode's own instruction): weight 0.
            rows_ids, rows_states, rows_reached = [all_ids], [all_states], [reached]
            for ids, labels in relabel(all_states):
                other = ~_rows_equal(all_ids, ids)
                rows_ids.append(ids[None].expand(int(other.sum()), -1))
                rows_states.append(all_states[other])
                rows_reached.append(labels[other])
            width = max(x.shape[1] for x in rows_ids)
            all_ids = torch.cat([F.pad(x, (0, width - x.shape[1])) for x in rows_ids])
            all_states, reached = torch.cat(rows_states), torch.cat(rows_reached)
            n_extra = len(all_states) - len(reward)
            reward = torch.cat([reward, torch.zeros(n_extra)])
            reward_weight = torch.cat([reward_weight, torch.zeros(n_extra)])
    return all_states, all_ids, reached, reward, reward_weight


def fit_state_heads(
    model,
    train,
    held_out=None,
    *,
    steps: int = 5000,
    unroll: int = 4,
    batch_size: int = 256,
    lr: float = 1e-3,
    noise: float = 0.02,
    seed: int = 0,
    relabel=None,
    horizon: int = 16,
    progress: bool = False,
    delta_weighted: bool = True,
) -> dict:
    """Train ``model.dynamics`` and ``model.readout`` (an ActionWorldModel with proprio state)
    on the ``train`` Sequences; returns the held-out unroll error before and after, after
    ``unroll`` chunks and after ``horizon`` chunks (or the longest the episodes allow: the
    figure to compare recipes with different unrolls by). ``relabel`` (instruction models,
    :func:`instruction_relabel`) adds every state under the task's other instructions to
    the success head's data. ``delta_weighted``: each dimension's error weighs 1 / its
    typical change per step (:func:`delta_std`, mean weight 1); else all weigh the same,
    and the velocities, whose changes are ~60× the block's, decide the fit."""
    if not model.has_state:
        raise ConfigError("the model has no proprio-state heads", field="dynamics_hidden")
    keep = _episodes(train)
    # a substep head learns every frame; a per-chunk head the latent frames only
    states, chunks, frames = _windows(train, keep, unroll + 1, model.dynamics.substeps)
    weights = torch.ones(states.shape[-1])
    if delta_weighted:
        weights = 1 / delta_std(train, keep, model.dynamics.substeps)
        weights = weights / weights.mean()
    all_states, all_ids, reached, reward, reward_weight = _readout_data(train, keep, relabel)
    test = long = None
    if held_out is not None:
        held_keep = _episodes(held_out)
        test = _windows(held_out, held_keep, unroll + 1)[:2]
        longest = min(len(held_out.state[i]) for i in held_keep) - 1
        long = _windows(held_out, held_keep, min(horizon, longest) + 1)[:2]
    before = None if test is None else (unroll_error(model, *test), unroll_error(model, *long))
    params = [*model.dynamics.parameters(), *model.readout.parameters()]
    for p in params:  # a model loaded for inference has its gradients switched off
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.enable_grad():
        _fit(
            model,
            opt,
            _Data(
                states, chunks, frames, weights, all_states, all_ids, reached, reward, reward_weight
            ),
            steps,
            unroll,
            batch_size,
            lr,
            noise,
            g,
            progress,
        )
    model.eval()
    out = {
        "steps": steps,
        "unroll": unroll,
        "windows": len(states),
        "delta_weighted": delta_weighted,
    }
    if test is not None:
        after = unroll_error(model, *test), unroll_error(model, *long)
        out["held_out_unroll_error_before"] = before[0][-1].tolist()
        out["held_out_unroll_error_after"] = after[0][-1].tolist()
        out["horizon"] = len(before[1])
        out["held_out_horizon_error_before"] = before[1][-1].tolist()
        out["held_out_horizon_error_after"] = after[1][-1].tolist()
    return out


@dataclass
class _Data:
    """Stage 2's training data: unroll windows (states at the latent frames, chunks, and
    optionally every frame's state), and every state with its labels for the readout."""

    states: torch.Tensor  # (N, U + 1, S)
    chunks: torch.Tensor  # (N, U + 1, c, A)
    frames: torch.Tensor | None  # (N, U, c, S) substep heads: every frame's state
    weights: torch.Tensor  # (S,) each state dimension's weight in the dynamics loss
    all_states: torch.Tensor  # (M, S)
    all_ids: torch.Tensor | None  # (M, L) instruction models: each state's instruction
    reached: torch.Tensor  # (M,)
    reward: torch.Tensor  # (M,)
    reward_weight: torch.Tensor  # (M,) 0 where the reward is unknown (hindsight rows)


def _fit(model, opt, data: _Data, steps, unroll, batch_size, lr, noise, g, progress):
    with Progress(disable=not progress) as bar:
        task = bar.add_task("state heads", total=steps)
        for step in range(steps):
            loss = _fit_step(model, opt, data, step, steps, unroll, batch_size, lr, noise, g)
            if step % 50 == 0 or step == steps - 1:
                bar.update(task, completed=step + 1, description=f"state heads loss {loss:.4f}")


def _fit_step(model, opt, data: _Data, step, steps, unroll, batch_size, lr, noise, g) -> float:
    """One optimiser step of both heads at ``step`` of ``steps`` (cosine lr); the dynamics loss."""
    for group in opt.param_groups:  # cosine to 10 %
        group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    i = torch.randint(len(data.states), (batch_size,), generator=g)
    st, ch = data.states[i], data.chunks[i]
    s = st[:, 0] + noise * torch.randn(st[:, 0].shape, generator=g)
    loss_dyn = 0.0
    for j in range(1, unroll + 1):
        if data.frames is None:
            s = model.dynamics(s, ch[:, j])
            loss_dyn = loss_dyn + ((s - st[:, j]) ** 2 * data.weights).mean() / unroll
        else:  # every control step's state is a target
            path = model.dynamics(s, ch[:, j], frames=True)
            loss_dyn = (
                loss_dyn + ((path - data.frames[i, j - 1]) ** 2 * data.weights).mean() / unroll
            )
            s = path[:, -1]
    k = torch.randint(len(data.all_states), (batch_size,), generator=g)
    ids = None if data.all_ids is None else data.all_ids[k]
    logit, rew = model.readout(data.all_states[k], ids)
    w = data.reward_weight[k]
    loss_read = F.binary_cross_entropy_with_logits(logit, data.reached[k]) + (
        w * (rew - data.reward[k]) ** 2
    ).sum() / w.sum().clamp_min(1.0)
    opt.zero_grad(set_to_none=True)
    (loss_dyn + loss_read).backward()
    opt.step()
    return float(loss_dyn.detach())


def rebuild_state_heads(
    model, hidden: int, substeps: bool = False, delta_scale: list[float] | None = None
) -> None:
    """Replace ``model``'s dynamics and readout heads by fresh ones ``hidden`` wide (the
    dynamics stepping per control action with ``substeps``, predicting each dimension's
    change in units of ``delta_scale``)."""
    from cosmos_sim.models.heads import StateDynamics, StateReadout

    if hidden < 1:
        raise ConfigError("the state heads need a width ≥ 1", field="hidden", found=hidden)
    d, state_dim = model.cfg.wm.dit, model.cfg.probe.state_dim
    model.dynamics = StateDynamics(
        state_dim, d.action_chunk, d.action_dim, hidden, substeps, delta_scale
    )
    model.readout = StateReadout(state_dim, hidden, d.text_vocab)
    model.cfg = replace(
        model.cfg,
        dynamics_hidden=hidden,
        dynamics_substeps=substeps,
        dynamics_delta_scale=delta_scale,
    )


def open_task_stores(loaded, data: list[Path]):
    """The stores ``data`` of an exported world model's task (another task's: a clear error)
    and the model's action and state normalisation: what a refit of its heads reads."""
    from cosmos_sim.conditioning.actions import ActionStats
    from cosmos_sim.data.store import EpisodeStore
    from cosmos_sim.training.world_model_task import StateStats

    stats, task = loaded.stats or {}, loaded.config["task"]
    stores = [EpisodeStore.open(p) for p in data]
    for store in stores:
        if store.spec.source != task:
            raise ConfigError(
                f"a store of task {store.spec.source!r} for a {task!r} model",
                path=store.path,
                field="source",
            )
    a_stats = ActionStats.load(Path(loaded.path) / "stats.json")
    s_stats = StateStats(
        np.asarray(stats["state_mean"], np.float32), np.asarray(stats["state_std"], np.float32)
    )
    return stores, a_stats, s_stats


def refine_exported(
    model_dir: Path,
    data: list[Path],
    steps: int = 5000,
    unroll: int = 4,
    hidden: int | None = None,
    substeps: bool | None = None,
    lr: float = 1e-3,
    batch_size: int = 256,
    progress: bool = False,
    delta_weighted: bool = True,
) -> dict:
    """Stage 2 on an exported world model: fit its state heads on the stores of its task
    (train split; the held-out split is scored), and save it back in place.

    ``hidden`` / ``substeps`` (either given): rebuild both heads this wide / stepping per
    control action (fresh weights) instead of refining them — the stores can hold far more episodes than
    the DiT was trained on, and wider heads use them; a substep head learns every frame.
    ``delta_weighted`` (:func:`fit_state_heads`): a rebuilt dynamics head also predicts each
    dimension's change in units of its typical change (:class:`StateDynamics`).
    """
    from cosmos_sim.training.world_model_task import load_state_sequences

    loaded = zoo.load_model(model_dir)
    meta, stats = loaded.config, loaded.stats or {}
    stores, a_stats, s_stats = open_task_stores(loaded, data)
    vocab = loaded.module.text_vocab  # an instruction model's success depends on it
    encoder = loaded.module.cfg.wm.dit.text_encoder
    train = load_state_sequences(stores, a_stats, s_stats, "train", vocab, encoder)
    try:
        held = load_state_sequences(stores, a_stats, s_stats, "held-out", vocab, encoder)
    except StoreError:  # too few episodes for a held-out split: nothing to score
        held = None
    config = dict(meta["config"])
    rebuild = hidden is not None or substeps is not None
    hidden = config["dynamics_hidden"] if hidden is None else hidden
    substeps = bool(config.get("dynamics_substeps", False)) if substeps is None else substeps
    if rebuild:
        scale = None
        if delta_weighted:
            scale = [round(x, 6) for x in delta_std(train, _episodes(train), substeps).tolist()]
        rebuild_state_heads(loaded.module, hidden, substeps, scale)
        config = loaded.module.cfg.to_dict()
    relabel = None
    if vocab:
        from cosmos_sim.bridge.record import source_task
        from cosmos_sim.bridge.tasks import find_task

        relabel = instruction_relabel(
            find_task(source_task(meta["task"])),
            stores[0].spec.state_names,
            s_stats,
            vocab,
            encoder,
        )
    result = fit_state_heads(
        loaded.module,
        train,
        held,
        steps=steps,
        unroll=unroll,
        batch_size=batch_size,
        lr=lr,
        relabel=relabel,
        progress=progress,
        delta_weighted=delta_weighted,
    )
    extra = {
        k: v for k, v in meta.items() if k not in ("kind", "format_version", "dtype", "config")
    }
    extra["state_heads"] = {
        "steps": steps,
        "unroll": unroll,
        "lr": lr,
        "batch_size": batch_size,
        "delta_weighted": delta_weighted,
        "hidden": config["dynamics_hidden"],
        "substeps": substeps,
        "stores": [Path(p).name for p in data],
    }
    card = Path(loaded.path, "card.md")
    zoo.save_model(
        loaded.path,
        loaded.kind,
        config,
        loaded.module.state_dict(),
        stats=stats,
        card=card.read_text() if card.exists() else None,
        extra=extra,
    )
    return result
