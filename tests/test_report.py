"""The run report written by `evaluate`: every section, the run's numbers, and figures that exist beside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mlic.run import method_reports

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(finished_run: Path) -> str:
    return (finished_run / "reports" / "report.md").read_text()


def test_report_has_every_section(report: str):
    headings = re.findall(r"^## (.+)$", report, flags=re.M)
    assert headings[:4] == ["Out-of-fold scores", "Models and folds", "Threshold methods", "Classes"]
    assert headings[4] == "Figures"


def test_report_numbers_are_the_runs(report: str, finished_run: Path):
    metrics = json.loads((finished_run / "reports" / "metrics.json").read_text())
    oof, base = metrics["oof"]["f2_samples"], metrics["all_prior_baseline"]["f2_samples"]
    assert re.search(rf"\| sample F2 \(the Kaggle metric\) \|\s+{oof:.4f} \|\s+{base:.4f} \|", report)
    for model in ("baseline", "hourglass"):
        assert re.search(rf"^\| {model}\s+\|\s+0\s+\|", report, flags=re.M), f"fold 0 of {model} missing"
    scores = json.loads((finished_run / "reports" / "thresholds.json").read_text())
    methods = method_reports(scores)  # beside the headline scalars of `dvc exp show`
    assert metrics["threshold_method"] in methods and set(scores) - set(methods) == {
        "method", "oof_f2", "oof_f2_nested", "oof_map"
    }  # fmt: skip
    for name, scores in methods.items():
        # the method's own row of the threshold table, marked if the submission uses it, with the run's F2s
        label = re.escape(name + (" (used)" if name == metrics["threshold_method"] else ""))
        in_sample, nested = scores["in_sample"]["f2_samples"], scores["nested"]["f2_samples"]
        row = rf"^\| {label}\s+\|\s+{in_sample:.4f}\s+\|\s+{nested:.4f}\s+\|"
        assert len(re.findall(row, report, flags=re.M)) == 1, f"threshold method {name} missing or wrong"
    per_class = (finished_run / "reports" / "per_class.csv").read_text().splitlines()[1:]
    assert per_class and all(f"| {line.split(',')[0]} " in report for line in per_class), "a class is missing"


def test_report_figures_exist(report: str, finished_run: Path):
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert {"training_curves.png", "threshold_curve.png", "class_spread.png", "pr_curves.png"} <= set(figures)
    for name in figures:
        png = finished_run / "reports" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
