"""benchmarks/leaderboard.py and its parts (benchmarks/lb/): phase rescaling, the row's entry, the cache's code
digests, the decoded-sets table, and one hog_linear row on the tiny sample, cached."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def lb():
    """The script and its `lb` modules, imported as `python benchmarks/leaderboard.py` does (benchmarks/ first on
    the path); the path is restored after the module's tests, the imported modules stay."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "benchmarks"))
        parts = {name: importlib.import_module(f"lb.{name}") for name in ("params", "cache", "table")}
        board = load_benchmark("leaderboard")
        return SimpleNamespace(main=board.main, parse_args=board.parse_args, **parts)


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
def test_rescale_phases(lb, lengths, total, expected):
    assert lb.params.rescale_phases(lengths, total) == expected
    assert sum(lb.params.rescale_phases(lengths, total)) == total


def test_arch_entry_overrides_backbone_and_rescales_any_phase_epochs(lb, monkeypatch):
    from mlic.models.backbones import BackboneConfig
    from mlic.models.registry import ARCHS, ArchSpec

    @dataclasses.dataclass(frozen=True)
    class PhasedConfig(BackboneConfig):
        phase_epochs: tuple[int, ...] = (1, 1, 2)

    # registered for this test only: the registry's table is restored afterwards
    monkeypatch.setitem(ARCHS._entries, "phased", ArchSpec("phased", PhasedConfig, lambda cfg, dims: None))
    models = {"other": {"arch": "baseline"}, "mine": {"arch": "phased", "phase_epochs": [2, 4, 2], "pretrained": True}}
    entry = lb.params.arch_entry("phased", models, "resnet18", 4)
    assert entry == {"arch": "phased", "phase_epochs": [1, 2, 1], "pretrained": False, "backbone": "resnet18",
                     "pretrained_file": None, "output_stride": 32}  # fmt: skip
    # no entry of that arch in params: the config's defaults, its default phases rescaled
    assert lb.params.arch_entry("phased", {}, "resnet10t", 8)["phase_epochs"] == [2, 2, 4]
    assert lb.params.arch_entry("hog_linear", {}, "resnet10t", 3) == {"arch": "hog_linear"}  # no backbone key


def test_the_spatial_budget_dilates_every_backbone_to_an_8_by_8_map(lb):
    """Its rows' entries at output_stride 8, SRN's X side set to match; the default budget leaves the backbone as is."""
    args = lb.parse_args(["--budget", "spatial"])
    assert args.archs == ("baseline", "hourglass", "csra", "ml_decoder", "srn", "cnn_rnn")
    assert (args.epochs, args.image_size, args.output_stride, args.n_splits) == (5, 64, 8, 4)
    assert args.out.name == "leaderboard_spatial.md" and args.work.name == "cache-spatial"
    assert args.train_keys == {"tta": "flips"}  # 3 views, not the dihedral 8: the evaluation fits the 2 hours
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    for arch in args.archs:
        entry = lb.params.arch_entry(arch, models, args.backbone, args.epochs, args.output_stride, args.image_size)
        assert entry["output_stride"] == 8, arch
    srn = lb.params.arch_entry("srn", models, "resnet10t", 5, 8, 64)
    assert srn["sr_map_size"] == 8 and sum(srn["phase_epochs"]) == 5
    assert lb.params.arch_entry("srn", models, "resnet10t", 5, 32, 64)["sr_map_size"] == 4  # X at stride 16
    default = lb.parse_args([])
    assert default.output_stride == 32 and default.archs is None and default.out.name == "leaderboard.md"
    assert lb.parse_args(["--budget", "spatial", "--epochs", "1", "--archs", "csra"]).archs == ["csra"]


def test_the_gpu_budget_sets_precision_and_loader_workers_for_the_box(lb):
    args = lb.parse_args(["--budget", "gpu"])
    assert (args.epochs, args.image_size, args.backbone, args.limit) == (10, 224, "resnet50", 12_000)
    assert args.train_keys == {"amp": True, "channels_last": True, "compile": False, "device": "auto",
                               "num_workers": "auto"}  # fmt: skip


