"""Stage `thresholds`: fit per-class thresholds for F-beta on the ensemble's out-of-fold predictions.

Every method in `thresholds.method` and `thresholds.compare_methods` is scored in-sample and nested (fit on
k-1 folds, scored on the other, round-robin); the submission uses `thresholds.method` fitted on all rows, or with
`auto` the compared method and shrink with the best nested score, once auto as a procedure has beaten global out of
sample too (`mlic.predict.threshold_fitting.score_procedure`). Fit timings go to the log only: the outputs are
DVC-tracked, and must be the same bytes whenever the inputs are.
"""

from __future__ import annotations

import numpy as np

from mlic.config import Config
from mlic.io import write_json
from mlic.layout import load_ensemble, load_prepared
from mlic.metrics import mean_average_precision
from mlic.predict.threshold_fitting import AUTO, ProcedureScore, ThresholdFit, fit_and_compare


def headline(fit: ThresholdFit, oof_map: float, beta: float) -> dict:
    """The scalar keys of `thresholds.metrics_file`, `dvc exp show`'s columns: the submission's method and scores.

    `method` is the fitting method behind the submission's thresholds (with `auto`, the one it chose);
    `oof_f<beta>` and `oof_f<beta>_nested` are its in-sample and nested sample F-beta (the nested one is None when
    there are too few rows to nest, and is what `mlic tune` maximises); `oof_map` is the OOF probabilities' mAP.
    """
    key, chosen = f"f{beta:g}_samples", fit.reports[fit.used]
    nested = chosen.nested.get(key)
    return {
        "method": fit.method,
        f"oof_f{beta:g}": round(float(chosen.in_sample[key]), 6),
        f"oof_f{beta:g}_nested": None if nested is None else round(float(nested), 6),
        "oof_map": round(oof_map, 6) if np.isfinite(oof_map) else None,
    }


def scores_file(fit: ThresholdFit, margin_se: float, beta: float) -> dict:
    """`thresholds.metrics_file`'s per-method part: each method's in-sample, nested and per-part scores; auto's.

    Auto's mapping also holds its nested candidates, the nested selection's pick (`nested_choice`), the
    out-of-sample score of auto as a procedure that confirmed or overruled a per-class pick (`procedure`: null when
    the nested selection kept global, and nothing needed confirming) and the sentence saying why (`reason`).
    """
    scores = {m: {"in_sample": r.in_sample, "nested": r.nested, "folds": r.per_fold} for m, r in fit.reports.items()}
    if fit.auto is not None:
        a = fit.auto
        candidates = {m: {f"shrink_{s:g}": v for s, v in by.items()} for m, by in a.candidates.items()}
        scores[AUTO] |= {"method": a.method, "shrink": a.shrink, "candidates": candidates, "gain": a.gain,
                         "standard_error": a.standard_error, "margin_se": margin_se,
                         "nested_choice": {"method": a.nested_choice[0], "shrink": a.nested_choice[1]},
                         "procedure": None if a.procedure is None else procedure_scores(a.procedure, beta),
                         "reason": a.reason}  # fmt: skip
    return scores


def procedure_scores(procedure: ProcedureScore, beta: float) -> dict:
    """Auto as a procedure scored out of sample: its F-beta, global's on the same rows, and each outer part's pick."""
    key, choices = f"f{beta:g}_samples", procedure.choices.items()
    return {key: procedure.fbeta, f"global_{key}": procedure.baseline, "gain": procedure.gain,
            "standard_error": procedure.standard_error,
            "choices": {str(part): {"method": m, "shrink": s} for part, (m, s) in choices}}  # fmt: skip


def procedure_line(procedure: ProcedureScore) -> str:
    """The log's line on what the nested selection chose without each outer part ('0 global, 1 optuna@10')."""
    picks = ", ".join(f"{part} {m}" + (f"@{s:g}" if s else "") for part, (m, s) in procedure.choices.items())
    return f"thresholds auto, out of sample: chosen without each outer part: {picks}"


def main(cfg: Config) -> None:
    """Write `thresholds.out_file` (the chosen method's thresholds) and `thresholds.metrics_file`.

    The metrics file holds the headline scalars (`headline`) beside one mapping per method (`scores_file`).
    """
    prep = load_prepared(cfg.prepare.out_dir)
    ens = load_ensemble(cfg.ensemble.out_dir)
    labels, t = prep.labels[ens.rows], cfg.thresholds
    fit = fit_and_compare(ens.oof, labels, ens.folds, t)
    key, chosen = f"f{t.beta:g}_samples", fit.reports[fit.used]
    oof_map = mean_average_precision(labels, ens.oof)
    write_json(t.metrics_file, headline(fit, oof_map, t.beta) | scores_file(fit, t.auto_margin_se, t.beta))
    write_json(
        t.out_file,
        {
            "method": fit.method,
            "shrink": fit.shrink,
            "reason": fit.reason,
            "models": list(cfg.train.models),
            "ensemble": cfg.ensemble.method,
            "beta": t.beta,
            "min_labels": t.min_labels,
            "max_labels": t.max_labels,
            "oof_rows": len(ens.rows),
            "oof_fbeta": chosen.in_sample[key],
            "nested_fbeta": chosen.nested.get(key),
            "thresholds": {c: float(np.round(v, 6)) for c, v in zip(prep.classes, chosen.thresholds, strict=True)},
        },
    )
    for method, r in fit.reports.items():
        nested = f"{r.nested[key]:.4f}" if r.nested else "n/a (too few rows)"
        print(f"thresholds {method}: F{t.beta:g} in-sample {r.in_sample[key]:.4f}, nested {nested} "
              f"(fit {r.seconds:.2f} s)" + (" <- used" if method == fit.used else ""))  # fmt: skip
    if fit.auto is not None and fit.auto.procedure is not None:
        print(procedure_line(fit.auto.procedure))
    print(f"thresholds: {fit.reason}")
