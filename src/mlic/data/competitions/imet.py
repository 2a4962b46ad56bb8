"""iMet Collection 2019 (FGVC6): 1,103 culture:: and tag:: attributes, PNG images, `id,attribute_ids` submissions."""

from __future__ import annotations

from pathlib import Path

from mlic.config import DataConfig
from mlic.data.competitions.base import COMPETITIONS, Competition, Scan, duplicate_rows, read_csv_checked, read_tag_csv
from mlic.data.submission import SubmissionFormat
from mlic.errors import MlicError


class ImetCompetition(Competition):
    """Reader for iMet 2019: labels are attribute ids (as strings), named in labels.csv."""

    name = "imet2019"
    submission = SubmissionFormat(id_column="id", label_column="attribute_ids", sample_file="sample_submission.csv")

    def vocabulary(self, root: Path) -> tuple[str, ...]:
        """Every attribute id in labels.csv, in file order."""
        path = root / "labels.csv"
        frame = read_csv_checked(path, ["attribute_id", "attribute_name"], "the iMet attribute list")
        bad = [i for i, v in enumerate(frame["attribute_id"]) if not v.isdigit()]
        if bad:
            raise MlicError(
                f"attribute_id {frame['attribute_id'][bad[0]]!r} is not a whole number",
                path=path,
                row=bad[0] + 2,
                fix="re-download labels.csv",
            )
        dup = duplicate_rows(frame, "attribute_id", path)
        if dup:
            raise dup[0][1]
        return tuple(frame["attribute_id"])

    def read_train(self, root: Path, scan: Scan, vocabulary):
        """train.csv (`id,attribute_ids`) and train/<id>.png."""
        frame, tags = read_tag_csv(self, root, scan, vocabulary, "train.csv", "attribute_ids")
        ids = list(frame["id"])
        order = {a: i for i, a in enumerate(vocabulary)}
        tags = [sorted(t, key=lambda a: order.get(a, len(order))) for t in tags]  # numeric order, as Kaggle lists
        return ids, tags, [root / "train" / f"{i}.png" for i in ids]

    def test_image_path(self, root: Path, image_id: str) -> Path:
        """test/<id>.png."""
        return root / "test" / f"{image_id}.png"


@COMPETITIONS.register("imet2019")
def imet2019(data: DataConfig) -> Competition:
    """The iMet 2019 reader (rare labels are dropped later, by `data.min_label_count`)."""
    return ImetCompetition()
