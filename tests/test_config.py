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
    with pytest.raises(ConfigError, match="lora/r"):
        validate_config(_minimal(lora={"r": "eight"}))


def test_unknown_key_rejected():
    with pytest.raises(ConfigError, match="Additional properties"):
        validate_config(_minimal(lroa={}))


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
