"""Deterministic synthetic iMet 2019 photos: museum images with culture:: and tag:: attributes.

Each image shows at most one culture, as the hue of its backdrop, and 1-4 tags, each drawn as shapes of one kind in
one ink. Attribute frequencies fall off geometrically with their rank, down to a long tail of attributes too rare to
keep (as in the real 1,103 attributes), and the most frequent attributes get the most distinct renderings, so that a
small CNN learns the head from the pixels. Images have varied, non-square sizes, and each is a pure function of
(seed, index), as the Planet chips are.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mlic.data.synthetic.common import ONE, SHIFT, Color, jitter, rect, to_fixed

# Attribute names in the style of the real labels.csv; a synthetic competition takes the first n of each, sorted.
_CULTURE_WORDS = """
american aztec british byzantine chinese dutch egyptian etruscan flemish french german greek inca indian italian
japanese korean maya mexican minoan mughal nubian ottoman persian phoenician roman sasanian spanish tibetan turkish
venetian viking
"""
_TAG_WORDS = """
angels animals architecture birds boats books bowls bridges buildings butterflies candles cats chairs children churches
clouds coins columns crosses crowns dancing deer doors dogs dresses eagles feathers fish flowers fruit gardens hats
horses inscriptions insects keys landscapes leaves lions masks men mirrors moon mountains ornament portraits profiles
rivers saints shells ships skulls snakes soldiers stars sun swords textiles trees vases waves weapons women writing
"""
IMET_CULTURES: tuple[str, ...] = tuple(sorted(_CULTURE_WORDS.split()))
IMET_TAGS: tuple[str, ...] = tuple(sorted(_TAG_WORDS.split()))
IMET_CULTURE_PROB = 0.9  # share of images with a culture (89% of the real train.csv)
IMET_EXTRA_TAGS = (3, 0.4)  # tags per image: 1 + Binomial(3, 0.4), mean 2.2 (real: 2.3 besides the culture)
_IMET_STREAM = 2019  # mixed into the seeds, so an iMet image never shares a random stream with a Planet chip

# Saturated inks (and black and white), unlike the softer backdrop colours of the cultures.
_INKS: tuple[Color, ...] = (
    (220, 30, 30),
    (30, 170, 40),
    (30, 60, 220),
    (240, 210, 20),
    (200, 40, 200),
    (20, 200, 210),
    (15, 15, 15),
    (250, 250, 250),
)


@dataclass(frozen=True)
class ImetSpec:
    """The attribute list of a synthetic iMet competition and each attribute's frequency rank within its kind.

    Attributes:
        names: attribute_name of attribute id i: the cultures, then the tags, each kind sorted (as in labels.csv).
        n_cultures: Attribute ids below this are cultures, the others tags.
        ranks: Frequency rank of each attribute within its kind (0: the most frequent); it also picks the rendering.
        tail_ratio: Frequency of the rarest attribute of a kind over that of its most frequent one; frequencies fall
            geometrically in between, so the tail's length does not depend on how many attributes there are.
    """

    names: tuple[str, ...]
    n_cultures: int
    ranks: tuple[int, ...]
    tail_ratio: float


def imet_spec(cultures: int, tags: int, tail_ratio: float, seed: int) -> ImetSpec:
    """The attributes of a synthetic iMet competition: the first `cultures` and `tags` names, ranks shuffled by seed.

    Ranks are shuffled rather than following the ids, so that rare attributes are spread over the id range, as in
    the real data: a submission holding class indices instead of attribute ids then names the wrong attributes.

    Raises:
        ValueError: On counts outside 1..len(IMET_CULTURES) or 1..len(IMET_TAGS).
    """
    if not (1 <= cultures <= len(IMET_CULTURES) and 1 <= tags <= len(IMET_TAGS)):
        raise ValueError(f"need 1..{len(IMET_CULTURES)} cultures and 1..{len(IMET_TAGS)} tags, got {cultures}, {tags}")
    names = [f"culture::{n}" for n in IMET_CULTURES[:cultures]] + [f"tag::{n}" for n in IMET_TAGS[:tags]]
    rng = np.random.default_rng([seed, _IMET_STREAM])
    ranks = [*rng.permutation(cultures), *rng.permutation(tags)]
    return ImetSpec(tuple(names), cultures, tuple(int(r) for r in ranks), float(tail_ratio))


def _tail_probs(ranks: Sequence[int], tail_ratio: float) -> np.ndarray:
    """Probabilities falling geometrically with rank, from 1 (rank 0) to `tail_ratio` (the last rank), normalised."""
    ranks = np.asarray(ranks, dtype=np.float64)
    weights = tail_ratio ** (ranks / max(len(ranks) - 1, 1))
    return weights / weights.sum()


def sample_imet_attributes(spec: ImetSpec, rng: np.random.Generator) -> list[int]:
    """One image's attribute ids: a culture with probability IMET_CULTURE_PROB, and 1-4 distinct tags.

    Returns:
        The attribute ids, ascending (as Kaggle lists them).
    """
    cultures = _tail_probs(spec.ranks[: spec.n_cultures], spec.tail_ratio)
    tags = _tail_probs(spec.ranks[spec.n_cultures :], spec.tail_ratio)
    ids = [int(rng.choice(len(cultures), p=cultures))] if rng.random() < IMET_CULTURE_PROB else []
    count = min(1 + int(rng.binomial(*IMET_EXTRA_TAGS)), len(tags))
    ids += [spec.n_cultures + int(t) for t in rng.choice(len(tags), count, replace=False, p=tags)]
    return sorted(ids)


def imet_image_id(seed: int, index: int) -> str:
    """A 16-hex-digit id like the real ones, a pure function of (seed, index), so ids never depend on order."""
    return hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).hexdigest()


def make_imet_image(
    spec: ImetSpec, seed: int, index: int, min_side: int, max_side: int
) -> tuple[list[int], np.ndarray]:
    """Attribute ids and image of one synthetic iMet photo, a function of (seed, index) alone (as `make_chip`).

    Args:
        spec: The competition's attributes.
        seed: Dataset seed.
        index: Image number within the dataset.
        min_side: Smallest width or height; each is drawn independently, so most images are not square.
        max_side: Largest width or height.

    Returns:
        The ascending attribute ids and an RGB uint8 array of shape (height, width, 3).
    """
    rng = np.random.default_rng([seed, _IMET_STREAM, index])
    attributes = sample_imet_attributes(spec, rng)
    height, width = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    return attributes, render_imet_image(spec, attributes, height, width, rng)


def render_imet_image(
    spec: ImetSpec, attributes: Sequence[int], height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """Render a photo: a backdrop in its culture's hue (grey without one), then 1-2 shapes per tag in its look.

    Raises:
        ValueError: On an attribute id outside the spec, or a side below 8 pixels.
    """
    bad = [a for a in attributes if not 0 <= a < len(spec.names)]
    if bad:
        raise ValueError(f"unknown attribute id(s) {bad}; expected 0..{len(spec.names) - 1}")
    if min(height, width) < 8:
        raise ValueError(f"sides must be at least 8 pixels, got {height} x {width}")
    cultures = [spec.ranks[a] for a in attributes if a < spec.n_cultures]
    img = _imet_backdrop(cultures[0] if cultures else None, height, width, rng)
    side = min(height, width)
    for attribute in sorted(a for a in attributes if a >= spec.n_cultures):
        draw, ink = _tag_look(spec.ranks[attribute])
        for _ in range(rng.integers(1, 3)):
            center = rng.uniform(0.2, 0.8, 2) * (width, height)
            draw(img, center, rng.uniform(0.16, 0.24) * side, jitter(ink, rng, 10))
    img += rng.random(img.shape, dtype=np.float32) * 12.0 - 6.0
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _imet_backdrop(rank: int | None, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A softly lit backdrop in the culture's colour, grey without one.

    Culture ranks step round the hue circle by the golden ratio, so the frequent cultures (low ranks) get far-apart
    hues whatever their number, and alternate between light and dark, so that neighbouring hues differ in brightness.
    """
    if rank is None:
        color = jitter((150, 150, 145), rng, 6)
    else:
        hue, value = (rank * 0.618034) % 1.0, (0.9, 0.6)[rank % 2]
        color = jitter(tuple(255 * c for c in colorsys.hsv_to_rgb(hue, 0.55, value)), rng, 6)
    coarse = rng.standard_normal((3, 3), dtype=np.float32)
    light = 1 + 0.08 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return light[..., None] * np.asarray(color, dtype=np.float32)


