"""The ``cosmos-sim`` command.

User mistakes (bad paths, malformed stores, unknown tasks or cameras) end in one line
on stderr — file, field, expected vs found — and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cosmos_sim.errors import ConfigError, CosmosSimError

app = typer.Typer(
    name="cosmos-sim",
    help="Record robot episodes, train Cosmos-style world models, and run them as Gymnasium envs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train models (tokenizers, world models).", no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console()
err_console = Console(stderr=True)


def _split(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


# ---------------------------------------------------------------------- record
@app.command()
def record(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Episode store (.zarr); appended to if it exists.")
    ],
    task: Annotated[
        str | None, typer.Option(help="Embedded MuJoCo task: reach, push, … or a task folder.")
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(help="Any Gymnasium env id with rgb_array rendering, e.g. Pendulum-v1."),
    ] = None,
    episodes: Annotated[int, typer.Option(min=1)] = 10,
    skill: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Scripted expert skill: 0 random, 1 expert (cameranav: the arm's; the camera wanders).",
        ),
    ] = 1.0,
    cameras: Annotated[
        str | None, typer.Option(help="Comma-separated cameras (default: the task's).")
    ] = None,
    size: Annotated[
        int | None, typer.Option(help="Image height and width in pixels (default: the task's, 64).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Episode i uses seed + i.")] = 0,
    no_depth: Annotated[bool, typer.Option("--no-depth", help="Skip depth rendering.")] = False,
    no_segmentation: Annotated[
        bool, typer.Option("--no-segmentation", help="Skip segmentation.")
    ] = False,
    shadow_size: Annotated[
        int | None, typer.Option(help="Shadow map size; 0 = none (fastest).")
    ] = None,
    max_steps: Annotated[int, typer.Option(help="Episode cap for Gymnasium envs.")] = 200,
    instruction: Annotated[
        str | None,
        typer.Option(
            help="Force this instruction in every episode (a task with several [[instructions]]; "
            "default: drawn from each episode's seed)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store.")
    ] = False,
) -> None:
    """Record episodes from the embedded simulator or a Gymnasium render env into a store."""
    from cosmos_sim.bridge.record import record as run_record

    if (task is None) == (env is None):
        raise ConfigError("give exactly one of --task or --env", field="--task/--env")
    if instruction is not None and task is None:
        raise ConfigError("--instruction needs --task", field="--instruction", found=instruction)
    if task is not None:
        from cosmos_sim.bridge.record import MujocoSource

        source = MujocoSource(
            task,
            skill=skill,
            cameras=_split(cameras),
            size=size,
            depth=not no_depth,
            segmentation=not no_segmentation,
            shadow_size=shadow_size,
            instruction=instruction,
        )
    else:
        from cosmos_sim.bridge.gym_render import GymRenderConfig, GymRenderSource

        source = GymRenderSource(GymRenderConfig(env_id=env, size=size or 64, max_steps=max_steps))
    if overwrite and out.exists():  # only once the source is valid (a bad --task keeps the store)
        shutil.rmtree(out)
    with Progress(
        TextColumn("[bold]recording[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes · {task.fields[fps]:.0f} frames/s · success {task.fields[succ]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("record", total=episodes, fps=0.0, succ="-")

        def on_frame(stats) -> None:
            progress.update(bar, fps=stats.frames_per_second)

        def on_episode(stats) -> None:
            progress.update(
                bar, completed=stats.episodes, succ=f"{stats.successes}/{stats.episodes}"
            )

        stats = run_record(
            source, out, episodes=episodes, seed=seed, on_episode=on_episode, on_frame=on_frame
        )
    source.close()
    console.print(
        f"recorded {stats.episodes} episodes, {stats.frames} frames "
        f"({stats.frames_per_second:.0f} frames/s), success {stats.successes}/{stats.episodes} → {out}"
    )


# ------------------------------------------------------------------------ info
@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="Episode store (.zarr).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Episodes, frames, cameras and shapes, success rate and action statistics."""
    from cosmos_sim.data.store import EpisodeStore, describe

    summary = describe(EpisodeStore.open(store))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    lengths = summary["episode_length"]
    head = Table(title=f"{store}", show_header=False)
    for key, value in [
        ("source", summary["source"]),
        ("episodes", summary["episodes"]),
        ("frames", summary["frames"]),
        ("fps", summary["fps"]),
        (
            "episode length",
            f"{lengths['min']} / {lengths['mean']:.1f} / {lengths['max']} (min/mean/max)",
        ),
        ("success rate", f"{summary['success_rate']:.2f}"),
        ("instructions", "; ".join(summary["instructions"]) or "-"),
    ]:
        head.add_row(key, str(value))
    if summary["partial_episode"]:
        head.add_row("note", "[yellow]an interrupted recording left a partial episode (ignored)[/]")
    console.print(head)
    cams = Table(title="cameras")
    for col in ("camera", "field", "shape (per frame)"):
        cams.add_column(col)
    for name, fields in summary["cameras"].items():
        for field, shape in fields.items():
            cams.add_row(name, field, "×".join(map(str, shape)))
    console.print(cams)
    acts = Table(title="action")
    for col in ("dim", "mean", "std", "min", "max"):
        acts.add_column(col, justify="right")
    a = summary["action"]
    names = a["names"] or [f"a{i}" for i in range(len(a["mean"]))]
    for i, n in enumerate(names):
        if a["mean"]:
            acts.add_row(n, *(f"{a[k][i]:+.3f}" for k in ("mean", "std", "min", "max")))
    console.print(acts)


