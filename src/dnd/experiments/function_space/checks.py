"""The function_space experiment's memorization checks and the scoring of its generators' adapters
(issue 30 item 5; workflow/rules/function_space.smk).

Commands:
  fs-checks  dnd fs-checks --plan-json JSON --out CSV
             per generator of the plan (the default run's DnD and each new generator, each on its zoo):
             each of its DnD adapters' ΔW distance to every training LoRA of the fold (the nearest by ΔW,
             the nearest by prompts = the default run's `nearest`), beside the distances between the
             training LoRAs; and its noise baseline: the prompt-nearest source LoRA plus seeded Gaussian
             noise whose ΔW distance from that LoRA equals the adapter's own (`noise_adapter`), written
             as a PEFT adapter folder
  fs-score   dnd fs-score --params JSON --plan-json JSON --model DIR --tasks YAML... --out JSONL
                 [--cache-dir DIR]
             every adapter of the plan, (method, adapter, folder), on the target's test items with the
             default run's scorer (dnd.evaluate.score_adapters), one dnd.evaluate row each; with
             `shared_a_sources` in the plan also the shared-A zoo's LoRA of the target's nearest source
             (method shared_a_nearest)

ΔW is B·A per LoRA module without the LoRA scaling (alpha / r, the same for every adapter of one
layout), summed over the modules as one Frobenius norm (dnd.diagnostics: adapter_factors, gram).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import torch

from dnd.diagnostics import adapter_factors, distance, gram
from dnd.io import load_safetensors, read_jsonl, write_csv, write_jsonl
from dnd.schedule import derive_seed

log = logging.getLogger(__name__)

CHECK_COLUMNS = ["target", "generator", "zoo", "adapter", "nearest_dw", "dist_nearest_dw", "nearest_prompt",
                 "dist_nearest_prompt", "min_between", "mean_between", "ratio_to_min_between", "noise_sigma",
                 "noise_dist"]
SHARED_A_NEAREST = "shared_a_nearest"


# ============================================================================ ΔW geometry
def prompt_nearest(eval_file: str | Path, target: str) -> str:
    """The source the default run's `nearest` method picked for `target` (its row's adapter)."""
    rows = [r for r in read_jsonl(eval_file) if r.get("method") == "nearest" and r.get("target") == target]
    if len(rows) != 1:
        raise ValueError(f"{eval_file}: expected one nearest row of target {target}, found {len(rows)}")
    return str(rows[0]["adapter"])


def _pairs_gram(x: list[tuple[torch.Tensor, torch.Tensor]], y: list[tuple[torch.Tensor, torch.Tensor]]):
    """Gram matrix of two factored ΔW lists whose ranks may differ (the smaller padded with zeros)."""
    xs, ys = [], []
    for (ax, bx), (ay, by) in zip(x, y):
        r = max(ax.shape[0], ay.shape[0])
        xs.append((torch.nn.functional.pad(ax, (0, 0, 0, r - ax.shape[0])),
                   torch.nn.functional.pad(bx, (0, r - bx.shape[1]))))
        ys.append((torch.nn.functional.pad(ay, (0, 0, 0, r - ay.shape[0])),
                   torch.nn.functional.pad(by, (0, r - by.shape[1]))))
    return gram([xs, ys])


def noise_sigma(factors: list[tuple[torch.Tensor, torch.Tensor]], noise: list[tuple[torch.Tensor, torch.Tensor]],
                dist: float) -> float:
    """The σ ≥ 0 at which (B + σN_B)(A + σN_A) lies at ΔW distance `dist` from BA, summed over the
    modules: ||σu + σ²v||² = dist² with u = N_B A + B N_A, v = N_B N_A, a quartic in σ (the smallest
    positive real root). `factors`, `noise`: (A, B) and (N_A, N_B) per module."""
    if dist < 0 or not math.isfinite(dist):
        raise ValueError(f"noise distance must be finite and >= 0, got {dist}")
    if dist == 0:
        return 0.0
    u = [(torch.cat([a, na]), torch.cat([nb, b], dim=1)) for (a, b), (na, nb) in zip(factors, noise)]
    v = list(noise)
    g = _pairs_gram(u, v)
    a2, ab, b2 = float(g[0, 0]), float(g[0, 1]), float(g[1, 1])
    import numpy as np

    roots = np.roots([b2, 2 * ab, a2, 0.0, -dist * dist])
    real = sorted(float(r.real) for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r)) and r.real > 0)
    if not real:
        raise ValueError("no noise scale reaches the requested ΔW distance (degenerate noise draw)")
    return real[0]


def noise_adapter(state_dict: dict[str, torch.Tensor], dist: float, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """(the LoRA `state_dict` plus Gaussian noise σ·N(0, 1) on every A and B entry, σ) such that its ΔW
    lies at distance `dist` from the original's (`noise_sigma`). The noise of each tensor is drawn in
    sorted key order from torch.Generator().manual_seed(seed), float64; the result keeps each tensor's
    dtype."""
    keys = sorted(k for k in state_dict if ".lora_A." in k)
    if not keys:
        raise ValueError("no LoRA A/B factors in the state dict (not a PEFT LoRA adapter)")
    gen = torch.Generator().manual_seed(int(seed))
    draw = {k: torch.randn(state_dict[k].shape, generator=gen, dtype=torch.float64) for k in sorted(state_dict)}
    factors = [(state_dict[k].double(), state_dict[k.replace(".lora_A.", ".lora_B.")].double()) for k in keys]
    noise = [(draw[k], draw[k.replace(".lora_A.", ".lora_B.")]) for k in keys]
    sigma = noise_sigma(factors, noise, dist)
    out = {k: (v.double() + sigma * draw[k]).to(v.dtype) for k, v in state_dict.items()}
    return out, sigma


def sd_factors(state_dict: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A, B) float64 per module of a LoRA state dict, sorted by key (adapter_factors' order)."""
    return [(state_dict[k].double(), state_dict[k.replace(".lora_A.", ".lora_B.")].double())
            for k in sorted(state_dict) if ".lora_A." in k]


