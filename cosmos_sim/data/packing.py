"""Sequence packing: clips of different lengths, camera counts and resolutions in one row.

Every world model sees a batch as rows of latent-patch tokens plus a
:class:`SequenceLayout` that says where each token sits. A plain batch of equal clips is
one clip per row; a packed batch puts several clips ("documents") end to end::

    row 0: [ clip 3: frame 0 (h·w tokens) | frame 1 | ... ][ clip 0: ... ][ pad ]
    row 1: [ clip 1: ...                                  ][ clip 2: ... ][ pad ]

Attention is block-diagonal over documents and, within a document, block-causal over
latent frames (a frame sees itself and its past); RoPE positions restart at 0 for every
document, so a packed clip computes exactly what it computes alone. Multi-view clips
arrive already folded into time (``conditioning/multiview.py``): several frames share
one ``time`` (same causal block) and differ by ``view``.

Frame-level tensors are ``(B, F, ...)``; token-level tensors are ``(B, N, ...)`` and find
their frame through ``layout.token_frame``. Padding frames/tokens have document ``-1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

NULL_INSTRUCTION = 1  # text id every document's instruction starts with (0 = padding)


@dataclass
class SequenceLayout:
    """Where each token sits in a (possibly packed) batch of rows."""

    frame_time: Tensor  # (B, F) long: RoPE time position and causal block of each frame
    frame_view: Tensor  # (B, F) long: camera index (multi-view folded into time)
    frame_doc: Tensor  # (B, F) long: document (clip) id within the row, -1 = padding
    token_frame: Tensor  # (B, N) long: row-local index of each token's frame
    token_hw: Tensor  # (B, N, 2) long: patch row and column of each token

    @property
    def token_time(self) -> Tensor:  # (B, N)
        return self.frame_time.gather(1, self.token_frame)

    @property
    def token_doc(self) -> Tensor:  # (B, N)
        return self.frame_doc.gather(1, self.token_frame)

    def token_positions(self) -> Tensor:
        """(B, N, 3) long (time, row, column): the RoPE positions."""
        return torch.cat([self.token_time[..., None], self.token_hw], dim=-1)

    def previous_frame_tokens(self) -> tuple[Tensor, Tensor]:
        """For each token, the row-local index of the same patch (same clip and camera) one
        latent frame earlier: ``index`` (B, N) long and ``found`` (B, N) bool (False on a
        clip's first frame of each camera and on padding; ``index`` is then 0)."""
        b, n = self.token_frame.shape
        doc = self.token_doc
        view = self.frame_view.gather(1, self.token_frame)
        time, hw = self.token_time, self.token_hw
        dims = [b, int(doc.max()) + 2, int(view.max()) + 1, int(time.max()) + 2]
        dims += [int(hw[..., 0].max()) + 1, int(hw[..., 1].max()) + 1]
        row = torch.arange(b, device=doc.device)[:, None].expand(b, n)

        def key(t: Tensor) -> Tensor:
            k = row
            for part, size in zip(
                (doc + 1, view, t + 1, hw[..., 0], hw[..., 1]), dims[1:], strict=True
            ):
                k = k * size + part
            return k.flatten()

        keys = key(time)
        order = keys.argsort()
        wanted = key(time - 1)
        pos = torch.searchsorted(keys[order], wanted).clamp_max(b * n - 1)
        hit = order[pos]
        found = (keys[hit] == wanted) & (doc.flatten() >= 0)
        index = torch.where(found, hit % n, torch.zeros_like(hit))
        return index.view(b, n), found.view(b, n)


@dataclass
class Segment:
    """One clip's place in a packed batch, to unpack the model's output."""

    row: int
    token_start: int
    frame_start: int
    frames: int
    height: int  # in patches
    width: int


@dataclass
class Clip:
    """One training sample before patchifying (latents already folded over views)."""

    latents: Tensor  # (T, C, H, W)
    n_context: int = 1  # the first n latent frames are clean context
    actions: Tensor | None = None  # (T, c, A) chunk leading *into* each frame (frame 0: unused)
    rays: Tensor | None = None  # (T, 6, H, W) Plücker rays at latent resolution
    time: Tensor | None = None  # (T,) long: time index (default arange(T))
    view: Tensor | None = None  # (T,) long: camera index (default 0)
    instruction_ids: Tensor | None = None  # (L,) long hashed words, no padding
    sigma: Tensor | None = None  # (T,) fixed noise level per frame (evaluation); None = sampled
    noise: Tensor | None = None  # (T, C, H, W) fixed noise (evaluation); None = sampled
    state: Tensor | None = None  # (T, S) normalised proprio state at each frame (optional)

    def __len__(self) -> int:
        return int(self.latents.shape[0])


@dataclass
class TokenBatch:
    """Rows of latent-patch tokens with their layout and per-frame conditioning."""

    tokens: Tensor  # (B, N, C·p·p) clean latent patches
    layout: SequenceLayout
    is_context: Tensor  # (B, F) bool: clean context frame (no noise, no action)
    is_target: Tensor  # (B, F) bool: a frame to predict (not context, not padding)
    actions: Tensor | None  # (B, F, c, A); rows of frames without an action are zero
    has_action: Tensor  # (B, F) bool
    rays: Tensor | None  # (B, N, 6·p·p)
    instruction_ids: Tensor  # (B, L) long, 0 = padding
    instruction_doc: Tensor  # (B, L) long, -1 = padding
    sigma: Tensor | None  # (B, F) fixed noise levels, if every clip had them
    noise: Tensor | None  # (B, N, C·p·p) fixed noise, if every clip had it
    states: Tensor | None = None  # (B, F, S) proprio state per frame (zero where absent)
    segments: list[Segment] = field(default_factory=list)
    patch_size: int = 1
    channels: int = 16

    def to(self, device: torch.device | str) -> TokenBatch:
        """The same batch with every tensor on ``device`` (pack_clips builds on the CPU)."""
        moved = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.__dict__.items()}
        lay = self.layout
        moved["layout"] = SequenceLayout(
            *(
                t.to(device)
                for t in (
                    lay.frame_time,
                    lay.frame_view,
                    lay.frame_doc,
                    lay.token_frame,
                    lay.token_hw,
                )
            )
        )
        return TokenBatch(**moved)

    @property
    def n_pad_tokens(self) -> int:
        return int((self.layout.token_doc < 0).sum())


