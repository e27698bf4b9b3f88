"""The one device setting (dnd.device, `--device`): parsing, the one-line refusals, what is recorded,
and each stage run with the device given explicitly, with every parameter and input where it says.

This machine has no GPU: the stages run on `cpu` given explicitly (never picked by themselves), and
a CUDA device is refused before any work. scripts/gpu_check.py runs the same stages on CUDA
against the CPU wherever a GPU is available."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dnd import device as dev
from dnd.cli import main
from dnd.config import section

CPU = torch.device("cpu")


def test_settings_resolve_or_are_refused_in_one_line():
    assert dev.resolve("cpu") == CPU and dev.resolve(None) == CPU
    if not torch.cuda.is_available():
        assert dev.resolve("auto") == CPU  # auto: the CPU where there is no CUDA device
        for spec in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(dev.DeviceError, match=rf"^--device {spec} asked for, but torch .* has no CUDA device "
                                                      r"here \("):
                dev.resolve(spec)
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "mps"):
        with pytest.raises(dev.DeviceError, match=rf"^--device '{bad}' is not one of auto, cpu, cuda or cuda:N$"):
            dev.resolve(bad)


def test_the_cpu_is_recorded_as_nothing():
    """Artifacts and score-cache keys of the CPU run stay what they were before devices were recorded."""
    assert dev.describe("cpu") == "cpu" and dev.recorded("cpu") == {} and dev.recorded(CPU) == {}
    dev.set_deterministic("cpu")  # nothing to set on the CPU, and no error


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_a_missing_cuda_device_stops_a_command_before_any_work(tmp_path, caplog):
    out = tmp_path / "adapter"
    rc = main(["generate", "--device", "cuda", "--generator", str(tmp_path / "none.pt"), "--prompts", "random:5",
               "--out", str(out)])
    assert rc == 1 and not out.exists()
    assert "dnd generate failed: DeviceError: --device cuda asked for, but torch" in caplog.text
    assert "none.pt" not in caplog.text  # refused before the generator was looked for


def _on(module: torch.nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*module.parameters(), *module.buffers()])


def _inputs_seen(module: torch.nn.Module) -> list[torch.device]:
    """The devices of every tensor that enters any submodule (forward pre-hooks) while it runs."""
    seen: list[torch.device] = []

    def hook(_mod, args, kwargs):
        for a in [*args, *kwargs.values()]:
            if isinstance(a, torch.Tensor):
                seen.append(a.device)

    for m in module.modules():
        m.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_encoder_on_the_given_device(tiny_model_dir):
    from dnd.method.encoder import make_encoder

    cfg = section("encoder", {"kind": "llm", "path": str(tiny_model_dir), "max_length": 12, "pooling": "mean"})
    enc = make_encoder(cfg, CPU)
    assert enc.device == CPU and _on(enc.model, CPU)
    seen = _inputs_seen(enc.model)
    states, mask = enc.encode(["one prompt", "and a second, longer one"], out_dtype=torch.float16)
    assert seen and set(seen) == {CPU}
    assert states.dtype == torch.float16 and states.device == CPU and mask.device == CPU
    full, _ = enc.encode(["one prompt", "and a second, longer one"])
    assert torch.equal(states, full.half())  # float16 per batch == float32 rounded once at the end


def test_encode_command_writes_no_device_for_the_cpu(tiny_model_dir, tmp_path):
    """The CPU cache is byte-compatible with the caches written before devices were recorded."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"question {i}?", "choices": ["a", "b"],
                                        "answer": 0}) + "\n" for i in range(3)))
    params = {"kind": "llm", "path": str(tiny_model_dir), "max_length": 8, "pooling": "mean"}
    out = tmp_path / "enc.pt"
    assert main(["encode", "--device", "cpu", "--threads", "1", "--params", json.dumps(params), "--data", str(data),
                 "--out", str(out)]) == 0
    cache = torch.load(out, weights_only=True)
    assert "device" not in cache and cache["states"].dtype == torch.float16


def test_generation_session_on_the_given_device(tmp_path):
    from dnd.generate import AdapterJob, GenerationSession
    from test_generate import _checkpoint

    path = tmp_path / "generator.pt"
    torch.save(_checkpoint(), path)
    session = GenerationSession(threads=1, device=CPU)
    model, _, _ = session._generator(str(path))
    assert _on(model, CPU)
    seen = _inputs_seen(model)
    timing = session.run(AdapterJob(str(path), "random:5", str(tmp_path / "adapter")))
    assert seen and set(seen) == {CPU}
    assert "device" not in timing  # the CPU is recorded as nothing


def test_scorer_on_the_given_device(tiny_model_dir, tmp_path):
    from conftest import save_random_lora
    from dnd.evaluate import InPlaceScorer, load_state_dict

    lora = tmp_path / "lora"
    save_random_lora(tiny_model_dir, lora, seed=1)
    scorer = InPlaceScorer(tiny_model_dir, lora, tmp_path, None, limit=None, batch_size=4, device=CPU)
    assert scorer.device == CPU and _on(scorer.model, CPU) and scorer.lm.device == CPU
    assert all(s.pristine.device == CPU for s in scorer.slots)
    scorer.activate(load_state_dict(lora))  # the adapter's tensors are moved to the model's device to merge
    assert _on(scorer.model, CPU)


def test_score_cache_key_names_a_device_only_off_the_cpu(tiny_model_dir, tmp_path):
    from dnd.scoring.cache import content_context

    _, default = content_context(tiny_model_dir, {}, {}, {"dtype": "float32"})
    _, cpu = content_context(tiny_model_dir, {}, {}, {"dtype": "float32"}, device=CPU)
    assert default == cpu and "device" not in cpu


def test_zoo_resume_fingerprint_keeps_the_cpu_and_separates_other_devices(tiny_model_dir, tmp_path):
    from dnd.zoo import resume_fingerprint

    train = tmp_path / "train.jsonl"
    train.write_text("{}\n")
    args = ({"r": 2}, "cloze", 0, train, Path(tiny_model_dir))
    assert resume_fingerprint(*args) == resume_fingerprint(*args, device=CPU)


def test_generator_training_on_the_given_device(tmp_path_factory):
    """train_generator with the device given: the same checkpoint as the default call, its tensors on
    the CPU (it loads anywhere), its resume fingerprint the CPU's own."""
    import dnd.generators as training
    import test_generators as tg

    work = tg.make_work(tmp_path_factory.mktemp("devwork"))
    args = (tg.params(steps=2, save_every=1), tg.TARGET, tg.SOURCES,
            [work / f"results/zoo/{d}/tokens.pt" for d in tg.SOURCES],
            [work / f"results/encoded/{d}/train.pt" for d in tg.SOURCES], work / "results/zoo/alpha/final")
    default = training.train_generator(*args, work / "a.pt", work / "a.csv")
    given = training.train_generator(*args, work / "b.pt", work / "b.csv", device=CPU)
    assert default["model"].keys() == given["model"].keys()
    for k, v in given["model"].items():
        assert v.device == CPU and torch.equal(v, default["model"][k]), k
