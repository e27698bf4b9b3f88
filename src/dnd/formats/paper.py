"""The paper's answer format and its answer parser (the paper-protocol experiment, dnd.experiments.protocol.score).

The paper trains and tests every common-sense LoRA on one answer format (see
docs of the authors' code, summarized in shared/docs/paper-protocol.md): a system message that
asks for a single bracketed answer, the question with its options as `A: ...` lines, and the
gold answer written `[C]` (multiple choice) or `[True]`/`[False]` (yes/no questions). At test
time the model's sampled output is parsed from its first 20 characters; anything the parser
rejects is wrong. This module renders that format and reimplements the parser; the wording of
the system messages is ours (the same instruction, not the authors' text).

Templates:
  chatml   the model's own chat format (SmolLM2 and the paper's Qwen2.5 both use ChatML); the
           authors trained their LoRAs with it (LLaMA-Factory `qwen` template). Training
           continuation: `[C]<|im_end|>`.
  default  what the authors' test script used (LLaMA-Factory's `default` template, no
           --template given): "System: {system}\\nHuman: {prompt}\\nAssistant:"; the answer
           follows after a space.
The protocol experiment scores each template of `protocol.templates` (both by default); its zoo
trains on chatml only (dnd.zoo.encode_examples, format `paper`).

An item is the normalized item of dnd.benchmarks.datasets ({question, choices, answer, passage?, style}).
Its answer kind is `truefalse` when its choices are no/yes (BoolQ), else `letter`.
"""

from __future__ import annotations

import re
from typing import Any

FORMAT = "paper"
TEMPLATES = ("chatml", "default")
CHATML_END = "<|im_end|>"
LETTERS = "ABCDE"  # answer labels (a few ARC items have a fifth option)
PARSER_LETTERS = "ABCD"  # what the authors' parser reads as a letter
TRUE_FALSE = {"no": "False", "yes": "True", "false": "False", "true": "True"}
#: What the parser makes of an output it rejects (counted as invalid and wrong).
INVALID = "[invalid]"
#: The parser reads only this many leading characters of an output.
PARSED_CHARS = 20

_SYSTEM = {
    "letter": ("You are a helpful AI assistant. {task} Reply with only the letter of your choice in "
               "square brackets, such as [A]."),
    "truefalse": ("You are a helpful AI assistant. {task} Reply with only [True] or [False]."),
}
_TASK = {
    ("letter", "qa"): "Answer the question by picking one of the given choices.",
    ("letter", "completion"): "Pick the ending that best finishes the sentence.",
    ("truefalse", "qa"): "Answer the yes/no question with true or false.",
}


def answer_kind(item: dict[str, Any]) -> str:
    """`truefalse` for a no/yes item, else `letter` (2-5 options; the parser reads A-D only, so an
    item whose gold answer is E can only be right under log-likelihood scoring)."""
    choices = [str(c).strip().lower() for c in item["choices"]]
    if len(choices) == 2 and all(c in TRUE_FALSE for c in choices) and len(set(map(TRUE_FALSE.get, choices))) == 2:
        return "truefalse"
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"item {item.get('id')}: the paper format has 2-{len(LETTERS)} options, got {len(choices)}")
    return "letter"


def labels(item: dict[str, Any]) -> list[str]:
    """The answer label of each choice: A, B, ... or True/False."""
    if answer_kind(item) == "truefalse":
        return [TRUE_FALSE[str(c).strip().lower()] for c in item["choices"]]
    return list(LETTERS[: len(item["choices"])])


def gold_label(item: dict[str, Any]) -> str:
    return labels(item)[int(item["answer"])]


def system_message(item: dict[str, Any]) -> str:
    kind = answer_kind(item)
    return _SYSTEM[kind].format(task=_TASK[(kind, item.get("style", "qa"))])