# ------------------------------------------------------------------------ view
@app.command()
def view(
    store: Annotated[Path, typer.Argument(help="Episode store (.zarr).")],
    episode: Annotated[
        list[int] | None, typer.Option(help="Episode index (repeatable); default 0.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write an .rrd recording here.")
    ] = None,
    cameras: Annotated[
        str | None, typer.Option(help="Comma-separated cameras (default: all).")
    ] = None,
    spawn: Annotated[
        bool, typer.Option("--spawn", help="Open the rerun viewer (needs a display).")
    ] = False,
) -> None:
    """Rerun recording of episodes: images, depth, segmentation, camera frusta, actions, state."""
    from cosmos_sim.data.store import EpisodeStore
    from cosmos_sim.viz.rerun_log import log_episode, new_recording

    if out is None and not spawn:
        raise ConfigError(
            "nowhere to send the recording",
            field="--out/--spawn",
            expected="--out FILE.rrd or --spawn",
        )
    st = EpisodeStore.open(store)
    indices = episode or [0]
    for i in indices:
        st.episode_bounds(i)  # clear error for a bad index before anything is written
    rec = new_recording(f"cosmos_sim_{store.stem}", out=out, spawn=spawn)
    first = 0
    for i in indices:
        ep = st.read_episode(i, cameras=_split(cameras))
        log_episode(
            rec,
            ep,
            fps=st.spec.fps,
            prefix=f"episode_{i}" if len(indices) > 1 else "episode",
            action_names=st.spec.action_names or None,
            state_names=st.spec.state_names or None,
            segmentation_labels=st.spec.segmentation_labels,
            first_frame=first,
        )
        first += len(ep)
    rec.flush()
    if out is not None:
        console.print(
            f"wrote {out} ({len(indices)} episode(s), {first} frames); open it with: rerun {out}"
        )


