"""The generator checkpoint: the contract between `train-generator` (writes it) and `generate`
(reads it). One self-contained torch file (loadable with weights_only=True):

  format             CHECKPOINT_FORMAT
  model, decoder     the generator model's state dict and constructor arguments (hparams,
                     with its `design`; dnd.method.generator_model.build_decoder)
  layout             the LoRA layout of the parameter tokens (dnd.method.tokenization.LoraLayout)
  lora_config        r, alpha, modules, ... of the template adapter (checked at training)
  adapter_config     the template's adapter_config.json as PEFT wrote it: generated adapters
                     get exactly this file (so generation needs no peft import)
  encoder            the encoder config the condition must be encoded with
  generator, seed, target, sources, step, n_params, criterion_weights   provenance

It lives apart from dnd.method.generator_model (the model only) because it holds more than the decoder,
and apart from dnd.generators so that generation never imports the training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from dnd.io import ArtifactError, load_torch, save_torch
from dnd.method.generator_model import build_decoder

CHECKPOINT_FORMAT = "dnd-generator-v1"
#: What generation reads besides the model (a checkpoint without them cannot make an adapter).
GENERATION_KEYS = ("layout", "adapter_config", "encoder", "n_params")


def save_generator(path: str | Path, model: nn.Module, write: bool = True, **fields: Any) -> dict[str, Any]:
    """Write the checkpoint of `model` atomically: format, model, decoder, then `fields` in the
    order given (see the module docstring). Returns the saved dict (`write` False: the dict only,
    for the processes of a data-parallel run other than the one that writes)."""
    checkpoint = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                  "decoder": {"design": model.design, **model.hparams()}, **fields}
    if write:
        save_torch(path, checkpoint)
    return checkpoint


def load_generator(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained decoder (eval mode) and its checkpoint dict; a missing, corrupt, foreign or
    incomplete file (one lacking a GENERATION_KEYS entry) is one error naming it. A directory
    (or its manifest.json) is a generator release (dnd.release): its model and manifest, which
    holds the GENERATION_KEYS too; a file that does not match the manifest's sha256 is refused."""
    from dnd.release import is_release, load_release

    if is_release(path):
        return load_release(path)
    ckpt = load_torch(path, "generator checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path} is not a DnD generator checkpoint ({CHECKPOINT_FORMAT})")
    missing = [k for k in GENERATION_KEYS if ckpt.get(k) is None]
    if missing:
        raise ArtifactError(f"generator checkpoint {path} lacks {missing} (written by an older version?): "
                            "retrain it with `dnd train-generator`")
    try:
        model = build_decoder(ckpt["decoder"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ArtifactError(f"generator checkpoint {path} is incomplete ({type(exc).__name__}: {first})") from exc
    return model.eval().requires_grad_(False), ckpt
