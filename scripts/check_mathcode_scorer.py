"""The base model through the math and code experiments' own scorer (dnd.experiments.mathcode.score.GenerationScorer)
on a few test items per target: a check that the chat format, the answer extraction and the
program runs give sensible results on the real model, and a measure of the time per item.

    PYTHONPATH=src:tests python scripts/check_mathcode_scorer.py --model resources/models/base \
        --data ../shared/data --items 10 --work /tmp/mathcode_check --out check.json

Writes the tasks of the first `--items` test items under --work (nothing under results/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--domains", nargs="+", default=["math", "code"], choices=["math", "code"])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from conftest import save_random_lora  # tests/conftest.py: a LoRA with B = 0 (the base model's shapes)
    from dnd.config import section
    from dnd.experiments.mathcode import data as md
    from dnd.experiments.mathcode.score import GenerationScorer

    torch.set_num_threads(args.threads)
    save_random_lora(args.model, args.work / "zero", seed=0, b_std=0.0)
    out = {}
    for domain in args.domains:
        cfg = section(domain, {"n_test": args.items})
        md.write_domain(domain, cfg, args.data, md.output_paths(domain, cfg, args.work / domain))
        for target in md.TARGETS[domain]:
            scorer = GenerationScorer(domain, target, args.model, args.work / "zero", args.work / domain / "tasks",
                                      cfg, 32, "bfloat16")
            t0 = time.perf_counter()
            r = scorer.score(None, "base")
            out[target] = {"items": len(r["correct"]), "seconds": round(time.perf_counter() - t0, 1),
                           "acc": sum(r["correct"]) / len(r["correct"]),
                           "mean_gold_logprob": sum(r["gold_logprob"]) / len(r["gold_logprob"]),
                           "extra": r.get("extra", {}), "outputs": r["outputs"][:3]}
            print(target, json.dumps(out[target])[:1500], flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
