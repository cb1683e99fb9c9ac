"""Model directories: save, load and list the shipped model zoo. Never unpickles.

On-disk layout::

    models/<name>/
      config.toml           kind = "tokenizer", format_version, dtype, [config] the model config
      weights.safetensors   the state dict in fp16 / bf16
      stats.json            optional: normalisation statistics (actions, latents)
      card.md               data, exact command, wall time, metrics, training curve

Model *kinds* (tokenizer, diffusion, autoregressive, …) register how to rebuild the
module from its config dict, so every world model reuses this one loader.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cosmos_sim.errors import ModelError

FORMAT_VERSION = 1
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class ModelKind:
    """How to rebuild a module of one kind from its ``[config]`` table."""

    build: Callable[[dict], nn.Module]


KINDS: dict[str, ModelKind] = {}


def register_kind(name: str, build: Callable[[dict], nn.Module]) -> None:
    KINDS[name] = ModelKind(build)


def _register_builtin() -> None:
    from cosmos_sim.models.tokenizer import TokenizerConfig, VideoTokenizer
    from cosmos_sim.models.world_model import ActionWorldModel

    KINDS.setdefault("tokenizer", ModelKind(lambda cfg: VideoTokenizer(TokenizerConfig(**cfg))))
    KINDS.setdefault("world-model-diffusion", ModelKind(ActionWorldModel.from_config))


def models_root() -> Path:
    """The shipped zoo: ``$COSMOS_SIM_MODELS`` or the repository's ``models/``."""
    env = os.environ.get("COSMOS_SIM_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def shipped_models() -> list[str]:
    root = models_root()
    return (
        sorted(p.name for p in root.glob("*") if (p / "config.toml").exists())
        if root.exists()
        else []
    )


def resolve(path_or_name: str | Path) -> Path:
    """A model directory path, or a name in the shipped zoo; ModelError listing the zoo."""
    path = Path(path_or_name)
    for candidate in (path, models_root() / path.name):
        if (candidate / "config.toml").exists():
            return candidate
    raise ModelError(
        "not a model directory (no config.toml)",
        path=path,
        expected=f"one of the shipped models {shipped_models()} or a directory saved by save_model",
        found="missing" if not path.exists() else sorted(p.name for p in path.iterdir())[:6],
    )


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # inline table (a list of records, e.g. the DiT's state points)
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps_toml(data: dict, prefix: str = "") -> str:
    """A small TOML writer: scalars and lists, and nested [tables] (``[config.dit]``)."""
    lines = [
        f"{k} = {_toml_value(v)}"
        for k, v in data.items()
        if not isinstance(v, dict) and v is not None
    ]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            lines += ["", f"[{name}]", dumps_toml(v, f"{name}.").rstrip("\n")]
    return "\n".join(line for line in lines if line is not None) + "\n"


def portable_path(path: str | Path) -> str:
    """``path`` relative to the working directory when under it (a clone elsewhere then
    finds it too), else as given: how a model's config names another model."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def weights_hash(model_dir: str | Path) -> str:
    """sha256 (first 16 hex) of weights.safetensors: identifies the exact model."""
    h = hashlib.sha256()
    with open(Path(model_dir) / "weights.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def save_model(
    out_dir: str | Path,
    kind: str,
    config: dict,
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: str = "fp16",
    stats: dict | None = None,
    card: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a model directory atomically (temp dir, then rename)."""
    out = Path(out_dir)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        **(extra or {}),
        "config": config,
    }
    (tmp / "config.toml").write_text(dumps_toml(meta))
    cast = {
        k: (v.to(_DTYPES[dtype]) if v.is_floating_point() else v).contiguous()
        for k, v in state_dict.items()
    }
    save_file(cast, str(tmp / "weights.safetensors"))
    os.chmod(tmp / "weights.safetensors", 0o644)
    if stats is not None:
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
    if card is not None:
        (tmp / "card.md").write_text(card)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


@dataclass
class LoadedModel:
    module: nn.Module
    kind: str
    config: dict
    path: Path
    stats: dict | None
    weights_hash: str

    @property
    def latent_hash(self) -> str:
        """What keys this model's latents (caches, a world model's tokenizer check): its own
        weights hash, or for a tokenizer whose decoder alone was fine-tuned
        (``latents_of``), the hash of the tokenizer whose encoder it kept bit-for-bit."""
        return str(self.config.get("latents_of", self.weights_hash))


def load_tokenizer_of(
    world_model: LoadedModel,
    device: str | torch.device = "cpu",
    decoder: str | Path | None = None,
) -> LoadedModel:
    """The tokenizer a world model was trained on (``tokenizer`` in its config), refused
    unless its latents are the ones the model was trained with (``tokenizer_hash``).

    ``decoder``: another tokenizer model directory with those latents to decode with
    instead — a decoder-only fine-tune such as a fast decoder (its ``latents_of``)."""
    meta = world_model.config
    for key in ("tokenizer", "tokenizer_hash"):
        if key not in meta:
            raise ModelError("missing field", path=world_model.path / "config.toml", field=key)
    if decoder is not None:
        tok = load_model(decoder, device)
        if tok.kind != "tokenizer" or tok.latent_hash != meta["tokenizer_hash"]:
            raise ModelError(
                "the decoder is not for this world model's latents",
                path=tok.path / "config.toml",
                field="latents_of",
                expected=f"{meta['tokenizer_hash']} (the latents of {meta['tokenizer']})",
                found=tok.latent_hash if tok.kind == "tokenizer" else f"a {tok.kind}",
            )
        return tok
    try:
        tok = load_model(meta["tokenizer"], device)
    except ModelError:
        tok = load_model(meta.get("tokenizer_path", meta["tokenizer"]), device)
    if tok.latent_hash != meta["tokenizer_hash"]:
        raise ModelError(
            "the world model was trained with a different tokenizer",
            path=world_model.path / "config.toml",
            field="tokenizer_hash",
            expected=meta["tokenizer_hash"],
            found=f"{tok.latent_hash} ({tok.path})",
        )
    return tok


def read_config(model_dir: str | Path) -> dict:
    path = resolve(model_dir) / "config.toml"
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"config is not valid TOML: {e}", path=path) from e


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild and load a model directory (fp32 weights, eval mode, no grad)."""
    _register_builtin()
    path = resolve(model_dir)
    meta = read_config(path)
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ModelError(
            "unknown model kind",
            path=path / "config.toml",
            field="kind",
            expected=sorted(KINDS),
            found=kind,
        )
    weights = path / "weights.safetensors"
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise ModelError(f"weights are corrupt or truncated: {e}", path=weights) from e
    module = KINDS[kind].build(dict(meta.get("config", {})))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(
            f"weights do not match the config: {str(e).splitlines()[0]}", path=weights
        ) from e
    module.to(device).eval().requires_grad_(False)
    stats_file = path / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
    return LoadedModel(module, kind, meta, path, stats, weights_hash(path))
