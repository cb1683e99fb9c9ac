"""Run-time choices about the CPU: threads by load."""

import os

import torch

from cosmos_sim.device import configure_threads


def test_threads_follow_the_machine_load_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        assert configure_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 3.0))
        assert configure_threads() == 1  # busy cores: one thread, never zero
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(1)
        assert configure_threads() == 1  # the user's (or the launcher's) choice stands
    finally:
        torch.set_num_threads(before)
