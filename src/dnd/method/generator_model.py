"""Hyper-convolutional parameter decoder (method reference section 2.5).

A stage tensor has shape (B, C, H, W). At the input C is the prompt index, H the token
position and W the encoder feature (N, L, D); at the output C is the parameter-token index
and (H, W) a token (T, r+2, w+2). The decoder is a chain of `HyperConvLayer`s through the
hidden stage shapes of `generator.stages`.

Two heads for the last layer (`generator.head`):
  conv   the paper's: a k x k convolution from the last hidden channels to the T token channels
         over one shared (H, W) plane; every token then reads the same C*k*k-dimensional
         neighbourhood, so the prompt-dependent part of all T tokens lives in one small subspace
         (at C = 16, k = 3: 144 weights per token), too small to reproduce six different LoRAs.
  local  a position-wise mixing: out[t, h, w] = sum_c U[t, c, h, w] * z[c, h, w] + b[t, h, w]
         (a locally connected 1 x 1 layer): each token entry gets its own C weights, so C >= the
         number of training datasets can fit each of them exactly. T*C*H*W weights (49M for
         SmolLM2 at C = 16), but one batched matrix product: far cheaper than the 3 x 3
         convolution to T channels.
`output_init: zero` starts the last layer at zero, so the untrained decoder outputs exactly its
offset (the mean training token) and no initial noise has to be unlearned.

`SourceBasisGenerator` is the design beyond the paper (`generator.design: basis`): a
permutation-invariant pooled condition and a softmax over the training datasets' mean tokens.
The Text-to-LoRA-style hypernetwork (`generator.design: t2l`) lives in dnd.method.t2l;
`build_decoder` builds every design from a checkpoint.

This module holds the models only: their training criterion is in dnd.generators, their
checkpoint format in dnd.method.generator_checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Shape3 = tuple[int, int, int]


def _conv_along_h(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """Apply a Conv1d that takes W as channels and slides along H to x (BC, H, W) -> (BC, H, W_o).

    The transposed view (BC, W, 1, H) of a contiguous x is a channels-last 2-D image, which
    oneDNN convolves without copying; the result comes back contiguous as (BC, H, W_o). This
    is several times faster than transposing to (BC, W, H) for a plain conv1d.
    """
    out = F.conv2d(x.transpose(1, 2).unsqueeze(2), conv.weight.unsqueeze(2), conv.bias, padding="same")
    return out.squeeze(2).transpose(1, 2)


class HyperConvLayer(nn.Module):
    """One layer (C_i, H_i, W_i) -> (C_o, H_o, W_o) with kernel k.

    y = LayerNorm_{H_i, W_i}(x)
    width_first  = conv_H(conv_W(y))            W_i -> W_o (W as channels, sliding along H),
                                                then H_i -> H_o (H as channels, along W)
    height_first = tanh(conv_W'(conv_H'(y)))    H_i -> H_o first, then W_i -> W_o
    z = (width_first + height_first + bias[H_o, W_o]) / 3
    out = conv2d_{C_i -> C_o}(z)  (C as channels over the H_o x W_o plane, 'same' padding)
    out += x when (C_i, H_i, W_i) == (C_o, H_o, W_o)

    The four 1-D convolutions act on every (b, c) slice independently, so they run as one
    convolution over a batch of B * C_i slices, all in the (H, W) memory layout (no transposes).
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], kernel: int):
        super().__init__()
        ci, hi, wi = (int(v) for v in in_shape)
        co, ho, wo = (int(v) for v in out_shape)
        self.in_shape: Shape3 = (ci, hi, wi)
        self.out_shape: Shape3 = (co, ho, wo)
        self.residual = self.in_shape == self.out_shape
        self.norm = nn.LayerNorm([hi, wi])
        self.wf_w = nn.Conv1d(wi, wo, kernel, padding="same")  # width-first: W_i -> W_o along H_i
        self.wf_h = nn.Conv1d(hi, ho, kernel, padding="same")  # then H_i -> H_o along W_o
        self.hf_h = nn.Conv1d(hi, ho, kernel, padding="same")  # height-first: H_i -> H_o along W_i
        self.hf_w = nn.Conv1d(wi, wo, kernel, padding="same")  # then W_i -> W_o along H_o
        self.bias = nn.Parameter(torch.zeros(ho, wo))
        self.channel = nn.Conv2d(ci, co, kernel, padding="same")

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_i, H_i, W_i) -> (B, C_o, H_o, W_o)."""
        b = x.shape[0]
        ci, hi, wi = self.in_shape
        _, ho, wo = self.out_shape
        y = self.norm(x).reshape(b * ci, hi, wi)  # (BC, H_i, W_i)
        wf = self.wf_h(_conv_along_h(self.wf_w, y))  # (BC, H_i, W_o) -> (BC, H_o, W_o)
        hf = _conv_along_h(self.hf_w, self.hf_h(y))  # (BC, H_o, W_i) -> (BC, H_o, W_o)
        z = (wf + torch.tanh(hf) + self.bias) / 3.0
        out = self.channel(z.reshape(b, ci, ho, wo))  # (B, C_o, H_o, W_o)
        return out + x if self.residual else out


class LocalMix(nn.Module):
    """(B, C, H, W) -> (B, T, H, W): out[b, t, h, w] = sum_c weight[h*W + w, c, t] * z[b, c, h, w]
    + bias[t, h, w], one (C, T) matrix per position, applied as one batched matrix product."""

    def __init__(self, channels: int, tokens: int, height: int, width: int):
        super().__init__()
        self.shape = (int(channels), int(tokens), int(height), int(width))
        positions = int(height) * int(width)
        self.weight = nn.Parameter(torch.empty(positions, int(channels), int(tokens)))
        self.bias = nn.Parameter(torch.zeros(int(tokens), int(height), int(width)))
        nn.init.normal_(self.weight, std=channels**-0.5)

    def forward(self, z: Tensor) -> Tensor:
        b = z.shape[0]
        c, t, h, w = self.shape
        zp = z.reshape(b, c, h * w).permute(2, 0, 1)  # (P, B, C)
        out = torch.bmm(zp, self.weight)  # (P, B, T)
        return out.permute(1, 2, 0).reshape(b, t, h, w) + self.bias


class HyperConvDecoder(nn.Module):
    """Condition (B, N, L, D) -> parameter tokens (B, T, r+2, w+2).

    Args:
        input_shape: (N, L, D): prompts, tokens per prompt, encoder width.
        stages: hidden stage shapes [C, H, W], in order.
        output_shape: (T, r+2, w+2).
        kernel: convolution kernel size k of every layer.
        output_offset: add a fixed (T, r+2, w+2) buffer `output_offset` to the output
            (`generator.output_offset: mean`; set by training, saved in the state dict).
            False (default) is the paper's decoder.
        head: "conv" (paper) or "local" for the last layer (see the module doc).
        zero_init_output: start the last layer's weights and bias at zero.
    """

    design = "hyperconv"

    def __init__(
        self,
        input_shape: Sequence[int],
        stages: Sequence[Sequence[int]],
        output_shape: Sequence[int],
        kernel: int,
        output_offset: bool = False,
        head: str = "conv",
        zero_init_output: bool = False,
    ):
        super().__init__()
        shapes = [tuple(int(v) for v in s) for s in [input_shape, *stages, output_shape]]
        for s in shapes:
            if len(s) != 3 or min(s) < 1:
                raise ValueError(f"stage shapes must be three positive integers [C, H, W], got {list(s)}")
        self.shapes: list[Shape3] = shapes  # type: ignore[assignment]
        self.kernel = int(kernel)
        if head not in ("conv", "local"):
            raise ValueError(f"head must be 'conv' or 'local', got {head!r}")
        self.head, self.zero_init_output = head, bool(zero_init_output)
        self.layers = nn.ModuleList(HyperConvLayer(a, b, self.kernel) for a, b in zip(shapes[:-1], shapes[1:]))
        last = self.layers[-1]
        if head == "local":
            c_in, (c_out, h_out, w_out) = last.in_shape[0], last.out_shape
            last.channel = LocalMix(c_in, c_out, h_out, w_out)
        if self.zero_init_output:
            nn.init.zeros_(last.channel.weight)
            nn.init.zeros_(last.channel.bias)
        self.has_offset = bool(output_offset)
        if self.has_offset:
            self.register_buffer("output_offset", torch.zeros(shapes[-1]))

    @property
    def input_shape(self) -> Shape3:
        return self.shapes[0]

    @property
    def output_shape(self) -> Shape3:
        return self.shapes[-1]

    def hparams(self) -> dict:
        """Constructor arguments (stored in generator checkpoints)."""
        return {
            "input_shape": list(self.shapes[0]),
            "stages": [list(s) for s in self.shapes[1:-1]],
            "output_shape": list(self.shapes[-1]),
            "kernel": self.kernel,
            "output_offset": self.has_offset,
            "head": self.head,
            "zero_init_output": self.zero_init_output,
        }

    def forward(self, condition: Tensor) -> Tensor:
        """condition: (B, N, L, D) float -> tokens (B, T, r+2, w+2)."""
        if tuple(condition.shape[1:]) != self.input_shape:
            raise ValueError(f"condition has shape {tuple(condition.shape)}, decoder expects (B, *{self.input_shape})")
        x = condition
        for layer in self.layers:
            x = layer(x)
        return x + self.output_offset if self.has_offset else x


def pooled_condition(condition: Tensor) -> Tensor:
    """(B, N, L, D) -> (B, D): each prompt's mean over its real tokens (the encoder zeroes
    padding), then the mean over prompts: invariant to the order of the N prompts."""
    real = (condition != 0).any(dim=-1, keepdim=True).to(condition.dtype)  # (B, N, L, 1)
    per_prompt = (condition * real).sum(dim=2) / real.sum(dim=2).clamp(min=1.0)  # (B, N, D)
    return per_prompt.mean(dim=1)


class SourceBasisGenerator(nn.Module):
    """Condition (B, N, L, D) -> tokens (B, T, r+2, w+2) as a convex combination of the training
    datasets' mean tokens (`generator.design: basis`, beyond the paper).

    p = softmax(MLP(pooled_condition(condition))) over the S training datasets;
    tokens = sum_s p_s * basis[s]   (basis: (S, T, r+2, w+2), each dataset's mean checkpoint token,
                                     set by training and saved in the state dict)

    Exact on the training datasets by construction (a one-hot p gives a dataset's mean LoRA), never
    outside their convex hull, and independent of the order of the prompts. The last linear layer
    starts at zero: the untrained generator outputs the mean of the datasets (the soup in token space).
    """

    design = "basis"

    def __init__(self, input_shape: Sequence[int], n_sources: int, output_shape: Sequence[int], hidden: int = 256):
        super().__init__()
        self.input_shape: Shape3 = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
        self.output_shape: Shape3 = tuple(int(v) for v in output_shape)  # type: ignore[assignment]
        self.n_sources, self.hidden = int(n_sources), int(hidden)
        if len(self.input_shape) != 3 or len(self.output_shape) != 3 or self.n_sources < 1:
            raise ValueError(f"bad shapes {input_shape} -> {output_shape} or n_sources {n_sources}")
        dim = self.input_shape[2]
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, self.hidden), nn.GELU(),
                                 nn.Linear(self.hidden, self.n_sources))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.register_buffer("basis", torch.zeros(self.n_sources, *self.output_shape))

    def hparams(self) -> dict:
        """Constructor arguments (stored in generator checkpoints, with the design)."""
        return {"input_shape": list(self.input_shape), "n_sources": self.n_sources,
                "output_shape": list(self.output_shape), "hidden": self.hidden}

    def coefficients(self, condition: Tensor) -> Tensor:
        """(B, N, L, D) -> (B, S): the weight of each training dataset."""
        if tuple(condition.shape[1:]) != self.input_shape:
            raise ValueError(f"condition has shape {tuple(condition.shape)}, generator expects (B, "
                             f"*{self.input_shape})")
        return torch.softmax(self.mlp(pooled_condition(condition)), dim=-1)

    def forward(self, condition: Tensor) -> Tensor:
        p = self.coefficients(condition)
        return torch.tensordot(p, self.basis, dims=([1], [0]))


def build_decoder(hparams: dict) -> nn.Module:
    """The generator model of a checkpoint's `decoder` entry: {"design": ..., **hparams} (design
    hyperconv when absent: checkpoints written before there were designs)."""
    kw = dict(hparams)
    design = kw.pop("design", "hyperconv")
    if design == "hyperconv":
        return HyperConvDecoder(**kw)
    if design == "basis":
        return SourceBasisGenerator(**kw)
    if design == "t2l":
        from dnd.method.t2l import T2LHypernetwork

        return T2LHypernetwork(**kw)
    raise ValueError(f"unknown generator design {design!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
