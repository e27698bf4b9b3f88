"""Format `chat`: a prompt -> response item as one ChatML turn of the base model (the math and
code experiments' zoos train on it, dnd.zoo; their scoring generates from `eval_context`)."""

from __future__ import annotations

from typing import Any

FORMAT = "chat"
DOMAINS = ("math", "code")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SYSTEM = {
    "math": "You are a helpful AI assistant. Solve the math problem step by step and give the final answer.",
    "code": "You are a helpful AI assistant. Write correct, self-contained Python code.",
}
CODE_INSTRUCTION = "Complete the following Python function.\n\n"


def chatml(system: str, user: str) -> str:
    """The context of one turn in ChatML, up to the assistant's first token."""
    return (f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user.strip()}{IM_END}\n"
            f"{IM_START}assistant\n")


def eval_context(item: dict[str, Any], domain: str) -> str:
    """The context a scored item is generated from (and its reference scored after): one chat
    turn; a HumanEval prompt (a function stub) is asked for with CODE_INSTRUCTION."""
    if domain == "code" and item.get("task_id"):
        return chatml(SYSTEM["code"], CODE_INSTRUCTION + item["prompt"])
    return chatml(SYSTEM[domain], item["prompt"])


def training_example(item: dict[str, Any]) -> tuple[str, str]:
    """(context, continuation) of a LoRA training example: the loss is on the continuation."""
    domain = item.get("domain", "math")
    return eval_context(item, domain), item["response"].rstrip() + IM_END
