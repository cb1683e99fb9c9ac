"""LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A chosen ``nn.Linear`` keeps its weight W frozen and learns a low-rank update::

    y = W x + b + (α / r) · B A dropout(x)        A (r, in), B (out, r), B = 0 at init

so at init the model is exactly the base model, and only ``r · (in + out)`` numbers per
layer train. By default the DiT blocks' self-attention (``attn.qkv``, ``attn.proj``) and
MLP (``mlp.0``, ``mlp.2``) linears are adapted (:data:`DIT_TARGETS`).

An adapter is a small model directory that loads on top of its base model::

    adapter/
      config.toml           kind = "lora", rank, alpha, dropout, targets,
                            base_model (name), base_weights_hash (zoo.weights_hash)
      weights.safetensors   only the lora_A / lora_B tensors, keyed by layer
      card.md               how it was trained

Apply one to a world model (e.g. before building an env around it)::

    base = zoo.load_model("wm-diffusion-reach")
    load_lora(base, "out/finetune/adapter")   # checks the base hash, layers and shapes
    merge_lora(base.module)                   # optional: fold B A into W (plain Linears again)

or write the merged model as a whole model directory, e.g. for ``WorldModel-v0`` /
``cosmos-sim rollout --model``: ``export_merged("wm-diffusion-reach", adapter, "models/my-wm")``.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.models import zoo

KIND = "lora"
# fnmatch patterns over qualified module names ("wm.denoiser.inner_model.blocks.3.mlp.0"):
# every DiTBlock's self-attention and MLP linears.
DIT_TARGETS = ("*blocks.*.attn.qkv", "*blocks.*.attn.proj", "*blocks.*.mlp.0", "*blocks.*.mlp.2")
ADAPTER_KEYS = ("lora_A", "lora_B")


class LoRALinear(nn.Linear):
    """y = W x + b + (α/r)·B A dropout(x), W and b frozen (shared with the base layer)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base.in_features, base.out_features, base.bias is not None, device="meta")
        self.weight = base.weight  # the base's own parameters: no copy, state-dict keys unchanged
        self.bias = base.bias
        self.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(
            torch.empty(rank, self.in_features, device=w.device, dtype=w.dtype)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(self.out_features, rank, device=w.device, dtype=w.dtype)
        )
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear; B = 0 → ΔW = 0
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scaling * update

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear with W + (α/r)·B A: the same outputs, no extra matmuls."""
        lin = nn.Linear(self.in_features, self.out_features, self.bias is not None, device="meta")
        lin.weight = nn.Parameter(self.weight + self.scaling * (self.lora_B @ self.lora_A))
        lin.bias = None if self.bias is None else nn.Parameter(self.bias.detach().clone())
        return lin.requires_grad_(self.weight.requires_grad)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def find_targets(model: nn.Module, targets: tuple[str, ...] | list[str] = DIT_TARGETS) -> list[str]:
    """Names of the plain nn.Linear layers matching any pattern; ConfigError if a pattern
    matches none, or the model already carries adapters."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ConfigError(
            "the model already has LoRA adapters: merge_lora() it first", field="targets"
        )
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    for pattern in targets:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in linears):
            raise ConfigError(
                "LoRA target matches no nn.Linear layer",
                field="targets",
                expected=f"patterns over names such as {linears[:3]}",
                found=pattern,
            )
    return [n for n in linears if any(fnmatch.fnmatchcase(n, p) for p in targets)]


def add_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float | None = None,
    targets: tuple[str, ...] | list[str] = DIT_TARGETS,
    dropout: float = 0.0,
) -> list[str]:
    """Freeze ``model`` and wrap its target Linears in :class:`LoRALinear` (in place).

    ``alpha`` defaults to ``rank`` (scale 1). Returns the wrapped layers' names; afterwards
    only the adapters' A and B require grad.
    """
    if rank < 1:
        raise ConfigError("must be ≥ 1", field="lora_rank", found=rank)
    if not 0 <= dropout < 1:
        raise ConfigError("must be in [0, 1)", field="lora_dropout", found=dropout)
    names = find_targets(model, targets)
    model.requires_grad_(False)
    for name in names:
        _set_module(
            model, name, LoRALinear(model.get_submodule(name), rank, alpha or rank, dropout)
        )
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter tensors: ``<layer>.lora_A`` (r, in) and ``<layer>.lora_B`` (out, r)."""
    return {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ADAPTER_KEYS}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W ← W + (α/r)·B A), in place: plain Linears."""
    for name, layer in lora_layers(model).items():
        _set_module(model, name, layer.merged())
    return model


