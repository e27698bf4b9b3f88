"""What a step derives from (seed, step) alone: seeds, epoch orders, prompt draws and the
learning rate. Training and generation keep no RNG state besides these functions, so a
resumed run continues exactly as an uninterrupted one would, and every generated adapter is
reproducible from its seed.

  derive_seed      stable 63-bit seeds from any printable parts
  adapter_seed     the prompt-draw seed of generated adapter {kind}_{i} (the workflow's rule)
  draw_indices     N prompts from a pool: distinct when possible, else with replacement
  EpochOrder       global visit position -> item, one seeded permutation per epoch
  warmup_cosine    linear warmup, then cosine decay to a floor

Only the standard library is imported at module level (torch lazily), so the workflow can
import `adapter_seed` while it parses.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Generator designs (`generator.design`, `generator.variants`): the paper's hyper-convolutional
#: decoder and the source-basis generator (dnd.method.generator_model).
GENERATOR_DESIGNS = ("hyperconv", "basis")
#: Kinds of generated adapters and the offset of each one's prompt-draw seeds (adapter_seed):
#: the default generator (dnd), a variant design side by side (dnd_<design>: the same prompt
#: draws as dnd, so the designs are compared on identical conditions) and the controls.
ADAPTER_KINDS = {
    "dnd": 0,
    **{f"dnd_{design}": 0 for design in GENERATOR_DESIGNS},
    "control_other": 100,
    "control_random": 200,
    "control_shuffled": 300,
}


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts (stable across processes and platforms)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def adapter_seed(seed: int, kind: str, i: int) -> int:
    """The `dnd generate --seed` of adapter `{kind}_{i}` of a run with config seed `seed`:
    seed * 1000 + the kind's offset (ADAPTER_KINDS: dnd and dnd_<design> 0, control_other 100,
    control_random 200, control_shuffled 300) + i, so the draws of different adapters and
    controls never share a seed (for i < 100), while every design sees the same draws."""
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}; expected one of {list(ADAPTER_KINDS)}")
    return int(seed) * 1000 + ADAPTER_KINDS[kind] + int(i)


def draw_indices(pool_size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """n indices into a pool: distinct when pool_size >= n, otherwise drawn with replacement."""
    import torch

    if pool_size < 1:
        raise ValueError("cannot draw prompts from an empty pool")
    if pool_size >= n:
        return torch.randperm(pool_size, generator=generator)[:n]
    return torch.randint(pool_size, (n,), generator=generator)


def _python_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """random.Random(f"{seed}-epoch{epoch}").shuffle of range(n) (the LoRA zoo's order)."""
    perm = list(range(n))
    random.Random(f"{seed}-epoch{epoch}").shuffle(perm)
    return perm


def _torch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """torch.randperm(n) seeded by derive_seed(seed, "epoch", epoch) (the generator trainer's order)."""
    import torch

    g = torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch))
    return torch.randperm(n, generator=g).tolist()


_PERMUTATIONS = {"python": _python_permutation, "torch": _torch_permutation}


class EpochOrder:
    """Items visited in epochs: epoch e is a permutation of range(n) seeded by (seed, e), and
    global visit position p is item perm_{p // n}[p % n]. Stateless given the position (the
    current epoch's permutation is only cached), so any step's batch can be recomputed after a
    restart.

    Args:
        n: number of items.
        seed: seed of the run.
        rng: how a permutation is drawn. "python": random.Random(f"{seed}-epoch{e}").shuffle
            (train-lora); "torch": torch.randperm with a generator seeded by
            derive_seed(seed, "epoch", e) (train-generator). They give different orders; each
            command keeps its own so that existing runs reproduce bit for bit.
    """

    def __init__(self, n: int, seed: int, rng: str):
        if n < 1:
            raise ValueError("an epoch order needs at least one item")
        if rng not in _PERMUTATIONS:
            raise ValueError(f"unknown rng {rng!r}; expected one of {list(_PERMUTATIONS)}")
        self.n, self.seed, self._permutation = n, seed, _PERMUTATIONS[rng]
        self._epoch, self._perm = -1, []

    def __getitem__(self, position: int) -> int:
        """The item at global visit `position`."""
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self._permutation(self.n, self.seed, epoch)
        return self._perm[offset]

    def batch(self, step: int, batch_size: int) -> list[int]:
        """The items of step `step`: positions step * batch_size ... + batch_size - 1 (a batch
        may run across an epoch boundary)."""
        return [self[p] for p in range(step * batch_size, (step + 1) * batch_size)]


def warmup_cosine(step: int, warmup: int, total: int, peak: float = 1.0, min_ratio: float = 0.0) -> float:
    """Learning rate of (0-based) `step`: linear warmup to `peak` over `warmup` steps, then cosine
    decay to min_ratio * peak at `total` (and flat after it).

    train-lora calls it with its base lr as `peak` and `lora.min_lr_ratio`; train-generator uses
    the defaults as a LambdaLR factor (decay to 0). The expression is the same for both, with
    `peak` applied as before: peak * (step + 1) / warmup in the warmup, peak * (...) after it,
    which keeps every logged and applied lr bit-identical to the former two functions.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# the adapter kinds `dnd generate` writes and `dnd evaluate` scores, in order (the method names of their rows)
GENERATED_KINDS = tuple(ADAPTER_KINDS)
