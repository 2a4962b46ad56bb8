"""Any dataset given as an image folder plus a CSV, with a space-separated tags column or one-hot columns."""

from __future__ import annotations

from pathlib import Path

from mlic.config import DataConfig, FolderConfig
from mlic.data.competitions.base import COMPETITIONS, Competition, Scan, duplicate_rows, read_csv_checked, read_tag_csv
from mlic.data.images import IMAGE_SUFFIXES
from mlic.data.submission import SubmissionFormat
from mlic.errors import MlicError


class FolderCompetition(Competition):
    """Reader for a user's own dataset; the submission is `<id_column>,<tags_column or 'tags'>`."""

    name = "folder"

    def __init__(self, cfg: FolderConfig):
        self.cfg = cfg
        self.submission = SubmissionFormat(cfg.id_column, cfg.tags_column or "tags", cfg.test_csv)

    def vocabulary(self, root: Path) -> tuple[str, ...] | None:
        """The one-hot column names, or None: the labels seen in the tags column."""
        return tuple(self.cfg.label_columns) or None

    def read_train(self, root: Path, scan: Scan, vocabulary):
        """The training CSV and `<train_dir>/<id><image_ext>`."""
        c = self.cfg
        if c.tags_column:
            frame, tags = read_tag_csv(self, root, scan, None, c.train_csv, c.tags_column)
        else:
            frame, tags = self.read_one_hot(root / c.train_csv, scan)
        ids = list(frame[c.id_column])
        return ids, tags, [root / c.train_dir / f"{i}{c.image_ext}" for i in ids]

    def read_one_hot(self, path: Path, scan: Scan):
        """One 0/1 column per label; any other value, or a row without labels, is a row problem."""
        c = self.cfg
        frame = read_csv_checked(path, [c.id_column, *c.label_columns], "the training labels")
        values = frame[list(c.label_columns)]
        for i in values.index[~values.isin(["0", "1"]).all(axis=1)]:
            bad = next(col for col in c.label_columns if values.at[i, col] not in ("0", "1"))
            scan.add(
                MlicError(
                    f"{bad} is {values.at[i, bad]!r}, not 0 or 1",
                    path=path,
                    row=int(i) + 2,
                    fix="one-hot label columns hold 0 or 1",
                ),
                int(i),
            )
        for row, problem in duplicate_rows(frame, c.id_column, path):
            scan.add(problem, row)
        tags = [[col for col in c.label_columns if row[col] == "1"] for _, row in values.iterrows()]
        return frame, tags

    def read_test(self, root: Path, scan: Scan):
        """Test ids from `test_csv`, or every image file in `test_dir` (sorted by name)."""
        if self.cfg.test_csv:
            return super().read_test(root, scan)
        folder = root / self.cfg.test_dir
        if not folder.is_dir():
            scan.add(MlicError("test image folder is missing", path=folder, fix="set data.folder.test_dir"))
            return None
        ext = self.cfg.image_ext
        files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name.endswith(ext))
        ids = [f[: len(f) - len(ext)] if ext else f for f in files]
        return ids, [self.test_image_path(root, i) for i in ids]

    def add_unlisted_test_images(self, root: Path, test, scan: Scan) -> None:
        """Only a test CSV can leave images out; a listed folder is complete by construction."""
        if self.cfg.test_csv:
            super().add_unlisted_test_images(root, test, scan)

    def test_image_path(self, root: Path, image_id: str) -> Path:
        """`<test_dir>/<id><image_ext>`."""
        return root / self.cfg.test_dir / f"{image_id}{self.cfg.image_ext}"


@COMPETITIONS.register("folder")
def folder(data: DataConfig) -> Competition:
    """The folder reader, laid out by `data.folder`."""
    return FolderCompetition(data.folder)
