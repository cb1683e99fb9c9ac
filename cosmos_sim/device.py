"""Device and precision: CUDA when present, else CPU with fp32 or bf16 autocast.

bf16 autocast is ~2× faster than fp32 on CPUs with native bf16 (AVX512-BF16 / AMX) and
~10× *slower* on AVX2-only CPUs, so the choice is measured once per (CPU, torch) pair —
a short fp32 vs bf16 matmul and conv timing — and cached as JSON::

    ~/.cache/cosmos_sim/precision-<cpu>-<torch>.json
        {"dtype": "bf16", "capability": "AVX512", "matmul_flops": {"fp32": ..., "bf16": ...},
         "conv_flops": {...}}

``COSMOS_SIM_PRECISION=fp32|bf16`` overrides the choice (the peak is still measured).

Inference attention is measured the same way, once per dtype, and cached in the same file
(``"attention": {"bf16": {"sdpa": ..., "bmm": ...}}``): SDPA's CPU flash kernel against
plain batched matmuls (:func:`cosmos_sim.models.attention.bmm_attention`), at the shape
of a multi-view world-model env step.
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


def _native_bf16() -> bool | None:
    """Whether the CPU has bf16 arithmetic (AVX512-BF16 / AMX-BF16); None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), None
    )
    if flags is None:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cache_path() -> Path:
    key = f"{_cpu_name()}|{torch.backends.cpu.get_cpu_capability()}|{torch.get_num_threads()}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cosmos_sim"
    return root / f"precision-{digest}-torch{torch.__version__.split('+')[0]}.json"


def _time_flops(fn, flops: float, calls: int = 100) -> float:
    """Peak FLOP/s of ``fn``: the fastest of ``calls`` individually timed calls.

    The machine is shared, so a mean would measure the neighbours; the fastest call is
    the closest to what the hardware does when it is ours.
    """
    fn()
    fn()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
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
    """Measure (or read the cached) fp32 vs bf16 speed on this CPU; pick the faster dtype.

    ``refresh`` measures again and keeps, per figure, the best of the old and new
    measurement: on a shared machine a peak can only be under-measured, never over.
    """
    path = _cache_path()
    old = None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old is not None and not refresh:
            return old
    mm32, conv32 = measure_cpu(None)
    try:
        mm16, conv16 = measure_cpu(torch.bfloat16)
    except RuntimeError:  # no bf16 kernels at all
        mm16, conv16 = 0.0, 0.0
    if old is not None:
        mm32, mm16 = max(mm32, old["matmul_flops"]["fp32"]), max(mm16, old["matmul_flops"]["bf16"])
        conv32, conv16 = (
            max(conv32, old["conv_flops"]["fp32"]),
            max(conv16, old["conv_flops"]["bf16"]),
        )
    native = _native_bf16()
    if native is None:  # flags unknown: trust the timing alone
        # bf16 must win on both the matmul and the conv (the tokenizer is convolutional).
        use_bf16 = mm16 > 1.2 * mm32 and conv16 > 1.0 * conv32
    else:  # flags known: a busy shared machine can blur timings, so they only veto
        use_bf16 = native and mm16 > 0.8 * mm32 and conv16 > 0.8 * conv32
    result = {
        "dtype": "bf16" if use_bf16 else "fp32",
        "capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": _cpu_name(),
        "native_bf16": native,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_flops": {"fp32": mm32, "bf16": mm16},
        "conv_flops": {"fp32": conv32, "bf16": conv16},
    }
    _write_probe(result)
    return result


def _write_probe(result: dict) -> None:
    """Write the probe's JSON atomically (several processes may probe at once)."""
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)


def measure_attention(dtype: torch.dtype) -> dict[str, float]:
    """Inference attention FLOP/s on the CPU in ``dtype``, SDPA vs chunked batched matmuls,
    at a world-model env step's shape (16 envs × 4 heads, 192 queries of 48 over 768 keys)."""
    from cosmos_sim.models.attention import bmm_attention

    q, k, v = (torch.randn(16, 4, n, 48, dtype=dtype) for n in (192, 768, 768))
    flops = 4 * 16 * 4 * 192 * 768 * 48
    with torch.no_grad():
        return {
            "sdpa": _time_flops(
                lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), flops, 5
            ),
            "bmm": _time_flops(lambda: bmm_attention(q, k, v), flops, 5),
        }


def cpu_attention_kernel(dtype: torch.dtype) -> str:
    """``"bmm"`` or ``"sdpa"``: which runs inference attention in ``dtype`` faster on this
    CPU (bmm must win by 10 %), measured once and kept in the precision probe's cache.
    On a CPU with native bf16 the matmuls win in bf16 (here 1.5-1.7× at the env's shapes);
    in fp32 SDPA does."""
    name = next((n for n, d in _DTYPES.items() if d == dtype), None)
    if name is None:
        return "sdpa"
    probe = probe_cpu()
    measured = probe.setdefault("attention", {})
    if name not in measured:
        try:
            measured[name] = measure_attention(dtype)
        except RuntimeError:  # no kernels for this dtype
            measured[name] = {"sdpa": 1.0, "bmm": 0.0}
        _write_probe(probe)
    return "bmm" if measured[name]["bmm"] > 1.1 * measured[name]["sdpa"] else "sdpa"


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


def configure_threads() -> int:
    """Torch CPU threads for this process: every core on an idle machine, fewer when other
    processes already keep cores busy — OpenMP threads then wait on each other on every op
    (measured here: a small linear layer 24 ms with 2 threads on a loaded 2-core machine,
    2 ms with 1). ``OMP_NUM_THREADS`` or an explicit ``torch.set_num_threads`` wins."""
    if os.environ.get("OMP_NUM_THREADS") or torch.cuda.is_available():
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = max(1, min(cores, round(cores - busy)))
    torch.set_num_threads(threads)
    return threads
