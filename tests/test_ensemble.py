"""Blending models: equal-weight means, OOF-fitted weights (global and per class), and auto's nested choice."""

import json

import numpy as np
import pytest

from mlic.config import EnsembleConfig, ThresholdsConfig, config_from_dict
from mlic.errors import ConfigError
from mlic.predict.ensemble import (
    ENSEMBLES,
    EPS,
    BlendScoring,
    arithmetic,
    blend,
    blend_parts,
    blend_record,
    choose_blend,
    fit_blend,
    model_shares,
    per_class_weights,
    saved_blend,
    select_models,
)

SCORING = BlendScoring.of(ThresholdsConfig())  # F2, at least one label per row, a 0.01 grid


def _models(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((400, 5)) < 0.3).astype(np.uint8)
    good = np.clip(0.8 * labels + 0.1 + rng.normal(0, 0.05, labels.shape), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, labels.shape)
    return labels, good, noise


def _specialists(n: int = 900, seed: int = 0, good_a=(0, 1, 2), good_b=(3, 4, 5)):
    """Labels of 6 classes; model A sharp on `good_a` and noisy elsewhere, model B sharp on `good_b`."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 6)) < 0.3).astype(np.uint8)

    def model(good) -> np.ndarray:
        noise = np.where(np.isin(np.arange(6), good), 0.1, 0.45)
        return np.clip(labels * 0.5 + 0.25 + rng.normal(0, 1, labels.shape) * noise, 0.01, 0.99).astype(np.float32)

    return labels, model(good_a), model(good_b)


@pytest.mark.parametrize("method", ENSEMBLES.names())
def test_every_ensemble_gives_simplex_weights_and_probabilities(method):
    labels, good, noise = _models()
    weights, oof, test = blend(method, [good, noise], labels, [good[:10], noise[:10]])
    assert weights.shape in ((2,), (2, 5)) and np.allclose(weights.sum(axis=0), 1.0) and (weights >= 0).all()
    assert oof.shape == good.shape and test.shape == (10, 5)
    # the test inputs are the OOF inputs' first 10 rows, so the same weights must give the same rows
    assert np.allclose(test, oof[:10], rtol=1e-6, atol=0)
    assert ((oof > 0) & (oof <= 1)).all()
    same, _, _ = blend(method, [good], labels, [good])
    assert np.allclose(same, 1.0)


def test_mean_and_geometric_of_one_matrix_are_that_matrix():
    labels, good, noise = _models()
    for method in ("mean", "geometric"):
        _, oof, _ = blend(method, [good, good], labels, [good, good])
        assert np.allclose(oof, good, atol=1e-6)
    # Two different matrices tell the methods apart, and show both models are used with equal weights.
    a, b = good, noise.copy()
    b[0, 0] = 0.0  # the geometric mean clips at EPS, so a zero does not wipe out the other model's probability
    weights, mean, mean_test = blend("mean", [a, b], labels, [b, a])
    assert weights == pytest.approx([0.5, 0.5])
    assert np.allclose(mean, (a + b) / 2, atol=1e-6) and np.allclose(mean_test, mean, atol=1e-6)
    weights, geo, geo_test = blend("geometric", [a, b], labels, [b, a])
    expected = np.sqrt(np.clip(a, EPS, 1.0) * np.clip(b, EPS, 1.0))
    assert weights == pytest.approx([0.5, 0.5])
    assert np.allclose(geo, expected, rtol=1e-5, atol=1e-9) and np.allclose(geo_test, geo, rtol=1e-5, atol=1e-9)
    assert geo[0, 0] == pytest.approx(np.sqrt(EPS * a[0, 0]), rel=1e-5)
    assert not np.allclose(geo, mean, atol=1e-3)  # the two methods really differ on these inputs


def test_weighted_blend_leans_on_the_informative_model():
    labels, good, noise = _models()
    weights, _, _ = blend("weighted", [noise, good], labels, [noise, good])
    assert weights[1] > 0.9
    # the Newton fit reaches the cross-entropy minimum: no weight on a fine grid of the segment does better
    stack = np.clip(np.stack([noise, good]), EPS, 1 - EPS)

    def loss(w1: float) -> float:
        p = (1 - w1) * stack[0] + w1 * stack[1]
        return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())

    assert loss(weights[1]) <= min(loss(w) for w in np.linspace(0, 1, 1001)) + 1e-6


def test_per_class_blend_learns_each_models_classes_and_auto_picks_it():
    labels, a, b = _specialists()
    weights = per_class_weights([a, b], labels, EnsembleConfig(per_class_shrink=0.0))
    assert weights.shape == (2, 6) and np.allclose(weights.sum(axis=0), 1.0)
    assert (weights[0, :3] > 0.7).all() and (weights[1, 3:] > 0.7).all()
    choice = choose_blend([a, b], labels, np.arange(len(labels)) % 3, [a[:4], b[:4]], EnsembleConfig())
    assert choice.method == "per_class" and choice.requested == "auto"
    assert set(choice.scores) == {"mean", "geometric", "weighted", "per_class"}
    assert choice.scores["per_class"] == max(choice.scores.values())
    assert choice.gain > 2 * choice.standard_error > 0
    assert choice.reason.startswith("ensemble auto chose per_class: nested F2")
    assert np.allclose(choice.test, arithmetic([a[:4], b[:4]], choice.weights), atol=1e-6)


def test_auto_keeps_the_mean_for_two_equally_good_models_with_independent_noise():
    rng = np.random.default_rng(3)
    labels = (rng.random((600, 6)) < 0.3).astype(np.uint8)
    a, b = (np.clip(labels * 0.4 + 0.3 + rng.normal(0, 0.2, labels.shape), 0.01, 0.99) for _ in range(2))
    choice = choose_blend([a, b], labels, np.arange(600) % 3, None, EnsembleConfig())
    assert choice.method == "mean" and choice.test is None
    assert set(choice.scores) == {"mean", "geometric", "weighted", "per_class"}
    assert not choice.gain > 2 * choice.standard_error
    assert "must beat it by more than 2 SE" in choice.reason
    assert np.allclose(choice.oof, (a + b) / 2, atol=1e-6)


@pytest.mark.parametrize("method", ["weighted", "per_class"])
def test_nested_oof_rows_are_never_blended_by_weights_fitted_on_their_own_labels(method):
    labels, a, b = _specialists(n=600, seed=1)
    folds = np.arange(len(labels)) % 3
    cfg = EnsembleConfig(per_class_shrink=0.0)
    before = fit_blend(method, [a, b], labels, folds, [a, b], cfg, SCORING)
    flipped = labels.copy()
    flipped[folds == 1] = 1 - flipped[folds == 1]  # fold 1's truth turned upside down
    after = fit_blend(method, [a, b], flipped, folds, [a, b], cfg, SCORING)
    assert np.array_equal(before.oof[folds == 1], after.oof[folds == 1])  # its own rows: weights fitted without it
    assert not np.allclose(before.oof[folds != 1], after.oof[folds != 1])  # the others' weights saw fold 1
    assert not np.allclose(before.test, after.test)  # and so did the test's, fitted on all rows
    assert np.array_equal(before.held_out[1], after.held_out[1])


def test_a_class_without_positives_keeps_the_pooled_weights_and_shrink_pulls_rare_ones_there():
    labels, a, b = _specialists(n=900, seed=2)
    labels[:, 5] = 0
    labels[:3, 4] = 1
    labels[3:, 4] = 0  # class 4: three positives
    free = per_class_weights([a, b], labels, EnsembleConfig(per_class_shrink=0.0))
    shrunk = per_class_weights([a, b], labels, EnsembleConfig(per_class_shrink=1000.0))
    pooled = shrunk[:, 5]  # no positives: the pooled weights whatever the shrink
    assert np.allclose(free[:, 5], pooled) and np.allclose(shrunk.sum(axis=0), 1.0)
    assert np.abs(shrunk[:, 4] - pooled).max() < 0.01 < np.abs(free[:, 0] - pooled).max()
    assert np.abs(shrunk[:, 0] - free[:, 0]).max() > 0.01  # a common class is pulled too, by its share


def test_one_model_or_too_few_rows_keeps_the_mean():
    labels, a, b = _specialists(n=60)
    alone = choose_blend([a], labels, np.arange(60) % 3, [a], EnsembleConfig())
    assert (alone.method, alone.scores, alone.nested_parts) == ("mean", {}, 0) and "single model" in alone.reason
    assert np.allclose(alone.oof, a) and np.allclose(alone.test, a)
    unnested = choose_blend([a, b], labels, None, None, EnsembleConfig())
    assert unnested.method == "mean" and "too few OOF rows" in unnested.reason
    explicit = choose_blend([a, b], labels, np.arange(60) % 3, None, EnsembleConfig(method="per_class"))
    assert explicit.method == "per_class" and list(explicit.scores) == ["per_class"]
    assert explicit.reason == "ensemble.method is per_class"


def test_one_trained_fold_is_split_into_seeded_parts():
    labels, _, _ = _specialists(n=90)
    cfg = ThresholdsConfig(nested_splits=3, seed=5)
    parts = blend_parts(np.zeros(90, dtype=int), labels, cfg)
    assert sorted(np.unique(parts)) == [0, 1, 2] and np.array_equal(parts, blend_parts(np.zeros(90), labels, cfg))
    folds = np.arange(90) % 3
    assert np.array_equal(blend_parts(folds, labels, cfg), folds)
    assert blend_parts(np.zeros(1), labels[:1], cfg) is None


def test_select_models_adds_a_complementary_model_and_leaves_out_noise():
    labels, a, b = _specialists(n=900, seed=4)
    rng = np.random.default_rng(9)
    noise = rng.uniform(0.01, 0.99, labels.shape).astype(np.float32)
    oofs = {"noise": noise, "a": a, "b": b}
    picked = select_models(oofs, labels, np.arange(900) % 3, EnsembleConfig(), method="per_class")
    assert sorted(picked.models) == ["a", "b"] and len(picked.scores) == 2 and picked.scores[1] > picked.scores[0]
    assert picked.reason.startswith("stopped: adding noise")


def test_saved_blend_gives_the_predictor_the_stages_weights():
    labels, a, b = _specialists()
    classes, models = [f"c{i}" for i in range(6)], ["a", "b"]
    choice = choose_blend([a, b], labels, np.arange(len(labels)) % 3, [a, b], EnsembleConfig())
    record = json.loads(json.dumps(blend_record(choice, models, classes)))  # as blend.json reads back
    shares = model_shares(choice.weights, models)
    assert sum(shares.values()) == pytest.approx(1.0) and record["nested_fbeta"] == choice.scores
    method, weights = saved_blend(record, shares, ["b", "a"], classes[::-1], "auto")
    assert method == "per_class" and weights.shape == (2, 6)
    assert np.allclose(arithmetic([b[:, ::-1], a[:, ::-1]], weights), choice.test[:, ::-1], atol=1e-5)
    assert saved_blend(None, {"a": 0.25, "b": 0.75}, models, classes, "mean") == ("mean", pytest.approx([0.25, 0.75]))


def test_bad_ensemble_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"ensemble\.method: unknown ensemble method 'median'"):
        config_from_dict({"ensemble": {"method": "median"}})
    with pytest.raises(ConfigError, match=r"ensemble\.auto_candidates: unknown ensemble method 'stack'"):
        config_from_dict({"ensemble": {"auto_candidates": ["per_class", "stack"]}})
    with pytest.raises(ConfigError, match=r"ensemble\.auto_candidates: lists auto"):
        EnsembleConfig(auto_candidates=("auto",))
    for margin in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"ensemble\.auto_margin_se: must be a number >= 0"):
            EnsembleConfig(auto_margin_se=margin)
    with pytest.raises(ConfigError, match=r"ensemble\.per_class_shrink: must be a number >= 0"):
        EnsembleConfig(per_class_shrink=-5.0)
    labels, a, b = _specialists(n=30)
    with pytest.raises(ConfigError, match=r"ensemble\.method: unknown ensemble method 'median'"):
        choose_blend([a, b], labels, None, None, EnsembleConfig(method="median"))
    assert config_from_dict({"ensemble": {"method": "auto"}}).ensemble.method == "auto"


def test_ensemble_stage_writes_nested_oof_weights_and_its_choice(tmp_path, capsys):
    from mlic.layout import (
        load_ensemble,
        load_ensemble_blend,
        load_ensemble_weights,
        save_prepare_stats,
        save_prepared_index,
    )
    from mlic.stages import ensemble

    labels, a, b = _specialists(n=300, seed=6)
    classes, ids = [f"c{i}" for i in range(6)], [f"r{i}" for i in range(300)]
    cfg = config_from_dict({
        "prepare": {"out_dir": str(tmp_path / "prepare")},
        "ensemble": {"out_dir": str(tmp_path / "ensemble")},
        "models": {"baseline": {"arch": "baseline"}, "other": {"arch": "baseline"}},
        "train": {"out_dir": str(tmp_path / "train"), "models": ["baseline", "other"], "folds": [0, 1, 2]},
    })  # fmt: skip
    prep = tmp_path / "prepare"
    prep.mkdir()
    tags = [[c for c, on in zip(classes, row, strict=True) if on] for row in labels]
    save_prepared_index(prep, ids, tags, ["t0", "t1"], labels, classes)
    save_prepare_stats(prep, {"mean": [0.5] * 3, "std": [0.25] * 3})
    for name in ("train_images.npy", "test_images.npy"):
        np.save(prep / name, np.zeros((1, 1, 1, 3), dtype=np.uint8))
    folds = np.arange(300) % 3
    for model, probs in (("baseline", a), ("other", b)):
        for fold in range(3):
            out = cfg.fold_dir(model, fold)
            out.mkdir(parents=True)
            rows = np.flatnonzero(folds == fold)
            np.savez(out / "oof.npz", rows=rows, probs=probs[rows])
            np.save(out / "test.npy", probs[:2])
    ensemble.main(cfg)
    ens, record = load_ensemble(cfg.ensemble.out_dir), load_ensemble_blend(cfg.ensemble.out_dir)
    assert record["method"] == "per_class" and record["requested"] == "auto" and record["nested_parts"] == 3
    assert set(record["class_weights"]) == {"baseline", "other"} and set(record["class_weights"]["other"]) == set(
        classes
    )
    shares = load_ensemble_weights(cfg.ensemble.out_dir)
    assert set(shares) == {"baseline", "other"} and sum(shares.values()) == pytest.approx(1.0)
    refit = fit_blend("per_class", [a, b], labels, folds, [a[:2], b[:2]], cfg.ensemble, SCORING)
    assert np.array_equal(ens.folds, folds) and np.allclose(ens.test, refit.test)  # weights fitted on all rows
    assert np.allclose(ens.oof, refit.oof)  # each fold's rows blended by the weights fitted without them
    log = capsys.readouterr().out
    assert "ensemble (per_class): 300 OOF rows, 2 test rows" in log and "ensemble auto chose per_class" in log
