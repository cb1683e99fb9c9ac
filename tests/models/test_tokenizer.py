"""Causal video tokenizer: causality, shapes, FSQ codes, round trip, bad input, the zoo."""

from __future__ import annotations

import pytest
import torch

from cosmos_sim.errors import ConfigError, ModelError
from cosmos_sim.models import zoo
from cosmos_sim.models.tokenizer import (
    FSQ,
    PRESETS,
    ResBlock,
    TokenizerConfig,
    VideoTokenizer,
    reconstruction_loss,
    tokenizer_config,
)


def tiny(kind: str, bypass: bool = False) -> VideoTokenizer:
    torch.manual_seed(0)
    cfg = TokenizerConfig(
        kind=kind,
        width=16,
        width_low=24,
        enc_blocks=(1, 1),
        dec_blocks=(1, 1),
        linear_bypass=bypass,
    )
    model = VideoTokenizer(cfg)
    for m in model.modules():  # non-zero residual branches: causality must hold through them
        if isinstance(m, ResBlock):
            torch.nn.init.normal_(m.conv2.weight, std=0.05)
        if isinstance(m, torch.nn.Conv3d) and not any(p.abs().sum() for p in m.parameters()):
            torch.nn.init.normal_(m.weight, std=0.05)  # zero-initialised heads too
    return model.eval()


def clip(b=2, t=13, h=16, w=24, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, h, w, generator=g) * 2 - 1


@pytest.mark.parametrize("bypass", [False, True])
@pytest.mark.parametrize("kind", ["cv", "dv"])
@pytest.mark.parametrize("t", range(12))
def test_changing_frame_t_plus_1_never_changes_latents_of_frames_up_to_t(kind, t, bypass):
    model = tiny(kind, bypass)
    x = clip()
    y = x.clone()
    y[:, t + 1] = -y[:, t + 1]
    with torch.no_grad():
        za, zb = model.encode_raw(x), model.encode_raw(y)
    # latent j covers frames 4j-3 .. 4j (latent 0: frame 0); those ≤ t are j ≤ t // 4
    last_past = t // 4
    assert torch.equal(za[:, : last_past + 1], zb[:, : last_past + 1])
    assert not torch.equal(za[:, last_past + 1], zb[:, last_past + 1])  # and it does see frame t+1


@pytest.mark.parametrize("kind", ["cv", "dv"])
def test_decoded_frames_up_to_t_ignore_later_latents(kind):
    model = tiny(kind)
    with torch.no_grad():
        z = model.quantize(model.encode_raw(clip()))
        z2 = z.clone()
        z2[:, 2] = 0.5 - z2[:, 2]
        va, vb = model._decode(z), model._decode(z2)
    assert torch.equal(va[:, :5], vb[:, :5]) and not torch.equal(va[:, 5:], vb[:, 5:])


@pytest.mark.parametrize("kind", ["cv", "dv"])
@pytest.mark.parametrize("pieces", [(1, 1, 1, 1), (2, 2), (1, 3)])
def test_streaming_decode_equals_decoding_the_whole_history(kind, pieces):
    """An env decodes each new latent frame alone: the frames must be the full decode's."""
    model = tiny(kind, bypass=True)
    with torch.no_grad():
        z = model.encode(clip(t=13))  # 4 latent frames (dv: integer codes)
        full = model.decode(z)
        stream, start, parts = model.stream(), 0, []
        for n in pieces:
            parts.append(stream.decode(z[:, start : start + n]))
            start += n
    assert [p.shape[1] for p in parts] == [1 + 4 * (pieces[0] - 1)] + [4 * n for n in pieces[1:]]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)
    assert all(m.stream is None for m in model.decoder.modules() if hasattr(m, "pad_t"))


