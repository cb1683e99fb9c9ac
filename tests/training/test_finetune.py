"""Fine-tuning a tiny world model on five tiny mp4 clips: LoRA adapters and full fine-tuning,
decoding with PyAV, and the one-line errors for too few or too short videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_world_model_task as world_model_tests
import torch

from cosmos_sim.data.videos import decode_video, fit_frame
from cosmos_sim.errors import ConfigError, FormatError
from cosmos_sim.models import zoo
from cosmos_sim.models.dit import Conditioning
from cosmos_sim.models.lora import LoRALinear, export_merged, load_lora, lora_state_dict
from cosmos_sim.training.finetune import BaseModel, FinetuneConfig, VideoClipLoader, finetune

av = pytest.importorskip("av")
# The world-model tests' fixtures, reused: a tiny recorded store, tokenizer and world model.
tokenized = world_model_tests.tokenized
tiny_world_model = world_model_tests.tiny_world_model
SIZE = world_model_tests.SIZE


def write_clip(path: Path, frames: int, height: int, width: int, seed: int) -> Path:
    """An mp4 of a coloured square moving across a grey background."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(60, 255, 3)
    y, dy = int(rng.integers(0, height // 2)), int(rng.integers(1, 3))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            img = np.full((height, width, 3), 90, np.uint8)
            x = (4 + 3 * t) % (width - 16)
            img[y + dy * t % 8 : y + dy * t % 8 + 16, x : x + 16] = colour
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Five 16-frame clips at the model's size, one of them wider (cropped and resized)."""
    root = tmp_path_factory.mktemp("clips")
    sizes = [(SIZE, SIZE)] * 4 + [(SIZE + 16, SIZE + 48)]
    return [write_clip(root / f"clip{i}.mp4", 16, h, w, i) for i, (h, w) in enumerate(sizes)]


def test_fit_frame_centre_crops_then_resizes():
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :20], rgb[:, 20:60], rgb[:, 60:] = (255, 0, 0), (0, 200, 0), (0, 0, 255)
    out = fit_frame(rgb, (16, 16))  # the square centre: only the green middle survives
    assert out.shape == (16, 16, 3) and (out == (0, 200, 0)).all()
    tall = fit_frame(
        np.arange(60, dtype=np.uint8)[:, None, None].repeat(30, 1).repeat(3, 2), (8, 8)
    )
    assert tall.shape == (8, 8, 3) and 14 <= tall[0, 0, 0] <= 17 and 42 <= tall[-1, 0, 0] <= 45


def test_decode_video_fits_every_frame(clips, tmp_path):
    video = decode_video(clips[4], (SIZE, SIZE))
    assert video.shape == (16, SIZE, SIZE, 3) and video.dtype == np.uint8
    assert len(decode_video(clips[0], (SIZE, SIZE), stride=3)) == 6  # frames 0, 3, …, 15
    square = np.abs(video.astype(int) - 90).sum(-1) > 60  # the moving square's pixels
    cols = [np.nonzero(square[t].any(0))[0].mean() for t in (0, 6)]
    assert cols[1] > cols[0]  # it moves right
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(FormatError, match="cannot decode the video") as e:
        decode_video(not_a_video, (SIZE, SIZE))
    assert str(e.value).startswith(str(not_a_video)) and "\n" not in str(e.value)


def test_loader_is_seeded_resumable_and_has_no_actions():
    latents = [
        np.random.default_rng(i).normal(size=(5, 4, 2, 2)).astype(np.float32) for i in range(3)
    ]
    loader = VideoClipLoader(latents, frames=4, batch_size=2, seed=3)
    assert len(loader.windows) == 6
    b = loader.batch(7)
    assert set(b) == {"latents", "n_context"} and 1 <= b["n_context"] <= 3
    assert b["latents"].shape == (2, b["n_context"] + 1, 4, 2, 2)
    it = iter(loader)
    first = [next(it)["latents"] for _ in range(3)]
    again = VideoClipLoader(latents, frames=4, batch_size=2, seed=3)
    again.load_state_dict(loader.state_dict())
    torch.testing.assert_close(next(iter(again))["latents"], loader.batch(3)["latents"])
    torch.testing.assert_close(first[1], again.batch(1)["latents"])
    with pytest.raises(ConfigError, match="videos changed"):
        VideoClipLoader(latents[:2], 4, 2).load_state_dict(loader.state_dict())


def probe_outputs(module) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser's output and last hidden state on fixed noisy latents."""
    wm = module.wm
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 3, 16, SIZE // 8, SIZE // 8, generator=g)
    tb = wm.token_batch({"latents": latents, "n_context": 2})
    sigma = torch.full(tb.layout.frame_doc.shape, 0.5)
    with torch.no_grad():
        return wm.denoiser(tb.tokens, sigma, Conditioning.from_batch(tb))


def test_lora_finetune_saves_a_small_adapter_that_changes_the_model(
    tiny_world_model, clips, tmp_path
):
    cfg = FinetuneConfig(lora_rank=4, steps=4, batch_size=2, lr=5e-2, checkpoint_every=4)
    summary = finetune(tiny_world_model, clips, tmp_path / "ft", cfg, progress=False)
    assert summary["step"] == 4 and np.isfinite(summary["loss"])
    assert summary["mode"] == "lora" and summary["videos"] == 5 and summary["clips"] == 5
    assert 0 < summary["trainable_parameters"] < 0.05 * summary["total_parameters"]
    assert summary["peak_memory_mb"] > 0
    lines = (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()
    assert all(np.isfinite(json.loads(ln)["loss"]) for ln in lines) and len(lines) == 4

    adapter = Path(summary["adapter_dir"])
    meta = zoo.read_config(adapter)
    base = zoo.load_model(tiny_world_model)
    assert meta["kind"] == "lora" and meta["base_weights_hash"] == base.weights_hash
    assert meta["config"]["rank"] == 4 and meta["trained_steps"] == 4
    size = (adapter / "weights.safetensors").stat().st_size
    assert size < 0.1 * (Path(tiny_world_model) / "weights.safetensors").stat().st_size
    assert "cosmos-sim finetune" in (adapter / "card.md").read_text()

    before = probe_outputs(base.module)
    names = load_lora(base, adapter)
    assert names and all(isinstance(base.module.get_submodule(n), LoRALinear) for n in names)
    assert any(t.abs().sum() > 0 for k, t in lora_state_dict(base.module).items() if "lora_B" in k)
    after = probe_outputs(base.module)
    assert (after[1] - before[1]).abs().max() > 1e-5  # the adapted blocks' hidden state
    assert not torch.equal(after[0], before[0])  # and the prediction

    merged = BaseModel.load(export_merged(tiny_world_model, adapter, tmp_path / "merged"))
    assert merged.world_model.config["lora_adapter"] == str(adapter.resolve())
    assert merged.image_size == (SIZE, SIZE) and merged.world_model.stats == base.stats
    assert not any(isinstance(m, LoRALinear) for m in merged.world_model.module.modules())
    torch.testing.assert_close(
        probe_outputs(merged.world_model.module)[1], after[1], atol=2e-2, rtol=0
    )

    with pytest.raises(ConfigError, match="changed config"):  # same out dir, other settings
        finetune(tiny_world_model, clips, tmp_path / "ft", FinetuneConfig(lora_rank=2, steps=4))


def test_full_finetune_exports_a_whole_model(tiny_world_model, clips, tmp_path):
    cfg = FinetuneConfig(full=True, steps=2, batch_size=2, checkpoint_every=2)
    summary = finetune(tiny_world_model, clips, tmp_path / "full", cfg, progress=False)
    assert summary["trainable_parameters"] == summary["total_parameters"]
    assert np.isfinite(summary["loss"])
    base = BaseModel.load(tiny_world_model)
    tuned = BaseModel.load(summary["model_dir"])  # loads with its tokenizer, like the env
    assert tuned.world_model.config["tokenizer_hash"] == base.tokenizer.weights_hash
    assert tuned.image_size == base.image_size and tuned.clip_frames == base.clip_frames
    assert tuned.world_model.weights_hash != base.world_model.weights_hash
    a, b = base.world_model.module.state_dict(), tuned.world_model.module.state_dict()
    assert a.keys() == b.keys()
    x_embed = "wm.denoiser.inner_model.x_embed.weight"
    assert not torch.equal(a[x_embed], b[x_embed])  # the DiT trained
    for key in (k for k in a if k.startswith("probe.")):  # the probe has no labels: unchanged
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_too_few_or_too_short_videos_are_clear_errors(tiny_world_model, clips, tmp_path):
    with pytest.raises(ConfigError, match="at least 5 videos") as e:
        finetune(tiny_world_model, clips[:4], tmp_path / "x", progress=False)
    assert "found 4" in str(e.value)
    with pytest.raises(ConfigError, match="no file matches"):
        finetune(tiny_world_model, [str(tmp_path / "*.mp4")], tmp_path / "x", progress=False)
    short = write_clip(tmp_path / "short.mp4", 8, SIZE, SIZE, 9)
    with pytest.raises(ConfigError, match="too short") as e:
        finetune(tiny_world_model, [*clips[:4], short], tmp_path / "x", progress=False)
    assert str(short) in str(e.value) and "found 8" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()  # nothing written


def test_cli_finetune_dry_run_and_error(tiny_world_model, clips, tmp_path):
    env = {**os.environ, "MUJOCO_GL": "egl"}

    def cli(*args):
        cmd = [sys.executable, "-m", "cosmos_sim.cli", "finetune", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    out = tmp_path / "run"
    # as after the shell expanded `--videos clips/*.mp4`
    r = cli("--model", tiny_world_model, "--videos", *clips, "--out", out, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "step 2" in r.stdout and "trainable parameters" in r.stdout
    assert (out / "adapter" / "weights.safetensors").exists()
    r = cli("--model", tiny_world_model, "--videos", str(clips[0].parent / "clip[0-3].mp4"))
    assert r.returncode == 2 and "at least 5 videos" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_finetuning_a_renderer_model_on_videos_leaves_the_renderer_out(
    tiny_world_model, tokenized, clips, tmp_path
):
    """Videos carry no states: the DiT learns its residual over the previous frame, so the
    fine-tuned model (full, or a LoRA adapter merged) must not draw from the renderer."""
    import shutil

    from cosmos_sim.training.renderer import fit_renderer

    wm = shutil.copytree(tiny_world_model, tmp_path / "wm")
    fit_renderer(wm, [tokenized[0]], steps=2, hidden=8, progress=False)
    assert zoo.load_model(wm).module.renderer is not None
    full = finetune(
        wm, clips, tmp_path / "full", FinetuneConfig(full=True, steps=1, batch_size=2),
        progress=False,
    )  # fmt: skip
    tuned = zoo.load_model(full["model_dir"])
    assert full["renderer_dropped"] and tuned.module.renderer is None
    assert "renderer is left out" in (Path(full["model_dir"]) / "card.md").read_text()
    lora = finetune(
        wm, clips, tmp_path / "lora", FinetuneConfig(steps=1, batch_size=2), progress=False
    )
    merged = zoo.load_model(export_merged(wm, lora["adapter_dir"], tmp_path / "merged"))
    assert merged.module.renderer is None and "renderer" not in merged.config
    assert zoo.load_model(wm).module.renderer is not None  # the base is untouched
