"""Region features for the region models (WSDDN, its distilled student, the two-branch network), in torch.

Boxes travel as float32 (B, R, 5) tensors, (x, y, w, h, score) in pixels of the network's input image, R boxes per
image (the `boxes` batch source, `mlic.sources`; the proposals stage pads every image to the same R). RoI
features come from `torchvision.ops.roi_align`, whose (K, 5) rois are (batch index, x1, y1, x2, y2).
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align


def boxes_to_rois(boxes: torch.Tensor) -> torch.Tensor:
    """(B, R, 5) (x, y, w, h, score) boxes -> (B * R, 5) float rois (batch index, x1, y1, x2, y2), image-major."""
    batch, count = boxes.shape[0], boxes.shape[1]
    index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype).view(batch, 1, 1).expand(batch, count, 1)
    corners = torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:4]], dim=-1)
    return torch.cat([index, corners], dim=-1).reshape(batch * count, 5)


def region_features(feature_map: torch.Tensor, boxes: torch.Tensor, image_size: int, output_size: int) -> torch.Tensor:
    """RoIAlign of every box on one feature map: (B, C, h, w) map, (B, R, 5) boxes -> (B, R, C, out, out).

    Args:
        feature_map: The map the boxes are pooled from; its stride is read from its width against `image_size`.
        boxes: Boxes in pixels of the input image.
        image_size: The input image's width in pixels (square inputs), which scales the boxes to the map.
        output_size: Side of each pooled patch (7 in the papers).
    """
    batch, count = boxes.shape[0], boxes.shape[1]
    rois = boxes_to_rois(boxes.to(feature_map.dtype))
    scale = feature_map.shape[-1] / image_size
    pooled = roi_align(feature_map, rois, output_size, spatial_scale=scale, sampling_ratio=2, aligned=True)
    return pooled.view(batch, count, *pooled.shape[1:])


def enlarge_boxes(boxes: torch.Tensor, factor: float, image_size: int) -> torch.Tensor:
    """Boxes grown `factor` times about their centres and clipped to the (square) image; scores kept.

    The torch twin of `mlic.features.proposals.enlarge`, for boxes that arrive in a batch (context patches).
    """
    centre = boxes[..., :2] + boxes[..., 2:4] / 2
    half = boxes[..., 2:4] * (factor / 2)
    top_left = (centre - half).clamp(0, image_size)
    bottom_right = (centre + half).clamp(0, image_size)
    return torch.cat([top_left, bottom_right - top_left, boxes[..., 4:5]], dim=-1)
