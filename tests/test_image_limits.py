"""Decompression bombs: images too large to decode are refused from their header (`prepare.max_pixels`).

A 20000 x 20000 PNG of zeros is 1.1 MB on disk and 1.2 GB decoded; before the header check, `mlic predict` on it
peaked at 3.3 GB of RSS and predicted on it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import pytest
import yaml

from mlic.config import config_from_dict
from mlic.data import images
from mlic.data.competitions import get_competition
from mlic.data.images import image_problem, pixel_problem, read_image
from mlic.errors import MlicError

BOMB_SIDE = 20_000


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """An 8-bit RGB PNG of side x side black pixels (`side` a multiple of 100), in milliseconds and little memory.

    Every row is zeros (filter byte 0, then the pixels), so the zlib stream is one block of 100 rows compressed
    after a full flush (which makes it refer to nothing before it) repeated, an empty final block, and the Adler-32
    of the zeros; deflating all 1.2 GB took seconds.
    """
    rows = 100
    block = bytes((1 + 3 * side) * rows)
    compressor = zlib.compressobj(9)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)  # with the zlib header
    repeated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    size = side * (1 + 3 * side)
    adler = ((size % 65521) << 16) | 1  # of zeros: a stays 1, b adds 1 per byte
    idat = first + repeated * (side // rows - 1) + b"\x03\x00" + struct.pack(">I", adler)  # 03 00: final, empty
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return write_png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


@pytest.fixture
def bomb_never_decoded(bomb, monkeypatch):
    """Fail the test if OpenCV is handed the bomb: the header check must refuse it first. Other files decode."""
    decode, size = cv2.imdecode, bomb.stat().st_size

    def imdecode(buffer, flags):
        assert len(buffer) != size, "the bomb was decoded"
        return decode(buffer, flags)

    monkeypatch.setattr(images.cv2, "imdecode", imdecode)


def test_header_check_refuses_a_bomb_without_decoding_it(bomb, bomb_never_decoded):
    assert bomb.stat().st_size < 1_500_000
    message = f"image is {BOMB_SIDE} x {BOMB_SIDE} = 400,000,000 pixels, over prepare.max_pixels (40,000,000)"
    with pytest.raises(MlicError) as caught:
        read_image(bomb)
    assert caught.value.path == bomb and message in caught.value.message
    assert "downscale the file, or raise prepare.max_pixels" in caught.value.message
    assert image_problem(bomb, decode=False).startswith(message)
    assert image_problem(bomb, decode=True).startswith(message)
    data = bomb.read_bytes()
    assert pixel_problem(data, max_pixels=BOMB_SIDE**2) is None  # the limit itself is allowed
    assert "over prepare.max_pixels (1,000)" in pixel_problem(data, max_pixels=1000)


def test_pil_bomb_check_does_not_preempt_ours(bomb, recwarn):
    """PIL warns above 89 MP and raises above 179 MP on its own; a raised prepare.max_pixels must still apply."""
    assert pixel_problem(bomb.read_bytes(), max_pixels=500_000_000) is None
    assert not [w for w in recwarn if "decompression" in str(w.message).lower()]


def test_small_and_odd_files_pass_the_header_check(sample_competition, tmp_path):
    chip = sorted((sample_competition / "train-jpg").glob("*.jpg"))[0]
    assert pixel_problem(chip.read_bytes(), max_pixels=32 * 32) is None
    assert "32 x 32 = 1,024 pixels" in pixel_problem(chip.read_bytes(), max_pixels=1023)
    # a header PIL cannot parse is left to the decoder, which names the problem
    garbled = tmp_path / "garbled.jpg"
    garbled.write_bytes(b"\xff\xd8\xff\xda" + bytes(range(256)) * 2 + b"\xff\xd9")
    assert pixel_problem(garbled.read_bytes(), max_pixels=1) is None
    assert image_problem(garbled) == "image cannot be decoded (corrupt or not an image)"


def test_prepare_and_check_report_a_bomb_as_a_bad_training_row(
    sample_competition, bomb, bomb_never_decoded, tmp_path, capsys
):
    from mlic.stages import prepare
    from mlic.tools import check

    root = tmp_path / "planet"  # the sample competition, its training image train_3.jpg a bomb (a PNG named .jpg)
    shutil.copytree(sample_competition, root)
    shutil.copy(bomb, root / "train-jpg" / "train_3.jpg")
    params = {"data": {"root": str(root)}, "prepare": {"image_size": 16, "out_dir": str(tmp_path / "prepared")}}
    cfg = config_from_dict(params)
    scan = get_competition(cfg.data).scan(root, False, 2, cfg.prepare.max_pixels)
    assert scan.bad_train_rows == {3} and not scan.fatal
    assert f"{root / 'train-jpg' / 'train_3.jpg'}: train image: image is 20000 x 20000" in str(scan.error())

    assert check(cfg, None, None, quick=False) == 1  # check decodes every image, after the header check
    assert "train_3.jpg: train image: image is 20000 x 20000" in capsys.readouterr().out

    with pytest.raises(MlicError, match="over prepare.max_pixels"):
        prepare.main(cfg)
    prepare.main(config_from_dict({**params, "prepare": {**params["prepare"], "skip_bad_rows": True}}))
    out = capsys.readouterr().out
    assert "skipped 1 training row(s)" in out and "prepare: 39 train" in out

    raised = config_from_dict({**params, "prepare": {**params["prepare"], "max_pixels": BOMB_SIDE**2}})
    assert get_competition(raised.data).scan(root, False, 2, raised.prepare.max_pixels).bad_train_rows == set()


# --- `mlic predict` on a finished run -----------------------------------------------------------------------------


def peak_rss_mb(command: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command; its result and its peak resident memory in MiB (/usr/bin/time, else getrusage in a wrapper)."""
    if Path("/usr/bin/time").exists():
        command = ["/usr/bin/time", "-f", "peak_rss_kb=%M", *command]
    else:  # a fresh interpreter whose only child is the command: its RUSAGE_CHILDREN peak is the command's
        wrapper = (
            "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(f'peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
            "sys.exit(code)"
        )
        command = [sys.executable, "-c", wrapper, *command]
    result = subprocess.run(command, capture_output=True, text=True)
    return result, int(result.stderr.rsplit("peak_rss_kb=", 1)[1].split()[0]) / 1024


