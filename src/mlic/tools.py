"""The `mlic` tools that are not pipeline stages.

They check a dataset, validate, score and upload (to Kaggle) submissions, download, predict new images with a
finished run, export a model to ONNX, and tune params with DVC experiments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from mlic.config import Config
from mlic.data.competitions import Competition, get_competition
from mlic.errors import ConfigError, DataProblems, MlicError
from mlic.io import write_text


def _competition(cfg: Config, competition: str | None) -> Competition:
    data = dataclasses.replace(cfg.data, competition=competition) if competition else cfg.data
    return get_competition(data)


def check(cfg: Config, root: str | None, competition: str | None, quick: bool) -> int:
    """List every problem of a dataset (exit 1), or summarise it when it is clean (exit 0)."""
    comp = _competition(cfg, competition)
    p = cfg.prepare
    scan = comp.scan(Path(root or cfg.data.root), not quick, p.num_workers, p.max_pixels)
    if scan.problems:
        print(scan.error())
        skippable = "" if scan.fatal else " (all in training rows: prepare.skip_bad_rows: true would drop them)"
        print(f"{len(scan.problems)} problem(s){skippable}")
        return 1
    raw = scan.raw
    print(
        f"{scan.root}: OK, {comp.name}: {len(raw.train_ids)} train and {len(raw.test_ids)} test images, "
        f"{len(raw.classes)} labels, {sum(map(len, raw.train_tags)) / max(1, len(raw.train_ids)):.2f} per image"
    )
    return 0


def _submission_problems(
    cfg: Config, file: Path, competition: str | None, root: str | None, allow_empty: bool
) -> tuple[Competition, list[MlicError]]:
    """The competition, and what is wrong with `file` against its sample submission and label vocabulary."""
    from mlic.data.submission import validate_submission as validate

    comp = _competition(cfg, competition)
    data_root = Path(root or cfg.data.root)
    vocabulary = comp.vocabulary(data_root)
    if vocabulary is None:  # a folder dataset: its labels are the ones its training CSV uses
        vocabulary = comp.scan(data_root).raw.classes
    return comp, validate(file, comp.submission, data_root / comp.submission.sample_file, vocabulary, allow_empty)


def validate_submission(cfg: Config, file: Path, competition: str | None, root: str | None, allow_empty: bool) -> int:
    """Check a submission file against the competition's sample submission; exit 1 listing what is wrong."""
    comp, problems = _submission_problems(cfg, file, competition, root, allow_empty)
    if problems:
        print(DataProblems(problems, f"{file}: {len(problems)} problem(s); Kaggle would reject or misread it"))
        return 1
    print(f"{file}: valid {comp.name} submission")
    return 0


def score(cfg: Config, file: Path, solution: Path, competition: str | None) -> int:
    """Print the submission's scores against the true labels, as JSON."""
    from mlic.data.scoring import score_submission

    comp = _competition(cfg, competition)
    print(json.dumps(score_submission(file, solution, comp.submission, cfg.thresholds.beta), indent=2))
    return 0


def download(cfg: Config, competition: str, dest: Path | None) -> int:
    """Fetch competition files with the kaggle package when possible, else say where to put them."""
    from mlic.data.download import download as fetch

    print(fetch(competition, dest or Path("data/raw") / competition))
    return 0


def kaggle_submit(
    cfg: Config,
    file: Path,
    message: str,
    competition: str | None,
    root: str | None,
    allow_empty: bool,
    slug: str | None,
) -> int:
    """Validate a submission exactly as validate-submission does, then upload it with the kaggle package.

    Nothing reaches Kaggle unless the file is valid and the package is installed and authenticated.
    """
    from mlic.data.kaggle_client import kaggle_api, kaggle_slug, submit_to_kaggle

    if not message.strip():
        raise MlicError("the submission message is empty", fix="describe it, e.g. -m 'resnet34, 5 folds, tuned F2'")
    comp, problems = _submission_problems(cfg, file, competition, root, allow_empty)
    if problems:
        raise DataProblems(problems, f"{file}: {len(problems)} problem(s); not uploaded (see validate-submission)")
    target = kaggle_slug(comp.name, slug)
    submit_to_kaggle(kaggle_api(), file, message, target)
    print(f"kaggle-submit: uploaded {file} to {target} with message {message!r}")
    return 0


