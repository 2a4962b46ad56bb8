"""The boxes a region model reads: stored per view, padded to R, moved with the image by augmentation and TTA."""

import numpy as np
import pytest
import torch

from mlic.config import ProposalsConfig, config_from_dict
from mlic.errors import MlicError
from mlic.features.proposal_store import cam_proposals, load_proposals, pad_boxes, proposals_of_views
from mlic.features.proposals import NO_OBJECTNESS, box_iou, windows
from mlic.loop.batches import CachedSamples
from mlic.loop.tta import TTA_VIEWS, view_inputs
from mlic.sources import SOURCES, view_boxes
from mlic.train.augment import create_augmentation

SIZE = 32


def box_of_mask(mask: torch.Tensor) -> np.ndarray:
    """(x, y, w, h) of the pixels set in an (S, S) mask."""
    ys, xs = np.nonzero(mask.numpy())
    return np.array([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], dtype=np.float32)


@pytest.mark.parametrize("preset", ["flips", "dihedral"])
def test_boxes_follow_every_test_time_view(preset):
    """A box moved by `view_boxes` is exactly the box of its pixels after the view moved them."""
    box = torch.tensor([[3.0, 5.0, 9.0, 14.0, 0.7]])
    mask = torch.zeros(SIZE, SIZE)
    mask[5:19, 3:12] = 1
    for view in TTA_VIEWS.get(preset):
        moved = view_boxes(view, box, SIZE)
        np.testing.assert_allclose(moved[0, :4].numpy(), box_of_mask(view(mask)), atol=1e-5)
        assert moved[0, 4] == pytest.approx(0.7)


def test_a_batch_view_moves_the_image_and_its_boxes_together():
    image = torch.zeros(2, 3, SIZE, SIZE)
    image[:, :, 5:19, 3:12] = 1
    boxes = torch.tensor([[3.0, 5.0, 9.0, 14.0, 1.0]]).repeat(2, 1, 1)
    for view in TTA_VIEWS.get("dihedral"):
        out = view_inputs(view, {"image": image, "boxes": boxes, "target": torch.zeros(2, 1)})
        assert set(out) == {"image", "boxes"}
        np.testing.assert_allclose(out["boxes"][1, 0, :4].numpy(), box_of_mask(out["image"][1, 0]), atol=1e-5)


def test_training_augmentation_moves_the_boxes_with_the_image():
    """One draw of the satellite preset (flips, rotations) per sample moves a drawn square and its box alike."""
    images = np.zeros((1, 1, SIZE, SIZE, 3), dtype=np.uint8)
    images[0, 0, 2:10, 20:30] = 255
    boxes = np.array([[[[20, 2, 10, 8, 0.9], [0, 0, SIZE, SIZE, 0.1]]]], dtype=np.float32)
    transform = create_augmentation("satellite", SIZE, seed=3, boxes=True)
    samples = CachedSamples({"image": images, "boxes": boxes}, np.zeros(8, int), np.zeros(8, int), None, transform)
    seen = set()
    for i in range(8):
        item = samples[i]
        drawn = box_of_mask(torch.from_numpy((item["image"][0].numpy() > 128).astype(np.uint8)))
        np.testing.assert_allclose(item["boxes"][0, :4].numpy(), drawn, atol=1e-4)
        assert item["boxes"].shape == (2, 5) and item["boxes"][1, 2] == SIZE
        seen.add(tuple(drawn))
    assert len(seen) > 1  # the draws differ


def test_pad_boxes_gives_exactly_r_boxes_without_repeating_a_window():
    one = np.array([[1, 1, 4, 4, 0.9]], dtype=np.float32)
    padded = pad_boxes(one, 12, SIZE, SIZE)
    assert padded.shape == (12, 5) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[0], one[0])
    assert len(np.unique(padded[:, :4], axis=0)) == 12
    tiny = pad_boxes(np.zeros((0, 5), np.float32), 300, 4, 4)  # fewer distinct windows than R: the whole image
    assert tiny.shape == (300, 5) and (tiny[-1, :4] == [0, 0, 4, 4]).all()


