import dataclasses

import pytest
import yaml
from conftest import REPO

from mlic.config import Config, ModelConfig, config_from_dict, load_config, save_config
from mlic.errors import ConfigError
from mlic.models import MODELS


def test_params_yaml_loads_and_sets_every_knob():
    """Every field of every section is written in params.yaml, so DVC sees each knob."""
    cfg = load_config(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section in dataclasses.fields(Config):
        if section.name == "models":
            continue
        names = {f.name for f in dataclasses.fields(getattr(cfg, section.name))}
        assert set(raw[section.name]) == names, section.name
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    for name, entry in raw["models"].items():
        assert set(entry) == model_keys, name  # merged from the first entry's anchor
    assert {m.arch for m in cfg.models.values()} == set(MODELS.names())  # every architecture has an entry


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"trian": {}}, "trian: unknown key; did you mean 'train'?"),
        ({"train": {"epohcs": 3}}, "train.epohcs: unknown key; did you mean 'epochs'?"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected int, got 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected int"),
        ({"models": {"a": {"pretrained": 1}}}, "models.a.pretrained: expected bool"),
        ({"models": {"a": {"pretrianed": True}}}, "models.a.pretrianed: unknown key; did you mean 'pretrained'?"),
        ({"train": {"models": ["baselin"]}}, "train.models: 'baselin' is not an entry of `models`; did you mean"),
        ({"train": {"warmup_epochs": 10, "epochs": 10}}, "train.warmup_epochs: must be below train.epochs"),
        ({"train": {"ema_decay": 1.0}}, "train.ema_decay: must be in [0, 1)"),
        ({"train": {"accumulate_steps": 0}}, "train.accumulate_steps: must be >= 1"),
        ({"train": {"folds": [0, 7]}}, "train.folds: fold ids [7] are outside 0..2"),
        ({"train": {"folds": [0, 0]}}, "train.folds: must be a non-empty list of distinct fold ids"),
        (
            {"models": {"b": {"pretrained_file": "w.pth"}}},
            "models.b.pretrained_file: is set but pretrained is false",
        ),
        ({"folds": {"n_splits": 1}}, "folds.n_splits: must be >= 2"),
        ({"train": {"device": "tpu"}}, "train.device: must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_params_name_the_key(params, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(params)
    assert message in str(info.value)


def test_scientific_notation_and_lists_are_coerced():
    cfg = config_from_dict({"train": {"lr": "1e-3", "folds": [1, 0]}})
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.folds == (1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"params.yaml:\d+: not valid YAML"):
        load_config(bad)
    bad.write_text("train:\n  epochz: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "train.epochz" in str(info.value)


def test_saved_config_round_trips(tmp_path):
    cfg = config_from_dict({"train": {"epochs": 3}, "models": {"baseline": {"backbone": "resnet18"}}})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_fold_and_checkpoint_dirs_follow_params():
    cfg = config_from_dict({"train": {"out_dir": "out", "checkpoint_dir": "ck"}})
    assert str(cfg.fold_dir("baseline", 2)) == "out/baseline/fold_2"
    assert str(cfg.checkpoint_dir("baseline", 2)) == "ck/baseline/fold_2"


def test_example_configs_load():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_loss_options_are_a_checked_mapping_of_numbers():
    cfg = config_from_dict({"train": {"loss": "focal", "loss_options": {"gamma": 1, "alpha": "0.5"}}})
    assert cfg.train.loss_options == {"gamma": 1.0, "alpha": 0.5}
    assert config_from_dict({"train": {"loss_options": {"alpha": None}}}).train.loss_options == {"alpha": None}
    with pytest.raises(ConfigError, match="train.loss_options.gamma: expected float"):
        config_from_dict({"train": {"loss_options": {"gamma": "strong"}}})
    with pytest.raises(ConfigError, match="train.loss_options: expected a mapping"):
        config_from_dict({"train": {"loss_options": [1, 2]}})
