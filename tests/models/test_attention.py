"""Attention dispatch: per-document SDPA == dense block-diagonal mask; flex == SDPA (slow)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cosmos_sim.errors import ConfigError
from cosmos_sim.models.attention import AttentionMask, KVCache, attention, resolve_backend


def packed_mask() -> AttentionMask:
    # row 0: doc 0 (3 frames × 4 tokens), doc 1 (2 frames × 4), padding (4 tokens)
    doc = torch.tensor([[0] * 12 + [1] * 8 + [-1] * 4])
    block = torch.tensor([[0] * 4 + [1] * 4 + [2] * 4 + [0] * 4 + [1] * 4 + [0] * 4])
    return AttentionMask(doc, doc, block, block)


def test_per_document_sdpa_equals_the_dense_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 24, 8) for _ in range(3))
    mask = packed_mask()
    assert mask.document_segments() == [[(0, 0, 12), (1, 12, 20), (-1, 20, 24)]]
    out = attention(q, k, v, mask, "sdpa")
    dense = attention(q, k, v, mask, "sdpa_dense")
    torch.testing.assert_close(
        dense, F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense())
    )
    torch.testing.assert_close(out[:, :, :20], dense[:, :, :20])
    assert torch.equal(out[:, :, 20:], torch.zeros_like(out[:, :, 20:]))  # padding: never read
    # block-causal: token 0 (frame 0) sees only frame 0 of its document
    m = mask.dense()[0, 0]
    assert m[0].tolist() == [True] * 4 + [False] * 20
    assert m[19, 12:20].all() and not m[19, :12].any()


def test_cached_queries_use_the_dense_mask():
    torch.manual_seed(0)
    q = torch.randn(1, 2, 4, 8)
    k, v = torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    doc_q, doc_k = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 12, dtype=torch.long)
    blk_q, blk_k = torch.full((1, 4), 2), torch.tensor([[0] * 4 + [1] * 4 + [2] * 4])
    mask = AttentionMask(doc_q, doc_k, blk_q, blk_k)
    assert mask.document_segments() is None
    torch.testing.assert_close(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v))


@torch.no_grad()
def test_kv_cache_reuses_its_buffers_and_slides_as_a_view():
    torch.manual_seed(0)
    cache = KVCache(1)
    ids = lambda t: (torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), t))  # noqa: E731
    for t in range(3):  # three clean frames of 4 tokens
        k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
        cache.attend_kv(0, k, v, write=True)
        cache.commit(*ids(t))
    past_k, past_v = cache.k[0].clone(), cache.v[0].clone()
    # denoising steps: [cache; new] in one buffer, the new slots overwritten each step
    for _ in range(2):
        k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
        kk, vv = cache.attend_kv(0, k, v, write=False)
        assert torch.equal(kk, torch.cat([past_k, k], 2))
        assert torch.equal(vv, torch.cat([past_v, v], 2))
    # the clean frame's write adopts that buffer: same values as concatenating
    k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    kk, _ = cache.attend_kv(0, k, v, write=True)
    cache.commit(*ids(3))
    assert torch.equal(cache.k[0], torch.cat([past_k, k], 2)) and kk is cache.k[0]
    assert torch.equal(cache.v[0], torch.cat([past_v, v], 2))
    before = cache.k[0]
    cache.keep_last(2)  # the oldest frames go: a view of the same storage, no copy
    assert torch.equal(cache.k[0], torch.cat([past_k, k], 2)[:, :, 8:])
    assert cache.k[0].untyped_storage().data_ptr() == before.untyped_storage().data_ptr()
    assert cache.block[0].tolist() == [2] * 4 + [3] * 4


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="attention"):
        resolve_backend("xformers")
    assert resolve_backend("auto") in ("sdpa", "te")


@pytest.mark.slow
def test_compiled_flex_attention_equals_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 256, 16) for _ in range(3))
    doc = (torch.arange(256) // 96)[None]
    block = (torch.arange(256) % 96 // 32)[None]
    mask = AttentionMask(doc, doc, block, block)
    torch.testing.assert_close(
        attention(q, k, v, mask, "flex"), attention(q, k, v, mask, "sdpa"), atol=1e-5, rtol=1e-5
    )


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bmm_attention_equals_sdpa(dtype):
    from cosmos_sim.models.attention import bmm_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 4, n, 48, dtype=dtype) for n in (24, 96, 96))
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    # a budget this small runs it in chunks of 2 (batch, head) rows, the last one short
    got = bmm_attention(q, k, v, budget=2 * 24 * 96 * q.element_size())
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert got.dtype == dtype and torch.allclose(got.float(), want, atol=tol)


def test_inference_attention_kernel_is_measured_once_and_cached(monkeypatch, tmp_path):
    from cosmos_sim import device

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(device, "measure_cpu", lambda dtype: (1e11, 1e11))
    calls = []

    def measured(dtype):
        calls.append(dtype)
        return (
            {"sdpa": 6e10, "bmm": 9e10} if dtype == torch.bfloat16 else {"sdpa": 7e10, "bmm": 6e10}
        )

    monkeypatch.setattr(device, "measure_attention", measured)
    assert device.cpu_attention_kernel(torch.bfloat16) == "bmm"
    assert device.cpu_attention_kernel(torch.float32) == "sdpa"
    assert device.cpu_attention_kernel(torch.bfloat16) == "bmm"  # from the cache file
    assert calls == [torch.bfloat16, torch.float32]
    assert device.probe_cpu()["attention"]["bf16"] == {"sdpa": 6e10, "bmm": 9e10}
