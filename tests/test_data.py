import json
import re

import pytest

from conftest import SHARED_DATA, SMOKE_DATA
from dnd.benchmarks.datasets import (
    REGISTRY,
    SPLITS,
    item_key,
    load_pools,
    make_splits,
    parse_dnd_item,
    prepare_dataset,
    read_custom_file,
    validate_custom_file,
)
from dnd.config import validate_config
from dnd.data import prepare, summary_csv
from dnd.formats.prompts import lm_eval_task, render_context, task_name, to_eval_record, training_example
from dnd.io import read_jsonl

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared benchmark data not present")


def test_parse_dnd_item_maps_digit_labels_to_positions():
    rec = {"prompt": "Rocks are classified by\n1: color\n2: shape\n3: how they formed\n4: minerals", "response": "[3]"}
    it = parse_dnd_item(rec, 0, "x")
    assert it["question"] == "Rocks are classified by"
    assert it["choices"] == ["color", "shape", "how they formed", "minerals"]
    assert it["answer"] == 2


def test_parse_dnd_item_drops_instruction_line():
    rec = {"prompt": "Q?\nA: yes\nB: no\nPlease answer the question choosing from [A]/[B]/[C]/[D].", "response": "[B]"}
    it = parse_dnd_item(rec, 0, "x")
    assert it["choices"] == ["yes", "no"] and it["answer"] == 1


def test_bad_gold_label_is_an_error():
    with pytest.raises(ValueError, match="gold label"):
        parse_dnd_item({"prompt": "Q?\nA: a\nB: b", "response": "[C]"}, 3, "x")


def _smoke_cfg(**data):
    d = {"datasets": ["capitals", "sounds", "opposites"],
         "custom": {n: {"path": str(SMOKE_DATA / f"{n}.jsonl")} for n in ("capitals", "sounds", "opposites")},
         "n_train": 14, "n_cond": 8, "n_test": 8}
    d.update(data)
    return validate_config({"data": d, "base_model": {"source": "tiny"}})


def test_smoke_splits_disjoint_and_seeded():
    cfg = _smoke_cfg()
    a = prepare_dataset("capitals", cfg["data"], seed=0)
    b = prepare_dataset("capitals", cfg["data"], seed=0)
    c = prepare_dataset("capitals", cfg["data"], seed=1)
    assert a == b and a != c
    keys = {s: {item_key(x) for x in a[s]} for s in SPLITS}
    assert not keys["train"] & keys["cond"] and not keys["train"] & keys["test"] and not keys["cond"] & keys["test"]
    assert [len(a[s]) for s in SPLITS] == [14, 8, 8]


def test_duplicates_across_pools_are_dropped():
    item = {"id": "a", "question": "Same?", "choices": ["x", "y"], "answer": 0}
    train = [dict(item, id=f"t{i}") for i in range(3)]
    train += [{"id": "u", "question": "Other?", "choices": ["x", "y"], "answer": 1}]
    evals = [dict(item, id="e0")]
    evals += [{"id": f"e{i}", "question": f"Q{i}?", "choices": ["x", "y"], "answer": 0} for i in range(1, 6)]
    s = make_splits("toy", (train, evals), {"n_train": 10, "n_cond": 2, "n_test": 4}, seed=0)
    all_keys = [item_key(x) for sp in SPLITS for x in s[sp]]
    assert len(all_keys) == len(set(all_keys))


def test_missing_data_dir_is_clear(tmp_path):
    cfg = validate_config({"data": {"datasets": ["arc_easy", "boolq"], "dir": str(tmp_path / "nope")},
                           "base_model": {"source": "tiny"}})
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        load_pools("arc_easy", cfg["data"])


def test_custom_dataset_validation(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 3}) + "\n")
    cfg = validate_config({"data": {"datasets": ["bad", "bad2"],
                                    "custom": {"bad": {"path": str(p)}, "bad2": {"path": str(p)}}},
                           "base_model": {"source": "tiny"}})
    with pytest.raises(ValueError, match="out of range"):
        load_pools("bad", cfg["data"])


GOOD_ROW = {"question": "Capital of France?", "choices": ["Paris", "Rome"], "answer": 0}


def _custom(tmp_path, *lines: str | dict):
    """A custom dataset file: dict lines are JSON-encoded, str lines written as they are."""
    p = tmp_path / "ds.jsonl"
    p.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return p


def _custom_error(path) -> str:
    with pytest.raises(ValueError) as err:
        validate_custom_file(path)
    return str(err.value)


def test_custom_good_file_reads_rows(tmp_path):
    rows = [dict(GOOD_ROW, id="a", passage="p", split="train"), dict(GOOD_ROW, id=7, passage=None, split="test")]
    p = _custom(tmp_path, rows[0], "", rows[1])
    validate_custom_file(p)
    assert read_custom_file(p) == rows


