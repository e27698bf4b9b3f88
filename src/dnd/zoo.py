"""Source LoRA zoo: peft LoRA fine-tuning with a dense checkpoint trajectory (paper §2.1).

Phase 1 trains `phase1_steps` steps towards convergence; phase 2 continues for K =
`checkpoint_steps` steps and saves the adapter after every one of them. The last checkpoint
is "the dataset's LoRA" (a standard PEFT directory).

Training text comes from dnd.formats.prompts.training_example (the same text lm-eval scores); the
loss covers the answer tokens only, and the LM head is applied only at those positions.

Computation of a step: the step's examples (the same batch, in the same epoch order) are packed
into rows without padding (`pack`: first-fit, longest first, rows no longer than the longest
example; a block-diagonal causal mask and positions restarting at 0 per example, so each example
is computed as if alone), with eager attention (`TRAIN_ATTENTION`). The loss is the same mean
cross-entropy over all answer tokens of the batch; it equals the padded batch's (`collate`) up to
floating-point rounding, not bit for bit. Padding was a third of the default zoo's tokens, and
SDPA's flash backward cost more than the attention it computed on 2 CPU threads.

Resumability: work in progress lives in `<out>/.work/` (resume state every few steps plus
the phase-2 checkpoints written so far). The declared outputs (`checkpoints/`, `final/`,
`train_log.csv`, `summary.json`) appear only when the run completes, by rename, so Snakemake
never sees a half-written trajectory and a killed run continues where it stopped. The resume
state holds only tensors and plain data (read back with weights_only=True) and a fingerprint
of everything the trajectory depends on (`resume_fingerprint`); a state written for another
configuration is an error, never silently mixed in.

Non-finite values: a NaN/inf loss or gradient stops the run at that step, before the
optimizer step, so nothing of that step is written and the last resume point stays valid
(`check_finite`, shared with the generator trainer).

The published files hold no timings, so one configuration gives byte-identical outputs on
any machine; `--timings PATH` writes them to a separate JSON (`write_timings`).

Multi-task LoRA (`--train a.jsonl b.jsonl ...`, the function_space experiment's baseline): one
LoRA on the union of several datasets' train splits, with the same settings and the same total
steps (phase1_steps + checkpoint_steps) as one source LoRA. The items are the concatenation of the
files in the order given, visited in the zoo's seeded epoch order (`EpochOrder`, a fresh
random.Random(f"{seed}-epoch{e}") permutation of the whole concatenation per epoch), so batches
mix the datasets deterministically; train_log.csv gets a `sources` column (items per dataset in
each batch, the dataset named by its file's folder) and summary.json the items seen per dataset.
One file gives exactly the single-dataset run (same fingerprint, same bytes).

Shared-A zoo (`lora.shared_a: true`): every LoRA's A is drawn from the run's seed alone
(`shared_lora_a`: peft's own initialisation, kaiming-uniform, from a generator seeded by
derive_seed(seed, "shared_a", module name)), identical across datasets, and frozen; only B
trains. Left out or false, nothing changes (the key is not part of the fingerprint then).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from .base_model import sha256_file
from .config import command_params
from .device import recorded
from .formats import chat, paper as paper_format, prompts
from .io import (
    atomic_path,
    check_safetensors,
    load_safetensors,
    load_torch,
    read_jsonl,
    save_safetensors,
    save_torch,
    write_csv,
    write_json,
)
from .schedule import EpochOrder, derive_seed, warmup_cosine

log = logging.getLogger(__name__)

LOG_FIELDS = ["phase", "step", "loss", "lr", "tokens"]
#: train_log.csv of a multi-task LoRA: also the items of each dataset in the step's batch
MULTITASK_LOG_FIELDS = [*LOG_FIELDS, "sources"]


def encode_examples(items: list[dict], tok, fmt: str, max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, index of the first answer token) per item, tokenized the way lm-eval does:
    whole = enc(context + continuation), answer = whole[len(enc(context)):]. Long prompts are
    cut from the left so the answer survives. Format `paper`: the paper's bracketed answers in
    the model's chat template (dnd.formats.paper, the protocol experiment's zoo). Format `chat`:
    a prompt -> response generation item in ChatML (dnd.experiments.mathcode.data, the math and code
    experiments' zoos); a long example keeps its prompt and the start of its response (cut from
    the right) while the prompt leaves at least a quarter of `max_length` to the response,
    otherwise it is cut from the left like the others."""

    out = []
    for it in items:
        if fmt == paper_format.FORMAT:
            ctx, cont = paper_format.training_example(it, "chatml")
        elif fmt == chat.FORMAT:
            ctx, cont = chat.training_example(it)
        else:
            ctx, cont = prompts.training_example(it, fmt)
        ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
        whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        start = len(ctx_ids)
        if start >= len(whole):  # tokenizer merged across the boundary; fall back to separate encoding
            whole = ctx_ids + tok(cont, add_special_tokens=False)["input_ids"]
        if fmt == chat.FORMAT and len(whole) > max_length and start <= max_length - max_length // 4:
            out.append((whole[:max_length], start))
            continue
        cut = max(0, len(whole) - max_length)
        out.append((whole[cut:], max(1, start - cut)))
    return out


