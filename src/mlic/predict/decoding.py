"""Label sets decoded directly by a sequence decoder (`cnn_rnn`), beside the scores-and-thresholds route.

A decoder's best path gives each label on it a step probability and a path probability. Two ways turn it into a set:
- the END rule: the labels on the path before its END;
- the iMet study's stop rule: walk the path and stop at the first step whose path probability P_t = (prod p_i)^(1/t)
  falls below tau; keep label c if it came before that and its step probability is at least tau_c. tau and tau_c are
  fitted on the out-of-fold rows: for each tau of a grid, the per-class exact F-beta search (the project's
  `per_class_exact`) fits tau_c on the step probabilities that survive tau; the pair of best OOF F-beta wins, the
  END rule itself (tau = 0, every tau_c just above 0) being one of the candidates, so the fit never does worse on the
  rows it is fitted on. A label off the path is never accepted: the sets stay the decoder's own.
A task that decodes sets has `decode_step(net, batch) -> {"label_probs", "path_floor", "decoded"}` (`CnnRnnTask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mlic.config import ThresholdsConfig
from mlic.data.competitions import get_competition
from mlic.data.labels import decode_labels
from mlic.errors import ConfigError
from mlic.io import write_json
from mlic.loop.batches import CachedSamples
from mlic.loop.fold_model import FoldModel, load_fold_model
from mlic.metrics import fbeta_samples
from mlic.models.registry import resolve_model
from mlic.predict.threshold_fitting import fit_per_class_exact
from mlic.run import Run
from mlic.sources import load_sources
from mlic.tasks.base import Task

TAU_GRID = np.round(np.arange(0.0, 0.95, 0.05), 2)  # stop-rule path thresholds tried (0: the END rule's path)


@dataclass(frozen=True)
class Decoded:
    """Decoded best paths of N images, (N, C) each.

    Attributes:
        label_probs: Each label's step probability on the path (0 off it).
        path_floor: Each label's path floor (`BestPaths.path_floor`; 0 off the path).
        decoded: The END rule's sets (bool).
    """

    label_probs: np.ndarray
    path_floor: np.ndarray
    decoded: np.ndarray


@dataclass(frozen=True)
class StopRule:
    """The fitted stop rule: tau on the path probability, tau_c per label on the step probability."""

    tau: float
    tau_c: np.ndarray

    def apply(self, decoded: Decoded) -> np.ndarray:
        """(N, C) uint8 sets: labels on the path before P_t < tau, with step probability >= tau_c."""
        kept = (decoded.path_floor >= self.tau) & (decoded.label_probs >= self.tau_c) & decoded.decoded
        return kept.astype(np.uint8)


def check_decodes(task: Task, model: str) -> Task:
    """The task, checked to decode label sets (`decode_step`).

    Raises:
        ConfigError: For an architecture without a decoder, naming the model.
    """
    if not hasattr(task, "decode_step"):
        raise ConfigError(
            f"model {model!r} does not decode label sets: only sequence decoders do (arch cnn_rnn)",
            fix="pass --model with a cnn_rnn entry of train.models",
        )
    return task


@torch.no_grad()
def decode_rows(fold: FoldModel, arrays: dict[str, np.ndarray], rows: np.ndarray, batch_size: int) -> Decoded:
    """Decode rows of (N, views, ...) source arrays with one fold, on its first cached view (the plain resize).

    Sets are not averaged over test-time views: a set is decoded once, from the view the model validated on.
    """
    task = check_decodes(fold.task, fold.model)
    read = {k: v for k, v in arrays.items() if k in fold.sources}
    loader = DataLoader(CachedSamples(read, rows, np.zeros(len(rows), dtype=np.int64)), batch_size)
    fold.net.eval()
    parts: dict[str, list[np.ndarray]] = {"label_probs": [], "path_floor": [], "decoded": []}
    for batch in loader:
        with fold.runtime.autocast():
            out = task.decode_step(fold.net, fold.runtime.inputs(batch))
        for key, value in out.items():
            parts[key].append(value.float().cpu().numpy() if key != "decoded" else value.cpu().numpy())
    return Decoded(*(np.concatenate(parts[k]) if parts[k] else np.zeros((0, 0)) for k in parts))


def mean_decoded(members: list[Decoded]) -> Decoded:
    """Several folds' decodings of the same rows: mean probabilities and floors, and the sets a majority decoded."""
    if len(members) == 1:
        return members[0]
    votes = np.mean([m.decoded for m in members], axis=0)
    return Decoded(
        np.mean([m.label_probs for m in members], axis=0).astype(np.float32),
        np.mean([m.path_floor for m in members], axis=0).astype(np.float32),
        votes > 0.5,
    )