# -------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    task: Annotated[str, typer.Option(help="Task: reach, push or cameranav.")],
    model: Annotated[
        str,
        typer.Option(help="World-model directory, or 'sim' to check the simulator against itself."),
    ],
    policies: Annotated[
        str,
        typer.Option(help="Comma-separated: expert@<skill>, random, module:callable, *.zip, *.pt."),
    ] = "expert@1.0,expert@0.9,expert@0.8,expert@0.7,expert@0.6,expert@0.5,expert@0.3,random",
    episodes: Annotated[int, typer.Option(min=2)] = 50,
    seed: Annotated[
        int, typer.Option(help="Episode i of every policy starts from seed + i in both envs.")
    ] = 10_000,
    cameras: Annotated[
        str | None,
        typer.Option(help="Cameras the policies and the model see (default: the env's)."),
    ] = None,
    size: Annotated[int, typer.Option()] = 64,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("out/evaluation"),
    decoder: Annotated[
        str | None,
        typer.Option(
            help="Decode the world model's frames with this tokenizer of its latents, e.g. "
            "tokenizer-cv-4x8x8-pca-fast (faster; see its card for the image quality)."
        ),
    ] = None,
) -> None:
    """Run every policy in the world model and in the simulator, and report how well they agree."""
    import gymnasium as gym

    from cosmos_sim.envs.registration import sim_env_id
    from cosmos_sim.errors import ModelError
    from cosmos_sim.evaluation.policies import load_policy, parse_policies
    from cosmos_sim.evaluation.policy_eval import evaluate as run_evaluation
    from cosmos_sim.evaluation.report import format_with_ci, write_report

    sim_id = sim_env_id(task)
    view = {"size": size} | ({"cameras": cameras} if cameras else {})
    reference = gym.make(sim_id, **view)
    if model == "sim":
        candidate = gym.make(sim_id, **view)
    elif "cosmos_sim/WorldModel-v0" in gym.registry:
        # One sub-env per episode: every episode of a policy in one batched forward pass.
        fast = {} if decoder is None else {"decoder": decoder}
        candidate = gym.make_vec(
            "cosmos_sim/WorldModel-v0", num_envs=episodes, model=model, task=task, **view, **fast
        )
    else:
        raise ModelError(
            "world-model environments are not available in this version",
            field="--model",
            found=model,
        )
    sim = reference.unwrapped
    specs = parse_policies(policies)
    loaded = [
        load_policy(
            s, task=sim.task, state_names=sim.sim.state_names, action_space=reference.action_space
        )
        for s in specs
    ]
    with Progress(
        TextColumn("[bold]evaluating[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("evaluate", total=2 * episodes * len(loaded))
        run = run_evaluation(
            task,
            reference,
            candidate,
            loaded,
            episodes=episodes,
            seed=seed,
            on_episode=lambda: progress.advance(bar),
        )
    candidate_name = "sim (again)" if model == "sim" else Path(model).name
    paths = write_report(run, out, reference="simulator", candidate=candidate_name, fps=sim.sim.fps)
    table = Table(title=f"policy evaluation: {task}, {episodes} episodes per policy")
    for col in ("policy", "simulator", candidate_name):
        table.add_column(col, justify="right")
    for row in run.table():
        table.add_row(row["policy"], f"{row['reference']:.2f}", f"{row['candidate']:.2f}")
    console.print(table)
    a = run.agreement
    console.print(
        f"Pearson r {format_with_ci(a.pearson, a.pearson_ci)}  Spearman ρ {format_with_ci(a.spearman, a.spearman_ci)}  "
        f"MMRV {format_with_ci(a.mmrv, a.mmrv_ci)}  (95% bootstrap intervals)"
    )
    for kind, path in paths.items():
        console.print(f"  {kind:<11} {path}")


def _decoder_sizes(width: int, width_low: int, blocks: str | None) -> dict | None:
    """``train tokenizer``'s new-decoder options as TokenizerConfig fields (None: none)."""
    sizes: dict = {k: v for k, v in (("dec_width", width), ("dec_width_low", width_low)) if v}
    if blocks is not None:
        try:
            sizes["dec_blocks"] = tuple(int(b) for b in blocks.split(","))
        except ValueError:
            raise ConfigError(
                "two block counts", field="--decoder-blocks", expected="e.g. 1,1", found=blocks
            ) from None
    return sizes or None


@train_app.command("tokenizer")
def train_tokenizer_cmd(
    data: Annotated[
        list[Path], typer.Option("--data", help="Episode store(s) (.zarr), repeatable.")
    ],
    kind: Annotated[str, typer.Option(help="cv (continuous latents) or dv (FSQ tokens).")] = "cv",
    preset: Annotated[str, typer.Option(help="cpu-small or gpu.")] = "cpu-small",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default runs/tokenizer-KIND)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Default: the preset's.")] = None,
    export: Annotated[
        Path | None, typer.Option(help="Write the EMA weights as a model directory when done.")
    ] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Refuse an existing run.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="2 steps, batch 2.")] = False,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default: the preset's).")
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="Start from this tokenizer model directory's weights.")
    ] = None,
    decoder_only: Annotated[
        bool,
        typer.Option(
            "--decoder-only",
            help="Train the decoder alone (needs --init): the latents stay the init "
            "tokenizer's, so world models trained on them keep working.",
        ),
    ] = False,
    heldout_every: Annotated[
        int,
        typer.Option(
            min=0, help="Hold out every k-th episode (the world models' split; 0: hash split)."
        ),
    ] = 0,
    decoder_width: Annotated[
        int,
        typer.Option(
            min=0,
            help="With --decoder-only: a new decoder this wide at H/4 (a fast decoder for the "
            "same latents; 0 keeps the init's).",
        ),
    ] = 0,
    decoder_width_low: Annotated[
        int, typer.Option(min=0, help="With --decoder-width: its width at H/8 (0: the init's).")
    ] = 0,
    decoder_blocks: Annotated[
        str | None,
        typer.Option(help="With --decoder-width: its residual blocks at H/8,H/4, e.g. 1,1."),
    ] = None,
) -> None:
    """Train a causal video tokenizer (resumes from the run directory's newest checkpoint)."""
    from cosmos_sim.training.tokenizer_task import export_tokenizer, train_tokenizer

    out = out or Path("runs") / f"tokenizer-{kind}{'-dry' if dry_run else ''}"
    summary = train_tokenizer(
        data,
        kind,
        preset,
        out,
        steps=2 if dry_run else steps,
        resume=not no_resume,
        batch_size=2 if dry_run else None,
        lr=lr,
        init_from=init,
        decoder_only=decoder_only,
        heldout_every=heldout_every,
        decoder_sizes=_decoder_sizes(decoder_width, decoder_width_low, decoder_blocks),
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    console.print(
        f"step {summary['step']}  loss {summary['loss']:.4f}  PSNR {summary.get('psnr', 0):.2f} dB  "
        f"{summary['samples_per_s']:.1f} samples/s  MFU {100 * summary['mfu']:.0f}%  → {out}"
    )
    if export is not None:
        console.print(f"exported {export_tokenizer(out, export)}")


@train_app.command("world-model")
def train_world_model_cmd(
    data: Annotated[
        list[Path], typer.Option("--data", help="Episode store(s) (.zarr) with a latent cache.")
    ],
    tokenizer: Annotated[
        Path, typer.Option(help="The frozen CV tokenizer the latents came from.")
    ] = Path("models/tokenizer-cv-4x8x8"),
    variant: Annotated[
        str, typer.Option(help="action | camera | multiview | instruction.")
    ] = "action",
    preset: Annotated[str, typer.Option(help="cpu-small or gpu.")] = "cpu-small",
    cameras: Annotated[str | None, typer.Option(help="Cameras to train on (default: all).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Default: the preset's.")] = None,
    export: Annotated[
        Path | None, typer.Option(help="Write the EMA weights as a model directory.")
    ] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Refuse an existing run.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="2 steps, batch 2.")] = False,
    action_blind: Annotated[
        bool,
        typer.Option(
            "--action-blind",
            help="Baseline: the DiT never sees actions or proprio state (benchmarks compare).",
        ),
    ] = False,
    self_forcing: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of steps whose last context frame is the model's own (against drift).",
        ),
    ] = 0.0,
    init: Annotated[
        Path | None,
        typer.Option(help="Start from this exported world model's weights (post-training)."),
    ] = None,
    state_points: Annotated[
        bool,
        typer.Option(
            "--state-points",
            help="The DiT also sees where the state's points (end effector, block, ...) "
            "project in each fixed camera (MuJoCo tasks).",
        ),
    ] = False,
    warp_base: Annotated[
        bool,
        typer.Option(
            "--warp-base",
            help="Camera variant: the DiT samples the residual over the first frame warped "
            "into each new camera by the table plane (MuJoCo tasks).",
        ),
    ] = False,
    warp_reference: Annotated[
        str,
        typer.Option(
            help="With --warp-base: warp the episode's first frame, or the previous latent "
            "frame's last one (first | previous).",
        ),
    ] = "first",
    text_encoder: Annotated[
        str,
        typer.Option(
            help="Instruction variant: hashed words embedded by a table trained with the "
            "model, or minilm, a frozen pretrained sentence encoder (the text extra).",
        ),
    ] = "hashed",
    keep_state_heads: Annotated[
        bool,
        typer.Option(
            "--keep-state-heads",
            help="With --init: the export keeps that model's proprio-state heads (stage 2) "
            "and takes only the diffusion part from this run.",
        ),
    ] = False,
) -> None:
    """Train a diffusion world model on a store's cached latents (resumable)."""
    from cosmos_sim.training.world_model_task import export_world_model, train_world_model

    if keep_state_heads and (init is None or export is None):
        raise ConfigError(
            "--keep-state-heads needs --init (the heads' model) and --export",
            field="--keep-state-heads",
        )
    out = out or Path("runs") / f"wm-{variant}{'-dry' if dry_run else ''}"
    summary = train_world_model(
        data,
        tokenizer,
        out,
        variant=variant,
        preset=preset,
        cameras=_split(cameras),
        steps=2 if dry_run else steps,
        batch_size=2 if dry_run else None,
        resume=not no_resume,
        action_blind=action_blind,
        self_forcing=self_forcing,
        init=init,
        state_points=state_points,
        warp_base=warp_base,
        warp_reference=warp_reference,
        text_encoder=text_encoder,
    )
    console.print(
        f"step {summary['step']}  loss {summary['loss']:.4f}  {summary['samples_per_s']:.1f} samples/s → {out}"
    )
    if export is not None:
        heads = init if keep_state_heads else None
        console.print(f"exported {export_world_model(out, export, state_heads_from=heads)}")


