"""Shared fixtures: real data from ../shared/data (skipped cleanly when absent) and small synthetic datasets."""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# One OpenMP thread for torch, in this process (set before any test module imports torch) and in every subprocess it
# starts (dvc stages, `mlic train`, `mlic predict`): the tests' networks are tiny, and on two cores a second intra-op
# thread makes them slower, not faster. A tiny fold's `mlic train`: 10.5 s with two threads, 6.5 s with one on an idle
# machine; the heads' tests of test_csra, test_hourglass and test_ml_decoder: 40 s against 6 s on a loaded one. A
# value set outside the tests wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def pytest_collection_modifyitems(config, items) -> None:
    """A test that reads the finished run must be marked slow: the fast tier builds no DVC project."""
    unmarked = [item.nodeid for item in items if "finished_build" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("slow") is None]  # fmt: skip
    if unmarked:
        raise pytest.UsageError("mark these @pytest.mark.slow, they build the finished run:\n" + "\n".join(unmarked))


@pytest.fixture(scope="session")
def finished_build(tmp_path_factory) -> tuple[Path, str]:
    """The session's one finished tiny project (tests/finished_run.py, about 1 min) and the log of its `dvc repro`."""
    from finished_run import build_finished_run

    root = tmp_path_factory.mktemp("finished_run")
    return root, build_finished_run(root)


@pytest.fixture(scope="session")
def finished_run(finished_build) -> Path:
    """A finished `dvc repro` on a tiny sample with baseline and hourglass, plus one DVC experiment.

    See tests/finished_run.py. Tests must not modify it: a test that edits one works on a copy (`copy_run`).
    """
    return finished_build[0]


@pytest.fixture(scope="session")
def finished_run_log(finished_build) -> str:
    """The log of the finished run's `dvc repro`: which stages ran, in which order."""
    return finished_build[1]


def tiny_options(arch: str) -> dict:
    """A copy of the tiny settings `arch` declares beside its registration (`register_arch(..., tiny=...)`).

    Every sweep over the architectures builds them from there, so that each arch's test size is declared once.
    """
    from mlic.models.registry import get_arch

    return copy.deepcopy(dict(get_arch(arch).tiny))


def tiny_entry(arch: str) -> dict:
    """A `models` entry of `arch` at its tiny settings (see `tiny_options`): `{"arch": arch, **settings}`."""
    return {"arch": arch, **tiny_options(arch)}


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


@pytest.fixture
def sqlite_dir(tmp_path) -> Iterator[Path]:
    """A fresh folder for the test's SQLite files (Optuna studies): on tmpfs (/dev/shm) where there is one.

    SQLite syncs the disk at every commit, and a study commits several times per trial: 10 ms a commit on this
    machine's disk against 0.1 ms in memory, seconds of each Optuna test. Elsewhere, a folder in `tmp_path`.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        (tmp_path / "sqlite").mkdir()
        yield tmp_path / "sqlite"
        return
    folder = Path(tempfile.mkdtemp(prefix="mlic-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_benchmark(name: str) -> ModuleType:
    """The script `benchmarks/<name>.py` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
