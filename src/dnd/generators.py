"""Generator training (method reference sections 2.2, 2.6, 2.7).

Commands:
  tokenize-zoo      dnd tokenize-zoo --params GENERATOR_JSON --checkpoints DIR --out tokens.pt
                    a dataset's LoRA checkpoints -> zoo tokens (K, T, r+2, w+2)
  train-generator   dnd train-generator --params JSON --target T --sources D1 D2 ...
                        --tokens TOK1 TOK2 ... --encoded ENC1 ENC2 ... --template-adapter DIR
                        --out generator.pt --log train_log.csv [--timings timings.json]
                        [--train-data TRAIN1 TRAIN2 ... --base-model DIR]
                    one leave-one-dataset-out generator; --params holds the config sections
                    seed, generator, encoder, lora and prompt (missing keys take the schema
                    defaults). --train-data (the sources' labeled train.jsonl, same order) and
                    --base-model are what `generator.objective: sft | both` trains through.

What --params must match, the outputs and the resume file, the training pairs and their seeding,
and the loss: docs/modules.md, section `src/dnd/generators.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from .config import GENERATOR_EXTRA_KEYS, command_params, parse_params, section
from .device import recorded
from .io import load_safetensors, load_torch, read_jsonl, save_torch, write_csv, write_json
from .method.encoder import encoding_signature, load_encoded
from .method.generator_checkpoint import save_generator
from .method.generator_model import HyperConvDecoder, SourceBasisGenerator, count_parameters
from .method.t2l import T2LHypernetwork
from .method.tokenization import LoraLayout, decode_tokens, detokenize, tokenize, tokenize_batch
from .parallel import connect
from .schedule import EpochOrder, derive_seed, draw_indices, warmup_cosine
from .zoo import check_finite, resume_fingerprint, write_timings

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 30.0
_STEP_RE = re.compile(r"step-(\d+)\.safetensors$")


# ----------------------------------------------------------------------------- zoo tokens


def tokenize_checkpoints(checkpoint_dir: str | Path, chunk_width: int) -> dict[str, Any]:
    """All `step-*.safetensors` of a directory, in step order, as zoo tokens.

    Returns {"tokens": float32 (K, T, r+2, w+2), "steps": [int] (K), "layout": layout dict}.
    """
    paths = Path(checkpoint_dir).glob("step-*.safetensors")
    files = sorted((int(m.group(1)), p) for p in paths if (m := _STEP_RE.search(p.name)))
    if not files:
        raise FileNotFoundError(f"no step-*.safetensors checkpoints in {checkpoint_dir}")
    first = load_safetensors(files[0][1], "LoRA checkpoint")
    layout = LoraLayout.from_state_dict(first, chunk_width)
    tokens = torch.empty(len(files), layout.n_tokens, *layout.token_shape)
    for i, (_, path) in enumerate(files):
        sd = first if i == 0 else load_safetensors(path, "LoRA checkpoint")
        if LoraLayout.from_state_dict(sd, chunk_width) != layout:
            raise ValueError(f"{path} has a different LoRA layout than {files[0][1]}")
        tokens[i] = tokenize(sd, layout)
    return {"tokens": tokens, "steps": [s for s, _ in files], "layout": layout.to_dict()}


def load_zoo_tokens(path: str | Path) -> dict[str, Any]:
    """Read zoo tokens written by `tokenize-zoo` (memory-mapped)."""
    return load_torch(path, "zoo tokens", mmap=True)


# ----------------------------------------------------------------------------- criterion


def criterion_weights(token_sets: Sequence[Tensor]) -> Tensor:
    """Per-token loss weights (T,) from the zoo tokens of the training datasets.

    For each dataset (tokens (K, T, h, w)): the std of every entry across its K checkpoints,
    averaged over each token's h*w entries, divided by the mean over all entries (so the
    weights average 1). A dataset with no spread (K = 1 or identical checkpoints) gives
    uniform weights. The result is the mean of the per-dataset vectors.
    """
    if not token_sets:
        raise ValueError("criterion weights need at least one dataset")
    per_dataset = []
    for tokens in token_sets:
        std = tokens.float().std(dim=0, correction=0)  # (T, h, w)
        per_token = std.mean(dim=(1, 2))  # (T,)
        overall = per_token.mean()
        per_dataset.append(per_token / overall if overall > 0 else torch.ones_like(per_token))
    return torch.stack(per_dataset).mean(dim=0)


def mean_token(token_sets: Sequence[Tensor]) -> Tensor:
    """The mean parameter token (T, h, w) over datasets of their mean over checkpoints
    (each training dataset counts once, whatever its number of checkpoints)."""
    if not token_sets:
        raise ValueError("the mean token needs at least one dataset")
    return torch.stack([tokens.float().mean(dim=0) for tokens in token_sets]).mean(dim=0)


class _WeightedMSE(torch.autograd.Function):
    """Fused weighted MSE: 4 passes over the (B, T, h, w) output instead of about 7, which
    matters on a CPU where the output has tens of millions of entries."""

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        diff = pred - target
        scale = (weights * (2.0 / diff.numel())).view(1, -1, 1, 1)
        ctx.save_for_backward(diff * scale)  # d loss / d pred
        per_token = torch.linalg.vecdot(diff.flatten(2), diff.flatten(2))  # (B, T), sum of squares
        return (per_token * weights).sum() / diff.numel()

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None


def weighted_mse(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Mean over all entries of weights[t] * (pred - target)^2.

    pred, target: (B, T, h, w); weights: (T,), broadcast over each token's h x w entries.
    Differentiable in `pred` only (targets and weights are data).
    """
    if pred.shape != target.shape or weights.shape != pred.shape[1:2]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)}, weights {tuple(weights.shape)}")
    return _WeightedMSE.apply(pred, target, weights)


