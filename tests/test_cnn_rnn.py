"""CNN-RNN: order-free targets, batched beam search against hand-made and brute-forced tables, the head, ONNX."""

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import arch_model, tiny_options
from overfit import OVERFIT_LABELS, assert_bf16_training_finite, squares_batch
from torch import nn

from mlic.errors import ConfigError
from mlic.models.beam_search import BestPaths, DoneFlags, beam_search, search_done
from mlic.models.cnn_rnn import sequence_loss
from mlic.tasks.order_free import leave_pool, pick_targets

NUM_CLASSES = 5
SIZE = 64  # resnet10t's final map (stride 32) is 2 x 2 here
INF = float("inf")


pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: see conftest.one_torch_thread


def build(num_classes: int = NUM_CLASSES, **options):
    """A seeded tiny CNN-RNN (cnn_rnn's tiny settings, see `tiny_options`) and its task; `options` override them."""
    return arch_model("cnn_rnn", num_classes, **tiny_options("cnn_rnn") | options)


def images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    """`n` seeded random images."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n * size))


def emitting(model: nn.Module) -> nn.Module:
    """The model with its output layer scaled up and END made less likely: paths of a few labels, image-dependent."""
    with torch.no_grad():
        model.out.weight.mul_(30.0)
        model.out.bias[model.end] = -1.0
    return model


def assert_order_free(targets: torch.Tensor, labels: torch.Tensor) -> None:
    """Each row's targets are its true labels, each exactly once, then END (= C) from step |Y| + 1 on.

    Args:
        targets: (N, T) long, each step's target.
        labels: (N, C) bool, the true label sets.
    """
    num_classes = labels.shape[1]
    for row, (seq, truth) in enumerate(zip(targets.tolist(), labels, strict=True)):
        size = int(truth.sum())
        assert len(seq) >= size + 1, row
        assert sorted(seq[:size]) == torch.nonzero(truth)[:, 0].tolist(), (row, seq)  # Y, each label once
        assert seq[size:] == [num_classes] * (len(seq) - size), (row, seq)  # END at step |Y| + 1, and after it


def test_pool_targets_are_each_true_label_once_in_the_scores_order_then_end():
    gen = torch.Generator().manual_seed(0)
    n, c = 64, 6
    labels = torch.rand(n, c, generator=gen) < 0.4
    labels[0], labels[1] = False, True  # an empty set and a full one
    pool, targets = labels.clone(), []
    for _ in range(c + 2):  # past every row's END
        scores = torch.randn(n, c + 1, generator=gen)
        # labels outside the set may be masked out (emitted by a model fed its own choices)
        scores[:, :c] = scores[:, :c].masked_fill(~labels & (torch.rand(n, c, generator=gen) < 0.3), -INF)
        chosen = pick_targets(scores, pool)
        for row in range(n):  # the target is the remaining true label the scores rank first
            remaining = torch.nonzero(pool[row])[:, 0]
            if len(remaining):
                assert chosen[row] in remaining and scores[row, chosen[row]] == scores[row, remaining].max()
        pool = leave_pool(pool, chosen)
        targets.append(chosen)
    assert not pool.any()
    assert_order_free(torch.stack(targets, 1), labels)


@pytest.mark.parametrize("feed", ["target", "argmax"])
def test_the_models_unroll_has_order_free_targets_and_masks_what_it_fed(feed):
    model, _ = build(6, feed=feed)
    labels = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]]).bool()
    with torch.no_grad():
        out = emitting(model).train()(images(4, 32), labels.float())
    log_probs, targets = out["log_probs"], out["targets"]
    assert log_probs.shape == (4, 7, 7) and targets.shape == (4, 7)  # T = the batch's largest |Y| + 1
    assert_order_free(targets, labels)
    fed = targets if feed == "target" else log_probs.argmax(dim=2)
    for row in range(4):
        pool = set(torch.nonzero(labels[row])[:, 0].tolist())
        for t, target in enumerate(targets[row].tolist()):
            if pool:  # the most probable remaining true label
                assert log_probs[row, t, target] == max(log_probs[row, t, y] for y in pool)
            assert torch.isfinite(log_probs[row, t, target])
            for token in fed[row, :t].tolist():  # what was fed before is masked out
                assert token == 6 or log_probs[row, t, token] == -INF
            pool.discard(target)
    if feed == "argmax":
        assert not torch.equal(fed[:, :-1], targets[:, :-1])  # the model's own choices do differ from the targets


# Beam search on tables of p_t: C labels, END = C, START = C + 1; log p_t[token | previous] = table[image, t, previous]


def table_step(tables: torch.Tensor, calls: list[torch.Tensor]):
    """A decoder step reading per-image tables of log p, indexed by the step and the previous token.

    Args:
        tables: (N, T, C + 2, C + 1) log-probabilities of each token given the step and the previous token.
        calls: Each call appends its rows' paths so far, (rows, T + 1): START, then the tokens fed.

    Returns:
        The step function, for an initial state `table_state(N, T, C + 1)`.
    """

    def step(tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        image, t, history = state
        history = history.scatter(1, t[:, None], tokens[:, None])
        calls.append(history)
        return tables[image, t, tokens], (image, t + 1, history)

    return step


def table_state(n: int, steps: int, start: int) -> tuple[torch.Tensor, ...]:
    """The state `table_step` reads: each row's image, its step and its path so far."""
    return torch.arange(n), torch.zeros(n, dtype=torch.long), torch.full((n, steps + 1), start)


