"""Generator diagnostics: does a generator reproduce the LoRAs it was trained on from their
prompts, does it answer to its prompts, and how much of a held-out LoRA can the sources reach?

Commands:
  diagnose-fold  dnd diagnose-fold --params JSON --target T --sources D1 ... --generators G1 ...
                     --variants V1 ... --tokens FILE... --encoded FILE...
                     --out results/diagnostics/{T}.csv
                 the weight-space diagnostics of one fold, for each of its generators; without
                 --generators (and --encoded), the zoo's rows alone (reachability, checkpoint
                 spread: the function_space experiment's shared-A zoo)
  diagnostics    dnd diagnostics --folds results/diagnostics/*.csv --metrics results/metrics.json
                     --out results/diagnostics.csv
                 every fold, plus the function-space rows from metrics.json, and the design the
                 selection rule (`select_design`) picks

Output rows `fold,variant,metric,value`; the variants and each metric's definition:
docs/modules.md, section `src/dnd/diagnostics.py`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .config import command_params
from .generators import load_zoo_tokens, mean_token, weighted_mse
from .io import write_csv
from .method.encoder import load_encoded
from .method.generator_checkpoint import load_generator
from .method.tokenization import LoraLayout, detokenize
from .paths import add_declared_option, declared
from .schedule import derive_seed, draw_indices

log = logging.getLogger(__name__)

COLUMNS = ["fold", "variant", "metric", "value"]
ZOO = "zoo"
#: Goals of the default generator on every fold (issue: reproduce the training LoRAs).
FIT_GOAL, RETRIEVAL_GOAL = 0.3, 0.9
#: Selection rule: a design whose held-out adapters stray further than this from the sources'
#: centre (heldout_norm_ratio, in units of the sources' spread) extrapolates.
STRAY_LIMIT = 2.0


# ----------------------------------------------------------------------------- ΔW geometry


def factors(tokens: Tensor, layout: LoraLayout) -> list[tuple[Tensor, Tensor]]:
    """(A (r, in), B (out, r)) per LoRA module of a token tensor (T, r+2, w+2), in layout order."""
    sd = detokenize(tokens.float(), layout)
    pairs = []
    for k in sd:
        if ".lora_A." in k:
            pairs.append((sd[k].double(), sd[k.replace(".lora_A.", ".lora_B.")].double()))
    return pairs


def adapter_factors(path: str | Path) -> list[tuple[Tensor, Tensor]]:
    """(A (r, in), B (out, r)) per LoRA module of a PEFT adapter (its folder or its
    adapter_model.safetensors / a checkpoint file), float64, in key order (the same order for every
    adapter of one LoRA layout)."""
    from .io import load_safetensors

    path = Path(path)
    file = path / "adapter_model.safetensors" if path.is_dir() else path
    sd = load_safetensors(file, "LoRA adapter")
    pairs = [(sd[k].double(), sd[k.replace(".lora_A.", ".lora_B.")].double()) for k in sorted(sd) if ".lora_A." in k]
    if not pairs:
        raise ValueError(f"{file}: no LoRA A/B factors (not a PEFT LoRA adapter)")
    return pairs


def gram(adapters: Sequence[list[tuple[Tensor, Tensor]]]) -> Tensor:
    """G[i, j] = sum over modules of <B_i A_i, B_j A_j>_F (float64), from the factors:
    <B1 A1, B2 A2> = sum((B1^T B2) * (A1 A2^T))."""
    n = len(adapters)
    g = torch.zeros(n, n, dtype=torch.float64)
    for m in range(len(adapters[0])):
        a = torch.stack([ad[m][0] for ad in adapters])  # (n, r, in)
        b = torch.stack([ad[m][1] for ad in adapters])  # (n, out, r)
        btb = torch.einsum("nor,mos->nmrs", b, b)
        aat = torch.einsum("nri,msi->nmrs", a, a)
        g += (btb * aat).sum(dim=(2, 3))
    return g


def sq_norm(g: Tensor, c: Tensor) -> float:
    """||sum_i c_i x_i||^2 for coefficient vector c and Gram matrix g."""
    return float(c @ g @ c)


def distance(g: Tensor, i: int, j: int) -> float:
    """||x_i - x_j|| from the Gram matrix g."""
    return math.sqrt(max(float(g[i, i] + g[j, j] - 2 * g[i, j]), 0.0))


def unit(n: int, i: int) -> Tensor:
    e = torch.zeros(n, dtype=torch.float64)
    e[i] = 1.0
    return e


def reachability(g: Tensor, sources: Sequence[int], target: int) -> float:
    """Share of ||x_t - mean_s x_s||^2 that lies in span{x_s - mean_s x_s} (Gram-based projection)."""
    n = g.shape[0]
    mean = torch.zeros(n, dtype=torch.float64)
    mean[list(sources)] = 1.0 / len(sources)
    dev = torch.stack([unit(n, s) - mean for s in sources])  # (S, n) coefficient rows
    y = unit(n, target) - mean
    gd = dev @ g @ dev.T  # (S, S) Gram of the deviations (rank S-1)
    gy = dev @ g @ y  # (S,)
    coef = torch.linalg.pinv(gd, hermitian=True) @ gy
    total = sq_norm(g, y)
    return float(gy @ coef) / total if total > 0 else math.nan


def spread(g: Tensor) -> float:
    """Mean ΔW distance of the vectors of Gram matrix g from their own mean."""
    k = g.shape[0]
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k  # rows: vector minus the mean
    return sum(math.sqrt(max(sq_norm(g, c), 0.0)) for c in centred) / k


def mean_pair_distance(g: Tensor) -> float:
    """Mean ΔW distance over the pairs of vectors of Gram matrix g (NaN with fewer than two)."""
    n = g.shape[0]
    between = [distance(g, i, j) for i in range(n) for j in range(i + 1, n)]
    return sum(between) / len(between) if between else math.nan


def checkpoint_spread(token_sets: Sequence[Tensor], layout: LoraLayout) -> float:
    """Mean ΔW distance of a dataset's checkpoints from their own mean (averaged over datasets),
    over the mean ΔW distance between the datasets' final LoRAs: how different the training
    targets of one dataset are, in units of how different the datasets are."""
    within = [spread(gram([factors(t, layout) for t in tokens])) for tokens in token_sets]
    between = mean_pair_distance(gram([factors(tokens[-1], layout) for tokens in token_sets]))
    return (sum(within) / len(within)) / between


# ----------------------------------------------------------------------------- one fold


def draw_condition(states: Tensor, n: int, seed: int, dataset: str, draw: int) -> Tensor:
    """(1, n, L, D): n prompts of an encoded split, drawn as generation draws them."""
    g = torch.Generator().manual_seed(derive_seed(seed, "diagnostics", dataset, draw))
    return states[draw_indices(states.shape[0], n, g)].float().unsqueeze(0)


def token_error(a: Tensor, b: Tensor, weights: Tensor) -> float:
    """The training loss (dnd.generators.weighted_mse) between two token tensors (T, h, w)."""
    return float(weighted_mse(a.unsqueeze(0), b.unsqueeze(0), weights))


def diagnose_fold(
    target: str,
    sources: Sequence[str],
    generators: Mapping[str, str | Path],
    tokens: Sequence[str | Path],
    encoded: Sequence[str | Path],
    seed: int = 0,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """The rows of one fold (docs/modules.md), each generator run on `device` (the ΔW algebra stays
    on the CPU, in float64 where it was); `generators` maps variant -> checkpoint; `tokens`,
    `encoded`: the declared parameter tokens (.../{d}.pt) and encoded cond prompts (.../{d}/cond.pt)
    of the fold's datasets, each found by its name (dnd.paths.declared); `encoded` is read only
    when there are generators."""
    if target in sources or not sources:
        raise ValueError(f"fold {target}: the sources {list(sources)} must be non-empty and exclude the target")
    datasets = [*sources, target]
    zoo = {d: load_zoo_tokens(declared(tokens, f"{d}.pt", f"parameter tokens of {d}", "--tokens")) for d in datasets}
    layout = LoraLayout.from_dict(zoo[sources[0]]["layout"])
    tok = {d: zoo[d]["tokens"] for d in datasets}
    offset = mean_token([tok[s] for s in sources])
    cond = {d: load_encoded(declared(encoded, Path(d) / "cond.pt", f"encoded cond prompts of {d}",
                                     "--encoded"))["states"] for d in datasets} if generators else {}
    real = [factors(tok[d][-1], layout) for d in datasets]  # final LoRA of each dataset
    ns, n_real = len(sources), len(datasets)
    s_idx, t_idx = list(range(ns)), ns

    g_real = gram(real)
    rows = [{"fold": target, "variant": ZOO, "metric": "reachability", "value": reachability(g_real, s_idx, t_idx)},
            {"fold": target, "variant": ZOO, "metric": "checkpoint_spread",
             "value": checkpoint_spread([tok[s] for s in sources], layout)}]
    for variant, path in generators.items():
        model, ckpt = load_generator(path)
        model = model.to(device)
        if list(ckpt["sources"]) != list(sources):
            raise ValueError(f"{path} was trained on {ckpt['sources']}, fold {target} has sources {list(sources)}")
        weights = ckpt["criterion_weights"].float()
        n_prompts = model.input_shape[0]
        with torch.inference_mode():
            gen = {(d, k): model(draw_condition(cond[d], n_prompts, seed, d, k).to(device))[0].cpu()
                   for d in datasets for k in (0, 1)}
        fit = [
            sum(token_error(gen[(s, 0)], tok[s][k].float(), weights) for k in range(tok[s].shape[0]))
            / sum(token_error(offset, tok[s][k].float(), weights) for k in range(tok[s].shape[0]))
            for s in sources
        ]
        vecs = real + [factors(gen[(d, k)], layout) for k in (0, 1) for d in datasets]
        g = gram(vecs)
        n = g.shape[0]
        gen0 = [n_real + i for i in range(n_real)]  # draw 0 of each dataset
        gen1 = [2 * n_real + i for i in range(n_real)]
        mean = torch.zeros(n, dtype=torch.float64)
        mean[s_idx] = 1.0 / ns

        def cos(i: int, j: int) -> float:
            return float(g[i, j] / math.sqrt(float(g[i, i] * g[j, j]) or 1e-300))

        fit_dw = [sq_norm(g, unit(n, gen0[s]) - unit(n, s)) / sq_norm(g, mean - unit(n, s)) for s in s_idx]
        retrieved = [max(s_idx, key=lambda j: cos(gen0[s], j)) == s for s in s_idx]
        pairs = [(i, j) for i in range(n_real) for j in range(i + 1, n_real)]
        real_d = sum(distance(g, i, j) for i, j in pairs) / len(pairs)
        gen_d = sum(distance(g, gen0[i], gen0[j]) for i, j in pairs) / len(pairs)
        redraw = sum(distance(g, gen0[i], gen1[i]) for i in range(n_real)) / n_real
        spread = sum(math.sqrt(sq_norm(g, unit(n, s) - mean)) for s in s_idx) / ns
        figures = {
            "fit_ratio": sum(fit) / ns,
            "fit_ratio_dw": sum(fit_dw) / ns,
            "retrieval_acc": sum(retrieved) / ns,
            "sensitivity_ratio": gen_d / real_d,
            "redraw_ratio": redraw / real_d,
            "heldout_norm_ratio": math.sqrt(sq_norm(g, unit(n, gen0[t_idx]) - mean)) / spread,
        }
        rows += [{"fold": target, "variant": variant, "metric": k, "value": v} for k, v in figures.items()]
        log.info("%s %s: %s", target, variant, ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    return rows


# ----------------------------------------------------------------------------- all folds


def function_space_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows from metrics.json: `{fold}/{kind}_minus_{baseline}/{metric}` (+ CI) as
    fold, kind, minus_{baseline}_{metric}[_ci_low|_ci_high], value."""
    rows = []
    for key, value in sorted(metrics.items()):
        parts = key.split("/")
        if len(parts) != 3 or "_minus_" not in parts[1] or value is None:
            continue
        fold, comparison, metric = parts
        kind, baseline = comparison.split("_minus_", 1)
        rows.append({"fold": fold, "variant": kind, "metric": f"minus_{baseline}_{metric}", "value": value})
    return rows