def test_pca_bypass_init_is_the_linear_code_at_step_0():
    torch.manual_seed(0)
    cfg = TokenizerConfig(
        width=16, width_low=24, enc_blocks=(1, 1), dec_blocks=(1, 1), linear_bypass=True
    )
    model = VideoTokenizer(cfg)
    # smooth random videos: a low-rank signal PCA can capture
    x = torch.nn.functional.interpolate(torch.rand(4 * 9, 3, 4, 4), size=(16, 24), mode="bilinear")
    x = (x.view(4, 9, 3, 16, 24) * 2 - 1).clamp(-1, 1)
    pca_db = model.init_bypass_pca(x)
    with torch.no_grad():
        z = model.encode(x)
        recon = model(x)
    got = -10 * torch.log10(((recon - x) / 2).pow(2).mean())
    # the same code; pca_db counts frame 0 four times (its replicated group), hence ~0.5 dB
    assert pca_db > 15 and abs(float(got) - pca_db) < 1.0
    assert abs(float(z.std()) - 1) < 0.2  # whitened latents
    # channel gains: what a unit of each whitened component costs in pixels — its PCA
    # variance, so they fall from the first component to the last
    gains = model.channel_gains(z)
    assert gains.shape == (cfg.latent_channels,) and abs(float(gains.mean()) - 1) < 1e-5
    assert float(gains[0]) == float(gains.max()) and gains[0] > 3 * gains[-1]
    assert (gains[:4].mean() > gains[4:8].mean() > gains[-4:].mean()).item()


def test_shapes_and_compression():
    cv, dv = tiny("cv"), tiny("dv")
    x = clip(b=3, t=9, h=32, w=40)
    with torch.no_grad():
        z, codes = cv.encode(x), dv.encode(x)
        assert z.shape == (3, 3, 16, 4, 5)  # (B, 1 + (T-1)/4, 16, H/8, W/8)
        assert codes.shape == (3, 3, 4, 5) and codes.dtype == torch.int64
        assert 0 <= codes.min() and codes.max() < 64000
        assert cv.decode(z).shape == x.shape and dv.decode(codes).shape == x.shape
        assert torch.allclose(
            dv.decode(codes), dv(x), atol=1e-5
        )  # codes carry all the decoder uses


def test_single_frame_is_an_image_tokenizer():
    model = tiny("cv")
    with torch.no_grad():
        assert model.encode(clip(t=1)).shape == (2, 1, 16, 2, 3)


def test_fsq_codes_round_trip_and_cover_the_codebook():
    fsq = FSQ((8, 8, 8, 5, 5, 5))
    q = fsq(torch.randn(20000, 6) * 3)
    codes = fsq.codes(q)
    assert torch.equal(fsq.from_codes(codes), q)
    assert codes.unique().numel() > 5000 and codes.max() < 64000
    per_dim = [q[:, i].unique().numel() for i in range(6)]
    assert per_dim == [8, 8, 8, 5, 5, 5]


def test_round_trip_learns_a_clip():
    torch.manual_seed(0)
    model = VideoTokenizer(
        TokenizerConfig(kind="cv", width=32, width_low=32, enc_blocks=(1, 1), dec_blocks=(1, 1))
    )
    x = torch.linspace(-1, 1, 16).view(1, 1, 1, 1, 16).expand(2, 5, 3, 16, 16).clone()
    x[:, :, 0] = x[:, :, 0].flip(-1)
    x[:, 3:, 1, 4:10, 4:10] = 0.8  # a square appearing mid-clip
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(120):
        loss, metrics = reconstruction_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["psnr"] > 24, metrics


@pytest.mark.parametrize("frames", [2, 4, 8, 10])
def test_clip_length_must_be_1_plus_4k(frames):
    with pytest.raises(ConfigError, match="1 \\+ 4k") as e:
        tiny("cv").encode(clip(t=frames))
    assert e.value.field == "frames" and e.value.found == frames


@pytest.mark.parametrize("size", [(60, 64), (64, 20)])
def test_image_size_must_be_multiple_of_8(size):
    with pytest.raises(ConfigError, match="multiples of 8"):
        tiny("cv").encode(clip(t=5, h=size[0], w=size[1]))