def collate(examples: list[tuple[list[int], int]], pad_id: int):
    import torch

    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    target = torch.full((len(examples), T), -100, dtype=torch.long)
    for i, (seq, start) in enumerate(examples):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        # position t predicts token t+1: answer tokens seq[start:] are predicted at start-1..len-2
        target[i, start - 1 : len(seq) - 1] = torch.tensor(seq[start:])
    return ids, mask, target


# How train_lora computes a step: the batch layout (`pack`) and the attention implementation. On
# 2 CPU threads with bf16 autocast, eager attention (two matmuls and a float32 softmax) is faster
# than SDPA's flash kernel, whose backward dominates short sequences. Part of the resume
# fingerprint: a resume state written by another computation is not continued (its trajectory
# differs in the last bits).
TRAIN_ATTENTION = "eager"
BATCH_LAYOUT = f"packed-ffd-longest/{TRAIN_ATTENTION}-v1"


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the indices of `lengths` in rows of at most `capacity` tokens
    (longest first, ties in index order; deterministic). An item longer than `capacity`
    gets a row of its own."""
    rows: list[list[int]] = []
    fill: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r in range(len(rows)):
            if fill[r] + lengths[i] <= capacity:
                rows[r].append(i)
                fill[r] += lengths[i]
                break
        else:
            rows.append([i])
            fill.append(lengths[i])
    return rows


def pack(examples: list[tuple[list[int], int]], pad_id: int, capacity: int | None = None):
    """The batch `collate` pads, with (almost) no padding: the examples go first-fit, longest
    first, into rows of at most `capacity` tokens (default: the longest example, so no row is
    longer than the padded batch and attention costs no more than there). Returns (ids, mask,
    position_ids, target): `mask` is a boolean (rows, 1, L, L) block-diagonal causal mask (a
    token sees only the earlier tokens of its own example) and every example's positions
    restart at 0, so each example is computed as if alone, exactly as in the padded batch up to
    floating-point rounding. The short tail of a row is padding that attends only to itself
    (no fully masked query row) and has no target."""
    import torch

    lengths = [len(ids) for ids, _ in examples]
    rows = pack_rows(lengths, capacity or max(lengths))
    L = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), L), dtype=torch.long)
    segment = torch.zeros((len(rows), L), dtype=torch.long)
    target = torch.full((len(rows), L), -100, dtype=torch.long)
    for r, row in enumerate(rows):
        o = 0
        for k, i in enumerate(row):
            seq, start = examples[i]
            n = len(seq)
            ids[r, o : o + n] = torch.tensor(seq)
            position_ids[r, o : o + n] = torch.arange(n)
            segment[r, o : o + n] = k
            target[r, o + start - 1 : o + n - 1] = torch.tensor(seq[start:])
            o += n
        position_ids[r, o:] = torch.arange(L - o)
        segment[r, o:] = len(row)
    causal = torch.ones((L, L), dtype=torch.bool).tril()
    mask = (segment[:, :, None] == segment[:, None, :]) & causal
    return ids, mask[:, None], position_ids, target


def answer_loss(peft_model, ids, mask, target, position_ids=None):
    """Mean cross-entropy over answer tokens; the LM head runs only where the loss needs it.
    `mask`: the 2D padding mask of `collate`, or the 4D mask of `pack` with its `position_ids`."""
    import torch
    import torch.nn.functional as F

    causal_lm = peft_model.get_base_model()
    if mask.dim() == 4 and mask.dtype == torch.bool and causal_lm.config._attn_implementation == "eager":
        # eager attention adds its mask to the scores: 0 where a token may look, the float minimum elsewhere
        mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
            ~mask, torch.finfo(torch.float32).min)
    hidden = causal_lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    sel = target != -100
    logits = causal_lm.lm_head(hidden[sel])
    return F.cross_entropy(logits.float(), target[sel])


def longer_schedule(lcfg: dict, factor: int) -> dict:
    """The zoo's LoRA settings trained `factor` times as many steps (the `zoo_probe` experiment;
    the one place that derives its schedule): total steps factor * (phase1_steps +
    checkpoint_steps), of which the last checkpoint_steps (K, unchanged) are the checkpoint
    trajectory, so phase1_steps = total - K. Warmup and the cosine decay scale with the run
    (warmup_ratio, min_lr_ratio are shares of it); every other setting (lr, batch, r, data
    order, seed) is the zoo's. Factor 1 is the zoo's schedule itself."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"steps factor must be an integer >= 1, got {factor!r}")
    total = factor * (int(lcfg["phase1_steps"]) + int(lcfg["checkpoint_steps"]))
    return {**lcfg, "phase1_steps": total - int(lcfg["checkpoint_steps"])}


