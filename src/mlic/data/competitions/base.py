"""Competition readers: a CSV of ids and labels, image folders and a sample submission, scanned for problems.

Every reader lists all problems of a dataset at once (`scan`), each naming its file, row and fix. Row-level
problems of the training set (a bad image, an unknown tag, an empty cell, a duplicate id) can be skipped;
anything else (a missing file or column, a test-set problem) cannot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from mlic.config import DataConfig
from mlic.data.images import IMAGE_SUFFIXES, MAX_PIXELS, scan_images
from mlic.data.submission import SubmissionFormat, write_submission
from mlic.errors import DataProblems, MlicError
from mlic.registry import Registry

MAX_LISTED = 50  # lines in one report; the rest are counted
PER_KIND = 5  # problems of one kind listed before the rest of that kind are counted


@dataclass(frozen=True)
class RawData:
    """A competition's training labels and image locations, as read from its raw files."""

    classes: tuple[str, ...]
    train_ids: list[str]
    train_tags: list[list[str]]
    train_paths: list[Path]
    test_ids: list[str]
    test_paths: list[Path]

    def drop_train_rows(self, rows: set[int]) -> RawData:
        """A copy without the given training rows."""
        keep = [i for i in range(len(self.train_ids)) if i not in rows]
        return replace(
            self,
            train_ids=[self.train_ids[i] for i in keep],
            train_tags=[self.train_tags[i] for i in keep],
            train_paths=[self.train_paths[i] for i in keep],
        )


@dataclass
class Scan:
    """What a scan found: the data (None if it could not be read), and every problem."""

    root: Path
    raw: RawData | None = None
    problems: list[MlicError] = field(default_factory=list)
    bad_train_rows: set[int] = field(default_factory=set)
    fatal: bool = False  # a problem that skipping training rows cannot fix

    def add(self, problem: MlicError, train_row: int | None = None) -> None:
        """Record a problem; `train_row` (0-based) marks a skippable training row, anything else is fatal."""
        self.problems.append(problem)
        if train_row is None:
            self.fatal = True
        else:
            self.bad_train_rows.add(train_row)

    def error(self) -> DataProblems:
        """All problems as one error: at most PER_KIND of each kind and MAX_LISTED in all, the rest counted."""
        kinds: dict[str, list[MlicError]] = {}
        for problem in self.problems:
            kinds.setdefault(problem.message.split(" for ")[0], []).append(problem)
        listed: list[MlicError] = []
        for kind, problems in kinds.items():
            listed += problems[:PER_KIND]
            if len(problems) > PER_KIND:
                listed.append(MlicError(f"... and {len(problems) - PER_KIND} more with the same problem ({kind})"))
        if len(listed) > MAX_LISTED:
            listed = listed[:MAX_LISTED] + [MlicError(f"... and {len(listed) - MAX_LISTED} more lines")]
        return DataProblems(listed, f"{len(self.problems)} problem(s) in {self.root}")

    def usable(self, skip_bad_rows: bool) -> RawData:
        """The data, refusing it when problems remain, or dropping bad training rows when allowed.

        Raises:
            DataProblems: If there are problems that cannot (or may not) be skipped.
        """
        if self.problems and (self.fatal or not skip_bad_rows or self.raw is None):
            raise self.error()
        assert self.raw is not None
        return self.raw.drop_train_rows(self.bad_train_rows) if self.bad_train_rows else self.raw


