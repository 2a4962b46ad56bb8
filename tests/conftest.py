"""Shared fixtures: real data from ../shared/data (skipped cleanly when absent) and small synthetic datasets."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def sample_competition(tmp_path_factory) -> Path:
    """A tiny synthetic Planet-layout competition written by the `sample` stage."""
    from mlic.config import config_from_dict
    from mlic.stages import sample

    root = tmp_path_factory.mktemp("sample") / "planet"
    cfg = config_from_dict({"sample": {"out_dir": str(root), "n_train": 40, "n_test": 12, "image_size": 32}})
    sample.main(cfg)
    return root


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished `dvc repro` on a tiny sample with baseline and hourglass, plus one DVC experiment (about 1 min).

    See tests/finished_run.py. Tests must not modify it.
    """
    from finished_run import build_finished_run

    return build_finished_run(tmp_path_factory.mktemp("finished_run"))


def arch_model(arch: str, num_classes: int, source_dims: dict | None = None, **options):
    """A registered architecture's network and task, with `options` checked by its config class (seeded init)."""
    import torch

    from mlic.config import ModelEntry
    from mlic.models.registry import ModelDims, resolve_entry

    resolved = resolve_entry(arch, ModelEntry(arch, options))
    torch.manual_seed(0)
    return resolved.build(ModelDims(num_classes, source_dims or {})), resolved.task()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside the block, then as before.

    The heads' tests run tiny ops: on a busy shared CPU, intra-op threads waiting on each other made them 20x slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The test runs on one torch thread (`one_torch_thread`); modules opt in with `usefixtures("one_thread")`."""
    with one_torch_thread():
        yield


def load_benchmark(name: str) -> ModuleType:
    """The script `benchmarks/<name>.py` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