def make_lora_config(lcfg: dict, base_dir: str):
    from peft import LoraConfig

    return LoraConfig(r=lcfg["r"], lora_alpha=lcfg["alpha"], lora_dropout=lcfg["dropout"], bias="none",
                      task_type="CAUSAL_LM", target_modules=list(lcfg["target_modules"]),
                      base_model_name_or_path=str(base_dir))


class ResumeMismatchError(ValueError):
    """A resume state written for another configuration, training data or base model."""


class NonFiniteError(ValueError):
    """The loss or a gradient became NaN/inf; training stopped before that step wrote anything."""


def check_finite(step: int, loss: float, grad_norm: float, resume_step: int, resume_file: Path) -> None:
    """Raise NonFiniteError if the loss or the total gradient norm of (1-based) step `step` is
    NaN/inf. Call it before the optimizer step; `resume_step` is the step of the resume point
    on disk (0: none)."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    what = f"loss ({loss})" if not math.isfinite(loss) else f"gradient norm ({grad_norm})"
    kept = (f"the last good resume point, step {resume_step}, is kept in {resume_file}" if resume_step
            else "the last good resume point is step 0 (none written yet)")
    raise NonFiniteError(f"non-finite {what} at step {step}: training stopped before its optimizer step; "
                         f"nothing of step {step} was written and no output was published; {kept}")


def write_timings(path: str | Path | None, started: float, loop_s: float, steps: int, resumed_from: int) -> None:
    """The `--timings` JSON of a training command (nothing if `path` is None): wall_s (the whole
    call, since the time.perf_counter() value `started`), loop_s (the training loop, including
    the time before a resume), steps (total), resumed_from (step, 0 for a fresh run)."""
    if path is not None:
        write_json(path, {"wall_s": round(time.perf_counter() - started, 3), "loop_s": round(loop_s, 3),
                          "steps": steps, "resumed_from": resumed_from})


def resume_fingerprint(lcfg: dict, fmt: str, seed: int, train_file: Path | Sequence[Path], model_dir: Path,
                       device: Any = "cpu") -> str:
    """sha256 of everything a LoRA trajectory depends on: the lora params (`shared_a` only when
    true, so a config without it keeps its fingerprint), prompt format, seed, the training data's
    content (one file's sha256; a list of them, in order, for a multi-task LoRA), the base model's
    identity (its config.json and the names and sizes of its weight files; hashing the weights
    themselves would cost seconds), the batch layout (`BATCH_LAYOUT`) and the device where it is
    not the CPU (dnd.device.recorded): a run is never resumed on another device than the one it
    started on."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if "shared_a" in lcfg and not lcfg["shared_a"]:
        lcfg = {k: v for k, v in lcfg.items() if k != "shared_a"}
    files = train_files(train_file)
    train_sha = sha256_file(files[0]) if len(files) == 1 else [sha256_file(f) for f in files]
    parts = {"lora": lcfg, "format": fmt, "seed": seed, "train_sha256": train_sha,
             "model_config_sha256": sha256_file(config) if config.is_file() else str(model_dir),
             "model_weights": sorted((p.name, p.stat().st_size) for p in model_dir.glob("*.safetensors")),
             "batch_layout": BATCH_LAYOUT, **recorded(device)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _save_resume(state_file: Path, fingerprint: str, pm, opt, step: int, rows: list[dict], elapsed: float) -> None:
    """Resume state of `step`: weights_only-loadable types only (tensors, numbers, strings, lists,
    dicts), including the torch RNG states (LoRA dropout draws from them)."""
    import torch
    from peft import get_peft_model_state_dict

    rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    state = {"fingerprint": fingerprint, "lora": get_peft_model_state_dict(pm), "optim": opt.state_dict(),
             "rng": rng, "step": step, "rows": rows, "elapsed_s": elapsed}
    save_torch(state_file, state)


def _load_resume(state_file: Path, fingerprint: str, pm, opt) -> tuple[int, list[dict], float]:
    """Restore model, optimizer and RNG from the resume state: (step, log rows, loop seconds so
    far), or (0, [], 0.0) without one. A corrupt file is an ArtifactError, a state written for
    another configuration a ResumeMismatchError; both name the file."""
    import torch
    from peft import set_peft_model_state_dict

    if not state_file.exists():
        return 0, [], 0.0
    st = load_torch(state_file, "LoRA resume state")
    if not isinstance(st, dict) or st.get("fingerprint") != fingerprint:
        raise ResumeMismatchError(
            f"{state_file} was written for a different configuration (lora/prompt/seed params, training data "
            f"or base model): delete {state_file.parent}/ to start over, or restore the configuration it was "
            "written with")
    set_peft_model_state_dict(pm, st["lora"])
    opt.load_state_dict(st["optim"])
    torch.set_rng_state(st["rng"]["cpu"])
    if st["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["rng"]["cuda"])
    return st["step"], st["rows"], st["elapsed_s"]


def canonicalize_adapter_config(path: Path) -> None:
    """Rewrite peft's adapter_config.json with sorted keys and a sorted `target_modules`: peft
    keeps the modules as a set, so its JSON order follows Python's per-process string hashing
    and the same adapter would otherwise differ byte-wise from run to run."""
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _publish(pm, out_dir: Path, work: Path, summary: dict, rows: list[dict],
             fields: Sequence[str] = LOG_FIELDS) -> None:
    """Move a finished run into place: final/ (the last checkpoint as a standard PEFT
    directory), summary.json, train_log.csv and checkpoints/; then drop .work/."""
    from peft import set_peft_model_state_dict

    ckpts = sorted((work / "checkpoints").glob("step-*.safetensors"))
    if len(ckpts) != summary["checkpoints"]:
        raise RuntimeError(f"expected {summary['checkpoints']} checkpoints in {work / 'checkpoints'}, "
                           f"found {len(ckpts)}")
    set_peft_model_state_dict(pm, load_safetensors(ckpts[-1], "LoRA checkpoint"))
    with atomic_path(out_dir / "final", is_dir=True) as tmp:
        pm.save_pretrained(tmp)
        canonicalize_adapter_config(tmp / "adapter_config.json")
    write_json(work / "summary.json", summary)
    write_csv(out_dir / "train_log.csv", list(fields), rows)
    if (out_dir / "checkpoints").exists():
        shutil.rmtree(out_dir / "checkpoints")
    os.replace(work / "checkpoints", out_dir / "checkpoints")
    os.replace(work / "summary.json", out_dir / "summary.json")
    shutil.rmtree(work)


def train_files(train_file: str | Path | Sequence[str | Path]) -> list[Path]:
    """The training files of a LoRA as a list: one path, or several (a multi-task LoRA), each
    named by its folder (results/data/<ds>/train.jsonl), the names distinct."""
    files = [Path(train_file)] if isinstance(train_file, (str, Path)) else [Path(f) for f in train_file]
    if not files:
        raise ValueError("no training file given")
    names = [f.parent.name for f in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if len(files) > 1 and dup:
        raise ValueError(f"multi-task training files must come from distinct dataset folders; repeated: {dup}")
    return files


def read_train_items(files: Sequence[Path]) -> tuple[list[dict], list[str]]:
    """(items, dataset of each item): the files' items concatenated in order; an empty file is
    an error naming it."""
    items: list[dict] = []
    origin: list[str] = []
    for f in files:
        got = read_jsonl(f)
        if not got:
            raise ValueError(f"no training items in {f}")
        items += got
        origin += [f.parent.name] * len(got)
    return items, origin


def batch_sources(origin: Sequence[str], chosen: Sequence[int]) -> str:
    """The `sources` cell of a multi-task log row: `ds:count` for each dataset in the batch, in
    order of first appearance, space-separated."""
    counts: dict[str, int] = {}
    for i in chosen:
        counts[origin[i]] = counts.get(origin[i], 0) + 1
    return " ".join(f"{d}:{n}" for d, n in counts.items())


def shared_lora_a(pm, seed: int) -> int:
    """Shared-A: set every LoRA A of `pm` to peft's initialisation (kaiming-uniform, a = sqrt(5))
    drawn from a generator seeded by derive_seed(seed, "shared_a", module name), so it depends on
    the seed and the module alone (the same A for every dataset), and freeze it. Returns the
    number of A matrices set."""
    import torch

    n = 0
    for name, module in pm.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, torch.nn.ModuleDict):
            continue
        for adapter, layer in lora_a.items():
            g = torch.Generator().manual_seed(derive_seed(seed, "shared_a", name, adapter))
            with torch.no_grad():
                w = torch.empty(layer.weight.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
                layer.weight.copy_(w)
            layer.weight.requires_grad_(False)
            n += 1
    if not n:
        raise ValueError("shared_a: the model has no LoRA A matrices")
    return n


def train_lora(model_dir: Path, train_file: Path | Sequence[Path], out_dir: Path, lcfg: dict, fmt: str, seed: int,
               resume_every: int = 10, timings: str | Path | None = None, device: Any = "cpu") -> dict:
    """Train one source LoRA (one `train_file`), or a multi-task LoRA (a list of them, see the
    module docstring), on `device` (dnd.device: never chosen here; the CPU unless asked); see the
    module docstring for the layout of `out_dir`. `timings`: optional path of the timings JSON
    (see `write_timings`)."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)

    files = train_files(train_file)
    multitask = len(files) > 1
    items, origin = read_train_items(files)
    check_safetensors(model_dir, "base model weights")
    tok = AutoTokenizer.from_pretrained(model_dir)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    examples = encode_examples(items, tok, fmt, lcfg["max_length"])

    device = torch.device(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation=TRAIN_ATTENTION).to(device)
    model.config.use_cache = False
    pm = get_peft_model(model, make_lora_config(lcfg, model_dir))
    if lcfg.get("shared_a", False):
        log.info("shared A: %d LoRA A matrices drawn from seed %d and frozen", shared_lora_a(pm, seed), seed)
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lcfg["lr"], weight_decay=lcfg["weight_decay"])

    K, P = lcfg["checkpoint_steps"], lcfg["phase1_steps"]
    total = P + K
    warmup = max(1, math.ceil(lcfg["warmup_ratio"] * total))
    min_ratio = lcfg.get("min_lr_ratio", 0.1)
    order = EpochOrder(len(examples), seed, rng="python")

    fingerprint = resume_fingerprint(lcfg, fmt, seed, files, model_dir, device)
    state_file = work / "resume.pt"
    start_step, rows, elapsed0 = _load_resume(state_file, fingerprint, pm, opt)
    if start_step:
        for f in (work / "checkpoints").glob("step-*.safetensors"):  # newer than the state: redo
            if int(f.stem.split("-")[1]) > start_step:
                f.unlink()
        log.info("resuming %s at step %d/%d", out_dir, start_step, total)

    t0 = time.perf_counter() - elapsed0
    saved = start_step  # step of the resume point on disk
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=lcfg.get("bf16_autocast", True))
    pm.train()
    bar = tqdm(range(start_step, total), initial=start_step, total=total, desc=f"LoRA {out_dir.name}",
               mininterval=float(os.environ.get("TQDM_MININTERVAL", 5)))
    for step in bar:
        lr = warmup_cosine(step, warmup, total, peak=lcfg["lr"], min_ratio=min_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = order.batch(step, lcfg["batch_size"])
        chosen = [examples[i] for i in batch]
        ids, mask, position_ids, target = (t.to(device) for t in pack(chosen, pad_id))
        with autocast:
            loss = answer_loss(pm, ids, mask, target, position_ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        done, loss_value = step + 1, loss.item()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        check_finite(done, loss_value, float(grad_norm), saved, state_file)
        opt.step()
        rows.append({"phase": 1 if done <= P else 2, "step": done, "loss": round(loss_value, 6),
                     "lr": f"{lr:.6g}", "tokens": sum(len(seq) for seq, _ in chosen)})
        if multitask:
            rows[-1]["sources"] = batch_sources(origin, batch)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if done > P:  # phase 2: one checkpoint per step
            sd = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(pm).items()}
            step_file = work / "checkpoints" / f"step-{done:05d}.safetensors"
            with atomic_path(step_file) as tmp:
                save_safetensors(sd, tmp, step_file)
        if done % resume_every == 0 or done == P or done == total:
            _save_resume(state_file, fingerprint, pm, opt, done, rows, time.perf_counter() - t0)
            saved = done
    loop_s = time.perf_counter() - t0

    summary = {"dataset": out_dir.name, "steps": total, "phase1_steps": P, "checkpoints": K,
               "train_items": len(items), "final_loss": rows[-1]["loss"],
               "trainable_params": sum(p.numel() for p in params), **recorded(device)}
    if multitask:
        seen: dict[str, int] = {}
        for r in rows:
            for cell in r["sources"].split():
                d, n = cell.rsplit(":", 1)
                seen[d] = seen.get(d, 0) + int(n)
        summary["sources"] = {d: {"train_items": origin.count(d), "items_seen": seen.get(d, 0)}
                              for d in dict.fromkeys(origin)}
    _publish(pm, out_dir, work, summary, rows, MULTITASK_LOG_FIELDS if multitask else LOG_FIELDS)
    write_timings(timings, started, loop_s, total, start_step)
    log.info("LoRA %s done: %s", out_dir.name, json.dumps(summary))
    return summary


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help='JSON: {"lora": {...}, "prompt": {...}, "seed": int}')
    p.add_argument("--model", required=True, type=Path, help="base model directory")
    p.add_argument("--train", required=True, type=Path, nargs="+",
                   help="results/data/<ds>/train.jsonl; several: one multi-task LoRA on their union")
    p.add_argument("--out-dir", required=True, type=Path, help="results/zoo/<ds>")
    p.add_argument("--timings", type=Path, default=None,
                   help="optional JSON of run times (wall_s, loop_s, steps, resumed_from); kept out of "
                        "the outputs so they are byte-identical across machines")


def _run(args: argparse.Namespace) -> None:
    params = command_params(args.params, "lora", "prompt", "seed")
    train = args.train[0] if len(args.train) == 1 else args.train
    train_lora(args.model, train, args.out_dir, params["lora"], params["prompt"]["format"], params["seed"],
               timings=args.timings, device=args.device)


COMMANDS = {"train-lora": (_add, _run)}