@train_app.command("state-heads")
def train_state_heads_cmd(
    model: Annotated[Path, typer.Option(help="An exported world model with proprio state.")],
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Episode store(s) of its task (states and actions are read; no latents needed).",
        ),
    ],
    steps: Annotated[int, typer.Option(min=1)] = 5000,
    unroll: Annotated[int, typer.Option(min=1, help="Chunks per training rollout.")] = 4,
    hidden: Annotated[
        int | None,
        typer.Option(min=1, help="Rebuild the heads (fresh) this wide instead of refining them."),
    ] = None,
    substeps: Annotated[
        bool | None,
        typer.Option(
            "--substeps/--no-substeps",
            help="Rebuild the dynamics head to step once per control action (fresh), "
            "learning every recorded frame.",
        ),
    ] = None,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (cosine to 10 %).")] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1, help="Unroll windows per step.")] = 256,
    delta_weighted: Annotated[
        bool,
        typer.Option(
            help="Weigh each state dimension's error by 1 / its typical change per step, and "
            "let a rebuilt dynamics head predict changes in those units (positions count as "
            "much as velocities); --no-delta-weighted: plain MSE on the normalised state."
        ),
    ] = True,
) -> None:
    """Stage 2: refit a world model's state dynamics and readout heads on every transition
    of the stores (minutes; the DiT is untouched). Saved back into the model directory."""
    from cosmos_sim.training.state_heads import refine_exported

    r = refine_exported(
        model,
        data,
        steps=steps,
        unroll=unroll,
        hidden=hidden,
        substeps=substeps,
        lr=lr,
        batch_size=batch_size,
        progress=True,
        delta_weighted=delta_weighted,
    )
    from statistics import fmean

    for chunks, key in ((unroll, "unroll"), (r.get("horizon"), "horizon")):
        before, after = r.get(f"held_out_{key}_error_before"), r.get(f"held_out_{key}_error_after")
        if before is not None:
            console.print(
                f"held-out state error after {chunks} chunks (normalised, mean over dims): "
                f"{fmean(before):.3f} → {fmean(after):.3f}"
            )
    console.print(f"refit {r['windows']} windows × {steps} steps → {model}")