def test_presets_registry():
    for name in PRESETS:
        for kind in ("cv", "dv"):
            cfg = tokenizer_config(name, kind)
            assert cfg.kind == kind and cfg.codebook_size == 64000
    with pytest.raises(ConfigError, match="preset"):
        tokenizer_config("tpu", "cv")
    with pytest.raises(ConfigError, match="kind"):
        TokenizerConfig(kind="vq")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_zoo_save_load_round_trip(tmp_path, dtype):
    model = tiny("dv")
    path = zoo.save_model(
        tmp_path / "tok",
        "tokenizer",
        model.cfg.to_dict(),
        model.state_dict(),
        dtype=dtype,
        card="# tok\n",
    )
    assert sorted(p.name for p in path.iterdir()) == [
        "card.md",
        "config.toml",
        "weights.safetensors",
    ]
    loaded = zoo.load_model(path)
    assert loaded.kind == "tokenizer" and loaded.module.cfg == model.cfg
    x = clip()
    with torch.no_grad():
        a, b = model.encode_raw(x), loaded.module.encode_raw(x)
    assert (a - b).abs().max() < 0.1 and len(loaded.weights_hash) == 16


def test_zoo_unknown_dir_lists_shipped_models(tmp_path):
    with pytest.raises(ModelError, match="shipped models"):
        zoo.load_model(tmp_path / "nope")


def test_zoo_truncated_weights_name_the_file(tmp_path):
    model = tiny("cv")
    path = zoo.save_model(tmp_path / "tok", "tokenizer", model.cfg.to_dict(), model.state_dict())
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="weights.safetensors"):
        zoo.load_model(path)


def test_latent_cache_is_written_and_invalidated_when_weights_change(tmp_path):
    from factories import synthetic_store

    from cosmos_sim.data.store import EpisodeStore
    from cosmos_sim.training.tokenizer_task import tokenize_store

    synthetic_store(tmp_path / "s.zarr", lengths=(9, 14))
    for kind, array in (("cv", "latents"), ("dv", "codes")):
        model = tiny(kind)
        model_dir = zoo.save_model(
            tmp_path / kind, "tokenizer", model.cfg.to_dict(), model.state_dict()
        )
        first = tokenize_store(tmp_path / "s.zarr", model_dir)
        group = EpisodeStore.open(tmp_path / "s.zarr").group["latents"][first["weights_hash"]]
        cached = group["front"][array]
        assert cached.shape[:2] == (2, 4) and list(group["front"]["frames"][:]) == [9, 13]
        loaded = zoo.load_model(model_dir).module
        video = EpisodeStore.open(tmp_path / "s.zarr").read_window(1, 0, 13, cameras=["front"])[
            "rgb"
        ]["front"]
        with torch.no_grad():
            expected = loaded.encode(
                torch.from_numpy(video).permute(0, 3, 1, 2)[None].float() / 127.5 - 1
            )[0]
        got = torch.from_numpy(cached[1, :4].astype("float32" if kind == "cv" else "int64"))
        assert torch.allclose(got.to(expected.dtype), expected, atol=1e-2)
        # a retrained model (new weights) in the same directory replaces the stale cache
        model.decoder.head.bias.data += 1
        zoo.save_model(model_dir, "tokenizer", model.cfg.to_dict(), model.state_dict())
        second = tokenize_store(tmp_path / "s.zarr", model_dir)
        keys = set(EpisodeStore.open(tmp_path / "s.zarr").group["latents"].group_keys())
        assert second["weights_hash"] != first["weights_hash"]
        assert second["weights_hash"] in keys and first["weights_hash"] not in keys


def test_loss_is_fp32_even_under_bf16_autocast():
    # bf16 SSIM variances (blur(x²) - blur(x)²) cancel catastrophically on flat renders
    x = torch.zeros(1, 5, 3, 32, 32)
    x[..., 8:24, 8:24] = 0.6
    y = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    fp32, _ = reconstruction_loss(y, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, metrics = reconstruction_loss(y, x)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, fp32)
