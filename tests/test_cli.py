"""The `mlic` command line: its stages, its arguments, and one message (exit 2, no traceback) for user errors."""

import pytest

from mlic.cli import STAGES, build_parser, main


def test_every_stage_has_a_module_with_main():
    import importlib

    for module, _, _ in STAGES.values():
        assert callable(importlib.import_module(f"mlic.stages.{module}").main)


def test_train_needs_a_fold(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", "--model", "baseline"])
    assert info.value.code == 2 and "--fold" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--fold", "2"])
    assert args.command == "train" and args.fold == 2 and args.model is None


def test_bad_params_print_one_message_without_traceback(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: ten\n")
    assert main(["--params", str(params), "folds"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlic folds: error: ") and "train.epochs: expected int" in err
    assert "Traceback" not in err


def test_missing_inputs_say_which_stage_to_run(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"prepare:\n  out_dir: {tmp_path / 'nowhere'}\n")
    assert main(["--params", str(params), "folds"]) == 2  # in process: the CLI's exit code, without a second Python
    err = capsys.readouterr().err
    assert "prepared data not found" in err and "mlic prepare" in err
    assert "Traceback" not in err
