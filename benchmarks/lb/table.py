"""The leaderboard's markdown: the table, best test F2 first, the verdict, the notes, and the decoded-sets table.

Pure formatting of the result JSON (`benchmarks/leaderboard.py` builds it): nothing here runs or reads anything.
"""

from __future__ import annotations

from pathlib import Path

from .params import COMPARE_METHODS

# The keys every row of the JSON has (None where a row has none), so that a consumer finds each one
COLUMNS = ("arch", "status", "cached", "test_f2", "oof_f2_nested", "oof_f2", "oof_map", "oof_cf1", "oof_of1",
           "threshold_method", "parameters", "head_parameters", "epochs_run", "train_seconds", "train_images_per_s",
           "train_stage_seconds", "row_seconds", "entry", "key")  # fmt: skip


def sort_rows(rows: list[dict]) -> list[dict]:
    """Scored rows by test F2, best first, then the failed ones; each with every column (None where it has none)."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -r["test_f2"])
    return [{c: r.get(c) for c in COLUMNS} | r for r in ok + [r for r in rows if r["status"] != "ok"]]


def count(n: int | None) -> str:
    """A parameter count: millions with two decimals, else the number with thousands separators."""
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n:,}"


def plural(n: int, noun: str) -> str:
    """`1 epoch`, `5 epochs`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def cell(value: float | None, digits: int = 4) -> str:
    """A table cell: the number to `digits` decimals, or `-` where the row has none."""
    return "-" if value is None else f"{value:.{digits}f}"


def table_lines(rows: list[dict]) -> list[str]:
    """The markdown table: one line per row, best test F2 first, failed rows last."""
    lines = ["| # | arch | test F2 | OOF F2 (nested) | OOF F2 (in-sample) | OOF mAP | OOF CF1 | OOF OF1 | thresholds "
             "| params | head params | train s | train img/s |", "|" + "---|" * 13]  # fmt: skip
    for rank, r in enumerate(rows, 1):
        name = f"{r['arch']}" + (" (cached)" if r.get("cached") else "")
        if r.get("members"):
            name += f" ({r['ensemble']['method']} of {' + '.join(r['members'])})"
        if r["status"] != "ok":
            lines.append(f"| - | {name} | failed |" + " - |" * 10)
            continue
        scores = [cell(r.get(k)) for k in ("test_f2", "oof_f2_nested", "oof_f2", "oof_map", "oof_cf1", "oof_of1")]
        speed = [cell(r.get("train_seconds"), 1), cell(r.get("train_images_per_s"), 1)]
        sizes = [r["threshold_method"], count(r.get("parameters")), count(r.get("head_parameters"))]
        lines.append(f"| {rank} | **{name}** |" if rank == 1 else f"| {rank} | {name} |")
        lines[-1] += " " + " | ".join(scores + sizes + speed) + " |"
    return lines


def verdict_lines(rows: list[dict]) -> list[str]:
    """Which single row wins, every other listed plainly as behind it (or failed), and the blend against the winner."""
    blends = [r for r in rows if r["arch"] == "blend"]
    rows = [r for r in rows if r["arch"] != "blend"]
    ok, failed = [r for r in rows if r["status"] == "ok"], [r for r in rows if r["status"] != "ok"]
    lines = []
    if ok:
        win = ok[0]
        lead = f", {win['test_f2'] - ok[1]['test_f2']:.4f} ahead of {ok[1]['arch']}" if len(ok) > 1 else ""
        lines.append(f"**Winner: {win['arch']}**, test F2 {win['test_f2']:.4f}{lead}.")
        behind = [f"{r['arch']} ({r['test_f2']:.4f}, {r['test_f2'] - win['test_f2']:+.4f})" for r in ok[1:]]
        if behind:
            lines.append(f"**Losers**, best first: {', '.join(behind)}.")
    for r in failed + [b for b in blends if b["status"] != "ok"]:
        lines.append(f"**Failed** (no score): {r['arch']}: {r['error'].splitlines()[0]}")
    for b in (b for b in blends if b["status"] == "ok" and ok):
        gain = b["test_f2"] - ok[0]["test_f2"]
        lines.append(f"**Blend** ({b['ensemble']['method']} of {', '.join(b['members'])}, chosen on OOF from "
                     f"{len(b['candidates'])} rows): test F2 {b['test_f2']:.4f}, {gain:+.4f} "
                     f"against the best single row ({ok[0]['arch']}). Selection: {b['selection']}. Ensemble: "
                     f"{b['ensemble']['reason']}")  # fmt: skip
    return lines


