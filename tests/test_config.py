import json
import re

import pytest
import yaml

from dnd.config import REPO_ROOT, ConfigError, folds, load_config, validate_config


def _minimal(**over):
    cfg = {"data": {"datasets": ["arc_easy", "boolq"]}, "base_model": {"source": "smollm2_wheel"}}
    cfg.update(over)
    return cfg


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_shipped_profiles_validate(name):
    cfg = load_config(REPO_ROOT / "config" / name)
    assert cfg["lora"]["r"] >= 1 and cfg["generate"]["n_adapters"] >= 1


def test_defaults_are_filled():
    cfg = validate_config(_minimal())
    assert cfg["lora"]["alpha"] == 16 and cfg["lora"]["target_modules"][0] == "q_proj"
    assert cfg["prompt"]["format"] == "cloze" and cfg["seed"] == 0


def test_unknown_dataset_is_named():
    with pytest.raises(ConfigError, match="unknown dataset name.*'arc_hard'"):
        validate_config(_minimal(data={"datasets": ["arc_easy", "arc_hard"]}))


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError,
                       match=r"^lora\.r: 'eight' is not of type 'integer' \(schema: lora\.r, type: \"integer\"\)$"):
        validate_config(_minimal(lora={"r": "eight"}))


def test_unknown_key_rejected():
    with pytest.raises(ConfigError, match=r"^lroa: additional property not allowed \(schema: top level\)$"):
        validate_config(_minimal(lroa={}))
    with pytest.raises(ConfigError,
                       match=r"^data\.bogus, data\.other: additional properties not allowed \(schema: data\)$"):
        validate_config(_minimal(data={"datasets": ["arc_easy", "boolq"], "other": 1, "bogus": 2}))


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_hf_source_needs_a_name():
    with pytest.raises(ConfigError, match="name_or_path"):
        validate_config(_minimal(base_model={"source": "hf"}))


def test_folds_are_uniform_leave_one_out():
    cfg = validate_config(_minimal(data={"datasets": ["arc_easy", "boolq", "piqa"]}))
    f = folds(cfg)
    assert f == {"arc_easy": ["boolq", "piqa"], "boolq": ["arc_easy", "piqa"], "piqa": ["arc_easy", "boolq"]}


def test_schema_defaults_documented():
    """Every schema property carries a description or a default (config/README.md mirrors them)."""
    schema = yaml.safe_load((REPO_ROOT / "workflow/schemas/config.schema.yaml").read_text())
    for section, sub in schema["properties"].items():
        assert "description" in sub or "default" in sub, section


def test_config_readme_documents_every_key():
    from dnd.config import schema_markdown

    text = (REPO_ROOT / "config" / "README.md").read_text()
    block = text.split("<!-- keys -->\n", 1)[1].split("<!-- /keys -->", 1)[0]
    assert block == schema_markdown(), "config/README.md is stale: regenerate its key table from the schema"


# --------------------------------------------------------------- reliability: names, types, cross-field
UNSAFE_NAMES = ["evil`touch pwned`", "it's", "a b", "../up", "x|y", "$(id)", "a;b", "1abc", ""]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_dataset_names_rejected(name, tmp_path):
    custom = {name: {"path": str(tmp_path / "x.jsonl")}}
    with pytest.raises(ConfigError, match="does not match"):
        validate_config(_minimal(data={"datasets": ["arc_easy", name], "custom": custom}))
    with pytest.raises(ConfigError, match="does not match"):
        validate_config(_minimal(generator={"heldout": [name]}))


def test_integers_are_ints_not_floats_or_bools():
    with pytest.raises(ConfigError, match=r"lora\.r: 4\.0 is not of type 'integer'"):
        validate_config(_minimal(lora={"r": 4.0}))
    with pytest.raises(ConfigError, match=r"generator\.steps: True is not of type"):
        validate_config(_minimal(generator={"steps": True}))


