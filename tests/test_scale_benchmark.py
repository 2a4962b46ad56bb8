"""benchmarks/scale.py at a tiny size: every stage measured at two sizes, exponents fitted (not the real run)."""

import json

import pytest
from conftest import load_benchmark


@pytest.mark.slow  # two tiny projects, every stage in process: about a minute
def test_the_scale_benchmark_measures_every_stage_at_each_size(tmp_path):
    scale = load_benchmark("scale")
    out = tmp_path / "scale.json"
    argv = ["--sizes", "60", "120", "--test", "20", "--labels", "24", "--sides", "40", "72", "--image-size", "32",
            "--crop-views", "3", "--subset", "40", "--optuna-max-n", "0", "--workers", "1", "--cache",
            str(tmp_path / "cache"), "--in-process", "--out", str(out)]  # fmt: skip
    result = scale.main(argv)
    assert json.loads(out.read_text()) == result
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