@pytest.mark.slow
def test_predict_refuses_a_bomb_in_bounded_memory(finished_run, bomb, tmp_path):
    good = finished_run / "data" / "raw" / "sample" / "test-jpg" / "test_0.jpg"
    predict = [sys.executable, "-m", "mlic.cli", "predict", "--run", str(finished_run), str(good)]
    baseline, baseline_mb = peak_rss_mb([*predict, "--out", str(tmp_path / "good.csv")])
    assert baseline.returncode == 0, baseline.stderr[-2000:]

    refused, refused_mb = peak_rss_mb([*predict, str(bomb), "--out", str(tmp_path / "refused.csv")])
    assert refused.returncode == 2
    assert "1 of 2 image(s) cannot be read; nothing was written" in refused.stderr
    assert f"{bomb}: image is 20000 x 20000 = 400,000,000 pixels, over prepare.max_pixels" in refused.stderr
    assert "Traceback" not in refused.stderr and "DecompressionBomb" not in refused.stderr
    assert not (tmp_path / "refused.csv").exists()

    skipped, skipped_mb = peak_rss_mb([*predict, str(bomb), "--skip-unreadable", "--out", str(tmp_path / "ok.csv")])
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert "skipped 1 unreadable image(s):" in skipped.stdout and f"{bomb}: image is 20000 x 20000" in skipped.stdout
    assert (tmp_path / "ok.csv").read_text() == (tmp_path / "good.csv").read_text()

    print(f"peak RSS: {baseline_mb:.0f} MiB good image, {refused_mb:.0f} refused bomb, {skipped_mb:.0f} skipped bomb")
    # Decoding the bomb alone takes 2.3 GiB (3.3 GiB peak before the header check). The headers are checked before
    # torch or any model loads, so a refusal stays far below 500 MB; skipping the bomb and predicting the good image
    # costs what predicting the good image alone costs (importing torch is ~0.5 GiB of it).
    assert refused_mb < 500
    assert skipped_mb < baseline_mb + 150


@pytest.mark.slow
def test_predict_takes_the_limit_from_the_runs_params(finished_run, tmp_path, capsys):
    from mlic.cli import main

    run = tmp_path / "run"  # the finished run's outputs, with prepare.max_pixels lowered in its params.yaml
    run.mkdir()
    (run / "data").symlink_to(finished_run / "data")
    params = yaml.safe_load((finished_run / "params.yaml").read_text())
    params["prepare"]["max_pixels"] = 1000
    (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    chip = finished_run / "data" / "raw" / "sample" / "test-jpg" / "test_0.jpg"  # 32 x 32 = 1,024 pixels

    assert main(["predict", "--run", str(run), str(chip), "--out", str(tmp_path / "p.csv")]) == 2
    assert f"{chip}: image is 32 x 32 = 1,024 pixels, over prepare.max_pixels (1,000)" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