@pytest.mark.parametrize("field, value, expect", [
    ("question", "", "field 'question': must be a non-empty string"),
    ("question", 3, "field 'question': must be a non-empty string, got integer 3"),
    ("choices", "Paris", "field 'choices': must be a list of 2 to 10 strings, got string \"Paris\""),
    ("choices", ["only"], "field 'choices': must be a list of 2 to 10 strings, got a list of 1"),
    ("choices", [f"c{i}" for i in range(12)], "field 'choices': must be a list of 2 to 10 strings, got a list of 12"),
    ("choices", ["a", ""], "field 'choices': item 1 must be a non-empty string"),
    ("choices", ["a", 2], "field 'choices': item 1 must be a non-empty string, got integer 2"),
    ("choices", ["Paris", "Rome", "Paris"], "field 'choices': items 0 and 2 are the same text string \"Paris\""),
    ("choices", ["a  b", "a b "], "field 'choices': items 0 and 1 are the same text"),
    ("answer", 1.9, "field 'answer': must be an integer index into 'choices', got number 1.9"),
    ("answer", True, "field 'answer': must be an integer index into 'choices', got boolean true"),
    ("answer", "1", "field 'answer': must be an integer index into 'choices', got string \"1\""),
    ("answer", 2, "field 'answer': 2 out of range for 2 choices"),
    ("answer", -1, "field 'answer': -1 out of range"),
    ("passage", ["p"], "field 'passage': must be a string or null"),
    ("id", 1.5, "field 'id': must be a non-empty string or an integer"),
    ("id", False, "field 'id': must be a non-empty string or an integer"),
    ("split", "validation", "field 'split': must be one of ['train', 'cond', 'test']"),
])
def test_custom_bad_field_names_file_line_and_field(tmp_path, field, value, expect):
    p = _custom(tmp_path, GOOD_ROW, "", dict(GOOD_ROW, **{field: value}))
    assert _custom_error(p).startswith(f"{p}, line 3: {expect}")


@pytest.mark.parametrize("field", ["question", "choices", "answer"])
def test_custom_missing_field(tmp_path, field):
    row = {k: v for k, v in GOOD_ROW.items() if k != field}
    assert _custom_error(_custom(tmp_path, row)).endswith(f"line 1: missing field '{field}'")


def test_custom_line_must_be_an_object(tmp_path):
    assert "line 2: expected a JSON object, got array [1, 2]" in _custom_error(_custom(tmp_path, GOOD_ROW, "[1, 2]"))


def test_custom_duplicate_ids_name_both_lines(tmp_path):
    p = _custom(tmp_path, dict(GOOD_ROW, id="x"), dict(GOOD_ROW, id=1), "", dict(GOOD_ROW, id="1"))
    assert _custom_error(p) == f"{p}, line 4: field 'id': duplicate id string \"1\" (already used on line 2)"


def test_custom_path_must_be_a_regular_file(tmp_path):
    assert _custom_error(tmp_path) == f"{tmp_path}: not a regular file (a custom dataset is one JSONL file)"
    with pytest.raises(FileNotFoundError, match="file not found"):
        validate_custom_file(tmp_path / "missing.jsonl")


def test_custom_empty_file(tmp_path):
    assert _custom_error(_custom(tmp_path, "", "  ")).endswith(": no items (the file is empty)")


def test_custom_truncated_line_is_invalid_json(tmp_path):
    p = _custom(tmp_path, GOOD_ROW, "", '{"question": "q", "choi')
    assert _custom_error(p).startswith(f"{p}, line 3: invalid JSON: Unterminated string")


def test_custom_non_utf8_byte(tmp_path):
    p = tmp_path / "latin1.jsonl"
    first = (json.dumps(GOOD_ROW) + "\n\n").encode()
    before = '{"question": "caf'
    p.write_bytes(first + (before + '\u00e9?"}\n').encode("latin-1"))
    assert _custom_error(p) == (f"{p}, line 3: not UTF-8: byte 0xe9 at byte offset {len(first) + len(before)} "
                                f"of the file (byte {len(before) + 1} of the line)")


def _outputs(name: str, out_dir, tasks_dir) -> list:
    """What the prepare_data rule declares: the splits, the lm-eval rows and the task file."""
    return [out_dir / f for f in ("train.jsonl", "cond.jsonl", "test.jsonl", "test.lmeval.jsonl")] + \
        [tasks_dir / f"{task_name(name)}.yaml"]


def test_custom_errors_fail_preparation_with_dataset_name(tmp_path):
    p = _custom(tmp_path, GOOD_ROW, dict(GOOD_ROW, choices="Paris"))
    cfg = validate_config({"data": {"datasets": ["mine", "other"],
                                    "custom": {"mine": {"path": str(p)}, "other": {"path": str(p)}}},
                           "base_model": {"source": "tiny"}})
    with pytest.raises(ValueError, match="^" + re.escape(f"custom dataset 'mine': {p}, line 2: field 'choices'")):
        prepare("mine", cfg["data"], {"format": "cloze"}, 0, _outputs("mine", tmp_path / "out", tmp_path / "tasks"))
    assert not (tmp_path / "out").exists()


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match="^" + re.escape(f"{p}, line 3: invalid JSON: Expecting value")):
        read_jsonl(p)
    p.write_bytes(b'{"a": 1}\n\n{"a": "\xff"}\n')
    msg = f"{p}, line 3: not UTF-8: byte 0xff at byte offset 17 of the file"
    with pytest.raises(ValueError, match="^" + re.escape(msg)):
        read_jsonl(p)