def select_design(rows: Sequence[Mapping[str, Any]], default_variant: str = "dnd") -> tuple[str, str]:
    """The selection rule, fixed before any held-out test item is looked at (it reads weight-space
    diagnostics only): a generator qualifies if on every fold fit_ratio <= FIT_GOAL and
    retrieval_acc >= RETRIEVAL_GOAL (it reproduces its sources) and heldout_norm_ratio <= STRAY_LIMIT
    (its held-out adapters stay near the sources). The configured default is kept if it qualifies;
    otherwise the first qualifying variant; if none qualifies, the one with the lowest mean fit_ratio.
    Returns (chosen variant, reason)."""
    by: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["variant"] == ZOO or r["metric"] not in ("fit_ratio", "retrieval_acc", "heldout_norm_ratio"):
            continue
        by.setdefault(r["variant"], {}).setdefault(r["metric"], []).append(float(r["value"]))
    if not by:
        return default_variant, "no generator diagnostics"

    def qualifies(v: str) -> bool:
        m = by[v]
        return (max(m["fit_ratio"]) <= FIT_GOAL and min(m["retrieval_acc"]) >= RETRIEVAL_GOAL
                and max(m["heldout_norm_ratio"]) <= STRAY_LIMIT)

    order = [default_variant] + sorted(v for v in by if v != default_variant)
    for v in order:
        if v in by and qualifies(v):
            return v, "meets the fit, retrieval and stray limits on every fold"
    best = min(by, key=lambda v: sum(by[v]["fit_ratio"]) / len(by[v]["fit_ratio"]))
    return best, "no design meets every limit; lowest mean fit_ratio"


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{**r, "value": float(r["value"])} for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------- commands


