"""Omniverse bridge: a Replicator Writer that records episodes straight into the store.

This folder is also a Kit extension (``config/extension.toml``, Python module
``cosmos_sim_kit``). :class:`CosmosSimWriterCore` is pure Python; only
:mod:`cosmos_sim.bridge.omniverse.kit` imports ``omni.*`` (and only inside Kit).
"""

from __future__ import annotations

from pathlib import Path

from cosmos_sim.bridge.omniverse.core import (
    CosmosSimWriterCore,
    WriterConfig,
    split_render_products,
)

EXTENSION_NAME = "omniverse"  # Kit names an extension after its folder


def extension_folder() -> Path:
    """The Kit extension folder (the one holding ``config/extension.toml``)."""
    return Path(__file__).resolve().parent


def extension_search_path() -> Path:
    """The folder to add to Kit's extension search path (``--ext-folder``)."""
    return extension_folder().parent


__all__ = [
    "CosmosSimWriterCore",
    "WriterConfig",
    "split_render_products",
    "extension_folder",
    "extension_search_path",
    "EXTENSION_NAME",
]
