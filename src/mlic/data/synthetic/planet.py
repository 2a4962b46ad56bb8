"""Deterministic synthetic Planet-like chips: realistic label statistics and a visible rendering of every tag.

The real "Planet: Understanding the Amazon from Space" data cannot ship with the package, so tests and demos use
chips generated here. Labels follow the measured frequencies and co-occurrences of the real competition; images
draw each tag as a distinct pattern (fields, rivers, roads, mines, clouds...) that a small CNN trained from scratch
at 64x64 px can learn. Everything is a pure function of a numpy Generator, so chips can be made in parallel.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from importlib import resources

import cv2
import numpy as np

from mlic.data.synthetic.common import ONE, SHIFT, Color, jitter, rect, to_fixed
from mlic.data.vocabularies import PLANET_TAGS

TAGS: tuple[str, ...] = PLANET_TAGS
WEATHER_TAGS: tuple[str, ...] = ("clear", "partly_cloudy", "haze", "cloudy")

# The label tables below were measured on the real train_v2.csv (40,479 rows) and are carried over as constants (and
# one data file beside this module) so that nothing reads shared data at run time.
WEATHER_PROBS: dict[str, float] = {"clear": 0.7024, "partly_cloudy": 0.1794, "haze": 0.0666, "cloudy": 0.0516}

# P(agriculture | weather); cloudy chips carry no land tag at all.
AGRICULTURE_PROBS: dict[str, float] = {"clear": 0.322, "partly_cloudy": 0.343, "haze": 0.249}


# P(tag | weather, agriculture) for the other land tags, sampled as independent Bernoullis: LAND_PROBS_FILE, a CSV
# with a row per (weather, agriculture 0/1) and a column per tag. Its "road" column is kept for reference only: road
# is sampled from ROAD_GIVEN_HABITATION instead.
LAND_PROBS_FILE = "planet_land_probs.csv"

# P(road | weather, agriculture, habitation): roads are strongly tied to settlements, so habitation is drawn first.
ROAD_GIVEN_HABITATION: dict[tuple[str, bool, bool], float] = {
    ("clear", False, False): 0.060,
    ("clear", False, True): 0.648,
    ("clear", True, False): 0.410,
    ("clear", True, True): 0.813,
    ("partly_cloudy", False, False): 0.053,
    ("partly_cloudy", False, True): 0.560,
    ("partly_cloudy", True, False): 0.380,
    ("partly_cloudy", True, True): 0.776,
    ("haze", False, False): 0.052,
    ("haze", False, True): 0.520,
    ("haze", True, False): 0.356,
    ("haze", True, True): 0.696,
}

# Land tags other than agriculture in sampling order: habitation must precede road (see ROAD_GIVEN_HABITATION).
_SAMPLED_LAND_TAGS: tuple[str, ...] = (
    "primary",
    "habitation",
    "road",
    "water",
    "cultivation",
    "bare_ground",
    "selective_logging",
    "artisinal_mine",
    "blooming",
    "slash_burn",
    "blow_down",
    "conventional_mine",
)


def load_land_probs(name: str = LAND_PROBS_FILE) -> dict[tuple[str, bool], dict[str, float]]:
    """P(tag | weather, agriculture) of the land tags, from the CSV `name` shipped beside this module.

    Raises:
        ValueError: When the table lacks a (weather, agriculture) row or a sampled land tag's column.
    """
    text = resources.files(__package__).joinpath(name).read_text()
    table = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = (row.pop("weather"), row.pop("agriculture") == "1")
        table[key] = {tag: float(p) for tag, p in row.items()}
    wanted = {(w, a) for w in WEATHER_TAGS if w != "cloudy" for a in (False, True)}
    if set(table) != wanted or any(set(_SAMPLED_LAND_TAGS) - set(probs) for probs in table.values()):
        raise ValueError(
            f"{name}: needs a row per (weather, agriculture) in {sorted(wanted)} and a column per land tag"
        )
    return table


LAND_PROBS: dict[tuple[str, bool], dict[str, float]] = load_land_probs()


def sample_tags(rng: np.random.Generator) -> list[str]:
    """Sample one chip's tags from the label model measured on the real competition.

    Exactly one weather tag is drawn; cloudy chips get nothing else. Otherwise agriculture is drawn given the
    weather, then the other land tags given (weather, agriculture), with road conditioned on habitation too.

    Args:
        rng: Source of randomness; consumes a fixed number of draws per call.

    Returns:
        The tags, sorted alphabetically.
    """
    weather = WEATHER_TAGS[_draw_index(rng.random(), [WEATHER_PROBS[w] for w in WEATHER_TAGS])]
    # Draw all uniforms up front so every chip consumes the same amount of the stream, whatever its weather.
    u_agri, *u_land = rng.random(1 + len(_SAMPLED_LAND_TAGS))
    if weather == "cloudy":
        return ["cloudy"]
    agriculture = bool(u_agri < AGRICULTURE_PROBS[weather])
    probs = LAND_PROBS[(weather, agriculture)]
    tags = {weather, "agriculture"} if agriculture else {weather}
    for tag, u in zip(_SAMPLED_LAND_TAGS, u_land, strict=True):
        p = ROAD_GIVEN_HABITATION[(weather, agriculture, "habitation" in tags)] if tag == "road" else probs[tag]
        if u < p:
            tags.add(tag)
    if len(tags) == 1:  # real non-cloudy chips essentially always show some land
        tags.add("primary")
    return sorted(tags)


def _draw_index(u: float, probs: Sequence[float]) -> int:
    """Index of the category a uniform draw `u` falls into, given category probabilities."""
    index = int(np.searchsorted(np.cumsum(probs), u, side="right"))
    return min(index, len(probs) - 1)  # guards against the cumulative sum falling a hair short of 1


def make_chip(seed: int, index: int, size: int) -> tuple[list[str], np.ndarray]:
    """Tags and image of one synthetic chip.

    The generator is seeded with `[seed, index]`, so each chip depends only on its own index: chips can be made in
    parallel and in any order with identical results.

    Args:
        seed: Dataset seed.
        index: Chip number within the dataset.
        size: Side of the square image in pixels.

    Returns:
        The alphabetically sorted tags and an RGB uint8 array of shape (size, size, 3).
    """
    rng = np.random.default_rng([seed, index])
    tags = sample_tags(rng)
    return tags, render_chip(tags, size, rng)


def render_chip(tags: Sequence[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """Render a chip in which each tag is drawn as a visually distinct pattern.

    Land cover is drawn first (forest or open land, then the land tags in a fixed order so that the result does
    not depend on the order of `tags`), weather last, then mild sensor noise. All geometry scales with `size`.

    Args:
        tags: Planet tags to draw, any order; duplicates are ignored.
        size: Side of the square image in pixels; designed for 32 and up (64 by default, 256 like real chips).
        rng: Source of randomness for positions, sizes, colours and orientations.

    Returns:
        An RGB uint8 array of shape (size, size, 3).

    Raises:
        ValueError: On a tag that is not one of TAGS, or a size too small to draw on.
    """
    unknown = sorted(set(tags) - set(TAGS))
    if unknown:
        raise ValueError(f"unknown tag(s) {unknown}; expected tags from {list(TAGS)}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels (32 or more recommended), got {size}")
    present = set(tags)
    img = _base_layer(size, "primary" in present, rng)
    for tag, draw in _RENDER_ORDER:
        if tag in present:
            draw(img, size, rng)
    # Sensor noise: uniform on [-7, 7) (std ~4) is several times cheaper to draw than Gaussian at 256 px.
    img += rng.random(img.shape, dtype=np.float32) * 14.0 - 7.0
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


# --- drawing helpers ---------------------------------------------------------------------------------------------


def _smooth_noise(size: int, cells: int, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """Unit-variance-ish low-frequency noise of shape (size, size[, channels]): `cells` values upsampled per side."""
    shape = (cells, cells) if channels == 1 else (cells, cells, channels)
    coarse = rng.standard_normal(shape, dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _blob(
    center: np.ndarray, radius: float, rng: np.random.Generator, n: int = 9, irregular: float = 0.35
) -> np.ndarray:
    """Vertices of an irregular star-convex polygon around `center` (float pixel coordinates)."""
    # Evenly spaced angles with jitter, rather than fully random ones, avoid degenerate sliver-shaped polygons.
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
    radii = radius * rng.uniform(1 - irregular, 1 + irregular, n)
    return center + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]


def _blend(img: np.ndarray, mask: np.ndarray, color: Color | np.ndarray, alpha: float = 1.0) -> None:
    """Alpha-blend `color` (a colour or an image) into `img` in place wherever `mask` (0..1) is set."""
    m = mask[..., None] * alpha
    img *= 1 - m
    img += m * np.asarray(color, dtype=np.float32)


def _curve(start: np.ndarray, end: np.ndarray, bend: float, rng: np.random.Generator, n: int = 12) -> np.ndarray:
    """Points of a gently curved path from start to end: a quadratic Bezier whose control point is offset sideways."""
    direction = end - start
    normal = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-9)
    control = (start + end) / 2 + normal * rng.uniform(-bend, bend)
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end


def _edge_to_edge(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two points just outside opposite sides of the chip, so a path between them crosses it entirely."""
    a, b = rng.uniform(0.1, 0.9, 2) * size
    margin = 0.05 * size
    if rng.random() < 0.5:
        start, end = np.array([-margin, a]), np.array([size + margin, b])
    else:
        start, end = np.array([a, -margin]), np.array([b, size + margin])
    return (start, end) if rng.random() < 0.5 else (end, start)