@pytest.mark.slow  # the gpu budget's stages at a tiny size on the CPU (2 rows, 1 epoch, 200 chips): about a minute
def test_the_gpu_budget_runs_at_a_tiny_size_on_the_cpu(lb, tmp_path):
    """resnet50 from scratch through every stage of two rows, so that the budget cannot rot between GPU sessions."""
    from mlic.config import config_from_dict
    from mlic.stages import sample

    root = tmp_path / "planet"
    sample.main(config_from_dict({"sample": {"out_dir": str(root), "n_train": 200, "n_test": 16, "image_size": 32}}))
    out = tmp_path / "gpu.md"
    result = lb.main(["--budget", "gpu", "--archs", "baseline", "csra", "--epochs", "1", "--limit", "200",
                      "--image-size", "32", "--data-root", str(root), "--work", str(tmp_path / "work"),
                      "--out", str(out)])  # fmt: skip
    singles, [blend] = (
        [r for r in result["rows"] if r["arch"] != "blend"],
        [r for r in result["rows"] if r["arch"] == "blend"],
    )
    assert [r["status"] for r in singles] == ["ok", "ok"]
    assert result["budget"]["name"] == "gpu" and result["budget"]["backbone"] == "resnet50"
    assert result["budget"]["train_keys"]["amp"] is True
    assert all(r["entry"]["backbone"] == "resnet50" for r in singles)
    assert "| 1 |" in out.read_text()
    # the blend row: members chosen on OOF among both rows, their folds linked (not retrained), scored on the test
    assert blend["status"] == "ok" and set(blend["candidates"]) == {"baseline", "csra"}
    assert set(blend["members"]) <= {"baseline", "csra"} and 0 <= blend["test_f2"] <= 1
    assert blend["ensemble"]["method"] in {"mean", "geometric", "weighted", "per_class"}
    assert result["winner"] in {"baseline", "csra"}  # the best single row, never the blend
    linked = tmp_path / "work" / "rows" / "blend" / "train" / blend["members"][0]
    assert linked.is_symlink() and (linked / "fold_0" / "oof.npz").is_file()
    assert "**Blend** (" in out.read_text() and "against the best single row" in out.read_text()


@pytest.mark.slow  # two runs of the benchmark's stages on the sample: 2-3 s
def test_hog_linear_row_columns_table_and_cache(lb, sample_competition, tmp_path, capsys, monkeypatch):
    out, work = tmp_path / "board.md", tmp_path / "work"
    argv = ["--archs", "hog_linear", "--epochs", "1", "--n-splits", "2", "--data-root", str(sample_competition),
            "--work", str(work), "--out", str(out)]  # fmt: skip
    first = lb.main(argv)
    [row] = first["rows"]
    assert row["status"] == "ok" and row["cached"] is False
    assert set(lb.table.COLUMNS) <= set(row)
    assert all(row[c] is not None for c in lb.table.COLUMNS if c != "oof_f2_nested")  # nested: None on few rows
    assert 0 <= row["test_f2"] <= 1 and 0 <= row["oof_f2"] <= 1 and 0 <= row["oof_map"] <= 1
    assert row["head_parameters"] == row["parameters"] > 0  # no backbone: all of it is head
    assert row["epochs_run"] == 1 and row["train_images_per_s"] > 0
    assert json.loads(capsys.readouterr().out)["winner"] == "hog_linear"  # the JSON on stdout
    table = out.read_text()
    assert "| 1 | **hog_linear** |" in table and "**Winner: hog_linear**" in table and "1 epoch, images 64 px" in table
    assert json.loads(out.with_suffix(".json").read_text())["rows"][0]["test_f2"] == row["test_f2"]

    train_log = work / "rows" / "hog_linear" / "logs" / "train.log"
    written = train_log.stat().st_mtime_ns
    second = lb.main(argv)
    [again] = second["rows"]
    assert again["cached"] is True and second["upstream"]["reused"] is True
    assert train_log.stat().st_mtime_ns == written  # no train stage ran
    assert {k: v for k, v in again.items() if k != "cached"} == {k: v for k, v in row.items() if k != "cached"}
    assert "hog_linear (cached)" in out.read_text()

    # a new row key from the stages after train alone (their code or sections): the trained fold is reused
    monkeypatch.setattr(lb.cache, "row_key", lambda params, arch, solution: "0" * 64)
    [third] = lb.main(argv)["rows"]
    assert third["cached"] is False and third["train_reused"] is True and third["test_f2"] == row["test_f2"]
    assert train_log.stat().st_mtime_ns == written