NOTES = (
    "Test F2: `mlic score` of the row's submission against `solution.csv` (sample-averaged F2, as Kaggle scores it). "
    "OOF F2 (nested): the thresholds method that auto chose, fitted on all but one of the `thresholds.nested_splits` "
    "parts of the fold's OOF rows and scored on the part left out, round-robin. OOF F2 (in-sample): the same method "
    "fitted and scored on all of them, as are mAP, CF1 (per-class macro F1) and OF1 (overall micro F1), all from "
    "`mlic evaluate`. Params: the network's; head params: those outside its `backbone` submodule. Train s: the fit "
    "(the epochs with their validation passes, without the TTA prediction after them); train img/s: training images "
    "per second of it. A row marked (cached) reused the stored result of the same params and code; its timings are "
    "from its own run. The blend row: the members chosen on OOF by forward selection of their mean, blended by "
    "`ensemble.method: auto`; its params are the members' together, and it trains nothing."
)


def decoded_lines(rows: list[dict]) -> list[str]:
    """For the rows that decode label sets: their sets (END rule, stop rule) against their scores + thresholds."""
    decoding = [r for r in rows if r.get("decoded")]
    if not decoding:
        return []
    header = "| arch | route | test F2 | OOF F2 (in-sample) | test labels / row |"
    lines = ["", "## Decoded sets against scores + thresholds", "", header, "|---|---|---|---|---|"]
    for r in decoding:
        d = r["decoded"]
        lines.append(f"| {r['arch']} | scores + thresholds ({r['threshold_method']}) | {cell(r['test_f2'])} | "
                     f"{cell(r['oof_f2'])} | - |")  # fmt: skip
        for rule, name in (
            ("end", "decoded set, END rule"),
            ("stop_rule", f"decoded set, stop rule (tau {d['stop_rule']['tau']:g})"),
        ):
            f2 = next(v for k, v in d[rule].items() if k.startswith("oof_f"))
            lines.append(f"| {r['arch']} | {name} | {cell(d[rule]['test_f2'])} | {cell(f2)} | "
                         f"{d[rule]['labels_per_row_test']:.2f} |")  # fmt: skip
    lines += [
        "",
        "The END rule keeps the labels on the beam's best path before END. The stop rule (the iMet study's) "
        "cuts the path where its geometric-mean probability falls below tau and keeps a label whose step "
        "probability reaches its tau_c; tau and tau_c are fitted on the fold's OOF rows (so its OOF F2 is "
        "in-sample, as is the thresholds' one here). Sets are decoded from the plain view, without TTA.",
    ]
    return lines


def markdown(result: dict) -> str:
    """The leaderboard as markdown: a header (command, data, budget, machine, date), the table, the verdict."""
    d, b, m = result["data"], result["budget"], result["machine"]
    limit = " (a seeded sample of the training rows, --limit)" if d["limit"] else ""
    stride = f" at output stride {b['output_stride']}" if b.get("output_stride", 32) != 32 else ""
    lines = [
        f"# Leaderboard: {b.get('name', 'default')} budget",
        "",
        f"- Command: `{result['command']}`, {result['date']}",
        f"- Data: {Path(d['root']).name} (`{d['root']}`): {d['n_train']:,} labelled chips{limit}, fold {d['fold']} of "
        f"{d['n_splits']} ({d['fold_train_rows']:,} train / {d['fold_oof_rows']:,} OOF rows); {d['n_test']:,} test "
        "chips scored against `solution.csv`",
        f"- Budget, the same for every row: {plural(b['epochs'], 'epoch')}, images {b['image_size']} px "
        "(upsampled from 32 px), "
        f"backbone {b['backbone']} (not pretrained) for every image arch{stride}, batch {b['batch_size']}, "
        f"lr {b['lr']}, seed {b['seed']}, TTA {b['tta']}; HOG at {b['hog_image_size']} px; thresholds auto "
        f"({' vs '.join(COMPARE_METHODS)}); {len(result['rows'])} rows",
        f"- Machine: {m['cpu_count']} CPUs ({m['processor']}), torch {m['torch']}, device {m['device']}",
        "",
        *table_lines(result["rows"]),
        "",
        *verdict_lines(result["rows"]),
        "",
        NOTES,
        *decoded_lines(result["rows"]),
    ]
    return "\n".join(lines) + "\n"
