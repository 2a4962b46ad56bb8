"""Side-by-side tables of a run's models, threshold methods and DVC experiments (notebook 03 and the report)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlic.config import Config


def models_table(metrics: dict, weights: dict[str, float], beta: float) -> pd.DataFrame:
    """Each model alone (OOF F-beta at its best shared threshold, mAP), its blend weight, then the blend itself."""
    key = f"f{beta:g}"
    rows = {
        m: {f"OOF F{beta:g}": s[f"{key}_global_threshold"], "thresholds": f"shared {s['threshold']:.2f}",
            "map": s["map"], "ensemble weight": weights.get(m, float("nan"))}
        for m, s in metrics["models"].items()
    }  # fmt: skip
    rows["ensemble"] = {f"OOF F{beta:g}": metrics["oof"][f"{key}_samples"], "thresholds": metrics["threshold_method"],
                        "map": metrics["oof"]["map"], "ensemble weight": sum(weights.values())}  # fmt: skip
    table = pd.DataFrame(rows).T
    table.index.name = "model"
    return table


def threshold_methods_table(reports: dict, used: str, beta: float) -> pd.DataFrame:
    """Every threshold method compared: in-sample and nested (fit on k-1 folds, scored on the other) F-beta."""
    key = f"f{beta:g}_samples"
    rows = [
        {"method": name + (" (used)" if name == used else ""), f"in-sample F{beta:g}": r["in_sample"][key],
         f"nested F{beta:g}": r["nested"].get(key, float("nan"))}
        for name, r in reports.items()
    ]  # fmt: skip
    return pd.DataFrame(rows).set_index("method")


def _param_keys(cfg: Config) -> list[str]:
    """Dotted names of every params.yaml key, as `dvc exp show` names its parameter columns."""
    keys: list[str] = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            keys.append(prefix)

    walk("", cfg.to_dict())
    return keys


def experiments_table(
    root: str | Path, cfg: Config, metrics: tuple[str, ...] = ("oof.f2_samples", "oof.map")
) -> pd.DataFrame:
    """`dvc exp show` as a table: each experiment's chosen metrics and the parameters that differ between rows.

    The workspace and the git baseline come first; an empty table means DVC sees no git repository.
    """
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        rows = pd.DataFrame(dvc.api.exp_show(repo=str(root)))
    except DvcException as exc:  # e.g. a project without git: no experiments to show
        print(f"dvc exp show: {exc}")
        return pd.DataFrame()
    params = [k for k in _param_keys(cfg) if k in rows and rows[k].astype(str).nunique() > 1]
    shown = ["Experiment", "rev", "Created", *[m for m in metrics if m in rows], *params]
    return rows[shown].set_index("rev")
