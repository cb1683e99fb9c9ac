"""The Trainer: exact resume after SIGKILL, config-change refusal, corrupt checkpoints, DDP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.training import checkpoint as ckpt
from cosmos_sim.training.trainer import Trainer, TrainerConfig, param_groups

ROOT = Path(__file__).resolve().parents[2]

# A tiny real run: a 2-level causal tokenizer on seeded random clips, bf16/fp32 as probed.
RUN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from cosmos_sim.models.tokenizer import TokenizerConfig, VideoTokenizer
    from cosmos_sim.training.tokenizer_task import TokenizerTask
    from cosmos_sim.training.trainer import Trainer, TrainerConfig

    class Clips:
        def __init__(self):
            self.consumed = 0
        def state_dict(self):
            return {"consumed": self.consumed}
        def load_state_dict(self, s):
            self.consumed = s["consumed"]
        def __iter__(self):
            while True:
                if self.consumed == int(os.environ.get("KILL_AT", "-1")):
                    os.kill(os.getpid(), signal.SIGKILL)  # a real, uncatchable kill mid-run
                g = torch.Generator().manual_seed(1000 + self.consumed)
                self.consumed += 1
                yield {"video": torch.randint(0, 256, (2, 5, 3, 16, 16), generator=g, dtype=torch.uint8)}

    torch.manual_seed(0)
    cfg = TokenizerConfig(kind=os.environ.get("KIND", "cv"), width=16, width_low=16, enc_blocks=(1, 1), dec_blocks=(1, 1))
    task = TokenizerTask(VideoTokenizer(cfg))
    tcfg = TrainerConfig(steps=12, lr=float(os.environ.get("LR", "1e-3")), warmup_steps=3,
                         checkpoint_every=4, ema_decay=0.9, progress=False, keep_checkpoints=5)
    Trainer(task, tcfg, Clips(), sys.argv[1], run_config={"model": cfg.to_dict()}).fit()
    """
)


def _run(out: Path, script: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, str(script), str(out)],
        env=full,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "run.py"
    path.write_text(RUN_SCRIPT)
    return path


def test_sigkill_then_resume_is_bit_identical(tmp_path, script):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert _run(clean, script).returncode == 0
    first = _run(killed, script, KILL_AT="10")  # dies during step 11, after the step-8 checkpoint
    assert first.returncode == -signal.SIGKILL
    assert ckpt.latest_checkpoint(killed).name == "step-00000008"
    assert _run(killed, script).returncode == 0
    assert _losses(killed) == _losses(clean)  # the whole curve, exactly, no duplicated steps
    assert [s for s, _ in _losses(killed)] == list(range(1, 13))
    a = load_file(str(ckpt.latest_checkpoint(clean) / "state.safetensors"))
    b = load_file(str(ckpt.latest_checkpoint(killed) / "state.safetensors"))
    weights = [k for k in a if k.startswith(("model.", "ema.", "optim."))]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)


def test_resume_with_changed_config_names_the_field(tmp_path, script):
    out = tmp_path / "run"
    assert _run(out, script, KILL_AT="6").returncode == -signal.SIGKILL
    bad = _run(out, script, LR="2e-3")
    assert bad.returncode != 0
    assert "trainer.lr" in bad.stderr and "0.001" in bad.stderr and "0.002" in bad.stderr


def test_truncated_checkpoint_raises_model_error_naming_the_file(tmp_path):
    task = torch.nn.Linear(4, 4)
    tensors = {"model.weight": torch.randn(4, 4)}
    path = ckpt.save_checkpoint(tmp_path, 3, tensors, {"step": 3})
    state = path / ckpt.STATE_FILE
    state.write_bytes(state.read_bytes()[:-20])
    with pytest.raises(ModelError, match="state.safetensors"):
        ckpt.load_checkpoint(path)
    (path / ckpt.META_FILE).write_text('{"step": 3')
    with pytest.raises(ModelError, match="trainer.json"):
        ckpt.load_checkpoint(path)
    del task


def test_weight_decay_rule():
    m = torch.nn.ModuleDict(
        {
            "embed": torch.nn.Embedding(10, 8),
            "lin": torch.nn.Linear(8, 8),
            "norm": torch.nn.LayerNorm(8),
        }
    )
    decay, no_decay = param_groups(m, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([8, 8])]  # only the Linear weight
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


