"""A profile at its real scale, checked on a CPU without downloading anything (`dnd check-profile`).

    dnd check-profile --config config/paper.yaml [--out results/check_profile_paper.json]
                      [--depth-reduced-layers 2] [--reduced-width-divisor 16] [--reduced-prompts N]
                      [--slurm-profile workflow/profiles/slurm/profile.yaml]

Six checks: the base model and its LoRA on the meta device; the LoRA tokenizer's chunk width and
round trip; every generator design's parameters per layer; each stage's GPU memory (exact counts,
activations traced on fake tensors); one real forward/backward of a depth-reduced decoder; the
SLURM profile's resources per rule, every rule made with `use rule` included: the command fails (one
line) when a rule's `mem_mb` is below its host-memory estimate. The JSON holds every figure in bytes
and parameters; stdout gets the same as Markdown tables. What each check does and what the memory figures leave out:
docs/modules.md, section `src/dnd/check_profile.py`; the paper profile's figures: docs/cluster.md,
"What each stage of the paper profile needs".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import yaml
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .config import (
    KNOWN_MODEL_CONFIGS,
    REPO_ROOT,
    ConfigError,
    check_chunk_width,
    folds,
    load_config,
    model_config,
)
from .generators import build_generator
from .io import write_json
from .method.encoder import HASH_DIM, encoder_path
from .method.generator_model import count_parameters
from .method.tokenization import LoraLayout, detokenize, tokenize
from .paths import shown_path
from .zoo import make_lora_config

log = logging.getLogger(__name__)

#: The paper's decoder for Qwen2.5-0.5B (method reference section 2.5).
PAPER_DECODER_PARAMS = 1.1e9
#: Tokens scored per sequence in the LLM stages (answer tokens in LoRA training, continuation
#: tokens per packed item in evaluation): an assumption, small next to the sequence.
ANSWER_TOKENS = 16
SLURM_PROFILE = REPO_ROOT / "workflow" / "profiles" / "slurm" / "profile.yaml"
RULES_DIR = REPO_ROOT / "workflow" / "rules"
GIB = 2**30


# ----------------------------------------------------------------------------- tracing


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created while the mode is active: `live` now, `peak` so far.

    Storages of `existing` tensors (weights, inputs) are not counted; a view shares its base's
    storage and is counted once; a storage stops counting when it is freed. Works on real, meta
    and fake tensors alike (enter it inside a FakeTensorMode)."""

    def __init__(self, existing: Iterable[Tensor] = ()):
        super().__init__()
        self.live = 0
        self.peak = 0
        for t in existing:
            self._seen(t.untyped_storage())

    def _seen(self, storage) -> bool:
        """Whether this mode has seen `storage` before; marks it seen."""
        tags = getattr(storage, "_dnd_live_bytes", None)
        if tags is None:
            tags = storage._dnd_live_bytes = set()
        if id(self) in tags:
            return True
        tags.add(id(self))
        return False

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                if not self._seen(storage):
                    n = storage.nbytes()
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, n)
        return out