# --- base layer and land tags ------------------------------------------------------------------------------------


def _base_layer(size: int, forest: bool, rng: np.random.Generator) -> np.ndarray:
    """Dense dark-green rainforest with fine mottled crowns, or (without primary) paler olive/tan open land."""
    if forest:
        color, cells, amp = jitter((38, 80, 44), rng, 8), 22, 0.22
    else:
        color, cells, amp = jitter((150, 140, 96), rng, 15), 6, 0.12
    # Luminance mottling (tree crowns, soil variation) plus a broader per-channel tint drift. Cell counts are fixed
    # so texture scales with the chip like all other geometry.
    shade = 1 + amp * _smooth_noise(size, cells, rng)
    tint = 1 + 0.05 * _smooth_noise(size, 3, rng, channels=3)
    tint *= np.asarray(color, dtype=np.float32)
    tint *= shade[..., None]
    return tint


def _draw_bare_ground(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """One large irregular tan/brown patch of exposed soil with soft edges."""
    mask = np.zeros((size, size), np.float32)
    center = rng.uniform(0.3, 0.7, 2) * size
    cv2.fillPoly(mask, [to_fixed(_blob(center, rng.uniform(0.18, 0.28) * size, rng, 11, 0.4))], 1.0, shift=SHIFT)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.02 * size + 0.5)
    _blend(img, mask, jitter((178, 142, 100), rng, 15), 0.95)