def test_row_code_is_the_stages_and_its_own_arch_only(lb):
    """An edit to one architecture's module changes that row's key alone."""
    hog = lb.cache.code_digests(lb.params.ROW_STAGES, "hog_linear")
    base = lb.cache.code_digests(lb.params.ROW_STAGES, "baseline")
    assert "mlic.models.hog_linear" in hog and "mlic.models.hog_linear" not in base
    assert "mlic.models.baseline" in base and "mlic.models.baseline" not in hog
    assert not any(m == "mlic.models.hourglass" for m in [*hog, *base])
    assert {"mlic.stages.train", "mlic.stages.thresholds", "mlic.tools"} <= set(hog) & set(base)


def test_the_blend_row_is_ranked_but_the_winner_is_the_best_single_row(lb):
    """The blend sits in the table by its test F2, named by its method and members; the verdict's winner is a single
    row, and the blend line gives its gain over that row (negative when it loses)."""
    one = {"arch": "baseline", "status": "ok", "test_f2": 0.88, "threshold_method": "global"}
    two = one | {"arch": "csra", "test_f2": 0.87}
    members = ["baseline", "csra"]
    blend = one | {"arch": "blend", "test_f2": 0.885, "members": members, "candidates": members,
                   "selection": "every model added",
                   "ensemble": {"method": "per_class", "reason": "per_class won"}}  # fmt: skip
    rows = lb.table.sort_rows([one, two, blend])
    assert [r["arch"] for r in rows] == ["blend", "baseline", "csra"]
    table, verdict = lb.table.table_lines(rows), lb.table.verdict_lines(rows)
    assert "| 1 | **blend (per_class of baseline + csra)** |" in table[2]
    assert verdict[0].startswith("**Winner: baseline**, test F2 0.8800, 0.0100 ahead of csra")
    assert "test F2 0.8850, +0.0050 against the best single row (baseline)" in verdict[-1]
    worse = lb.table.verdict_lines(lb.table.sort_rows([one, two, blend | {"test_f2": 0.86}]))
    assert "-0.0200 against the best single row (baseline)" in worse[-1]
    failed = {"arch": "blend", "status": "failed", "error": "ValueError: no folds"}
    assert "**Failed** (no score): blend: ValueError: no folds" in lb.table.verdict_lines([one, failed])


def test_the_blend_row_needs_two_rows_with_their_trained_folds(lb, tmp_path, monkeypatch):
    """Rows whose fold predictions are gone (or that failed) are no candidates; fewer than 2 leaves the row out."""
    blend = importlib.import_module("lb.blend")
    monkeypatch.chdir(tmp_path)
    shared = yaml.safe_load((REPO / "params.yaml").read_text())
    rows = [{"arch": a, "status": "ok", "entry": {"arch": a}} for a in ("baseline", "csra")]
    rows.append({"arch": "srn", "status": "failed"})
    fold = tmp_path / "rows" / "baseline" / "train" / "baseline" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "oof.npz").write_bytes(b"")
    assert blend.member_dirs(rows, shared) == {"baseline": Path("rows/baseline/train/baseline/fold_0")}
    assert blend.blend_row(rows, shared, SimpleNamespace()) is None
    blend.link_members(Path("rows/blend"), blend.member_dirs(rows, shared))
    link = Path("rows/blend/train/baseline")
    assert link.is_symlink() and not Path(str(link.readlink())).is_absolute() and (link / "fold_0").is_dir()


def test_a_decoding_row_gets_its_sets_tabled_beside_its_thresholds(lb):
    plain = {"arch": "baseline", "status": "ok", "test_f2": 0.88, "oof_f2": 0.87, "threshold_method": "global"}
    sets = {"end": {"test_f2": 0.7, "oof_f2": 0.69, "labels_per_row_test": 2.1},
            "stop_rule": {"test_f2": 0.75, "oof_f2": 0.74, "labels_per_row_test": 2.0, "tau": 0.3}}  # fmt: skip
    decoder = plain | {"arch": "cnn_rnn", "test_f2": 0.8, "oof_f2": 0.79, "decoded": sets}
    assert lb.table.decoded_lines([plain]) == []
    lines = lb.table.decoded_lines([plain, decoder])
    assert "| cnn_rnn | scores + thresholds (global) | 0.8000 | 0.7900 | - |" in lines
    assert "| cnn_rnn | decoded set, END rule | 0.7000 | 0.6900 | 2.10 |" in lines
    assert "| cnn_rnn | decoded set, stop rule (tau 0.3) | 0.7500 | 0.7400 | 2.00 |" in lines
    assert not any(line.startswith("| baseline") for line in lines)


