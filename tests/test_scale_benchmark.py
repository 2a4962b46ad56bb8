"""benchmarks/scale.py at a tiny size: every stage measured at two sizes, exponents fitted (not the real run)."""

import json
import subprocess
import sys

import pytest
from conftest import load_benchmark


@pytest.mark.slow  # two tiny projects, every stage in process: about a minute
def test_the_scale_benchmark_measures_every_stage_at_each_size(tmp_path):
    scale = load_benchmark("scale")
    out = tmp_path / "scale.json"
    argv = ["--test", "20", "--labels", "24", "--sides", "40", "72", "--image-size", "32",
            "--crop-views", "3", "--subset", "40", "--optuna-max-n", "0", "--workers", "1", "--cache",
            str(tmp_path / "cache"), "--in-process", "--out", str(out)]  # fmt: skip
    first = scale.main(["--sizes", "60", *argv])  # then the larger size merged in, as a long run is done in parts
    assert first["sizes"] == [60] and first["exponents"]["prepare"]["seconds"] is None
    result = scale.main(["--sizes", "120", "--merge", *argv])
    assert json.loads(out.read_text()) == result and result["sizes"] == [60, 120]
    assert result["stages"]["60"] == first["stages"]["60"]
    again = scale.main(["--sizes", "60", "--merge", "--only", "thresholds", "evaluate", *argv])  # after a fix
    assert set(again["stages"]["60"]) == set(result["stages"]["60"])
    assert again["stages"]["120"] == result["stages"]["120"]
    assert again["stages"]["60"]["folds"] == result["stages"]["60"]["folds"]  # the other stages kept
    table = scale.markdown_table(result).splitlines()
    assert len(table) == 2 + len(result["exponents"]) and table[2].startswith("| `prepare` | ")
    with pytest.raises(SystemExit, match="image_size"):  # another setup's sizes are not mixed in
        scale.earlier_sizes(scale.parse_args(["--sizes", "240", "--merge", *argv, "--image-size", "48"]))
    small, large = result["stages"]["60"], result["stages"]["120"]
    expected = {"prepare", "folds", "hog", "train-hog_linear-0", "train-hog_linear-1", "train-hog_linear-2",
                "ensemble", "thresholds", "submit", "evaluate", "prepare-views", "train-baseline-40rows"}  # fmt: skip
    assert set(small) == set(large) == expected  # thresholds-optuna only up to --optuna-max-n (SQLite: minutes here)
    assert all(r["seconds"] > 0 for r in (*small.values(), *large.values()))
    assert large["prepare"]["disk_mb"] > small["prepare"]["disk_mb"] > 0  # twice the rows, about twice the cache
    assert large["prepare-views"]["disk_mb"] > large["prepare"]["disk_mb"]  # 1 + 3 views against 1 + (43 / 32)^2
    assert set(result["exponents"]) == expected
    assert 0.5 < result["exponents"]["prepare"]["disk_mb"] < 1.5
    assert result["exponents"]["train-baseline-40rows"]["rss_mb"] is None  # in process: no per-stage peak
    assert result["exponents"]["prepare"]["anon_mb"] is None


def test_the_memory_sampler_sees_a_grandchilds_arrays_but_not_its_mapped_files(tmp_path):
    scale = load_benchmark("scale")
    mapped = tmp_path / "mapped.bin"
    mapped.write_bytes(b"\1" * 2**26)  # 64 MB read through a memory map: file pages, not anonymous memory
    grandchild = (
        f"import mmap, time, numpy as np; f = open({str(mapped)!r}, 'rb'); "
        "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); assert sum(m[i] for i in range(0, len(m), 4096)) == "
        "2**14; a = np.ones(2**25, np.uint8); time.sleep(1.5)"
    )
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    process = subprocess.Popen([sys.executable, "-c", child])
    sampler = scale.AnonPeak(process.pid, every=0.05)
    sampler.start()
    assert process.wait() == 0
    peak = sampler.stop()
    assert 32 <= peak < 32 + 64  # the 32 MB array of the grandchild (and the interpreters), not the 64 MB file
