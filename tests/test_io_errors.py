"""Unreadable and unwritable artifacts: one error that names the file the user knows (never a
temporary sibling), and no advice to load a file unsafely."""

from __future__ import annotations

import logging
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dnd.cli import main
from dnd.io import ArtifactError, check_safetensors, load_safetensors, load_torch

REPO = Path(__file__).resolve().parents[1]


def _lora_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 8),
               "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(8, 2)}, str(path))
    return path


def _truncate(path: Path, keep: int = 60) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


@pytest.mark.parametrize("damage", ["truncated", "junk", "empty"])
def test_corrupt_safetensors_is_named(tmp_path, damage):
    p = _lora_file(tmp_path / "step-00001.safetensors")
    if damage == "truncated":
        _truncate(p, len(p.read_bytes()) - 10)
    else:
        p.write_bytes(b"not safetensors" if damage == "junk" else b"")
    with pytest.raises(ArtifactError, match=rf"^LoRA checkpoint {p} cannot be read \(SafetensorError: "):
        load_safetensors(p, "LoRA checkpoint")
    with pytest.raises(ArtifactError, match=rf"^base model weights {p} cannot be read"):
        check_safetensors(tmp_path, "base model weights")


def test_corrupt_zoo_checkpoint_fails_tokenize_zoo_naming_it(tmp_path, caplog):
    ck = tmp_path / "checkpoints"
    _lora_file(ck / "step-00001.safetensors")
    bad = _truncate(_lora_file(ck / "step-00002.safetensors"))
    with caplog.at_level(logging.ERROR):
        rc = main(["tokenize-zoo", "--params", '{"chunk_width": 4}', "--checkpoints", str(ck),
                   "--out", str(tmp_path / "tokens.pt")])
    assert rc == 1
    assert f"LoRA checkpoint {bad} cannot be read (SafetensorError" in caplog.text
    assert not (tmp_path / "tokens.pt").exists()


def test_corrupt_adapter_is_named_by_the_evaluation_loader(tmp_path):
    from dnd.evaluate import load_state_dict

    bad = _truncate(_lora_file(tmp_path / "dnd_0" / "adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match=rf"^LoRA adapter weights {bad} cannot be read"):
        load_state_dict(tmp_path / "dnd_0")


def test_corrupt_base_model_is_named_before_transformers_reads_it(tiny_model_dir, tmp_path):
    from dnd.evaluate import InPlaceScorer

    model = tmp_path / "base"
    shutil.copytree(tiny_model_dir, model)
    bad = _truncate(model / "model.safetensors", 1000)
    with pytest.raises(ArtifactError, match=rf"^base model weights {bad} cannot be read"):
        InPlaceScorer(model, tmp_path / "lora", tmp_path / "tasks", "t", limit=None, batch_size=1)


def test_unsafe_pickle_error_gives_no_advice_to_load_unsafely(tmp_path):
    p = tmp_path / "generator.pt"
    with open(p, "wb") as f:  # a pickle of a class: the weights-only unpickler refuses it
        pickle.dump({"cls": ArtifactError}, f)
    with pytest.raises(ArtifactError) as info:
        load_torch(p, "generator checkpoint")
    msg = str(info.value)
    assert msg.startswith(f"generator checkpoint {p} cannot be read (UnpicklingError: the safe (weights-only) "
                          "unpickler refused it: ")
    assert "weights_only" not in msg and "Re-running" not in msg and "trusted source" not in msg
    assert "\n" not in msg and len(msg) < 400


WRITER = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import torch
    from dnd.cli import describe_failure
    from dnd.io import atomic_path, save_safetensors, save_torch, write_text

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    out = Path(sys.argv[1])

    def safetensors():
        with atomic_path(out / "adapter.safetensors") as tmp:
            save_safetensors({"w": torch.zeros(5000)}, tmp, out / "adapter.safetensors")

    for name, write in [("out.txt", lambda: write_text(out / "out.txt", "x" * 5000)),
                        ("w.pt", lambda: save_torch(out / "w.pt", torch.zeros(5000))),
                        ("adapter.safetensors", safetensors)]:
        try:
            write()
            print("no error")
        except Exception as exc:
            print(describe_failure(exc))
""")


def test_failed_writes_name_the_output_not_the_temporary_file(tmp_path):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=120)
    lines = res.stdout.splitlines()
    assert len(lines) == 3, res.stdout + res.stderr
    for line, name in zip(lines, ["out.txt", "w.pt", "adapter.safetensors"]):
        assert str(tmp_path / name) in line and ".tmp" not in line, line
    assert "File too large" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written, no temporary left


def test_corrupt_local_hf_base_model_is_named(tiny_model_dir, tmp_path):
    from dnd.base_model import prepare_base_model

    model = tmp_path / "local-model"
    shutil.copytree(tiny_model_dir, model)
    bad = _truncate(model / "model.safetensors", 1000)
    with pytest.raises(ArtifactError, match=rf"^base model weights {bad} cannot be read"):
        prepare_base_model({"source": "hf", "name_or_path": str(model)}, tmp_path / "base", seed=0)
    assert not (tmp_path / "base").exists()


def test_corrupt_file_in_the_weight_space_figure_is_named(tmp_path):
    from dnd.reporting.figures import pca_coordinates

    good = _lora_file(tmp_path / "a" / "step-00001.safetensors")
    bad = _truncate(_lora_file(tmp_path / "b" / "step-00001.safetensors"))
    with pytest.raises(ArtifactError, match=rf"^LoRA checkpoint {bad} cannot be read"):
        pca_coordinates([("a", "LoRA checkpoint", good), ("b", "LoRA checkpoint", bad)], n_coords=2)