# ----------------------------------------------------------------------------- pairs


class PairSampler:
    """Batches of (condition, target) pairs; stateless given the step (docs/modules.md).

    Args:
        tokens: per source dataset, zoo tokens (K_d, T, h, w).
        conditions: per source dataset, encoded train prompts (n_d, L, D), kept in their own dtype
            (float16 caches, memory-mapped: no float32 copy of a pool); a batch holds float32.
        n_prompts: N, prompts per condition.
        batch_size: B, pairs per step.
        seed: seed of this run (already specific to the fold).
        pairing: "random" (the paper): a pair's N prompts are drawn afresh at every step;
            "fixed": each checkpoint keeps one draw, seeded by (seed, dataset, checkpoint).
        pool_size: draw only from the first pool_size prompts of each source (None: all).
    """

    def __init__(
        self, tokens: Sequence[Tensor], conditions: Sequence[Tensor], n_prompts: int, batch_size: int, seed: int,
        pairing: str = "random", pool_size: int | None = None,
    ):
        if len(tokens) != len(conditions) or not tokens:
            raise ValueError("need one token set and one condition set per source dataset")
        if pairing not in ("random", "fixed"):
            raise ValueError(f"pairing must be 'random' or 'fixed', got {pairing!r}")
        self.tokens = list(tokens)
        self.conditions = [c if pool_size is None else c[:pool_size] for c in conditions]
        self.items = [(d, k) for d, t in enumerate(self.tokens) for k in range(t.shape[0])]
        self.n_prompts, self.batch_size, self.seed, self.pairing = n_prompts, batch_size, seed, pairing
        self.order = EpochOrder(len(self.items), seed, rng="torch")

    def batch(self, step: int, noise_condition: float = 0.0, noise_target: float = 0.0,
              part: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Pairs of step `step`: condition (B, N, L, D) float32, target (B, T, h, w) float32; with
        `part` (lo, hi), only the pairs lo..hi-1 of that batch (dnd.parallel: one process's share).

        One random stream per step draws every pair's prompts in turn, then the noise of the whole
        batch, so a part replays the whole stream (the prompt indices of every pair, the noise of
        the whole batch) and keeps its rows: the same numbers as the rows of the full batch, for
        the price of drawing the batch's noise on every process (nothing of other pairs' prompts
        is gathered)."""
        lo, hi = (0, self.batch_size) if part is None else part
        if not 0 <= lo < hi <= self.batch_size:
            raise ValueError(f"part {(lo, hi)} is not a non-empty part of a batch of {self.batch_size}")
        g = torch.Generator().manual_seed(derive_seed(self.seed, "step", step))
        cond = torch.empty(hi - lo, self.n_prompts, *self.conditions[0].shape[1:])
        target = torch.empty(hi - lo, *self.tokens[0].shape[1:])
        for j, item in enumerate(self.order.batch(step, self.batch_size)):
            d, k = self.items[item]
            pool = self.conditions[d]
            draw = (g if self.pairing == "random"
                    else torch.Generator().manual_seed(derive_seed(self.seed, "pair", d, k)))
            chosen = draw_indices(pool.shape[0], self.n_prompts, draw)  # drawn for every pair: one stream
            if lo <= j < hi:
                cond[j - lo].copy_(pool[chosen])  # float16 -> float32 is exact
                target[j - lo].copy_(self.tokens[d][k])
        if noise_condition > 0:
            cond.add_(torch.randn((self.batch_size, *cond.shape[1:]), generator=g)[lo:hi], alpha=noise_condition)
        if noise_target > 0:
            target.add_(torch.randn((self.batch_size, *target.shape[1:]), generator=g)[lo:hi], alpha=noise_target)
        return cond, target

    def datasets(self, step: int) -> list[int]:
        """The source dataset index of each pair of step `step` (the order of `batch`)."""
        return [self.items[i][0] for i in self.order.batch(step, self.batch_size)]


# ----------------------------------------------------------------------------- training


def adapter_lora_params(adapter_dir: str | Path) -> dict[str, Any]:
    """The LoRA hyper-parameters of a PEFT adapter directory (r, lora_alpha, lora_dropout,
    sorted target_modules, bias, task_type, base model): the part of its adapter_config.json
    that the zoo, the `lora` params and the generated adapters must agree on."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.exists():
        raise FileNotFoundError(f"template adapter has no adapter_config.json: {path}")
    cfg = json.loads(path.read_text())
    return {
        "r": int(cfg["r"]),
        "lora_alpha": cfg["lora_alpha"],
        "lora_dropout": cfg.get("lora_dropout", 0.0),
        "target_modules": sorted(cfg["target_modules"]),
        "bias": cfg.get("bias", "none"),
        "task_type": cfg.get("task_type"),
        "base_model_name_or_path": cfg.get("base_model_name_or_path"),
    }


def _check_lora(lora: Mapping[str, Any], template: Mapping[str, Any], layout: LoraLayout) -> None:
    """The `lora` params, the template adapter and the zoo layout must describe one LoRA."""
    if not (lora["r"] == template["r"] == layout.rank):
        raise ValueError(f"LoRA rank: params {lora['r']}, template {template['r']}, zoo tokens {layout.rank}")
    if float(lora["alpha"]) != float(template["lora_alpha"]):
        raise ValueError(f"LoRA alpha: params {lora['alpha']}, template {template['lora_alpha']}")
    modules = sorted({k.split(".lora_")[0].rsplit(".", 1)[1] for k in layout.keys})
    if sorted(lora["target_modules"]) != modules or template["target_modules"] != modules:
        raise ValueError(
            f"LoRA modules: params {sorted(lora['target_modules'])}, template {template['target_modules']}, "
            f"zoo tokens {modules}"
        )


def _load_sources(
    sources: Sequence[str],
    tokens_paths: Sequence[str | Path],
    encoded_paths: Sequence[str | Path],
    gen: Mapping[str, Any],
    enc: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], LoraLayout, list[Tensor]]:
    """Zoo tokens (one layout for all, width = generator.chunk_width) and encoded train
    prompts (encoded with `enc`) of the sources: (zoo dicts, layout, states (n_d, L, D))."""
    zoo = [load_zoo_tokens(p) for p in tokens_paths]
    layout = LoraLayout.from_dict(zoo[0]["layout"])
    for name, z in zip(sources, zoo):
        if LoraLayout.from_dict(z["layout"]) != layout:
            raise ValueError(f"zoo tokens of {name} have a different LoRA layout than those of {sources[0]}")
    if layout.chunk_width != gen["chunk_width"]:
        raise ValueError(f"zoo tokens use w={layout.chunk_width}, generator.chunk_width is {gen['chunk_width']}")
    states = []
    for name, path in zip(sources, encoded_paths):
        e = load_encoded(path, mmap=True)  # float16, paged in on use, one copy for all processes
        if encoding_signature(e["encoder"]) != encoding_signature(enc):
            raise ValueError(f"prompts of {name} were encoded with {e['encoder']}, params say {enc}")
        states.append(e["states"])
    return zoo, layout, states


