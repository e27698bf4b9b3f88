"""Size the `math` and `code` experiments: measure, on the real base model, (1) the greedy
generation speed of the `dnd-generate` backend (dnd.scoring.lm_generate) on GSM8K, MATH and HumanEval
prompts in the experiments' chat format, and (2) the time of one LoRA training step on their
training examples (prompt -> response, ChatML, loss on the response).

    PYTHONPATH=src python scripts/calibrate_mathcode.py --model /path/to/base --data ../shared/data \
        --items 16 --max-new-tokens 256 --out results/calibration_mathcode.json

Every figure is a wall time on the machine it runs on (note what else shares the cores).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path


def _load(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dnd.experiments.mathcode import data as mathcode_data
    from dnd.scoring import lm_generate
    from dnd.zoo import answer_loss, collate, encode_examples

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    model.eval()
    lm = lm_generate.SharedPrefillLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size,
                                     softmax_dtype="float32")
    mc = args.data / "math_code"
    sets = {"gsm8k": _load(mc / "GSM8K.json.gz"), "math": _load(mc / "MATH.json.gz"),
            "humaneval": _load(mc / "Human_Eval.json.gz")}
    out: dict = {"items": args.items, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                 "threads": args.threads, "generation": {}, "train_step": {}}
    for name, recs in sets.items():
        domain = "code" if name == "humaneval" else "math"
        ctxs = [mathcode_data.eval_context({"prompt": r["prompt"]}, domain) for r in recs[: args.items]]
        until = mathcode_data.STOP[domain]
        reqs = [Instance(request_type="generate_until", doc={}, arguments=(c, {"until": until, "do_sample": False,
                                                                             "max_gen_toks": args.max_new_tokens}),
                         idx=0) for c in ctxs]
        t0 = time.perf_counter()
        texts = lm.generate_until(reqs, disable_tqdm=True)
        dt = time.perf_counter() - t0
        ntok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        out["generation"][name] = {"seconds": round(dt, 2), "s_per_item": round(dt / len(ctxs), 3),
                                   "new_tokens": ntok, "tokens_per_s": round(ntok / dt, 1),
                                   "hit_max": sum(len(tok(t, add_special_tokens=False)["input_ids"])
                                                  >= args.max_new_tokens - 1 for t in texts)}
        print(name, out["generation"][name], flush=True)

    # one LoRA step (batch 8) on each training pool's examples
    from peft import LoraConfig, get_peft_model

    train_model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    pm = get_peft_model(train_model, LoraConfig(r=8, lora_alpha=16, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
    pools = {"math_iio": _load(mc / "Math-IIO-68K-Mini.json.gz"), "mu_math": _load(mc / "Mu-Math.json.gz"),
             "math_shard": sets["math"], "codealpaca": _load(mc / "CodeAlpaca-20K.json.gz")}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for name, recs in pools.items():
        domain = "code" if name == "codealpaca" else "math"
        items = [{"prompt": r["prompt"], "response": r["response"], "domain": domain} for r in recs[:64]]
        ex = encode_examples(items, tok, mathcode_data.FORMAT, args.max_length)
        lens = sorted(len(ids) for ids, _ in ex)
        times = []
        for s in range(args.train_steps):
            batch = collate(ex[s * 8:(s + 1) * 8], pad)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = answer_loss(pm, *batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        out["train_step"][name] = {"s_per_step": round(sorted(times)[len(times) // 2], 3),
                                   "median_tokens": lens[len(lens) // 2], "max_tokens": lens[-1],
                                   "cut": sum(n >= args.max_length for n in lens)}
        print(name, out["train_step"][name], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
