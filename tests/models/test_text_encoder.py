"""The instruction variant's optional pretrained text encoder (all-MiniLM-L6-v2, the ``text``
extra): its ids, its frozen features (each instruction of a packed row encoded on its own),
and a tiny instruction model trained with it, saved without the encoder's weights, loaded
and asked for instructions it never saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import TINY_DIT, variant_stores

from cosmos_sim.conditioning import text
from cosmos_sim.errors import ConfigError
from cosmos_sim.models import zoo
from cosmos_sim.models.dit import DiTConfig, instruction_ids
from cosmos_sim.training.world_model_task import export_world_model, train_world_model


def test_ids_are_the_encoders_wordpieces():
    ids = instruction_ids("Reach the RED target", 0, "minilm")
    tokenizer, _ = text.minilm()
    assert ids.tolist() == tokenizer("reach the red target")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert len(instruction_ids("push " * 40, 0, "minilm")) == text.MAX_TOKENS  # truncated
    with pytest.raises(ConfigError, match="text_encoder"):
        instruction_ids("reach", 64, "t5")
    with pytest.raises(ConfigError, match="WordPiece"):
        DiTConfig(text_vocab=4096, text_encoder="minilm")


def test_features_encode_each_instruction_of_a_packed_row_alone():
    _, bert = text.minilm()
    red, blue = (instruction_ids(f"reach the {c} target", 0, "minilm") for c in ("red", "blue"))
    row = torch.cat([red, blue, torch.zeros(3, dtype=torch.long)])[None]  # two documents + pad
    doc = torch.tensor([[0] * len(red) + [1] * len(blue) + [-1] * 3])
    feats = text.PretrainedText(32).features(row, doc)
    with torch.no_grad():
        alone = [bert(input_ids=x[None]).last_hidden_state[0] for x in (red, blue)]
    torch.testing.assert_close(feats[0, : len(red)], alone[0])
    torch.testing.assert_close(feats[0, len(red) : len(red) + len(blue)], alone[1])
    assert not feats[0, -3:].any()  # padding: zeros
    # contextual: "red" and "blue" differ, and so does every token around them
    assert (alone[0] - alone[1]).abs().mean() > 0.01


def test_an_instruction_model_trains_with_it_and_saves_only_its_projection(tmp_path):
    data = variant_stores(tmp_path / "data", 32)
    run = tmp_path / "run"
    summary = train_world_model(
        [data.nav], data.tok, run, variant="instruction", steps=2, batch_size=2,
        progress=False, checkpoint_every=2, dit_overrides=TINY_DIT, text_encoder="minilm",
    )  # fmt: skip
    assert np.isfinite(summary["loss"])
    loaded = zoo.load_model(export_world_model(run, tmp_path / "wm"))
    dit = loaded.module.cfg.wm.dit
    assert dit.text_encoder == "minilm" and dit.text_vocab == text.MINILM_VOCAB
    names = list(loaded.module.state_dict())
    text_weights = [n for n in names if ".text_embed." in n]
    assert sorted(text_weights)[-1].endswith("text_embed.proj.weight") and len(text_weights) == 2
    # any phrasing the tokenizer knows is an instruction now (hashed words would be unseen)
    ids = loaded.module.hash_instructions(["walk to the crimson marker", "reach the red target"])
    assert ids.shape[0] == 2 and int(ids.max()) < text.MINILM_VOCAB
    with pytest.raises(ConfigError, match="instruction variant only"):
        train_world_model(
            [data.push], data.tok, tmp_path / "a", variant="action", steps=1, batch_size=2,
            progress=False, dit_overrides=TINY_DIT, text_encoder="minilm",
        )  # fmt: skip