@train_app.command("renderer")
def train_renderer_cmd(
    model: Annotated[
        Path,
        typer.Option(
            help="An exported world model with a proprio state (a camera-control model gets "
            "a camera renderer over its table-plane warp)."
        ),
    ],
    data: Annotated[
        list[Path],
        typer.Option("--data", help="Tokenized episode store(s) of its task and camera."),
    ],
    steps: Annotated[int, typer.Option(min=1)] = 3000,
    hidden: Annotated[int, typer.Option(min=8, help="Width of the renderer's conv net.")] = 64,
    pixel_weighted: Annotated[
        bool,
        typer.Option(
            help="Weigh each latent channel's error by what it costs in decoded pixels "
            "(follows the PSNR); --no-pixel-weighted: plain latent MSE."
        ),
    ] = True,
) -> None:
    """Fit the model's state renderer (latent frame from the state; minutes): the base its
    DiT then diffuses the residual of. Saved back into the model directory."""
    from cosmos_sim.training.renderer import fit_renderer

    r = fit_renderer(model, data, steps=steps, hidden=hidden, pixel_weighted=pixel_weighted)
    held, own = r["held_out_mse_from_first_frame"], r.get("held_out_mse_own_states")
    console.print(
        f"renderer: train loss {r['train_loss_last100']:.4f}"
        + ("" if held is None else f", held-out latent MSE from the first frame {held:.4f}")
        + ("" if own is None else f" ({own:.4f} weighted, from its own predicted states)")
        + f" in {r['wall_time_s']:.0f} s → {model}"
    )


