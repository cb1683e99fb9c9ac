"""Instruction text for the DiT's cross-attention: which encoder turns words into tokens.

``hashed`` (the default): lower-case words hashed into the model's vocabulary and embedded by
a table trained with the model (``models/dit.py``). Small, and enough for a task's handful of
instructions, but it knows only the words it was trained on.

``minilm``: a frozen pretrained sentence encoder, all-MiniLM-L6-v2 (6-layer BERT, 384-d
tokens), as Cosmos conditions on a frozen T5. Its WordPiece ids travel where hashed ids do
(0 = padding in both), its contextual token features are projected to the DiT's width by a
trained layer. The weights come from an installed package (the ``text`` extra:
``pip install 'cosmos-sim[text]'``), never from a hub download at run time; they are not
saved with the world model (90 MB), only the projection is.
"""

from __future__ import annotations

import contextlib
import functools
import io

import torch
from torch import Tensor, nn

from cosmos_sim.errors import ConfigError

TEXT_ENCODERS = ("hashed", "minilm")
MINILM_VOCAB = 30522  # the WordPiece vocabulary of all-MiniLM-L6-v2 (0 = [PAD])
MINILM_DIM = 384
MAX_TOKENS = 16


def check_text_encoder(name: str) -> None:
    if name not in TEXT_ENCODERS:
        raise ConfigError(
            "unknown text encoder", field="text_encoder", expected=list(TEXT_ENCODERS), found=name
        )


@functools.cache
def minilm() -> tuple:
    """(tokenizer, frozen BertModel) of all-MiniLM-L6-v2, from the installed package (its
    weights are unpacked once into the user's cache directory by the package itself)."""
    try:
        import all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise ConfigError(
            "the pretrained text encoder needs the text extra: pip install 'cosmos-sim[text]'",
            field="text_encoder",
            found="minilm",
        ) from e
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints where it unpacks
        path = str(all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    model.requires_grad_(False)
    return tokenizer, model


def minilm_ids(text: str) -> Tensor:
    """An instruction → (L,) long WordPiece ids, [CLS] … [SEP], at most ``MAX_TOKENS``."""
    tokenizer, _ = minilm()
    ids = tokenizer(text.lower(), truncation=True, max_length=MAX_TOKENS)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


class PretrainedText(nn.Module):
    """(B, L) WordPiece ids (0-padded; several instructions per row when packed, told apart
    by ``doc``) → (B, L, dim): each instruction encoded on its own by the frozen MiniLM
    (cached: a task has few instructions), then the trained projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(MINILM_DIM, dim)
        self._cache: dict[tuple[int, ...], Tensor] = {}

    @torch.no_grad()
    def _encode(self, tokens: tuple[int, ...]) -> Tensor:
        if tokens not in self._cache:
            _, model = minilm()
            ids = torch.tensor([tokens])
            self._cache[tokens] = model(input_ids=ids).last_hidden_state[0].float()
        return self._cache[tokens]

    def features(self, ids: Tensor, doc: Tensor) -> Tensor:
        """The frozen encoder's (B, L, 384) token features; zeros at padding (doc < 0)."""
        out = torch.zeros(*ids.shape, MINILM_DIM)
        for r, (row, docs) in enumerate(zip(ids.tolist(), doc.tolist(), strict=True)):
            i = 0
            while i < len(row):
                j = i
                while j < len(row) and docs[j] == docs[i]:
                    j += 1
                words = tuple(t for t in row[i:j] if t)
                if docs[i] >= 0 and words:
                    out[r, i : i + len(words)] = self._encode(words)
                i = j
        return out

    def forward(self, ids: Tensor, doc: Tensor) -> Tensor:
        feats = self.features(ids, doc).to(ids.device, self.proj.weight.dtype)
        return self.proj(feats)