def test_prompt_count_has_one_home():
    """generate.n_prompts is gone: a generator takes exactly generator.n_prompts prompts."""
    with pytest.raises(ConfigError, match=r"generate\.n_prompts: additional property not allowed"):
        validate_config(_minimal(generate={"n_prompts": 64}))


def test_chunk_width_must_divide_model_dims():
    """SmolLM2: hidden 576, kv 192, intermediate 1536; 100 divides none, the message lists what does."""
    from dnd.config import check_chunk_width

    with pytest.raises(ConfigError, match=r"chunk_width 100 does not divide.*widths that divide every adapted "
                                          r"dimension: \[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 192\]"):
        check_chunk_width(validate_config(_minimal(generator={"chunk_width": 100})))
    tiny = {"source": "tiny", "tiny": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                                       "num_key_value_heads": 2}}
    with pytest.raises(ConfigError, match="chunk_width 64 does not divide.*gate_proj"):
        check_chunk_width(validate_config(_minimal(base_model=tiny, generator={"chunk_width": 64})))
    # only the adapted modules count
    check_chunk_width(validate_config(_minimal(base_model=tiny, generator={"chunk_width": 32},
                                               lora={"target_modules": ["q_proj", "v_proj"]})))


def test_paper_profile_dims_are_known_and_fit():
    from dnd.config import lora_widths, model_dims

    cfg = load_config(REPO_ROOT / "config" / "paper.yaml")
    widths = lora_widths(model_dims(cfg["base_model"]), cfg["lora"]["target_modules"])
    assert widths["k_proj"] == (896, 128) and widths["down_proj"] == (4864, 896)


def test_custom_dataset_path_must_be_a_file(tmp_path):
    from dnd.config import check_inputs

    cfg = validate_config(_minimal(data={"datasets": ["arc_easy", "mine"],
                                         "custom": {"mine": {"path": str(tmp_path)}}}))
    with pytest.raises(ConfigError, match="custom dataset 'mine': is a directory"):
        check_inputs(cfg)
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"question": "q", "choices": "Paris", "answer": 0}\n')
    cfg["data"]["custom"]["mine"]["path"] = str(bad)
    with pytest.raises(ConfigError, match="mine.jsonl, line 1: field 'choices'"):
        check_inputs(cfg)


# --------------------------------------------------------------------------- CLI failures
def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_cli_failure_is_one_line_naming_the_file(tmp_path, caplog):
    from dnd.cli import main

    missing = tmp_path / "nope" / "timing.json"
    rc = main(["efficiency", "--timings", str(missing), "--out", str(tmp_path / "eff.csv")])
    err = _errors(caplog)
    assert rc == 1 and len(err) == 1 and "\n" not in err[0]
    assert str(missing) in err[0] and "--debug" in err[0] and "Traceback" not in err[0]


