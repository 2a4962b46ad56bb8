"""Image decoding and the resized uint8 image cache that training reads instead of JPEGs."""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mlic.config import PrepareConfig
from mlic.data.stats import mean_std
from mlic.errors import DataProblems, MlicError
from mlic.io import write_npy_rows
from mlic.parallel import ordered_map
from mlic.progress import track

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# Leading bytes of JPEG, PNG, BMP, TIFF (both byte orders) and GIF; WebP is RIFF....WEBP.
IMAGE_SIGNATURES = (b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"GIF8")
MAX_PIXELS = PrepareConfig.max_pixels  # the limit of callers that pass none (prepare and predict pass the params')
# mlic refuses oversized images itself, from the header (`pixel_problem`, prepare.max_pixels), with a message that
# names the file and the fix. PIL only reads headers here (OpenCV decodes), and its own bomb check would warn, or
# raise its own error, first; so it is off.
Image.MAX_IMAGE_PIXELS = None


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3).

    OpenCV converts 4-component (CMYK/YCCK) JPEGs such as the Planet chips to correct RGB (it matches
    Pillow's CMYK conversion within 1 grey level on the real chips).

    Args:
        path: The image file.
        max_pixels: Refuse images with more pixels than this, read from the header before decoding.

    Raises:
        MlicError: If the file is missing, too large or cannot be decoded.
    """
    path = Path(path)
    data = checked_bytes(path, max_pixels)
    # IMREAD_COLOR gives 8-bit BGR whatever the file holds (gray, RGBA, 16-bit, CMYK) and applies EXIF rotation.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MlicError("image cannot be decoded (corrupt or not an image)", path=path, fix="re-download this file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def checked_bytes(path: Path, max_pixels: int = MAX_PIXELS) -> bytes:
    """An image file's bytes, after every check that decodes nothing: present, complete, not too many pixels.

    Raises:
        MlicError: Naming the file and the fix.
    """
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise MlicError("image file is missing", path=path, fix="re-download the competition images") from None
    problem = byte_problem(data)
    if problem:
        raise MlicError(problem, path=path, fix="re-download this file, or drop its row (prepare.skip_bad_rows)")
    problem = pixel_problem(data, max_pixels)
    if problem:
        raise MlicError(problem, path=path)  # the fix is in the message: scans keep only the message
    return data


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an image from its header alone, without decoding it; None if PIL cannot read the header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # PIL's header parsers raise many types on odd files; OpenCV then judges them
        return None


def pixel_problem(data: bytes, max_pixels: int) -> str | None:
    """Why an image must not be decoded because of its size (a decompression bomb, say), or None.

    A 20000 x 20000 PNG of zeros is 1 MB on disk and 1.2 GB decoded; its header says so before anything is decoded.
    """
    size = header_size(data)
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    width, height = size
    return (
        f"image is {width} x {height} = {width * height:,} pixels, over prepare.max_pixels ({max_pixels:,}); "
        "downscale the file, or raise prepare.max_pixels in params.yaml"
    )


def byte_problem(data: bytes) -> str | None:
    """What is wrong with an image file's bytes that a decoder would silently paper over, if anything.

    OpenCV decodes a truncated JPEG or PNG without error, filling the missing part with grey, so truncation
    is detected here: a JPEG must have its end-of-image marker after the last start-of-scan (the real Planet
    chips carry trailing bytes after it, so the very end is not checked), a PNG its IEND chunk.
    """
    if not data:
        return "image file is empty"
    if not data.startswith(IMAGE_SIGNATURES) and data[8:12] != b"WEBP":
        return "not an image file (unknown file signature)"
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") <= data.rfind(b"\xff\xda"):  # also: no scan at all
        return "image file is truncated (JPEG has no end-of-image marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "image file is truncated (PNG has no IEND chunk)"
    return None


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to (size, size): area interpolation when shrinking (no aliasing), bilinear when enlarging."""
    if image.shape[:2] == (size, size):
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_offsets(source_side: int, size: int, crops: int, rng: np.random.Generator) -> np.ndarray:
    """(crops, 2) int32 (top, left) of each size x size crop of a source_side square: the crop geometry, seeded."""
    tops = rng.integers(0, source_side - size + 1, crops)
    lefts = rng.integers(0, source_side - size + 1, crops)
    return np.stack([tops, lefts], axis=1).astype(np.int32).reshape(crops, 2)


def crop_source(image: np.ndarray, size: int, crop_scale: float) -> np.ndarray:
    """The resize the crops are cut from: side size / crop_scale (at least `size`)."""
    return resize(image, max(size, round(size / crop_scale)))


def image_views(image: np.ndarray, size: int, crops: int, crop_scale: float, rng: np.random.Generator) -> np.ndarray:
    """The plain resize to `size`, then `crops` random size x size crops of a resize to `size / crop_scale`.

    This is the iMet study's six-fold expansion (one resize and five random 224 crops of a 256 resize) when
    crops=5 and crop_scale=224/256. Returns (1 + crops, size, size, 3) uint8.
    """
    views = np.empty((1 + crops, size, size, 3), dtype=np.uint8)
    views[0] = resize(image, size)
    if crops:
        source = crop_source(image, size, crop_scale)
        for k, (top, left) in enumerate(crop_offsets(source.shape[0], size, crops, rng)):
            views[1 + k] = source[top : top + size, left : left + size]
    return views


def crop_rng(seed: int, path: Path) -> np.random.Generator:
    """The random generator of one image's crop positions: from the seed and the file's name, not its row."""
    return np.random.default_rng([seed, zlib.crc32(Path(path).name.encode())])


def file_views(
    path: Path,
    size: int,
    crops: int = 0,
    crop_scale: float = 0.875,
    seed: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """One image file's cached views (see `image_views`), its crops placed by `crop_rng`.

    This is what `prepare` caches for the file (whatever `prepare.crop_store`), and what `mlic predict` computes for
    it. Files of more than `max_pixels` pixels are refused before decoding.
    """
    return image_views(read_image(path, max_pixels), size, crops, crop_scale, crop_rng(seed, path))


def file_crop_source(
    path: Path, size: int, crops: int, crop_scale: float, seed: int, max_pixels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a `crop_store: source` cache keeps of one file: its plain view, the crops' source and their (top, left)."""
    image = read_image(path, max_pixels)
    source = crop_source(image, size, crop_scale)
    return resize(image, size), source, crop_offsets(source.shape[0], size, crops, crop_rng(seed, path))


def build_image_cache(
    paths: Sequence[Path],
    size: int,
    out_path: str | os.PathLike,
    workers: int = 2,
    desc: str = "images",
    crops: int = 0,
    crop_scale: float = 0.875,
    seed: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> None:
    """Decode every image once into one (N, 1 + crops, size, size, 3) uint8 .npy file, readable with mmap.

    The rows are appended to the file as they are decoded (`write_npy_rows`), a few images ahead at most
    (`ordered_map`), so memory stays flat whatever N is, and the file appears only once complete. Decoding runs
    in threads (OpenCV releases the GIL). Crop positions come from `crop_rng`
    (the seed and the file name), so they do not depend on the order or parallelism of the build, and
    `mlic predict` cuts the same crops of the same file.

    Args:
        paths: Image files, in row order.
        size: Side of the square cached image.
        out_path: The .npy file to write.
        workers: Decoding threads.
        desc: Progress-bar label.
        crops: Random crops per image beside the plain resize (see `image_views`).
        crop_scale: Crop side over the side of the resize the crops are cut from.
        seed: Seed of the crop positions.
        max_pixels: Refuse (MlicError) an image of more pixels, from its header, before decoding it.
    """
    shape = (len(paths), 1 + crops, size, size, 3)
    views = ordered_map(lambda path: (file_views(path, size, crops, crop_scale, seed, max_pixels),), paths, workers)
    write_npy_rows([(out_path, np.uint8, shape)], track(views, desc, len(paths), unit="img", mininterval=1.0))


def build_crop_source_cache(
    paths: Sequence[Path],
    size: int,
    out_paths: tuple[Path, Path, Path],
    workers: int = 2,
    desc: str = "images",
    crops: int = 5,
    crop_scale: float = 0.875,
    seed: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> None:
    """`prepare.crop_store: source`: each image's plain view, crop source and crop offsets, on disk.

    Three files: the plain views (N, size, size, 3), the sources the crops are cut from (N, S', S', 3) with
    S' = size / crop_scale, and the crops' (top, left) (N, crops, 2). That is 1 + 1 / crop_scale^2 views' pixels per
    image (2.3 at the iMet study's 224 / 256) instead of 1 + crops (6); `mlic.layout.CropViews` cuts the crops when
    they are read. Everything is `build_image_cache`'s: the same resizes and the same `crop_rng` draws, so every view
    is the same bytes.
    """
    source_side = max(size, round(size / crop_scale))
    shapes = ((len(paths), size, size, 3), (len(paths), source_side, source_side, 3), (len(paths), crops, 2))
    files = zip(out_paths, (np.uint8, np.uint8, np.int32), shapes, strict=True)
    made = ordered_map(lambda path: file_crop_source(path, size, crops, crop_scale, seed, max_pixels), paths, workers)
    write_npy_rows(list(files), track(made, desc, len(paths), unit="img", mininterval=1.0))


def open_image_cache(path: str | os.PathLike) -> np.ndarray:
    """Open a cache written by `build_image_cache` as a read-only memory map."""
    return np.load(path, mmap_mode="r")


def channel_stats(cache: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 image cache (channels last) in [0, 1] units, chunked to bound memory."""
    mean, std = mean_std(cache)
    return [round(float(m) / 255.0, 6) for m in mean], [round(float(s) / 255.0, 6) for s in np.maximum(std, 255e-6)]


def image_problem(path: Path, decode: bool = True, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why an image file cannot be used (missing, empty, truncated, too large, undecodable), or None if it is fine.

    Args:
        path: The image file.
        decode: Also decode it fully; without, only the cheap checks run (bytes, and the size in the header).
        max_pixels: Images of more pixels are a problem (a decompression bomb, say).
    """
    try:
        read_image(path, max_pixels) if decode else checked_bytes(path, max_pixels)
    except MlicError as exc:
        return exc.message
    return None


def scan_images(
    paths: Sequence[Path], decode: bool, workers: int, desc: str, max_pixels: int = MAX_PIXELS
) -> dict[int, str]:
    """Problems of many images (see `image_problem`), checked in parallel threads: {row index: problem}."""
    results = ordered_map(lambda p: image_problem(p, decode, max_pixels), paths, workers)
    found = track(results, desc, len(paths), unit="img", mininterval=1.0, disable=len(paths) < 1000)
    return {i: problem for i, problem in enumerate(found) if problem}


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named on the command line: files as given, folders as their image files (sorted, not recursive).

    Raises:
        MlicError: If a path does not exist, or nothing is left to predict.
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            paths.append(item)
        else:
            raise MlicError("no such file or folder", path=item, fix="pass image files or folders of images")
    if not paths:
        raise MlicError("no image files to predict", path=", ".join(map(str, inputs)),
                        fix=f"folders are searched for {', '.join(sorted(IMAGE_SUFFIXES))} files")  # fmt: skip
    return paths


def readable_images(
    paths: list[Path], skip: bool, workers: int = 4, max_pixels: int = MAX_PIXELS
) -> tuple[list[Path], list[MlicError]]:
    """Split off the files that cannot be images (missing, empty, truncated, wrong signature, too many pixels).

    Cheap, up front: nothing is decoded (the pixel count comes from the header).

    Raises:
        DataProblems: Listing every such file, unless `skip`.
    """
    problems = scan_images(paths, decode=False, workers=workers, desc="check images", max_pixels=max_pixels)
    fix = None if skip else "replace the file, or pass --skip-unreadable"
    bad = [MlicError(msg, path=paths[i], fix=fix) for i, msg in problems.items()]
    if bad and not skip:
        raise DataProblems(bad, f"{len(bad)} of {len(paths)} image(s) cannot be read; nothing was written")
    return [p for i, p in enumerate(paths) if i not in problems], bad
