"""Region proposals: the sliding-window grid, selective search, clipping and caps, CAM boxes, context enlargement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import REPO

from mlic.errors import ConfigError
from mlic.features.proposals import (
    CONTRIB_WHEEL,
    PROPOSALS,
    box_iou,
    cam_boxes,
    clip_boxes,
    enlarge,
    selective_search,
    to_corners,
    top_boxes,
    windows,
)

# Two flat rectangles on a flat background, 64 x 64 RGB: (x, y, w, h) and colour.
RECTANGLES = {(8, 6, 32, 24): (220, 40, 40), (24, 36, 34, 24): (40, 200, 60)}


def two_rectangles() -> np.ndarray:
    """The RECTANGLES drawn on a grey 64 x 64 uint8 RGB image."""
    image = np.full((64, 64, 3), 40, dtype=np.uint8)
    for (x, y, w, h), colour in RECTANGLES.items():
        image[y : y + h, x : x + w] = colour
    return image


def test_windows_cover_the_image_with_a_half_window_grid_per_scale_and_aspect():
    boxes = windows(64, 64, max_boxes=1000)
    assert boxes.dtype == np.float32 and boxes.shape[1] == 5
    corners = to_corners(boxes)
    assert (corners[:, :2] >= 0).all() and (corners[:, 2] <= 64).all() and (corners[:, 3] <= 64).all()
    assert len(np.unique(boxes[:, :4], axis=0)) == len(boxes)
    np.testing.assert_array_equal(boxes[0], [0, 0, 64, 64, 1.0])  # the whole image first
    small = boxes[(boxes[:, 2] == 16) & (boxes[:, 3] == 16)]  # scale 0.25, aspect 1: 16 px moved by 8 px
    assert sorted({(x, y) for x, y in small[:, :2].tolist()}) == [
        (x, y) for x in range(0, 49, 8) for y in range(0, 49, 8)
    ]
    wide = boxes[(np.isclose(boxes[:, 2] / boxes[:, 3], 2.0)) & (boxes[:, 4] == np.float32(0.4))]
    assert len(wide) and np.allclose(wide[:, 2], 0.4 * 64 * np.sqrt(2), atol=1e-3)
    assert list(np.unique(boxes[:, 4])) == [np.float32(s) for s in (0.25, 0.4, 0.6, 0.8, 1.0)]


def test_windows_on_a_non_square_image_stay_inside_and_reach_its_far_edges():
    boxes = windows(40, 100, max_boxes=1000)
    corners = to_corners(boxes)
    assert corners[:, 2].max() == pytest.approx(100) and corners[:, 3].max() == pytest.approx(40)
    assert (corners[:, 2] <= 100 + 1e-4).all() and (corners[:, 3] <= 40 + 1e-4).all()
    assert boxes[:, 2].max() <= 100 and boxes[:, 3].max() <= 40


def test_a_cap_keeps_the_coarsest_windows_first():
    full = windows(64, 64, max_boxes=1000)
    capped = windows(64, 64, max_boxes=10)
    assert len(capped) == 10 and (np.diff(capped[:, 4]) <= 0).all()
    assert capped[:, 4].min() >= np.sort(full[:, 4])[::-1][9]


def test_clipping_cuts_boxes_to_the_image_and_drops_those_outside():
    boxes = np.array([[-5, -5, 20, 20, 0.9], [50, 10, 30, 10, 0.5], [70, 70, 5, 5, 0.1]], dtype=np.float32)
    clipped = clip_boxes(boxes, 64, 64)
    np.testing.assert_allclose(clipped, [[0, 0, 15, 15, 0.9], [50, 10, 14, 10, 0.5]], rtol=1e-6)


def test_top_boxes_drops_duplicates_and_orders_by_score():
    boxes = np.array([[0, 0, 4, 4, 0.2], [1, 1, 4, 4, 0.9], [0, 0, 4, 4, 0.2], [2, 2, 4, 4, 0.5]], dtype=np.float32)
    assert top_boxes(boxes, 2)[:, 4].tolist() == pytest.approx([0.9, 0.5])
    assert len(top_boxes(boxes, 10)) == 3


def test_cam_boxes_find_a_synthetic_square_within_iou_0_7():
    rng = np.random.default_rng(0)
    cam = rng.random((16, 16)) * 0.1
    cam[4:9, 6:12] = 1.0 + rng.random((5, 6)) * 0.1  # the object: rows 4-8, columns 6-11 of the map
    cam[12:14, 1:3] = 0.6  # a weaker blob, its own component
    truth = np.array([[6 * 4, 4 * 4, 6 * 4, 5 * 4, 1.0]], dtype=np.float32)  # the square in 64 px image pixels
    boxes = cam_boxes(cam, 64, 64, tau=0.5, max_boxes=5)
    assert len(boxes) == 2 and boxes[0, 4] > boxes[1, 4]
    assert box_iou(boxes[:1], truth)[0, 0] >= 0.7
    assert len(cam_boxes(cam, 64, 64, tau=0.7, max_boxes=5)) == 1  # tau above the weak blob's share of the peak
    assert len(cam_boxes(cam, 64, 64, tau=0.5, max_boxes=1)) == 1
    assert cam_boxes(np.zeros((4, 4)), 64, 64, tau=0.5, max_boxes=5).shape == (0, 5)


def test_enlarging_grows_about_the_centre_and_clips():
    boxes = np.array([[20, 20, 10, 10, 0.7], [0, 0, 10, 10, 0.3]], dtype=np.float32)
    grown = enlarge(boxes, 1.8, 64, 64)
    np.testing.assert_allclose(grown[0], [16, 16, 18, 18, 0.7], atol=1e-5)
    np.testing.assert_allclose(grown[1], [0, 0, 14, 14, 0.3], atol=1e-5)  # centre (5, 5), 18 px, cut at the edge


def test_box_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10, 1]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10, 1], [5, 0, 10, 10, 1], [20, 20, 5, 5, 1]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0])


def test_selective_search_finds_both_rectangles_as_capped_clipped_deterministic_boxes():
    image = two_rectangles()
    boxes = selective_search(image, max_boxes=6)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and 1 <= len(boxes) <= 6 and boxes.shape[1] == 5
    corners = to_corners(boxes)
    assert (corners[:, :2] >= 0).all() and (corners[:, 2:] <= 64).all() and (boxes[:, 2:4] > 0).all()
    assert (np.diff(boxes[:, 4]) < 0).all() and boxes[0, 4] == 1.0  # distinct scores, best first
    assert len(np.unique(boxes[:, :4], axis=0)) == len(boxes)
    truth = np.array([[*rect, 1.0] for rect in RECTANGLES], dtype=np.float32)
    assert (box_iou(boxes, truth).max(axis=0) >= 0.7).all()
    # OpenCV's own order is random (libc rand()); the re-ranking makes repeated calls identical.
    np.testing.assert_array_equal(selective_search(image, max_boxes=6), boxes)
    np.testing.assert_array_equal(selective_search(image, max_boxes=100)[:6], boxes)


def test_selective_search_on_a_small_flat_image_gives_the_whole_image():
    boxes = selective_search(np.full((32, 48, 3), 120, dtype=np.uint8), max_boxes=10)
    np.testing.assert_array_equal(boxes, [[0, 0, 48, 32, 1.0]])


def test_selective_search_without_opencv_contrib_names_the_wheel(monkeypatch):
    monkeypatch.delattr(cv2, "ximgproc")
    with pytest.raises(ConfigError, match="contrib") as error:
        selective_search(two_rectangles(), max_boxes=5)
    assert CONTRIB_WHEEL in str(error.value)


def test_the_contrib_opencv_is_pinned_beside_the_plain_one_and_keeps_hog():
    pins = set((REPO / "requirements.in").read_text().split()) & set((REPO / "requirements.lock").read_text().split())
    version = CONTRIB_WHEEL.split("==")[1]
    assert {CONTRIB_WHEEL, f"opencv-python-headless=={version}"} <= pins  # albumentations needs the plain one
    assert cv2.__version__ == version.rsplit(".", 1)[0]
    assert hasattr(cv2, "HOGDescriptor") and hasattr(cv2.ximgproc.segmentation, "createSelectiveSearchSegmentation")


def test_proposal_methods_are_a_registry_of_image_generators():
    image = two_rectangles()[:40]  # 40 x 64
    np.testing.assert_array_equal(PROPOSALS.get("windows")(image, 7), windows(40, 64, 7))
    assert PROPOSALS.get("selective_search") is selective_search
    with pytest.raises(ConfigError, match="proposals.method"):
        PROPOSALS.get("window")
