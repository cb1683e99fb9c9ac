"""The one Trainer: every model in the project trains through it.

A model plugs in as a *task*: an ``nn.Module`` with ::

    def training_step(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        '''loss (scalar tensor) and metrics (floats) for one batch'''

The Trainer owns everything else: AdamW, warm-up + cosine learning rate, autocast
precision from :mod:`cosmos_sim.device`, gradient clipping, EMA weights, DDP, atomic
checkpoints with exact resume, metrics.jsonl and a rich progress bar (loss, samples/s,
MFU = counted model FLOPs per second over the measured peak of this machine).

Weight-decay rule: parameters with ``ndim >= 2`` (conv / linear weights) decay; biases,
norm gains and embeddings (any module that is an ``nn.Embedding``, or a parameter named
``*embed*`` / ``*pos*``) do not.

Data is any iterable of batches with ``state_dict()`` / ``load_state_dict()``
restoring the position of the *consumed* batches (see :mod:`cosmos_sim.data.loader`).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cosmos_sim.device import Precision, precision
from cosmos_sim.errors import ConfigError
from cosmos_sim.training import checkpoint as ckpt
from cosmos_sim.training import distributed as D

# Fields that may change between a run and its resumption (they do not change the maths).
_RESUMABLE_FIELDS = {"log_every", "progress", "keep_checkpoints", "checkpoint_every"}


class TrainingTask(Protocol):
    def training_step(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...


class StatefulData(Protocol):
    def __iter__(self): ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainerConfig:
    """Optimisation settings; every field is saved in checkpoints and checked on resume."""

    steps: int = 1000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr · min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999  # 0 disables EMA
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("steps", "lr", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError("must be positive", field=name, found=getattr(self, name))
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ConfigError(
                "warm-up must be within the run",
                field="warmup_steps",
                expected=f"0..{self.steps}",
                found=self.warmup_steps,
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("must be in [0, 1]", field="min_lr_ratio", found=self.min_lr_ratio)
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError("must be in [0, 1)", field=name, found=getattr(self, name))
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError(
                "must be ≥ 0",
                field="weight_decay/grad_clip",
                found=(self.weight_decay, self.grad_clip),
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(
                "unknown precision",
                field="precision",
                expected="auto, fp32 or bf16",
                found=self.precision,
            )

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``lr``, then cosine down to ``lr · min_lr_ratio`` at ``steps``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices / conv kernels; not biases, norms or embeddings."""
    embed_ids = {
        id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        is_embed = id(p) in embed_ids or "embed" in name or "pos" in name.split(".")[-1]
        (decay if p.ndim >= 2 and not is_embed else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class _Step(nn.Module):
    """Routes ``training_step`` through ``forward`` so DDP can hook it."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch):
        return self.task.training_step(batch)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return _batch_size(batch[0])
    return 1


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_changes(saved: dict, now: dict) -> list[str]:
    """Human-readable differences between two nested config dicts."""
    a, b = _flatten(saved), _flatten(json.loads(json.dumps(now)))
    changes = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[-1] in _RESUMABLE_FIELDS and key.startswith("trainer."):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            changes.append(
                f"{key}: checkpoint has {a.get(key, '<unset>')!r}, now {b.get(key, '<unset>')!r}"
            )
    return changes


class Trainer:
    """Trains a :class:`TrainingTask` on stateful data into ``out_dir`` (resumable)."""

    def __init__(
        self,
        task: nn.Module,
        config: TrainerConfig,
        data: StatefulData,
        out_dir: str | Path,
        run_config: dict | None = None,
        dist_info: D.DistInfo | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.dist = dist_info or D.current()
        self.prec: Precision = (
            precision() if config.precision == "auto" else _forced(config.precision)
        )
        self.task = task.to(self.prec.device)
        self.run_config = {"trainer": asdict(config), **(run_config or {})}
        self.model = D.wrap(_Step(self.task), self.dist)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.task, config.weight_decay),
            lr=config.lr,
            betas=(config.beta1, config.beta2),
        )
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.ema = (
            [p.detach().clone().float() for p in self.params] if config.ema_decay > 0 else None
        )
        self.step = 0
        self.wall_time = 0.0
        self.flops_per_step: float | None = None

    # -- state ------------------------------------------------------------------------
    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The module's state dict with EMA weights in place of the raw parameters."""
        sd = {k: v.detach().clone() for k, v in self.task.state_dict().items()}
        if self.ema is not None:
            names = {id(p): n for n, p in self.task.named_parameters()}
            for p, e in zip(self.params, self.ema, strict=True):
                sd[names[id(p)]] = e.to(p.dtype).clone()
        return sd

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        tensors = {f"model.{k}": v for k, v in self.task.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{i}": e for i, e in enumerate(self.ema)})
        opt_t, opt_meta = ckpt.optimizer_tensors(self.optimizer)
        rng_t, rng_meta = ckpt.rng_state()
        tensors.update(opt_t)
        tensors.update(rng_t)
        meta = {
            "step": self.step,
            "config": self.run_config,
            "data": self.data.state_dict(),
            "optimizer": opt_meta,
            "rng": rng_meta,
            "wall_time": self.wall_time,
        }
        return ckpt.save_checkpoint(
            self.out_dir, self.step, tensors, meta, keep=self.config.keep_checkpoints
        )

    def resume(self) -> bool:
        """Load the newest checkpoint of ``out_dir`` if any; refuse a changed config."""
        path = ckpt.latest_checkpoint(self.out_dir)
        if path is None:
            return False
        tensors, meta = ckpt.load_checkpoint(path)
        changes = config_changes(meta["config"], self.run_config)
        if changes:
            raise ConfigError(
                "cannot resume with a changed config ("
                + "; ".join(changes)
                + "); use a new output directory",
                path=path,
                field=changes[0].split(":")[0],
            )
        self.task.load_state_dict(ckpt.strip_prefix(tensors, "model"))
        if self.ema is not None:
            for i, e in enumerate(self.ema):
                e.copy_(tensors[f"ema.{i}"])
        ckpt.load_optimizer(self.optimizer, tensors, meta["optimizer"])
        ckpt.set_rng_state(tensors, meta["rng"])
        self.data.load_state_dict(meta["data"])
        self.step = int(meta["step"])
        self.wall_time = float(meta.get("wall_time", 0.0))
        self._truncate_metrics()
        return True

    def _truncate_metrics(self) -> None:
        """Drop metrics lines written after the checkpoint we resumed from."""
        path = self.out_dir / "metrics.jsonl"
        if not self.dist.is_main or not path.exists():
            return
        keep = [
            ln
            for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["step"] <= self.step
        ]
        ckpt.write_text_atomic(path, "".join(ln + "\n" for ln in keep))

    # -- training -----------------------------------------------------------------------
    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self.ema, [p.detach().float() for p in self.params], 1 - decay)

    def count_flops(self, batch: Any) -> float:
        """FLOPs of one forward + backward, counted in a separate pass.

        The counting pass is thrown away (grads zeroed, RNG restored): running the real
        step under the counter would change kernel choices, and a resumed run counts on a
        different step than an uninterrupted one — exact resume needs identical numerics.
        """
        rng = torch.get_rng_state()
        counter = FlopCounterMode(display=False)
        with counter:
            with self.prec.autocast():
                loss, _ = self.model(batch)
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
        return float(counter.get_total_flops())

    def train_step(self, batch: Any) -> dict[str, float]:
        cfg = self.config
        lr = cfg.lr_at(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        batch = _to_device(batch, self.prec.device)
        if self.flops_per_step is None:
            self.flops_per_step = self.count_flops(batch)
        with self.prec.autocast():
            loss, metrics = self.model(batch)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(
            self.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._update_ema()
        return {"loss": float(loss.item()), "lr": lr, "grad_norm": float(grad_norm), **metrics}

    def fit(self, resume: bool = True) -> dict[str, float]:
        """Train to ``config.steps``; returns the last metrics plus speed figures."""
        cfg = self.config
        if resume:
            self.resume()
        elif ckpt.latest_checkpoint(self.out_dir) is not None:
            raise ConfigError(
                "output directory already holds a run; resume it or pick another", path=self.out_dir
            )
        if self.step == 0:
            torch.manual_seed(cfg.seed + self.dist.rank)
            np.random.seed(cfg.seed + self.dist.rank)
            random.seed(cfg.seed + self.dist.rank)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.out_dir / "metrics.jsonl", "a") if self.dist.is_main else None
        it = iter(self.data)
        stats = {"samples_per_s": 0.0, "mfu": 0.0}
        last: dict[str, float] = {}
        samples, busy, timed, t_start = 0, 0.0, 0, time.perf_counter()
        with _progress(cfg.progress and self.dist.is_main, cfg.steps, self.step) as bar:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                batch = next(it)
                counted = self.flops_per_step is None  # this step runs under the FLOP counter
                last = self.train_step(batch)
                dt = time.perf_counter() - t0
                self.wall_time += dt
                if not counted:  # speed excludes the (slower) FLOP-counting step
                    busy += dt
                    timed += 1
                    samples += _batch_size(batch) * self.dist.world_size
                stats = {
                    "samples_per_s": samples / max(busy, 1e-9),
                    "mfu": (self.flops_per_step or 0.0)
                    * timed
                    / max(busy, 1e-9)
                    / self.prec.peak_flops,
                }
                if log is not None and self.step % cfg.log_every == 0:
                    row = {
                        "step": self.step,
                        **last,
                        **stats,
                        "wall_time": round(self.wall_time, 3),
                    }
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
                    D.barrier(self.dist)
                bar(self.step, last, stats)
        if log is not None:
            log.close()
        return {
            **last,
            "step": self.step,
            **stats,
            "flops_per_step": self.flops_per_step or 0.0,
            "peak_flops": self.prec.peak_flops,
            "precision": self.prec.name,
            "wall_time": self.wall_time,
            "elapsed": time.perf_counter() - t_start,
        }


def _forced(name: str) -> Precision:
    import os

    old = os.environ.get("COSMOS_SIM_PRECISION")
    os.environ["COSMOS_SIM_PRECISION"] = name
    try:
        return precision()
    finally:
        if old is None:
            del os.environ["COSMOS_SIM_PRECISION"]
        else:
            os.environ["COSMOS_SIM_PRECISION"] = old


class _progress:
    """A rich progress bar (or nothing): call it with (step, metrics, speed)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled, self.total, self.start = enabled, total, start

    def __enter__(self):
        if not self.enabled:
            return lambda *a: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, completed=self.start, info="")

        def update(step: int, m: dict, s: dict) -> None:
            info = f"loss {m.get('loss', float('nan')):.4f}  {s['samples_per_s']:.1f} samples/s  MFU {100 * s['mfu']:.0f}%"
            if "psnr" in m:
                info += f"  {m['psnr']:.1f} dB"
            self.progress.update(self.task, completed=step, info=info)

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()
        return False