@app.command()
def finetune(
    model: Annotated[str, typer.Option(help="World-model directory or shipped name to adapt.")],
    videos: Annotated[
        list[str],
        typer.Option(help="Videos: files, globs ('clips/*.mp4') or folders; at least 5 in all."),
    ],
    more_videos: Annotated[
        list[str] | None,
        typer.Argument(help="More videos (the shell expands --videos clips/*.mp4 into these)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default runs/finetune-MODEL)."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1)] = 300,
    lora_rank: Annotated[int, typer.Option(min=1, help="Rank of the LoRA adapters.")] = 8,
    lora_alpha: Annotated[
        float | None, typer.Option(help="LoRA scale α (update × α/rank); default: the rank.")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Fine-tune every weight; export a whole model.")
    ] = False,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 5e-4 LoRA, 1e-4 full).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    stride: Annotated[
        int, typer.Option(min=1, help="Keep every N-th video frame (match the model's fps).")
    ] = 1,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Refuse an existing run.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="2 steps, batch 2.")] = False,
) -> None:
    """Adapt a world model to your own videos (video-only post-training): LoRA or --full."""
    from cosmos_sim.training.finetune import FinetuneConfig
    from cosmos_sim.training.finetune import finetune as run_finetune

    cfg = FinetuneConfig(
        full=full,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        steps=2 if dry_run else steps,
        lr=lr,
        batch_size=2 if dry_run else batch_size,
        stride=stride,
    )
    out = out or Path("runs") / f"finetune-{Path(model).name}{'-dry' if dry_run else ''}"
    summary = run_finetune(model, [*videos, *(more_videos or [])], out, cfg, resume=not no_resume)
    console.print(
        f"step {summary['step']}  loss {summary.get('loss', float('nan')):.4f}  "
        f"{summary['videos']} videos, {summary['clips']} clips  trainable parameters "
        f"{summary['trainable_parameters']:,} of {summary['total_parameters']:,} "
        f"({100 * summary['trainable_parameters'] / summary['total_parameters']:.1f}%)  "
        f"peak memory {summary['peak_memory_mb']:.0f} MB "
        f"(weights + gradients + Adam state {summary['train_state_mb']:.1f} MB)"
    )
    if full:
        console.print(f"model → {summary['model_dir']}")
    else:
        console.print(
            f"adapter ({summary['adapter_mb']:.2f} MB) → {summary['adapter_dir']}; "
            "load it on top of the base with cosmos_sim.models.lora.load_lora"
        )


