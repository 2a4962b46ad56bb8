import dataclasses

import pytest
import yaml
from conftest import REPO

from mlic.config import Config, config_from_dict, load_config, save_config
from mlic.errors import ConfigError
from mlic.models.registry import discover_archs, get_arch, resolve_model


def test_params_yaml_loads_and_sets_every_knob():
    """Every field of every section is written in params.yaml, so DVC sees each knob."""
    cfg = load_config(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section in dataclasses.fields(Config):
        if section.name == "models":
            continue
        names = {f.name for f in dataclasses.fields(getattr(cfg, section.name))}
        assert set(raw[section.name]) == names, section.name
    for name, entry in raw["models"].items():
        arch_keys = {f.name for f in dataclasses.fields(get_arch(entry["arch"]).config)}
        assert set(entry) == {"arch", *arch_keys}, name  # every key of the arch's own config class, and no other
        resolve_model(cfg, name)
    assert {m.arch for m in cfg.models.values()} == set(discover_archs())  # every architecture has an entry


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"trian": {}}, "trian: unknown key; did you mean 'train'?"),
        ({"train": {"epohcs": 3}}, "train.epohcs: unknown key; did you mean 'epochs'?"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected int, got 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected int"),
        ({"models": {"a": {"backbone": "resnet18"}}}, "models.a.arch: missing"),
        ({"models": {"a": ["baseline"]}}, "models.a: expected a mapping with an `arch` key"),
        ({"train": {"models": ["baselin"]}}, "train.models: 'baselin' is not an entry of `models`; did you mean"),
        ({"train": {"warmup_epochs": 10, "epochs": 10}}, "train.warmup_epochs: must be below train.epochs"),
        ({"train": {"ema_decay": 1.0}}, "train.ema_decay: must be in [0, 1)"),
        ({"train": {"accumulate_steps": 0}}, "train.accumulate_steps: must be >= 1"),
        ({"train": {"num_workers": "many"}}, "train.num_workers: must be auto or an integer >= 0, got 'many'"),
        ({"train": {"num_workers": -1}}, "train.num_workers: must be auto or an integer >= 0, got -1"),
        ({"train": {"num_workers": 1.5}}, "train.num_workers: expected int or str, got 1.5 (float)"),
        ({"train": {"log_every": -1}}, "train.log_every: must be >= 0"),
        ({"prepare": {"crop_store": "crops"}}, "prepare.crop_store: must be views or source, got 'crops'"),
        ({"train": {"folds": [0, 7]}}, "train.folds: fold ids [7] are outside 0..2"),
        ({"train": {"folds": [0, 0]}}, "train.folds: must be a non-empty list of distinct fold ids"),
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


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"arch": "baseline", "pretrained": 1}, "models.m.pretrained: expected bool, got 1 (int) (arch 'baseline')"),
        ({"arch": "baseline", "pretrianed": True},
         "models.m.pretrianed: unknown key for arch 'baseline'; did you mean 'pretrained'?"),
        ({"arch": "baseline", "dilation": 3}, "models.m.dilation: unknown key for arch 'baseline'"),
        ({"arch": "hog_linear", "backbone": "resnet18"}, "models.m.backbone: unknown key for arch 'hog_linear'"),
        ({"arch": "hourglass", "pooling": "mean"}, "models.m.pooling: unknown pooling 'mean'"),
        ({"arch": "baseline", "pretrained_file": "w.pth"},
         "models.m.pretrained_file: is set but pretrained is false (arch 'baseline')"),
        ({"arch": "baseline", "extra_filters": 0}, "models.m.extra_filters: must be >= 1, got 0 (arch 'baseline')"),
        ({"arch": "basline"}, "models.m.arch: unknown model architecture 'basline'; did you mean 'baseline'?"),
        ({"arch": "baseline", "loss": "focall"}, "models.m.loss: unknown loss 'focall'; did you mean 'focal'?"),
        ({"arch": "baseline", "loss": "focal", "loss_options": {"clip": 0.1}},
         "models.m.loss: loss 'focal' got unexpected options ['clip']"),
        ({"arch": "baseline", "loss_options": {"gamma": "strong"}}, "models.m.loss_options.gamma: expected float"),
    ],
)  # fmt: skip
def test_a_models_entry_is_checked_by_its_architecture(entry, message):
    """Each arch has its own config class: a key of another arch is an error naming the entry, the arch and the key.

    Registry names (arch, loss, pooling) fail as the params load; the other keys when the entry is resolved.
    """
    with pytest.raises(ConfigError) as info:
        resolve_model(config_from_dict({"models": {"m": entry}, "train": {"models": ["m"]}}), "m")
    assert message in str(info.value)


def test_saved_config_round_trips(tmp_path):
    entry = {"arch": "hourglass", "backbone": "resnet34", "feature_indices": [2, 4], "loss": "focal",
             "loss_options": {"gamma": 1.5}}  # fmt: skip
    cfg = config_from_dict({"train": {"epochs": 3, "models": ["h"]}, "models": {"h": entry}})
    save_config(cfg, tmp_path / "config.yaml")
    loaded = load_config(tmp_path / "config.yaml")
    assert loaded == cfg and resolve_model(loaded, "h") == resolve_model(cfg, "h")
    assert resolve_model(loaded, "h").config.feature_indices == (2, 4)


def test_saving_selected_sections_keeps_only_those(tmp_path):
    cfg = config_from_dict({"train": {"epochs": 3}})
    save_config(cfg, tmp_path / "config.yaml", sections=("hog", "train.epochs"))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {
        "hog": cfg.to_dict()["hog"],
        "train": {"epochs": 3},
    }


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
    entry = {"arch": "baseline", "loss": "focal", "loss_options": {"gamma": 1, "alpha": "0.5"}}
    cfg = config_from_dict({"models": {"baseline": entry}})
    assert resolve_model(cfg, "baseline").config.loss_options == {"gamma": 1.0, "alpha": 0.5}
    entry = {"arch": "baseline", "loss": "focal", "loss_options": {"alpha": None}}
    assert resolve_model(config_from_dict({"models": {"baseline": entry}}), "baseline").config.loss_options == {
        "alpha": None
    }
    with pytest.raises(ConfigError, match="models.baseline.loss_options: expected a mapping"):
        resolve_model(config_from_dict({"models": {"baseline": {"arch": "baseline", "loss_options": [1]}}}), "baseline")
