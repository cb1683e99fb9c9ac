import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).parent))  # tests/factories.py

import torch  # noqa: E402

# The tests' tensors are tiny: one thread is as fast, and far faster when other jobs load
# the machine (two OpenMP threads then wait on each other for every small op).
torch.set_num_threads(1)
