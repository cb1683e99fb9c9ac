"""Evaluation reports: report.md, report.json, a scatter plot, a reliability plot and an
.rrd with reference and candidate rollouts side by side per policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from cosmos_sim.evaluation.policy_eval import EvaluationRun


def fmt(value: float) -> str:
    """A correlation is undefined when one side gives every policy the same rate."""
    return "undefined (a constant side)" if np.isnan(value) else f"{value:.3f}"


def format_with_ci(value: float, ci) -> str:
    return fmt(value) if np.isnan(value) else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown(run: EvaluationRun, reference: str, candidate: str) -> str:
    a = run.agreement
    lines = [
        f"# Policy evaluation: {run.task}",
        "",
        f"{len(run.policies)} policies × {len(run.seeds)} episodes, the same initial states "
        f"(seeds {run.seeds[0]}–{run.seeds[-1]}) in {reference} and {candidate}.",
        "",
        f"| policy | {reference} success | {candidate} success |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {r['policy']} | {r['reference']:.2f} | {r['candidate']:.2f} |" for r in run.table()
    ]
    lines += [
        "",
        "| agreement | value [95% bootstrap CI] |",
        "|---|---|",
        f"| Pearson r | {format_with_ci(a.pearson, a.pearson_ci)} |",
        f"| Spearman ρ | {format_with_ci(a.spearman, a.spearman_ci)} |",
        f"| MMRV | {format_with_ci(a.mmrv, a.mmrv_ci)} |",
    ]
    if run.brier is not None:
        lines += ["", f"Calibration of the predicted success: Brier score {run.brier:.3f}."]
    return "\n".join(lines) + "\n"


def scatter_plot(run: EvaluationRun, path: Path, reference: str, candidate: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    x = [p.reference.success_rate for p in run.policies]
    y = [p.candidate.success_rate for p in run.policies]
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", zorder=0)
    ax.scatter(x, y, zorder=2)
    placed: list[tuple[float, float]] = []
    for p, xi, yi in zip(run.policies, x, y, strict=True):
        # Policies often land on the same spot (every expert at 1.0): stack their labels.
        near = sum(abs(xi - px) < 0.12 and abs(yi - py) < 0.06 for px, py in placed)
        placed.append((xi, yi))
        left = xi > 0.8  # keep labels at the right edge inside the axes
        ax.annotate(
            p.name,
            (xi, yi),
            textcoords="offset points",
            xytext=(-4 if left else 4, 4 - 9 * near),
            ha="right" if left else "left",
            fontsize=7,
        )
    a = run.agreement
    ax.set(
        xlim=(-0.05, 1.05),
        ylim=(-0.05, 1.05),
        xlabel=f"{reference} success rate",
        ylabel=f"{candidate} success rate",
        title=f"{run.task}: r={fmt(a.pearson)[:5]} ρ={fmt(a.spearman)[:5]} MMRV={a.mmrv:.3f}",
    )
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reliability_plot(run: EvaluationRun, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    bins = run.reliability or []
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o")
    ax.set(
        xlabel="predicted success probability",
        ylabel="simulator success frequency",
        title=f"reliability (Brier {run.brier:.3f})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _entity(name: str) -> str:
    """A policy name as one rerun entity-path part (``expert@0.7`` → ``expert_0.7``)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def rollouts_rrd(run: EvaluationRun, path: Path, fps: float) -> None:
    import rerun as rr

    from cosmos_sim.viz.rerun_log import new_recording

    rec = new_recording("cosmos_sim_evaluation", out=path)
    for p in run.policies:
        for side, rollouts in (("reference", p.reference), ("candidate", p.candidate)):
            for k, frames in enumerate(rollouts.frames):
                for cam, video in frames.items():
                    for t, image in enumerate(video):
                        rec.set_time("frame", sequence=t)
                        rec.set_time("time", duration=t / fps)
                        rec.log(
                            f"evaluation/{_entity(p.name)}/episode_{k}/{side}/{cam}",
                            rr.Image(image),
                        )
    rec.flush()


def write_report(
    run: EvaluationRun, out: Path, *, reference: str, candidate: str, fps: float
) -> dict[str, Path]:
    """Write every artefact of an evaluation run into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "report.md",
        "json": out / "report.json",
        "scatter": out / "scatter.png",
        "rrd": out / "rollouts.rrd",
    }
    paths["markdown"].write_text(markdown(run, reference, candidate))
    payload = run.as_dict() | {"reference": reference, "candidate": candidate}
    paths["json"].write_text(
        json.dumps(payload, indent=2, default=lambda o: np.asarray(o).tolist()) + "\n"
    )
    scatter_plot(run, paths["scatter"], reference, candidate)
    if run.brier is not None:
        paths["reliability"] = out / "reliability.png"
        reliability_plot(run, paths["reliability"])
    rollouts_rrd(run, paths["rrd"], fps)
    return paths


def side_by_side(reference, candidate, out: Path, fps: float) -> list[Path]:
    """One episode of two Rollouts (kept frames) as an .rrd and an .mp4: left truth, right model."""
    import cv2
    import rerun as rr

    from cosmos_sim.viz.rerun_log import new_recording

    out = Path(out)
    rec = new_recording("cosmos_sim_rollout", out=out)
    truth, model = reference.frames[0], candidate.frames[0]
    video = []
    for cam in truth:
        n = min(len(truth[cam]), len(model[cam]))
        for t in range(n):
            rec.set_time("frame", sequence=t)
            rec.set_time("time", duration=t / fps)
            a, b = truth[cam][t], model[cam][t]
            rec.log(f"rollout/{cam}/simulator", rr.Image(a))
            rec.log(f"rollout/{cam}/world_model", rr.Image(b))
            mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)
            rec.log(f"rollout/{cam}/psnr_db", rr.Scalars([10 * np.log10(255**2 / max(mse, 1e-10))]))
            video.append(np.concatenate([a, b], axis=1))
        break  # the mp4 shows the first camera
    rec.flush()
    mp4 = out.with_suffix(".mp4")
    h, w = video[0].shape[:2]
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return [out, mp4]