def search(tables: torch.Tensor, beam: int, max_steps: int | None = None) -> tuple[BestPaths, list[torch.Tensor]]:
    """`beam_search` over `tables`; the best paths and each step call's paths."""
    n, steps, c = tables.shape[0], tables.shape[1], tables.shape[3] - 1
    calls = []
    paths = beam_search(table_step(tables, calls), table_state(n, steps, c + 1), c, beam, max_steps or steps, c + 1)
    return paths, calls


def brute_force(table: torch.Tensor, max_steps: int) -> tuple[list[int], float]:
    """The most probable path of one image's table: every sequence of distinct labels then END, enumerated."""
    c = table.shape[2] - 1
    best, best_score = None, -INF
    for size in range(min(c, max_steps - 1) + 1):
        for labels in itertools.permutations(range(c), size):
            path = [*labels, c]
            previous = [c + 1, *path[:-1]]
            score = sum(float(table[t, prev, tok]) for t, (prev, tok) in enumerate(zip(previous, path, strict=True)))
            if score > best_score:
                best, best_score = path, score
    return best + [c] * (max_steps - len(best)), best_score


def reference_beam(table: torch.Tensor, beam: int, max_steps: int) -> tuple[list[int], int]:
    """A plain per-image beam search with the documented stop rule: its best path and how many steps it took."""
    c = table.shape[2] - 1
    beams = [((), 0.0)]
    for t in range(max_steps):
        candidates = []
        for path, score in beams:
            if path and path[-1] == c:
                candidates.append((path, score))
                continue
            for tok in range(c + 1):
                if tok == c or (tok not in path and t < max_steps - 1):
                    candidates.append(((*path, tok), score + float(table[t, path[-1] if path else c + 1, tok])))
        beams = sorted(candidates, key=lambda b: -b[1])[:beam]
        finished = [s for p, s in beams if p[-1] == c]
        if finished and all(s < min(finished) for p, s in beams if p[-1] != c):
            break
    best = list(beams[0][0])
    return best + [c] * (max_steps - len(best)), t + 1