def test_region_rows_the_distillation_control_and_the_cam_row(lb):
    """kd_wsd gets its control row (same student, no teacher); nested entries get the budget's backbone; sca reads
    the cam boxes of the baseline row's trained fold, and its own proposals folder."""
    assert lb.params.select_archs(["kd_wsd_plain"]) == ["kd_wsd_plain"]
    every = lb.params.select_archs(None)
    assert {"wsddn", "kd_wsd", "kd_wsd_plain", "sca"} <= set(every) and every.index("baseline") < every.index("sca")
    models = {"kd_wsd": {"arch": "kd_wsd", "student": {"arch": "baseline", "backbone": "resnet50"},
                         "teacher": {"arch": "wsddn", "backbone": "resnet50", "pretrained": True}}}  # fmt: skip
    entry = lb.params.arch_entry("kd_wsd", models, "resnet10t", 5)
    assert entry["student"]["backbone"] == entry["teacher"]["backbone"] == "resnet10t"
    assert entry["teacher"]["pretrained"] is False and "backbone" not in entry
    shared = {"proposals": {"method": "windows", "out_dir": "upstream/x/proposals", "cam": {"tau": 0.5}},
              "train": {}, "ensemble": {}, "thresholds": {}, "submit": {}, "evaluate": {}}  # fmt: skip
    sca = lb.params.row_params(shared, "sca", {"arch": "sca"})["proposals"]
    assert sca["method"] == "cam" and sca["out_dir"] == "rows/sca/proposals"
    assert sca["cam"] == {"tau": 0.5, "model": "baseline", "run_dir": lb.params.CAM_RUN}
    assert lb.params.row_params(shared, "wsddn", {"arch": "wsddn"})["proposals"] == shared["proposals"]
    code = lb.cache.code_digests(lb.params.ROW_STAGES, "kd_wsd", ["mlic.models.baseline", "mlic.models.wsddn"])
    assert {"mlic.models.kd_wsd", "mlic.models.baseline", "mlic.models.wsddn", "mlic.stages.teacher"} <= set(code)


def test_the_cache_stores_a_row_and_keys_the_shared_stages_by_what_they_read(lb, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cache's paths are relative to the work folder
    key = "ab" * 32
    assert lb.cache.load_row("baseline", key) is None
    lb.cache.store_row("baseline", key, {"arch": "baseline", "test_f2": 0.5})
    assert lb.cache.row_file("baseline", key) == Path("cache") / f"baseline-{key[:16]}.json"
    assert lb.cache.load_row("baseline", key) == {"arch": "baseline", "test_f2": 0.5}
    assert lb.cache.load_row("baseline", "cd" * 32) is None

    def probe(image_size: int, upstream: str) -> dict:
        return {"data": {"root": "d"}, "prepare": {"image_size": image_size, "out_dir": f"{upstream}/prepare"},
                "hog": {"out_dir": f"{upstream}/hog"}, "folds": {"n_splits": 2, "out_file": f"{upstream}/folds.csv"},
                "proposals": {"method": "windows", "out_dir": f"{upstream}/proposals"}}  # fmt: skip

    folder = lb.cache.upstream_folder(probe(64, "upstream"), None)
    assert folder.startswith("upstream/") and len(folder) == len("upstream/") + 16
    assert lb.cache.upstream_folder(probe(64, "elsewhere"), None) == folder  # output paths are not in the key
    assert lb.cache.upstream_folder(probe(32, "upstream"), None) != folder
    assert lb.cache.upstream_folder(probe(64, "upstream"), 100) != folder
    assert lb.cache.upstream_done(tmp_path) is None
    lb.cache.mark_upstream_done(tmp_path, {"prepare": 1.5})
    assert lb.cache.upstream_done(tmp_path) == {"seconds": {"prepare": 1.5}}


def test_only_a_distilled_row_runs_the_teacher_stage(lb):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    args = SimpleNamespace(image_size=64, n_splits=2, epochs=2, train_keys={})
    shared = lb.params.shared_params(base, args, "upstream/x", "data")
    rows = {name: lb.params.VARIANTS.get(name, (name, {})) for name in ("baseline", "kd_wsd", "kd_wsd_plain")}
    teachers = {}
    for name, (arch, overrides) in rows.items():
        entry = lb.params.arch_entry(arch, base["models"], "resnet10t", 2) | overrides
        teachers[name] = lb.params.has_teacher(name, lb.params.row_params(shared, name, entry))
    assert teachers == {"baseline": False, "kd_wsd": True, "kd_wsd_plain": False}
