"""The project's lm-eval backend against lm-eval's plain `hf` backend: speed and agreement.

  dnd eval-speed --params JSON --target T --model DIR --tasks YAML [...] --zoo DIR [...] --out FILE
  dnd eval-speed-summary --in FILE... --speed CSV --agreement CSV

`eval-speed` scores, on the first `evaluation.compare_items` test items of target T, the base
model and two LoRAs (T's own, and the first training LoRA of T's fold) with

  hf          lm-eval's HFLM as `lm_eval.simple_evaluate(model="hf", model_args={"pretrained":
              base, "peft": adapter, "dtype": ..., "softmax_dtype": "float32"})` builds it:
              a fresh model per adapter (its load is timed apart, not counted as scoring);
  dnd-prefix  the evaluate stage's scorer (dnd.evaluate.InPlaceScorer over dnd.scoring.lm_backend):
              one model, each adapter merged into its weights (the merge is counted).

Both run lm-eval's own evaluation loop on the same task, items, batch size and dtype
(`evaluation.dtype`), one after the other in one process, without the score cache; their
scoring seconds are the speed comparison. In bfloat16 two correct implementations do not give
the same numbers (different kernels round differently; a summed log-likelihood of a 30-token
answer moves by tenths of a nat), so when `evaluation.dtype` is not float32 both backends also
score the first `evaluation.compare_float32_items` items in float32, where an exact backend must
match hf to rounding, and each bfloat16 result is compared with hf's float32 one (what the dtype
does to each backend). `--out` (JSON) holds the timings and the comparisons.

`eval-speed-summary` merges the targets into
  results/eval_speed.csv      backend,target,adapter,items,seconds
  results/eval_agreement.csv  target,adapter,comparison,items,same_choice,same_choice_norm,
                              max_abs_ll_diff,mean_abs_ll_diff
(comparison: "dnd-prefix vs hf, {dtype}", and with a bfloat16 dtype also "dnd-prefix vs hf,
float32", "hf {dtype} vs hf float32", "dnd-prefix {dtype} vs hf float32"; same_choice: share
of items whose highest-log-likelihood choice (acc) is the same in both; _norm: the same for the
per-character choice (acc_norm); ll differences in nats, over every choice of every item). Both carry
timings or CPU-dependent bfloat16 rounding, so they are committed with the run but are not DVC outputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from .config import parse_params, section
from .evaluate import quiet_lm_eval
from .formats.prompts import task_name
from .io import write_json, write_text
from .paths import add_declared_option, declared
from .scoring.cache import Scored

log = logging.getLogger(__name__)

SPEED_COLUMNS = ["backend", "target", "adapter", "items", "seconds"]
AGREEMENT_COLUMNS = ["target", "adapter", "comparison", "items", "same_choice", "same_choice_norm",
                     "max_abs_ll_diff", "mean_abs_ll_diff"]


def compared_adapters(target: str, sources: list[str]) -> list[str]:
    """'base', the target's own LoRA and the fold's first training LoRA."""
    if not sources:
        raise ValueError(f"fold {target!r} has no training datasets")
    return ["base", target, sources[0]]


def agreement(a, b) -> dict[str, Any]:
    """Compare two `Scored` results of the same items (a: reference)."""
    import numpy as np

    if a.ids != b.ids:
        raise ValueError("the two backends scored different items")
    same = same_norm = 0
    diffs: list[float] = []
    for la, lb, ch in zip(a.loglikelihoods, b.loglikelihoods, a.choice_chars, strict=True):
        la, lb, ch = np.asarray(la), np.asarray(lb), np.asarray(ch, dtype=np.float64)
        same += int(np.argmax(la) == np.argmax(lb))
        same_norm += int(np.argmax(la / ch) == np.argmax(lb / ch))
        diffs.extend(np.abs(la - lb).tolist())
    n = len(a.ids)
    return {"items": n, "same_choice": same / n, "same_choice_norm": same_norm / n,
            "max_abs_ll_diff": float(max(diffs)), "mean_abs_ll_diff": float(np.mean(diffs))}


def first_items(s, k: int):
    """The first `k` items of a `Scored` (lm-eval's `limit` takes the first docs too)."""

    return Scored(ids=s.ids[:k], correct=s.correct[:k], acc=sum(s.correct[:k]) / max(len(s.correct[:k]), 1),
                  seconds=0.0, loglikelihoods=s.loglikelihoods[:k], gold=s.gold[:k], choice_chars=s.choice_chars[:k])


def compare_target(target: str, params: dict[str, Any], model_dir: Path, tasks: Sequence[Path],
                   zoo: Sequence[Path], device: Any = "cpu") -> dict[str, Any]:
    """Score the compared adapters with both backends on `device` (see the module doc); `tasks`,
    `zoo`: the declared task files and final LoRA folders (dnd.paths.declared finds each one's)."""
    from lm_eval.api.registry import get_model

    from .evaluate import (
        SOFTMAX_DTYPE,
        InPlaceScorer,
        load_state_dict,
        load_task,
        require_adapter_dir,
        run_lm_eval,
        task_files,
    )

    ev = section("evaluation", params.get("evaluation"))
    items = int(ev["compare_items"])
    if items < 1:
        raise ValueError("evaluation.compare_items is 0: there is nothing to compare")
    dtype = ev["dtype"]
    ref_items = min(int(ev["compare_float32_items"]), items) if dtype != "float32" else 0
    sources = list(params.get("sources") or [])
    task = task_name(target)
    adapters = compared_adapters(target, sources)
    tasks_dir, _ = task_files(tasks, [task])
    dirs = {a: require_adapter_dir(declared(zoo, Path(a) / "final", f"final LoRA of {a}", "--zoo"),
                                   f"final LoRA of {a}") for a in adapters if a != "base"}
    bs = int(ev["batch_size"])

    def scorer(dt: str) -> InPlaceScorer:
        return InPlaceScorer(model_dir, dirs[sources[0]], tasks_dir, task, limit=items, metric=ev["metric"],
                             backend="dnd-prefix", batch_size=bs, dtype=dt, device=device)

    def plain_hf(adapter: str, dt: str, n: int):
        model_args = {"pretrained": str(model_dir), "softmax_dtype": SOFTMAX_DTYPE, "batch_size": bs, "dtype": dt}
        if adapter != "base":
            model_args["peft"] = str(dirs[adapter])
        t0 = time.perf_counter()
        hf = get_model("hf").create_from_arg_obj(model_args, {"device": str(device)})
        load = time.perf_counter() - t0
        return run_lm_eval(hf, task_dict, task, n, ev["metric"], f"hf {dt} {adapter}"), load

    def packed(sc: InPlaceScorer, adapter: str, n: int):
        sc.limit = n
        t0 = time.perf_counter()
        got = sc.score(None if adapter == "base" else load_state_dict(dirs[adapter]), where=f"dnd-prefix {adapter}")
        return got, time.perf_counter() - t0  # the adapter merge is counted

    ours = scorer(dtype)
    ours32 = scorer("float32") if ref_items else None
    task_dict = load_task(tasks_dir, task)
    out: dict[str, Any] = {"target": target, "timings": [], "agreement": []}

    def agree(adapter: str, comparison: str, ref, got) -> dict[str, Any]:
        row = {"target": target, "adapter": adapter, "comparison": comparison, **agreement(ref, got)}
        out["agreement"].append(row)
        return row

    for adapter in adapters:
        ref, load = plain_hf(adapter, dtype, items)
        got, swap_and_score = packed(ours, adapter, items)
        for backend, seconds in (("hf", ref.seconds), ("dnd-prefix", swap_and_score)):
            out["timings"].append({"backend": backend, "target": target, "adapter": adapter, "items": ref.n,
                                   "seconds": round(seconds, 3)})
        main = agree(adapter, f"dnd-prefix vs hf, {dtype}", ref, got)
        log.info("%s %-14s hf %.1f s (+%.1f s load), dnd-prefix %.1f s: %.2fx; same choice %.4f, max |dll| %.4f",
                 target, adapter, ref.seconds, load, swap_and_score, ref.seconds / max(swap_and_score, 1e-9),
                 main["same_choice"], main["max_abs_ll_diff"])
        if ref_items:  # the float32 reference: is the backend exact, and what does the dtype change?
            ref32, _ = plain_hf(adapter, "float32", ref_items)
            got32, _ = packed(ours32, adapter, ref_items)
            exact = agree(adapter, "dnd-prefix vs hf, float32", ref32, got32)
            h = agree(adapter, f"hf {dtype} vs hf float32", ref32, first_items(ref, ref_items))
            o = agree(adapter, f"dnd-prefix {dtype} vs hf float32", ref32, first_items(got, ref_items))
            log.info("%s %-14s float32: same choice %.4f (max |dll| %.2g); vs the float32 reference: hf %s %.4f, "
                     "dnd-prefix %s %.4f", target, adapter, exact["same_choice"], exact["max_abs_ll_diff"], dtype,
                     h["same_choice"], dtype, o["same_choice"])
    return out


def summary_frames(results: list[dict[str, Any]]):
    """(speed, agreement) DataFrames of the per-target results, in the CSV columns."""
    import pandas as pd

    speed = pd.DataFrame([r for res in results for r in res["timings"]], columns=SPEED_COLUMNS)
    agree = pd.DataFrame([r for res in results for r in res["agreement"]], columns=AGREEMENT_COLUMNS)
    return speed, agree


def speed_figures(speed) -> dict[str, float]:
    """Pooled items/s of each backend and their ratio (dnd-prefix over hf)."""
    fig = {}
    for backend in ("hf", "dnd-prefix"):
        sel = speed[speed["backend"] == backend]
        fig[backend] = float(sel["items"].sum() / sel["seconds"].sum()) if len(sel) else float("nan")
    fig["ratio"] = fig["dnd-prefix"] / fig["hf"] if fig["hf"] > 0 else float("nan")
    return fig


# ============================================================================ commands
def _add_eval_speed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: {evaluation: {...}, sources: [...]}")
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    add_declared_option(p, "--tasks", "lm-eval task files (.../dnd_{ds}.yaml)")
    add_declared_option(p, "--zoo", "final LoRA folders (.../{ds}/final): the target's and its first source's")
    p.add_argument("--out", required=True, type=Path, help="results/eval_speed/{target}.json")


def _run_eval_speed(args: argparse.Namespace) -> None:
    quiet_lm_eval()
    res = compare_target(args.target, parse_params(args.params), args.model, args.tasks, args.zoo, args.device)
    write_json(args.out, res)


def _add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in", dest="inputs", required=True, nargs="+", type=Path, help="results/eval_speed/*.json")
    p.add_argument("--speed", required=True, type=Path, help="results/eval_speed.csv")
    p.add_argument("--agreement", required=True, type=Path, help="results/eval_agreement.csv")


def _run_summary(args: argparse.Namespace) -> None:
    results = []
    for p in args.inputs:
        if not p.exists():
            raise FileNotFoundError(f"backend comparison not found: {p}")
        results.append(json.loads(p.read_text()))
    speed, agree = summary_frames(results)
    write_text(args.speed, speed.to_csv(index=False))
    write_text(args.agreement, agree.to_csv(index=False))
    fig = speed_figures(speed)
    log.info("hf %.2f items/s, dnd-prefix %.2f items/s (%.2fx)", fig["hf"], fig["dnd-prefix"], fig["ratio"])
    for comparison, g in agree.groupby("comparison", sort=False):
        log.info("%s: same choice on %.4f of %d items (min %.4f), largest |dll| %.3g", comparison,
                 float((g["same_choice"] * g["items"]).sum() / max(g["items"].sum(), 1)), int(g["items"].sum()),
                 float(g["same_choice"].min()), float(g["max_abs_ll_diff"].max()))


COMMANDS = {"eval-speed": (_add_eval_speed, _run_eval_speed),
            "eval-speed-summary": (_add_summary, _run_summary)}