def distance_rows(target: str, generator: str, zoo: str, sources: dict[str, Path], adapters: Sequence[Path],
                  nearest_prompt: str) -> list[dict[str, Any]]:
    """Each adapter's ΔW distance to the nearest training LoRA of `sources` (and to the prompt-nearest
    one), with the minimum and mean distance between the training LoRAs, and their ratio
    (dist_nearest_dw / min_between: below 1, the adapter is closer to a training LoRA than any two
    training LoRAs are to each other)."""
    names = list(sources)
    if nearest_prompt not in sources:
        raise ValueError(f"the nearest source {nearest_prompt!r} of {target} is not among the sources {names}")
    fac = [adapter_factors(sources[d]) for d in names] + [adapter_factors(p) for p in adapters]
    g = gram(fac)
    n = len(names)
    between = [distance(g, i, j) for i in range(n) for j in range(i + 1, n)]
    lo = min(between) if between else math.nan
    mean = sum(between) / len(between) if between else math.nan
    rows = []
    for k, path in enumerate(adapters):
        dists = {d: distance(g, n + k, i) for i, d in enumerate(names)}
        near = min(names, key=lambda d: (dists[d], names.index(d)))
        rows.append({"target": target, "generator": generator, "zoo": zoo, "adapter": Path(path).name,
                     "nearest_dw": near, "dist_nearest_dw": dists[near], "nearest_prompt": nearest_prompt,
                     "dist_nearest_prompt": dists[nearest_prompt], "min_between": lo, "mean_between": mean,
                     "ratio_to_min_between": dists[near] / lo if lo > 0 else math.nan})
    return rows


