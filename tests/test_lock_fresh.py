"""A dvc.lock that is never stale: every code dep, params value, cmd and stage it records is the tree's.

A stale lock makes a fresh clone's `dvc status` (and `dvc repro`) disagree with the commit: stages rerun for no
reason, or a changed module looks up to date. The check reads dvc.yaml through DVC's own API (matrix stages expanded,
`${...}` resolved) and hashes the files as DVC 3 does (`hash: md5`: the md5 of the bytes; a folder: the md5 of its
sorted JSON listing plus ".dir"), so it needs no data and no `dvc status` run (seconds).

Only what a clone carries is compared: deps that no stage produces and git does not ignore (the package's modules).
Data deps (stage outputs, raw downloads) are absent from a clone; their hashes chain through the outputs' entries.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from ruamel.yaml import YAML

pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # DVC's, not ours

FIX = "run `make repro` and commit dvc.lock"
ABSENT = "<absent>"


@dataclass(frozen=True)
class Stale:
    """One lock entry that is not the tree's: a dep path, `param <file>:<key>`, `cmd`, `dep|out <path>`, `stage`."""

    stage: str
    subject: str
    problem: str  # what dvc.lock records against what the tree has

    def __str__(self) -> str:
        return f"{self.stage}: {self.subject}: {self.problem}"


def differ(recorded: str, now: str) -> str:
    return f"dvc.lock {recorded}, now {now}"


@dataclass(frozen=True)
class Resolved:
    """A stage of dvc.yaml as DVC resolves it (matrix expanded, `${...}` substituted)."""

    cmd: Any
    deps: list[str]
    params: dict[str, list[str]]  # params file -> keys
    outs: list[str]


def load_yaml(path: Path) -> Any:
    # DVC reads params.yaml and dvc.lock with ruamel's YAML 1.2 loader; PyYAML (1.1) reads e.g. `1e-05` as a string.
    return YAML(typ="safe", pure=True).load(path.read_text())


def md5_file(path: Path) -> str:
    # DVC 3 (`hash: md5`): the md5 of the bytes (no dos2unix, that was DVC 2's md5 without `hash:`).
    return hashlib.md5(path.read_bytes()).hexdigest()


def md5_dir(root: Path, folder: str, files: list[str]) -> str:
    """DVC's folder hash (dvc_data Tree.digest): md5 of the JSON list of {md5, relpath}, sorted by relpath."""
    entries = [{"md5": md5_file(root / f), "relpath": f[len(folder) + 1 :]} for f in files]
    listing = json.dumps(sorted(entries, key=lambda e: e["relpath"]), sort_keys=True)
    return hashlib.md5(listing.encode()).hexdigest() + ".dir"


def git(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True, text=True)


def clone_files(root: Path) -> list[str]:
    """The files a commit of the tree would carry: tracked or untracked, not git-ignored, present on disk."""
    out = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    return sorted(f for f in set(out.split("\0")) if f and (root / f).is_file())


def git_ignored(root: Path, paths: list[str]) -> set[str]:
    # An absent path is asked as a folder too: git cannot tell that a missing `raw` is the folder `/raw/` ignores.
    asked = {p: p if (root / p).exists() else p + "/" for p in paths}
    result = git(root, "check-ignore", "-z", "--stdin", stdin="\0".join([*paths, *asked.values()]))
    assert result.returncode in (0, 1), result.stderr  # 1: none of them is ignored
    ignored = set(result.stdout.split("\0"))
    return {p for p in paths if p in ignored or asked[p] in ignored}


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def produced(path: str, outs: set[str]) -> bool:
    """A stage writes `path`, a file in it, or a folder holding it (the fold folders in data/processed/train)."""
    return any(inside(path, out) or inside(out, path) for out in outs)


def value_at(mapping: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(mapping, dict) or key not in mapping:
            return ABSENT
        mapping = mapping[key]
    return mapping


def value_differences(recorded: Any, now: Any, key: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, recorded, now) of each leaf that differs: a whole recorded section names the leaves that moved."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        return [
            diff
            for sub in sorted(recorded.keys() | now.keys(), key=str)
            for diff in value_differences(recorded.get(sub, ABSENT), now.get(sub, ABSENT), f"{key}.{sub}")
        ]
    return [] if recorded == now else [(key, recorded, now)]


