"""Generation (method reference section 2.8): prompts -> a PEFT LoRA adapter in one forward
pass of a trained generator, plus the efficiency table.

Commands:
  generate     dnd generate --generator CKPT --prompts FILE|random:<n> --out DIR
               [--n-prompts N] [--seed S] [--timing JSON] [--force]
               (threads: the CLI's --threads, else torch's default)
  efficiency   dnd efficiency --timings results/timings/generate/{target}/{adapter}.json ...
               --out results/efficiency.csv

`--out DIR` holds only the adapter (adapter_config.json, adapter_model.safetensors and the
marker dnd_generated.json), so its content is the same on every run; the timings go to
`--timing`. DIR is written into a temporary sibling and renamed into place. An existing DIR
is replaced only if it is empty or a previous generated adapter (`--force`: any directory);
never `.`, the working directory, the repository or one of their parents.

Prompt sources for `--prompts`:
  *.jsonl      prepared items (question + choices -> `dnd.formats.prompts.condition_text`), or records
               with a "text" or "prompt" field;
  other files  one prompt per non-empty line (.txt);
  random:<n>   n random word sequences (`random_text_prompts`), the random-text control;
  shuffled:<file>  the prompts of <file> (any form above) with the words of each one shuffled
               (`shuffle_words`), the shuffled-words control: the target's own vocabulary
               without its task structure.
N prompts are drawn from the source with a seeded generator: distinct when the source has
at least N, otherwise with replacement (as in training). random:<n> and text files must hold at
least N prompts, any source at least 2 (`check_prompt_count`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .config import section
from .formats.prompts import condition_text
from .io import atomic_path, check_replaceable_dir, read_jsonl, save_safetensors, write_csv, write_json
from .method.encoder import make_encoder
from .method.generator_checkpoint import load_generator
from .method.tokenization import LoraLayout, detokenize
from .schedule import derive_seed, draw_indices

log = logging.getLogger(__name__)

#: Marker file of a generated adapter directory (so a rerun may replace it) and its content.
MARKER = "dnd_generated.json"
MARKER_FORMAT = "dnd-generated-adapter-1"
#: Every file `dnd generate` may leave in an adapter directory (README.md: written by earlier
#: versions for generators that stored no adapter_config).
GENERATED_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", MARKER)
LEGACY_TIMING = "timing.json"  # written into the adapter directory by earlier versions

EFFICIENCY_COLUMNS = (
    "target", "adapter", "generator_params", "n_prompts",
    "load_s", "encode_s", "decode_s", "write_s", "total_s", "peak_rss_mb",
)  # fmt: skip

#: Vocabulary of the random-text control: common English words, no task content.
_WORDS = (
    "the of and to in is was for on that with as by at from his her they have had this which "
    "one all were when there can more would what about into time only some could them other new "
    "then these two may first any like now such make over our even most made after also did many "
    "before must through back years where much your way well down should because each just those "
    "people how too little state good very world still own see men work long here get both between "
    "life being under never day same another know while last might great old year off come since "
    "against go came right used take three small house place around however home large again "
    "water light color river stone paper music window garden table morning number animal mountain "
    "letter simple quiet yellow green blue round tall early open bright slowly"
).split()


def random_text_prompts(n: int, seed: int) -> list[str]:
    """n prompts of 8-40 random common words each (seeded; a condition with no task in it)."""
    rng = random.Random(derive_seed(seed, "random-text"))
    out = []
    for _ in range(n):
        words = rng.choices(_WORDS, k=rng.randint(8, 40))
        out.append(" ".join(words).capitalize() + "?")
    return out


def shuffle_words(prompts: list[str], seed: int) -> list[str]:
    """Each prompt with its whitespace-separated words in a seeded random order (line breaks
    and spacing collapse to single spaces)."""
    rng = random.Random(derive_seed(seed, "shuffled-words"))
    out = []
    for text in prompts:
        words = text.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def read_prompts(spec: str, seed: int = 0, form: str = "prompt") -> list[str]:
    """All prompts of a source (see module doc for the accepted forms); items of a .jsonl file
    are shown in the condition `form` of the generator's encoder (dnd.formats.prompts.condition_text)."""
    if spec.startswith("shuffled:"):
        return shuffle_words(read_prompts(spec[len("shuffled:"):], seed, form), seed)
    if spec.startswith("random:"):
        m = re.fullmatch(r"random:(\d+)", spec)
        if not m or int(m.group(1)) < 1:
            raise ValueError(f"--prompts {spec!r}: random:<n> needs a whole number n >= 1")
        return random_text_prompts(int(m.group(1)), seed)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.suffix == ".jsonl":
        prompts = []
        for i, rec in enumerate(read_jsonl(path)):
            if "question" in rec and "choices" in rec:
                prompts.append(condition_text(rec, form))
            elif isinstance(rec.get("text"), str) or isinstance(rec.get("prompt"), str):
                prompts.append(rec["text"] if isinstance(rec.get("text"), str) else rec["prompt"])
            else:
                raise ValueError(f"{path} line {i + 1}: need question+choices, 'text' or 'prompt'")
    else:
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"no prompts in {path}")
    return prompts