def predict(
    cfg: Config, run: Path, images: list[str], out: Path, batch_size: int, device: str, skip_unreadable: bool
) -> int:
    """Predict tags and per-class probabilities of image files with a finished run; write them as a CSV."""
    from mlic.data.images import collect_images, readable_images
    from mlic.run import open_run

    if batch_size < 1:
        raise MlicError(f"--batch-size must be >= 1, got {batch_size}")
    paths = collect_images(images)  # a mistyped path fails before the checkpoints load
    finished = open_run(run)
    # headers only, before torch or any model loads: a bad file or a decompression bomb costs next to no memory
    paths, skipped = readable_images(paths, skip_unreadable, max_pixels=finished.cfg.prepare.max_pixels)
    if not paths:
        raise DataProblems(skipped, f"none of the {len(skipped)} image(s) can be read; nothing was written")
    from mlic.predict.inference import load_predictor, predict_files, predictions_frame, write_predictions

    target = _device(device, finished.cfg)
    predictor = load_predictor(finished, target)
    result = predict_files(predictor, paths, batch_size, skip_unreadable, checked=skipped)
    if result.skipped:
        print(DataProblems(result.skipped, f"skipped {len(result.skipped)} unreadable image(s):"))
    write_predictions(predictions_frame(result, predictor), out)
    members = ", ".join(f"{m} x {len(folds)} folds" for m, folds in predictor.members.items())
    print(f"predict: {len(result.paths)} image(s) with {members} on {target} -> {out}")
    return 0


def _device(name: str, cfg: Config):
    """`--device` as a torch device (default cpu), or an error naming the flag."""
    import torch

    from mlic.loop.runtime import resolve_device

    name = name or "cpu"
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise MlicError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MlicError(f"--device {name}: no CUDA device is available here", fix="use --device cpu (or auto)")
    return resolve_device(dataclasses.replace(cfg.train, device=name))


def export_onnx(cfg: Config, run: Path, model: str | None, fold: str, out: Path | None, opset: int | None) -> int:
    """Export one model of a finished run (one fold, or all folds averaged) to ONNX."""
    import torch

    from mlic.loop.fold_model import load_fold_model
    from mlic.predict.export import export_onnx as export
    from mlic.run import open_run

    finished = open_run(run)
    model = model or finished.cfg.train.models[0]
    finished.cfg.model(model)
    folds = list(finished.cfg.train.folds) if fold == "all" else [_fold_id(fold, finished.cfg)]
    members = [load_fold_model(finished.fold_dir(model, f), torch.device("cpu")) for f in folds]
    out = out or Path(f"{model}_fold{fold}.onnx")
    exported = export(members, out, opset)
    tta = members[0].cfg.train.tta
    print(f"export-onnx: {model} folds {folds}, inputs {list(exported.inputs)}, TTA {tta} -> {out}")
    return 0


def decode(cfg: Config, run: Path, model: str | None, beam: int | None, out_dir: Path, batch_size: int,
           device: str) -> int:  # fmt: skip
    """Write the label sets a sequence decoder (cnn_rnn) decodes: END rule and fitted stop rule, with OOF F-beta."""
    from mlic.predict.decoding import decode_run, write_decoded
    from mlic.run import open_run

    if batch_size < 1 or (beam is not None and beam < 1):
        raise MlicError(f"--batch-size and --beam must be >= 1, got {batch_size} and {beam}")
    finished = open_run(run)
    model = model or finished.cfg.train.models[0]
    finished.cfg.model(model)
    decoded = decode_run(finished, model, _device(device, finished.cfg), batch_size, beam)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = write_decoded(finished, decoded, out_dir, model)
    print(json.dumps(summary["end"] | {"rule": "end"}))
    print(json.dumps({k: v for k, v in summary["stop_rule"].items() if k != "tau_c"} | {"rule": "stop_rule"}))
    return 0