def resolved_stages(root: Path) -> dict[str, Resolved]:
    """dvc.yaml's stages by the names dvc.lock uses (`train-baseline-0`), read by DVC's API (about a second)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {
            stage.name: Resolved(
                cmd=stage.cmd,
                deps=[d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)],
                params={d.def_path: list(d.params) for d in stage.deps if isinstance(d, ParamsDependency)},
                outs=[o.def_path for o in stage.outs],
            )
            for stage in repo.index.stages
        }


def current_hash(root: Path, path: str, files: list[str]) -> str:
    if (root / path).is_file():
        return md5_file(root / path)
    under = [f for f in files if inside(f, path) and f != path]
    return md5_dir(root, path, under) if (root / path).is_dir() else "deleted"


def stale_code_deps(root: Path, name: str, entry: dict, outs: set[str]) -> list[Stale]:
    deps = [d for d in entry.get("deps", []) if not produced(d["path"], outs)]
    ignored = git_ignored(root, [d["path"] for d in deps]) if deps else set()  # raw data: not in a clone
    files = clone_files(root) if any((root / d["path"]).is_dir() for d in deps) else []
    stale = []
    for dep in deps:
        if dep["path"] in ignored:
            continue
        assert dep.get("hash") == "md5", f"{name}: {dep['path']}: hash {dep.get('hash')!r}, not DVC 3's md5"
        now = current_hash(root, dep["path"], files)
        if now != dep["md5"]:
            stale.append(
                Stale(name, dep["path"], differ(f"md5 {dep['md5']}", now if now == "deleted" else f"md5 {now}"))
            )
    return stale


def stale_params(root: Path, name: str, entry: dict) -> list[Stale]:
    stale = []
    for file, recorded in entry.get("params", {}).items():
        values = load_yaml(root / file) if (root / file).is_file() else {}
        for key, value in recorded.items():
            for leaf, was, now in value_differences(value, value_at(values, key), key):
                stale.append(Stale(name, f"param {file}:{leaf}", differ(repr(was), repr(now))))
    return stale


def listed(name: str, subject: str, recorded: list[str], now: list[str]) -> list[Stale]:
    """Items dvc.yaml lists that the lock lacks, and the other way round."""
    missing, extra = sorted(set(now) - set(recorded)), sorted(set(recorded) - set(now))
    return [Stale(name, f"{subject} {item}", "in dvc.yaml, not in dvc.lock") for item in missing] + [
        Stale(name, f"{subject} {item}", "in dvc.lock, not in dvc.yaml") for item in extra
    ]


def stale_structure(name: str, entry: dict, stage: Resolved) -> list[Stale]:
    """cmd, and which deps, params keys and outs the lock records against what dvc.yaml lists."""
    cmd = entry.get("cmd")
    stale = [] if cmd == stage.cmd else [Stale(name, "cmd", differ(repr(cmd), repr(stage.cmd)))]
    stale += listed(name, "dep", [d["path"] for d in entry.get("deps", [])], stage.deps)
    recorded_params = entry.get("params", {})
    for file in sorted(recorded_params.keys() | stage.params.keys()):
        stale += listed(name, f"param key {file}:", list(recorded_params.get(file, {})), stage.params.get(file, []))
    return stale + listed(name, "out", [o["path"] for o in entry.get("outs", [])], stage.outs)


def stale_entries(root: Path) -> list[Stale]:
    """Everything in root/dvc.lock that differs from root's dvc.yaml, params and code (empty: the lock is fresh)."""
    lock = load_yaml(root / "dvc.lock").get("stages", {})
    stages = resolved_stages(root)
    outs = {o["path"] for entry in lock.values() for o in entry.get("outs", [])}
    stale = [Stale(name, "stage", "in dvc.yaml, not in dvc.lock") for name in stages if name not in lock]
    for name, entry in lock.items():
        if name not in stages:
            stale.append(Stale(name, "stage", "in dvc.lock, not in dvc.yaml"))
            continue
        stale += stale_structure(name, entry, stages[name])
        stale += stale_code_deps(root, name, entry, outs) + stale_params(root, name, entry)
    return stale


