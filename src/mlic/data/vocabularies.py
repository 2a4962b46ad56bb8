"""Known label vocabularies, kept apart from the readers so that the synthetic sample needs no reader code."""

from __future__ import annotations

PLANET_TAGS: tuple[str, ...] = (
    "agriculture", "artisinal_mine", "bare_ground", "blooming", "blow_down", "clear", "cloudy", "conventional_mine",
    "cultivation", "habitation", "haze", "partly_cloudy", "primary", "road", "selective_logging", "slash_burn", "water",
)  # fmt: skip