def _fold_id(fold: str, cfg: Config) -> int:
    if not fold.isdigit() or int(fold) not in cfg.train.folds:
        raise ConfigError(f"--fold {fold!r} is not a trained fold", fix=f"pass all or one of {list(cfg.train.folds)}")
    return int(fold)


def pipeline(cfg: Config, file: Path, write: bool) -> int:
    """Report (exit 1) or, with --write, rewrite a dvc.yaml that differs from what the params need (`mlic.pipeline`).

    --write also drops dvc.lock's entries of stages the file no longer has (as `dvc remove` would).
    """
    import yaml

    from mlic.pipeline import generate, pipeline_differences, prune_lock

    if not file.is_file() and not write:
        raise MlicError("pipeline file not found", path=file, fix="run from the project root, pass --file, or --write")
    expected = generate(cfg, file.resolve().parent)
    problems = pipeline_differences(file.read_text() if file.is_file() else "", expected)
    for line in problems:
        print(line)
    if problems and not write:
        print(f"{file}: differs from what params.yaml needs; `mlic pipeline --write` rewrites it")
        return 1
    if problems:
        write_text(file, expected)
    print(f"{file}: {'rewritten' if problems else 'up to date with params.yaml and the imports'}")
    if write:  # DVC's lock of a pipeline file sits beside it: dvc.yaml's is dvc.lock
        gone = prune_lock(file.with_suffix(".lock"), set(yaml.safe_load(expected)["stages"]))
        if gone:
            print(f"dvc.lock: dropped the entries of {', '.join(gone)}, stages no longer in {file}")
    return 0


def tune(cfg: Config, params: str, trials: int | None) -> int:
    """Run (or resume) the Optuna study of `tune`, each trial a DVC experiment, then apply the best to the workspace."""
    from mlic.experiments.tune.study import tune as run_study

    if not Path(params).is_file():
        raise ConfigError("params file not found", path=params, fix="run from the project root, or pass --params")
    run_study(cfg, Path(params), trials)
    return 0


def train_folds(cfg: Config, params: str, devices: list[str] | None, models: list[str] | None,
                folds: list[int] | None, force: bool) -> int:  # fmt: skip
    """Train the stale train stages at once, one per device, and record them in dvc.lock (`fold_queue`)."""
    from mlic.experiments.fold_queue import train_folds as run_folds

    if devices is None:
        import torch  # only to count the GPUs

        count = torch.cuda.device_count()
        devices = [f"cuda:{i}" for i in range(count)] if count else ["cpu"]
    log_dir = Path(cfg.train.checkpoint_dir).parent / "train-folds"
    results = run_folds(params, devices, tuple(models) if models else None, tuple(folds) if folds else None, force,
                        log_dir)  # fmt: skip
    for r in results:
        print(json.dumps({"stage": r.stage, "device": r.device, "started_s": r.started, "seconds": r.seconds}))
    return 0


# --- the command line of the tools (`mlic <tool>`; src/mlic/cli.py builds the parser) ------------------------------


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="dataset folder (default: data.root)")
    p.add_argument("--competition", help="reader (default: data.competition)")
    p.add_argument("--quick", action="store_true", help="check image bytes only, without decoding every image")


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="submission CSV to check")
    p.add_argument("--competition", help="format (default: data.competition)")
    p.add_argument("--root", help="folder holding the sample submission (default: data.root)")
    p.add_argument("--allow-empty", action="store_true", help="accept rows without labels")


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="submission CSV to score")
    p.add_argument("--solution", type=Path, required=True, help="CSV of the true labels, in the submission format")
    p.add_argument("--competition", help="format (default: data.competition)")


