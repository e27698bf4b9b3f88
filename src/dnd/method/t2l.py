"""A Text-to-LoRA-style hypernetwork (`generator.design: t2l`; after Charakorn et al., 2025,
"Text-to-LoRA: instant transformer adaption"), a generator family beside the paper's decoder.

    c      = Linear(LayerNorm(pooled condition))            (B, E): the mean of the encoded prompts
    h[l,m] = MLP([c, layer_emb[l], module_emb[m]])          (B, H): one shared trunk for every module
    A, B   = head_m(h[l,m]) + offset[l,m]                   (r x in, out x r) of module m in layer l

One linear head per module type (q, k, v, o, up, gate, down: their in/out sizes differ), shared by
all layers; `offset` is a fixed buffer, the mean LoRA of the training checkpoints with
`generator.output_offset: mean` (zero otherwise), so with zero-initialized heads
(`output_init: zero`) the untrained hypernetwork outputs the mean source LoRA; `output_init:
default` draws the head weights from N(0, 1e-3^2) (biases zero), a LoRA close to the offset.

`lora(condition)` gives the matrices ({key: (B, *shape)}, PEFT keys of the layout: what
function-space training applies); `forward(condition)` gives them as parameter tokens (B, T, r+2,
w+2) through the differentiable tokenizer (dnd.method.tokenization.tokenize_batch), so the
checkpoint, generation (dnd.generate: detokenize) and the reconstruction criterion are those
of every other design.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from dnd.method.generator_model import pooled_condition
from dnd.method.tokenization import LoraLayout, _sort_key, tokenize_batch

#: Std of the head weights with `output_init: default`.
HEAD_INIT_STD = 1e-3


def _modules(layout: LoraLayout) -> list[tuple[int, str, str, str]]:
    """(layer, module type, A key, B key) of each LoRA module, in layout order."""
    out = []
    for a_key, b_key in zip(layout.keys[0::2], layout.keys[1::2]):
        layer, _, prefix, ab = _sort_key(a_key)
        if ab != 0 or _sort_key(b_key)[2] != prefix:
            raise ValueError(f"layout keys {a_key}, {b_key} are not one module's A and B")
        out.append((layer, prefix.rsplit(".", 1)[-1], a_key, b_key))
    return out


class T2LHypernetwork(nn.Module):
    """Condition (B, N, L, D) -> parameter tokens (B, T, r+2, w+2), via LoRA matrices.

    Args:
        input_shape: (N, L, D) of the condition.
        layout: the LoRA layout (dnd.method.tokenization.LoraLayout.to_dict()) to produce.
        hidden: H, width of the shared trunk.
        embed: E, width of the condition, layer and module-type embeddings.
        zero_init_output: zero head weights (the untrained model outputs the offset).
    """

    design = "t2l"

    def __init__(self, input_shape: Sequence[int], layout: Mapping[str, Any], hidden: int = 256, embed: int = 64,
                 zero_init_output: bool = False):
        super().__init__()
        self.input_shape = tuple(int(v) for v in input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input shape must be (N, L, D), got {list(input_shape)}")
        self.layout_dict = LoraLayout.from_dict(layout).to_dict()
        self.layout = LoraLayout.from_dict(self.layout_dict)
        self.hidden, self.embed, self.zero_init_output = int(hidden), int(embed), bool(zero_init_output)
        self.output_shape = (self.layout.n_tokens, *self.layout.token_shape)
        modules = _modules(self.layout)
        shapes = dict(zip(self.layout.keys, self.layout.shapes))
        layers = sorted({m[0] for m in modules})
        types = list(dict.fromkeys(m[1] for m in modules))
        # per module type: its (layer index, A key, B key) in layout order, and the A, B shapes
        self.groups: list[list[tuple[int, str, str]]] = [
            [(layers.index(lay), a, b) for lay, t, a, b in modules if t == name] for name in types]
        self.group_shapes = []
        for g in self.groups:
            found = {(shapes[a], shapes[b]) for _, a, b in g}
            if len(found) != 1:
                raise ValueError(f"modules of one type must share their shapes, found {sorted(found)}")
            self.group_shapes.append(found.pop())
        dim = self.input_shape[2]
        self.condition = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, self.embed))
        self.layer_embedding = nn.Embedding(len(layers), self.embed)
        self.module_embedding = nn.Embedding(len(types), self.embed)
        self.trunk = nn.Sequential(nn.Linear(3 * self.embed, self.hidden), nn.SiLU(),
                                   nn.Linear(self.hidden, self.hidden), nn.SiLU())
        self.heads = nn.ModuleList()
        for i, (g, (sa, sb)) in enumerate(zip(self.groups, self.group_shapes)):
            head = nn.Linear(self.hidden, sa[0] * sa[1] + sb[0] * sb[1])
            nn.init.zeros_(head.bias)
            if self.zero_init_output:
                nn.init.zeros_(head.weight)
            else:
                nn.init.normal_(head.weight, std=HEAD_INIT_STD)
            self.heads.append(head)
            self.register_buffer(f"offset_{i}", torch.zeros(len(g), head.out_features))
            self.register_buffer(f"layers_{i}", torch.tensor([lay for lay, _, _ in g]), persistent=False)
            self.register_buffer(f"type_{i}", torch.full((len(g),), i), persistent=False)

    def hparams(self) -> dict:
        """Constructor arguments (stored in generator checkpoints, with the design)."""
        return {"input_shape": list(self.input_shape), "layout": self.layout_dict, "hidden": self.hidden,
                "embed": self.embed, "zero_init_output": self.zero_init_output}

    @torch.no_grad()
    def set_offset(self, lora: Mapping[str, Tensor]) -> None:
        """Set the fixed offset to the LoRA `lora` ({key: matrix}, e.g. the mean source LoRA)."""
        for i, g in enumerate(self.groups):
            rows = [torch.cat([lora[a].reshape(-1), lora[b].reshape(-1)]) for _, a, b in g]
            getattr(self, f"offset_{i}").copy_(torch.stack(rows))

    def lora(self, condition: Tensor) -> dict[str, Tensor]:
        """(B, N, L, D) -> {PEFT key: (B, *shape)} float32, the layout's LoRA matrices in layout order."""
        if tuple(condition.shape[1:]) != self.input_shape:
            raise ValueError(f"condition has shape {tuple(condition.shape)}, generator expects (B, "
                             f"*{self.input_shape})")
        c = self.condition(pooled_condition(condition.float()))  # (B, E)
        out: dict[str, Tensor] = {}
        for i, (g, head, (sa, sb)) in enumerate(zip(self.groups, self.heads, self.group_shapes)):
            emb = torch.cat([self.layer_embedding(getattr(self, f"layers_{i}")),
                             self.module_embedding(getattr(self, f"type_{i}"))], dim=-1)  # (n, 2E)
            x = torch.cat([c[:, None].expand(-1, len(g), -1), emb[None].expand(c.shape[0], -1, -1)], dim=-1)
            flat = head(self.trunk(x)) + getattr(self, f"offset_{i}")  # (B, n, r*in + out*r)
            a_part, b_part = flat.split([sa[0] * sa[1], sb[0] * sb[1]], dim=-1)
            for j, (_, a_key, b_key) in enumerate(g):
                out[a_key] = a_part[:, j].reshape(-1, *sa)
                out[b_key] = b_part[:, j].reshape(-1, *sb)
        return {k: out[k] for k in self.layout.keys}

    def forward(self, condition: Tensor) -> Tensor:
        """condition: (B, N, L, D) -> tokens (B, T, r+2, w+2)."""
        return tokenize_batch(self.lora(condition), self.layout)
