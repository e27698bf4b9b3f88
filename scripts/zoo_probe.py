"""Would another zoo help the generator? Train one dataset's LoRA again with a changed zoo
setting and measure, in ΔW = B·A space, what the change does to the quantities that bound
prompt-to-weights generation (dnd.diagnostics): reachability from the other six datasets' LoRAs
and the spread of the checkpoints.

  python scripts/zoo_probe.py [--run-dir .] [--dataset arc_easy] [--variants seed1 flat]
                              [--work-dir /tmp/zoo_probe] [--out results/zoo_probe.json]

Variants (everything else as in the run's config/config.yaml):
  seed1  the same data with LoRA seed 1 instead of the run's seed (distinct per-dataset seeds)
  flat   lora.min_lr_ratio 1.0: the learning rate does not decay, so phase-2 checkpoints still move

Needs a finished default run in --run-dir (results/zoo, results/data, resources/models/base).
Each variant trains one LoRA (~5 min on 2 idle cores) into --work-dir; a rerun reuses it. An
experiment, not a pipeline stage: its numbers are quoted in docs/results.md and issue notes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

VARIANTS = {"seed1": ({}, 1), "flat": ({"min_lr_ratio": 1.0}, None)}


def checkpoint_spread(checkpoints: Path) -> float:
    """Mean ΔW distance of the checkpoints from their mean."""
    from dnd.diagnostics import adapter_factors, gram, spread

    return spread(gram([adapter_factors(f) for f in sorted(checkpoints.glob("*.safetensors"))]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=Path("."))
    p.add_argument("--dataset", default="arc_easy")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/zoo_probe"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    import torch

    from dnd.config import load_config
    from dnd.diagnostics import adapter_factors as lora_factors, distance, gram, reachability
    from dnd.zoo import train_lora

    run = args.run_dir.resolve()
    cfg = load_config(run / "config" / "config.yaml")
    datasets = list(cfg["data"]["datasets"])
    t = datasets.index(args.dataset)
    sources = [i for i in range(len(datasets)) if i != t]
    zoo = [lora_factors(run / "results/zoo" / d / "final/adapter_model.safetensors") for d in datasets]
    g0 = gram(zoo)
    n = len(datasets)
    between = sum(distance(g0, i, j) for i in range(n) for j in range(i + 1, n)) / (n * (n - 1) / 2)
    out = {"dataset": args.dataset, "mean_distance_between_datasets": between,
           "run": {"reachability": reachability(g0, sources, t),
                   "checkpoint_spread":
                       checkpoint_spread(run / "results/zoo" / args.dataset / "checkpoints") / between},
           "cosine_between_datasets_mean": float(sum(g0[i, j] / math.sqrt(g0[i, i] * g0[j, j])
                                                      for i in range(n) for j in range(i + 1, n)) / (n * (n - 1) / 2))}
    for name in args.variants:
        over, seed = VARIANTS[name]
        work = args.work_dir / name
        if not (work / "final").exists():
            lcfg = {**cfg["lora"], **over}
            torch.set_num_threads(2)
            train_lora(run / "resources/models/base", run / "results/data" / args.dataset / "train.jsonl", work, lcfg,
                       cfg["prompt"]["format"], cfg["seed"] if seed is None else seed)
        g = gram(zoo + [lora_factors(work / "final/adapter_model.safetensors")])
        out[name] = {
            "settings": {**over, "seed": cfg["seed"] if seed is None else seed},
            # ΔW of the variant against the run's LoRA of the same dataset, in units of the
            # mean distance between the run's datasets
            "distance_to_run_lora": distance(g, t, n) / between,
            "cosine_to_run_lora": float(g[t, n] / math.sqrt(g[t, t] * g[n, n])),
            "reachability": reachability(g, sources, n),
            "checkpoint_spread": checkpoint_spread(work / "checkpoints") / between,
        }
        print(name, json.dumps(out[name]), flush=True)
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