def build_generator(gen: Mapping[str, Any], input_shape: Sequence[int], output_shape: Sequence[int],
                    token_sets: Sequence[Tensor], layout: LoraLayout | None = None) -> torch.nn.Module:
    """The untrained generator of `generator.design` (dnd.method.generator_model), with its data-derived buffers
    set from the training datasets' zoo tokens: the mean-token offset of the hyper-convolutional
    decoder (`output_offset: mean`), the per-dataset mean tokens of the source basis, the mean
    LoRA offset of the t2l hypernetwork (`output_offset: mean`; it needs the zoo `layout`)."""
    if gen["design"] == "t2l":
        if layout is None:
            raise ValueError("the t2l design needs the LoRA layout of the zoo tokens")
        model = T2LHypernetwork(input_shape, layout.to_dict(), hidden=gen["t2l_hidden"], embed=gen["t2l_embed"],
                                zero_init_output=gen["output_init"] == "zero")
        if gen["output_offset"] == "mean":
            model.set_offset(detokenize(mean_token(token_sets), layout))
        return model
    if gen["design"] == "basis":
        model = SourceBasisGenerator(input_shape, len(token_sets), output_shape, hidden=gen["basis_hidden"])
        model.basis.copy_(torch.stack([t.float().mean(dim=0) for t in token_sets]))
        return model
    model = HyperConvDecoder(input_shape, gen["stages"], output_shape, gen["kernel"],
                             output_offset=gen["output_offset"] != "none", head=gen["head"],
                             zero_init_output=gen["output_init"] == "zero")
    if gen["output_offset"] == "mean":
        model.output_offset.copy_(mean_token(token_sets))
    return model