def report(stale: list[Stale]) -> str:
    return "dvc.lock is stale:\n" + "\n".join(f"  {s}" for s in stale) + f"\n{FIX}"


def test_dvc_lock_records_the_tree():
    if git(REPO, "rev-parse", "--is-inside-work-tree").returncode != 0:
        pytest.skip("not a git checkout: the check asks git which deps a clone carries")
    stale = stale_entries(REPO)
    assert not stale, report(stale)


# The check's own tests: a small project whose lock DVC writes (so a fresh lock must pass), then edited.
PARAMS = """\
prep: {size: 8, seed: 0}
train: {models: [m1, m2], lr: 0.00001}  # DVC writes 1e-05, a string to PyYAML
models: {m1: {depth: 1}, m2: {depth: 2}}
"""
DVC_YAML = """\
stages:
  prep:
    cmd: mkdir -p data && echo prep > data/prep.txt
    deps:
      - raw
      - src/pkg/a.py
    params:
      - prep
    outs:
      - data/prep.txt
  train:
    matrix:
      model: ${train.models}
    cmd: cp data/prep.txt data/${item.model}.txt
    deps:
      - data/prep.txt
      - src/pkg
    params:
      - models.${item.model}
      - train.lr
    outs:
      - data/${item.model}.txt
"""


@pytest.fixture(scope="module")
def repro_project(tmp_path_factory) -> Path:
    """A git + DVC project after `dvc repro`: a plain stage and a matrix one; code deps (a file, a folder) and data
    deps (git-ignored raw data, another stage's output)."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("lock_project")
    for name, text in {"a.py": "A = 1\n", "b.py": "B = 2\n", "__init__.py": ""}.items():
        (root / "src/pkg").mkdir(parents=True, exist_ok=True)
        (root / "src/pkg" / name).write_text(text)
    (root / "raw").mkdir()
    (root / "raw/rows.csv").write_text("id\n1\n")
    (root / ".gitignore").write_text("/raw/\n")
    (root / "params.yaml").write_text(PARAMS)
    (root / "dvc.yaml").write_text(DVC_YAML)
    assert git(root, "init", "-q").returncode == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # DVC's reproduce resolves stage paths and the default target from the cwd
        Repo.init().close()
        with Repo() as repo:
            repo.reproduce()
    return root


@pytest.fixture
def project(repro_project, tmp_path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(repro_project, copy, symlinks=True)
    return copy


def test_a_lock_dvc_just_wrote_is_fresh(project):
    assert load_yaml(project / "dvc.lock")["stages"].keys() == {"prep", "train@m1", "train@m2"}
    assert stale_entries(project) == []
    shutil.rmtree(project / "raw")  # a clone has no data
    shutil.rmtree(project / "data")
    assert stale_entries(project) == []


def test_the_check_names_an_edited_module_and_param(project):
    with (project / "src/pkg/a.py").open("a") as f:
        f.write("# a comment is an edit too\n")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("m2: {depth: 2}", "m2: {depth: 3}"))
    stale = stale_entries(project)
    assert {(s.stage, s.subject) for s in stale} == {
        ("prep", "src/pkg/a.py"),
        ("train@m1", "src/pkg"),  # the folder dep: a.py is in it
        ("train@m2", "src/pkg"),
        ("train@m2", "param params.yaml:models.m2.depth"),  # the leaf inside the recorded section
    }
    assert "train@m2: param params.yaml:models.m2.depth: dvc.lock 2, now 3" in report(stale)
    assert report(stale).endswith(FIX)


def test_the_check_names_stages_commands_and_deps_dvc_yaml_changed(project):
    text = (project / "dvc.yaml").read_text()
    text = text.replace("echo prep", "echo prepared").replace(
        "- src/pkg/a.py\n", "- src/pkg/a.py\n      - src/pkg/b.py\n"
    )
    (project / "dvc.yaml").write_text(text + "  extra:\n    cmd: echo extra\n")
    stale = {(s.stage, s.subject) for s in stale_entries(project)}
    assert stale == {("prep", "cmd"), ("prep", "dep src/pkg/b.py"), ("extra", "stage")}
