"""One prepared GPU check (issue 31): every stage on CUDA against the CPU, and the paper decoder's
training step time and peak memory against check-profile's estimate; one JSON.

    python scripts/gpu_check.py --out results/gpu_check.json        # on a machine with a CUDA GPU
    python scripts/gpu_check.py --device cpu --quick --out /tmp/g.json   # the same code on the CPU

Needs the repository and torch, transformers, peft and lm-eval (a CUDA build where a GPU is
checked); nothing is downloaded. Two parts:

  stages   The smoke profile (config/smoke.yaml: a tiny random Llama, hand-written questions; its
           encoder swapped for the tiny Llama itself, `encoder.kind: llm`, so that no encoder
           package is needed and encoding runs on the device too) up to `evaluate`: base model,
           zoo, encoding, generator training, generation and scoring, once with every job on the
           CPU and once with every job holding a GPU (`--default-resources gpu=1`: the rules then
           pass `--device cuda`), both in float32; then the scoring again in bfloat16 on both.
           Reported per stage: the largest absolute difference of the zoo's final LoRAs, of the
           generated adapters, and per target the share of items with the same answer and the
           largest |difference| of the gold answer's log-probability (float32: CUDA against the
           CPU; bfloat16: each device against its own float32).
  decoder  The paper decoder (config/paper.yaml's generator, its shapes from the committed
           results/check_profile_paper.json) trained for a few AdamW steps on random data at batch
           4 and 64 on the device: median step time and torch.cuda.max_memory_allocated, beside
           check-profile's traced estimate for the same step (dnd.check_profile.memory_train_generator).

`--quick` (tests, the CPU) shrinks the decoder part: the paper's stages with every channel count
divided by 64, 4 prompts of 32 positions, 512 output tokens, batch 2 and 4, two steps; the
stages part is the same either way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from dnd.io import read_jsonl, write_json  # noqa: E402

STAGES_TARGET = "evaluate"


# ------------------------------------------------------------------------------ stages
def smoke_config(dtype: str, encoder: dict[str, Any]) -> dict[str, Any]:
    """config/smoke.yaml with `encoder` settings and scoring in `dtype`."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["name"] = "gpucheck"
    cfg.setdefault("encoder", {}).update(encoder)
    cfg.setdefault("evaluation", {}).update({"dtype": dtype})
    return cfg


def snakemake(workdir: Path, cfg: dict[str, Any], gpu: bool, cores: int, target: str) -> None:
    cfgfile = workdir / "gpucheck.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--cores", str(cores),
           "--configfile", str(cfgfile), "-d", str(workdir), "--default-resources", f"gpu={1 if gpu else 0}", target]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def run_smoke(workdir: Path, dtype: str, gpu: bool, cores: int) -> float:
    """The smoke DAG up to STAGES_TARGET in `workdir`, its encoder the run's own tiny Llama (made
    first: the encoder reads it as a model directory); seconds."""
    t0 = time.perf_counter()
    base = workdir / "resources" / "models" / "base"
    if not base.is_dir():
        snakemake(workdir, smoke_config(dtype, {"kind": "hashing"}), False, cores, "resources/models/base")
    snakemake(workdir, smoke_config(dtype, {"kind": "llm", "path": str(base)}), gpu, cores, STAGES_TARGET)
    return time.perf_counter() - t0


def tensors_of(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every .safetensors file under `folder`, keyed by file and tensor name."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{f.relative_to(folder)}:{k}"] = v.float()
    return out


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float | None:
    """The largest |a - b| over tensors present in both (same keys required); None when there are none."""
    if set(a) != set(b):
        raise ValueError(f"the two runs wrote different tensors: {sorted(set(a) ^ set(b))[:4]}")
    return max((float((a[k] - b[k]).abs().max()) for k in a), default=None)