def stored_generator_section(gen: Mapping[str, Any]) -> dict[str, Any]:
    """The generator section as a checkpoint stores it (and the resume fingerprint hashes it):
    without the GENERATOR_EXTRA_KEYS at their defaults, so a reconstruction generator is byte
    for byte the one written before function-space training existed."""
    defaults = section("generator", {})
    return {k: v for k, v in gen.items() if not (k in GENERATOR_EXTRA_KEYS and v == defaults[k])}


def generated_lora(model: torch.nn.Module, cond: Tensor, layout: LoraLayout) -> tuple[Tensor, dict[str, Tensor]]:
    """A batch of generated LoRAs as tokens (B, T, r+2, w+2) and as matrices {key: (B, *shape)},
    both in the generator's graph: a design with `lora` (t2l) makes matrices and tokenizes them,
    the others make tokens and de-tokenize them (dnd.method.tokenization.decode_tokens)."""
    if isinstance(model, T2LHypernetwork):
        loras = model.lora(cond)
        return tokenize_batch(loras, layout), loras
    tokens = model(cond)
    return tokens, decode_tokens(tokens, layout)


class SftObjective:
    """The function-space loss of `generator.objective: sft | both`: each generated LoRA of a
    step, applied to the frozen base model (dnd.method.functional_lora), scored by the mean
    answer-token cross-entropy of `n_items` labeled train items of its pair's source dataset,
    drawn (with replacement only when a source has fewer) by derive_seed(seed, "sft", step,
    pair): stateless given the step, so a resumed run draws the same items. The step's loss is
    the mean over its LoRAs."""

    def __init__(self, base_model: str | Path, lora: Mapping[str, Any], layout: LoraLayout, fmt: str,
                 adapter_config: Mapping[str, Any], sources: Sequence[str], train_paths: Sequence[str | Path],
                 n_items: int, seed: int, device: Any = "cpu"):
        from .method.functional_lora import FunctionalLora

        self.model = FunctionalLora(base_model, lora, layout, fmt, adapter_config, device)
        self.examples = []
        for name, path in zip(sources, train_paths):
            items = read_jsonl(path)
            if not items:
                raise ValueError(f"no training items for {name} in {path}")
            self.examples.append(self.model.encode(items))
        self.n_items, self.seed = int(n_items), seed

    def draw(self, step: int, datasets: Sequence[int], first: int = 0) -> list[list[tuple[list[int], int]]]:
        """The encoded train items of each pair of step `step` (`datasets`: the source indices of
        its pairs first, first+1, ...; a process's share of the batch starts past 0)."""
        out = []
        for j, d in enumerate(datasets, start=first):
            g = torch.Generator().manual_seed(derive_seed(self.seed, "sft", step, j))
            out.append([self.examples[d][i] for i in draw_indices(len(self.examples[d]), self.n_items, g).tolist()])
        return out

    def loss(self, loras: Mapping[str, Tensor], step: int, datasets: Sequence[int], first: int = 0) -> Tensor:
        return self.model.batch_loss(loras, self.draw(step, datasets, first))