def random_tables(n: int, steps: int, c: int, seed: int) -> torch.Tensor:
    """(n, steps, C + 2, C + 1) seeded random log-probabilities (normalised over the tokens)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(2.0 * torch.randn(n, steps, c + 2, c + 1, generator=gen), dim=-1)


# A hand-made table (C = 3: a, b, c; END = 3), by previous token. Greedy takes a (0.5), then END (0.3; a again, 0.5,
# is masked): 0.15. The best path is b, END: 0.4 * 0.8 = 0.32. Beam 2 keeps a and b; beam 3 a, b and c.
HAND = torch.tensor(
    [
        [0.50, 0.12, 0.08, 0.30],  # after a
        [0.05, 0.05, 0.10, 0.80],  # after b
        [0.30, 0.30, 0.30, 0.10],  # after c
        [0.25, 0.25, 0.25, 0.25],  # after END (never read: a finished path carries over)
        [0.50, 0.40, 0.06, 0.04],  # after START
    ]
).log()


def test_beam_finds_the_best_path_greedy_misses_on_a_hand_made_table():
    tables = HAND.expand(1, 4, 5, 4)
    assert brute_force(tables[0], 4) == ([1, 3, 3, 3], pytest.approx(np.log(0.32)))
    greedy, calls = search(tables, beam=1)
    assert greedy.tokens.tolist() == [[0, 3, 3, 3]] and len(calls) == 2  # a, END: its only path ended at step 2
    torch.testing.assert_close(greedy.score(), torch.tensor([np.log(0.15)], dtype=torch.float32))
    for beam in (2, 3):
        paths, calls = search(tables, beam)
        assert paths.tokens.tolist() == [[1, 3, 3, 3]], beam
        torch.testing.assert_close(paths.log_probs, torch.tensor([[0.4, 0.8, 1, 1]]).log())
        # step 2 ends b (0.32) and a (0.15); beam 3's third path, a, b (0.06), is less probable: all stop there
        assert len(calls) == 2, beam


@pytest.mark.parametrize("beam", [1, 2, 3])
def test_no_path_in_the_beam_repeats_a_label(beam):
    """Every path the decoder is asked to extend, at every step, holds each label at most once.

    With B <= C + 1 every slot holds a live path from the first step on (dead slots may hold anything).
    """
    c = 4
    tables = random_tables(6, c + 1, c, seed=beam)
    tables[..., : c + 1, :c] += torch.eye(c + 1, c) * 3.0  # repeating the previous label is the likeliest token
    tables = torch.log_softmax(tables, dim=-1)
    paths, calls = search(tables, beam)
    for history in calls:
        for row in history.tolist():
            seq = row[1 : row.index(c + 1, 1) if c + 1 in row[1:] else None]
            labels = [tok for tok in seq if tok < c]
            assert len(labels) == len(set(labels)), row
            assert seq[len(labels) :] == [c] * (len(seq) - len(labels)), row  # nothing but END after END
    for seq in paths.tokens.tolist():
        labels = [tok for tok in seq if tok < c]
        assert len(labels) == len(set(labels)) and seq == labels + [c] * (len(seq) - len(labels))


def test_a_wide_beam_is_exhaustive_and_equals_brute_force():
    """C = 3 has 16 label sequences: 16 beams keep them all, so the beam's best path is the brute-forced one."""
    tables = random_tables(8, 4, 3, seed=10)
    for max_steps in (2, 3, 4):
        paths, _ = search(tables, beam=16, max_steps=max_steps)
        for i in range(8):
            best, score = brute_force(tables[i], max_steps)
            assert paths.tokens[i].tolist() == best, (i, max_steps)
            assert paths.score()[i].item() == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("beam", [1, 2, 3])
def test_batched_search_is_each_images_search_and_stops_by_the_rule(beam):
    """Several images (each its own table) decode exactly as each alone, and the search runs as many steps as the
    plain reference takes for its slowest image: the first step where every open path is below every finished one."""
    c, steps = 4, 5
    tables = random_tables(7, steps, c, seed=20 + beam)
    tables[..., c] -= 1.5  # END less likely: the paths and the step counts vary
    batched, calls = search(tables, beam)
    reference = [reference_beam(tables[i], beam, steps) for i in range(7)]
    assert len(calls) == max(taken for _, taken in reference)
    assert len({taken for _, taken in reference}) > 1  # the images stop at different steps
    for i, (path, taken) in enumerate(reference):
        alone, alone_calls = search(tables[i : i + 1], beam)
        assert len(alone_calls) == taken, i
        assert alone.tokens[0].tolist() == path, i
        assert torch.equal(alone.tokens[0], batched.tokens[i]) and torch.equal(alone.log_probs[0], batched.log_probs[i])


class LateFlags(DoneFlags):
    """Stop flags read `lag` steps late, as on a GPU whose copies land after the host has queued more steps."""

    lag = 2

    def push(self, step: int, flag: torch.Tensor) -> int | None:
        self.pending.append((step, bool(flag), None))
        if len(self.pending) > self.lag:
            done_step, done, _ = self.pending.popleft()
            if done:
                return done_step
        return None


