"""Time generation at a profile's real scale without a run: build its generators (the default
design and each variant, untrained: random source tokens of the profile's LoRA layout, so the
shapes and the work are the run's), then generate one target's adapters as the workflow does,
in one process (`dnd generate-batch`, generate_target's plan: dnd_i, dnd_<variant>_i, the
controls), and optionally one adapter the old way (`dnd generate`, one process per adapter).

    PYTHONPATH=src python scripts/bench_generate.py --config config/config.yaml \
        --prompts results/data/arc_challenge/cond.jsonl --other results/data/arc_easy/cond.jsonl \
        --work /tmp/bench_generate --threads 2 [--single 3]

Prints the per-adapter timings (the timing JSONs), their medians, the process wall time, and the
encoder alone on one draw of N prompts, warm (median of 5). Wall times of the machine it runs on:
say what else shares the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def build_generators(config: Path, work: Path) -> dict[str, Path]:
    """The profile's generators (design -> checkpoint), untrained, at their real shapes."""
    from dnd.check_profile import check_lora_layout, meta_causal_lm, resolve_base_model
    from dnd.config import load_config, section
    from dnd.generators import build_generator
    from dnd.method.generator_checkpoint import save_generator

    cfg = load_config(config)
    base_cfg, _ = resolve_base_model(cfg)
    layout, tokens, _ = check_lora_layout(cfg, meta_causal_lm(base_cfg, torch.float32, cfg["lora"]))
    gen = section("generator", cfg["generator"])
    enc = section("encoder", cfg["encoder"])
    input_shape = (gen["n_prompts"], enc["max_length"] if enc["pooling"] != "mean" else 1, 384)
    g = torch.Generator().manual_seed(0)
    token_sets = [tokens.unsqueeze(0) + 0.01 * torch.randn(2, *tokens.shape, generator=g) for _ in range(6)]
    paths = {}
    for design in [gen["design"], *gen.get("variants", [])]:
        model = build_generator({**gen, "design": design}, input_shape, tuple(tokens.shape), token_sets)
        paths[design] = work / f"generator_{design}.pt"
        adapter_config = {"peft_type": "LORA", "r": cfg["lora"]["r"], "lora_alpha": cfg["lora"]["alpha"],
                          "target_modules": cfg["lora"]["target_modules"]}
        save_generator(paths[design], model, layout=layout.to_dict(), adapter_config=adapter_config, encoder=enc,
                       n_params=sum(p.numel() for p in model.parameters()))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    ap.add_argument("--prompts", required=True, help="the target's cond prompts (.jsonl)")
    ap.add_argument("--other", required=True, help="another dataset's cond prompts (control_other)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=0, help="also time this many adapters one process each")
    args = ap.parse_args()
    from dnd.config import load_config, section
    from dnd.generate import draw_prompts, read_prompts
    from dnd.method.encoder import make_encoder
    from dnd.schedule import adapter_seed

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    paths = build_generators(args.config, args.work)
    cfg = load_config(args.config)
    gen = section("generator", cfg["generator"])
    designs = list(paths)
    n_adapters, n_controls = cfg["generate"]["n_adapters"], cfg["generate"]["n_controls"]
    counts = [("dnd", n_adapters)] + [(f"dnd_{v}", n_adapters) for v in designs[1:]]
    counts += [(k, n_controls) for k in ("control_other", "control_random", "control_shuffled")]
    prompts = {"control_other": args.other, "control_random": f"random:{gen['n_prompts']}",
               "control_shuffled": f"shuffled:{args.prompts}"}
    plan = []
    for i in range(max(n_adapters, n_controls)):
        for kind, n in counts:
            if i >= n:
                continue
            design = kind[len("dnd_"):] if kind.startswith("dnd_") else designs[0]
            plan.append({"generator": str(paths[design]), "prompts": prompts.get(kind, args.prompts),
                         "n_prompts": gen["n_prompts"], "seed": adapter_seed(cfg["seed"], kind, i),
                         "out": str(args.work / "generated" / f"{kind}_{i}"),
                         "timing": str(args.work / "timings" / f"{kind}_{i}.json")})
    cmd = [sys.executable, "-m", "dnd.cli", "generate-batch", "--threads", str(args.threads), "--plan-json",
           json.dumps(plan)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t
    rows = {Path(e["out"]).name: json.loads(Path(e["timing"]).read_text()) for e in plan}
    for name, r in rows.items():
        reused = "  (encoding reused)" if r["encode_reused"] else ""
        print(f"{name:22s} load {r['load_s']:7.3f}  encode {r['encode_s']:.4f}  decode {r['decode_s']:.4f}  "
              f"write {r['write_s']:.4f}  total {r['total_s']:.4f}  params {r['generator_params']}{reused}")
    med = {"all": statistics.median(r["total_s"] for r in rows.values()),
           "adapters that encoded": statistics.median(r["total_s"] for r in rows.values() if not r["encode_reused"]),
           "dnd_i": statistics.median(r["total_s"] for n, r in rows.items() if n.startswith("dnd_") and n[4].isdigit())}
    print(f"generate-batch: {len(plan)} adapters, process wall {wall:.2f} s; median total_s "
          + ", ".join(f"{v:.4f} ({k})" for k, v in med.items())
          + f"; load {sum(r['load_s'] for r in rows.values()):.2f} s in all")
    for k in range(args.single):
        e = plan[k]
        single = [sys.executable, "-m", "dnd.cli", "generate", "--threads", str(args.threads), "--generator",
                  e["generator"], "--prompts", e["prompts"], "--n-prompts", str(e["n_prompts"]), "--seed",
                  str(e["seed"]), "--out", str(args.work / "single" / Path(e["out"]).name), "--timing",
                  str(args.work / "single" / f"{Path(e['out']).name}.json")]
        t = time.perf_counter()
        subprocess.run(single, check=True, capture_output=True)
        r = json.loads((args.work / "single" / f"{Path(e['out']).name}.json").read_text())
        same = ((args.work / "single" / Path(e["out"]).name / "adapter_model.safetensors").read_bytes()
                == (Path(e["out"]) / "adapter_model.safetensors").read_bytes())
        print(f"dnd generate {Path(e['out']).name}: process wall {time.perf_counter() - t:.2f} s, load "
              f"{r['load_s']:.2f}, total_s {r['total_s']:.4f}; same bytes as the batch: {same}")
    # the encoder alone, warm: one draw of N prompts, 5 times
    enc_cfg = section("encoder", cfg["encoder"])
    encoder = make_encoder(enc_cfg)
    texts = draw_prompts(read_prompts(args.prompts, 0, enc_cfg["form"]), gen["n_prompts"], 0)
    encoder.encode(texts)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        encoder.encode(texts)
        times.append(time.perf_counter() - t)
    print(f"encoder ({enc_cfg['dtype']}, max_length {enc_cfg['max_length']}, batch {enc_cfg['batch_size']}, "
          f"{torch.get_num_threads()} threads) on {len(texts)} prompts, warm: median {statistics.median(times):.4f} s "
          f"(min {min(times):.4f}, max {max(times):.4f})")


if __name__ == "__main__":
    main()