def patchify(x: Tensor, p: int) -> Tensor:
    """(T, C, H, W) → (T·h·w, C·p·p) tokens, frame-major then row, column."""
    t, c, hh, ww = x.shape
    h, w = hh // p, ww // p
    x = x.reshape(t, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5)  # (T, h, w, C, p, p)
    return x.reshape(t * h * w, c * p * p)


def unpatchify(tokens: Tensor, t: int, h: int, w: int, p: int) -> Tensor:
    """(T·h·w, C·p·p) → (T, C, h·p, w·p): the inverse of :func:`patchify`."""
    c = tokens.shape[-1] // (p * p)
    x = tokens.reshape(t, h, w, c, p, p).permute(0, 3, 1, 4, 2, 5)  # (T, C, h, p, w, p)
    return x.reshape(t, c, h * p, w * p)


def clip_tokens(clip: Clip, p: int) -> int:
    t, _, hh, ww = clip.latents.shape
    return t * (hh // p) * (ww // p)


def plan_rows(token_counts: list[int], seq_len: int) -> list[list[int]]:
    """First-fit decreasing bin packing: clip indices per row, each row ≤ ``seq_len`` tokens."""
    order = sorted(range(len(token_counts)), key=lambda i: -token_counts[i])
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = token_counts[i]
        if n > seq_len:
            raise ValueError(f"a clip of {n} tokens does not fit seq_len={seq_len}")
        for r, space in enumerate(free):
            if n <= space:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(seq_len - n)
    return rows


def pack_clips(
    clips: list[Clip], patch_size: int, rows: list[list[int]], seq_len: int | None = None
) -> TokenBatch:
    """Lay ``clips`` out as ``rows`` (lists of clip indices), each padded to ``seq_len`` tokens.

    ``rows=[[0], [1], ...]`` with ``seq_len=None`` is a plain batch (padded to the longest).
    """
    p = patch_size
    counts = [clip_tokens(c, p) for c in clips]
    n_len = seq_len or max(sum(counts[i] for i in row) for row in rows)
    f_len = max(sum(len(clips[i]) for i in row) for row in rows) + 1  # +1: a padding frame
    b = len(rows)
    c0 = clips[rows[0][0]]
    chan = c0.latents.shape[1]
    dim = chan * p * p
    with_actions = any(c.actions is not None for c in clips)
    with_rays = any(c.rays is not None for c in clips)
    with_sigma = all(c.sigma is not None for c in clips)
    with_noise = all(c.noise is not None for c in clips)
    act_shape = next((c.actions.shape[1:] for c in clips if c.actions is not None), (1, 1))

    tokens = torch.zeros(b, n_len, dim)
    noise = torch.zeros(b, n_len, dim) if with_noise else None
    rays = torch.zeros(b, n_len, 6 * p * p) if with_rays else None
    frame_time = torch.zeros(b, f_len, dtype=torch.long)
    frame_view = torch.zeros(b, f_len, dtype=torch.long)
    frame_doc = torch.full((b, f_len), -1, dtype=torch.long)
    token_frame = torch.zeros(b, n_len, dtype=torch.long)
    token_hw = torch.zeros(b, n_len, 2, dtype=torch.long)
    is_context = torch.zeros(b, f_len, dtype=torch.bool)
    actions = torch.zeros(b, f_len, *act_shape) if with_actions else None
    has_action = torch.zeros(b, f_len, dtype=torch.bool)
    state_dim = next((c.state.shape[-1] for c in clips if c.state is not None), 0)
    states = torch.zeros(b, f_len, state_dim) if state_dim else None
    sigma = torch.zeros(b, f_len) if with_sigma else None
    texts: list[list[Tensor]] = [[] for _ in range(b)]
    text_docs: list[list[Tensor]] = [[] for _ in range(b)]
    segments = []
    for r, row in enumerate(rows):
        n0 = f0 = 0
        for doc, i in enumerate(row):
            clip = clips[i]
            t, _, hh, ww = clip.latents.shape
            h, w = hh // p, ww // p
            n = t * h * w
            tokens[r, n0 : n0 + n] = patchify(clip.latents, p)
            if with_noise:
                noise[r, n0 : n0 + n] = patchify(clip.noise, p)
            if with_rays and clip.rays is not None:
                rays[r, n0 : n0 + n] = patchify(clip.rays, p)
            frame_time[r, f0 : f0 + t] = clip.time if clip.time is not None else torch.arange(t)
            if clip.view is not None:
                frame_view[r, f0 : f0 + t] = clip.view
            frame_doc[r, f0 : f0 + t] = doc
            token_frame[r, n0 : n0 + n] = f0 + torch.arange(t).repeat_interleave(h * w)
            hw = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1)
            token_hw[r, n0 : n0 + n] = hw.reshape(1, h * w, 2).expand(t, -1, -1).reshape(n, 2)
            is_context[r, f0 : f0 + clip.n_context] = True
            if clip.actions is not None:
                actions[r, f0 : f0 + t] = clip.actions
                has_action[r, f0 + clip.n_context : f0 + t] = True
            if states is not None and clip.state is not None:
                states[r, f0 : f0 + t] = clip.state
            if with_sigma:
                sigma[r, f0 : f0 + t] = clip.sigma
            ids = clip.instruction_ids if clip.instruction_ids is not None else torch.zeros(0)
            ids = torch.cat([torch.tensor([NULL_INSTRUCTION]), ids.long()])
            texts[r].append(ids)
            text_docs[r].append(torch.full_like(ids, doc))
            segments.append(Segment(r, n0, f0, t, h, w))
            n0, f0 = n0 + n, f0 + t
        token_frame[r, n0:] = f0  # padding tokens belong to the padding frame (doc -1)
    l_len = 1 + max(sum(len(x) for x in row) for row in texts)  # ≥ 1 padding word: padding
    # tokens (document -1) always have a key to cross-attend to, so no row is fully masked
    instruction_ids = torch.zeros(b, l_len, dtype=torch.long)
    instruction_doc = torch.full((b, l_len), -1, dtype=torch.long)
    for r in range(b):
        ids, docs = torch.cat(texts[r]), torch.cat(text_docs[r])
        instruction_ids[r, : len(ids)] = ids
        instruction_doc[r, : len(ids)] = docs
    order = [i for row in rows for i in row]
    segments = [s for _, s in sorted(zip(order, segments, strict=True), key=lambda x: x[0])]
    layout = SequenceLayout(frame_time, frame_view, frame_doc, token_frame, token_hw)
    return TokenBatch(
        tokens=tokens,
        layout=layout,
        is_context=is_context,
        is_target=(frame_doc >= 0) & ~is_context,
        actions=actions,
        has_action=has_action,
        rays=rays,
        instruction_ids=instruction_ids,
        instruction_doc=instruction_doc,
        sigma=sigma,
        noise=noise,
        states=states,
        segments=segments,
        patch_size=p,
        channels=chan,
    )