def _add_fold(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help='JSON {"seed": int}')
    p.add_argument("--target", required=True)
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--generators", nargs="+", default=[],
                   help="generator checkpoints, one per --variants (none: the zoo's rows only)")
    p.add_argument("--variants", nargs="+", default=[], help="generated kind of each generator (dnd, dnd_<design>)")
    add_declared_option(p, "--tokens", "parameter tokens (results/tokens/{d}.pt)")
    add_declared_option(p, "--encoded", "encoded cond prompts (results/encoded/{d}/cond.pt); needed with --generators",
                        required=False)
    p.add_argument("--out", required=True)


def _run_fold(args: argparse.Namespace) -> None:
    if len(args.generators) != len(args.variants):
        raise ValueError("need one --variants name per --generators checkpoint")
    params = command_params(args.params, "seed")
    rows = diagnose_fold(args.target, args.sources, dict(zip(args.variants, args.generators)), args.tokens,
                         args.encoded, int(params["seed"]), args.device)
    write_csv(args.out, COLUMNS, [[r[c] for c in COLUMNS] for r in rows])


def _add_all(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", nargs="+", required=True, help="per-fold CSVs of diagnose-fold")
    p.add_argument("--metrics", default=None, help="results/metrics.json (function-space rows)")
    p.add_argument("--out", required=True)


def _run_all(args: argparse.Namespace) -> None:
    rows = [r for p in args.folds for r in read_rows(p)]
    if args.metrics:
        rows += function_space_rows(json.loads(Path(args.metrics).read_text()))
    chosen, reason = select_design(rows)
    log.info("selection rule: %s (%s)", chosen, reason)
    write_csv(args.out, COLUMNS, [[r[c] for c in COLUMNS] for r in rows])


COMMANDS = {
    "diagnose-fold": (_add_fold, _run_fold),
    "diagnostics": (_add_all, _run_all),
}