def read_csv_checked(path: Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read a CSV of strings, checking it exists, parses and has the required columns.

    Raises:
        MlicError: Naming the file and what to do.
    """
    if not path.is_file():
        raise MlicError(
            f"{what} file is missing", path=path, fix="check data.root in params.yaml, or run mlic download"
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise MlicError(f"malformed CSV ({what}): {reason}", path=path, fix="re-download the file") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MlicError(
            f"missing column(s) {missing}; found {list(frame.columns)}",
            path=path,
            row=1,
            fix=f"the header must include {','.join(columns)}",
        )
    return frame


def duplicate_rows(frame: pd.DataFrame, column: str, path: Path) -> list[tuple[int, MlicError]]:
    """(0-based row, problem) for every repeat of an id after its first occurrence."""
    first_line = {}
    found = []
    for i, value in enumerate(frame[column]):
        if value in first_line:
            problem = MlicError(
                f"duplicate id {value!r} (first at line {first_line[value]})",
                path=path,
                row=i + 2,
                fix="remove the duplicate row",
            )
            found.append((i, problem))
        else:
            first_line[value] = i + 2
    return found


def parse_label_cells(
    cells: Sequence[str], ids: Sequence[str], path: Path, vocabulary: Sequence[str] | None
) -> tuple[list[list[str]], list[tuple[int, MlicError]]]:
    """Split space-separated label cells; problems for empty cells and labels outside `vocabulary`."""
    known = set(vocabulary) if vocabulary is not None else None
    tag_lists, problems = [], []
    for i, cell in enumerate(cells):
        tags = sorted(set(cell.split()))
        unknown = [t for t in tags if known is not None and t not in known]
        if not tags:
            problems.append(
                (
                    i,
                    MlicError(
                        f"empty labels cell for {ids[i]!r}",
                        path=path,
                        row=i + 2,
                        fix="give each training image at least one label, or drop the row",
                    ),
                )
            )
        elif unknown:
            shown = " ".join(sorted(known)) if len(known) <= 30 else f"the {len(known)} known labels"
            problems.append(
                (
                    i,
                    MlicError(
                        f"unknown label {unknown[0]!r} for {ids[i]!r}",
                        path=path,
                        row=i + 2,
                        fix=f"labels must be among {shown}",
                    ),
                )
            )
        tag_lists.append(tags)
    return tag_lists, problems


def add_image_problems(
    scan: Scan, paths: Sequence[Path], decode: bool, workers: int, split: str, max_pixels: int = MAX_PIXELS
) -> None:
    """Scan images; a training image problem marks its row, a test image problem is fatal.

    A missing image folder is one problem, not one per image in it.
    """
    missing_dirs = {p.parent for p in paths if not p.parent.is_dir()}
    for folder in sorted(missing_dirs):
        scan.add(MlicError(f"{split} image folder is missing", path=folder, fix="download or unpack the images there"))
    present = [i for i, p in enumerate(paths) if p.parent not in missing_dirs]
    found = scan_images([paths[i] for i in present], decode, workers, f"check {split}", max_pixels)
    for j, message in found.items():
        i = present[j]
        fix = "re-download it, or drop its row (prepare.skip_bad_rows)" if split == "train" else "re-download it"
        scan.add(MlicError(f"{split} image: {message}", path=paths[i], fix=fix), i if split == "train" else None)


CompetitionFactory = Callable[[DataConfig], "Competition"]
COMPETITIONS: Registry[CompetitionFactory] = Registry("competition", "data.competition")


class Competition:
    """Base reader: subclasses give the file layout and the label vocabulary.

    Attributes:
        name: The registry name.
        submission: Columns and sample-submission file of the competition's submission format.
    """

    name: str
    submission: SubmissionFormat

    def vocabulary(self, root: Path) -> tuple[str, ...] | None:
        """The labels allowed in training data and submissions; None means taken from the training CSV."""
        raise NotImplementedError

    def read_train(self, root: Path, scan: Scan, vocabulary: tuple[str, ...] | None) -> tuple[list, list, list]:
        """(ids, label lists, image paths) of the training set, recording row problems in `scan`."""
        raise NotImplementedError

    def test_image_path(self, root: Path, image_id: str) -> Path:
        """Where the test image with this id lives."""
        raise NotImplementedError

    def scan(self, root: Path, decode_images: bool = False, workers: int = 2, max_pixels: int = MAX_PIXELS) -> Scan:
        """Read everything and list every problem; images are fully decoded only with `decode_images`.

        Images of more than `max_pixels` pixels (prepare.max_pixels) are problems, found from their headers.
        """
        root, scan = Path(root), Scan(Path(root))
        try:
            vocabulary = self.vocabulary(root)
            ids, tags, paths = self.read_train(root, scan, vocabulary)
        except MlicError as exc:
            scan.add(exc)
            ids = tags = paths = None
            vocabulary = ()
        test = self.read_test(root, scan)
        if paths is not None:
            add_image_problems(scan, paths, decode_images, workers, "train", max_pixels)
        if test is not None:
            add_image_problems(scan, test[1], decode_images, workers, "test", max_pixels)
            self.add_unlisted_test_images(root, test, scan)
        if ids is not None and test is not None:
            classes = vocabulary if vocabulary is not None else tuple(sorted({t for row in tags for t in row}))
            scan.raw = RawData(classes, ids, tags, paths, test[0], test[1])
        return scan

    def read_test(self, root: Path, scan: Scan) -> tuple[list[str], list[Path]] | None:
        """Test ids (from the sample submission, in its order) and image paths; None if unreadable."""
        path = root / self.submission.sample_file
        try:
            frame = read_csv_checked(path, [self.submission.id_column], "the sample submission")
        except MlicError as exc:
            scan.add(exc)
            return None
        for _, problem in duplicate_rows(frame, self.submission.id_column, path):
            scan.add(problem)
        ids = list(frame[self.submission.id_column])
        return ids, [self.test_image_path(root, i) for i in ids]

    def add_unlisted_test_images(self, root: Path, test: tuple[list[str], list[Path]], scan: Scan) -> None:
        """Test images on disk that the sample submission does not list: a sign of a mismatched download."""
        listed = {p.name for p in test[1]}
        for folder in sorted({p.parent for p in test[1]}):
            files = folder.iterdir() if folder.is_dir() else []
            extra = sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in listed)
            if extra:
                sample = root / self.submission.sample_file
                scan.add(
                    MlicError(
                        f"{len(extra)} test image(s) in {folder} are not in the sample submission, "
                        f"e.g. {extra[0].name}",
                        path=sample,
                        fix="use the sample submission that came with these test images, or remove them",
                    )
                )

    def read(self, root: Path, skip_bad_rows: bool = False, workers: int = 2) -> RawData:
        """Scan with the cheap image checks and return the data, or raise listing every problem."""
        return self.scan(root, decode_images=False, workers=workers).usable(skip_bad_rows)

    def write_submission(self, path: Path, ids: Sequence[str], tag_lists: Sequence[Sequence[str]]) -> None:
        """Write a submission in the competition's exact format, rows in the order given."""
        write_submission(path, self.submission, ids, tag_lists)


def read_tag_csv(
    comp: Competition, root: Path, scan: Scan, vocabulary: Sequence[str] | None, csv_name: str, label_column: str
) -> tuple[pd.DataFrame, list[list[str]]]:
    """Read a training CSV with one space-separated label column, recording row problems in `scan`."""
    path = root / csv_name
    id_column = comp.submission.id_column
    frame = read_csv_checked(path, [id_column, label_column], "the training labels")
    tags, problems = parse_label_cells(list(frame[label_column]), list(frame[id_column]), path, vocabulary)
    for row, problem in problems + duplicate_rows(frame, id_column, path):
        scan.add(problem, row)
    return frame, tags
