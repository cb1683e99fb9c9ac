"""Attention dispatch in one place: one signature, several backends, and a KV cache.

Every backend is ``fn(q, k, v, mask) -> out`` with ``q (B, nh, Nq, hs)``,
``k, v (B, nh, Nk, hs)`` and an :class:`AttentionMask` (or ``None`` = everyone sees
everyone). Backends:

* ``sdpa``  PyTorch ``scaled_dot_product_attention`` (always there): packed self-attention
  runs one call per document (like ``cu_seqlens`` varlen kernels), the rest (cached
  decoding, cross-attention) with a dense boolean mask;
* ``sdpa_dense``  SDPA with the dense block-diagonal mask everywhere (the reference);
* ``flex``  compiled flex-attention with a block-sparse mask: it skips whole blocks of
  other documents / future frames, so it pays for long packed rows (measured in
  ``benchmarks/packing.py``); falls back to ``sdpa`` when flex-attention or
  ``torch.compile`` is unavailable;
* ``te``    Transformer Engine fused attention, CUDA only, when installed (optional extra).

The mask is semantic — documents (packing) and causal blocks (latent frames) — and each
backend turns it into its own form once per forward pass (cached on the mask object).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from cosmos_sim.errors import ConfigError


@dataclass(eq=False)
class AttentionMask:
    """Query i may see key j iff same document and (if blocks are given) ``block_j ≤ block_i``.

    ``block`` is the latent-frame time, so attention is block-causal: all tokens of a frame
    see each other and every earlier frame of their document, never a later one.
    """

    q_doc: Tensor  # (B, Nq) long
    k_doc: Tensor  # (B, Nk) long
    q_block: Tensor | None = None  # (B, Nq) long; None = bidirectional
    k_block: Tensor | None = None  # (B, Nk) long
    _cache: dict = field(default_factory=dict, repr=False)

    def dense(self) -> Tensor:
        """(B, 1, Nq, Nk) bool, True = may attend."""
        if "dense" not in self._cache:
            m = self.q_doc[:, :, None] == self.k_doc[:, None, :]
            if self.q_block is not None:
                m = m & (self.k_block[:, None, :] <= self.q_block[:, :, None])
            self._cache["dense"] = m[:, None]
        return self._cache["dense"]

    def is_trivial(self) -> bool:
        """True when nothing is masked — one document, and no key in a later block than any
        query (always so for a new frame against its cache): backends skip the mask."""
        if "trivial" not in self._cache:
            one_doc = bool((self.q_doc == self.q_doc[:, :1]).all()) and bool(
                (self.k_doc == self.q_doc[:, :1]).all()
            )
            causal_free = self.q_block is None or bool(
                (self.k_block.amax(1) <= self.q_block.amin(1)).all()
            )
            self._cache["trivial"] = one_doc and causal_free
        return self._cache["trivial"]

    def document_segments(self) -> list[list[tuple[int, int, int]]] | None:
        """Per row, contiguous (doc, start, end) runs — if this is packed self-attention
        (queries and keys are the same tokens, each document contiguous), else None."""
        if "segments" not in self._cache:
            seg = None
            same_blocks = self.q_block is None or (
                self.q_block.shape == self.k_block.shape and torch.equal(self.q_block, self.k_block)
            )
            if (
                same_blocks
                and self.q_doc.shape == self.k_doc.shape
                and torch.equal(self.q_doc, self.k_doc)
            ):
                seg = []
                for row in self.q_doc.tolist():
                    runs, start = [], 0
                    for i in range(1, len(row) + 1):
                        if i == len(row) or row[i] != row[start]:
                            runs.append((row[start], start, i))
                            start = i
                    if len({d for d, _, _ in runs}) != len(runs):  # a document split in two
                        seg = None
                        break
                    seg.append(runs)
            self._cache["segments"] = seg
        return self._cache["segments"]

    def flex_block_mask(self):
        if "flex" not in self._cache:
            from torch.nn.attention.flex_attention import create_block_mask

            q_doc, k_doc, q_blk, k_blk = self.q_doc, self.k_doc, self.q_block, self.k_block

            def mask_mod(b, h, qi, ki):
                same = q_doc[b, qi] == k_doc[b, ki]
                if q_blk is None:
                    return same
                return same & (k_blk[b, ki] <= q_blk[b, qi])

            b, nq = q_doc.shape
            nk = k_doc.shape[1]
            self._cache["flex"] = create_block_mask(
                mask_mod, b, None, nq, nk, device=q_doc.device.type
            )
        return self._cache["flex"]


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None) -> Tensor:
    """SDPA. Packed self-attention runs one call per document (like ``cu_seqlens`` varlen
    kernels): Σ nᵢ² work instead of N², since a dense mask does not skip other documents."""
    if mask is None or mask.is_trivial():
        if q.device.type == "cpu" and not torch.is_grad_enabled() and _bmm_wins(q.dtype):
            return bmm_attention(q, k, v)
        return F.scaled_dot_product_attention(q, k, v)
    segments = mask.document_segments()
    if segments is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense())
    rows = []
    for b, row in enumerate(segments):
        parts = []
        for doc, start, end in row:
            qs, ks, vs = (t[b : b + 1, :, start:end] for t in (q, k, v))
            if doc < 0:  # padding: never read, zeros
                parts.append(torch.zeros_like(qs))
                continue
            sub = None
            if mask.q_block is not None:  # block-causal within the document
                blk = mask.q_block[b, start:end]
                if bool((blk != blk[0]).any()):  # one latent frame: nothing to mask
                    sub = blk[None, :] <= blk[:, None]  # (n, n): key frame ≤ query frame
            parts.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=sub))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0)


def bmm_attention(q: Tensor, k: Tensor, v: Tensor, budget: int = 1 << 20) -> Tensor:
    """Unmasked attention as batched matmuls, in chunks of (batch, head) rows whose score
    matrices fit in ``budget`` bytes (about an L2 cache), so the softmax reads them warm.
    Inference only (no fused backward). With bf16 on a CPU with native bf16 this is
    1.5-1.7× SDPA's flash kernel at the world-model env's shapes (queries of 48, a few
    hundred keys), whose thin QKᵀ products the flash kernel tiles poorly; the device probe
    decides per machine (:func:`cosmos_sim.device.cpu_attention_kernel`)."""
    b, h, nq, hs = q.shape
    nk = k.shape[2]
    q3 = (q * hs**-0.5).reshape(b * h, nq, hs)  # scaled once here, not the score matrix
    kt = k.reshape(b * h, nk, hs).transpose(1, 2)
    v3 = v.reshape(b * h, nk, v.shape[3])
    out = q3.new_empty(b * h, nq, v.shape[3])
    rows = max(1, budget // (nq * nk * q.element_size()))
    for i in range(0, b * h, rows):
        scores = torch.bmm(q3[i : i + rows], kt[i : i + rows])
        torch.bmm(torch.softmax(scores, dim=-1), v3[i : i + rows], out=out[i : i + rows])
    return out.view(b, h, nq, -1)


@functools.cache
def _bmm_wins(dtype: torch.dtype) -> bool:
    """Whether :func:`bmm_attention` beats SDPA for CPU inference in ``dtype`` (measured once
    per machine and cached)."""
    from cosmos_sim.device import cpu_attention_kernel

    return cpu_attention_kernel(dtype) == "bmm"


@functools.cache
def _compiled_flex() -> Callable | None:
    try:
        from torch.nn.attention.flex_attention import flex_attention

        return torch.compile(flex_attention, dynamic=False)
    except Exception:  # no flex-attention in this torch, or no compiler: use SDPA
        return None


def flex_attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None) -> Tensor:
    fn = _compiled_flex()
    # cached decoding (fewer queries than keys) changes shape every env step: a recompile
    # each time would cost far more than it saves, so SDPA serves it
    if fn is None or mask is None or mask.is_trivial() or q.shape[2] != k.shape[2]:
        return sdpa_attention(q, k, v, mask)
    try:
        return fn(q, k, v, block_mask=mask.flex_block_mask())
    except Exception:  # the compiler failed on this platform: SDPA is always right
        return sdpa_attention(q, k, v, mask)


def te_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def te_attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None) -> Tensor:
    """Transformer Engine fused attention (CUDA). Untested here: this machine has no GPU."""
    if not te_available():
        return sdpa_attention(q, k, v, mask)
    import transformer_engine.pytorch as te

    b, nh, nq, hs = q.shape
    key = (nh, hs)
    if key not in _TE_MODULES:
        _TE_MODULES[key] = te.DotProductAttention(nh, hs, qkv_format="bshd")
    fn = _TE_MODULES[key]
    to_bshd = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731
    if mask is None or mask.is_trivial():
        out = fn(to_bshd(q), to_bshd(k), to_bshd(v), attn_mask_type="no_mask")
    else:  # TE's arbitrary masks are True where attention is *forbidden*
        out = fn(
            to_bshd(q),
            to_bshd(k),
            to_bshd(v),
            attn_mask_type="arbitrary",
            attention_mask=~mask.dense(),
        )
    return out.reshape(b, nq, nh, hs).transpose(1, 2)


_TE_MODULES: dict = {}


def sdpa_dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None) -> Tensor:
    """SDPA with the whole (B, 1, Nq, Nk) boolean mask: N² work however many documents."""
    attn_mask = None if mask is None or mask.is_trivial() else mask.dense()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


BACKENDS: dict[str, Callable[[Tensor, Tensor, Tensor, AttentionMask | None], Tensor]] = {
    "sdpa": sdpa_attention,
    "sdpa_dense": sdpa_dense_attention,
    "flex": flex_attention,
    "te": te_attention,
}


def resolve_backend(name: str) -> str:
    """``auto`` → Transformer Engine on CUDA when installed, else SDPA."""
    if name == "auto":
        return "te" if te_available() else "sdpa"
    if name not in BACKENDS:
        raise ConfigError(
            "unknown attention backend", field="attention", expected=["auto", *BACKENDS], found=name
        )
    return name


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask | None = None, backend: str = "sdpa"
) -> Tensor:
    """Masked multi-head attention: (B, nh, Nq, hs) × (B, nh, Nk, hs) → (B, nh, Nq, hs)."""
    return BACKENDS[backend](q, k, v, mask)


class KVCache:
    """Keys and values of clean context tokens, per layer, reused across denoising steps.

    Attention is block-causal, so a context token's keys/values never depend on the frames
    being denoised: they are computed once (``prefill``) and read by every denoising step;
    after an env step the newly generated frame is appended as clean context, and
    :meth:`keep_last` drops the oldest frames to hold a sliding window. (Exact until the
    first drop; after it, the kept frames' deeper keys still carry what they saw of the
    dropped frames — a longer memory than re-encoding the window would give, like
    StreamingLLM-style caches.)
    """

    def __init__(self, n_layers: int) -> None:
        self.k: list[Tensor | None] = [None] * n_layers  # (B, nh, Nc, hs), RoPE applied
        self.v: list[Tensor | None] = [None] * n_layers
        self.doc: Tensor | None = None  # (B, Nc) long
        self.block: Tensor | None = None  # (B, Nc) long: latent-frame time of each token
        self._scratch: dict[int, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return 0 if self.doc is None else int(self.doc.shape[1])

    def keys_for(self, doc: Tensor, block: Tensor) -> tuple[Tensor, Tensor]:
        """Document and block ids of [cached keys; new keys], for the attention mask."""
        if self.doc is None:
            return doc, block
        return torch.cat([self.doc, doc], 1), torch.cat([self.block, block], 1)

    def attend_kv(self, layer: int, k: Tensor, v: Tensor, write: bool) -> tuple[Tensor, Tensor]:
        """[cached; new] keys and values for ``layer``; stored back when ``write``."""
        if self.k[layer] is None:
            pass
        elif not torch.is_grad_enabled() and (not write or layer in self._scratch):
            # the denoising steps' buffer, new slots overwritten; on write it becomes the cache
            k, v = self._scratch_kv(layer, k, v)
        else:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        if write:
            self.k[layer], self.v[layer] = k, v
            self._scratch.pop(layer, None)
        return k, v

    def _scratch_kv(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Denoising steps re-read the same cache: keep [cached; new] buffers per layer and
        overwrite only the new tokens' slots, instead of copying the whole cache each step."""
        n_c = self.k[layer].shape[2]
        buf = self._scratch.get(layer)
        if buf is None or buf[0].shape[2] != n_c + k.shape[2] or buf[0].dtype != k.dtype:
            buf = (torch.cat([self.k[layer], k], dim=2), torch.cat([self.v[layer], v], dim=2))
            self._scratch[layer] = buf
        else:
            buf[0][:, :, n_c:] = k
            buf[1][:, :, n_c:] = v
        return buf

    def commit(self, doc: Tensor, block: Tensor) -> None:
        """Record the ids of tokens just written by every layer."""
        self.doc, self.block = self.keys_for(doc, block)

    def keep_last(self, n_blocks: int) -> None:
        """Keep only the tokens of the last ``n_blocks`` latent-frame times (same for all rows)."""
        if self.block is None:
            return
        times = torch.unique(self.block[0])
        if len(times) <= n_blocks:
            return
        keep = self.block[0] >= times[-n_blocks]
        start = int((~keep).sum())
        if bool(keep[start:].all()):  # the usual case, the oldest times first: a view, no copy
            keep = slice(start, None)
        self.k = [None if k is None else k[:, :, keep] for k in self.k]
        self.v = [None if v is None else v[:, :, keep] for v in self.v]
        self.doc, self.block = self.doc[:, keep], self.block[:, keep]
        self._scratch.clear()
