"""Env speed on push: the simulator env (one camera, and the three cameras front/top/side),
the world-model env one at a time, and the world-model vector env with 8 and 32 sub-envs,
in the same run; frames/s (env frames: one per control step, whatever the camera count)
and the share of the measured matmul peak the batched forward reaches: the FLOPs of one
steady-state vector step (context cache full: the DiT's matmuls and attention, the decoder's
convolutions) over its time, measured as the mean of three more steps.

Target: the WM vector env at least as fast (frames/s) as the simulator it imitates with
three cameras, in the simulator's fastest rendering setting (RGB only, no shadows). The
action model generates one camera; the multi-view model (all three jointly) is timed
beside it when shipped, and both again with the fast decoder
(``decoder="tokenizer-cv-4x8x8-pca-fast"``, ~6× fewer decoder FLOPs) when it is shipped.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import cosmos_sim  # noqa: F401
from benchmarks.common import print_table, write_result
from cosmos_sim.device import measure_cpu, precision
from cosmos_sim.models.zoo import shipped_models

MODEL = "wm-diffusion-push"
MULTIVIEW = "wm-diffusion-push-multiview"
FAST_DECODER = "tokenizer-cv-4x8x8-pca-fast"
TASK = "Push"
STEPS = 10
REPEATS = 3  # every speed is the best of 3 timings: the machine is shared, noise only slows


def _attention_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """QKᵀ and PV of one SDPA call: 2·B·heads·Nq·Nk·(hs + hs_v)."""
    b, h, nq, hs = q_shape
    return 2 * b * h * nq * k_shape[2] * (hs + v_shape[3])


# FlopCounterMode knows SDPA's CUDA kernels, not the CPU flash kernel SDPA runs here: without
# this every attention FLOP counts as zero.
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}


def time_env(env, batch: int, steps: int = STEPS, repeats: int = REPEATS) -> float:
    """Env steps per second (sub-env steps for a vector env): the best of ``repeats`` timings
    of ``steps`` − 1 steps, each after a reset and one warm-up step."""
    zeros = np.zeros(env.action_space.shape, np.float32)
    best = 0.0
    for _ in range(repeats):
        env.reset(seed=0)
        env.step(zeros)  # warm up
        t0 = time.perf_counter()
        for _ in range(steps - 1):
            env.step(zeros)
        best = max(best, batch * (steps - 1) / (time.perf_counter() - t0))
    return best


def main() -> dict:
    rows, result = [], {"task": TASK, "model": MODEL}
    sim = gym.make(f"cosmos_sim/{TASK}-v0", cameras="front", size=64)
    sim_sps = time_env(sim, 1)
    chunk = sim.action_space.shape[0]
    result["simulator_1_camera"] = {"steps_per_s": sim_sps, "frames_per_s": sim_sps * chunk}
    rows.append(["simulator, front (rgb, no shadows)", 1, sim_sps, sim_sps * chunk, "-"])
    sim3 = gym.make(f"cosmos_sim/{TASK}-v0", cameras="front,top,side", size=64)
    sim_sps = time_env(sim3, 1)
    result["simulator"] = {"steps_per_s": sim_sps, "frames_per_s": sim_sps * chunk}
    rows.append(["simulator, front+top+side", 1, sim_sps, sim_sps * chunk, "-"])
    if MODEL not in shipped_models():
        result["world_model"] = "not shipped yet"
    else:
        prec = precision("cpu")  # what the WM env runs its DiT in (bf16 where it is faster)
        peak = measure_cpu(prec.autocast_dtype)[0]  # that precision's matmul peak, measured now
        result["precision"], result["matmul_peak_flops"] = prec.name, peak
        single = gym.make("cosmos_sim/WorldModel-v0", model=MODEL)
        sps = time_env(single, 1)
        result["wm_single"] = {"steps_per_s": sps, "frames_per_s": sps * chunk}
        rows.append(["world model, single", 1, sps, sps * chunk, "-"])
        shipped = shipped_models()
        runs = [(MODEL, 8, None), (MODEL, 32, None), (MULTIVIEW, 32, None)]
        runs += [(MODEL, 32, FAST_DECODER), (MULTIVIEW, 32, FAST_DECODER)]
        for model, n, decoder in runs:
            if model not in shipped or (decoder is not None and decoder not in shipped):
                continue
            fast = {} if decoder is None else {"decoder": decoder}
            vec = gym.make_vec("cosmos_sim/WorldModel-v0", num_envs=n, model=model, **fast)
            sps = time_env(vec, n, steps=4)  # leaves the context cache full: steady state
            zeros = np.zeros(vec.action_space.shape, np.float32)
            with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
                vec.step(zeros)
            flops = counter.get_total_flops()
            t0 = time.perf_counter()
            for _ in range(3):
                vec.step(zeros)
            share = 3 * flops / (time.perf_counter() - t0) / peak
            key = f"wm_vector_{n}" + ("_multiview" if model == MULTIVIEW else "")
            key += "" if decoder is None else "_fast_decoder"
            result[key] = {"steps_per_s": sps, "frames_per_s": sps * chunk, "peak_share": share}
            label = "multi-view world model (3 cameras)" if model == MULTIVIEW else "world model"
            label += "" if decoder is None else ", fast decoder"
            rows.append([f"{label}, vector", n, sps, sps * chunk, f"{share:.1%}"])
        for key in list(result):
            if key.startswith("wm_vector_32"):
                result[f"{key}_vs_simulator"] = (
                    result[key]["frames_per_s"] / result["simulator"]["frames_per_s"]
                )
    result["threads"] = torch.get_num_threads()
    print_table(
        "env speed", ["env", "envs", "env steps/s", "frames/s", "share of matmul peak"], rows
    )
    print(f"wrote {write_result('envs', result)}")
    return result


if __name__ == "__main__":
    main()