@pytest.mark.parametrize("beam", [1, 3])
def test_a_stop_flag_read_late_returns_the_paths_of_the_step_that_stopped(beam, monkeypatch):
    """`DoneFlags` on CUDA reads each step's flag without waiting: the search runs on, then returns what it had."""
    c, steps = 4, 6
    tables = random_tables(5, steps, c, seed=40 + beam)
    tables[..., c] += 1.0  # END likely: the search stops well before the last step
    prompt, calls = search(tables, beam)
    monkeypatch.setattr("mlic.models.beam_search.DoneFlags", LateFlags)
    late, late_calls = search(tables, beam)
    assert len(calls) < steps and len(late_calls) == min(steps, len(calls) + LateFlags.lag)
    assert torch.equal(late.tokens, prompt.tokens) and torch.equal(late.log_probs, prompt.log_probs)


def test_the_last_step_only_ends_the_path():
    """A chain table (label k + 1 is sure after k; END likelier the longer the path) is cut at max_steps - 1 labels."""
    c = 4
    table = torch.full((c + 2, c + 1), 0.02)
    table[c + 1, 0], table[c + 1, c] = 1.0, 0.05  # START -> 0
    for k in range(c):
        table[k, c] = 0.1 * (k + 1)
        if k < c - 1:
            table[k, k + 1] = 1.0
    tables = table.log().expand(2, c + 1, c + 2, c + 1)
    for max_steps in range(1, c + 2):
        expected = [*range(max_steps - 1), c]
        assert brute_force(tables[0], max_steps)[0] == expected  # the longest path allowed is the best
        for beam in (1, 3):
            paths, calls = search(tables, beam, max_steps)
            assert len(calls) == max_steps  # the open chain (probability 1) is never below a finished path
            assert paths.tokens.tolist() == [expected] * 2, (max_steps, beam)
            end = 0.05 if max_steps == 1 else 0.1 * (max_steps - 1)
            assert paths.log_probs[0, -1].item() == pytest.approx(np.log(end))  # END, forced at the last step


@pytest.mark.parametrize(
    ("scores", "finished", "done"),
    [
        ([-1.0, -2.0], [True, False], True),  # the open path is below the finished one
        ([-2.0, -1.0], [True, False], False),  # an open path may still win
        ([-1.0, -1.0], [True, False], False),  # a tie: not below
        ([-1.0, -2.0], [False, False], False),  # nothing finished yet
        ([-1.0, -2.0], [True, True], True),
        ([-1.0, -INF], [True, False], True),  # a dead slot is not an open path
        ([-1.0, -INF], [True, True], True),  # nor a finished one (it would bring the lowest finished to -inf)
        ([-INF, -1.0], [True, False], False),  # a dead "finished" slot is no finished path
        ([-INF, -INF], [True, True], False),
        ([-3.0, -1.0, -2.0], [False, True, True], True),  # every open path below every finished one
        ([-1.5, -1.0, -2.0], [False, True, True], False),  # -1.5 is above the finished -2
    ],
)
def test_search_done(scores, finished, done):
    assert search_done(torch.tensor([scores]), torch.tensor([finished])).tolist() == [done]


def test_search_done_is_per_image():
    scores = torch.tensor([[-1.0, -2.0], [-2.0, -1.0], [-1.0, -INF]])
    finished = torch.tensor([[True, False], [True, False], [False, False]])
    assert search_done(scores, finished).tolist() == [True, False, False]


def test_best_paths_read_out_step_probabilities_floors_and_sets():
    c = 4
    tokens = torch.tensor([[2, 0, 4, 4], [4, 4, 4, 4], [1, 3, 0, 4]])
    probs = torch.tensor([[0.9, 0.4, 0.5, 1.0], [0.7, 1, 1, 1], [0.9, 0.4, 0.5, 0.6]])
    paths = BestPaths(tokens, probs.log())
    torch.testing.assert_close(paths.label_probs(c), torch.tensor([[0.4, 0, 0.9, 0], [0, 0, 0, 0], [0.5, 0.9, 0, 0.4]]))
    assert paths.label_sets(c).tolist() == [[True, False, True, False], [False] * 4, [True, True, False, True]]
    # a label's floor: the lowest running geometric mean P_s up to its step; here P_1 = 0.9, P_2 = 0.6, P_3 = 0.18^(1/3)
    floors = [[0.6, 0, 0.9, 0], [0, 0, 0, 0], [0.18 ** (1 / 3), 0.9, 0, 0.6]]
    torch.testing.assert_close(paths.path_floor(c), torch.tensor(floors))
    torch.testing.assert_close(paths.score(), probs.log().sum(dim=1))