def user_message(item: dict[str, Any]) -> str:
    """The question as the paper writes it: [passage], question, then `A: option` lines (a
    yes/no question lists no options)."""
    lines = []
    if item.get("passage"):
        lines.append(item["passage"].strip())
    question = item["question"].strip()
    if item.get("style") == "completion":
        question = f"Sentence: {question}"
    lines.append(question)
    if answer_kind(item) == "letter":
        lines += [f"{LETTERS[i]}: {str(c).strip()}" for i, c in enumerate(item["choices"])]
    return "\n".join(lines)


def check_template(template: str) -> str:
    """`template` when it is one of TEMPLATES, else a one-line error."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    return template


def render_context(item: dict[str, Any], template: str = "chatml") -> str:
    """Everything before the answer."""
    check_template(template)
    system, user = system_message(item), user_message(item)
    if template == "chatml":
        return (f"<|im_start|>system\n{system}{CHATML_END}\n<|im_start|>user\n{user}{CHATML_END}\n"
                "<|im_start|>assistant\n")
    return f"System: {system}\nHuman: {user}\nAssistant:"


def answer_delimiter(template: str) -> str:
    """What separates the context from the answer: nothing after ChatML's `assistant\\n`, a
    space after `Assistant:`."""
    check_template(template)
    return "" if template == "chatml" else " "


def answer_texts(item: dict[str, Any]) -> list[str]:
    """Each choice as the paper writes an answer: [A], [B], ... or [True]/[False]."""
    return [f"[{lab}]" for lab in labels(item)]


def training_example(item: dict[str, Any], template: str = "chatml") -> tuple[str, str]:
    """(context, continuation): the loss is on the bracketed gold answer and the end of turn."""
    end = CHATML_END if template == "chatml" else ""
    return render_context(item, template), answer_delimiter(template) + answer_texts(item)[int(item["answer"])] + end


def eval_record(item: dict[str, Any], template: str) -> dict[str, Any]:
    """The row the protocol's lm-eval tasks read: context, bracketed answer choices (log-
    likelihood task), gold index and label (generation tasks), answer kind (the parser)."""
    return {"id": item["id"], "context": render_context(item, template), "choices": answer_texts(item),
            "answer": int(item["answer"]), "gold": gold_label(item), "kind": answer_kind(item)}


# ---------------------------------------------------------------------------- the parser
_BRACKETED = re.compile(r"\[(.*?)\]")
_LOGIC = ("True", "False", "false", "true")  # searched in this order
_SECOND_CHAR = {**{c: c for c in PARSER_LETTERS}, **{str(i + 1): PARSER_LETTERS[i] for i in range(4)}}


def parse_answer(prediction: str, kind: str) -> str:
    """The authors' parser (calculate_acc.py at commit 60e2192, their latest): the label an
    output answers, "" for an output the parser accepts as valid but cannot read (always
    wrong), or INVALID. Correct = the result equals the gold label (True/False: ignoring case).

    truefalse: the first 20 characters, after the last "ns: ", up to the first newline; if
      longer than 5 characters, replaced by the first of True, False, false, true it contains
      (that order), else empty. Valid only if it is exactly one of those four words.
    letter: the first 20 characters. Shorter than 2: invalid. Second character A-D: that
      letter; 1-4: the letter of that number; "[": valid, the first bracketed text (or ""
      if none); anything else: invalid."""
    head = prediction[:PARSED_CHARS]
    if kind == "truefalse":
        pred = head.split("ns: ")[-1].split("\n")[0]
        if len(pred) > 5:
            pred = next((w for w in _LOGIC if w in pred), "")
        return pred.capitalize() if pred in _LOGIC else INVALID
    if kind != "letter":
        raise ValueError(f"unknown answer kind {kind!r}")
    if len(head) < 2:
        return INVALID
    second = head[1]
    if second in _SECOND_CHAR:
        return _SECOND_CHAR[second]
    if second == "[":
        found = _BRACKETED.findall(head)
        return found[0] if found else ""
    return INVALID
