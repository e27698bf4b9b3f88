"""scripts/gpu_check.py on this CPU machine: its comparisons on runs made to differ, and (slow) the
decoder part end to end with `--device cpu --quick`. On a GPU machine the same script compares CUDA
with the CPU (docs/cluster.md)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
gc = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gc)


def _run(root: Path, lora: torch.Tensor, gold: list[float], correct: list[bool]) -> Path:
    (root / "results" / "zoo" / "a" / "final").mkdir(parents=True)
    save_file({"w": lora}, str(root / "results" / "zoo" / "a" / "final" / "adapter_model.safetensors"))
    (root / "results" / "generated" / "t" / "dnd_0").mkdir(parents=True)
    save_file({"w": 2 * lora}, str(root / "results" / "generated" / "t" / "dnd_0" / "adapter_model.safetensors"))
    (root / "results" / "eval").mkdir(parents=True)
    row = {"target": "t", "method": "dnd", "adapter": "dnd_0", "ids": ["q0", "q1", "q2"], "correct": correct,
           "gold_logprob": gold}
    (root / "results" / "eval" / "t.jsonl").write_text(json.dumps(row) + "\n")
    return root


def test_runs_are_compared_stage_by_stage(tmp_path):
    w = torch.arange(6.0).reshape(2, 3)
    ref = _run(tmp_path / "cpu", w, [-1.0, -2.0, -3.0], [True, False, True])
    same = gc.compare_runs(ref, ref)
    assert same["zoo_final_max_abs_diff"] == 0 and same["generated_max_abs_diff"] == 0
    assert same["answers"]["t"]["same_answer"] == 1 and same["answers"]["t"]["max_abs_gold_logprob_diff"] == 0
    got = _run(tmp_path / "cuda", w + 1e-3, [-1.0, -2.5, -3.0], [True, True, True])
    diff = gc.compare_runs(ref, got)
    assert diff["zoo_final_max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert diff["generated_max_abs_diff"] == pytest.approx(2e-3, rel=1e-3)
    assert diff["answers"]["t"]["same_answer"] == pytest.approx(2 / 3)
    assert diff["answers"]["t"]["max_abs_gold_logprob_diff"] == pytest.approx(0.5)
    shutil.rmtree(got / "results" / "generated" / "t" / "dnd_0")
    with pytest.raises(ValueError, match="the two runs wrote different tensors"):
        gc.compare_runs(ref, got)


def test_the_smoke_runs_score_with_the_encoder_on_the_device():
    """The stages part runs the smoke profile with its encoder the run's own tiny Llama, in `dtype`."""
    cfg = gc.smoke_config("float32", {"kind": "llm", "path": "/x/resources/models/base"})
    assert cfg["encoder"]["kind"] == "llm" and cfg["evaluation"]["dtype"] == "float32" and cfg["name"] == "gpucheck"
    assert cfg["data"]["datasets"] == ["capitals", "sounds", "opposites"]


@pytest.mark.slow
def test_decoder_part_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                          "--parts", "decoder", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["decoder"]["quick"]
    rows = report["decoder"]["rows"]
    assert [r["batch_size"] for r in rows] == [2, 4]
    for r in rows:
        assert r["median_step_s"] > 0 and r["estimate_total_bytes"] > 0 and r["peak_allocated_bytes"] is None
