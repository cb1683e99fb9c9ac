"""Clip loader throughput vs what the Trainer consumes, in the same run (target ≥ 10×).

    python -m benchmarks loader
    python benchmarks/loader.py --data runs/data/reach.zarr runs/data/push.zarr

Loader: batches of 9-frame 64×64 clips (the cpu-small tokenizer recipe) read from the
episode stores, in-process and with worker processes. Consumer: the cpu-small CV
tokenizer Trainer step (forward + backward + AdamW) on those same batches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_result  # noqa: E402
from benchmarks.tokenizer import default_stores  # noqa: E402
from cosmos_sim.data.clips import ClipSpec  # noqa: E402
from cosmos_sim.data.loader import ClipLoader  # noqa: E402
from cosmos_sim.models.tokenizer import VideoTokenizer, tokenizer_config  # noqa: E402
from cosmos_sim.training.tokenizer_task import RECIPES, TokenizerTask  # noqa: E402
from cosmos_sim.training.trainer import Trainer, TrainerConfig  # noqa: E402


def loader_rate(stores, batch: int, workers: int, batches: int) -> float:
    loader = ClipLoader(stores, ClipSpec(frames=9), batch, num_workers=workers, seed=1)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batch * batches / (time.perf_counter() - t0)


def trainer_rate(stores, batch: int, steps: int, out: Path) -> float:
    loader = ClipLoader(stores, ClipSpec(frames=9), batch, seed=1)
    task = TokenizerTask(VideoTokenizer(tokenizer_config("cpu-small", "cv")))
    cfg = TrainerConfig(steps=steps, warmup_steps=0, progress=False, checkpoint_every=10_000)
    summary = Trainer(task, cfg, loader, out).fit(resume=False)
    return summary["samples_per_s"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", type=Path, default=None)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv if argv is not None else [])
    stores = args.data or default_stores()
    if not stores:
        print("no stores: record data/reach.zarr and data/push.zarr first", file=sys.stderr)
        return {}
    batch = RECIPES["cpu-small"].batch_size
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        consume = trainer_rate(stores, batch, args.steps, Path(tmp) / "run")
    rates = {w: loader_rate(stores, batch, w, args.batches) for w in (0, 1, 2)}
    rows = [[f"loader, {w} workers", r, r / consume] for w, r in rates.items()]
    rows.append(["Trainer (cpu-small CV step)", consume, 1.0])
    print_table(
        "Clip loader vs Trainer (samples/s, 9×64×64 clips)", ["", "samples/s", "× Trainer"], rows
    )
    best = max(rates.values())
    payload = {
        "stores": [str(s) for s in stores],
        "batch_size": batch,
        "loader_samples_per_s": {str(w): r for w, r in rates.items()},
        "trainer_samples_per_s": consume,
        "ratio_best": best / consume,
        "target_ratio": 10.0,
        "meets_target": best / consume >= 10,
    }
    print(f"wrote {write_result('loader', payload)}")
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