@app.command()
def rollout(
    model: Annotated[str, typer.Option(help="World-model directory or shipped name.")],
    episode: Annotated[
        int, typer.Option(help="Seed of the episode (same initial state in both).")
    ] = 0,
    policy: Annotated[
        str, typer.Option(help="Policy driving both: expert@<skill>, random, ….")
    ] = "expert@1.0",
    out: Annotated[
        Path, typer.Option("--out", "-o", help=".rrd file; an .mp4 is written beside it.")
    ] = Path("out/rollout.rrd"),
    sampler_steps: Annotated[
        int | None, typer.Option(help="Denoising steps (default: the model's).")
    ] = None,
) -> None:
    """Ground truth and prediction side by side: the simulator and the world model under one policy."""
    import gymnasium as gym

    from cosmos_sim.envs.registration import sim_env_id
    from cosmos_sim.evaluation.policies import load_policy
    from cosmos_sim.evaluation.policy_eval import run_policy
    from cosmos_sim.evaluation.report import side_by_side

    wm = gym.make("cosmos_sim/WorldModel-v0", model=model, sampler_steps=sampler_steps)
    inner = wm.unwrapped
    sim = gym.make(
        sim_env_id(inner.task.name),
        cameras=inner.vec.camera,
        size=inner.vec.sim.height,
    )
    pol = load_policy(
        policy, task=inner.task, state_names=inner.sim.state_names, action_space=wm.action_space
    )
    real = run_policy(sim, pol, [episode], keep_frames=1)
    fake = run_policy(wm, pol, [episode], keep_frames=1)
    paths = side_by_side(real, fake, out, fps=inner.sim.fps)
    console.print(
        f"simulator success {real.success_rate:.0f}, world model success {fake.success_rate:.0f} "
        f"(p={fake.success_probability[0]:.2f}); wrote {', '.join(map(str, paths))}"
    )


@app.command()
def tokenize(
    store: Annotated[Path, typer.Argument(help="Episode store (.zarr) to add a latent cache to.")],
    model: Annotated[
        Path, typer.Option(help="Tokenizer model directory, e.g. models/tokenizer-cv-4x8x8.")
    ],
) -> None:
    """Encode every episode × camera into STORE/latents/<weights hash>/ (reused until the model changes)."""
    from cosmos_sim.training.tokenizer_task import tokenize_store

    attrs = tokenize_store(store, model)
    console.print(
        f"{store}/latents/{attrs['weights_hash']}: {attrs['episodes']} episodes × "
        f"{len(attrs['cameras'])} cameras ({attrs['kind']})"
    )


# ---------------------------------------------------------------------- import
import_app = typer.Typer(
    help="Import Omniverse data (Replicator folders, Isaac Lab HDF5) into a store.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")
omniverse_app = typer.Typer(
    help="Use cosmos_sim inside Omniverse Kit / Isaac Sim.", no_args_is_help=True
)
app.add_typer(omniverse_app, name="omniverse")


def _import_bar(what: str):
    return Progress(
        TextColumn(f"[bold]importing {what}[/]"),
        BarColumn(),
        TextColumn("{task.completed} episodes · {task.fields[frames]} frames"),
        TimeElapsedColumn(),
        console=console,
    )


@import_app.command("replicator")
def import_replicator_command(
    folder: Annotated[Path, typer.Argument(help="Replicator BasicWriter output folder.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Episode store (.zarr); appended to if it exists.")
    ],
    episode_length: Annotated[
        int | None, typer.Option(min=1, help="Split the frames into episodes of N frames.")
    ] = None,
    markers: Annotated[
        Path | None,
        typer.Option(
            help='Episode starts: one per line, "12" or {"start": 12, "success": true, "instruction": "…"}.'
        ),
    ] = None,
    actions: Annotated[
        Path | None,
        typer.Option(
            help="Per-frame action (+ state, reward): JSON lines or .npz, one row per frame."
        ),
    ] = None,
    fps: Annotated[float, typer.Option(help="Frame rate of the capture.")] = 30.0,
    instruction: Annotated[str, typer.Option(help="Instruction stored with every episode.")] = "",
    camera_name: Annotated[
        str, typer.Option(help="Store camera name for a single-render-product folder.")
    ] = "camera",
    up_axis: Annotated[str, typer.Option(help="The stage's up axis: Z (Isaac Sim) or Y.")] = "Z",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store.")
    ] = False,
) -> None:
    """Replicator BasicWriter output (rgb, depth, segmentation, camera_params) → episode store."""
    from cosmos_sim.bridge.replicator import ReplicatorImportConfig, import_replicator

    config = ReplicatorImportConfig(
        folder, fps, episode_length, markers, actions, instruction, camera_name, up_axis
    )
    if overwrite and out.exists():
        shutil.rmtree(out)
    with _import_bar(str(folder)) as progress:
        bar = progress.add_task("import", total=None, frames=0)
        stats = import_replicator(
            config,
            out,
            on_episode=lambda s: progress.update(bar, completed=s.episodes, frames=s.frames),
        )
    console.print(
        f"imported {stats.episodes} episodes, {stats.frames} frames from {folder} → {out}"
    )