def test_schedule_warmup_then_cosine():
    cfg = TrainerConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0) and cfg.lr_at(100) == pytest.approx(0.1)
    assert cfg.lr_at(55) == pytest.approx(0.55)


@pytest.mark.parametrize(
    "field, value", [("steps", 0), ("warmup_steps", 5000), ("ema_decay", 1.0), ("precision", "fp8")]
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainerConfig(**{field: value})


def test_existing_run_without_resume_refuses(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, {"x": torch.zeros(1)}, {"step": 1})
    trainer = Trainer(
        torch.nn.Linear(2, 2), TrainerConfig(steps=2, warmup_steps=0), data=None, out_dir=tmp_path
    )
    with pytest.raises(ConfigError, match="already holds a run"):
        trainer.fit(resume=False)


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from cosmos_sim.training import distributed as D
    from cosmos_sim.training.trainer import Trainer, TrainerConfig

    class Task(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 1)
        def training_step(self, batch):
            loss = (self.lin(batch["x"]).squeeze(-1) - batch["y"]).pow(2).mean()
            return loss, {}

    class Data:
        def __init__(self, rank):
            self.k, self.rank = 0, rank
        def state_dict(self):
            return {"k": self.k}
        def load_state_dict(self, s):
            self.k = s["k"]
        def __iter__(self):
            while True:
                g = torch.Generator().manual_seed(10 * self.k + self.rank)
                self.k += 1
                x = torch.randn(4, 8, generator=g)
                yield {"x": x, "y": x.sum(-1)}

    info = D.init_distributed()
    torch.manual_seed(0)
    task = Task()
    out = Trainer(task, TrainerConfig(steps=2, warmup_steps=0, progress=False, precision="fp32"),
                  Data(info.rank), sys.argv[1], dist_info=info).fit()
    w = task.lin.weight.detach().clone()
    gathered = [torch.zeros_like(w) for _ in range(info.world_size)]
    torch.distributed.all_gather(gathered, w)
    assert torch.equal(gathered[0], gathered[1]), "DDP replicas diverged"
    # one write per line: both ranks print at once (after the barrier) into one pipe
    sys.stdout.write(f"rank {info.rank} world {info.world_size} step {out['step']}\\n")
    sys.stdout.flush()
    D.shutdown()
    """
)


# Both ranks finish training and agree, but gloo sometimes aborts a rank while the
# interpreter exits ("terminate called without an active exception", about 1 run in 5
# in the full suite): kept out of `make test` until that teardown is fixed; `make test-slow`.
@pytest.mark.slow
def test_ddp_two_processes_run_two_steps(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port: other test runs may share this machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        str(torchrun),
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
        str(script),
        str(tmp_path / "out"),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "rank 0 world 2 step 2" in res.stdout and "rank 1 world 2 step 2" in res.stdout
    assert ckpt.latest_checkpoint(tmp_path / "out").name == "step-00000002"


def test_precision_override_and_cache(monkeypatch, tmp_path):
    from cosmos_sim import device

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(
        device, "measure_cpu", lambda dtype: (1e11, 1e11) if dtype is None else (2e11, 2e11)
    )
    monkeypatch.setattr(device, "_native_bf16", lambda: True)
    assert device.precision("cpu").name == "bf16" and device.precision("cpu").peak_flops == 2e11
    assert list(tmp_path.glob("cosmos_sim/precision-*.json"))  # cached as JSON
    monkeypatch.setattr(device, "_native_bf16", lambda: False)  # the cache answers, no re-measure
    assert device.precision("cpu").name == "bf16"
    monkeypatch.setenv("COSMOS_SIM_PRECISION", "fp32")
    p = device.precision("cpu")
    assert p.name == "fp32" and p.autocast_dtype is None and p.peak_flops == 1e11
    monkeypatch.setenv("COSMOS_SIM_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="COSMOS_SIM_PRECISION"):
        device.precision("cpu")


def test_avx2_only_cpu_picks_fp32(monkeypatch, tmp_path):
    from cosmos_sim import device

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # an AVX2-only CPU: bf16 emulated, ~10× slower than fp32
    monkeypatch.setattr(
        device, "measure_cpu", lambda dtype: (1e11, 1e11) if dtype is None else (1e10, 1e10)
    )
    monkeypatch.setattr(device, "_native_bf16", lambda: False)
    assert device.precision("cpu").name == "fp32"
