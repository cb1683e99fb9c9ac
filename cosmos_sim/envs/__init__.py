"""Gymnasium environments: the simulator itself and (later) world models imitating it."""

from cosmos_sim.envs.registration import register_envs

__all__ = ["register_envs"]