def to_cpu(obj: Any) -> Any:
    """`obj` (nested dicts, lists, tuples of tensors and plain data) with every tensor on the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def resume_path(out: str | Path) -> Path:
    """Where the resume checkpoint of a generator output lives (next to it)."""
    out = Path(out)
    return out.with_name(out.stem + ".resume.pt")


def _save_resume(
    path: Path, fingerprint: int, model, optimizer, scheduler, step: int, elapsed: float, rows: list[list]
) -> None:
    """The resume checkpoint of `step` (tensors and plain data only: loadable with weights_only), its
    tensors on the CPU whatever the device (loading puts the optimizer's state on its parameters' device)."""
    state = {
        "fingerprint": fingerprint,
        "model": to_cpu(model.state_dict()),
        "optimizer": to_cpu(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "log": rows,
    }
    save_torch(path, state)


def _load_resume(path: Path, fingerprint: int, model, optimizer, scheduler) -> tuple[int, float, list[list]]:
    """Restore model, optimizer and scheduler from the resume checkpoint: (step, loop seconds so
    far, log rows), or (0, 0.0, []) without one or when it was written for another
    configuration. A corrupt file is an ArtifactError naming it."""
    if not path.exists():
        return 0, 0.0, []
    state = load_torch(path, "generator resume checkpoint")
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log.warning("ignoring %s: it was written for a different configuration", path)
        return 0, 0.0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], state["elapsed_s"], [list(r) for r in state["log"]]


def train_generator(
    params: Mapping[str, Any],
    target: str,
    sources: Sequence[str],
    tokens_paths: Sequence[str | Path],
    encoded_paths: Sequence[str | Path],
    template_adapter: str | Path,
    out: str | Path,
    log_path: str | Path,
    timings: str | Path | None = None,
    train_data: Sequence[str | Path] | None = None,
    base_model: str | Path | None = None,
    device: Any = "cpu",
) -> dict[str, Any]:
    """Train one generator on `device` (dnd.device; the CPU unless asked) and write its
    self-contained checkpoint to `out` (CPU tensors: it loads anywhere).

    Args:
        params: {"seed": int, "generator": {...}, "encoder": {...}, "lora": {...}, "prompt": {...}}
            (config sections; missing keys take the schema defaults; `prompt` is read by
            objective sft/both only).
        target: held-out dataset (names the fold; never read).
        sources: training datasets; `tokens_paths` and `encoded_paths` follow their order.
        template_adapter: a PEFT adapter dir of the zoo (its adapter_config.json is copied).
        out: generator checkpoint path; the resume checkpoint lives next to it.
        log_path: CSV loss log: step, loss, lr; objective sft/both: step, loss, reconstruction,
            sft, lr (reconstruction is the token-space loss, monitored without gradient under sft).
        timings: optional path of the timings JSON (see dnd.zoo.write_timings), plus step_s (mean
            seconds of a training step in this call) and, objective sft/both, sft_forward_s (of
            which the base-model forwards with the generated LoRAs).
        train_data: objective sft/both: the sources' labeled train.jsonl (order of `sources`).
        base_model: objective sft/both: the base model directory the LoRAs are applied to.

    Under `accelerate launch` (dnd.parallel) every process trains on its share of each step's
    batch and returns the same checkpoint dict; rank 0 alone writes the files.

    Returns the checkpoint dict that was saved.
    """
    started = time.perf_counter()
    if target in sources:
        raise ValueError(f"target {target!r} is among the sources (leave-one-out)")
    if not (len(sources) == len(tokens_paths) == len(encoded_paths)) or not sources:
        raise ValueError("need one --tokens and one --encoded file per source, in the order of --sources")
    gen = section("generator", params.get("generator"))
    enc = section("encoder", params.get("encoder"))
    lora = section("lora", params.get("lora"))
    seed = int(params.get("seed", 0))
    objective = gen["objective"]
    use_sft, use_reconstruction = objective in ("sft", "both"), objective in ("reconstruction", "both")
    if use_sft and (not train_data or len(train_data) != len(sources) or base_model is None):
        raise ValueError(f"generator.objective {objective} needs --train-data (one train.jsonl per source, in the "
                         "order of --sources) and --base-model")
    if not use_sft and (train_data or base_model is not None):
        raise ValueError("--train-data and --base-model are read by generator.objective sft or both only; "
                         f"it is {objective}")

    zoo, layout, states = _load_sources(sources, tokens_paths, encoded_paths, gen, enc)
    template = adapter_lora_params(template_adapter)
    _check_lora(lora, template, layout)
    adapter_config = json.loads((Path(template_adapter) / "adapter_config.json").read_text())

    token_sets = [z["tokens"] for z in zoo]
    weights = criterion_weights(token_sets)
    run_seed = derive_seed(seed, target)
    sampler = PairSampler(token_sets, states, gen["n_prompts"], gen["batch_size"], run_seed, gen["pairing"],
                          gen["pool_size"])
    _, seq_len, dim = states[0].shape

    ranks, device = connect(device)  # one process unless launched by accelerate (dnd.parallel)
    if ranks.world > gen["batch_size"]:
        raise ValueError(f"generator.batch_size {gen['batch_size']} is smaller than the {ranks.world} processes "
                         "launched: every process needs at least one pair of each step")
    lo, hi = ranks.share(gen["batch_size"])  # this process's pairs of every step's batch
    share = (hi - lo) / gen["batch_size"]
    torch.manual_seed(derive_seed(run_seed, "init"))
    model = build_generator(gen, (gen["n_prompts"], seq_len, dim), (layout.n_tokens, *layout.token_shape), token_sets,
                            layout).to(device)  # initialized on the CPU (the same draw anywhere), then moved
    weights_on = weights.to(device)
    # fused: one kernel per parameter tensor, 8x faster than the default on this CPU for the 49M
    # weights of the local head (0.05 s vs 0.4 s per step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=gen["lr"], weight_decay=gen["weight_decay"], fused=True)
    total = int(gen["basis_steps"] if gen["design"] == "basis" else gen["steps"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, gen["warmup_steps"], total))
    stored = stored_generator_section(gen)
    fingerprint_parts = [stored, enc, lora, seed, target, list(sources), [z["steps"] for z in zoo], layout.to_dict(),
                         *(recorded(device).values())]  # a run resumes on the device it started on (any count)
    sft = None
    if use_sft:
        fmt = section("prompt", params.get("prompt"))["format"]
        sft = SftObjective(base_model, lora, layout, fmt, adapter_config, sources, train_data, gen["sft_items"],
                           derive_seed(run_seed, "sft"), device)
        # the training items' content, the prompt format and the base model's identity (dnd.zoo)
        fingerprint_parts.append([resume_fingerprint(lora, fmt, seed, Path(f), Path(base_model)) for f in train_data])
    fingerprint = derive_seed(*fingerprint_parts)

    out, log_path = Path(out), Path(log_path)
    resume = resume_path(out)
    start, elapsed, rows = _load_resume(resume, fingerprint, model, optimizer, scheduler)
    if start and ranks.main:
        log.info("resuming %s at step %d", target, start)

    n_params = count_parameters(model)
    if ranks.main:
        log.info("generator %s: %d parameters, %d steps, sources %s", target, n_params, total, list(sources))
    model.train()
    t0 = time.perf_counter() - elapsed
    saved = start  # step of the resume checkpoint on disk
    step_s = sft_s = 0.0  # seconds in this call: whole steps, base-model forwards with generated LoRAs
    bar = tqdm(
        total=total, initial=start, desc=f"generator {target}", mininterval=PROGRESS_INTERVAL_S, file=sys.stderr,
        disable=not ranks.main,
    )
    for step in range(start, total):
        t_step = time.perf_counter()
        cond, tgt = sampler.batch(step, gen["noise_condition"], gen["noise_target"], (lo, hi))  # drawn on the CPU
        cond, tgt = cond.to(device), tgt.to(device)
        if sft is None:
            loss = weighted_mse(model(cond), tgt, weights_on)
        else:
            tokens, loras = generated_lora(model, cond, layout)
            reconstruction = weighted_mse(tokens if use_reconstruction else tokens.detach(), tgt, weights_on)
            t_sft = time.perf_counter()
            answer = sft.loss(loras, step, sampler.datasets(step)[lo:hi], lo)
            sft_s += time.perf_counter() - t_sft
            loss = reconstruction + gen["sft_weight"] * answer if use_reconstruction else answer
        if ranks.world > 1:  # this process's share of the global batch mean
            loss = loss * share
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ranks.sum_gradients(model.parameters())  # the global batch's gradient on every process
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), gen["grad_clip"])
        # the losses summed over the processes: a NaN/inf on any process makes them (and the summed
        # gradient's norm) non-finite on every process, so all stop at this step with one error
        values = [loss.item()] if sft is None else [loss.item(), reconstruction.item(), answer.item()]
        values = ranks.sum_values([values[0]] + [v * share for v in values[1:]] if ranks.world > 1 else values,
                                  device)
        loss_value = values[0]
        check_finite(step + 1, loss_value, float(grad_norm), saved, resume)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        if sft is None:
            rows.append([step + 1, f"{loss_value:.6g}", f"{lr:.6g}"])
        else:
            rows.append([step + 1, f"{loss_value:.6g}", f"{values[1]:.6g}", f"{values[2]:.6g}", f"{lr:.6g}"])
        step_s += time.perf_counter() - t_step
        bar.update(1)
        bar.set_postfix(loss=rows[-1][1], refresh=False)
        if (step + 1) % gen["save_every"] == 0 and step + 1 < total:
            if ranks.main:  # the parameters are the same on every process
                _save_resume(resume, fingerprint, model, optimizer, scheduler, step + 1, time.perf_counter() - t0,
                             rows)
            ranks.barrier()
            saved = step + 1
    bar.close()
    loop_s = time.perf_counter() - t0

    checkpoint = save_generator(
        out,
        model.cpu(),
        write=ranks.main,
        layout=layout.to_dict(),
        lora_config=template,
        adapter_config=json.loads((Path(template_adapter) / "adapter_config.json").read_text()),
        encoder=enc,
        generator=stored,
        seed=seed,
        target=target,
        sources=list(sources),
        step=total,
        n_params=n_params,
        criterion_weights=weights,
    )
    if not ranks.main:
        ranks.barrier()  # until the main process has written the outputs
        return checkpoint
    header = ["step", "loss", "lr"] if sft is None else ["step", "loss", "reconstruction", "sft", "lr"]
    write_csv(log_path, header, rows)
    resume.unlink(missing_ok=True)
    ran = max(total - start, 1)
    extra = {"step_s": round(step_s / ran, 4)}
    if sft is not None:
        extra["sft_forward_s"] = round(sft_s / ran, 4)
        log.info("objective %s: %.3f s per step, of which %.3f s base-model forwards with the generated LoRAs",
                 objective, step_s / ran, sft_s / ran)
    write_timings(timings, started, loop_s, total, start)
    if timings is not None:  # the step costs beside dnd.zoo.write_timings' fields
        write_json(timings, {**json.loads(Path(timings).read_text()), **extra})
    ranks.barrier()
    return checkpoint


# ----------------------------------------------------------------------------- commands


def add_tokenize_zoo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="{}", help="JSON: the `generator` config section (uses chunk_width)")
    p.add_argument("--checkpoints", required=True, help="directory of step-*.safetensors LoRA checkpoints")
    p.add_argument("--out", required=True, help="output zoo tokens (.pt)")


def run_tokenize_zoo(args: argparse.Namespace) -> None:
    zoo = tokenize_checkpoints(args.checkpoints, section("generator", parse_params(args.params))["chunk_width"])
    save_torch(args.out, zoo)
    log.info("%d checkpoints -> tokens %s -> %s", len(zoo["steps"]), tuple(zoo["tokens"].shape), args.out)


def add_train_generator_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        required=True,
        help='JSON {"seed": int, "generator": {...}, "encoder": {...}, "lora": {...}} (config sections)',
    )
    p.add_argument("--target", required=True, help="held-out dataset of this fold")
    p.add_argument("--sources", nargs="+", required=True, help="training datasets")
    p.add_argument("--tokens", nargs="+", required=True, help="zoo tokens per source (order of --sources)")
    p.add_argument("--encoded", nargs="+", required=True, help="encoded train prompts per source (same order)")
    p.add_argument("--template-adapter", required=True, help="a zoo PEFT adapter dir (its adapter_config.json)")
    p.add_argument("--out", required=True, help="generator checkpoint (.pt)")
    p.add_argument("--log", required=True, help="loss log (.csv)")
    p.add_argument(
        "--timings",
        default=None,
        help="optional JSON of run times (wall_s, loop_s, steps, resumed_from, step_s, sft_forward_s); kept out "
        "of the outputs so they are byte-identical across machines",
    )
    p.add_argument("--train-data", nargs="+", default=None,
                   help="objective sft/both: labeled train.jsonl per source (order of --sources)")
    p.add_argument("--base-model", default=None, help="objective sft/both: base model directory")


def run_train_generator(args: argparse.Namespace) -> None:
    params = command_params(args.params, "generator", "encoder", "lora", "prompt", "seed")
    ckpt = train_generator(
        params,
        args.target,
        args.sources,
        args.tokens,
        args.encoded,
        args.template_adapter,
        args.out,
        args.log,
        args.timings,
        args.train_data,
        args.base_model,
        args.device,
    )
    log.info("generator for %s (%d parameters) -> %s", args.target, ckpt["n_params"], args.out)


COMMANDS = {
    "tokenize-zoo": (add_tokenize_zoo_arguments, run_tokenize_zoo),
    "train-generator": (add_train_generator_arguments, run_train_generator),
}