def check_prompt_count(spec: str, n_found: int, n_model: int) -> None:
    """ValueError when a prompt source is too small for a generator that takes N=`n_model`:
    random:<n> and plain text files (one prompt per line, also shuffled) need at least N prompts;
    any source needs two when N > 1 (one prompt repeated N times conditions on nothing else).
    A .jsonl source with fewer than N records is drawn with replacement, as in training: the math
    and code experiments condition on fewer prompts than N by design (math.n_cond, code.n_cond)."""
    base = spec[len("shuffled:"):] if spec.startswith("shuffled:") else spec
    plain = spec.startswith("random:") or Path(base).suffix != ".jsonl"
    if n_found < n_model and (plain or n_found < 2):
        raise ValueError(f"--prompts {spec}: {n_found} prompt{'s' if n_found != 1 else ''}, but this generator takes "
                         f"N={n_model}" + ("" if plain else " (a .jsonl source needs at least 2; fewer than N are "
                                                             "drawn with replacement)"))


def draw_prompts(prompts: list[str], n: int, seed: int) -> list[str]:
    """n prompts drawn with a generator seeded by `seed` (distinct when enough)."""
    g = torch.Generator().manual_seed(derive_seed(seed, "draw"))
    return [prompts[int(i)] for i in draw_indices(len(prompts), n, g)]


def is_generated_adapter(path: Path) -> bool:
    """True if directory `path` is an adapter `dnd generate` wrote: plain files only, all of
    them among GENERATED_FILES (+ the timing.json of earlier versions), with the marker (or
    that timing.json). A PEFT adapter saved by anything else lacks both."""
    entries = list(path.iterdir())
    names = {p.name for p in entries}
    return (
        all(p.is_file() and not p.is_symlink() for p in entries)
        and names <= {*GENERATED_FILES, LEGACY_TIMING}
        and bool(names & {MARKER, LEGACY_TIMING})
    )


def replaceable_output(force: bool = False) -> Callable[[Path], bool]:
    """Which existing non-empty `--out` directory may be replaced: a previous generated adapter,
    or with `force` any directory (io.check_replaceable_dir still refuses `.`, the working
    directory, the repository, home and their parents)."""
    return (lambda _: True) if force else is_generated_adapter


def check_finite(state_dict: dict[str, torch.Tensor], generator: str | Path) -> None:
    """Raise ValueError if a decoded LoRA tensor holds NaN or inf (diverged or corrupt generator)."""
    bad = [k for k, v in state_dict.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"generator checkpoint {generator} produced non-finite (NaN/inf) LoRA weights in {len(bad)} of "
            f"{len(state_dict)} tensors (first: {bad[0]}); no adapter was written"
        )


def write_adapter(
    out: str | Path, state_dict: dict[str, torch.Tensor], adapter_config: dict[str, Any], force: bool
) -> None:
    """Publish the PEFT adapter directory `out` atomically (see `replaceable_output`):
    `adapter_config` (the checkpoint's adapter_config.json dict) and the LoRA weights."""
    with atomic_path(out, is_dir=True, replaceable=replaceable_output(force)) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
        save_safetensors(state_dict, tmp / "adapter_model.safetensors", Path(out) / "adapter_model.safetensors",
                         metadata={"format": "pt"})
        (tmp / MARKER).write_text(json.dumps({"format": MARKER_FORMAT}) + "\n")


