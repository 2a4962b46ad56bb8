"""benchmarks/decode.py: a tiny run in-process, its JSON fields, the fixed step count and the verdict."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def decode_bench():
    """The benchmark script as a module."""
    return load_benchmark("decode")


def test_tiny_run_fields_steps_and_verdict(decode_bench, capsys):
    argv = ["--batch", "2", "--steps", "3", "--repeats", "1", "--classes", "5", "9", "--beams", "1", "2",
            "--positions", "4", "--channels", "8", "--embed-dim", "8", "--hidden-size", "16", "--attention-dim", "8",
            "--threads", "1"]  # fmt: skip
    result = decode_bench.main(argv)
    captured = capsys.readouterr()
    assert json.loads(captured.out) == result  # the JSON on stdout is the returned result
    assert "| C | B | images/s |" in captured.err and "| 9 | 2 |" in captured.err  # the table on stderr
    assert result["setup"]["steps"] == 3 and result["setup"]["torch_threads"] == 1
    assert [(r["classes"], r["beam"]) for r in result["results"]] == [(5, 1), (5, 2), (9, 1), (9, 2)]
    for r in result["results"]:
        assert r["steps"] == 3  # early stop never cut a decode short
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0 and r["ms_per_decode"] >= r["ms_per_decode_min"] > 0
        assert "seconds" not in r
    assert result["baseline"] == {"classes": 5, "beam": 1}
    assert result["results"][0]["time_ratio"] == result["results"][0]["c_times_b_ratio"] == 1.0
    ratios = {(r["classes"], r["beam"]): r for r in result["ratios"]}
    assert set(ratios) == {(5, 2), (9, 1), (9, 2)}  # every configuration but the baseline
    assert ratios[(9, 2)]["c_times_b_ratio"] == pytest.approx(18 / 5, abs=1e-3)
    assert result["sublinear_in_c_times_b"] == all(r["sublinear"] for r in ratios.values())


def test_forced_length_with_trained_like_early_end(decode_bench):
    """Even a decoder that wants END at once runs every step: the wrapper forbids END before the last."""
    import torch

    args = decode_bench.parse_args(["--batch", "3", "--steps", "4", "--classes", "6", "--positions", "4",
                                    "--channels", "8", "--embed-dim", "8", "--hidden-size", "16",
                                    "--attention-dim", "8"])  # fmt: skip
    model, wrapper, images = decode_bench.build(args, 6, torch.device("cpu"))
    with torch.no_grad():
        model.out.bias[model.end] = 100.0  # END by far the most probable at every step
    result = decode_bench.measure(args, model, wrapper, images, beam=2)
    assert result["steps"] == 4 and wrapper.calls == 4 * args.repeats
    with torch.inference_mode():
        wrapper.calls = 0
        _, paths = model.decode(images, 2)
    assert (paths.tokens[:, :3] < 6).all() and (paths.tokens[:, 3] == 6).all()  # 3 labels, then END


def test_too_many_steps_for_the_labels_is_refused(decode_bench):
    with pytest.raises(SystemExit):
        decode_bench.parse_args(["--classes", "3", "17", "--steps", "5"])  # 4 labels before END, C=3 has 3
