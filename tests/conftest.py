"""Shared fixtures: everything is made here (tiny random Llama, hand-written data), nothing is
downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SMOKE_DATA = REPO / "tests" / "data" / "smoke"
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
# Shape of the random Llama the unit tests build (the smoke profile's shape, vocab 512).
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512)


@pytest.fixture(scope="session")
def smoke_items() -> dict[str, list[dict]]:
    from dnd.io import read_jsonl

    return {p.stem: read_jsonl(p) for p in sorted(SMOKE_DATA.glob("*.jsonl"))}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smoke_items) -> Path:
    """A random 2-layer Llama + BPE tokenizer trained on the smoke questions."""
    from dnd.base_model import prepare_base_model
    from dnd.prompts import render_choices, render_context

    texts = [render_context(it) + " " + " ".join(render_choices(it)) for items in smoke_items.values() for it in items]
    out = tmp_path_factory.mktemp("tiny") / "base"
    cfg = {"source": "tiny", "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 400}}
    return prepare_base_model(cfg, out, seed=0, texts=texts)