def test_top_up_windows_score_no_objectness_so_no_top_up_is_a_pseudo_object():
    """A method's boxes topped up to R: the windows added are neither objects nor background (not their scale)."""
    flat = np.full((2, 1, SIZE, SIZE, 3), 120, dtype=np.uint8)  # selective search: the whole image, its one box
    config = ProposalsConfig(method="selective_search", max_boxes=16, num_workers=1)
    boxes = proposals_of_views(flat, config)
    np.testing.assert_array_equal(boxes[:, :, 0], np.tile([0, 0, SIZE, SIZE, 1.0], (2, 1, 1)))
    assert (boxes[:, :, 1:, 4] == NO_OBJECTNESS).all()  # the 0.8 and 0.6 windows used to score 0.8 and 0.6
    maps = np.zeros((3, 2, 2), dtype=np.float32)
    maps[1, 0, 1] = 5.0  # class 1 fires in the top-right quarter
    grid = len(windows(64, 64, 1000))  # 257 distinct windows, scored by the map; R = 300 leaves 42 to top up
    cam = cam_proposals(maps, np.array([0.1, 0.9, 0.2], dtype=np.float32), 64, tau=0.5, min_score=0.5, count=300)
    np.testing.assert_array_equal(cam[0], [32, 0, 32, 32, 1.0])  # the pseudo-object
    assert (cam[: 1 + grid, 4] >= 0).all() and cam[1 : 1 + grid, 4].max() == 1.0  # windows inside it: evidence
    np.testing.assert_array_equal(cam[1 + grid :], np.tile([0, 0, 64, 64, NO_OBJECTNESS], (300 - 1 - grid, 1)))


def test_proposals_of_views_store_r_boxes_per_view_and_cam_needs_a_model():
    views = np.random.default_rng(0).integers(0, 256, (3, 2, SIZE, SIZE, 3), dtype=np.uint8)
    boxes = proposals_of_views(views, ProposalsConfig(max_boxes=8, num_workers=2))
    assert boxes.shape == (3, 2, 8, 5) and boxes.dtype == np.float32
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 0] + boxes[..., 2] <= SIZE + 1e-4).all()
    with pytest.raises(MlicError, match="class activation maps"):
        proposals_of_views(views, ProposalsConfig(method="cam"))


def test_cam_proposals_find_the_active_square_and_score_background_low():
    """Pseudo-objects first (the hot square within IoU 0.7), then windows scored by the map inside them."""
    maps = np.zeros((3, 8, 8), dtype=np.float32)
    maps[1, 2:5, 4:7] = 5.0  # class 1 fires on a square; class 0 is below min_score, so its map is not read
    maps[0, 0:2, 0:2] = 9.0
    scores = np.array([0.1, 0.9, 0.2], dtype=np.float32)
    boxes = cam_proposals(maps, scores, 64, tau=0.5, min_score=0.5, count=10)
    assert boxes.shape == (10, 5)
    square = np.array([[32, 16, 24, 24, 1]], dtype=np.float32)
    assert box_iou(boxes[:1], square)[0, 0] >= 0.7 and boxes[0, 4] == pytest.approx(1.0)
    windows_part = boxes[1:]
    inside = box_iou(windows_part, square)[:, 0] > 0
    assert (windows_part[~inside, 4] == 0).all() and (windows_part[inside, 4] > 0).any()


def test_stored_proposals_are_checked_against_the_images(tmp_path):
    class Prep:  # the two arrays load_proposals reads of the prepared data
        train_images = np.zeros((4, 1, SIZE, SIZE, 3), np.uint8)
        test_images = np.zeros((2, 1, SIZE, SIZE, 3), np.uint8)

    np.save(tmp_path / "train_boxes.npy", np.zeros((4, 1, 8, 5), np.float32))
    np.save(tmp_path / "test_boxes.npy", np.zeros((2, 1, 8, 5), np.float32))
    assert load_proposals(tmp_path, Prep, 8).train.shape == (4, 1, 8, 5)
    with pytest.raises(MlicError, match="proposals.max_boxes"):
        load_proposals(tmp_path, Prep, 16)
    with pytest.raises(MlicError, match="no proposals"):
        load_proposals(tmp_path / "missing", Prep, 8)


def test_the_boxes_source_example_matches_the_configured_r():
    cfg = config_from_dict({"prepare": {"image_size": SIZE}, "proposals": {"max_boxes": 6}})
    example = SOURCES.get("boxes").example(3, cfg, {})
    assert example.shape == (3, 6, 5) and example.dtype == torch.float32