def _tag_look(rank: int) -> tuple[Callable[[np.ndarray, np.ndarray, float, Color], None], Color]:
    """Shape and ink of the tag of frequency rank `rank`.

    A Latin square over 8 shapes x 8 inks: the 8 most frequent tags differ in both, and ranks below 64 all differ.
    """
    shape, row = rank % len(_SHAPES), rank // len(_SHAPES)
    return _SHAPES[shape], _INKS[(shape + row) % len(_INKS)]


def _fill(img: np.ndarray, polygons: Sequence[np.ndarray], color: Color) -> None:
    cv2.fillPoly(img, [to_fixed(p) for p in polygons], color, shift=SHIFT)


def _disc(img: np.ndarray, center: np.ndarray, radius: float, color: Color) -> None:
    cv2.circle(img, tuple(to_fixed(center)), int(radius * ONE), color, -1, cv2.LINE_8, SHIFT)


def _ring(img: np.ndarray, center: np.ndarray, radius: float, color: Color) -> None:
    thickness = max(1, round(radius / 3))
    cv2.circle(img, tuple(to_fixed(center)), int(radius * 0.85 * ONE), color, thickness, cv2.LINE_8, SHIFT)


def _triangle(img: np.ndarray, center: np.ndarray, radius: float, color: Color) -> None:
    _fill(img, [center + radius * np.array([[0.0, -1.0], [0.87, 0.5], [-0.87, 0.5]])], color)


def _cross(img: np.ndarray, center: np.ndarray, radius: float, color: Color) -> None:
    _fill(img, [rect(center, 2 * radius, 0.5 * radius, 0.0), rect(center, 0.5 * radius, 2 * radius, 0.0)], color)


# Tag shapes, all of a similar area; the order sets which ranks get which shape (see _tag_look).
_SHAPES: tuple[Callable[[np.ndarray, np.ndarray, float, Color], None], ...] = (
    _disc,
    lambda img, c, r, color: _fill(img, [rect(c, 1.6 * r, 1.6 * r, 0.0)], color),  # square
    _triangle,
    _ring,
    lambda img, c, r, color: _fill(img, [rect(c, 2.2 * r, 0.7 * r, 0.0)], color),  # bar
    _cross,
    lambda img, c, r, color: _fill(img, [rect(c, 1.6 * r, 1.6 * r, np.pi / 4)], color),  # diamond
    lambda img, c, r, color: _fill(img, [rect(c, 0.7 * r, 2.2 * r, 0.0)], color),  # column
)
