"""benchmarks/leaderboard.py: phase rescaling, the row's entry, and one hog_linear row on the tiny sample, cached."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def leaderboard():
    """The benchmark script as a module."""
    return load_benchmark("leaderboard")


@pytest.mark.parametrize(
    ("lengths", "total", "expected"),
    [
        ([2, 4, 2, 2], 10, [2, 4, 2, 2]),  # already the budget: unchanged
        ([2, 4, 2, 2], 5, [1, 2, 1, 1]),
        ([1, 1, 1, 7], 4, [1, 1, 1, 1]),  # the rounding gives 0-epoch phases: each gets one, from the longest
        ([3, 1], 20, [15, 5]),
        ([1, 1, 1, 1], 2, [1, 1, 0, 0]),  # fewer epochs than phases: the engine will refuse it, and the row fails
    ],
)
def test_rescale_phases(leaderboard, lengths, total, expected):
    assert leaderboard.rescale_phases(lengths, total) == expected
    assert sum(leaderboard.rescale_phases(lengths, total)) == total


def test_arch_entry_overrides_backbone_and_rescales_any_phase_epochs(leaderboard, monkeypatch):
    from mlic.models.backbones import BackboneConfig
    from mlic.models.registry import ARCHS, ArchSpec

    @dataclasses.dataclass(frozen=True)
    class PhasedConfig(BackboneConfig):
        phase_epochs: tuple[int, ...] = (1, 1, 2)

    # registered for this test only: the registry's table is restored afterwards
    monkeypatch.setitem(ARCHS._entries, "phased", ArchSpec("phased", PhasedConfig, lambda cfg, dims: None))
    models = {"other": {"arch": "baseline"}, "mine": {"arch": "phased", "phase_epochs": [2, 4, 2], "pretrained": True}}
    entry = leaderboard.arch_entry("phased", models, "resnet18", 4)
    assert entry == {"arch": "phased", "phase_epochs": [1, 2, 1], "pretrained": False, "backbone": "resnet18",
                     "pretrained_file": None}  # fmt: skip
    # no entry of that arch in params: the config's defaults, its default phases rescaled
    assert leaderboard.arch_entry("phased", {}, "resnet10t", 8)["phase_epochs"] == [2, 2, 4]
    assert leaderboard.arch_entry("hog_linear", {}, "resnet10t", 3) == {"arch": "hog_linear"}  # no backbone key


def test_hog_linear_row_columns_table_and_cache(leaderboard, sample_competition, tmp_path, capsys):
    out, work = tmp_path / "board.md", tmp_path / "work"
    argv = ["--archs", "hog_linear", "--epochs", "1", "--n-splits", "2", "--data-root", str(sample_competition),
            "--work", str(work), "--out", str(out)]  # fmt: skip
    first = leaderboard.main(argv)
    [row] = first["rows"]
    assert row["status"] == "ok" and row["cached"] is False
    assert set(leaderboard.COLUMNS) <= set(row)
    assert all(row[c] is not None for c in leaderboard.COLUMNS if c != "oof_f2_nested")  # nested: None on few rows
    assert 0 <= row["test_f2"] <= 1 and 0 <= row["oof_f2"] <= 1 and 0 <= row["oof_map"] <= 1
    assert row["head_parameters"] == row["parameters"] > 0  # no backbone: all of it is head
    assert row["epochs_run"] == 1 and row["train_images_per_s"] > 0
    assert json.loads(capsys.readouterr().out)["winner"] == "hog_linear"  # the JSON on stdout
    table = out.read_text()
    assert "| 1 | **hog_linear** |" in table and "**Winner: hog_linear**" in table and "1 epoch, images 64 px" in table
    assert json.loads(out.with_suffix(".json").read_text())["rows"][0]["test_f2"] == row["test_f2"]

    train_log = work / "rows" / "hog_linear" / "logs" / "train.log"
    written = train_log.stat().st_mtime_ns
    second = leaderboard.main(argv)
    [again] = second["rows"]
    assert again["cached"] is True and second["upstream"]["reused"] is True
    assert train_log.stat().st_mtime_ns == written  # no train stage ran
    assert {k: v for k, v in again.items() if k != "cached"} == {k: v for k, v in row.items() if k != "cached"}
    assert "hog_linear (cached)" in out.read_text()


def test_row_code_is_the_stages_and_its_own_arch_only(leaderboard):
    """An edit to one architecture's module changes that row's key alone."""
    hog = leaderboard.code_hashes(leaderboard.ROW_STAGES, "hog_linear")
    base = leaderboard.code_hashes(leaderboard.ROW_STAGES, "baseline")
    assert "mlic.models.hog_linear" in hog and "mlic.models.hog_linear" not in base
    assert "mlic.models.baseline" in base and "mlic.models.baseline" not in hog
    assert not any(m == "mlic.models.hourglass" for m in [*hog, *base])
    assert {"mlic.stages.train", "mlic.stages.thresholds", "mlic.tools"} <= set(hog) & set(base)


def test_a_decoding_row_gets_its_sets_tabled_beside_its_thresholds(leaderboard):
    plain = {"arch": "baseline", "status": "ok", "test_f2": 0.88, "oof_f2": 0.87, "threshold_method": "global"}
    sets = {"end": {"test_f2": 0.7, "oof_f2": 0.69, "labels_per_row_test": 2.1},
            "stop_rule": {"test_f2": 0.75, "oof_f2": 0.74, "labels_per_row_test": 2.0, "tau": 0.3}}  # fmt: skip
    decoder = plain | {"arch": "cnn_rnn", "test_f2": 0.8, "oof_f2": 0.79, "decoded": sets}
    assert leaderboard.decoded_lines([plain]) == []
    lines = leaderboard.decoded_lines([plain, decoder])
    assert "| cnn_rnn | scores + thresholds (global) | 0.8000 | 0.7900 | - |" in lines
    assert "| cnn_rnn | decoded set, END rule | 0.7000 | 0.6900 | 2.10 |" in lines
    assert "| cnn_rnn | decoded set, stop rule (tau 0.3) | 0.7500 | 0.7400 | 2.00 |" in lines
    assert not any(line.startswith("| baseline") for line in lines)


def test_region_rows_the_distillation_control_and_the_cam_row(leaderboard):
    """kd_wsd gets its control row (same student, no teacher); nested entries get the budget's backbone; sca reads
    the cam boxes of the baseline row's trained fold, and its own proposals folder."""
    assert leaderboard.select_archs(["kd_wsd_plain"]) == ["kd_wsd_plain"]
    every = leaderboard.select_archs(None)
    assert {"wsddn", "kd_wsd", "kd_wsd_plain", "sca"} <= set(every) and every.index("baseline") < every.index("sca")
    models = {"kd_wsd": {"arch": "kd_wsd", "student": {"arch": "baseline", "backbone": "resnet50"},
                         "teacher": {"arch": "wsddn", "backbone": "resnet50", "pretrained": True}}}  # fmt: skip
    entry = leaderboard.arch_entry("kd_wsd", models, "resnet10t", 5)
    assert entry["student"]["backbone"] == entry["teacher"]["backbone"] == "resnet10t"
    assert entry["teacher"]["pretrained"] is False and "backbone" not in entry
    shared = {"proposals": {"method": "windows", "out_dir": "upstream/x/proposals", "cam": {"tau": 0.5}},
              "train": {}, "ensemble": {}, "thresholds": {}, "submit": {}, "evaluate": {}}  # fmt: skip
    sca = leaderboard.row_params(shared, "sca", {"arch": "sca"})["proposals"]
    assert sca["method"] == "cam" and sca["out_dir"] == "rows/sca/proposals"
    assert sca["cam"] == {"tau": 0.5, "model": "baseline", "run_dir": leaderboard.CAM_RUN}
    assert leaderboard.row_params(shared, "wsddn", {"arch": "wsddn"})["proposals"] == shared["proposals"]
    code = leaderboard.code_hashes(leaderboard.ROW_STAGES, "kd_wsd", ["mlic.models.baseline", "mlic.models.wsddn"])
    assert {"mlic.models.kd_wsd", "mlic.models.baseline", "mlic.models.wsddn", "mlic.stages.teacher"} <= set(code)