def fit_stop_rule(decoded: Decoded, labels: np.ndarray, cfg: ThresholdsConfig) -> tuple[StopRule, float]:
    """The stop rule (tau, tau_c) of the best OOF F-beta (module docstring); returns it and its in-sample score."""
    end_rule = StopRule(0.0, np.full(labels.shape[1], np.finfo(np.float32).tiny))  # the END rule, as a stop rule
    best = (fbeta_samples(labels, end_rule.apply(decoded), cfg.beta), end_rule)  # so the fit never does worse
    for tau in TAU_GRID:
        surviving = np.where(decoded.decoded & (decoded.path_floor >= tau), decoded.label_probs, 0.0)
        # a label off the path can never be accepted, so a cut at 0 (every row) is lifted just above it
        tau_c = np.maximum(fit_per_class_exact(surviving, labels, cfg), np.finfo(np.float32).tiny)
        rule = StopRule(float(tau), tau_c)
        score = fbeta_samples(labels, rule.apply(decoded), cfg.beta)
        if score > best[0]:
            best = (score, rule)
    return best[1], best[0]


@dataclass(frozen=True)
class DecodedRun:
    """One model of a run decoded: OOF rows (of the trained folds) and test rows, and the fitted stop rule."""

    oof_rows: np.ndarray
    oof: Decoded
    test: Decoded
    rule: StopRule


def decode_run(run: Run, model: str, device: torch.device, batch_size: int, beam_size: int | None) -> DecodedRun:
    """Decode every trained fold's validation rows and the test rows (folds voted), and fit the stop rule on the OOF.

    Args:
        run: The finished run.
        model: Its `models` entry, a cnn_rnn.
        device: Where to decode.
        batch_size: Images per batch.
        beam_size: Beam width, overriding the entry's `beam_size` (None keeps it).
    """
    cfg = run.cfg
    task = check_decodes(resolve_model(cfg, model).task(), model)  # before any checkpoint loads
    prep = run.prepared()
    folds = run.folds(prep)
    data = load_sources(task.sources, cfg, prep, run.root)  # every fold reads the same sources
    train, test = {k: d.train for k, d in data.items()}, {k: d.test for k, d in data.items()}
    oof_rows, oof_parts, test_parts = [], [], []
    for fold in cfg.train.folds:
        member = load_fold_model(run.fold_dir(model, fold), device)
        if beam_size is not None:
            member.net.beam_size = beam_size
        rows = np.flatnonzero(folds == fold)
        oof_parts.append(decode_rows(member, train, rows, batch_size))
        test_parts.append(decode_rows(member, test, np.arange(len(prep.test_ids)), batch_size))
        oof_rows.append(rows)
    index = np.concatenate(oof_rows)
    oof = Decoded(*(np.concatenate([getattr(p, k) for p in oof_parts]) for k in ("label_probs", "path_floor",
                                                                                  "decoded")))  # fmt: skip
    rule, _ = fit_stop_rule(oof, prep.labels[index], cfg.thresholds)
    return DecodedRun(index, oof, mean_decoded(test_parts), rule)


def write_decoded(run: Run, decoded: DecodedRun, out_dir: Path, model: str) -> dict:
    """Write the two decoded submissions and a summary; returns the summary.

    The files: `<model>_end.csv`, `<model>_stop_rule.csv`, and `<model>_decoded.json` with the OOF F-beta of each
    and the fitted rule.
    """
    cfg, prep = run.cfg, run.prepared()
    labels, beta = prep.labels[decoded.oof_rows], cfg.thresholds.beta
    competition = get_competition(cfg.data)
    sets = {"end": (decoded.oof.decoded.astype(np.uint8), decoded.test.decoded.astype(np.uint8)),
            "stop_rule": (decoded.rule.apply(decoded.oof), decoded.rule.apply(decoded.test))}  # fmt: skip
    summary: dict = {"model": model, "oof_rows": int(len(decoded.oof_rows)), "beta": beta}
    for name, (oof, test) in sets.items():
        path = out_dir / f"{model}_{name}.csv"
        competition.write_submission(path, prep.test_ids, decode_labels(test, prep.classes))
        summary[name] = {"submission": str(path), f"oof_f{beta:g}": fbeta_samples(labels, oof, beta),
                         "labels_per_row_test": float(test.sum(axis=1).mean())}  # fmt: skip
    summary["stop_rule"] |= {
        "tau": decoded.rule.tau,
        "tau_c": dict(zip(prep.classes, map(float, decoded.rule.tau_c), strict=True)),
    }
    write_json(out_dir / f"{model}_decoded.json", summary)
    return summary
