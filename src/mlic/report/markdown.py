"""The run report (`<evaluate.out_dir>/report.md`): how a run went, for someone who never opens a notebook.

Markdown tables (pandas + tabulate) of the scores against the all-prior baseline, each model and fold, the
threshold methods and the classes, with the PNG figures the `evaluate` stage writes beside the file.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mlic.config import Config
from mlic.report.compare import models_table, threshold_methods_table

SUMMARY_KEYS = {
    "f{beta}_samples": "sample F{beta} (the Kaggle metric)",
    "map": "mAP (macro, threshold-free)",
    "cf1": "per-class F1 (CF1)",
    "of1": "overall F1 (OF1)",
    "cp": "per-class precision",
    "cr": "per-class recall",
}
MAX_CLASS_ROWS = 40  # the per-class table shows the most frequent classes; per_class.csv has them all


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_markdown(index=index, floatfmt=".4f")


def metrics_section(metrics: dict, beta: float) -> str:
    """OOF scores of the ensemble at the fitted thresholds, against the all-prior baseline."""
    rows = []
    for key, name in SUMMARY_KEYS.items():
        key, name = key.format(beta=f"{beta:g}"), name.format(beta=f"{beta:g}")
        rows.append({"metric": name, "out-of-fold": metrics["oof"][key], "all-prior baseline":
                     metrics["all_prior_baseline"][key]})  # fmt: skip
    return "## Out-of-fold scores\n\n" + _table(pd.DataFrame(rows), index=False)


def models_section(metrics: dict, weights: dict[str, float], folds: pd.DataFrame, beta: float) -> str:
    """Each model's own OOF score and blend weight, then each fold's validation scores with TTA."""
    fold_cols = ["model", "fold", "epochs_run", "best_epoch", "final_train_loss", f"val_f{beta:g}_tta", "val_map_tta"]
    return (
        "## Models and folds\n\nEach model alone (OOF, best shared threshold), its weight, and the blend:\n\n"
        + _table(models_table(metrics, weights, beta))
        + "\n\nEach fold (validation rows, with TTA, best shared threshold):\n\n"
        + _table(folds[[c for c in fold_cols if c in folds]], index=False)
    )


def thresholds_section(reports: dict, used: str, beta: float, reason: str = "") -> str:
    """Every threshold method compared: in-sample and nested (fit on k-1 folds, scored on the other) F-beta.

    `reason` is the thresholds stage's sentence on the submission's method (with `auto`: which won, and by what).
    """
    return (
        "## Threshold methods\n\nNested scores are the honest ones: thresholds fitted on the other folds.\n\n"
        + (f"Used: {reason}.\n\n" if reason else "")
        + _table(threshold_methods_table(reports, used, beta))
    )


def classes_section(per_class: pd.DataFrame) -> str:
    """The most frequent classes' support, precision, recall, F-beta and threshold."""
    shown = per_class.sort_values("support", ascending=False, kind="stable").head(MAX_CLASS_ROWS)
    note = (
        f" ({len(shown)} most frequent of {len(per_class)}; all in per_class.csv)"
        if len(shown) < len(per_class)
        else ""
    )
    return f"## Classes{note}\n\n" + _table(shown, index=False)


def figures_section(figures: Sequence[tuple[str, str]]) -> str:
    """The PNGs beside the report, each under its caption."""
    return "## Figures\n\n" + "\n\n".join(f"### {caption}\n\n![{caption}]({file})" for caption, file in figures)


def _model_summary(cfg: Config, key: str) -> str:
    """A models entry in a few words: its arch, and its backbone when it has one."""
    entry = cfg.model(key)
    backbone = entry.options.get("backbone")
    return f"{entry.arch}, {backbone}" if backbone else entry.arch


def render_report(cfg: Config, sections: Sequence[str], oof_rows: int) -> str:
    """The whole report: a header naming the run, then the sections."""
    t = cfg.thresholds
    models = ", ".join(f"`{m}` ({_model_summary(cfg, m)})" for m in cfg.train.models)
    header = (
        f"# mlic run report\n\n"
        f"- competition: `{cfg.data.competition}` ({cfg.data.root}), {oof_rows} out-of-fold rows\n"
        f"- models: {models}; "
        f"folds {list(cfg.train.folds)} of {cfg.folds.n_splits}; blend `{cfg.ensemble.method}`\n"
        f"- thresholds: `{t.method}` for F{t.beta:g}, at least {t.min_labels} label(s) per row"
        + (f", at most {t.max_labels}" if t.max_labels else "")
        + "\n"
    )
    return header + "\n" + "\n\n".join(sections) + "\n"
