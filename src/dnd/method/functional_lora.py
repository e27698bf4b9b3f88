"""A generated LoRA applied to the frozen base model, differentiably (function-space training,
`generator.objective: sft | both`; docs/modules.md).

The base model is wrapped once in a PEFT LoRA model of the `lora` config (dnd.zoo.make_lora_config:
the zoo's own adapter, so scaling, targets and forward are PEFT's). Its weights, LoRA included,
are frozen; a forward with a generated LoRA goes through `torch.func.functional_call`, which
substitutes the generated A and B (tensors of the generator's graph) for the LoRA parameters
during that call only: no weight is copied or merged, and the gradient of the loss reaches the
generator through A and B. The model runs in eval mode (no LoRA dropout), so the loss is a
deterministic function of the LoRA.

The loss is the zoo trainer's: training items rendered with the project's prompt template and
tokenized by dnd.zoo.encode_examples, packed into rows (dnd.zoo.pack), mean cross-entropy over
the answer tokens (dnd.zoo.answer_loss), with the zoo's attention implementation and its bf16
autocast setting (`lora.bf16_autocast`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from dnd.method.tokenization import LoraLayout

#: Adapter options this module does not reproduce (the generated adapter must be plain LoRA).
UNSUPPORTED = ("use_rslora", "use_dora")


def peft_parameter_name(key: str) -> str:
    """Saved PEFT key (`...q_proj.lora_A.weight`) -> the parameter name in a PeftModel with the
    default adapter (`...q_proj.lora_A.default.weight`)."""
    for ab in ("lora_A", "lora_B"):
        suffix = f".{ab}.weight"
        if key.endswith(suffix):
            return key[: -len(suffix)] + f".{ab}.default.weight"
    raise ValueError(f"not a LoRA weight key: {key!r}")


class _AnswerLoss(nn.Module):
    """dnd.zoo.answer_loss of `peft_model` as a module forward (functional_call calls forward)."""

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        self.pm = peft_model

    def forward(self, ids: Tensor, mask: Tensor, target: Tensor, position_ids: Tensor) -> Tensor:
        from dnd.zoo import answer_loss

        return answer_loss(self.pm, ids, mask, target, position_ids)


class FunctionalLora:
    """The frozen base model of `base_dir` with a LoRA slot for generated weights.

    Args:
        base_dir: base model directory (config, weights, tokenizer).
        lora: the `lora` config section (r, alpha, target_modules, max_length, bf16_autocast; missing
            keys take the schema defaults).
        layout: the LoRA layout of the generator's tokens; every key must name a LoRA parameter
            of the wrapped model, with its shape.
        fmt: prompt format (`prompt.format`) of the training items.
        adapter_config: optional adapter_config.json dict of the zoo's template adapter; a LoRA
            variant this module does not reproduce (rsLoRA, DoRA) is refused.
    """

    def __init__(self, base_dir: str | Path, lora: Mapping[str, Any], layout: LoraLayout, fmt: str,
                 adapter_config: Mapping[str, Any] | None = None, device: Any = "cpu"):
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from dnd.config import section
        from dnd.zoo import TRAIN_ATTENTION, make_lora_config

        lora = section("lora", dict(lora))  # a partial section takes the schema defaults
        bad = [k for k in UNSUPPORTED if (adapter_config or {}).get(k)]
        if bad:
            raise ValueError(f"function-space training applies plain LoRA; the template adapter sets {bad}")
        self.layout, self.fmt = layout, fmt
        self.device = torch.device(device)  # the base model and its batches (the generated LoRAs come from there)
        self.max_length = int(lora["max_length"])
        self.bf16 = bool(lora.get("bf16_autocast", True))
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32,
                                                     attn_implementation=TRAIN_ATTENTION)
        model.config.use_cache = False
        self.peft_model = get_peft_model(model, make_lora_config(lora, str(base_dir))).to(self.device)
        self.peft_model.eval().requires_grad_(False)
        self.module = _AnswerLoss(self.peft_model)
        params = dict(self.module.named_parameters())
        self.names = {}
        for key, shape in zip(layout.keys, layout.shapes):
            name = "pm." + peft_parameter_name(key)
            if name not in params:
                raise ValueError(f"LoRA key {key} has no parameter in the base model's LoRA ({name[3:]})")
            if tuple(params[name].shape) != shape:
                raise ValueError(f"{key}: layout shape {shape}, base model's LoRA {tuple(params[name].shape)}")
            self.names[key] = name
        n_lora = sum(1 for n in params if ".lora_" in n)
        if n_lora != len(self.names):
            raise ValueError(f"the lora config gives {n_lora} LoRA matrices, the generator's layout {len(self.names)}")

    def encode(self, items: Sequence[dict]) -> list[tuple[list[int], int]]:
        """Training items -> (token ids, first answer token) each, as the zoo trainer encodes them."""
        from dnd.zoo import encode_examples

        return encode_examples(list(items), self.tokenizer, self.fmt, self.max_length)

    def loss(self, lora: Mapping[str, Tensor], examples: Sequence[tuple[list[int], int]]) -> Tensor:
        """Mean answer-token cross-entropy of `examples` under the base model + `lora` ({key:
        (r, in) A / (out, r) B}), differentiable in the LoRA tensors."""
        from dnd.zoo import pack

        ids, mask, position_ids, target = (t.to(self.device) for t in pack(list(examples), self.pad_id))
        params = {self.names[k]: v for k, v in lora.items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return torch.func.functional_call(self.module, params, (ids, mask, target, position_ids), strict=False)

    def batch_loss(self, loras: Mapping[str, Tensor], examples: Sequence[Sequence[tuple[list[int], int]]]) -> Tensor:
        """Mean over a batch of LoRAs ({key: (B, *shape)}) of `loss(lora_b, examples[b])`."""
        n = len(examples)
        losses = [self.loss({k: v[b] for k, v in loras.items()}, examples[b]) for b in range(n)]
        return torch.stack(losses).mean()

    def logits(self, lora: Mapping[str, Tensor], ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits of the base model + `lora` on `ids` (fp32, no autocast): for checks."""
        params = {self.names[k][len("pm."):]: v for k, v in lora.items()}
        return torch.func.functional_call(self.peft_model, params, (ids,), {"attention_mask": attention_mask},
                                          strict=False).logits