def to_fake(module: nn.Module, mode, device: str = "cpu") -> nn.Module:
    """Replace the meta parameters and buffers of `module` (in place) by fake tensors of `mode` on
    `device` (tied weights stay tied)."""
    converter = mode.fake_tensor_converter
    memo: dict[int, tuple[Tensor, Tensor]] = {}

    def fake(t: Tensor) -> Tensor:
        if id(t) not in memo:
            if t.device.type == "meta":
                f = converter.from_meta_and_device(mode, t, torch.device(device))
            else:
                f = mode.from_tensor(t)
            memo[id(t)] = (t, nn.Parameter(f, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else f)
        return memo[id(t)][1]

    for m in module.modules():
        for name, t in list(m._parameters.items()):
            if t is not None:
                m._parameters[name] = fake(t)
        for name, t in list(m._buffers.items()):
            if t is not None:
                m._buffers[name] = fake(t)
    return module


def nbytes(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def trace_train_step(model: nn.Module, inputs: Sequence[Tensor], loss_fn: Callable[..., Tensor],
                     previous_grads: bool = True) -> dict[str, Any]:
    """One training step's forward and backward as the training loops run it (the previous step's
    gradients alive during the forward, freed before the backward): bytes created, on whatever
    tensors the model and inputs are (real or fake), and the wall times."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_bytes = nbytes(trainable)
    tracker = LiveBytes([*model.parameters(), *model.buffers(), *inputs])
    with tracker:
        if previous_grads:
            for p in trainable:
                p.grad = torch.zeros_like(p)
        t0 = time.perf_counter()
        loss = loss_fn(model, *inputs)
        t1 = time.perf_counter()
        after_forward = tracker.live - (grad_bytes if previous_grads else 0)
        for p in trainable:
            p.grad = None
        loss.backward()
        t2 = time.perf_counter()
    return {"loss": loss, "saved_activations_bytes": after_forward, "peak_bytes": tracker.peak,
            "gradients_bytes": grad_bytes, "forward_s": t1 - t0, "backward_s": t2 - t1}


def trace_inference(model: nn.Module, inputs: Sequence[Tensor], fn: Callable[..., Tensor]) -> int:
    """Peak bytes created by `fn(model, *inputs)` without gradients."""
    tracker = LiveBytes([*model.parameters(), *model.buffers(), *inputs])
    with tracker, torch.no_grad():
        fn(model, *inputs)
    return tracker.peak


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode()


# ----------------------------------------------------------------------------- models


def resolve_base_model(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """(the base model's HF config, where it comes from); a clear error for an unknown model."""

    known = model_config(cfg["base_model"])
    if known is None:
        bm = cfg["base_model"]
        names = ", ".join(sorted(k for k in KNOWN_MODEL_CONFIGS if k != "smollm2_wheel"))
        raise ConfigError(
            f"no config known for base_model.name_or_path {bm.get('name_or_path')!r} (check-profile downloads "
            f"nothing); known: {names} (source hf), base_model.source smollm2_wheel and tiny, or a local model "
            "directory with a config.json; add a model's config.json to config/models/ and config.KNOWN_MODEL_CONFIGS"
        )
    return known


def hf_config(model_cfg: Mapping[str, Any]):
    from transformers import AutoConfig

    return AutoConfig.for_model(**{k: v for k, v in model_cfg.items() if not k.startswith("_")})


def meta_causal_lm(model_cfg: Mapping[str, Any], dtype: torch.dtype, lora: Mapping[str, Any] | None = None):
    """The base model on the meta device in `dtype`, with the profile's PEFT LoRA when `lora` is given
    (as dnd.zoo makes it)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(model_cfg), dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    if lora is None:
        return model

    from peft import get_peft_model

    with warnings.catch_warnings():  # peft warns that meta weights cannot be initialized: nothing to initialize
        warnings.simplefilter("ignore")
        return get_peft_model(model, make_lora_config(dict(lora), "meta"))


def lora_state_dict(peft_model) -> dict[str, Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(peft_model)


def encoder_config(cfg: Mapping[str, Any], base_cfg: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the condition encoder's HF config or None for the model-free hashing extractor, its source)."""

    enc = cfg["encoder"]
    if enc["kind"] == "hashing":
        return None, "hashing extractor (no model)"
    if enc["kind"] == "llm":
        path = Path(enc["path"]) / "config.json" if enc["path"] else None
        if path is not None and path.is_file():
            return json.loads(path.read_text()), shown_path(path)
        return dict(base_cfg), "the base model (encoder.kind llm)"
    path = encoder_path(enc) / "config.json"
    if not path.is_file():
        raise ConfigError(f"encoder config not found: {path} (encoder.path {enc['path']!r})")
    return json.loads(path.read_text()), shown_path(path)


def encoder_dim(enc_cfg: Mapping[str, Any] | None) -> int:
    return HASH_DIM if enc_cfg is None else int(enc_cfg["hidden_size"])


def generator_settings(gen: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The generator section of every design the profile trains: the default one, then the variants."""
    return [{**gen, "design": d} for d in [gen["design"], *gen.get("variants", [])]]


def build_meta_generator(gen: Mapping[str, Any], input_shape: Sequence[int], output_shape: Sequence[int],
                         n_sources: int) -> nn.Module:
    """`generators.build_generator` on the meta device: the real module, no memory."""

    with torch.device("meta"):
        token_sets = [torch.empty(1, *output_shape) for _ in range(n_sources)]
        return build_generator(gen, input_shape, output_shape, token_sets)


def parameter_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Parameters per layer: the hyper-convolutional layers (their norm, 1-D convolutions and bias
    apart from the channel convolution or head), or the whole module for other designs."""
    if not hasattr(model, "layers"):
        return [{"layer": type(model).__name__, "in": list(model.input_shape), "out": list(model.output_shape),
                 "branches": count_parameters(model), "channel": 0, "total": count_parameters(model)}]
    rows = []
    for i, layer in enumerate(model.layers):
        channel = count_parameters(layer.channel)
        total = count_parameters(layer)
        kind = type(layer.channel).__name__
        name = f"{i}" + (f" (head: {kind})" if i == len(model.layers) - 1 else "")
        rows.append({"layer": name, "in": list(layer.in_shape), "out": list(layer.out_shape),
                     "branches": total - channel, "channel": channel, "total": total})
    return rows


# ----------------------------------------------------------------------------- checks


def check_lora_layout(cfg: Mapping[str, Any], peft_model, seed: int = 0) -> tuple[Any, Tensor, dict[str, Any]]:
    """The LoRA layout of the PEFT model at generator.chunk_width, and the round trip of random
    weights of its shapes: (layout, tokens of those weights, report)."""

    sd = lora_state_dict(peft_model)
    w = cfg["generator"]["chunk_width"]
    layout = LoraLayout.from_state_dict(sd, w)
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for key, shape in zip(layout.keys, layout.shapes):  # PEFT-like scales: A ~ 1/sqrt(in), B small
        scale = shape[1] ** -0.5 if key.endswith("lora_A.weight") else 0.01
        weights[key] = torch.randn(shape, generator=g) * scale
    tokens = tokenize(weights, layout)
    back = detokenize(tokens, layout)
    if list(back) != list(layout.keys) or any(tuple(back[k].shape) != s for k, s in zip(layout.keys, layout.shapes)):
        raise ValueError("detokenize does not give back the LoRA's keys and shapes")
    err = max(float((back[k] - weights[k]).abs().max()) for k in layout.keys)
    biggest = max(float(v.abs().max()) for v in weights.values())
    # a correct round trip is off by ~1e-6 of the largest weight, at times ~1e-5: the decode averages
    # each token's copies of m' and s' in float32 (a reduction whose rounding follows how it is
    # vectorized, so the memory's alignment), and the std, carried as log(0.9 std + 0.1), amplifies
    # that ~10x for the small stds of B; a wrong layout is off by O(1)
    if not err <= 1e-4 * biggest:
        raise ValueError(f"tokenize -> detokenize does not round-trip: max |error| {err:.3g} for weights up to "
                         f"{biggest:.3g}")
    modules: dict[str, list[int]] = {}
    for key, shape in zip(layout.keys, layout.shapes):
        module = key.split(".lora_")[0].rsplit(".", 1)[1]
        io = modules.setdefault(module, [0, 0])
        io[0 if key.endswith("lora_A.weight") else 1] = shape[1] if key.endswith("lora_A.weight") else shape[0]
    report = {
        "rank": layout.rank, "chunk_width": w, "target_modules": list(cfg["lora"]["target_modules"]),
        "module_in_out": modules, "trainable_parameters": sum(math.prod(s) for s in layout.shapes),
        "n_matrices": len(layout.keys), "n_tokens": layout.n_tokens, "token_shape": list(layout.token_shape),
        "chunk_width_divides": True, "round_trip_max_abs_error": err, "round_trip_max_abs_weight": biggest,
    }
    return layout, tokens, report


# ----------------------------------------------------------------------------- memory per stage


def _entry(stage: str, rule: str, what: str, weights: int, inputs: int, peak: int, optimizer: int = 0,
           gradients: int = 0, saved: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"stage": stage, "rule": rule, "what": what, "weights_bytes": weights, "optimizer_bytes": optimizer,
            "gradients_bytes": gradients, "inputs_bytes": inputs, "saved_activations_bytes": saved,
            "peak_bytes": peak, "total_bytes": weights + optimizer + inputs + peak, **extra}


def memory_train_generator(gen: Mapping[str, Any], input_shape, output_shape, n_sources: int,
                           n_train: int) -> dict[str, Any]:
    """train_generator: float32 weights, AdamW, batch generator.batch_size, weighted MSE. Host memory:
    the sources' encoded train prompts, which PairSampler reads memory-mapped as float16 (at most
    n_train each; file pages, one copy for all the processes of a data-parallel job)."""
    from .generators import weighted_mse

    b = gen["batch_size"]
    model = build_meta_generator(gen, input_shape, output_shape, n_sources)
    weights = nbytes([*model.parameters(), *model.buffers()])
    trainable = count_parameters(model)
    mode = fake_mode()
    to_fake(model, mode)
    with mode:
        inputs = (torch.empty(b, *input_shape), torch.empty(b, *output_shape), torch.ones(output_shape[0]))
        step = trace_train_step(model, inputs, lambda m, c, t, w: weighted_mse(m(c), t, w))
    return _entry(f"train generator ({gen['design']})", "train_generator",
                  f"one AdamW step at generator.batch_size {b}: condition {[b, *input_shape]}, "
                  f"target {[b, *output_shape]}, float32", weights, nbytes(inputs), step["peak_bytes"],
                  optimizer=2 * 4 * trainable,
                  gradients=step["gradients_bytes"], saved=step["saved_activations_bytes"], batch_size=b,
                  host_conditions_bytes=n_sources * n_train * math.prod(input_shape[1:]) * 2)


def memory_generate(gen: Mapping[str, Any], input_shape, output_shape, n_sources: int,
                    encode: Mapping[str, Any] | None) -> dict[str, Any]:
    """generate_target (and generate_adapter, one adapter per job): the encoder on the N prompts, then one
    decoder forward (batch 1, float32). A target's job holds its generators (dnd and each variant) at once."""
    model = build_meta_generator(gen, input_shape, output_shape, n_sources)
    weights = nbytes([*model.parameters(), *model.buffers()])
    mode = fake_mode()
    to_fake(model, mode)
    with mode:
        cond = torch.empty(1, *input_shape)
        peak = trace_inference(model, (cond,), lambda m, c: m(c))
    enc_w = encode["weights_bytes"] if encode else 0
    enc_peak = (encode["inputs_bytes"] + encode["peak_bytes"]) if encode else 0
    # the encoder's temporaries are gone when the decoder runs; the states (cond) stay
    return _entry(f"generate ({gen['design']})", "generate_target",
                  "encode the N prompts, then one decoder forward at batch 1 (float32; encoder as in encode_prompts)",
                  weights + enc_w, nbytes([cond]), max(peak, enc_peak))


def memory_train_lora(cfg: Mapping[str, Any], base_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """train_lora: float32 base weights, LoRA trained with AdamW, bf16 autocast as in dnd.zoo."""
    lora = cfg["lora"]
    b, length, k = lora["batch_size"], lora["max_length"], min(ANSWER_TOKENS, lora["max_length"])
    pm = meta_causal_lm(base_cfg, torch.float32, lora)
    weights = nbytes([*pm.parameters(), *pm.buffers()])
    n_train = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    mode = fake_mode()
    to_fake(pm, mode)
    causal = pm.get_base_model()
    autocast = lora["bf16_autocast"]

    def loss_fn(m, ids, mask, target):  # dnd.zoo.answer_loss, with the answer at the last k positions
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = causal.lm_head(hidden[:, -k:].reshape(-1, hidden.shape[-1]))
            return F.cross_entropy(logits.float(), target)

    with mode:
        inputs = (torch.zeros(b, length, dtype=torch.long), torch.ones(b, length, dtype=torch.long),
                  torch.zeros(b * k, dtype=torch.long))
        step = trace_train_step(pm, inputs, loss_fn)
    return _entry("LoRA fine-tuning", "train_lora",
                  f"one AdamW step of the LoRA at lora.batch_size {b} x lora.max_length {length} tokens, "
                  f"float32 weights{', bf16 autocast' if autocast else ''}, {k} answer tokens per example",
                  weights, nbytes(inputs), step["peak_bytes"], optimizer=2 * 4 * n_train,
                  gradients=step["gradients_bytes"], saved=step["saved_activations_bytes"], batch_size=b,
                  seq_len=length)


def memory_encode(cfg: Mapping[str, Any], enc_cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """encode_prompts: the frozen encoder at encoder.batch_size x encoder.max_length in encoder.dtype."""
    if enc_cfg is None:
        return None
    from transformers import AutoModel

    enc = cfg["encoder"]
    b, length = enc["batch_size"], enc["max_length"]
    dtype = getattr(torch, enc["dtype"])
    with torch.device("meta"):
        model = AutoModel.from_config(hf_config(enc_cfg), dtype=dtype, attn_implementation="sdpa").eval()
    weights = nbytes([*model.parameters(), *model.buffers()])
    mode = fake_mode()
    to_fake(model, mode)
    with mode:
        inputs = (torch.zeros(b, length, dtype=torch.long), torch.ones(b, length, dtype=torch.long))
        peak = trace_inference(model, inputs, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask)
                               .last_hidden_state.float() * mask.unsqueeze(-1))
    # dnd.method.encoder.run_encode holds the split's states as float16 (n, L, D), rounded per batch (no
    # float32 copy of the split), with a bool mask (n, L): n = the largest split (data.n_train or data.n_cond)
    n = max(int(cfg["data"]["n_train"]), int(cfg["data"].get("n_cond") or 0))
    positions = 1 if enc["pooling"] == "mean" else length
    outputs = n * positions * int(enc_cfg["hidden_size"]) * 2 + n * positions
    return _entry("encode prompts", "encode_prompts",
                  f"frozen encoder forward at encoder.batch_size {b} x encoder.max_length {length}, {enc['dtype']}",
                  weights, nbytes(inputs), peak, batch_size=b, seq_len=length, host_outputs_bytes=outputs,
                  host_items=n)


def memory_evaluate(cfg: Mapping[str, Any], base_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """evaluate_target: the base model with a LoRA in evaluation.dtype, one dnd-prefix forward of
    evaluation.batch_size packed items (block mask, position ids, the output layer and a float32
    log-softmax on the continuation tokens only)."""
    ev = cfg["evaluation"]
    b, length, k = ev["batch_size"], cfg["lora"]["max_length"], min(ANSWER_TOKENS, cfg["lora"]["max_length"])
    dtype = getattr(torch, ev["dtype"])
    pm = meta_causal_lm(base_cfg, dtype, cfg["lora"]).to(dtype).eval()  # dnd.evaluate: LoRA in the model dtype
    weights = nbytes([*pm.parameters(), *pm.buffers()])
    mode = fake_mode()
    to_fake(pm, mode)
    causal = pm.get_base_model()

    def forward(m, ids, mask, pos):  # dnd.scoring.lm_backend.PrefixSharingLM._forward
        hidden = causal.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
        logits = causal.lm_head(hidden[:, -k:].reshape(-1, hidden.shape[-1]))
        return F.log_softmax(logits, dim=-1, dtype=torch.float32)

    with mode:
        inputs = (torch.zeros(b, length, dtype=torch.long), torch.ones(b, 1, length, length, dtype=torch.bool),
                  torch.zeros(b, length, dtype=torch.long))
        peak = trace_inference(pm, inputs, forward)
    return _entry("evaluation", "evaluate_target",
                  f"one forward of evaluation.batch_size {b} packed items of {length} tokens, {ev['dtype']}, "
                  f"{k} continuation tokens each through the output layer", weights, nbytes(inputs), peak,
                  batch_size=b, seq_len=length)


# ----------------------------------------------------------------------------- depth-reduced run


def reduced_generator_settings(gen: Mapping[str, Any], input_shape, layers: int, width_divisor: int,
                               prompts: int | None) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """The depth-reduced copy's generator section and input shape: a hyperconv decoder keeps its
    first `layers` - 1 stages with channels // width_divisor; other designs run at full size."""
    n = int(prompts) if prompts else int(input_shape[0])
    shape = (n, int(input_shape[1]), int(input_shape[2]))
    if gen["design"] != "hyperconv":
        return dict(gen), shape
    if not 1 <= layers <= len(gen["stages"]) + 1:
        raise ValueError(f"--depth-reduced-layers must be 1..{len(gen['stages']) + 1} (the decoder has "
                         f"{len(gen['stages']) + 1} layers), got {layers}")
    stages = [[max(1, c // width_divisor), h, w] for c, h, w in gen["stages"][: layers - 1]]
    return {**gen, "stages": stages}, shape


def reduced_run(gen: Mapping[str, Any], input_shape, tokens: Tensor, n_sources: int, layers: int,
                width_divisor: int, batch: int, prompts: int | None, seed: int = 0) -> dict[str, Any]:
    """One real forward/backward of the depth-reduced copy on the CPU (docs/modules.md)."""
    from .generators import build_generator, weighted_mse

    rgen, shape = reduced_generator_settings(gen, input_shape, layers, width_divisor, prompts)
    output_shape = tuple(tokens.shape)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    token_sets = [(tokens + 0.01 * torch.randn(tokens.shape, generator=g)).unsqueeze(0) for _ in range(n_sources)]
    model = build_generator(rgen, shape, output_shape, token_sets)
    inputs = (torch.randn(batch, *shape, generator=g), tokens.expand(batch, *output_shape).contiguous(),
              torch.ones(output_shape[0]))

    def loss_fn(m, c, t, w):
        return weighted_mse(m(c), t, w)

    step = trace_train_step(model, inputs, loss_fn, previous_grads=False)
    loss = float(step["loss"].detach())
    named = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad]
    # a zero-initialized output layer (generator.output_init: zero) passes no gradient upstream at the
    # first step: then only its own parameters must get one
    zero_init = rgen["design"] == "hyperconv" and rgen["output_init"] == "zero"
    last = f"layers.{len(model.layers) - 1}.channel." if zero_init else ""
    must = [n for n, _ in named if n.startswith(last)]
    missing = [n for n, gr in named if gr is None]
    nonzero = {n for n, gr in named if gr is not None and bool(gr.abs().sum() > 0)}
    norm = math.sqrt(sum(float(gr.double().pow(2).sum()) for _, gr in named if gr is not None))
    silent = [n for n in must if n not in nonzero]
    if not math.isfinite(loss) or not math.isfinite(norm) or missing or silent:
        raise ValueError(f"depth-reduced run: loss {loss}, gradient norm {norm}; parameters without a gradient "
                         f"{missing[:3]}, with an all-zero gradient {silent[:3]}")
    meta = build_meta_generator(rgen, shape, output_shape, n_sources)
    mode = fake_mode()
    to_fake(meta, mode)
    with mode:
        fake_inputs = (torch.empty(batch, *shape), torch.empty(batch, *output_shape), torch.ones(output_shape[0]))
        predicted = trace_train_step(meta, fake_inputs, loss_fn, previous_grads=False)
    return {
        "design": rgen["design"], "head": rgen.get("head"), "kernel": rgen.get("kernel"),
        "layers": len(model.layers) if hasattr(model, "layers") else None,
        "stages": rgen.get("stages"), "input_shape": list(shape), "output_shape": list(output_shape), "batch": batch,
        "parameters": count_parameters(model), "loss": loss, "grad_norm": norm,
        "parameters_with_gradient": len(nonzero), "parameter_tensors": len(named),
        "must_have_gradient": "the output layer (zero-initialized)" if zero_init else "all",
        "forward_s": round(step["forward_s"], 3), "backward_s": round(step["backward_s"], 3),
        "measured_peak_bytes": step["peak_bytes"], "predicted_peak_bytes": predicted["peak_bytes"],
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- SLURM

#: A rule uses a GPU when its command takes the device the job holds (dnd.device: the rule passes
#: `--device {params.device}`, which workflow/rules/common.smk `job_device` makes `cuda` for a job
#: with a GPU): on SLURM exactly those rules, and the rules made from them (`use rule`), get one.
DEVICE_FLAG = "--device {params.device"
#: Rules that run an estimated stage's program without being made from its rule or calling its command.
SAME_PROGRAM = {"fewshot_train": "train_lora"}
#: One MB of a SLURM `mem_mb` as check-profile counts it: 10^6 bytes (SLURM's MB is 2^20, so the check errs
#: on the safe side).
MB = 10**6


def workflow_rules(rules_dir: Path = RULES_DIR) -> dict[str, dict[str, Any]]:
    """Every rule of the rule files, extra experiments included: its own `resources:` (integer values),
    `threads:`, the rule it is made from (`use rule A as B`, whose resources, threads and command it
    inherits unless its `with:` block sets them), the `python -m dnd.cli` command it runs, whether it
    passes the job's device to it (DEVICE_FLAG: the rule can use a GPU) and whether it is a job (a
    `shell:`; aggregate targets such as `all` are not)."""
    raw: dict[str, dict[str, Any]] = {}
    for path in sorted(rules_dir.glob("*.smk")):
        rule, block = None, None
        for line in path.read_text().splitlines():
            if m := re.match(r"(?:rule (\w+)|use rule (\w+) as (\w+))(?: with)?:", line):
                rule = m[1] or m[3]
                raw[rule] = {"resources": {}, "base": m[2], "file": path.name}
                block = None
                continue
            if rule is None or not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            if indent == 0:
                rule = None
            elif indent <= 4:
                block = line.strip().rstrip(":") if line.strip().endswith(":") else None
                if m := re.fullmatch(r"\s+threads: (\d+)", line):
                    raw[rule]["threads"] = int(m[1])
                if block in ("shell", "run", "script"):
                    raw[rule]["job"] = True
            elif block == "resources" and (m := re.fullmatch(r"\s+(\w+)=(\d+),?", line)):
                raw[rule]["resources"][m[1]] = int(m[2])
            if rule is not None and (m := re.search(r"python -m dnd\.cli ([a-z][a-z-]*)", line)):
                raw[rule].setdefault("command", m[1])
            if rule is not None and DEVICE_FLAG in line:
                raw[rule]["device"] = True

    def resolved(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        r = raw[name]
        if r["base"] is None or r["base"] in seen:
            return {"resources": dict(r["resources"]), "threads": r.get("threads"), "job": r.get("job", False),
                    "command": r.get("command"), "device": r.get("device", False), "base": None, "file": r["file"]}
        if r["base"] not in raw:
            raise ValueError(f"{r['file']}: rule {name} is made from an unknown rule {r['base']!r}")
        b = resolved(r["base"], (*seen, name))
        return {"resources": {**b["resources"], **r["resources"]}, "threads": r.get("threads", b["threads"]),
                "job": r.get("job", b["job"]), "command": r.get("command", b["command"]),
                "device": r.get("device", b["device"]), "base": b["base"] or r["base"], "file": r["file"]}

    return {name: resolved(name) for name in raw}


def host_estimates(memory: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Bytes of host memory each estimated stage's job needs, by rule: its memory figure (the device's
    memory on a GPU job, host memory on the CPU: an upper bound of the host's share either way) plus what it
    holds on the host only (the encoded prompts as float16; generator training's sources' conditions).
    A target's generation job holds every design's generator at once (their sum), an adapter's job one
    (the largest)."""
    out: dict[str, int] = {}
    for m in memory:
        host = m["total_bytes"] + m.get("host_conditions_bytes", 0) + m.get("host_outputs_bytes", 0)
        if m["rule"] == "generate_target":
            out["generate_target"] = out.get("generate_target", 0) + host
            out["generate_adapter"] = max(out.get("generate_adapter", 0), host)
        else:
            out[m["rule"]] = max(out.get(m["rule"], 0), host)
    return out


def estimate_source(name: str, rule: Mapping[str, Any], rules: Mapping[str, Mapping[str, Any]],
                    estimated: Iterable[str]) -> str | None:
    """The estimated rule whose figure applies to `name`: itself, the rule it is made from, the estimated
    rule whose `dnd.cli` command it runs, or SAME_PROGRAM's; None for the rest."""
    estimated = list(estimated)
    for cand in (name, rule["base"], SAME_PROGRAM.get(name)):
        if cand in estimated:
            return cand
    return next((e for e in estimated if rule["command"] and rules.get(e, {}).get("command") == rule["command"]),
                None)


def slurm_resources(profile: Path = SLURM_PROFILE, rules_dir: Path = RULES_DIR,
                    estimates: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Each job's expected runtime (minutes), memory (MB), GPUs and threads under the SLURM profile: the
    profile's set-resources over the rule's own (or inherited) resources over the profile's
    default-resources, for every job rule (`use rule` ones included), with the host-memory estimate
    (`estimates`, bytes by rule: host_estimates) that applies to it and whether its program uses a GPU."""
    if not profile.is_file():
        raise FileNotFoundError(f"SLURM profile not found: {profile}")
    prof = yaml.safe_load(profile.read_text()) or {}
    default = prof.get("default-resources") or {}
    sets = prof.get("set-resources") or {}
    threads = prof.get("set-threads") or {}
    rules = workflow_rules(rules_dir)
    jobs = {name: r for name, r in rules.items() if r["job"]}
    if unknown := [r for r in sets if r not in jobs]:
        raise ValueError(f"SLURM profile {profile.name}: set-resources names rules the workflow does not have: "
                         f"{', '.join(unknown)}")
    estimates = estimates or {}
    rows = []
    for name in [*sets, *(r for r in jobs if r not in sets)]:
        r = jobs[name]
        res = {**default, **r["resources"], **sets.get(name, {})}
        source = estimate_source(name, r, rules, estimates)
        rows.append({
            "rule": name, "runtime_min": res.get("runtime"), "mem_mb": res.get("mem_mb"),
            "gpus": int(res.get("gpu", 0)), "threads": threads.get(name, r["threads"]),
            "partition": res.get("slurm_partition"), "from": "profile set-resources" if name in sets else "rule",
            "made_from": r["base"], "uses_gpu": r["device"],
            "estimate_of": source, "estimate_mb": math.ceil(estimates[source] / MB) if source else None,
        })
    shown = str(profile.relative_to(REPO_ROOT)) if profile.is_relative_to(REPO_ROOT) else shown_path(profile)
    return {"profile": shown, "default_resources": default, "rules": rows}


def check_slurm_memory(slurm: Mapping[str, Any], config_path: str | Path) -> None:
    """One error line naming every rule whose `mem_mb` under the profile is below its estimate."""
    short = [x for x in slurm["rules"] if x["estimate_mb"] is not None
             and (x["mem_mb"] is None or x["mem_mb"] < x["estimate_mb"])]
    if short:
        listed = "; ".join(f"{x['rule']} mem_mb {x['mem_mb']} < {x['estimate_mb']}" for x in short)
        raise ValueError(f"SLURM profile {slurm['profile']}: mem_mb below check-profile's host-memory estimate for "
                         f"{shown_path(Path(config_path))} ({listed}); raise them in set-resources")


# ----------------------------------------------------------------------------- the check


def check_profile(config_path: str | Path, depth_reduced_layers: int = 2, reduced_width_divisor: int = 16,
                  reduced_batch: int = 1, reduced_prompts: int | None = None,
                  slurm_profile: Path = SLURM_PROFILE) -> dict[str, Any]:
    """Every check and figure of docs/modules.md for one profile, as a JSON-ready dict."""
    cfg = load_config(config_path)
    base_cfg, base_source = resolve_base_model(cfg)
    started = time.perf_counter()

    check_chunk_width(cfg)  # before any model is built: the project's start-up check names the widths that divide
    pm = meta_causal_lm(base_cfg, torch.float32, cfg["lora"])
    base_report = {
        "name": cfg["base_model"].get("name_or_path") or cfg["base_model"]["source"], "config": base_source,
        "model_type": base_cfg.get("model_type"),
        "parameters": sum(p.numel() for n, p in pm.named_parameters() if ".lora_" not in n),
        **{k: base_cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "num_key_value_heads", "intermediate_size", "vocab_size",
                                        "tie_word_embeddings")},
    }
    layout, tokens, lora_report = check_lora_layout(cfg, pm, seed=cfg["seed"])
    del pm

    enc_cfg, enc_source = encoder_config(cfg, base_cfg)
    enc = cfg["encoder"]
    input_shape = (cfg["generator"]["n_prompts"], 1 if enc["pooling"] == "mean" else enc["max_length"],
                   encoder_dim(enc_cfg))
    output_shape = (layout.n_tokens, *layout.token_shape)
    n_sources = len(next(iter(folds(cfg).values())))

    generators = []
    for gen in generator_settings(cfg["generator"]):
        model = build_meta_generator(gen, input_shape, output_shape, n_sources)
        n = count_parameters(model)
        generators.append({
            "design": gen["design"], "head": gen["head"] if gen["design"] == "hyperconv" else None,
            "kernel": gen["kernel"] if gen["design"] == "hyperconv" else None,
            "input_shape": list(input_shape), "output_shape": list(output_shape), "parameters": n,
            "paper_parameters": PAPER_DECODER_PARAMS, "ratio_to_paper": n / PAPER_DECODER_PARAMS,
            "layers": parameter_rows(model),
        })

    encode = memory_encode(cfg, enc_cfg)
    memory = [memory_train_lora(cfg, base_cfg), *([encode] if encode else [])]
    for gen in generator_settings(cfg["generator"]):
        memory.append(memory_train_generator(gen, input_shape, output_shape, n_sources, cfg["data"]["n_train"]))
    for gen in generator_settings(cfg["generator"]):
        memory.append(memory_generate(gen, input_shape, output_shape, n_sources, encode))
    memory.append(memory_evaluate(cfg, base_cfg))
    traced_s = time.perf_counter() - started
    slurm = slurm_resources(slurm_profile, estimates=host_estimates(memory))
    check_slurm_memory(slurm, config_path)

    designs = generator_settings(cfg["generator"])
    target = next((g for g in designs if g["design"] == "hyperconv"), designs[0])
    reduced = reduced_run(target, input_shape, tokens, n_sources, depth_reduced_layers, reduced_width_divisor,
                          reduced_batch, reduced_prompts, seed=cfg["seed"])

    return {
        "profile": shown_path(config_path), "name": cfg.get("name"),
        "base_model": base_report,
        "encoder": {"config": enc_source, "kind": enc["kind"], "dim": input_shape[2], "max_length": enc["max_length"],
                    "pooling": enc["pooling"], "dtype": enc["dtype"]},
        "lora": lora_report,
        "generators": generators,
        "memory": memory,
        "reduced_run": reduced,
        "slurm": slurm,
        "notes": [
            "Exact: parameter counts, weights, gradients, AdamW states (2 float32 values per trainable parameter), "
            "batch inputs. Traced on fake tensors (real shapes and autograd graph, no data): saved activations and "
            "the forward/backward peak (which includes the gradients as the backward makes them).",
            "Not included: CUDA context (~0.5 GiB), caching-allocator slack, cuDNN/cuBLAS workspaces; in the host "
            "estimates (slurm.rules[].estimate_mb), the Python process itself.",
            f"LLM stages: every sequence lora.max_length tokens (upper bound), {ANSWER_TOKENS} scored tokens per "
            "sequence, fused (flash) attention, CPU bf16 autocast standing in for CUDA's.",
            "The depth-reduced run is real (CPU); its measured peak checks the tracer's prediction on the same step.",
        ],
        "seconds": {"traces": round(traced_s, 1), "total": round(time.perf_counter() - started, 1)},
    }


# ----------------------------------------------------------------------------- output


def _gib(n: int | None) -> str:
    return "" if n is None else f"{n / GIB:.2f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    from tabulate import tabulate

    return tabulate([list(r) for r in rows], headers=list(headers), tablefmt="github", disable_numparse=True)


def render(report: Mapping[str, Any]) -> str:
    """The report as Markdown."""
    b, lo = report["base_model"], report["lora"]
    out = [f"# check-profile: {report['profile']} ({report['name']})", ""]
    out.append(f"Base model {b['name']} ({b['config']}; meta device, nothing downloaded or allocated): "
               f"{b['num_hidden_layers']} layers, hidden {b['hidden_size']}, heads {b['num_attention_heads']} "
               f"(kv {b['num_key_value_heads']}), intermediate {b['intermediate_size']}, vocab {b['vocab_size']}: "
               f"{b['parameters']:,} parameters.")
    dims = ", ".join(f"{m} {i}x{o}" for m, (i, o) in lo["module_in_out"].items())
    out.append(f"LoRA r {lo['rank']} on {len(lo['module_in_out'])} modules ({dims}): {lo['trainable_parameters']:,} "
               f"parameters. Chunk width {lo['chunk_width']} divides every dimension: {lo['n_tokens']} tokens of "
               f"{tuple(lo['token_shape'])}; tokenize -> detokenize max |error| {lo['round_trip_max_abs_error']:.2e} "
               f"(weights up to {lo['round_trip_max_abs_weight']:.2f}).")
    out.append("")
    for g in report["generators"]:
        head = f"{g['design']}" + (f", head {g['head']}, kernel {g['kernel']}" if g["head"] else "")
        paper = f" ({g['ratio_to_paper']:.2f}x the paper's ~1.1B)" if g["design"] == "hyperconv" else ""
        out.append(f"## Generator ({head}): {tuple(g['input_shape'])} -> {tuple(g['output_shape'])}: "
                   f"{g['parameters']:,} parameters{paper}")
        out.append("")
        if g["design"] == "hyperconv":
            out.append(_table(["layer", "in [C, H, W]", "out [C, H, W]", "norm + 1-D convs + bias",
                               "channel conv / head", "total"],
                              [(r["layer"], r["in"], r["out"], f"{r['branches']:,}", f"{r['channel']:,}",
                                f"{r['total']:,}") for r in g["layers"]]))
            out.append("")
    out.append("## GPU memory per stage (GiB)")
    out.append("")
    out.append(_table(["stage", "rule", "weights", "optimizer", "inputs", "saved activations", "peak fwd(+bwd)",
                       "total", "what"],
                      [(m["stage"], m["rule"], _gib(m["weights_bytes"]),
                        _gib(m["optimizer_bytes"]) if m["optimizer_bytes"] else "", _gib(m["inputs_bytes"]),
                        _gib(m["saved_activations_bytes"]), _gib(m["peak_bytes"]),
                        _gib(m["total_bytes"]), m["what"]) for m in report["memory"]]))
    out.append("")
    for m in report["memory"]:
        if m.get("host_conditions_bytes"):
            out.append(f"Host memory of {m['stage']}: the sources' encoded train prompts as float16, memory-mapped "
                       f"(one copy for all processes of the job), at most {m['host_conditions_bytes'] / GIB:.1f} GiB "
                       "(data.n_train per source).")
        if m.get("host_outputs_bytes"):
            out.append(f"Host memory of {m['stage']}: the states of the largest split ({m['host_items']:,} prompts) "
                       f"as float16 (rounded per batch), {m['host_outputs_bytes'] / GIB:.1f} GiB.")
    out.append("")
    out.extend(f"- {n}" for n in report["notes"])
    r = report["reduced_run"]
    out.append("")
    out.append(f"## Depth-reduced run (CPU, {r['threads']} threads)")
    out.append("")
    out.append(f"{r['design']} decoder, {r['layers']} layers (stages {r['stages']}, kernel {r['kernel']}, "
               f"head {r['head']}), "
               f"{tuple(r['input_shape'])} -> {tuple(r['output_shape'])}, batch {r['batch']}, {r['parameters']:,} "
               f"parameters: loss {r['loss']:.4g}, gradient norm {r['grad_norm']:.3g}, "
               f"{r['parameters_with_gradient']}/{r['parameter_tensors']} parameter tensors with a non-zero gradient "
               f"(required: {r['must_have_gradient']}); "
               f"forward {r['forward_s']:.2f} s, backward {r['backward_s']:.2f} s; peak "
               f"{r['measured_peak_bytes'] / GIB:.3f} GiB measured, {r['predicted_peak_bytes'] / GIB:.3f} GiB "
               "predicted by the fake-tensor trace.")
    s = report["slurm"]
    out.append("")
    out.append(f"## SLURM ({s['profile']})")
    out.append("")
    out.append("Host memory needed (MB): the stage's figure above plus what it holds on the host only; a rule "
               "made from an estimated one (`use rule`) or running its program has its figure.")
    out.append("")
    out.append(_table(["rule", "runtime", "mem (MB)", "needed (MB)", "GPUs", "threads", "partition", "from"],
                      [(x["rule"], _minutes(x["runtime_min"]), x["mem_mb"],
                        f"{x['estimate_mb']} ({x['estimate_of']})" if x["estimate_mb"] else "", x["gpus"],
                        x["threads"] or "", x["partition"] or "",
                        x["from"] + (f", use rule {x['made_from']}" if x["made_from"] else ""))
                       for x in s["rules"]]))
    return "\n".join(out) + "\n"


def _minutes(m: int | None) -> str:
    if m is None:
        return ""
    return f"{m} min" if m < 60 else f"{m} min ({m / 60:g} h)"


# ----------------------------------------------------------------------------- command


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="profile to check, e.g. config/paper.yaml")
    p.add_argument("--out", default=None,
                   help="JSON report (default results/check_profile_<config file stem>.json)")
    p.add_argument("--depth-reduced-layers", type=int, default=2,
                   help="layers of the depth-reduced decoder run on the CPU (its first stages and the head)")
    p.add_argument("--reduced-width-divisor", type=int, default=16,
                   help="the depth-reduced decoder's hidden channels are the profile's divided by this")
    p.add_argument("--reduced-batch", type=int, default=1, help="batch of the depth-reduced run")
    p.add_argument("--reduced-prompts", type=int, default=None,
                   help="prompts N of the depth-reduced run's condition (default: the profile's)")
    p.add_argument("--slurm-profile", default=str(SLURM_PROFILE),
                   help="the Snakemake SLURM profile whose resources are checked (default workflow/profiles/slurm/"
                        "profile.yaml)")


def _run(args: argparse.Namespace) -> None:

    if args.reduced_width_divisor < 1 or args.reduced_batch < 1 or (args.reduced_prompts is not None
                                                                    and args.reduced_prompts < 1):
        raise ValueError("--reduced-width-divisor, --reduced-batch and --reduced-prompts must be positive")
    report = check_profile(args.config, args.depth_reduced_layers, args.reduced_width_divisor, args.reduced_batch,
                           args.reduced_prompts, Path(args.slurm_profile))
    out = Path(args.out) if args.out else REPO_ROOT / "results" / f"check_profile_{Path(args.config).stem}.json"
    write_json(out, report)
    print(render(report), end="")
    log.info("check-profile %s: report -> %s", args.config, out)


COMMANDS = {"check-profile": (_add, _run)}
