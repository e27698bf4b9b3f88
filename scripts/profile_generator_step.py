"""Where a generator training step goes: forward per layer, backward, optimizer, loss, for the
paper's conv head and the position-wise local head (default config shapes, batch 4, random data).

  python scripts/profile_generator_step.py [--threads 2] [--repeats 5]

Prints the median seconds of each part over `--repeats` steps (after one warm-up step).
A benchmark, not a test: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dnd.generators import weighted_mse  # noqa: E402
from dnd.method.generator_model import HyperConvDecoder, count_parameters  # noqa: E402

STAGES = [[32, 8, 16], [64, 10, 64], [16, 10, 128]]
INPUT, OUTPUT = (128, 32, 384), (1590, 10, 194)


def profile(head: str, fused: bool, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = HyperConvDecoder(INPUT, STAGES, OUTPUT, 3, output_offset=True, head=head)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=fused)
    x, y, w = torch.randn(batch, *INPUT), torch.randn(batch, *OUTPUT), torch.ones(OUTPUT[0])
    parts: dict[str, list[float]] = {}
    for step in range(repeats + 1):
        times, h = {}, x
        for i, layer in enumerate(model.layers):
            t = time.perf_counter()
            h = layer(h)
            times[f"fwd layer {i}"] = time.perf_counter() - t
        t = time.perf_counter()
        loss = weighted_mse(h + model.output_offset, y, w)
        times["loss"] = time.perf_counter() - t
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        times["backward"] = time.perf_counter() - t
        t = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times["clip + AdamW"] = time.perf_counter() - t
        if step:  # the first step is a warm-up
            for k, v in times.items():
                parts.setdefault(k, []).append(v)
    out = {k: statistics.median(v) for k, v in parts.items()}
    out["total"] = sum(out.values())
    out["parameters (M)"] = count_parameters(model) / 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runs = {f"{head}, AdamW {'fused' if fused else 'default'}": profile(head, fused, args.batch, args.repeats)
            for head, fused in (("conv", False), ("local", False), ("local", True))}
    keys = list(next(iter(runs.values())))
    print("| part | " + " | ".join(runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{r[k]:.3f}" for r in runs.values()) + " |")


if __name__ == "__main__":
    main()
