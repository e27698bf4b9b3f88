"""`dnd generate` never deletes what it did not write, never writes non-finite weights, reads
its checkpoint safely and keeps timings out of the adapter directory.

The generator is a hand-built, untrained checkpoint (one LoRA module, 4 parameter tokens) on
the real frozen encoder: each generation takes about a second.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dnd import io as dio
from dnd.cli import main
from dnd.config import section
from dnd.generate import MARKER, generate_adapter
from dnd.method.encoder import make_encoder
from dnd.method.generator_checkpoint import CHECKPOINT_FORMAT
from dnd.method.generator_model import HyperConvDecoder
from dnd.method.tokenization import LoraLayout
from dnd.schedule import ADAPTER_KINDS, adapter_seed

N, R, W = 2, 2, 4
PREFIX = "base_model.model.model.layers.0.self_attn.q_proj"
ADAPTER = {"adapter_config.json", "adapter_model.safetensors", MARKER}


def _checkpoint(fill: float | None = None, seed: int = 0, max_length: int = 8) -> dict:
    """A generator for one rank-2 q_proj LoRA (8 x 8): random decoder weights (`seed`), or `fill`
    in every one; its encoder (mean pooled) reads the first `max_length` tokens of a prompt."""
    torch.manual_seed(seed)
    layout = LoraLayout.from_state_dict({f"{PREFIX}.lora_A.weight": torch.zeros(R, 8),
                                         f"{PREFIX}.lora_B.weight": torch.zeros(8, R)}, W)
    decoder = HyperConvDecoder((N, 1, 384), [[2, 4, 8]], (layout.n_tokens, R + 2, W + 2), kernel=1)
    if fill is not None:
        with torch.no_grad():
            for p in decoder.parameters():
                p.fill_(fill)
    return {
        "format": CHECKPOINT_FORMAT,
        "model": decoder.state_dict(),
        "decoder": decoder.hparams(),
        "layout": layout.to_dict(),
        "adapter_config": {"peft_type": "LORA", "r": R, "lora_alpha": 2 * R, "target_modules": ["q_proj"]},
        "encoder": section("encoder", {"max_length": max_length, "pooling": "mean"}),
        "n_params": sum(p.numel() for p in decoder.parameters()),
    }


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("generator") / "generator.pt"
    torch.save(_checkpoint(), path)
    return path


def generate(generator: Path, out: str | Path, *extra: str) -> int:
    return main(["generate", "--generator", str(generator), "--prompts", "random:5", "--out", str(out),
                 "--threads", "1", *extra])  # fmt: skip


def listing(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(d.rglob("*"))}


def test_refuses_dir_with_unrelated_file(generator: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert generate(generator, out) == 1
    assert listing(tmp_path) == {"mine": b"<dir>", "mine/notes.txt": b"keep me"}  # no temp sibling left
    assert "refusing to replace" in caplog.text and "notes.txt" in caplog.text
    # a PEFT adapter that dnd generate did not write (e.g. a zoo LoRA) is not ours either
    zoo = tmp_path / "final"
    zoo.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        (zoo / name).write_text(name)
    assert generate(generator, zoo) == 1
    assert sorted(p.name for p in zoo.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize("out", [".", "..", "sub/..", "/"])
def test_refuses_cwd_and_its_parents_even_with_force(generator: Path, tmp_path: Path, monkeypatch, out: str) -> None:
    cwd = tmp_path / "cwd"
    (cwd / "sub").mkdir(parents=True)
    (cwd / "data.txt").write_text("precious")
    monkeypatch.chdir(cwd)
    before = listing(tmp_path)
    assert generate(generator, out) == 1
    assert generate(generator, out, "--force") == 1
    assert listing(tmp_path) == before


def test_refuses_a_file_and_the_repository(generator: Path, tmp_path: Path) -> None:
    from dnd.config import REPO_ROOT

    (tmp_path / "file").write_text("x")
    assert generate(generator, tmp_path / "file", "--force") == 1
    assert (tmp_path / "file").read_text() == "x"
    with pytest.raises(dio.UnsafeOutputError, match="refusing to replace"):
        dio.check_replaceable_dir(REPO_ROOT, lambda _: True)


def test_regenerates_into_previous_adapter_and_empty_dir(generator: Path, tmp_path: Path) -> None:
    out = tmp_path / "dnd_0"
    out.mkdir()  # empty: may be replaced
    assert generate(generator, out) == 0
    assert {p.name for p in out.iterdir()} == ADAPTER  # no timing.json inside
    first = listing(out)
    assert generate(generator, out) == 0  # a previous adapter of ours: replaced
    assert listing(out) == first  # same content on every run (hashable artifact)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dnd_0"]  # nothing left aside
    # an adapter directory of an earlier version (with timing.json inside) is ours too
    (out / MARKER).unlink()
    (out / "timing.json").write_text("{}")
    assert generate(generator, out) == 0 and {p.name for p in out.iterdir()} == ADAPTER


def test_force_replaces_non_empty_dir(generator: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "deep").mkdir(parents=True)
    (out / "deep" / "notes.txt").write_text("old")
    assert generate(generator, out, "--force") == 0
    assert {p.name for p in out.iterdir()} == ADAPTER


def test_failed_swap_keeps_the_old_adapter(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "old.bin").write_text("old")
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.endswith(".tmp"):
            raise OSError("disk full")
        real_rename(src, dst)

    monkeypatch.setattr(dio.os, "rename", rename)
    with pytest.raises(OSError, match="disk full"):
        with dio.atomic_path(out, is_dir=True) as tmp:
            (tmp / "new.bin").write_text("new")
    assert listing(tmp_path) == {"adapter": b"<dir>", "adapter/old.bin": b"old"}


def test_nan_generator_writes_nothing(tmp_path: Path) -> None:
    ckpt = tmp_path / "nan.pt"
    torch.save(_checkpoint(fill=float("nan")), ckpt)
    out, timing = tmp_path / "out", tmp_path / "timing.json"
    with pytest.raises(ValueError, match=f"generator checkpoint {ckpt} produced non-finite"):
        generate_adapter(ckpt, "random:5", out, timing_path=timing, threads=1)
    assert not out.exists() and not timing.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]


def test_truncated_checkpoint_is_named(generator: Path, tmp_path: Path, caplog) -> None:
    bad = tmp_path / "generator.pt"
    bad.write_bytes(generator.read_bytes()[:300])
    with caplog.at_level(logging.ERROR):
        assert generate(bad, tmp_path / "out") == 1
    assert f"generator checkpoint {bad} cannot be read" in caplog.text
    assert not (tmp_path / "out").exists()


def test_checkpoint_without_adapter_config_is_named(tmp_path: Path, caplog) -> None:
    """Generators saved before the adapter_config was stored are refused, not patched up."""
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in _checkpoint().items() if k != "adapter_config"}, old)
    with caplog.at_level(logging.ERROR):
        assert generate(old, tmp_path / "out") == 1
    assert f"generator checkpoint {old} lacks ['adapter_config']" in caplog.text
    assert not (tmp_path / "out").exists()


def test_adapter_seeds_are_the_workflow_seeds() -> None:
    """seed * 1000 + 0 / 100 / 200 / 300 (dnd and every dnd_<design> / control_other / control_random /
    control_shuffled) + i, as the rule passes them: the designs share their prompt draws."""
    assert list(ADAPTER_KINDS) == ["dnd", "dnd_hyperconv", "dnd_basis", "control_other", "control_random",
                                   "control_shuffled"]
    assert [adapter_seed(7, k, i) for k in ADAPTER_KINDS for i in (0, 3)] == [
        7000, 7003, 7000, 7003, 7000, 7003, 7100, 7103, 7200, 7203, 7300, 7303]
    assert adapter_seed(0, "dnd", 0) == 0
    with pytest.raises(ValueError, match="unknown adapter kind"):
        adapter_seed(0, "control", 0)


def test_generation_imports_no_training_code() -> None:
    import dnd

    code = ("import sys, dnd.generate; bad = sorted({'dnd.generators', 'dnd.zoo', 'peft'} & set(sys.modules)); "
            "print(bad); sys.exit(bool(bad))")
    env = {**os.environ, "PYTHONPATH": str(Path(dnd.__file__).parents[1])}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_timing_goes_to_its_own_file(generator: Path, tmp_path: Path) -> None:
    timings = tmp_path / "results/timings/generate/gamma"
    for name in ("dnd_1", "dnd_0"):
        out = tmp_path / "results/generated/gamma" / name
        assert generate(generator, out, "--timing", str(timings / f"{name}.json")) == 0
        assert {p.name for p in out.iterdir()} == ADAPTER
        assert set(load_file(out / "adapter_model.safetensors")) == {f"{PREFIX}.lora_A.weight",
                                                                     f"{PREFIX}.lora_B.weight"}
    t = json.loads((timings / "dnd_0.json").read_text())
    assert t["total_s"] == pytest.approx(t["encode_s"] + t["decode_s"] + t["write_s"], abs=1e-3)
    assert t["n_prompts"] == N
    out = tmp_path / "results/generated/gamma/dnd_0"
    assert generate(generator, out, "--timing", str(out / "timing.json")) == 1  # never inside the adapter
    assert {p.name for p in out.iterdir()} == ADAPTER
    eff = tmp_path / "results/efficiency.csv"
    assert main(["efficiency", "--timings", *map(str, timings.glob("*.json")), "--out", str(eff)]) == 0
    rows = list(csv.DictReader(eff.open()))
    assert [(r["target"], r["adapter"]) for r in rows] == [("gamma", "dnd_0"), ("gamma", "dnd_1")]


@pytest.mark.parametrize("spec, expect", [
    ("random:abc", "--prompts 'random:abc': random:<n> needs a whole number n >= 1"),
    ("random:0", "--prompts 'random:0': random:<n> needs a whole number n >= 1"),
    ("random:", "--prompts 'random:': random:<n> needs a whole number n >= 1"),
    ("random:1", "--prompts random:1: 1 prompt, but this generator takes N=2"),
])
def test_bad_random_spec_is_named_not_a_missing_file(generator: Path, tmp_path: Path, caplog, spec, expect) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["generate", "--generator", str(generator), "--prompts", spec, "--out", str(tmp_path / "out")]) == 1
    assert expect in caplog.text and "not found" not in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, text", [("one.txt", "the only prompt\n\n"), ("one.jsonl", '{"text": "only"}\n')])
def test_too_few_prompts_refused(generator: Path, tmp_path: Path, caplog, name, text) -> None:
    src = tmp_path / name
    src.write_text(text)
    with caplog.at_level(logging.ERROR):
        assert main(["generate", "--generator", str(generator), "--prompts", str(src),
                     "--out", str(tmp_path / "out")]) == 1
    assert f"--prompts {src}: 1 prompt, but this generator takes N=2" in caplog.text
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.ERROR):
        assert main(["generate", "--generator", str(generator), "--prompts", f"shuffled:{src}", "--out",
                     str(tmp_path / "out")]) == 1
    assert f"--prompts shuffled:{src}: 1 prompt" in caplog.text


def test_prompt_count_rule() -> None:
    from dnd.generate import check_prompt_count

    check_prompt_count("random:4", 4, 4)
    check_prompt_count("cond.jsonl", 2, 128)  # prepared items: drawn with replacement (math, code: n_cond < N)
    for spec, n in [("p.txt", 3), ("random:3", 3), ("shuffled:p.txt", 3), ("cond.jsonl", 1)]:
        with pytest.raises(ValueError, match=f"--prompts {re.escape(spec)}: {n} prompt"):
            check_prompt_count(spec, n, 4)


# ----------------------------------------------------------------------------- generate-batch


@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory, generator: Path) -> dict[str, Path]:
    """Three generators: the module's, another design on the same encoder (other weights) and one
    whose encoder reads fewer tokens; a text file of prompts."""
    d = tmp_path_factory.mktemp("batch")
    torch.save(_checkpoint(seed=1), d / "other.pt")
    torch.save(_checkpoint(seed=2, max_length=6), d / "short.pt")
    (d / "prompts.txt").write_text("".join(f"question {k}: which {k % 3} is the {k % 5}th one?\n" for k in range(9)))
    return {"a": generator, "b": d / "other.pt", "short": d / "short.pt", "txt": d / "prompts.txt"}


def _plan(inputs: dict[str, Path], root: Path) -> list[dict]:
    """dnd_0 and its second design on the same draw, a generator whose encoder differs on that
    draw, a random-text and a shuffled-words control, another draw of the first generator."""
    txt = str(inputs["txt"])
    entries = [("dnd_0", "a", txt, 0), ("dnd_other_0", "b", txt, 0), ("dnd_short_0", "short", txt, 0),
               ("control_random_0", "a", "random:5", 200), ("control_shuffled_0", "a", f"shuffled:{txt}", 300),
               ("dnd_1", "a", txt, 1)]
    return [{"generator": str(inputs[g]), "prompts": prompts, "seed": seed, "n_prompts": N,
             "out": str(root / "generated" / name), "timing": str(root / "timings" / f"{name}.json")}
            for name, g, prompts, seed in entries]


def test_batch_writes_the_adapters_of_single_runs_byte_for_byte(batch_inputs, tmp_path: Path) -> None:
    plan = _plan(batch_inputs, tmp_path / "batch")
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    assert main(["generate-batch", "--threads", "1", "--plan", str(tmp_path / "plan.json")]) == 0
    for entry in plan:
        single = tmp_path / "single" / Path(entry["out"]).name
        assert main(["generate", "--threads", "1", "--generator", entry["generator"], "--prompts", entry["prompts"],
                     "--seed", str(entry["seed"]), "--n-prompts", str(N), "--out", str(single)]) == 0
        assert listing(Path(entry["out"])) == listing(single), entry["out"]
        assert {p.name for p in Path(entry["out"]).iterdir()} == ADAPTER
    # the generators differ, so equal bytes are no accident of a constant output
    first = {e["out"]: (Path(e["out"]) / "adapter_model.safetensors").read_bytes() for e in plan}
    assert len(set(first.values())) == len(plan)
    timings = {Path(e["out"]).name: json.loads(Path(e["timing"]).read_text()) for e in plan}
    assert sorted(p.name for p in (tmp_path / "batch" / "timings").iterdir()) == sorted(f"{n}.json" for n in timings)
    flags = {n: (t["generator_reused"], t["encoder_reused"], t["encode_reused"]) for n, t in timings.items()}
    assert flags == {"dnd_0": (False, False, False), "dnd_other_0": (False, True, True),
                     "dnd_short_0": (False, False, False), "control_random_0": (True, True, False),
                     "control_shuffled_0": (True, True, False), "dnd_1": (True, True, False)}
    assert timings["dnd_other_0"]["encode_s"] == 0  # the draw dnd_0 encoded
    for t in timings.values():
        assert t["total_s"] == pytest.approx(t["encode_s"] + t["decode_s"] + t["write_s"], abs=1e-3)
        assert t["n_prompts"] == N
    # loading is paid once: the adapters after the first of a generator only read their prompts
    assert timings["dnd_1"]["load_s"] < timings["dnd_0"]["load_s"]
    # a rerun replaces the batch's own adapters with the same bytes
    assert main(["generate-batch", "--threads", "1", "--plan-json", json.dumps(plan)]) == 0
    assert {e["out"]: (Path(e["out"]) / "adapter_model.safetensors").read_bytes() for e in plan} == first


@pytest.mark.parametrize("cfg", [{"max_length": 8, "pooling": "mean"},
                                 {"max_length": 32, "pooling": "none", "batch_size": 4}])
def test_encoding_a_draw_again_gives_the_same_states(cfg) -> None:
    """What lets generate-batch encode a draw once for every design: the encoder's states for the
    same prompts (hence the same batches) do not depend on what it encoded before."""
    encoder = make_encoder(section("encoder", cfg))
    texts = [f"prompt {k}: " + "word " * (k % 7) for k in range(10)]
    first, mask = encoder.encode(texts)
    encoder.encode(["something else entirely, of another length than the rest"] * 3)
    again, mask_again = encoder.encode(texts)
    assert torch.equal(first, again) and torch.equal(mask, mask_again)


@pytest.mark.parametrize("plan, expect", [
    ("[", "--plan-json: not valid JSON (Expecting value: line 1 column 2 (char 1))"),
    ("[]", "--plan-json: expected a non-empty JSON list of adapters, got list (empty)"),
    ('{"generator": "g"}', "--plan-json: expected a non-empty JSON list of adapters, got dict"),
    ('["g.pt"]', "--plan-json: entry 0 is a str, expected an object with keys"),
    ('[{"generator": "g.pt", "prompts": "random:5"}]', "--plan-json: entry 0: missing ['out']"),
    ('[{"generator": "g.pt", "prompts": "random:5", "out": "o", "sed": 1}]',
     "--plan-json: entry 0: unknown key(s) ['sed']"),
    ('[{"generator": "g.pt", "prompts": "random:5", "out": "o", "seed": "1"}]',
     "--plan-json: entry 0: seed is '1', expected a whole number"),
    ('[{"generator": "", "prompts": "random:5", "out": "o"}]',
     "--plan-json: entry 0: generator is '', expected a non-empty string"),
    ('[{"generator": "g.pt", "prompts": "random:5", "out": "o"}, {"generator": "g.pt", "prompts": "random:5", '
     '"out": "o"}]', "--plan-json: entries 0 and 1 both write out o"),
    ('[{"generator": "g.pt", "prompts": "random:5", "out": "o", "timing": "o/t.json"}]',
     "--plan-json: entry 0: timing o/t.json lies inside the adapter directory o"),
])
def test_bad_plan_is_one_line(tmp_path: Path, monkeypatch, caplog, plan: str, expect: str) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert main(["generate-batch", "--plan-json", plan]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and expect in errors[0], errors
    assert "\n" not in errors[0] and list(tmp_path.iterdir()) == []


def test_batch_checks_every_output_before_any_work(generator: Path, tmp_path: Path, caplog) -> None:
    """An output it may not replace (here the second) stops the batch before the first adapter."""
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("keep me")
    plan = [{"generator": str(generator), "prompts": "random:5", "out": str(tmp_path / "dnd_0")},
            {"generator": str(generator), "prompts": "random:5", "out": str(keep)}]
    with caplog.at_level(logging.ERROR):
        assert main(["generate-batch", "--plan-json", json.dumps(plan)]) == 1
    assert "refusing to replace" in caplog.text and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # a failing adapter is named (the ones before it stay written)
    plan = [{"generator": str(generator), "prompts": "random:5", "out": str(tmp_path / "dnd_0")},
            {"generator": str(tmp_path / "missing.pt"), "prompts": "random:5", "out": str(tmp_path / "dnd_1")}]
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["generate-batch", "--plan-json", json.dumps(plan)]) == 1
    assert f"adapter 2 of 2 ({tmp_path / 'dnd_1'}) failed" in caplog.text and "missing.pt" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dnd_0", "mine"]
