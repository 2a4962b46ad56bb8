"""Decoded label sets of a sequence decoder: the END rule, the fitted stop rule, fold votes, and a whole tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from finished_run import REPO, merge

from mlic.config import ThresholdsConfig, load_config
from mlic.errors import ConfigError
from mlic.metrics import fbeta_samples
from mlic.predict.decoding import Decoded, StopRule, fit_stop_rule, mean_decoded

CFG = ThresholdsConfig(grid_step=0.05)


def decoded(label_probs, path_floor) -> Decoded:
    """A Decoded whose END-rule sets are the labels with a step probability."""
    probs = np.asarray(label_probs, dtype=np.float32)
    return Decoded(probs, np.asarray(path_floor, dtype=np.float32), probs > 0)


def test_the_stop_rule_cuts_the_path_and_then_each_labels_step_probability():
    d = decoded([[0.9, 0.6, 0.3, 0.0], [0.0, 0.8, 0.0, 0.5]], [[0.9, 0.7, 0.5, 0.0], [0.0, 0.8, 0.0, 0.6]])
    kept = StopRule(0.55, np.array([0.5, 0.7, 0.1, 0.1])).apply(d)
    # row 0: label 2's floor 0.5 < tau (cut); label 1's step 0.6 < its tau_c 0.7. Row 1: label 1 passes both
    assert kept.tolist() == [[1, 0, 0, 0], [0, 1, 0, 1]]
    assert kept.dtype == np.uint8
    assert StopRule(0.0, np.zeros(4)).apply(d).tolist() == d.decoded.astype(np.uint8).tolist()  # never off the path


def test_fitting_the_stop_rule_learns_to_drop_the_late_wrong_labels_of_the_path():
    """Paths whose first labels are right and whose later labels, once the path probability sags, are wrong."""
    rng = np.random.default_rng(0)
    n, c = 200, 6
    truth = np.zeros((n, c), dtype=np.uint8)
    probs, floors = np.zeros((n, c)), np.zeros((n, c))
    for i in range(n):
        right = rng.choice(c, 2, replace=False)
        wrong = rng.choice(np.setdiff1d(np.arange(c), right), 1)
        truth[i, right] = 1
        probs[i, right], floors[i, right] = rng.uniform(0.6, 0.95, 2), rng.uniform(0.6, 0.8, 2)
        probs[i, wrong], floors[i, wrong] = rng.uniform(0.3, 0.9), rng.uniform(0.1, 0.35)
    d = decoded(probs, floors)
    rule, score = fit_stop_rule(d, truth, CFG)
    end_rule = fbeta_samples(truth, d.decoded.astype(np.uint8), CFG.beta)
    assert 0.35 <= rule.tau <= 0.6  # the cut falls between the wrong labels' floors and the right ones'
    assert score == pytest.approx(1.0) and end_rule < 0.95
    assert score == fbeta_samples(truth, rule.apply(d), CFG.beta)
    assert (rule.tau_c > 0).all()  # a label off the path is never accepted, whatever its cut


def test_folds_vote_on_sets_and_average_their_probabilities():
    a = decoded([[0.9, 0.0, 0.4]], [[0.9, 0.0, 0.5]])
    b = decoded([[0.7, 0.5, 0.0]], [[0.7, 0.5, 0.0]])
    c = decoded([[0.8, 0.6, 0.0]], [[0.8, 0.6, 0.0]])
    assert mean_decoded([a]) is a
    two = mean_decoded([a, b])
    assert two.decoded.tolist() == [[True, False, False]]  # a tie is not a majority
    three = mean_decoded([a, b, c])
    assert three.decoded.tolist() == [[True, True, False]]
    np.testing.assert_allclose(three.label_probs, [[0.8, 1.1 / 3, 0.4 / 3]], rtol=1e-6)


TINY_DECODER = {"arch": "cnn_rnn", "backbone": "resnet10t", "embed_dim": 16, "hidden_size": 32, "attention_dim": 16,
                "beam_size": 2}  # fmt: skip
TINY_RUN = {
    "sample": {"out_dir": "raw", "n_train": 48, "n_test": 12, "image_size": 32},
    "data": {"root": "raw"},
    "prepare": {"image_size": 32},
    "folds": {"n_splits": 2},
    "models": {"cnn_rnn": TINY_DECODER},
    "train": {"models": ["cnn_rnn"], "folds": [0, 1], "epochs": 2, "batch_size": 16, "tta": "none"},
    "thresholds": {"grid_step": 0.05},
}


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    """A tiny project (sample, prepare, folds) with a cnn_rnn trained on both folds for two epochs, and its params."""
    from mlic.cli import main as mlic

    root = tmp_path_factory.mktemp("decoder_run")
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY_RUN)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)
        env.setenv("OMP_NUM_THREADS", "1")
        for args in (["sample"], ["prepare"], ["folds"], *(["train", "--model", "cnn_rnn", "--fold", f] for f in "01")):
            assert mlic(["--params", "params.yaml", *args]) == 0
    return root


@pytest.mark.slow
def test_a_run_decodes_every_oof_row_once_and_writes_both_submissions(decoder_run, monkeypatch):
    import torch

    from mlic.data.competitions import get_competition
    from mlic.data.submission import read_submission
    from mlic.layout import read_json
    from mlic.predict.decoding import decode_run, write_decoded
    from mlic.run import Run

    monkeypatch.chdir(decoder_run)
    run = Run(decoder_run, load_config("params.yaml"))
    result = decode_run(run, "cnn_rnn", torch.device("cpu"), 8, None)
    prep = run.prepared()
    assert sorted(result.oof_rows.tolist()) == list(range(len(prep.train_ids)))  # the two folds' rows, once each
    for part in (result.oof, result.test):
        assert part.decoded.shape == part.label_probs.shape == part.path_floor.shape
        assert np.array_equal(part.decoded, part.label_probs > 0) or part is result.test  # test: folds' vote
        assert ((part.path_floor == 0) | (part.label_probs > 0)).all()  # a floor only for a label some path holds
    # One fold's path per OOF row: a floor is a running minimum of geometric means of the path's step probabilities,
    # so it lies between the row's smallest and largest (not always below its own: steps 0.5, 0.1 floor at 0.22)
    on_path = np.ma.masked_array(result.oof.label_probs, ~result.oof.decoded)
    low, high = on_path.min(axis=1).filled(0)[:, None], on_path.max(axis=1).filled(0)[:, None]
    floors = result.oof.path_floor
    assert (((floors >= low - 1e-6) & (floors <= high + 1e-6)) | ~result.oof.decoded).all()
    again = decode_run(run, "cnn_rnn", torch.device("cpu"), 5, None)  # another batch size: the same sets
    assert np.array_equal(again.oof.decoded, result.oof.decoded)
    np.testing.assert_allclose(again.oof.label_probs, result.oof.label_probs, atol=1e-5)

    summary = write_decoded(run, result, decoder_run / "out", "cnn_rnn")
    comp = get_competition(run.cfg.data)
    for rule in ("end", "stop_rule"):
        frame = read_submission(decoder_run / "out" / f"cnn_rnn_{rule}.csv", comp.submission)
        assert len(frame) == len(prep.test_ids)
    labels = prep.labels[result.oof_rows]
    assert summary["end"]["oof_f2"] == fbeta_samples(labels, result.oof.decoded.astype(np.uint8), 2.0)
    assert summary["stop_rule"]["oof_f2"] == fbeta_samples(labels, result.rule.apply(result.oof), 2.0)
    assert summary["stop_rule"]["oof_f2"] >= summary["end"]["oof_f2"]  # the END rule is one of the fit's candidates
    assert read_json(decoder_run / "out" / "cnn_rnn_decoded.json") == summary
    assert set(summary["stop_rule"]["tau_c"]) == set(prep.classes)


@pytest.mark.slow
def test_decoding_a_model_without_a_decoder_names_it(decoder_run, monkeypatch):
    import torch

    from mlic.predict.decoding import decode_run
    from mlic.run import Run

    monkeypatch.chdir(decoder_run)
    run = Run(decoder_run, load_config("params.yaml"))
    with pytest.raises(ConfigError, match="model 'baseline' does not decode label sets"):
        decode_run(run, "baseline", torch.device("cpu"), 8, None)


@pytest.mark.slow
def test_mlic_decode_writes_the_sets_and_refuses_other_archs(decoder_run, monkeypatch, capsys):
    from mlic.cli import main as mlic
    from mlic.layout import read_json

    monkeypatch.chdir(decoder_run)
    assert mlic(["decode", "--out-dir", "subs", "--beam", "1", "--batch-size", "7"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    end, stop = (json.loads(line) for line in lines[-2:])
    assert end["rule"] == "end" and stop["rule"] == "stop_rule" and stop["oof_f2"] >= end["oof_f2"]
    summary = read_json(decoder_run / "subs" / "cnn_rnn_decoded.json")
    assert summary["end"]["oof_f2"] == end["oof_f2"] and 0.0 <= summary["stop_rule"]["tau"] < 1.0
    assert {p.name for p in (decoder_run / "subs").iterdir()} == {"cnn_rnn_end.csv", "cnn_rnn_stop_rule.csv",
                                                                  "cnn_rnn_decoded.json"}  # fmt: skip
    assert mlic(["decode", "--model", "baseline", "--out-dir", "other"]) == 2
    err = capsys.readouterr().err
    assert "model 'baseline' does not decode label sets" in err and "cnn_rnn" in err
    assert not (decoder_run / "other").exists()  # refused before anything was written