# The network and its task


def test_shapes_loss_parts_and_gradients_reach_backbone_and_decoder():
    model, task = build()
    target = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 1, 0]], dtype=torch.float32)
    task.setup(target.numpy())
    step = task.training_step(model.train(), {"image": images(), "target": target})
    assert set(step.parts) == {"rnn", "prelim"} and torch.isfinite(step.loss)
    assert step.loss.item() == pytest.approx(sum(v.item() for v in step.parts.values()), rel=1e-6)
    step.loss.backward()
    for name, module in model.named_children():
        grads = [p.grad for p in module.parameters()]
        if grads:
            assert all(g is not None and torch.isfinite(g).all() for g in grads), name
            assert sum(g.abs().sum() for g in grads) > 0, name
    model.eval()
    with torch.no_grad():
        scores = task.predict_step(model, {"image": images()})
        decoded = task.decode_step(model, {"image": images()})
    assert scores.shape == (2, NUM_CLASSES) and ((scores >= 0) & (scores <= 1)).all()
    assert {k: v.shape for k, v in decoded.items()} == {k: (2, NUM_CLASSES) for k in ("label_probs", "path_floor",
                                                                                        "decoded")}  # fmt: skip


def test_the_rnn_loss_sums_each_rows_steps_up_to_its_end():
    log_probs = torch.randn(2, 3, 4).log_softmax(dim=2)
    targets = torch.tensor([[1, 3, 3], [0, 2, 3]])
    lengths = torch.tensor([1, 2])  # row 0's third step is padding
    expected = -(log_probs[0, 0, 1] + log_probs[0, 1, 3] + log_probs[1, 0, 0] + log_probs[1, 1, 2] + log_probs[1, 2, 3])
    torch.testing.assert_close(sequence_loss(log_probs, targets, lengths), expected / 2)


def test_score_rules_read_the_best_path_v_prob_or_their_maximum():
    model, _ = build()
    model = emitting(model).eval()
    x = images(4)
    with torch.no_grad():
        out = model(x)
        path = BestPaths(out["tokens"], out["token_log_probs"]).label_probs(NUM_CLASSES)
        prelim = torch.sigmoid(out["prelim"])
        expected = {"prelim": prelim, "beam": path, "max": torch.maximum(path, prelim)}
        for rule, scores in expected.items():
            _, task = build(score_rule=rule)
            torch.testing.assert_close(task.predict_step(model, {"image": x}), scores)
    on_path = out["tokens"] < NUM_CLASSES
    assert on_path.any() and (path > 0).sum() == on_path.sum()  # a label's path probability, 0 off the path
    assert (path > prelim).any() and (path < prelim).any()  # max differs from each of the two


def test_max_steps_is_set_by_training_and_rides_in_the_state_dict():
    model, task = build()
    assert int(model.max_steps) == model.export_steps == NUM_CLASSES + 1
    with pytest.raises(RuntimeError, match="setup"):
        task.training_step(model, {"image": images(), "target": torch.zeros(2, NUM_CLASSES)})
    train_labels = np.array([[1, 0, 1, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]])  # at most 3 labels
    task.setup(train_labels)
    batch_target = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)  # the batch has at most 1
    task.training_step(model.train(), {"image": images(), "target": batch_target})
    assert int(model.max_steps) == model.export_steps == 4
    state = model.state_dict()
    assert int(state["max_steps"]) == 4
    fresh, _ = build()
    wrapped = nn.ModuleDict({"net": fresh})  # the load hook runs on a submodule too (EMA copies, fold holders)
    wrapped.load_state_dict({f"net.{k}": v for k, v in state.items()})
    assert int(fresh.max_steps) == fresh.export_steps == 4
    with torch.no_grad():
        out = emitting(fresh).eval()(images())
    assert out["tokens"].shape == (2, 4) and ((out["tokens"] < NUM_CLASSES).sum(dim=1) <= 3).all()


