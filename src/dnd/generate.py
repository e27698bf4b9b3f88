"""Generation (method reference section 2.8): prompts -> a PEFT LoRA adapter in one forward
pass of a trained generator, plus the efficiency table.

Commands:
  generate     dnd generate --generator CKPT --prompts FILE|random:<n> --out DIR
               [--n-prompts N] [--seed S] [--timing JSON] [--force]
               (threads: the CLI's --threads, else torch's default)
  generate-batch  dnd generate-batch --plan PLAN.json | --plan-json '[{...}, ...]' [--force]
               several adapters in one process, each an object with generate's arguments
               (generator, prompts, out; n_prompts, seed, timing): each generator checkpoint and
               the encoder are loaded once and a prompt draw shared by several generators
               (dnd_i, dnd_<design>_i) is encoded once; every adapter is byte for byte the one
               `dnd generate` writes (the workflow's generate_target: one job per target)
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
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from .config import section
from .device import recorded
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


@dataclass(frozen=True)
class AdapterJob:
    """One adapter to generate: the arguments of `dnd generate` (an entry of a `generate-batch` plan)."""

    generator: str
    prompts: str
    out: str
    n_prompts: int | None = None
    seed: int = 0
    timing: str | None = None


#: The keys of a plan entry (AdapterJob's fields) and the ones it must have.
PLAN_KEYS = tuple(f.name for f in fields(AdapterJob))
PLAN_REQUIRED = ("generator", "prompts", "out")
#: Encoded prompt draws kept for reuse (least recently used dropped): the designs of one draw
#: (dnd_i, dnd_<design>_i) are generated one after the other.
STATES_KEPT = 4


def timing_inside(timing: str | None, out: str) -> bool:
    """Whether a timing file would land inside an adapter directory (which holds only the adapter)."""
    return timing is not None and Path(os.path.abspath(timing)).is_relative_to(os.path.abspath(out))


class GenerationSession:
    """Generates adapters in one process: each generator checkpoint and each encoder is loaded
    (and warmed up) once, and a prompt draw encoded once per encoder config, however many
    adapters use it. Every adapter is the one `generate_adapter` writes alone, byte for byte:
    the same draw, the same encoder call on the same prompts (its states do not depend on what
    ran before), the same decoder forward.

    Timing per adapter (`run`): load_s covers what this adapter read first: its generator and
    encoder when no earlier adapter loaded them (generator_reused / encoder_reused false), and
    its prompts (read and drawn for every adapter). The encoder and each decoder run once,
    untimed, as a warm-up (first-call allocations and kernel selection) when first used, so
    encode_s (prompts -> states), decode_s (one decoder forward + detokenization) and write_s
    (adapter_config.json + adapter_model.safetensors, atomically) are steady-state wall times.
    encode_s is 0 when an earlier adapter encoded the same draw with the same encoder
    (encode_reused true). total_s = encode_s + decode_s + write_s. peak_rss_mb is the process's
    peak resident memory so far (every model loaded until then).
    """

    def __init__(self, threads: int | None = None, force: bool = False, device: Any = "cpu"):
        if threads:
            torch.set_num_threads(int(threads))
        self.force = force
        self.device = torch.device(device)  # the generators and encoders live here; adapters are written from the CPU
        self._models: dict[str, tuple[Any, dict[str, Any]]] = {}  # generator path -> (decoder, checkpoint)
        self._encoders: dict[str, Any] = {}  # encoder config (JSON) -> encoder
        self._states: OrderedDict[tuple[str, tuple[str, ...]], torch.Tensor] = OrderedDict()

    def check(self, job: AdapterJob) -> None:
        """Refuse an output `job` must not write (before any work): see `generate_adapter`."""
        check_replaceable_dir(job.out, replaceable_output(self.force))
        if timing_inside(job.timing, job.out):
            raise ValueError(f"--timing {job.timing} lies inside --out {job.out}: the adapter directory holds only "
                             "the adapter")

    def _generator(self, path: str) -> tuple[Any, dict[str, Any], bool]:
        key = os.path.abspath(path)
        if key in self._models:
            return *self._models[key], True
        model, ckpt = load_generator(path)
        model = model.to(self.device)
        self._models[key] = (model, ckpt)
        return model, ckpt, False

    def _encoder(self, cfg: dict[str, Any]) -> tuple[Any, str, bool]:
        key = json.dumps(cfg, sort_keys=True)
        if key in self._encoders:
            return self._encoders[key], key, True
        self._encoders[key] = make_encoder(cfg, self.device)
        return self._encoders[key], key, False

    def run(self, job: AdapterJob) -> dict[str, Any]:
        """Generate the adapter of `job` (+ its timing JSON when `job.timing` is set); returns the timing."""
        self.check(job)
        t = time.perf_counter()
        model, ckpt, generator_reused = self._generator(job.generator)
        n_model, seq_len, dim = model.input_shape
        if job.n_prompts is not None and job.n_prompts != n_model:
            raise ValueError(f"this generator takes N={n_model} prompts, --n-prompts is {job.n_prompts}")
        layout = LoraLayout.from_dict(ckpt["layout"])
        encoder, encoder_key, encoder_reused = self._encoder(ckpt["encoder"])
        if (encoder.length, encoder.dim) != (seq_len, dim):
            raise ValueError(f"encoder gives (L, D) = {(encoder.length, encoder.dim)}, decoder expects "
                             f"{(seq_len, dim)}")
        pool = read_prompts(job.prompts, job.seed, form=section("encoder", ckpt["encoder"])["form"])
        check_prompt_count(job.prompts, len(pool), n_model)
        texts = draw_prompts(pool, n_model, job.seed)
        load_s = time.perf_counter() - t

        with torch.inference_mode():  # warm-up of what was just loaded, untimed
            if not encoder_reused:
                encoder.encode(texts[:1])
            if not generator_reused:
                model(torch.zeros(1, n_model, seq_len, dim, device=self.device))

        state_key = (encoder_key, tuple(texts))
        encode_reused = state_key in self._states
        t = time.perf_counter()
        if encode_reused:
            states = self._states[state_key]
            self._states.move_to_end(state_key)
        else:
            states, _ = encoder.encode(texts)  # (N, L, D)
            self._states[state_key] = states
            while len(self._states) > STATES_KEPT:
                self._states.popitem(last=False)
        encode_s = 0.0 if encode_reused else time.perf_counter() - t

        t = time.perf_counter()
        with torch.inference_mode():
            tokens = model(states.unsqueeze(0).to(self.device))[0].cpu()  # (T, r+2, w+2)
            state_dict = detokenize(tokens, layout)
        decode_s = time.perf_counter() - t
        check_finite(state_dict, job.generator)

        t = time.perf_counter()
        write_adapter(job.out, state_dict, ckpt["adapter_config"], self.force)
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
            "generator_reused": generator_reused,
            "encoder_reused": encoder_reused,
            "encode_reused": encode_reused,
            **recorded(self.device),
        }
        if job.timing is not None:
            write_json(job.timing, timing)
        return timing


def generate_adapter(
    generator: str | Path,
    prompts: str,
    out: str | Path,
    n_prompts: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    timing_path: str | Path | None = None,
    force: bool = False,
    device: Any = "cpu",
) -> dict[str, Any]:
    """Generate one PEFT adapter directory `out` from prompts (+ the timing JSON at
    `timing_path` when given; never inside `out`, whose content must not change between runs).

    `out` may replace only an empty directory or a previous generated adapter (any non-empty
    directory with `force`; never `.`, the working directory or a parent of it); this is checked
    before any work. Non-finite decoded weights are an error and nothing is written.

    Timing (see `GenerationSession`): load_s covers reading the generator, the encoder and the prompts;
    encode_s, decode_s and write_s are steady-state wall times after an untimed warm-up;
    total_s = encode_s + decode_s + write_s. Returns the timing dict.
    """
    job = AdapterJob(str(generator), prompts, str(out), n_prompts, seed,
                     None if timing_path is None else str(timing_path))
    return GenerationSession(threads, force, device).run(job)


def parse_plan(plan: Any, where: str = "--plan") -> list[AdapterJob]:
    """The adapters of a `generate-batch` plan: a non-empty JSON list of objects with the keys
    PLAN_KEYS (generator, prompts, out required), distinct `out` and `timing` paths. A malformed
    plan is one ValueError naming the entry."""
    if not isinstance(plan, list) or not plan:
        raise ValueError(f"{where}: expected a non-empty JSON list of adapters, got {type(plan).__name__}"
                         + ("" if plan else " (empty)"))
    jobs = []
    for k, entry in enumerate(plan):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: entry {k} is a {type(entry).__name__}, expected an object with keys "
                             f"{list(PLAN_KEYS)}")
        unknown = sorted(set(entry) - set(PLAN_KEYS))
        missing = [key for key in PLAN_REQUIRED if key not in entry]
        if unknown or missing:
            raise ValueError(f"{where}: entry {k}: " + "; ".join(
                ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else []))
                + f" (keys: {list(PLAN_KEYS)})")
        for key, value in entry.items():
            if key in ("n_prompts", "seed"):
                ok = (isinstance(value, int) and not isinstance(value, bool)) or (value is None and key == "n_prompts")
            else:
                ok = isinstance(value, str) and value != "" or (value is None and key == "timing")
            if not ok:
                want = "a whole number" if key in ("n_prompts", "seed") else "a non-empty string"
                raise ValueError(f"{where}: entry {k}: {key} is {value!r}, expected {want}")
        jobs.append(AdapterJob(**entry))
    for key in ("out", "timing"):
        seen: dict[str, int] = {}
        for k, job in enumerate(jobs):
            path = getattr(job, key)
            if path is None:
                continue
            if os.path.abspath(path) in seen:
                raise ValueError(f"{where}: entries {seen[os.path.abspath(path)]} and {k} both write {key} {path}")
            seen[os.path.abspath(path)] = k
    for k, job in enumerate(jobs):
        for other in jobs:
            if timing_inside(job.timing, other.out):
                raise ValueError(f"{where}: entry {k}: timing {job.timing} lies inside the adapter directory "
                                 f"{other.out}")
    return jobs


def generate_batch(jobs: list[AdapterJob], threads: int | None = None, force: bool = False,
                   device: Any = "cpu") -> list[dict[str, Any]]:
    """Every adapter of a plan in this process (`GenerationSession`: each generator and the encoder loaded
    once), in plan order. Every output is checked before any work; a failure stops the batch and
    names the adapter (the adapters written before it stay)."""
    gen = GenerationSession(threads, force, device)
    for job in jobs:
        gen.check(job)
    timings = []
    for k, job in enumerate(jobs):
        try:
            timings.append(gen.run(job))
        except Exception:
            log.error("adapter %d of %d (%s) failed", k + 1, len(jobs), job.out)
            raise
        log.info("adapter %d/%d -> %s (total %.3f s, load %.2f s%s)", k + 1, len(jobs), job.out,
                 timings[-1]["total_s"], timings[-1]["load_s"],
                 ", encoding reused" if timings[-1]["encode_reused"] else "")
    return timings


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
    p.add_argument("--generator", required=True,
                   help="generator checkpoint (.pt) from train-generator, or a release directory (release/)")
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
                              timing_path=args.timing, force=args.force, device=args.device)
    log.info("adapter -> %s (total %.3f s, load %.2f s)", args.out, timing["total_s"], timing["load_s"])
    print(adapter_summary(args.generator, args.out))


def adapter_summary(generator: str | Path, out: str | Path) -> str:
    """Two lines for the user: where the adapter is, and the base model it is for (its
    adapter_config.json's base_model_name_or_path; for a release also the manifest's description)."""
    from .release import MANIFEST, is_release, release_dir

    base = json.loads((Path(out) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if is_release(generator):  # checked when the generator was loaded: read, not hashed again
        manifest = json.loads((release_dir(generator) / MANIFEST).read_text())
        base = f"{base} ({manifest['base_model']['description']})"
    return f"adapter: {os.path.abspath(out)}\nbase model: {base}"


def add_generate_batch_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--plan", help="JSON file (- for stdin): a list of adapters, each an object with the keys "
                                    "generator, prompts, out (required), n_prompts, seed, timing (as dnd generate's "
                                    "flags)")
    src.add_argument("--plan-json", help="the same list as a JSON string (the Snakemake rule passes it so)")
    p.add_argument("--force", action="store_true",
                   help="replace non-empty out directories that are not previous generated adapters "
                        "(never ., the working directory or a parent of it)")


def read_plan(args: argparse.Namespace) -> list[AdapterJob]:
    """The plan of `generate-batch`: --plan FILE (- for stdin) or --plan-json TEXT."""
    if args.plan_json is not None:
        where, text = "--plan-json", args.plan_json
    elif args.plan == "-":
        where, text = "--plan -", sys.stdin.read()
    else:
        where, text = f"--plan {args.plan}", Path(args.plan).read_text()
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    return parse_plan(plan, where)


def run_generate_batch(args: argparse.Namespace) -> None:
    jobs = read_plan(args)
    timings = generate_batch(jobs, getattr(args, "threads", None), force=args.force, device=args.device)
    totals = sorted(t["total_s"] for t in timings)
    log.info("%d adapters: median total %.3f s, load %.2f s in all", len(timings), totals[len(totals) // 2],
             sum(t["load_s"] for t in timings))


def add_efficiency_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timings", nargs="+", required=True,
                   help="timing JSON files, .../{target}/{adapter}.json (dnd generate --timing)")
    p.add_argument("--out", required=True, help="output CSV")


def run_efficiency(args: argparse.Namespace) -> None:
    write_csv(args.out, EFFICIENCY_COLUMNS, efficiency_rows(args.timings))


COMMANDS = {
    "generate": (add_generate_arguments, run_generate),
    "generate-batch": (add_generate_batch_arguments, run_generate_batch),
    "efficiency": (add_efficiency_arguments, run_efficiency),
}