def _draw_agriculture(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A patchwork of straight-edged rectangular fields in light green and yellow-brown, slightly rotated."""
    palette = [(140, 180, 85), (185, 165, 95), (160, 190, 110), (200, 180, 120), (120, 160, 70)]
    angle = rng.uniform(-0.35, 0.35)
    cell = rng.uniform(0.16, 0.26) * size
    rows, cols = rng.integers(2, 6, 2)
    origin = rng.uniform(-0.3, 0.5, 2) * size
    c, s = np.cos(angle), np.sin(angle)
    gap = 0.02 * size  # thin hedgerows between fields keep the straight edges readable
    for i in range(rows):
        for j in range(cols):
            if rng.random() < 0.12:  # leave the odd cell as forest, as real patchworks are irregular
                continue
            offset = np.array([(j + 0.5) * cell, (i + 0.5) * cell])
            center = origin + np.array([offset[0] * c - offset[1] * s, offset[0] * s + offset[1] * c])
            color = jitter(palette[rng.integers(len(palette))], rng, 10)
            cv2.fillPoly(img, [to_fixed(rect(center, cell - gap, cell - gap, angle))], color, shift=SHIFT)


def _draw_cultivation(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A few small irregular light-brown clearings scattered in the forest."""
    for _ in range(rng.integers(2, 5)):
        center = rng.uniform(0.1, 0.9, 2) * size
        polygon = _blob(center, rng.uniform(0.04, 0.07) * size, rng, 7, 0.5)
        cv2.fillPoly(img, [to_fixed(polygon)], jitter((165, 125, 85), rng, 12), shift=SHIFT)


def _draw_water(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A dark-blue meandering river crossing the chip, or occasionally a lake."""
    color = jitter((30, 55, 115), rng, 10)
    if rng.random() < 0.2:
        center = rng.uniform(0.3, 0.7, 2) * size
        cv2.fillPoly(img, [to_fixed(_blob(center, rng.uniform(0.12, 0.2) * size, rng, 10, 0.3))], color, shift=SHIFT)
        return
    start, end = _edge_to_edge(size, rng)
    t = np.linspace(0, 1, 40)[:, None]
    direction = end - start
    normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)
    wiggle = rng.uniform(0.06, 0.12) * size * np.sin(2 * np.pi * rng.uniform(1.0, 2.5) * t + rng.uniform(0, 6.3))
    path = start + t * direction + wiggle * normal
    width = max(2, round(size / 12 * rng.uniform(0.8, 1.2)))
    cv2.polylines(img, [to_fixed(path)], False, color, width, cv2.LINE_8, SHIFT)


def _draw_blow_down(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """An elongated patch of pale lime-green diagonal streaks (wind-felled trees)."""
    ellipse = np.zeros((size, size), np.float32)
    center = tuple(int(v) for v in rng.uniform(0.3, 0.7, 2) * size * ONE)
    axes = tuple(int(v) for v in np.array([rng.uniform(0.22, 0.32), rng.uniform(0.08, 0.12)]) * size * ONE)
    cv2.ellipse(ellipse, center, axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_8, SHIFT)
    streaks = np.zeros_like(ellipse)
    angle = rng.uniform(0.6, 0.95) * (1 if rng.random() < 0.5 else -1)  # diagonal, either way
    along = np.array([np.cos(angle), np.sin(angle)]) * 2 * size  # long enough to cross the chip from anywhere
    thickness = max(1, round(0.015 * size))
    for k in np.arange(-1.5 * size, 1.5 * size, 0.09 * size):  # parallel streaks stepped across the chip
        middle = np.array([size / 2 + k, size / 2])
        cv2.line(
            streaks, tuple(to_fixed(middle - along)), tuple(to_fixed(middle + along)), 1.0, thickness, cv2.LINE_8, SHIFT
        )
    _blend(img, ellipse * (0.3 + 0.7 * streaks), jitter((185, 225, 120), rng, 10))


def _draw_slash_burn(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A dark charcoal burn scar surrounded by a pale grey drifting smoke haze."""
    center = rng.uniform(0.25, 0.75, 2) * size
    radius = rng.uniform(0.09, 0.14) * size
    smoke = np.zeros((size, size), np.float32)
    drift = rng.normal(0, 0.08, 2) * size
    cv2.circle(smoke, tuple(to_fixed(center + drift)), int(radius * 2.0 * ONE), 1.0, -1, cv2.LINE_8, SHIFT)
    smoke = cv2.GaussianBlur(smoke, (0, 0), 0.08 * size)
    _blend(img, smoke, jitter((195, 195, 190), rng, 8), 0.6)
    cv2.fillPoly(img, [to_fixed(_blob(center, radius, rng, 9, 0.35))], jitter((28, 25, 22), rng, 6), shift=SHIFT)


def _draw_conventional_mine(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A large light-grey geometric open pit with concentric terrace rings."""
    center = rng.uniform(0.3, 0.7, 2) * size
    outline = _blob(np.zeros(2), rng.uniform(0.18, 0.26) * size, rng, 6, 0.2)
    cv2.fillPoly(img, [to_fixed(center + outline)], jitter((205, 203, 196), rng, 8), shift=SHIFT)
    ring = jitter((140, 135, 128), rng, 8)
    thickness = max(1, round(0.02 * size))
    for scale in (0.78, 0.56, 0.34):  # terraces step down toward the pit floor
        cv2.polylines(img, [to_fixed(center + outline * scale)], True, ring, thickness, cv2.LINE_8, SHIFT)
    cv2.fillPoly(img, [to_fixed(center + outline * 0.15)], jitter((110, 120, 115), rng, 8), shift=SHIFT)


def _draw_artisinal_mine(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A tight cluster of small orange/ochre and turquoise spots: tailings ponds on disturbed soil."""
    center = rng.uniform(0.2, 0.8, 2) * size
    soil = _blob(center, 0.12 * size, rng, 8, 0.3)
    cv2.fillPoly(img, [to_fixed(soil)], jitter((150, 120, 85), rng, 10), shift=SHIFT)
    palette = [(220, 140, 45), (200, 160, 60), (60, 195, 185), (90, 210, 190)]
    for k in range(rng.integers(5, 9)):
        spot = center + rng.normal(0, 0.06, 2) * size
        radius = rng.uniform(0.025, 0.045) * size
        color = jitter(palette[(k % 2) * 2 + rng.integers(2)], rng, 10)  # alternate ochre and turquoise
        cv2.circle(img, tuple(to_fixed(spot)), int(radius * ONE), color, -1, cv2.LINE_8, SHIFT)


def _draw_selective_logging(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A fishbone of short thin dark-tan skid trails branching off a short spine, finer than a road."""
    color = jitter((150, 115, 75), rng, 10)
    thickness = max(1, round(size / 64 * 0.8))
    for _ in range(rng.integers(1, 3)):
        center = rng.uniform(0.25, 0.75, 2) * size
        angle = rng.uniform(0, np.pi)
        along = np.array([np.cos(angle), np.sin(angle)])
        across = np.array([-along[1], along[0]])
        half = rng.uniform(0.15, 0.22) * size
        cv2.line(
            img,
            tuple(to_fixed(center - along * half)),
            tuple(to_fixed(center + along * half)),
            color,
            thickness,
            cv2.LINE_8,
            SHIFT,
        )
        for t in np.linspace(-0.8, 0.8, rng.integers(4, 7)):
            root = center + along * half * t
            tip = root + (across * rng.choice([-1, 1]) + along * 0.4) * rng.uniform(0.06, 0.1) * size
            cv2.line(img, tuple(to_fixed(root)), tuple(to_fixed(tip)), color, thickness, cv2.LINE_8, SHIFT)


def _draw_road(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A thin light grey/tan road crossing the whole chip, straight or gently curved."""
    start, end = _edge_to_edge(size, rng)
    path = _curve(start, end, 0.25 * size, rng)
    thickness = max(1, round(size / 64 * 1.5 * rng.uniform(1.0, 1.3)))
    cv2.polylines(img, [to_fixed(path)], False, jitter((195, 185, 160), rng, 12), thickness, cv2.LINE_8, SHIFT)


def _draw_habitation(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A cluster of small bright white/grey square roofs."""
    center = rng.uniform(0.2, 0.8, 2) * size
    angle = rng.uniform(0, np.pi / 2)
    for _ in range(rng.integers(6, 13)):
        spot = center + rng.normal(0, 0.1, 2) * size
        side = rng.uniform(0.04, 0.065) * size
        grey = rng.uniform(185, 250)
        color = jitter((grey, grey, grey), rng, 6)
        cv2.fillPoly(img, [to_fixed(rect(spot, side, side, angle))], color, shift=SHIFT)


def _draw_blooming(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """Scattered bright yellow and pink dots: flowering tree crowns."""
    palette = [(245, 225, 70), (250, 240, 110), (240, 135, 185), (235, 110, 165)]
    for _ in range(rng.integers(18, 35)):
        spot = rng.uniform(0, 1, 2) * size
        radius = rng.uniform(0.012, 0.022) * size
        color = jitter(palette[rng.integers(len(palette))], rng, 8)
        cv2.circle(img, tuple(to_fixed(spot)), int(radius * ONE), color, -1, cv2.LINE_8, SHIFT)


# --- weather -----------------------------------------------------------------------------------------------------


def _draw_haze(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """Wash the whole chip toward pale grey-white and soften it: low contrast, slightly blurred."""
    softened = cv2.GaussianBlur(img, (0, 0), 0.012 * size + 0.4)
    veil = 1 + 0.04 * _smooth_noise(size, 3, rng)[..., None]
    alpha = rng.uniform(0.45, 0.6)
    img[:] = softened * (1 - alpha) + np.asarray(jitter((205, 205, 210), rng, 8), np.float32) * veil * alpha


def _cloud_mask(size: int, rng: np.random.Generator, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft masks for 1-3 puffy cloud blobs covering roughly 15-40% of the chip, and for their shifted shadow."""
    mask, shadow = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
    n_blobs = int(rng.integers(1, 4))
    blob_radius = size * np.sqrt(rng.uniform(0.15, 0.4) / (n_blobs * np.pi))
    for _ in range(n_blobs):
        center = rng.uniform(0.1, 0.9, 2) * size
        for _ in range(4):  # a few overlapping puffs make a lumpy, cloud-like outline
            puff = center + rng.normal(0, 0.35, 2) * blob_radius
            radius = int(blob_radius * rng.uniform(0.55, 0.85) * ONE)
            cv2.circle(mask, tuple(to_fixed(puff)), radius, 1.0, -1, cv2.LINE_8, SHIFT)
            cv2.circle(shadow, tuple(to_fixed(puff + offset)), radius, 1.0, -1, cv2.LINE_8, SHIFT)
    sigma = 0.04 * size
    return cv2.GaussianBlur(mask, (0, 0), sigma), cv2.GaussianBlur(shadow, (0, 0), sigma)


def _draw_partly_cloudy(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """A few soft white cloud blobs with a faint shadow cast beside them."""
    offset = rng.uniform(0.04, 0.08) * size * np.array([1.0, 1.0]) * rng.choice([-1, 1], 2)
    mask, shadow = _cloud_mask(size, rng, offset)
    img *= 1 - 0.35 * shadow[..., None]
    _blend(img, mask, jitter((240, 242, 245), rng, 6), 0.95)


def _draw_cloudy(img: np.ndarray, size: int, rng: np.random.Generator) -> None:
    """Near-total white/grey overcast with lumpy brightness; the ground shows only faintly through thin spots."""
    texture = _smooth_noise(size, 5, rng)
    grey = rng.uniform(200, 235) + 18 * texture
    cloud = np.stack([grey, grey, grey + 6], axis=-1)
    alpha = np.clip(rng.uniform(0.85, 0.93) + 0.06 * texture, 0.75, 1.0)
    _blend(img, alpha, cloud)


# Land cover from large patches to small details, then weather, so small features are never buried under big ones.
_RENDER_ORDER: tuple[tuple[str, Callable[[np.ndarray, int, np.random.Generator], None]], ...] = (
    ("bare_ground", _draw_bare_ground),
    ("agriculture", _draw_agriculture),
    ("cultivation", _draw_cultivation),
    ("water", _draw_water),
    ("blow_down", _draw_blow_down),
    ("slash_burn", _draw_slash_burn),
    ("conventional_mine", _draw_conventional_mine),
    ("artisinal_mine", _draw_artisinal_mine),
    ("selective_logging", _draw_selective_logging),
    ("road", _draw_road),
    ("habitation", _draw_habitation),
    ("blooming", _draw_blooming),
    ("haze", _draw_haze),
    ("partly_cloudy", _draw_partly_cloudy),
    ("cloudy", _draw_cloudy),
)
