"""Run every benchmark (or those named): python -m benchmarks [name ...]."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

SKIP = {"common", "__main__"}


def main(names: list[str]) -> int:
    from cosmos_sim.device import configure_threads

    print(f"torch threads: {configure_threads()} (by machine load; OMP_NUM_THREADS overrides)")
    available = sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in SKIP
    )
    chosen = names or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"\n=== benchmarks/{name}.py ===", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").main()
        except Exception as e:  # one broken benchmark must not hide the others' figures
            print(f"benchmarks/{name}.py failed: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
        print(f"({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
