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

from mlic.io import atomic_path, remove_stale_temps

PARAMS = {
    "prepare": {"image_size": 32, "crop_views": 3, "num_workers": 1, "out_dir": "out/prepare"},
    "hog": {"image_size": 32, "num_workers": 1, "out_dir": "out/hog"},
}
# Runs `mlic <stage>` with one step of its write stalled: the stalled process touches a marker and sleeps, and the
# test SIGKILLs it then. The kill lands at a known point of the write whatever the machine's speed, so that the tiny
# session sample serves (a timing guess needed a 2,000-image sample for each write to last a second or more).
STALLER = """
import sys, time
from pathlib import Path
import mlic.data.images, mlic.stages.hog
marker, stage = Path(sys.argv[1]), sys.argv[2]

def stall():
    marker.touch()
    time.sleep(600)

decoded, file_views, save_hog_stats = [0], mlic.data.images.file_views, mlic.stages.hog.save_hog_stats
def half_way_through_the_cache(*args, **kwargs):  # prepare: the train cache's rows 0-19 are written, 20- are not
    decoded[0] += 1
    if decoded[0] == 21:
        stall()
    return file_views(*args, **kwargs)
def after_the_arrays(*args, **kwargs):  # hog: the arrays are in the temp folder, its config is not yet
    save_hog_stats(*args, **kwargs)
    stall()
mlic.data.images.file_views = half_way_through_the_cache
mlic.stages.hog.save_hog_stats = after_the_arrays
from mlic.cli import main
sys.exit(main([stage]))
"""


def project(folder: Path, competition: Path, prepared: Path | None = None) -> Path:
    """A project folder whose params read `competition` (and, for `hog`, the prepared data at `prepared`)."""
    params = {"data": {"root": str(competition)}, **PARAMS}
    if prepared is not None:
        params["prepare"] = {**params["prepare"], "out_dir": str(prepared)}
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def run_stage(folder: Path, name: str) -> None:
    """`mlic <name>` in `folder`, in this process (the CLI as a user runs it, without a second interpreter)."""
    from mlic.cli import main

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main([name]) == 0, f"mlic {name} failed"


def kill_while_writing(folder: Path, name: str, partial: str) -> Path:
    """Start `mlic <name>`, SIGKILL it where it stalls in its write; return the path matching the glob `partial`."""
    marker = folder / "stalled"
    proc = subprocess.Popen([sys.executable, "-c", STALLER, str(marker), name], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if marker.exists():
                proc.send_signal(signal.SIGKILL)
                assert proc.wait() == -signal.SIGKILL
                marker.unlink()
                found = sorted(folder.glob(partial))
                assert found, f"nothing matched {partial} when mlic {name} was killed"
                return found[0]
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()  # reaped: a zombie would still count as a running writer
    pytest.fail(f"mlic {name} ended (rc {proc.returncode}) before it stalled:\n{proc.stderr.read()[-2000:]}")


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
def clean(sample_competition, tmp_path_factory) -> Path:
    """A project where `prepare` and `hog` ran once, uninterrupted."""
    folder = project(tmp_path_factory.mktemp("clean") / "project", sample_competition)
    run_stage(folder, "prepare")
    run_stage(folder, "hog")
    return folder


def test_prepare_killed_while_writing_the_image_cache_recovers_on_rerun(sample_competition, clean, tmp_path):
    folder = project(tmp_path / "project", sample_competition)
    cache = kill_while_writing(folder, "prepare", "out/.prepare.*.tmp/.train_images.npy.*.tmp")
    assert cache.is_file() and not (folder / "out" / "prepare").exists()  # killed half way through the cache

    run_stage(folder, "prepare")

    assert_same_output(folder / "out" / "prepare", clean / "out" / "prepare")
    assert_no_leftovers(folder, "prepare")


def test_hog_killed_while_writing_its_arrays_recovers_on_rerun(sample_competition, clean, tmp_path):
    folder = project(tmp_path / "project", sample_competition, prepared=clean / "out" / "prepare")
    temp = kill_while_writing(folder, "hog", "out/.hog.*.tmp")
    assert temp.is_dir() and any(temp.iterdir()) and not (folder / "out" / "hog").exists()  # half made

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
