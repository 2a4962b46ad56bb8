"""What the Planet and the iMet generators share: colours, and polygons in cv2's fixed-point coordinates."""

from __future__ import annotations

import numpy as np

Color = tuple[float, float, float]

SHIFT = 4  # cv2 fractional bits: sub-pixel geometry keeps small shapes smooth at 64 px
ONE = 1 << SHIFT


def to_fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates to cv2's fixed-point int32 format (see SHIFT)."""
    return np.round(np.asarray(points, dtype=np.float64) * ONE).astype(np.int32)


def jitter(color: Color, rng: np.random.Generator, amount: float = 12.0) -> Color:
    """A colour randomly perturbed around `color`, so each image varies within its palette."""
    r, g, b = np.asarray(color) + rng.uniform(-amount, amount, 3)
    return float(r), float(g), float(b)


def rect(center: np.ndarray, w: float, h: float, angle: float) -> np.ndarray:
    """Vertices of a w x h rectangle rotated by `angle` radians around `center`."""
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    c, s = np.cos(angle), np.sin(angle)
    return center + corners @ np.array([[c, s], [-s, c]])