def generate_adapter(
    generator: str | Path,
    prompts: str,
    out: str | Path,
    n_prompts: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    timing_path: str | Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Generate one PEFT adapter directory `out` from prompts (+ the timing JSON at
    `timing_path` when given; never inside `out`, whose content must not change between runs).

    `out` may replace only an empty directory or a previous generated adapter (any non-empty
    directory with `force`; never `.`, the working directory or a parent of it); this is checked
    before any work. Non-finite decoded weights are an error and nothing is written.

    Timing: load_s covers reading the generator and the encoder.
    Then the encoder (on one prompt) and the decoder (on a zero condition) each run once,
    untimed, as a warm-up (first-call allocations and kernel selection), so
    encode_s (prompts -> states), decode_s (one decoder forward + detokenization) and
    write_s (adapter_config.json + adapter_model.safetensors, atomically) are steady-state
    wall times; total_s = encode_s + decode_s + write_s. peak_rss_mb is the process's peak
    resident memory. Returns the timing dict.
    """
    check_replaceable_dir(out, replaceable_output(force))
    if timing_path is not None and Path(os.path.abspath(timing_path)).is_relative_to(os.path.abspath(out)):
        raise ValueError(f"--timing {timing_path} lies inside --out {out}: the adapter directory holds only the "
                         "adapter")
    t = time.perf_counter()
    model, ckpt = load_generator(generator)
    if threads:
        torch.set_num_threads(int(threads))
    n_model, seq_len, dim = model.input_shape
    if n_prompts is not None and n_prompts != n_model:
        raise ValueError(f"this generator takes N={n_model} prompts, --n-prompts is {n_prompts}")
    layout = LoraLayout.from_dict(ckpt["layout"])
    adapter_config = ckpt["adapter_config"]
    encoder = make_encoder(ckpt["encoder"])
    if (encoder.length, encoder.dim) != (seq_len, dim):
        raise ValueError(f"encoder gives (L, D) = {(encoder.length, encoder.dim)}, decoder expects {(seq_len, dim)}")
    pool = read_prompts(prompts, seed, form=section("encoder", ckpt["encoder"])["form"])
    check_prompt_count(prompts, len(pool), n_model)
    texts = draw_prompts(pool, n_model, seed)
    load_s = time.perf_counter() - t

    with torch.inference_mode():  # warm-up, untimed
        encoder.encode(texts[:1])
        model(torch.zeros(1, n_model, seq_len, dim))

    t = time.perf_counter()
    states, _ = encoder.encode(texts)  # (N, L, D)
    encode_s = time.perf_counter() - t

    t = time.perf_counter()
    with torch.inference_mode():
        tokens = model(states.unsqueeze(0))[0]  # (T, r+2, w+2)
        state_dict = detokenize(tokens, layout)
    decode_s = time.perf_counter() - t
    check_finite(state_dict, generator)

    t = time.perf_counter()
    write_adapter(out, state_dict, adapter_config, force)
    write_s = time.perf_counter() - t

    timing = {
        "encode_s": round(encode_s, 4),
        "decode_s": round(decode_s, 4),
        "write_s": round(write_s, 4),
        "total_s": round(encode_s + decode_s + write_s, 4),
        "load_s": round(load_s, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "n_prompts": n_model,
        "generator_params": int(ckpt["n_params"]),
    }
    if timing_path is not None:
        write_json(timing_path, timing)
    return timing


def efficiency_rows(timing_paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row per timing JSON at .../{target}/{adapter}.json, sorted."""
    rows = []
    for p in map(Path, timing_paths):
        if not p.exists():
            raise FileNotFoundError(f"timing file not found: {p}")
        t = json.loads(p.read_text())
        rows.append({"target": p.parent.name, "adapter": p.stem, **t})
    return sorted(rows, key=lambda r: (r["target"], r["adapter"]))


# ----------------------------------------------------------------------------- commands


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", required=True, help="generator checkpoint (.pt) from train-generator")
    p.add_argument("--prompts", required=True,
                   help="prompts: .jsonl, .txt (one per line), random:<n> or shuffled:<file>")
    p.add_argument("--out", required=True, help="output PEFT adapter directory")
    p.add_argument("--n-prompts", type=int, default=None, help="N (must match the generator; default: its N)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt draw")
    p.add_argument("--timing", default=None,
                   help="write the timing JSON here (results/timings/generate/{target}/{adapter}.json)")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out directory that is not a previous generated adapter "
                        "(never ., the working directory or a parent of it)")


def run_generate(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)  # the CLI's global --threads; default: torch's
    timing = generate_adapter(args.generator, args.prompts, args.out, args.n_prompts, args.seed, threads,
                              timing_path=args.timing, force=args.force)
    log.info("adapter -> %s (total %.3f s, load %.2f s)", args.out, timing["total_s"], timing["load_s"])


def add_efficiency_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timings", nargs="+", required=True,
                   help="timing JSON files, .../{target}/{adapter}.json (dnd generate --timing)")
    p.add_argument("--out", required=True, help="output CSV")


def run_efficiency(args: argparse.Namespace) -> None:
    write_csv(args.out, EFFICIENCY_COLUMNS, efficiency_rows(args.timings))


COMMANDS = {
    "generate": (add_generate_arguments, run_generate),
    "efficiency": (add_efficiency_arguments, run_efficiency),
}