def test_bf16_autocast_on_cpu_stays_finite():
    model, task = build()
    assert_bf16_training_finite(model, task, NUM_CLASSES)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = task.predict_step(emitting(model).eval(), {"image": images()})
    assert torch.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


class FixedMap(nn.Module):
    """Stands in for the backbone on one fixed batch: its final feature map, computed once (see `overfit_losses`)."""

    def __init__(self, backbone: nn.Module, images: torch.Tensor):
        super().__init__()
        with torch.no_grad():
            self.map = backbone.forward_features(images).detach()
        self.num_features = backbone.num_features

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.map


def test_overfits_eight_images_to_their_exact_label_sets():
    """The head alone (the backbone's maps fixed, as in `overfit_losses`) learns to decode each image's exact set."""
    model, task = build(OVERFIT_LABELS, embed_dim=32, hidden_size=64, attention_dim=32, decoder_dropout=0.0)
    batch = squares_batch()
    task.setup(batch["target"].numpy())
    model.backbone = FixedMap(model.backbone, batch["image"])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(100):
        loss = task.training_step(model, batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    model.eval()
    with torch.no_grad():
        for beam in (1, 3):
            model.beam_size = beam
            decoded = task.decode_step(model, {"image": batch["image"]})["decoded"]
            assert decoded.tolist() == (batch["target"] > 0.5).tolist(), beam


@pytest.mark.slow  # 10 s: the exporter traces every unrolled step of the search
def test_onnx_unrolls_the_search_and_matches_eager_decoding(tmp_path):
    """Exported, the search runs all export_steps (no early stop); its paths are eager's, even where eager stops early.

    The batch has paths of 0 to 4 labels (the images scaled apart); decoded alone, most images stop before step 5.
    """
    model, _ = build(4, beam_size=2)
    model = emitting(model).eval()
    x = images(6, 32) * torch.linspace(0.25, 4.0, 6)[:, None, None, None]
    step, calls = model.step, []
    model.step = lambda *args: calls.append(1) or step(*args)  # counts eager steps
    with torch.no_grad():
        expected = {}
        for rows in (slice(None), *(slice(i, i + 1) for i in range(6))):
            calls.clear()
            expected[rows.start] = model(x[rows]), len(calls)
    del model.step
    lengths = (expected[None][0]["tokens"] < 4).sum(dim=1)
    assert len(set(lengths.tolist())) > 2 and min(taken for _, taken in expected.values()) < model.export_steps
    path = tmp_path / "cnn_rnn.onnx"
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model, (x[:2],), input_names=["image"], output_names=["prelim", "tokens", "token_log_probs"],
        dynamic_shapes=({0: batch},), dynamo=True, verbose=False,
    )  # fmt: skip
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for start, (out, _) in expected.items():
        rows = slice(start, None if start is None else start + 1)
        prelim, tokens, log_probs = session.run(None, {"image": x[rows].numpy()})
        np.testing.assert_array_equal(tokens, out["tokens"].numpy())
        np.testing.assert_allclose(log_probs, out["token_log_probs"].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(prelim, out["prelim"].numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"embed_dims": 8}, r"models.cnn_rnn.embed_dims: unknown key for arch 'cnn_rnn'; did you mean 'embed_dim'"),
        ({"feed": "sampled"}, r"feed: unknown decoder feed 'sampled'.*\n.*one of: argmax, target"),
        ({"score_rule": "mean"}, r"score_rule: unknown score rule 'mean'.*\n.*one of: beam, max, prelim"),
        ({"beam_size": 0}, "beam_size: must be >= 1, got 0"),
        ({"hidden_size": 0}, "hidden_size: must be >= 1"),
        ({"decoder_dropout": 1.0}, r"decoder_dropout: must be in \[0, 1\)"),
        ({"prelim_weight": -1.0}, "prelim_weight: must be >= 0"),
        ({"rnn_weight": 0.0, "prelim_weight": 0.0}, "rnn_weight: rnn_weight and prelim_weight cannot both be 0"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        build(**options)
    assert "arch 'cnn_rnn'" in str(info.value)
