"""Planet: Understanding the Amazon from Space: 17 tags, JPEG chips, `image_name,tags` submissions."""

from __future__ import annotations

from pathlib import Path

from mlic.config import DataConfig
from mlic.data.competitions.base import COMPETITIONS, Competition, Scan, read_tag_csv
from mlic.data.submission import SubmissionFormat
from mlic.data.vocabularies import PLANET_TAGS


class PlanetCompetition(Competition):
    """Reader for Planet, and for the embedded sample competition, which uses its exact layout."""

    name = "planet"
    submission = SubmissionFormat(id_column="image_name", label_column="tags", sample_file="sample_submission_v2.csv")
    train_csv = "train_v2.csv"

    def vocabulary(self, root: Path) -> tuple[str, ...]:
        """The 17 Planet tags."""
        return PLANET_TAGS

    def read_train(self, root: Path, scan: Scan, vocabulary):
        """train_v2.csv (`image_name,tags`) and train-jpg/<image_name>.jpg."""
        frame, tags = read_tag_csv(self, root, scan, vocabulary, self.train_csv, "tags")
        ids = list(frame["image_name"])
        return ids, tags, [root / "train-jpg" / f"{i}.jpg" for i in ids]

    def test_image_path(self, root: Path, image_id: str) -> Path:
        """Kaggle split the test set: `test_*` chips are in test-jpg/, `file_*` chips in test-jpg-additional/."""
        folder = "test-jpg-additional" if image_id.startswith("file_") else "test-jpg"
        return root / folder / f"{image_id}.jpg"


@COMPETITIONS.register("planet")
def planet(data: DataConfig) -> Competition:
    """The Planet reader (it has no options)."""
    return PlanetCompetition()
