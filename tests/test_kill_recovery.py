"""SIGKILL in the middle of `prepare` and `hog` writing their outputs: the rerun recovers by itself.

Each stage writes its output folder through `mlic.io.atomic_path`: a temp folder beside it, renamed into place
when complete. A killed stage cannot clean up; its rerun must still succeed, give the bytes of a clean run, and
leave no temp path behind (the image cache alone is N x views x S x S x 3 bytes: GBs on the real data).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlic.config import config_from_dict
from mlic.io import atomic_path, remove_stale_temps

# Big enough that each cache write takes a second or more (decoding 2,000 128 px JPEGs into 4 views each; HOG of
# 8,000 views at 64 px), small enough for ~30 s for the whole file on 2 cores.
SAMPLE = {"n_train": 2000, "n_test": 200, "image_size": 128}
PARAMS = {
    "prepare": {"image_size": 32, "crop_views": 3, "num_workers": 1, "out_dir": "out/prepare"},
    "hog": {"image_size": 64, "num_workers": 1, "out_dir": "out/hog"},
}


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> Path:
    from mlic.stages import sample

    root = tmp_path_factory.mktemp("kill") / "competition"
    sample.main(config_from_dict({"sample": {"out_dir": str(root), **SAMPLE}}))
    return root


def project(folder: Path, competition: Path, prepared: Path | None = None) -> Path:
    """A project folder whose params read `competition` (and, for `hog`, the prepared data at `prepared`)."""
    params = {"data": {"root": str(competition)}, **PARAMS}
    if prepared is not None:
        params["prepare"] = {**params["prepare"], "out_dir": str(prepared)}
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def stage(name: str) -> list[str]:
    return [sys.executable, "-m", "mlic.cli", name]


def run_stage(folder: Path, name: str) -> None:
    result = subprocess.run(stage(name), cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, f"mlic {name}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def kill_while_writing(folder: Path, name: str, partial: str, settle: float) -> Path:
    """Start `mlic <name>`, SIGKILL it `settle` s after a path matching the glob `partial` appears; return that path."""
    proc = subprocess.Popen(stage(name), cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            found = sorted(folder.glob(partial))
            if found:
                time.sleep(settle)  # well into the write
                proc.send_signal(signal.SIGKILL)
                assert proc.wait() == -signal.SIGKILL
                return found[0]
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()  # reaped: a zombie would still count as a running writer
    pytest.fail(f"mlic {name} ended (rc {proc.returncode}) before anything matched {partial}")


def assert_same_output(ours: Path, clean: Path) -> None:
    """Same files; the same bytes, except .npz archives (their zip entries carry the write time): same arrays."""
    names = sorted(p.name for p in ours.iterdir())
    assert names == sorted(p.name for p in clean.iterdir())
    for name in names:
        if name.endswith(".npz"):
            with np.load(ours / name) as a, np.load(clean / name) as b:
                assert sorted(a.files) == sorted(b.files)
                for key in a.files:
                    np.testing.assert_array_equal(a[key], b[key])
        else:
            assert (ours / name).read_bytes() == (clean / name).read_bytes(), name


def assert_no_leftovers(folder: Path, output: str) -> None:
    assert [p.name for p in (folder / "out").iterdir()] == [output]
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def clean(competition, tmp_path_factory) -> Path:
    """A project where `prepare` and `hog` ran once, uninterrupted."""
    folder = project(tmp_path_factory.mktemp("clean") / "project", competition)
    run_stage(folder, "prepare")
    run_stage(folder, "hog")
    return folder


def test_prepare_killed_while_writing_the_image_cache_recovers_on_rerun(competition, clean, tmp_path):
    folder = project(tmp_path / "project", competition)
    cache = kill_while_writing(folder, "prepare", "out/.prepare.*.tmp/.train_images.npy.*.tmp", settle=0.3)
    assert cache.is_file() and not (folder / "out" / "prepare").exists()  # killed half way through the cache

    run_stage(folder, "prepare")

    assert_same_output(folder / "out" / "prepare", clean / "out" / "prepare")
    assert_no_leftovers(folder, "prepare")


def test_hog_killed_while_writing_its_arrays_recovers_on_rerun(competition, clean, tmp_path):
    folder = project(tmp_path / "project", competition, prepared=clean / "out" / "prepare")
    # HOG fills its temp folder once the features are computed, so the kill lands while the folder is being made
    temp = kill_while_writing(folder, "hog", "out/.hog.*.tmp", settle=0.5)
    assert temp.is_dir() and not (folder / "out" / "hog").exists()

    run_stage(folder, "hog")

    assert_same_output(folder / "out" / "hog", clean / "out" / "hog")
    assert_no_leftovers(folder, "hog")


def test_only_temp_paths_of_finished_processes_are_removed(tmp_path):
    final = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    with atomic_path(final, is_dir=True) as live:  # this process's own temp folder, named like a killed one's
        host_pid = live.name.split(".")[2]
        host = host_pid.split("-")[0]
        dead = tmp_path / f".out.{host}-{dead_pid}.abcd1234.tmp"
        dead.mkdir()
        (dead / "half.npy").write_bytes(b"x")
        other_host = tmp_path / f".out.{'0' * 8 if host != '0' * 8 else '1' * 8}-{dead_pid}.abcd1234.tmp"
        other_host.mkdir()
        other_output = tmp_path / f".out.json.{host}-{dead_pid}.abcd1234.tmp"  # another output's (out.json)
        other_output.touch()
        assert remove_stale_temps(final) == [dead]
        assert live.is_dir() and other_host.is_dir() and other_output.exists()
        assert live.name.startswith(f".out.{host}-{os.getpid()}.")
    assert final.is_dir() and not live.exists()


def test_replacing_a_directory_never_leaves_it_half_deleted(tmp_path):
    final = tmp_path / "out"
    for content in ("old", "new"):
        with atomic_path(final, is_dir=True) as tmp:
            (tmp / "a.txt").write_text(content)
    assert (final / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old folder, renamed aside, is gone