@import_app.command("isaaclab")
def import_isaaclab_command(
    path: Annotated[Path, typer.Argument(help="Isaac Lab / robomimic demos .hdf5.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Episode store (.zarr); appended to if it exists.")
    ],
    fps: Annotated[
        float | None, typer.Option(help="Frame rate (default: env_args control_freq, else 30).")
    ] = None,
    cameras: Annotated[
        str | None,
        typer.Option(help="Comma-separated obs image keys (default: every uint8 image)."),
    ] = None,
    state_keys: Annotated[
        str | None,
        typer.Option(help="Comma-separated low-dim obs keys for the state (default: all)."),
    ] = None,
    instruction: Annotated[str, typer.Option(help="Instruction stored with every episode.")] = "",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store.")
    ] = False,
) -> None:
    """Isaac Lab / robomimic HDF5 demonstrations → episode store (needs the omniverse extra)."""
    from cosmos_sim.bridge.isaaclab import IsaacLabImportConfig, import_isaaclab

    config = IsaacLabImportConfig(path, fps, _split(cameras), _split(state_keys), instruction)
    if overwrite and out.exists():
        shutil.rmtree(out)
    with _import_bar(str(path)) as progress:
        bar = progress.add_task("import", total=None, frames=0)
        stats = import_isaaclab(
            config,
            out,
            on_episode=lambda s: progress.update(bar, completed=s.episodes, frames=s.frames),
        )
    console.print(f"imported {stats.episodes} demos, {stats.frames} frames from {path} → {out}")


@app.command("import-asset")
def import_asset_command(
    mesh: Annotated[Path, typer.Argument(help="Mesh file: .glb, .gltf, .obj, .stl or .ply.")],
    task: Annotated[str, typer.Option(help="Task to copy: reach, push, … or a task folder.")],
    replace: Annotated[
        str, typer.Option(help="Body whose geometry the mesh replaces, e.g. block.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="New task folder (default: ./<task>_<mesh>).")
    ] = None,
    scale: Annotated[
        float | None, typer.Option(help="Mesh scale (default: fit the replaced geometry).")
    ] = None,
    up_axis: Annotated[
        str | None, typer.Option(help="The mesh's up axis, Y or Z (default: Y for glTF, else Z).")
    ] = None,
) -> None:
    """A mesh asset into a copy of a task: visual mesh with texture, convex-hull collisions."""
    from cosmos_sim.bridge.assets import AssetImportConfig, import_asset

    out = out or Path(f"{Path(str(task)).name}_{mesh.stem}")
    folder = import_asset(AssetImportConfig(mesh, task, replace, out, scale, up_axis))
    console.print(f"wrote task {folder}; record with: cosmos-sim record --task {folder}")


@omniverse_app.command("path")
def omniverse_path() -> None:
    """Print the folder to add to Kit's extension search path (then enable 'omniverse')."""
    from cosmos_sim.bridge.omniverse import EXTENSION_NAME, extension_search_path

    print(extension_search_path())
    err_console.print(
        f"add it with --ext-folder (or Extension Manager → settings → search paths) and enable "
        f"the extension '{EXTENSION_NAME}'; install cosmos-sim into Kit's Python first",
        highlight=False,
    )


def main() -> None:
    """Console entry point: user mistakes become one line and exit code 2."""
    from cosmos_sim.device import configure_threads

    configure_threads()
    try:
        app(standalone_mode=False)
    except CosmosSimError as e:
        err_console.print(f"[bold red]error:[/] {e.one_line()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print(
            "interrupted: completed episodes are kept, the one in progress is discarded"
        )
        sys.exit(130)
    except typer.TyperException as e:  # usage errors (bad option, missing argument)
        if hasattr(e, "show"):
            e.show()
        sys.exit(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    main()
