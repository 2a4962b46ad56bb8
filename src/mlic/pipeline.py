"""The code deps of `dvc.yaml`, generated from the import graph (`mlic dvc-deps`), so they are exact both ways.

Each stage runs `mlic <stage>`; its code deps are the files of `mlic.deps.stage_modules(stage)`. The `code` stage
depends on the whole package instead: it finds the architecture by name, and its output (the architecture's files
and hashes) can change with any module. A train stage's architecture code reaches it through that output.
"""

from __future__ import annotations

from pathlib import Path

from mlic import deps
from mlic.errors import ConfigError

CODE_PREFIX = "src/"  # deps under it are code; the others (data folders, ${...} outputs) are left as written
WHOLE_PACKAGE = {"code": ["src/mlic"]}
# The CAM model's architecture is named in params (proposals.cam.model) and found by name, with no `code@` output
# for it to reach the stage through: it depends on every architecture module as well.
EXTRA_CODE = {"cam-model": ["src/mlic/models"]}


def expected_code_deps(command: str, project: Path) -> list[str]:
    """The code deps of the stage running `mlic <command>`, as paths relative to the project."""
    from mlic.cli import STAGES

    if command in WHOLE_PACKAGE:
        return WHOLE_PACKAGE[command]
    root = deps.source_root(project)
    files = deps.relative_files(deps.stage_modules(STAGES[command][0], root), root, project)
    return files + EXTRA_CODE.get(command, [])


def _stage_command(name: str, stage: dict) -> str:
    body = stage.get("do", stage)  # foreach stages keep theirs under `do`
    words = str(body.get("cmd", "")).split()
    if words[:1] != ["mlic"] or len(words) < 2:
        raise ConfigError(f"dvc.yaml stage {name!r} does not run `mlic <stage>`", fix="run stages through the CLI")
    return words[1]


def sync_code_deps(path: Path, write: bool = False) -> list[str]:
    """Compare (or, with `write`, replace) each stage's code deps in `path` with the import graph's.

    Returns:
        One line per stage whose listed code deps differ (what is missing and what is extra); empty when in sync.
    """
    from ruamel.yaml import YAML  # DVC's own YAML library: a round trip keeps the file's comments and layout

    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # the file's own style: list items indented under their key
    document = yaml.load(path.read_text())
    problems = []
    for name, stage in document["stages"].items():
        body = stage.get("do", stage)
        listed = [d for d in body.get("deps", []) if isinstance(d, str) and d.startswith(CODE_PREFIX)]
        expected = expected_code_deps(_stage_command(name, stage), path.parent)
        if listed != expected:
            missing, extra = sorted(set(expected) - set(listed)), sorted(set(listed) - set(expected))
            problems.append(f"stage {name}: missing {missing}, extra {extra}" if missing or extra
                            else f"stage {name}: code deps out of order")  # fmt: skip
            others = [d for d in body.get("deps", []) if d not in listed]
            body["deps"] = others + expected
    if write and problems:
        with path.open("w") as f:
            yaml.dump(document, f)
    return problems