def pack(clips: list[Clip], patch_size: int, seq_len: int) -> TokenBatch:
    """Pack ``clips`` into as few rows of ``seq_len`` tokens as first-fit decreasing finds."""
    rows = plan_rows([clip_tokens(c, patch_size) for c in clips], seq_len)
    return pack_clips(clips, patch_size, rows, seq_len)


def packed_batches(
    clips: Iterable[Clip], patch_size: int, seq_len: int, rows_per_batch: int, lookahead: int = 4
) -> Iterator[TokenBatch]:
    """Stream of packed batches: buffer about ``lookahead`` batches of clips, pack them first-
    fit decreasing, emit the ``rows_per_batch`` fullest rows and carry the other rows' clips
    over to the next batch, so only the very last batch of the stream has a partial row."""
    buffer: list[Clip] = []
    target = lookahead * rows_per_batch * seq_len
    it = iter(clips)
    exhausted = False
    while True:
        while not exhausted and sum(clip_tokens(c, patch_size) for c in buffer) < target:
            nxt = next(it, None)
            if nxt is None:
                exhausted = True
            else:
                buffer.append(nxt)
        if not buffer:
            return
        rows = plan_rows([clip_tokens(c, patch_size) for c in buffer], seq_len)
        fill = [sum(clip_tokens(buffer[i], patch_size) for i in row) for row in rows]
        order = sorted(range(len(rows)), key=lambda r: -fill[r])
        if not exhausted and len(rows) <= rows_per_batch:  # not enough to fill a batch yet
            target *= 2
            continue
        chosen = [rows[r] for r in order[:rows_per_batch]]
        flat = [i for row in chosen for i in row]
        index = {i: k for k, i in enumerate(flat)}
        yield pack_clips(
            [buffer[i] for i in flat],
            patch_size,
            [[index[i] for i in row] for row in chosen],
            seq_len,
        )
        taken = set(flat)
        buffer = [c for i, c in enumerate(buffer) if i not in taken]


def pad_to_longest(clips: list[Clip], patch_size: int) -> TokenBatch:
    """One clip per row, padded to the longest clip: the baseline packing is measured against."""
    return pack_clips(clips, patch_size, [[i] for i in range(len(clips))])


def unpack(tokens: Tensor, batch: TokenBatch) -> list[Tensor]:
    """(B, N, C·p·p) model output → one (T, C, H, W) tensor per clip, in input order."""
    out = []
    for s in batch.segments:
        n = s.frames * s.height * s.width
        seg = tokens[s.row, s.token_start : s.token_start + n]
        out.append(unpatchify(seg, s.frames, s.height, s.width, batch.patch_size))
    return out