def eval_rows(results: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    rows = {}
    for f in sorted((results / "eval").glob("*.jsonl")):
        for r in read_jsonl(f):
            rows[(r["target"], r["method"], r["adapter"])] = r
    return rows


def answers_agree(ref: Path, got: Path) -> dict[str, Any]:
    """Per target: share of (adapter, item) pairs with the same correctness and the largest |difference|
    of the gold answer's log-probability, `got` against `ref` (two runs' results/ folders)."""
    a, b = eval_rows(ref), eval_rows(got)
    if set(a) != set(b):
        raise ValueError(f"the two runs scored different adapters: {sorted(set(a) ^ set(b))[:4]}")
    per: dict[str, dict[str, Any]] = {}
    for key in sorted(a):
        ra, rb = a[key], b[key]
        if ra["ids"] != rb["ids"]:
            raise ValueError(f"{key}: the two runs scored different items")
        t = per.setdefault(key[0], {"pairs": 0, "same": 0, "max_abs_gold_logprob_diff": 0.0})
        t["pairs"] += len(ra["correct"])
        t["same"] += sum(x == y for x, y in zip(ra["correct"], rb["correct"]))
        diffs = [abs(x - y) for x, y in zip(ra["gold_logprob"], rb["gold_logprob"])]
        t["max_abs_gold_logprob_diff"] = max(t["max_abs_gold_logprob_diff"], *diffs)
    for t in per.values():
        t["same_answer"] = t["same"] / t["pairs"] if t["pairs"] else None
    return per


def compare_runs(ref: Path, got: Path) -> dict[str, Any]:
    """What differs between two runs' directories (`ref`: the CPU, `got`: the device), stage by stage."""
    return {
        "zoo_final_max_abs_diff": max_abs_diff(tensors_of(ref / "results" / "zoo"),
                                               tensors_of(got / "results" / "zoo")),
        "generated_max_abs_diff": max_abs_diff(tensors_of(ref / "results" / "generated"),
                                               tensors_of(got / "results" / "generated")),
        "answers": answers_agree(ref / "results", got / "results"),
    }


def stages_part(device: str, cores: int, keep: Path | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="dnd-gpucheck-")) if keep is None else keep
    out: dict[str, Any] = {"seconds": {}}
    # on the CPU itself: the CPU twice (the comparison of a run with a repeat of itself)
    other = device if device != "cpu" else "cpu2"
    runs = {"cpu": root / "cpu", other: root / other}
    copies = {}
    for name, folder in runs.items():
        folder.mkdir(parents=True, exist_ok=True)
        gpu = name != "cpu" and device != "cpu"
        out["seconds"][f"{name} float32"] = round(run_smoke(folder, "float32", gpu, cores), 1)
        copies[name] = folder.with_name(folder.name + "_float32")
        shutil.copytree(folder / "results", copies[name] / "results", dirs_exist_ok=True)
        out["seconds"][f"{name} bfloat16 scoring"] = round(run_smoke(folder, "bfloat16", gpu, cores), 1)
    (ref, ref32), (dev, dev32) = [(runs[n], copies[n]) for n in runs]
    out["float32: device against cpu"] = compare_runs(ref32, dev32)
    out["bfloat16 answers: cpu against its float32"] = answers_agree(ref32 / "results", ref / "results")
    out["bfloat16 answers: device against its float32"] = answers_agree(dev32 / "results", dev / "results")
    out["bfloat16 answers: device against cpu"] = answers_agree(ref / "results", dev / "results")
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ decoder
def paper_decoder_settings(quick: bool) -> tuple[dict[str, Any], tuple, tuple]:
    """The paper's generator settings and shapes (config/paper.yaml; shapes from the committed
    results/check_profile_paper.json); `quick`: channels / 64, 4 prompts of 32 positions, 512 tokens
    (a CPU-sized stand-in)."""
    from dnd.config import load_config

    cfg = load_config(REPO / "config" / "paper.yaml")
    gen = dict(cfg["generator"])
    profile = json.loads((REPO / "results" / "check_profile_paper.json").read_text())
    g = next(x for x in profile["generators"] if x["design"] == gen["design"])
    input_shape, output_shape = tuple(g["input_shape"]), tuple(g["output_shape"])
    if quick:
        gen["stages"] = [[max(1, c // 64), h, w] for c, h, w in gen["stages"]]
        input_shape, output_shape = (4, 32, input_shape[2]), (512, *output_shape[1:])
    return gen, input_shape, output_shape


def decoder_part(device: torch.device, quick: bool, steps: int) -> dict[str, Any]:
    from dnd.check_profile import memory_train_generator
    from dnd.generators import build_generator, weighted_mse
    from dnd.method.generator_model import count_parameters

    gen, input_shape, output_shape = paper_decoder_settings(quick)
    rows = []
    for batch in ((2, 4) if quick else (4, 64)):
        estimate = memory_train_generator({**gen, "batch_size": batch}, input_shape, output_shape, n_sources=6,
                                          n_train=0)
        torch.manual_seed(0)
        model = build_generator(gen, input_shape, output_shape, [torch.zeros(1, *output_shape)] * 6).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=gen["lr"], weight_decay=gen["weight_decay"])
        x = torch.randn(batch, *input_shape, device=device)
        y = torch.randn(batch, *output_shape, device=device)
        w = torch.ones(output_shape[0], device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for step in range(steps + 1):  # step 0: warm-up, untimed
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = weighted_mse(model(x), y, w)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), gen["grad_clip"])
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step:
                times.append(time.perf_counter() - t0)
            if not torch.isfinite(loss):
                raise RuntimeError(f"batch {batch}: non-finite loss at step {step}")
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        rows.append({"batch_size": batch, "parameters": count_parameters(model),
                     "median_step_s": statistics.median(times),
                     "steps": steps, "peak_allocated_bytes": peak,
                     "estimate_total_bytes": estimate["total_bytes"],
                     "peak_over_estimate": peak / estimate["total_bytes"] if peak else None})
        del model, opt, x, y
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"stages": gen["stages"], "input_shape": list(input_shape), "output_shape": list(output_shape),
            "quick": quick, "rows": rows}


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="the device checked against the CPU (default cuda)")
    p.add_argument("--parts", nargs="+", default=["stages", "decoder"], choices=["stages", "decoder"])
    p.add_argument("--quick", action="store_true", help="a CPU-sized decoder part (tests)")
    p.add_argument("--steps", type=int, default=5, help="timed decoder steps per batch size")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--keep", type=Path, default=None, help="keep the stage runs' directories here")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    from dnd.device import describe, resolve, set_deterministic

    device = resolve(args.device)
    set_deterministic(device)
    report: dict[str, Any] = {
        "device": describe(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    t0 = time.perf_counter()
    if "stages" in args.parts:
        report["stages"] = stages_part(str(device.type), args.cores, args.keep)
    if "decoder" in args.parts:
        report["decoder"] = decoder_part(device, args.quick, max(1, args.steps if not args.quick else 2))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, report)
    print(json.dumps(report, indent=2)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
