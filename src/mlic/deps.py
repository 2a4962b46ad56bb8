"""The package's import graph: exactly which source files a stage, or a model's architecture, imports.

DVC reruns a stage when one of its `deps` changes, so a stage's code deps must be the modules it really imports: a
missing one leaves stale outputs that `dvc status` calls up to date, an extra one reruns the stage for nothing. The
graph is read from the source with `ast` (nothing is imported, so no torch), following every `import mlic...` and
`from mlic... import ...` anywhere in a module, function-level imports included, plus the `__init__.py` of each
package on the way. Imports by name at run time (`importlib`) are not followed, on purpose: that is how the CLI
reaches its stages and how an architecture is found from `models.<entry>.arch`, so a stage does not depend on
every stage or every architecture.

`dvc.yaml` lists each stage's closure (`mlic pipeline --write` writes the lists, `mlic pipeline` compares them, and a
test runs the check); a stage that builds a model adds its architectures' closures (`arch_modules`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import mlic
from mlic.errors import ConfigError

PACKAGE = "mlic"
ENTRY_MODULES = ("mlic.cli",)  # what `mlic <stage>` imports before the stage module


def source_root(project: str | Path = ".") -> Path:
    """The folder holding the `mlic` package: the project's `src/` when it has one, else the installed package's."""
    local = Path(project) / "src"
    return local if (local / PACKAGE / "__init__.py").is_file() else Path(mlic.__file__).resolve().parents[1]


def module_file(name: str, root: Path) -> Path | None:
    """The source file of module `name` under `root` (a package's `__init__.py`), or None if there is none."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _parse(path: Path, mtime: float) -> ast.Module:  # the mtime keys the cache: an edited file is parsed again
    return ast.parse(path.read_text(), filename=str(path))


def _parents(name: str) -> list[str]:
    """`a.b.c` -> [a, a.b, a.b.c]: importing a module runs the `__init__` of every package above it."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def direct_imports(name: str, root: Path) -> set[str]:
    """The `mlic` modules that module `name` imports, with their parent packages."""
    path = module_file(name, root)
    if path is None:
        raise ConfigError(f"no module {name!r}", path=root, fix="check the module name")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_parse(path, path.stat().st_mtime)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from mlic import predictions` imports the submodule; `from mlic.x import f` only the module
            targets = [base] + [f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}", root)]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == PACKAGE and module_file(target, root):
                found.update(_parents(target))
    return found


def closure(modules: Iterable[str], root: Path) -> list[str]:
    """Every module that importing `modules` imports, sorted (the modules themselves and their packages included)."""
    pending = [parent for m in modules for parent in _parents(m)]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(direct_imports(name, root) - seen)
    return sorted(seen)


def relative_paths(paths: Iterable[Path], project: str | Path = ".") -> list[str]:
    """Files as paths relative to `project` (how dvc.yaml names them; absolute when outside it), sorted."""
    base = Path(project).resolve()
    resolved = (path.resolve() for path in paths)
    return sorted(p.relative_to(base).as_posix() if p.is_relative_to(base) else p.as_posix() for p in resolved)


def relative_files(modules: Iterable[str], root: Path, project: str | Path = ".") -> list[str]:
    """Source files of `modules` as paths relative to `project` (how dvc.yaml names them), sorted."""
    return relative_paths((module_file(module, root) for module in modules), project)


def package_data(modules: Iterable[str], root: Path) -> list[Path]:
    """The data files (not Python) shipped in the packages of `modules`: a module reads them as it reads its code."""
    files = (module_file(m, root) for m in modules)
    folders = {path.parent for path in files if path is not None and path.name == "__init__.py"}
    return sorted(f for folder in folders for f in folder.iterdir() if f.is_file() and f.suffix not in (".py", ".pyc"))


def stage_modules(stage: str, root: Path) -> list[str]:
    """What `mlic <stage>` imports: the CLI and the stage module, with everything they import."""
    return closure([*ENTRY_MODULES, f"{PACKAGE}.stages.{stage}"], root)


def arch_module(arch: str) -> str:
    """The module an architecture lives in: `models.<entry>.arch: X` is `mlic/models/X.py`."""
    return f"{PACKAGE}.models.{arch}"


def arch_modules(arch: str, root: Path) -> list[str]:
    """What building and training architecture `arch` imports beyond the train stage's own modules."""
    if module_file(arch_module(arch), root) is None:
        known = sorted(p.stem for p in (root / PACKAGE / "models").glob("*.py") if not p.stem.startswith("_"))
        raise ConfigError(
            f"no architecture module for arch {arch!r}",
            path=root / PACKAGE / "models",
            fix=f"an architecture X lives in mlic/models/X.py; modules there: {', '.join(known)}",
        )
    return closure([arch_module(arch)], root)
