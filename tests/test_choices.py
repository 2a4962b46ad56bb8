"""Every params string that names a registry entry is checked when params load, before any work.

The registries live in modules that import torch, so `mlic.choices` lists their names for `mlic.config`; these tests
keep the lists equal to the registries, find any registry a params key names that the lists miss, and misspell each
key once: in process, and through `mlic <stage>` (exit 2, torch never imported); and `dvc repro` on the tiny sample
stops at a few of them (nothing trained).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import subprocess
import sys
import typing

import pytest
import yaml
from conftest import REPO
from finished_run import TINY_RUN, copy_pipeline, merge, run_tool, tool_env

import mlic
from mlic.choices import CHOICES, ENTRY, OTHER_REGISTRIES, allowed
from mlic.config import Config, config_from_dict
from mlic.errors import ConfigError
from mlic.registry import Registry
from mlic.search_space import DISTRIBUTIONS

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _resolve(source: str) -> object:
    module, attribute = source.split(":")
    return getattr(importlib.import_module(module), attribute)


def _import_every_module() -> None:
    for info in pkgutil.walk_packages(mlic.__path__, "mlic."):
        importlib.import_module(info.name)


def _arch_with_key(name: str) -> tuple[str, dict]:
    """A models entry of params.yaml that has key `name` (the entries set every key of their arch)."""
    return next((key, dict(entry)) for key, entry in PARAMS["models"].items() if name in entry)


def misspelt(key: str) -> tuple[dict, str, str]:
    """params.yaml with one misspelt value at CHOICES key `key`: (params, the concrete key, the bad value)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if key.startswith(ENTRY):
        name = key.removeprefix(ENTRY)
        entry, values = _arch_with_key(name)
        concrete, good = f"models.{entry}.{name}", values[name]
        params["models"][entry][name] = bad = good + good[-1]
        return params, concrete, bad
    section, leaf = key.split(".")
    good = params[section][leaf]
    if isinstance(good, list):
        bad = good[-1] + good[-1][-1]
        params[section][leaf] = [*good[:-1], bad]
        return params, key, bad
    good = good if good in CHOICES[key].names else CHOICES[key].names[0]  # e.g. thresholds.method: auto
    params[section][leaf] = bad = good + good[-1]
    return params, key, bad


def test_every_registry_a_params_key_names_is_listed_with_its_names():
    _import_every_module()
    from mlic.registry import _BY_PARAM

    registries = {id(r): r for group in _BY_PARAM.values() for r in group}
    unnamed = {id(_resolve(source)) for source in OTHER_REGISTRIES}
    for registry in registries.values():
        if id(registry) in unnamed:
            continue
        assert registry.param in CHOICES, f"registry {registry.kind!r} ({registry.param}) is missing in mlic.choices"
    for key, choice in CHOICES.items():
        source = _resolve(choice.source)
        names = source.names() if isinstance(source, Registry) else sorted(source)
        assert sorted(choice.names) == names, f"mlic.choices lists other names for {key} than {choice.source}"
        if isinstance(source, Registry):  # the key its registry serves, or one sharing its names (compare_methods)
            assert source.param in CHOICES and CHOICES[source.param].source == choice.source, choice.source
    assert _resolve("mlic.search_space:SUGGESTERS").names() == sorted(DISTRIBUTIONS)