def test_cli_unexpected_error_is_one_line_and_debug_shows_it(monkeypatch, caplog):
    from dnd import cli, data

    def boom(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setitem(data.COMMANDS, "data-summary", (data.COMMANDS["data-summary"][0], boom))
    rc = cli.main(["data-summary", "--data", "x", "--out", "y"])
    err = _errors(caplog)
    assert rc == 1 and len(err) == 1 and "RuntimeError: disk on fire second line" in err[0]
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.main(["data-summary", "--debug", "--data", "x", "--out", "y"])


def test_section_resolves_schema_refs(tmp_path):
    """A section whose schema refers to $defs (dataset names) validates on its own, as each
    prepare-data job's per-dataset section does."""
    from dnd.config import section

    out = section("data", {"custom": {"mine": {"path": "x.jsonl"}}, "n_test": 5})
    assert out["custom"]["mine"]["style"] == "qa" and out["n_test"] == 5
    with pytest.raises(ConfigError, match="does not match"):
        section("data", {"custom": {"it's": {"path": "x.jsonl"}}})


def test_extra_experiments_stay_out_of_the_default_runs_hash():
    """Editing an extra experiment's section (run outside `all`) must not re-hash, and so not
    rerun, the default reproduction's report."""
    from dnd.config import EXPERIMENTS, config_hash, run_config

    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    assert "protocol" in cfg and "protocol" in EXPERIMENTS
    edited = {**cfg, "protocol": {**cfg["protocol"], "n_test": cfg["protocol"]["n_test"] + 1}}
    assert config_hash(run_config(edited)) == config_hash(run_config(cfg))
    assert not set(run_config(cfg)) & set(EXPERIMENTS)
    assert config_hash(run_config({**cfg, "seed": cfg["seed"] + 1})) != config_hash(run_config(cfg))


def test_ablation_keys_at_their_defaults_leave_the_default_runs_hash():
    """encoder.kind/form and generator.pool_size/pairing came with the ablations: at their
    defaults the default run's config (and its report's hash) is what it was without them."""
    from dnd.config import config_hash, run_config

    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    before = run_config(cfg)
    assert not {"kind", "form"} & set(before["encoder"]) and not {"pool_size", "pairing"} & set(before["generator"])
    changed = {**cfg, "encoder": {**cfg["encoder"], "kind": "hashing"}}
    assert run_config(changed)["encoder"]["kind"] == "hashing"
    assert config_hash(run_config(changed)) != config_hash(before)


# --------------------------------------------------------------- reliability: bad input refused early
@pytest.mark.parametrize("section, key, value, where", [
    ("lora", "lr", float("nan"), "lora.lr: nan"),
    ("lora", "lr", float("inf"), "lora.lr: inf"),
    ("lora", "alpha", float("-inf"), "lora.alpha: -inf"),
    ("generator", "stages", [[4, 8, 24], [8, float("nan"), 32]], "generator.stages[1][1]: nan"),
])
def test_non_finite_numbers_refused_with_their_key(section, key, value, where):
    with pytest.raises(ConfigError, match="^" + re.escape(f"{where} is not a finite number") + "$"):
        validate_config(_minimal(**{section: {key: value}}))


def test_non_finite_numbers_refused_from_yaml_and_params(tmp_path):
    from dnd.config import command_params

    p = tmp_path / "c.yaml"
    p.write_text("data: {datasets: [arc_easy, boolq]}\nbase_model: {source: tiny}\nlora: {lr: .nan}\n")
    with pytest.raises(ConfigError, match=r"^lora\.lr: nan is not a finite number$"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"^--params: lora\.lr: inf is not a finite number$"):
        command_params('{"lora": {"lr": Infinity}}', "lora")


@pytest.mark.parametrize("name", ["boolq", "science"])
def test_custom_dataset_may_not_shadow_a_builtin(name, tmp_path):
    custom = {name: {"path": str(tmp_path / "x.jsonl")}}
    with pytest.raises(ConfigError, match=rf"^data\.custom\.{name}: a custom dataset may not take the name of the "
                                          rf"built-in dataset '{name}'"):
        validate_config(_minimal(data={"datasets": ["arc_easy", name], "custom": custom}))
    with pytest.raises(ConfigError, match=rf"^ablations\.extra_sources\.{name}: a custom dataset may not take"):
        validate_config(_minimal(ablations={"extra_sources": custom}))


def _items(path, n, extra=lambda i: {}):
    rows = [{"question": f"q{i}?", "choices": [f"a{i}", f"b{i}"], "answer": i % 2, **extra(i)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _custom_cfg(tmp_path, n_a=30, n_b=30, **over):
    data = {"datasets": ["aa", "bb"], "n_train": 10, "n_cond": 2, "n_test": 2,
            "custom": {"aa": {"path": _items(tmp_path / "aa.jsonl", n_a, extra=lambda i: {})},
                       "bb": {"path": _items(tmp_path / "bb.jsonl", n_b, extra=lambda i: {})}}}
    cfg = {"data": data, "base_model": {"source": "tiny"}, "generator": {"chunk_width": 32},
           "crossdomain": {"target": None}}
    return validate_config({**cfg, **over})


def test_split_sizes_checked_at_start_up(tmp_path):
    from dnd.config import check_inputs

    check_inputs(_custom_cfg(tmp_path, n_b=5))  # 2 test + 2 cond + 1 train
    with pytest.raises(ConfigError, match=r"^dataset 'bb' has 4 items; its splits need 5 \(data\.n_test 2 \+ "
                                          r"data\.n_cond 2 \+ 1 train item\)$"):
        check_inputs(_custom_cfg(tmp_path, n_b=4))


def test_split_sizes_with_a_train_pool(tmp_path):
    from dnd.config import check_inputs

    def train_first(i):
        return {"split": "train"} if i < 4 else {}

    cfg = _custom_cfg(tmp_path)
    cfg["data"]["custom"]["bb"] = {"path": _items(tmp_path / "t.jsonl", 7, extra=train_first), "has_train": True}
    with pytest.raises(ConfigError, match=r"^dataset 'bb' has 3 evaluation items \(besides its train pool\); its "
                                          r"splits need 4 \(data\.n_test 2 \+ data\.n_cond 2\)$"):
        check_inputs(cfg)
    cfg["data"]["custom"]["bb"]["path"] = _items(tmp_path / "t.jsonl", 7, extra=lambda i: {})
    with pytest.raises(ConfigError, match=r"^dataset 'bb' has no train items"):
        check_inputs(cfg)


def test_split_sizes_of_the_crossdomain_target_use_its_settings(tmp_path):
    from dnd.config import check_inputs

    cfg = _custom_cfg(tmp_path)
    cfg["data"]["custom"]["cc"] = {"path": _items(tmp_path / "cc.jsonl", 9, extra=lambda i: {})}
    cfg["crossdomain"].update(target="cc", n_cond=4, n_test=5)
    with pytest.raises(ConfigError, match=r"^dataset 'cc' has 9 items; its splits need 10 \(crossdomain\.n_test 5 \+ "
                                          r"crossdomain\.n_cond 4 \+ 1 train item\)$"):
        check_inputs(cfg)


def test_split_sizes_of_a_local_benchmark_are_counted(tmp_path):
    """A local benchmark tree (PIQA's layout) too small for n_test + n_cond + 1."""
    import gzip

    from dnd.config import check_inputs

    piqa = tmp_path / "data" / "commonsense" / "PIQA"
    piqa.mkdir(parents=True)
    with gzip.open(piqa / "validation.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"goal": f"g{i}", "sol1": "a", "sol2": "b"}) + "\n" for i in range(4))
    (piqa / "validation-labels.lst").write_text("0\n1\n0\n1\n")
    cfg = _custom_cfg(tmp_path)
    cfg["data"].update(datasets=["aa", "piqa"], dir=str(tmp_path / "data"))
    with pytest.raises(ConfigError, match=r"^dataset 'piqa' has 4 items; its splits need 5"):
        check_inputs(cfg)
    cfg["data"]["n_cond"] = 1
    check_inputs(cfg)


def test_model_paths_checked_at_start_up(tmp_path):
    from dnd.config import check_inputs

    missing = tmp_path / "minilm"
    with pytest.raises(ConfigError, match=rf"^encoder\.path '{missing}': model directory not found: {missing} "
                                          r"\(encoder\.kind minilm\)$"):
        check_inputs(_custom_cfg(tmp_path, encoder={"path": str(missing)}))
    missing.mkdir()
    with pytest.raises(ConfigError, match=r"^encoder\.path .*: model directory has no config\.json"):
        check_inputs(_custom_cfg(tmp_path, encoder={"path": str(missing)}))
    with pytest.raises(ConfigError, match=r"^encoder\.kind llm needs encoder\.path"):
        check_inputs(_custom_cfg(tmp_path, encoder={"kind": "llm"}))
    # the workflow's own base model may be named before it is made; hashing reads no model
    check_inputs(_custom_cfg(tmp_path, encoder={"kind": "llm", "path": "resources/models/base"}))
    check_inputs(_custom_cfg(tmp_path, encoder={"kind": "hashing", "path": str(tmp_path / "nothing")}))
    with pytest.raises(ConfigError, match=rf"^base_model\.name_or_path '{tmp_path}/qwen': model directory not found"):
        check_inputs(_custom_cfg(tmp_path, base_model={"source": "hf", "name_or_path": f"{tmp_path}/qwen"}))


@pytest.mark.parametrize("text, line", [
    ("lora: {lr: .nan}\n", "lora.lr: nan is not a finite number"),
    ("lora: {lr: .inf}\n", "lora.lr: inf is not a finite number"),
    ("data: {datasets: [arc_easy, boolq], bogus: 1}\n", "data.bogus: additional property not allowed (schema: data)"),
])
def test_cli_config_errors_are_one_line_with_exit_status_1(tmp_path, caplog, text, line):
    import logging

    from dnd.cli import main

    p = tmp_path / "bad.yaml"
    p.write_text("data: {datasets: [arc_easy, boolq]}\nbase_model: {source: tiny}\n" + text)
    with caplog.at_level(logging.ERROR):
        assert main(["check-profile", "--config", str(p), "--out", str(tmp_path / "out.json")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"ConfigError: {line} (rerun with --debug" in errors[0], errors
    assert not (tmp_path / "out.json").exists()


def test_local_base_model_is_checked_at_start_up(tmp_path, tiny_model_dir):
    """base_model.source local: the directory is checked before any job runs (one line each), its
    config.json gives the chunk-width check, a padded embedding is accepted, and prepare-base-model
    exports it without a download (local_files_only)."""
    import shutil

    from dnd.base_model import prepare_base_model
    from dnd.config import check_inputs, tokenizer_size

    with pytest.raises(ConfigError, match=r"^base_model\.source is 'local' but base_model\.path is empty"):
        _custom_cfg(tmp_path, base_model={"source": "local"})
    model = tmp_path / "mymodel"
    with pytest.raises(ConfigError, match=rf"^base_model\.path '{model}': model directory not found: {model}$"):
        check_inputs(_custom_cfg(tmp_path, base_model={"source": "local", "path": str(model)}))
    model.mkdir()
    for present, missing in (([], "has no config.json"), (["config.json"], "has no tokenizer"),
                             (["config.json", "tokenizer.json"], "has no \\*\\.safetensors weights")):
        for name in present:
            shutil.copy(tiny_model_dir / name, model / name)
        with pytest.raises(ConfigError, match=rf"^base_model\.path '{model}': model directory {missing}"):
            check_inputs(_custom_cfg(tmp_path, base_model={"source": "local", "path": str(model)}))
    shutil.rmtree(model)
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    n_tok = tokenizer_size(model)
    assert n_tok == cfg["vocab_size"]  # the tiny model's embedding has one row per token
    local = {"source": "local", "path": str(model)}
    check_inputs(_custom_cfg(tmp_path, base_model=local))
    # the chunk width is checked against the directory's own shapes (hidden 64, intermediate 128)
    with pytest.raises(ConfigError, match=r"^generator\.chunk_width 48 does not divide"):
        check_inputs(_custom_cfg(tmp_path, base_model=local, generator={"chunk_width": 48}))
    (model / "config.json").write_text(json.dumps({**cfg, "vocab_size": n_tok + 64}))  # padded: accepted
    check_inputs(_custom_cfg(tmp_path, base_model=local))
    (model / "config.json").write_text(json.dumps({**cfg, "vocab_size": n_tok - 1}))
    with pytest.raises(ConfigError, match=rf"the embedding has {n_tok - 1} rows but the tokenizer makes ids up to "
                                          rf"{n_tok - 1}: not a model and tokenizer pair"):
        check_inputs(_custom_cfg(tmp_path, base_model=local))
    (model / "config.json").write_text(json.dumps(cfg))

    out = prepare_base_model(local, tmp_path / "exported")
    from safetensors.torch import load_file

    a, b = load_file(model / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)

