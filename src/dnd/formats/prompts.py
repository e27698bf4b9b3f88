"""The single prompt template.

LoRA training text, lm-eval scoring and generator conditions all come from here, so the
text a LoRA is trained on and the text it is scored on cannot drift apart.

An item (see dnd.data) is {id, question, choices, answer, passage?, style}. For an item:
  context      = render_context(item, fmt)
  continuation = TARGET_DELIMITER + render_choices(item, fmt)[answer]
LoRA training computes the loss on the continuation tokens only; lm-eval's multiple_choice
scoring compares log P(continuation | context) over all choices with the same delimiter.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import yaml

TARGET_DELIMITER = " "
LETTERS = "ABCDEFGHIJ"
FORMATS = ("cloze", "letter")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; expected one of {FORMATS}")


def render_context(item: dict[str, Any], fmt: str = "cloze") -> str:
    """The text the model conditions on (no answer)."""
    _check_format(fmt)
    parts = []
    if item.get("passage"):
        parts.append(item["passage"].strip())
    if item.get("style", "qa") == "completion" and fmt == "cloze":
        parts.append(item["question"].strip())
        return "\n".join(parts)
    parts.append(f"Question: {item['question'].strip()}")
    if fmt == "letter":
        parts.extend(f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"]))
    parts.append("Answer:")
    return "\n".join(parts)


def render_choices(item: dict[str, Any], fmt: str = "cloze") -> list[str]:
    """Answer options as scored (without the leading delimiter)."""
    _check_format(fmt)
    if fmt == "letter":
        return [LETTERS[i] for i in range(len(item["choices"]))]
    return [c.strip() for c in item["choices"]]


def training_example(item: dict[str, Any], fmt: str = "cloze") -> tuple[str, str]:
    """(context, continuation) for supervised LoRA training: loss on the continuation only."""
    return render_context(item, fmt), TARGET_DELIMITER + render_choices(item, fmt)[item["answer"]]


CONDITION_FORMS = ("prompt", "answer", "prompt_answer", "mixed")


def condition_text(item: dict[str, Any], form: str = "prompt") -> str:
    """Text fed to the condition encoder. `prompt` (the default, the paper's): the question and
    its options, never the answer; independent of the scoring format (the paper's prompts list
    the choices). The ablation forms read the label: `answer` is the gold choice's text alone,
    `prompt_answer` the prompt followed by "Answer: <gold>", `mixed` one of the two by the item's
    id (crc32 parity), so the same item always shows the same form."""
    if form not in CONDITION_FORMS:
        raise ValueError(f"unknown condition form {form!r} (one of {', '.join(CONDITION_FORMS)})")
    lines = [item["question"].strip()]
    lines.extend(f"{LETTERS[i]}: {c.strip()}" for i, c in enumerate(item["choices"]))
    if item.get("passage"):
        lines.append(item["passage"].strip())
    prompt = "\n".join(lines)
    if form == "prompt":
        return prompt
    if "answer" not in item or item["answer"] is None:
        raise ValueError(f"condition form {form!r} needs labeled items; {item.get('id', '?')} has no answer")
    gold = str(item["choices"][int(item["answer"])]).strip()
    if form == "mixed":
        form = "prompt_answer" if zlib.crc32(str(item["id"]).encode()) % 2 else "prompt"
    return {"answer": gold, "prompt_answer": f"{prompt}\nAnswer: {gold}", "prompt": prompt}[form]


def to_eval_record(item: dict[str, Any], fmt: str = "cloze") -> dict[str, Any]:
    """The row lm-eval reads: pre-rendered context and choices, gold index."""
    return {
        "id": item["id"],
        "context": render_context(item, fmt),
        "choices": render_choices(item, fmt),
        "answer": int(item["answer"]),
    }


def task_name(dataset: str) -> str:
    return f"dnd_{dataset}"


def portable_path(path: str | Path) -> str:
    """`path` relative to the working directory of the run when it lies inside it (artifacts
    never hold a machine path), otherwise absolute. lm-eval resolves relative data_files
    against the process CWD, so run lm-eval from the same directory (dnd.evaluate does)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(p)


def lm_eval_task(dataset: str, data_file: str | Path) -> dict[str, Any]:
    """lm-eval task config for a prepared eval file (see portable_path for the path)."""
    return {
        "task": task_name(dataset),
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": portable_path(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "target_delimiter": TARGET_DELIMITER,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def lm_eval_task_yaml(dataset: str, data_file: str | Path) -> str:
    return yaml.safe_dump(lm_eval_task(dataset, data_file), sort_keys=False)
