"""The `mlic` tools that are not pipeline stages.

They check a dataset, validate, score and upload (to Kaggle) submissions, download, predict new images with a
finished run, export a model to ONNX, and tune params with DVC experiments.
"""

from __future__ import annotations

import dataclasses
import json
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

    from mlic.train.runtime import resolve_device

    name = name or "cpu"
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise MlicError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MlicError(f"--device {name}: no CUDA device is available here", fix="use --device cpu (or auto)")
    return resolve_device(dataclasses.replace(cfg.train, device=name))


def export_onnx(cfg: Config, run: Path, model: str | None, fold: str, out: Path | None, opset: int | None) -> int:
    """Export one model of a finished run (one fold, or all folds averaged) to ONNX."""
    import torch

    from mlic.predict.export import export_onnx as export
    from mlic.predict.inference import load_fold_model
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
    """Report (exit 1) or, with --write, rewrite a dvc.yaml that differs from what the params need (`mlic.pipeline`)."""
    from mlic.pipeline import generate, pipeline_differences

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
    return 0


def tune(cfg: Config, params: str, trials: int | None) -> int:
    """Run (or resume) the Optuna study of `tune`, each trial a DVC experiment, then apply the best to the workspace."""
    from mlic.experiments.tune import tune as run_study

    if not Path(params).is_file():
        raise ConfigError("params file not found", path=params, fix="run from the project root, or pass --params")
    run_study(cfg, Path(params), trials)
    return 0
