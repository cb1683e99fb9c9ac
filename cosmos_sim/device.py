"""Device and precision: CUDA when present, else CPU with fp32 or bf16 autocast.

bf16 autocast is ~2× faster than fp32 on CPUs with native bf16 (AVX512-BF16 / AMX) and
~10× *slower* on AVX2-only CPUs, so the choice is measured once per (CPU, torch) pair —
a short fp32 vs bf16 matmul and conv timing — and cached as JSON::

    ~/.cache/cosmos_sim/precision-<cpu>-<torch>.json
        {"dtype": "bf16", "capability": "AVX512", "matmul_flops": {"fp32": ..., "bf16": ...},
         "conv_flops": {...}}

``COSMOS_SIM_PRECISION=fp32|bf16`` overrides the choice (the peak is still measured).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cosmos_sim.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """What to run in: the device, the autocast dtype (None = plain fp32) and its peak."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    peak_flops: float  # measured matmul FLOP/s in that precision on this machine (all threads)
    name: str  # "fp32" | "bf16"

    def autocast(self):
        """A context manager enabling autocast (or a no-op for fp32)."""
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def _cache_path() -> Path:
    key = f"{_cpu_name()}|{torch.backends.cpu.get_cpu_capability()}|{torch.get_num_threads()}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cosmos_sim"
    return root / f"precision-{digest}-torch{torch.__version__.split('+')[0]}.json"


def _time_flops(fn, flops: float, min_time: float = 0.15) -> float:
    """FLOP/s of ``fn``: best of a few timed repeats after a warm-up call."""
    fn()
    best = float("inf")
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_time:
            fn()
            n += 1
        best = min(best, elapsed / n)
    return flops / best


def measure_cpu(dtype: torch.dtype | None) -> tuple[float, float]:
    """(matmul FLOP/s, conv FLOP/s) on the CPU with autocast to ``dtype`` (None = fp32)."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = torch.randn(16, 128, 16, 16)
    w = torch.randn(128, 128, 3, 3)
    ctx = lambda: torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)  # noqa: E731

    def mm():
        with torch.no_grad(), ctx():
            torch.mm(a, b)

    def conv():
        with torch.no_grad(), ctx():
            torch.nn.functional.conv2d(x, w, padding=1)

    conv_flops = 2 * 16 * 16 * 16 * 128 * 128 * 9
    return _time_flops(mm, 2 * n**3), _time_flops(conv, conv_flops)


def probe_cpu(refresh: bool = False) -> dict:
    """Measure (or read the cached) fp32 vs bf16 speed on this CPU; pick the faster dtype."""
    path = _cache_path()
    if path.exists() and not refresh:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    mm32, conv32 = measure_cpu(None)
    try:
        mm16, conv16 = measure_cpu(torch.bfloat16)
    except RuntimeError:  # no bf16 kernels at all
        mm16, conv16 = 0.0, 0.0
    # bf16 must win on both the matmul and the conv (the tokenizer is convolutional).
    use_bf16 = mm16 > 1.2 * mm32 and conv16 > 1.0 * conv32
    result = {
        "dtype": "bf16" if use_bf16 else "fp32",
        "capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_flops": {"fp32": mm32, "bf16": mm16},
        "conv_flops": {"fp32": conv32, "bf16": conv16},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return result


def _cuda_peak(dtype: torch.dtype) -> float:
    n = 4096
    a = torch.randn(n, n, device="cuda", dtype=dtype)

    def mm():
        a @ a
        torch.cuda.synchronize()

    return _time_flops(mm, 2 * n**3)


def precision(device: torch.device | str | None = None) -> Precision:
    """The device, autocast dtype and measured peak FLOP/s to train with."""
    device = torch.device(device) if device is not None else pick_device()
    override = os.environ.get("COSMOS_SIM_PRECISION")
    if override is not None and override not in _DTYPES:
        raise ConfigError(
            "unknown precision",
            field="COSMOS_SIM_PRECISION",
            expected="fp32 or bf16",
            found=override,
        )
    if device.type == "cuda":
        name = override or "bf16"
        peak = _cuda_peak(_DTYPES[name])
    else:
        probe = probe_cpu()
        name = override or probe["dtype"]
        peak = float(probe["matmul_flops"][name]) or float(probe["matmul_flops"]["fp32"])
    dtype = None if name == "fp32" else _DTYPES[name]
    return Precision(device=device, autocast_dtype=dtype, peak_flops=peak, name=name)
