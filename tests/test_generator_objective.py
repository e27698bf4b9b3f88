"""Function-space generator training (generator.objective sft/both) and the t2l design, on tiny
models: the functional LoRA forward against PEFT's merged one, gradients into the generator,
learning on a toy problem, determinism and resume, the NaN stop, the unchanged reconstruction
path, and the t2l generator through generation and PEFT loading."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dnd.generators as training
from conftest import LORA_MODULES
from dnd.cli import main
from dnd.config import GENERATOR_EXTRA_KEYS, ConfigError, rule_section, section
from dnd.io import read_jsonl
from dnd.method.functional_lora import FunctionalLora
from dnd.method.generator_checkpoint import load_generator
from dnd.method.t2l import T2LHypernetwork
from dnd.method.tokenization import LoraLayout, decode_tokens, detokenize
from dnd.schedule import derive_seed, warmup_cosine
from dnd.zoo import NonFiniteError
from test_generators import N_PROMPTS, SOURCES, TARGET, W, make_work, params

LORA = {"r": 8, "alpha": 16}


# tiny models only slow down when threads fight over a shared CPU (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """test_generators' tiny results tree (zoo tokens, encoded prompts, train.jsonl per dataset)."""
    return make_work(tmp_path_factory.mktemp("dnd"))


