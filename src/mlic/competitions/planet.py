"""Planet: Understanding the Amazon from Space: 17 tags, chips as JPEG, `image_name,tags` submissions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mlic.competitions.base import COMPETITIONS, RawData, check_unique, read_csv_checked
from mlic.errors import MlicError
from mlic.io import atomic_path

PLANET_TAGS: tuple[str, ...] = (
    "agriculture", "artisinal_mine", "bare_ground", "blooming", "blow_down", "clear", "cloudy", "conventional_mine",
    "cultivation", "habitation", "haze", "partly_cloudy", "primary", "road", "selective_logging", "slash_burn", "water",
)  # fmt: skip
TRAIN_CSV = "train_v2.csv"
SAMPLE_SUBMISSION = "sample_submission_v2.csv"
ID_COLUMN, TAGS_COLUMN = "image_name", "tags"


def parse_tags(frame: pd.DataFrame, path: Path, vocabulary: Sequence[str]) -> list[list[str]]:
    """Split the space-separated tags column, refusing empty cells and tags outside the vocabulary."""
    known = set(vocabulary)
    tag_lists = []
    for i, cell in enumerate(frame[TAGS_COLUMN]):
        tags = cell.split()
        if not tags:
            raise MlicError("empty tags cell", path=path, row=i + 2, fix="give each image at least one tag")
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise MlicError(
                f"unknown tag {unknown[0]!r} for {frame[ID_COLUMN].iloc[i]!r}",
                path=path,
                row=i + 2,
                fix=f"tags must be among: {' '.join(vocabulary)}",
            )
        tag_lists.append(sorted(set(tags)))
    return tag_lists


def test_image_path(root: Path, image_id: str) -> Path:
    """Kaggle split the test set: `test_*` chips are in test-jpg/, `file_*` chips in test-jpg-additional/."""
    folder = "test-jpg-additional" if image_id.startswith("file_") else "test-jpg"
    return root / folder / f"{image_id}.jpg"


class PlanetCompetition:
    """Reader and submission writer for Planet (and for the embedded sample, which uses its exact layout)."""

    name = "planet"
    classes = PLANET_TAGS

    def read(self, root: Path) -> RawData:
        """Read train_v2.csv and sample_submission_v2.csv under `root`, checking ids and tags."""
        root = Path(root)
        train_csv = root / TRAIN_CSV
        train = read_csv_checked(train_csv, [ID_COLUMN, TAGS_COLUMN], "the Planet training labels")
        check_unique(train, ID_COLUMN, train_csv)
        tags = parse_tags(train, train_csv, self.classes)
        sample_csv = root / SAMPLE_SUBMISSION
        sample = read_csv_checked(sample_csv, [ID_COLUMN, TAGS_COLUMN], "the Planet sample submission")
        check_unique(sample, ID_COLUMN, sample_csv)
        train_ids, test_ids = list(train[ID_COLUMN]), list(sample[ID_COLUMN])
        return RawData(
            classes=self.classes,
            train_ids=train_ids,
            train_tags=tags,
            train_paths=[root / "train-jpg" / f"{i}.jpg" for i in train_ids],
            test_ids=test_ids,
            test_paths=[test_image_path(root, i) for i in test_ids],
        )

    def write_submission(self, path: Path, ids: Sequence[str], tag_lists: Sequence[Sequence[str]]) -> None:
        """Write `image_name,tags` with space-separated tag names, rows in the order given."""
        frame = pd.DataFrame({ID_COLUMN: list(ids), TAGS_COLUMN: [" ".join(t) for t in tag_lists]})
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)


COMPETITIONS.register("planet")(PlanetCompetition())