def _config_fields(cls: type, prefix: str = "") -> set[str]:
    keys = set()
    for name, hint in typing.get_type_hints(cls).items():
        keys |= _config_fields(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else {prefix + name}
    return keys


def test_every_listed_key_is_a_params_key():
    """A CHOICES key that names no field would check nothing: a renamed field must take its list along."""
    from mlic.models.registry import ARCHS, discover_archs

    discover_archs()
    entry_keys = {"arch"} | {f.name for name in ARCHS.names() for f in dataclasses.fields(ARCHS.get(name).config)}
    params_keys = _config_fields(Config)
    for key in CHOICES:
        if key.startswith(ENTRY):
            assert key.removeprefix(ENTRY) in entry_keys, key
        else:
            assert key in params_keys, key


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_a_misspelt_name_fails_on_load_with_the_key_and_the_closest_name(key):
    params, concrete, bad = misspelt(key)
    with pytest.raises(ConfigError) as info:
        config_from_dict(params)
    message = info.value.format()
    assert f"{concrete}: unknown {CHOICES[key].kind} {bad!r}; did you mean {bad[:-1]!r}?" in message
    assert f"fix: use one of: {', '.join(allowed(key))}" in message


def test_nested_entries_and_tuned_choices_are_checked():
    student = {"arch": "kd_wsd", "student": {"arch": "csra", "loss": "focla"}}
    with pytest.raises(ConfigError, match=r"models.k.student.loss: unknown loss 'focla'; did you mean 'focal'"):
        config_from_dict({"models": {"k": student}})
    with pytest.raises(ConfigError, match=r"models.k.teacher.arch: unknown model architecture 'wsdn'"):
        config_from_dict({"models": {"k": {"arch": "kd_wsd", "teacher": {"arch": "wsdn"}}}})
    space = {"train.augment": {"choice": ["none", "satelite"]}}
    with pytest.raises(ConfigError, match=r"tune.space.train.augment: .* draws 'satelite'.*did you mean 'satellite'"):
        config_from_dict({"tune": {"space": space}})


def test_an_entry_registered_at_run_time_is_accepted():
    from mlic.train.augment import AUGMENTATIONS

    with AUGMENTATIONS.registered("probe_aug", lambda size: None):
        assert config_from_dict({"train": {"augment": "probe_aug"}}).train.augment == "probe_aug"
    with pytest.raises(ConfigError, match="unknown augmentation 'probe_aug'"):
        config_from_dict({"train": {"augment": "probe_aug"}})


CLI_SWEEP = """
import json, sys
from mlic.cli import main
results = {}
for key, path in json.loads(sys.argv[1]).items():
    results[key] = main(["--params", path, "train", "--model", "baseline", "--fold", "0"])
print(json.dumps({"codes": results, "torch": "torch" in sys.modules}))
"""


def test_mlic_exits_2_naming_the_params_file_before_importing_torch(tmp_path):
    """`mlic train` with each misspelt key: exit 2, the file actually read and the key named, torch never imported."""
    files, expected = {}, {}
    for i, key in enumerate(sorted(CHOICES)):
        params, concrete, bad = misspelt(key)
        path = tmp_path / f"typo{i}.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        files[key], expected[key] = str(path), f"{path}: {concrete}: unknown {CHOICES[key].kind} {bad!r}"
    done = subprocess.run([sys.executable, "-c", CLI_SWEEP, json.dumps(files)], capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": dict.fromkeys(files, 2), "torch": False}, done.stderr[-2000:]
    for key in files:
        assert expected[key] in done.stderr, key


# A section key, a list and a models entry's key: the three ways `misspelt` writes one. Every stage loads (and so
# checks) the whole params file first, whichever key is wrong, and the CLI test above misspells every key; through
# DVC, a few keys show that the message and exit code reach `dvc repro` (about 1.5 s a key).
DVC_KEYS = ("train.augment", "thresholds.compare_methods", "models.<entry>.loss")


@pytest.mark.slow
def test_dvc_repro_stops_at_a_misspelt_name_before_any_work(tmp_path):
    """For a few keys, `dvc repro` of the tiny sample fails at its first stage with exit 2 and the key's message."""
    assert set(DVC_KEYS) <= set(CHOICES)
    root = copy_pipeline(tmp_path, merge(TINY_RUN, {"train": {"models": ["baseline"]}}))
    run_tool(root, "git", "init", "-q")
    run_tool(root, "dvc", "init", "-q")
    for key in DVC_KEYS:
        params, concrete, bad = misspelt(key)
        tiny = merge(merge(params, TINY_RUN), {"train": {"models": ["baseline"]}})
        (root / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
        done = subprocess.run(["dvc", "repro"], cwd=root, env=tool_env(), capture_output=True, text=True)
        log = done.stdout + done.stderr
        assert done.returncode != 0, key
        assert f"{concrete}: unknown {CHOICES[key].kind} {bad!r}" in log, log[-2000:]
        assert "exited with 2" in log, log[-2000:]
        assert "epoch " not in log and not (root / "data").exists(), key
