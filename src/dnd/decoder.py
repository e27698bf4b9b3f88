"""Hyper-convolutional parameter decoder (method reference section 2.5).

A stage tensor has shape (B, C, H, W). At the input C is the prompt index, H the token
position and W the encoder feature (N, L, D); at the output C is the parameter-token index
and (H, W) a token (T, r+2, w+2). The decoder is a chain of `HyperConvLayer`s through the
hidden stage shapes of `generator.stages`.

This module holds the model only: its training criterion is in dnd.generators, its checkpoint
format in dnd.generator_checkpoint.
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
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        stages: Sequence[Sequence[int]],
        output_shape: Sequence[int],
        kernel: int,
        output_offset: bool = False,
    ):
        super().__init__()
        shapes = [tuple(int(v) for v in s) for s in [input_shape, *stages, output_shape]]
        for s in shapes:
            if len(s) != 3 or min(s) < 1:
                raise ValueError(f"stage shapes must be three positive integers [C, H, W], got {list(s)}")
        self.shapes: list[Shape3] = shapes  # type: ignore[assignment]
        self.kernel = int(kernel)
        self.layers = nn.ModuleList(HyperConvLayer(a, b, self.kernel) for a, b in zip(shapes[:-1], shapes[1:]))
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
        }

    def forward(self, condition: Tensor) -> Tensor:
        """condition: (B, N, L, D) float -> tokens (B, T, r+2, w+2)."""
        if tuple(condition.shape[1:]) != self.input_shape:
            raise ValueError(f"condition has shape {tuple(condition.shape)}, decoder expects (B, *{self.input_shape})")
        x = condition
        for layer in self.layers:
            x = layer(x)
        return x + self.output_offset if self.has_offset else x


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