def sft_train(work: Path, base: Path, out: Path, timings: Path | None = None, **generator) -> dict:
    """train_generator on the `work` fold with the sources' train.jsonl and `base` (the tiny
    model with a tokenizer; its LoRA shapes are those of the zoo's tiny Llama)."""
    return training.train_generator(
        params(**generator), TARGET, SOURCES,
        [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
        [work / f"results/encoded/{d}/train.pt" for d in SOURCES],
        work / "results/zoo/alpha/final", out, out.with_suffix(".csv"), timings,
        train_data=[work / f"results/data/{d}/train.jsonl" for d in SOURCES], base_model=base,
    )  # fmt: skip


def zoo_layout(work: Path) -> LoraLayout:
    return LoraLayout.from_dict(training.load_zoo_tokens(work / "results/zoo/alpha/tokens.pt")["layout"])


def fp32_lora() -> dict:
    return {**section("lora", LORA), "bf16_autocast": False}


# ----------------------------------------------------------------------------- functional LoRA


def test_functional_lora_equals_peft_merged_forward(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                        LoraConfig(r=8, lora_alpha=16, target_modules=LORA_MODULES, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    sd = {k: v.detach().clone() for k, v in get_peft_model_state_dict(pm).items()}
    fl = FunctionalLora(tiny_model_dir, fp32_lora(), LoraLayout.from_state_dict(sd, W), "cloze")
    ids = torch.randint(4, 300, (2, 12))
    merged = pm.merge_and_unload().eval()
    with torch.no_grad():
        expected, base = merged(ids).logits, fl.peft_model.get_base_model()(ids).logits
        got = fl.logits(sd, ids)
    assert (got - expected).abs().max() <= 1e-5
    assert (base - expected).abs().max() > 1e-2  # the LoRA changes the output: the check has teeth
    # the frozen model holds no copy of the generated weights after the call
    assert all(float(p.abs().sum()) == 0 for n, p in fl.peft_model.named_parameters() if "lora_B" in n)
    with pytest.raises(ValueError, match="rank|shape"):
        FunctionalLora(tiny_model_dir, {**fp32_lora(), "r": 4, "alpha": 8}, LoraLayout.from_state_dict(sd, W), "cloze")
    with pytest.raises(ValueError, match="use_rslora"):
        FunctionalLora(tiny_model_dir, fp32_lora(), LoraLayout.from_state_dict(sd, W), "cloze", {"use_rslora": True})


@pytest.mark.parametrize("design", ["hyperconv", "t2l"])
def test_gradient_reaches_the_generator(work: Path, tiny_model_dir: Path, design: str) -> None:
    """The answer loss of a generated LoRA back-propagates through the frozen base model and the
    de-tokenization into every trainable generator parameter (default init: no zero layer)."""
    layout = zoo_layout(work)
    gen = section("generator", {**params()["generator"], "design": design, "t2l_hidden": 16, "t2l_embed": 8})
    states = [torch.load(work / f"results/encoded/{d}/train.pt", weights_only=True)["states"] for d in SOURCES]
    tokens = [training.load_zoo_tokens(work / f"results/zoo/{d}/tokens.pt")["tokens"] for d in SOURCES]
    torch.manual_seed(0)
    model = training.build_generator(gen, (N_PROMPTS, *states[0].shape[1:]), (layout.n_tokens, *layout.token_shape),
                                     tokens, layout)
    sft = training.SftObjective(tiny_model_dir, fp32_lora(), layout, "cloze", {}, SOURCES,
                                [work / f"results/data/{d}/train.jsonl" for d in SOURCES], 3, seed=0)
    cond = torch.stack([s[:N_PROMPTS].float() for s in states])
    _, loras = training.generated_lora(model, cond, layout)
    loss = sft.loss(loras, 0, [0, 1])
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(float(g.abs().sum()) > 0 for g in grads.values()), [n for n, g in grads.items() if g.abs().sum() == 0]
    assert sft.draw(5, [0, 1]) == sft.draw(5, [0, 1]) != sft.draw(6, [0, 1])  # seeded by the step


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("design", ["hyperconv", "t2l"])
def test_sft_lowers_the_source_answer_loss(work: Path, tiny_model_dir: Path, tmp_path: Path, design: str) -> None:
    """A few sft steps from the mean source LoRA (zero-initialized output, mean offset) lower the
    answer loss of a source's train items under the LoRA generated from its prompts."""
    extra = {"t2l_hidden": 16, "t2l_embed": 8} if design == "t2l" else {"head": "local"}
    out = tmp_path / "g/generator.pt"
    sft_train(work, tiny_model_dir, out, objective="sft", design=design, steps=12, warmup_steps=0, lr=1e-2,
              output_init="zero", output_offset="mean", sft_items=6, noise_condition=0.0, **extra)
    layout = zoo_layout(work)
    fl = FunctionalLora(tiny_model_dir, fp32_lora(), layout, "cloze")
    model, _ = load_generator(out)
    tokens = [training.load_zoo_tokens(work / f"results/zoo/{d}/tokens.pt")["tokens"] for d in SOURCES]
    before = detokenize(training.mean_token(tokens), layout)  # what the untrained generator outputs
    for d in SOURCES:
        examples = fl.encode(read_jsonl(work / f"results/data/{d}/train.jsonl"))
        cond = torch.load(work / f"results/encoded/{d}/train.pt", weights_only=True)["states"][:N_PROMPTS].float()
        with torch.no_grad():
            after = detokenize(model(cond[None])[0], layout)
            loss_before, loss_after = fl.loss(before, examples).item(), fl.loss(after, examples).item()
        assert loss_after < 0.9 * loss_before, (d, loss_before, loss_after)
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert list(rows[0]) == ["step", "loss", "reconstruction", "sft", "lr"] and len(rows) == 12
    assert all(r["loss"] == r["sft"] for r in rows)  # objective sft: the loss is the answer loss


def test_sft_is_deterministic_resumes_exactly_and_times_its_steps(work: Path, tiny_model_dir: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    kw = dict(objective="both", sft_weight=0.5, sft_items=2)
    first = sft_train(work, tiny_model_dir, tmp_path / "a/generator.pt", timings=tmp_path / "a.json", **kw)
    second = sft_train(work, tiny_model_dir, tmp_path / "b/generator.pt", **kw)
    for k in first["model"]:
        assert torch.equal(first["model"][k], second["model"][k]), k
    log_a = (tmp_path / "a/generator.csv").read_text()
    assert log_a == (tmp_path / "b/generator.csv").read_text()
    for r in csv.DictReader(log_a.splitlines()):  # both = reconstruction + 0.5 * sft
        assert float(r["loss"]) == pytest.approx(float(r["reconstruction"]) + 0.5 * float(r["sft"]), rel=1e-4)
    timings = json.loads((tmp_path / "a.json").read_text())
    assert timings["steps"] == 6 and 0 < timings["sft_forward_s"] < timings["step_s"]
    assert first["generator"]["objective"] == "both" and first["generator"]["sft_weight"] == 0.5

    calls = {"n": 0}
    real = training.SftObjective.loss

    def crashing(self, *a):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, *a)

    out = tmp_path / "c/generator.pt"
    monkeypatch.setattr(training.SftObjective, "loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        sft_train(work, tiny_model_dir, out, **kw)
    monkeypatch.undo()
    assert training.resume_path(out).exists()
    resumed = sft_train(work, tiny_model_dir, out, **kw)
    for k in first["model"]:
        assert torch.equal(first["model"][k], resumed["model"][k]), k
    assert out.with_suffix(".csv").read_text() == log_a


def test_non_finite_answer_loss_stops_training(work: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = training.SftObjective.loss

    def nan_at_step_3(self, *a):
        calls["n"] += 1
        loss = real(self, *a)
        return loss * float("nan") if calls["n"] == 3 else loss

    out = tmp_path / "n/generator.pt"
    monkeypatch.setattr(training.SftObjective, "loss", nan_at_step_3)
    with pytest.raises(NonFiniteError, match=r"at step 3: .*resume point, step 2, is kept"):
        sft_train(work, tiny_model_dir, out, objective="sft", sft_items=2)
    assert sorted(p.name for p in out.parent.iterdir()) == [training.resume_path(out).name]


def test_objective_needs_its_data_and_is_validated(work: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    args = (TARGET, SOURCES, [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
            [work / f"results/encoded/{d}/train.pt" for d in SOURCES], work / "results/zoo/alpha/final",
            tmp_path / "g.pt", tmp_path / "g.csv")
    with pytest.raises(ValueError, match="needs --train-data"):
        training.train_generator(params(objective="sft"), *args)
    with pytest.raises(ValueError, match="sft or both only"):
        training.train_generator(params(), *args, base_model=tiny_model_dir)
    with pytest.raises(ConfigError, match="objective"):
        section("generator", {"objective": "rl"})
    # at their defaults the new keys leave a rule's params (and so the default run) unchanged
    assert not set(rule_section("generator", section("generator", {}))) & set(GENERATOR_EXTRA_KEYS)
    assert rule_section("generator", section("generator", {"objective": "sft"}))["objective"] == "sft"


def test_reconstruction_objective_is_the_old_training(work: Path, tmp_path: Path) -> None:
    """objective reconstruction (the default) trains exactly as before the objective existed: the
    same parameters as the reconstruction loop written out here from its parts, the old log
    columns, and a checkpoint whose generator section has none of the new keys."""
    steps = 4
    ckpt = training.train_generator(
        params(steps=steps), TARGET, SOURCES, [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
        [work / f"results/encoded/{d}/train.pt" for d in SOURCES], work / "results/zoo/alpha/final",
        tmp_path / "g.pt", tmp_path / "g.csv")  # fmt: skip
    explicit = training.train_generator(
        params(steps=steps, objective="reconstruction"), TARGET, SOURCES,
        [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
        [work / f"results/encoded/{d}/train.pt" for d in SOURCES], work / "results/zoo/alpha/final",
        tmp_path / "e.pt", tmp_path / "e.csv")  # fmt: skip
    assert not set(ckpt["generator"]) & set(GENERATOR_EXTRA_KEYS)
    assert (tmp_path / "g.csv").read_text().splitlines()[0] == "step,loss,lr"

    # the reconstruction loop, from its public parts
    p = params(steps=steps)
    gen = section("generator", p["generator"])
    token_sets = [training.load_zoo_tokens(work / f"results/zoo/{d}/tokens.pt")["tokens"] for d in SOURCES]
    states = [torch.load(work / f"results/encoded/{d}/train.pt", weights_only=True)["states"] for d in SOURCES]
    weights = training.criterion_weights(token_sets)
    run_seed = derive_seed(p["seed"], TARGET)
    sampler = training.PairSampler(token_sets, states, gen["n_prompts"], gen["batch_size"], run_seed)
    torch.manual_seed(derive_seed(run_seed, "init"))
    model = training.build_generator(gen, (gen["n_prompts"], *states[0].shape[1:]), tuple(token_sets[0].shape[1:]),
                                     token_sets)
    opt = torch.optim.AdamW(model.parameters(), lr=gen["lr"], weight_decay=gen["weight_decay"], fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, gen["warmup_steps"], steps))
    model.train()
    for step in range(steps):
        cond, tgt = sampler.batch(step, gen["noise_condition"], gen["noise_target"])
        loss = training.weighted_mse(model(cond), tgt, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), gen["grad_clip"])
        opt.step()
        sched.step()
    reference = model.state_dict()
    for k in reference:
        assert torch.equal(ckpt["model"][k], reference[k]), k
        assert torch.equal(explicit["model"][k], reference[k]), k


# ----------------------------------------------------------------------------- t2l design


def test_t2l_shapes_and_matrices_round_trip(work: Path) -> None:
    layout = zoo_layout(work)
    torch.manual_seed(0)
    model = T2LHypernetwork((N_PROMPTS, 16, 384), layout.to_dict(), hidden=16, embed=8)
    cond = torch.randn(3, N_PROMPTS, 16, 384)
    with torch.no_grad():
        loras = model.lora(cond)
        tokens = model(cond)
    assert list(loras) == list(layout.keys)
    assert all(tuple(loras[k].shape) == (3, *s) for k, s in zip(layout.keys, layout.shapes))
    assert tuple(tokens.shape) == (3, layout.n_tokens, *layout.token_shape)
    back = decode_tokens(tokens, layout)
    assert max(float((back[k] - loras[k]).abs().max()) for k in loras) < 1e-5
    # zero heads output the offset exactly: set to a LoRA, it is what comes out (a zero B too)
    target = detokenize(training.load_zoo_tokens(work / "results/zoo/beta/tokens.pt")["tokens"][0], layout)
    target[layout.keys[1]] = torch.zeros(layout.shapes[1])
    silent = T2LHypernetwork((N_PROMPTS, 16, 384), layout.to_dict(), hidden=16, embed=8, zero_init_output=True)
    silent.set_offset(target)
    with torch.no_grad():
        out = detokenize(silent(cond)[1], layout)
    assert max(float((out[k] - target[k]).abs().max()) for k in target) < 1e-5
    with pytest.raises(ValueError, match="condition has shape"):
        model.lora(torch.randn(1, N_PROMPTS, 8, 384))


def test_t2l_trains_generates_and_loads_with_peft(work: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    out = tmp_path / "t2l.pt"
    ckpt = training.train_generator(
        params(design="t2l", steps=3, t2l_hidden=16, t2l_embed=8, output_offset="mean"), TARGET, SOURCES,
        [work / f"results/zoo/{d}/tokens.pt" for d in SOURCES],
        [work / f"results/encoded/{d}/train.pt" for d in SOURCES], work / "results/zoo/alpha/final",
        out, tmp_path / "t2l.csv")  # fmt: skip
    assert ckpt["decoder"]["design"] == "t2l" and ckpt["generator"]["t2l_hidden"] == 16
    losses = [float(r["loss"]) for r in csv.DictReader((tmp_path / "t2l.csv").open())]
    assert len(losses) == 3 and all(map(torch.isfinite, torch.tensor(losses)))
    model, _ = load_generator(out)
    assert isinstance(model, T2LHypernetwork)

    adapter = tmp_path / "adapter"
    assert main(["generate", "--generator", str(out), "--prompts", str(work / "results/data/alpha/cond.jsonl"),
                 "--out", str(adapter), "--n-prompts", str(N_PROMPTS)]) == 0  # fmt: skip
    written = load_file(adapter / "adapter_model.safetensors")
    layout = zoo_layout(work)
    assert sorted(written) == sorted(layout.keys)
    base = LlamaForCausalLM.from_pretrained(work / "base")
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    loaded = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert all(torch.equal(loaded[k], written[k]) for k in written)


def test_train_generator_cli_with_sft(work: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli/generator.pt"
    p = {**params(objective="sft", steps=2, sft_items=2), "prompt": {"format": "cloze"}}
    argv = ["train-generator", "--params", json.dumps(p), "--target", TARGET, "--sources", *SOURCES,
            "--tokens", *[str(work / f"results/zoo/{d}/tokens.pt") for d in SOURCES],
            "--encoded", *[str(work / f"results/encoded/{d}/train.pt") for d in SOURCES],
            "--template-adapter", str(work / "results/zoo/alpha/final"), "--out", str(out),
            "--log", str(out.with_suffix(".csv")), "--timings", str(tmp_path / "t.json")]
    assert main(argv) == 1  # objective sft without its training data: one error
    assert not out.exists()
    assert main([*argv, "--train-data", *[str(work / f"results/data/{d}/train.jsonl") for d in SOURCES],
                 "--base-model", str(tiny_model_dir)]) == 0
    assert out.with_suffix(".csv").read_text().splitlines()[0] == "step,loss,reconstruction,sft,lr"
    assert json.loads((tmp_path / "t.json").read_text())["sft_forward_s"] > 0
