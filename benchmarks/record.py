"""Recording overhead: raw simulator step+render vs the same episodes recorded into a store.

Target: the store adds at most 15% to the time of stepping and rendering.
Both are measured in the same run, alternating, on the same seeds; the best of the
repeats is kept for each (the least disturbed by other load on the machine).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_result
from cosmos_sim.bridge.record import MujocoSource, record

TASKS = ("reach", "push")
CAMERAS = ["front", "top", "side"]
EPISODES = 4
REPEATS = 3
TARGET_OVERHEAD = 0.15


def raw(source: MujocoSource, episodes: int) -> tuple[int, float]:
    frames, start = 0, time.perf_counter()
    for seed in range(episodes):
        for _ in source.episode(seed):
            frames += 1
    return frames, time.perf_counter() - start


def recorded(source: MujocoSource, episodes: int, out: Path) -> tuple[int, float]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    stats = record(source, out, episodes=episodes, seed=0)
    return stats.frames, time.perf_counter() - start


def main() -> dict:
    rows, results = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-record-"))
    try:
        for task in TASKS:
            source = MujocoSource(task, skill=1.0, cameras=CAMERAS, size=64)
            raw(source, 1)  # warm up the renderer
            t_raw, t_rec = [], []
            for _ in range(REPEATS):
                n, t = raw(source, EPISODES)
                t_raw.append(t)
                n_rec, t = recorded(source, EPISODES, tmp / f"{task}.zarr")
                t_rec.append(t)
                assert n == n_rec
            source.close()
            best_raw, best_rec = min(t_raw), min(t_rec)
            overhead = best_rec / best_raw - 1
            results[task] = {
                "frames": n,
                "cameras": CAMERAS,
                "size": 64,
                "raw_frames_per_s": n / best_raw,
                "recorded_frames_per_s": n / best_rec,
                "overhead": overhead,
                "meets_target": overhead <= TARGET_OVERHEAD,
            }
            rows.append(
                [
                    task,
                    n,
                    n / best_raw,
                    n / best_rec,
                    f"{overhead:+.1%}",
                    "yes" if overhead <= TARGET_OVERHEAD else "no",
                ]
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(
        "recording overhead (3 cameras × rgb+depth+segmentation, 64×64)",
        [
            "task",
            "frames",
            "raw frames/s",
            "recorded frames/s",
            "overhead",
            f"≤ {TARGET_OVERHEAD:.0%}",
        ],
        rows,
    )
    path = write_result("record", {"target_overhead": TARGET_OVERHEAD, "tasks": results})
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
