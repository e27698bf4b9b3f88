"""Shared fixtures: everything is made here (tiny random Llama, hand-written data), nothing is
downloaded."""

from __future__ import annotations

import os
import re
import shlex
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


def pytest_configure(config):
    """The `-m 'not slow'` in pyproject.toml's addopts keeps a bare `pytest` fast; a test named by
    its node id (`pytest tests/test_workflow.py::test_smoke_rerun_plans_nothing`) runs even if it
    is slow, unless -m is given too."""
    args = [str(a) for a in config.invocation_params.args] + shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    named = any("::" in a for a in args)
    marked = any(a.startswith("-m") for a in args)
    if named and not marked and config.option.markexpr == "not slow":
        config.option.markexpr = ""


@pytest.fixture(scope="session")
def smoke_items() -> dict[str, list[dict]]:
    from dnd.io import read_jsonl

    return {p.stem: read_jsonl(p) for p in sorted(SMOKE_DATA.glob("*.jsonl"))}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smoke_items) -> Path:
    """A random 2-layer Llama + BPE tokenizer trained on the smoke questions."""
    from dnd.base_model import prepare_base_model
    from dnd.formats.prompts import render_choices, render_context

    texts = [render_context(it) + " " + " ".join(render_choices(it)) for items in smoke_items.values() for it in items]
    out = tmp_path_factory.mktemp("tiny") / "base"
    cfg = {"source": "tiny", "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 400}}
    return prepare_base_model(cfg, out, seed=0, texts=texts)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny models only slow down when threads fight over a shared CPU)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ helpers for scoring tests
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def word_model(root: Path, texts: list[str]):
    """(model directory, tokenizer): a random 2-layer Llama (seed 0) with a word-level tokenizer
    over `texts`, saved under root/model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = word_tokenizer(texts)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model_dir = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    return model_dir, tok


def word_tokenizer(texts: list[str]):
    """A word-level tokenizer over the words and punctuation of `texts`, padded to vocab 512."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    vocab = {w: i for i, w in enumerate(specials + words)}
    for i in range(len(vocab), 512):  # pad to the model's vocab_size (lm-eval resizes otherwise)
        vocab[f"<extra_{i}>"] = i
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def save_random_lora(base_dir: Path, out: Path, seed: int, b_std: float = 1.0) -> None:
    """A rank-4 PEFT LoRA on every projection with random A and N(0, b_std) B (B = 0: the base model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_MODULES,
                                          task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, b_std) if b_std > 0 else p.zero_()
    pm.save_pretrained(str(out))


def save_encoded(path: Path, center, decoy, n: int = 6, seq: int = 5, dim: int = 8) -> None:
    """Unmasked tokens near `center`; masked (padding) tokens hold a large `decoy` that would
    win if the mask were ignored."""
    import torch

    g = torch.Generator().manual_seed(len(str(path)))
    states = center + 0.05 * torch.randn(n, seq, dim, generator=g)
    mask = torch.zeros(n, seq, dtype=torch.bool)
    for i in range(n):
        mask[i, : 2 + i % 3] = True
    states[~mask] = 50.0 * decoy
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"ids": [f"p{i}" for i in range(n)], "states": states.half(), "mask": mask,
                "encoder": {"name": "test", "pooling": "none"}}, path)


# What a scoring rule declares and passes (dnd.evaluate.add_declared_inputs), from test folders laid
# out like results/: every task file, final LoRA folder, adapter folder and encoding in them.
DECLARED = {"--tasks": "*.yaml", "--zoo": "*/final", "--generated": "*_[0-9]*", "--encoded": "*/*.pt"}


def declared_paths(folder: Path, option: str) -> list[Path]:
    """The paths of `folder` that a rule passes with `option` (DECLARED), sorted."""
    return sorted(folder.glob(DECLARED[option]))


def declared_argv(**folders: Path) -> list[str]:
    """`--tasks PATH... --zoo PATH... ...` for the folders given as tasks=, zoo=, generated=, encoded=."""
    return [w for name, folder in folders.items()
            for w in [f"--{name}", *map(str, declared_paths(folder, f"--{name}"))]]


@pytest.fixture(scope="session")
def smoke_dirs(tmp_path_factory):
    """The smoke DAG's two run directories (tests/smoke_dag.py); a run starts when first needed."""
    from smoke_dag import SmokeDirs

    dirs = SmokeDirs.make(tmp_path_factory.mktemp("smoke"))
    yield dirs
    dirs.stop()  # a test stopped early: stop Snakemake, dvc and the jobs they started


@pytest.fixture(scope="session", autouse=True)
def _smoke_dag_starts_first(request):
    """A session that runs tests reading a smoke run starts that run in the background before its
    first test, so that it runs beside the fast tests (a session without such tests starts nothing)."""
    from smoke_dag import SMOKE_FIXTURES

    needed = {run for item in request.session.items for name, run in SMOKE_FIXTURES.items()
              if name in item.fixturenames}
    if needed:
        try:
            dirs = request.getfixturevalue("smoke_dirs")
        except pytest.skip.Exception:  # not a git checkout: only the tests that read a run are skipped
            return
        for run in sorted(needed):
            dirs.runs[run].start()