def run_checks(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """fs-checks on a plan (module doc): the distance rows, each with its noise baseline written."""
    from dnd.generate import write_adapter

    target = plan["target"]
    near = prompt_nearest(plan["eval"], target)
    rows = []
    for gen, spec in plan["generators"].items():
        sources = {d: Path(p) for d, p in spec["sources"].items()}
        adapters, outs = [Path(p) for p in spec["adapters"]], list(spec["noise"])
        if len(adapters) != len(outs):
            raise ValueError(f"generator {gen}: {len(adapters)} adapters but {len(outs)} noise outputs")
        grows = distance_rows(target, gen, spec["zoo"], sources, adapters, near)
        ref = sources[near]
        sd = load_safetensors(ref / "adapter_model.safetensors", f"LoRA of {near}")
        cfg = json.loads((ref / "adapter_config.json").read_text())
        for i, (row, out) in enumerate(zip(grows, outs)):
            noised, sigma = noise_adapter(sd, row["dist_nearest_prompt"],
                                          derive_seed(plan["seed"], "function_space_noise", target, gen, i))
            write_adapter(out, noised, cfg, force=False)
            g = gram([sd_factors(sd), sd_factors(noised)])
            row.update(noise_sigma=sigma, noise_dist=distance(g, 0, 1))
            log.info("%s %s_%d: ΔW distance %.4g to %s (nearest by ΔW %s %.4g; training LoRAs %.4g-mean %.4g); "
                     "noise σ %.4g", target, gen, i, row["dist_nearest_prompt"], near, row["nearest_dw"],
                     row["dist_nearest_dw"], row["min_between"], row["mean_between"], sigma)
        rows += grows
    return rows


# ============================================================================ scoring
def score_plan(plan: dict[str, Any], params: dict[str, Any], model: Path, tasks: Sequence[Path],
               cache_dir: Path | None = None, device: Any = "cpu") -> list[dict[str, Any]]:
    """fs-score on a plan (module doc): one dnd.evaluate row per adapter."""
    from dnd.config import section
    from dnd.evaluate import result_row, score_adapters

    ev = section("evaluation", params.get("evaluation"))
    target = plan["target"]
    adapters = [(str(m), str(a), Path(p)) for m, a, p in plan["adapters"]]
    shared = plan.get("shared_a_sources") or {}
    if shared:
        near = prompt_nearest(plan["eval"], target)
        if near not in shared:
            raise ValueError(f"the nearest source {near!r} of {target} has no shared-A LoRA in the plan")
        adapters.append((SHARED_A_NEAREST, near, Path(shared[near])))
    scored = score_adapters(target, ev, model, tasks, adapters, cache_dir, device)
    return [result_row(target, m, a, scored[(m, a)], ev["metric"]) for m, a, _ in adapters]


# ============================================================================ CLI
def _add_checks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan-json", required=True, help="JSON: {target, seed, eval, generators: {name: {zoo, "
                   "sources: {ds: final dir}, adapters: [dir], noise: [out dir]}}}")
    p.add_argument("--out", required=True, type=Path, help="results/function_space/checks/<T>.csv")


def _run_checks(args: argparse.Namespace) -> None:
    rows = run_checks(json.loads(args.plan_json))
    write_csv(args.out, CHECK_COLUMNS, rows)


def _add_score(p: argparse.ArgumentParser) -> None:
    from dnd.paths import add_declared_option

    p.add_argument("--params", required=True, help='JSON: {"evaluation": {...}}')
    p.add_argument("--plan-json", required=True, help="JSON: {target, adapters: [[method, adapter, dir]], eval, "
                   "shared_a_sources: {ds: dir}}")
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    add_declared_option(p, "--tasks", "the target's task (results/tasks/dnd_<T>.yaml)")
    p.add_argument("--out", required=True, type=Path, help="results/function_space/eval_generators/<T>.jsonl")
    p.add_argument("--cache-dir", type=Path, default=None, help="score cache directory; omit to score everything")


def _run_score(args: argparse.Namespace) -> None:
    from dnd.config import parse_params

    rows = score_plan(json.loads(args.plan_json), parse_params(args.params), args.model, args.tasks,
                      args.cache_dir, args.device)
    write_jsonl(args.out, rows)


COMMANDS = {
    "fs-checks": (_add_checks, _run_checks),
    "fs-score": (_add_score, _run_score),
}
