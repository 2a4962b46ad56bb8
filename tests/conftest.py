"""Shared fixtures: real data from ../shared/data (skipped cleanly when absent) and small synthetic datasets."""

from __future__ import annotations

from pathlib import Path

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