def save_lora(
    model: nn.Module,
    out_dir: str | Path,
    *,
    targets: tuple[str, ...] | list[str] = DIT_TARGETS,
    base_model: str = "",
    base_weights_hash: str = "",
    state_dict: dict[str, Tensor] | None = None,
    card: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write the adapter directory (atomically, through :func:`zoo.save_model`).

    ``state_dict`` overrides the module's current adapter tensors (e.g. EMA weights).
    """
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("the model has no LoRA adapters to save", field="targets")
    first = next(iter(layers.values()))
    config = {
        "rank": first.rank,
        "alpha": first.alpha,
        "dropout": getattr(first.lora_dropout, "p", 0.0),
        "targets": list(targets),
    }
    tensors = lora_state_dict(model) if state_dict is None else state_dict
    meta = {"base_model": base_model, "base_weights_hash": base_weights_hash, **(extra or {})}
    return zoo.save_model(out_dir, KIND, config, tensors, dtype="fp32", card=card, extra=meta)


def read_adapter(path: str | Path) -> tuple[Path, dict, dict[str, Tensor]]:
    """(directory, config.toml, tensors) of an adapter directory or its weights file."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    if not (folder / "config.toml").exists():
        raise ModelError(
            "not a LoRA adapter directory (no config.toml)",
            path=folder,
            expected="a directory written by `cosmos-sim finetune --lora-rank R`",
        )
    meta = zoo.read_config(folder)
    if meta.get("kind") != KIND:
        raise ModelError(
            "not a LoRA adapter",
            path=folder / "config.toml",
            field="kind",
            expected=KIND,
            found=meta.get("kind"),
        )
    for key in ("rank", "alpha", "targets"):
        if key not in meta.get("config", {}):
            raise ModelError(
                "adapter config is incomplete", path=folder / "config.toml", field=f"config.{key}"
            )
    weights = folder / "weights.safetensors"
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise ModelError(f"adapter weights are corrupt or missing: {e}", path=weights) from e
    return folder, meta, tensors


def load_lora(
    model: nn.Module | zoo.LoadedModel, path: str | Path, *, base_weights_hash: str | None = None
) -> list[str]:
    """Wrap ``model``'s target layers and load the adapter at ``path`` (in place).

    Given a :class:`zoo.LoadedModel` (or ``base_weights_hash``), the adapter must have been
    trained on exactly those weights. Everything is checked before the model is touched:
    a missing or extra layer, or a shape that does not fit, is a one-line ModelError naming
    the adapter file and the layer. Returns the adapted layers' names.
    """
    if isinstance(model, zoo.LoadedModel):
        base_weights_hash = base_weights_hash or model.weights_hash
        model = model.module
    folder, meta, tensors = read_adapter(path)
    cfg, weights = meta["config"], folder / "weights.safetensors"
    saved_hash = meta.get("base_weights_hash") or None
    if base_weights_hash and saved_hash and saved_hash != base_weights_hash:
        raise ModelError(
            f"adapter was trained on another base model ({meta.get('base_model') or '?'})",
            path=folder / "config.toml",
            field="base_weights_hash",
            expected=saved_hash,
            found=base_weights_hash,
        )
    names = find_targets(model, cfg["targets"])
    in_file = {k.rsplit(".", 1)[0] for k in tensors}
    extra = sorted(in_file - set(names))
    if extra:
        raise ModelError(
            "adapter layer is not a target Linear of the base model", path=weights, field=extra[0]
        )
    rank = int(cfg["rank"])
    for name in names:
        lin = model.get_submodule(name)
        want = {"lora_A": (rank, lin.in_features), "lora_B": (lin.out_features, rank)}
        for key, shape in want.items():
            t = tensors.get(f"{name}.{key}")
            if t is None:
                raise ModelError(
                    "adapter lacks a layer the base model has", path=weights, field=f"{name}.{key}"
                )
            if tuple(t.shape) != shape:
                raise ModelError(
                    "adapter does not fit the base model",
                    path=weights,
                    field=f"{name}.{key}",
                    expected=list(shape),
                    found=list(t.shape),
                )
    add_lora(model, rank, float(cfg["alpha"]), cfg["targets"], float(cfg.get("dropout", 0.0)))
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            layer.lora_A.copy_(tensors[f"{name}.lora_A"])
            layer.lora_B.copy_(tensors[f"{name}.lora_B"])
    return names


def export_merged(base: str | Path, adapter: str | Path, out_dir: str | Path) -> Path:
    """A whole model directory: ``base`` with ``adapter`` merged in, its config, statistics
    and metadata kept (so anything that loads the base, e.g. the world-model env, loads it).
    An adapter trained on videos alone (``drops_renderer``) leaves the base's state renderer
    out: its DiT learned the residual over the previous frame."""
    loaded = zoo.load_model(base)
    load_lora(loaded, adapter)
    merge_lora(loaded.module)
    meta = dict(loaded.config)
    fixed = {k: meta.pop(k) for k in ("kind", "format_version", "dtype", "config") if k in meta}
    folder, adapter_meta, _ = read_adapter(adapter)
    state = loaded.module.state_dict()
    if adapter_meta.get("drops_renderer"):  # trained on videos: drawn from the previous frame
        fixed["config"] = {k: v for k, v in fixed["config"].items() if k != "renderer_hidden"}
        state = {k: v for k, v in state.items() if not k.startswith("renderer.")}
        meta.pop("renderer", None)
    meta |= {"lora_adapter": str(folder.resolve()), "base_weights_hash": loaded.weights_hash}
    card = folder / "card.md"
    return zoo.save_model(
        out_dir,
        loaded.kind,
        fixed.get("config", {}),
        state,
        dtype=fixed.get("dtype", "fp16"),
        stats=loaded.stats,
        card=card.read_text() if card.exists() else None,
        extra=meta,
    )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