def test_prompt_template_is_shared_by_training_and_scoring(tmp_path):
    """The lm-eval row for an item carries exactly the training context, and the gold choice is
    the training continuation (after the shared delimiter)."""
    cfg = _smoke_cfg()
    prepare("sounds", cfg["data"], {"format": "cloze"}, 0, _outputs("sounds", tmp_path / "sounds", tmp_path / "tasks"))
    test = read_jsonl(tmp_path / "sounds" / "test.jsonl")
    rows = read_jsonl(tmp_path / "sounds" / "test.lmeval.jsonl")
    for it, row in zip(test, rows):
        ctx, cont = training_example(it)
        assert row["context"] == ctx
        assert " " + row["choices"][row["answer"]] == cont
    task = lm_eval_task("sounds", tmp_path / "sounds" / "test.lmeval.jsonl")
    assert task["task"] == task_name("sounds") and task["output_type"] == "multiple_choice"
    assert task["dataset_kwargs"]["data_files"]["test"].startswith("/")
    assert (tmp_path / "tasks" / "dnd_sounds.yaml").exists()


def test_letter_format():
    it = {"id": "1", "question": "2+2?", "choices": ["3", "4"], "answer": 1}
    assert render_context(it, "letter") == "Question: 2+2?\nA. 3\nB. 4\nAnswer:"
    assert to_eval_record(it, "letter")["choices"] == ["A", "B"]


@needs_shared
def test_real_benchmarks_every_builtin_by_three_disjoint(tmp_path):
    cfg = validate_config({"data": {"datasets": list(REGISTRY), "dir": str(SHARED_DATA)},
                           "base_model": {"source": "tiny"},
                           "crossdomain": {"target": None}})  # every built-in trains: no new domain left
    files = []
    for name in REGISTRY:
        sizes = prepare(name, cfg["data"], {"format": "cloze"}, 0, _outputs(name, tmp_path / name, tmp_path / "tasks"))
        assert all(sizes[s] > 0 for s in SPLITS)

        splits = {s: read_jsonl(tmp_path / name / f"{s}.jsonl") for s in SPLITS}
        keys = {s: {item_key(x) for x in splits[s]} for s in SPLITS}
        ids = {s: {x["id"] for x in splits[s]} for s in SPLITS}
        for a, b in (("train", "cond"), ("train", "test"), ("cond", "test")):
            assert not keys[a] & keys[b], (name, a, b)
            assert not ids[a] & ids[b], (name, a, b)
        for it in splits["test"]:
            assert 0 <= it["answer"] < len(it["choices"]) and len(it["choices"]) >= 2
        files += [tmp_path / name / f"{s}.jsonl" for s in reversed(SPLITS)]  # any order of splits
    table = summary_csv(files).strip().split("\n")
    assert table[0] == "dataset,split,n" and len(table) == 1 + len(REGISTRY) * 3
    assert [row.split(",")[:2] for row in table[1:]] == [[d, s] for d in REGISTRY for s in SPLITS]
    with pytest.raises(FileNotFoundError,
                       match=r"^cond split of \w+: no path ending in \w+/cond.jsonl among the --data"):
        summary_csv([f for f in files if f.name != "cond.jsonl"])


def test_unknown_dataset_in_loader():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_pools("nope", {"datasets": []})


def test_science_set_parses_inline_choices():
    from dnd.benchmarks.datasets import parse_science_item

    rec = {"prompt": "What is used in cheese?choices: A: protozoa, B: gymnosperms, C: mesophilic organisms, "
                     "D: viruses", "response": "[C]", "system": ""}
    it = parse_science_item(rec, 3, "science")
    assert it == {"id": "science-3", "question": "What is used in cheese?",
                  "choices": ["protozoa", "gymnosperms", "mesophilic organisms", "viruses"], "answer": 2}
    with pytest.raises(ValueError, match="science-4: no 'choices"):
        parse_science_item({"prompt": "no choices here", "response": "[A]"}, 4, "science")
    with pytest.raises(ValueError, match="gold label 'E'"):
        parse_science_item({**rec, "response": "[E]"}, 5, "science")
    pools = load_pools("science", {"datasets": ["science"], "dir": str(SHARED_DATA)})
    assert pools[0] is None and len(pools[1]) == 2001
    assert [sum(it["answer"] == k for it in pools[1]) for k in range(4)] == [487, 504, 472, 538]