def _download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("competition", help="planet or imet2019")
    p.add_argument("--dest", type=Path, help="target folder (default: data/raw/<competition>)")


def _kaggle_submit_args(p: argparse.ArgumentParser) -> None:
    _validate_args(p)  # the same checks as validate-submission, which run first
    p.add_argument("-m", "--message", required=True, help="submission description shown on Kaggle")
    p.add_argument("--slug", help="Kaggle competition (kaggle.com/c/<slug>; default: the reader's, none for folder)")


RUN_HELP = "project folder of a finished run, whose params.yaml is read (default: .)"


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--run", type=Path, default=Path("."), help=RUN_HELP)
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument(
        "--skip-unreadable", action="store_true", help="leave unreadable images out, listed, instead of failing"
    )


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=Path("."), help=RUN_HELP)
    p.add_argument("--model", help="entry of train.models to export (default: the first)")
    p.add_argument("--fold", default="all", help="a trained fold id, or all to average the folds (default: all)")
    p.add_argument("--out", type=Path, help="ONNX file to write (default: <model>_fold<fold>.onnx)")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=Path("."), help=RUN_HELP)
    p.add_argument("--model", help="a cnn_rnn entry of train.models (default: the first)")
    p.add_argument("--beam", type=int, help="beam width (default: the entry's beam_size; 1 is greedy)")
    p.add_argument("--out-dir", type=Path, default=Path("submissions"), help="folder to write (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto (default: cpu)")


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", type=Path, default=Path("dvc.yaml"), help="pipeline file (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="rewrite it instead of only reporting what differs")


def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, help="trials the study holds at the end, counting those it has (default: "
                   "tune.trials)")  # fmt: skip


def _train_folds_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", nargs="+", help="one fold at a time on each: cuda:N or cpu (default: every GPU, else "
                   "cpu); `cpu cpu` trains two folds at once on the cores, split between them")  # fmt: skip
    p.add_argument("--models", nargs="+", help="entries of train.models (default: all)")
    p.add_argument("--folds", nargs="+", type=int, help="fold ids (default: train.folds)")
    p.add_argument("--force", action="store_true", help="retrain stages that dvc status reports up to date")


# Tool name -> (function name in mlic.tools, help, arguments). A tool taking `params` gets the params file's path.
TOOLS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "check": ("check", "scan a dataset and list every problem", _check_args),
    "validate-submission": ("validate_submission", "check a submission against the sample submission", _validate_args),
    "score": ("score", "score a submission against a solution file, as Kaggle would", _score_args),
    "download": (
        "download",
        "download competition files with the kaggle package, or say where to put them",
        _download_args,
    ),
    "kaggle-submit": (
        "kaggle_submit",
        "validate a submission, then upload it to the Kaggle competition with the kaggle package",
        _kaggle_submit_args,
    ),
    "predict": ("predict", "predict tags of new images with a finished run's folds and thresholds", _predict_args),
    "export-onnx": ("export_onnx", "export a trained model (its folds, TTA and normalisation) to ONNX", _export_args),
    "decode": (
        "decode",
        "write the label sets a sequence decoder (cnn_rnn) decodes, END rule and fitted stop rule, with OOF F-beta",
        _decode_args,
    ),
    "pipeline": (
        "pipeline",
        "check (or --write) dvc.yaml against what the params need: its stages, their code deps, the curve plots",
        _pipeline_args,
    ),
    "tune": (
        "tune",
        "run (or resume) an Optuna study of tune.space, each trial a DVC experiment; apply the best to the workspace",
        _tune_args,
    ),
    "train-folds": (
        "train_folds",
        "train the folds' stages at once, one per GPU (fold-parallel, no DDP), and record them in dvc.lock",
        _train_folds_args,
    ),
}
