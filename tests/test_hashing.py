"""mlic.hashing: each digest pinned on a fixed input, equal to the algorithm it replaced (no torch, milliseconds).

The pinned values were computed with the four hashers that `mlic.hashing` replaced (`io.tree_digest`,
`train.fold.run_code`, `deps.file_hashes`, the leaderboard's `digest` and `code_hashes`). A digest is recorded and
compared later (resume fingerprints, the leaderboard's cache keys), so a change to any of them must fail here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlic import hashing

ALPHA = "b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060"  # sha256(b"alpha\n")
BYTES = "40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880"  # sha256(bytes(range(256)))
ZETA = "1db5eed83a6c9ab47659e510dd139325b7a119f9b49f31064d041cda6bb37dfb"  # sha256("zäta\n" in UTF-8)
TREE = "e6fe452bc528b8782566a6bd8e42ba8dc39eb1f1ac027a40f4cf60d8096737f2"  # io.tree_digest of `tree` below
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256(b"")
VALUE = "f60c426dc2f236d0bb1a275658182d9d99b95adbef521f3c313b1531d431800c"  # the leaderboard's digest(VALUE_INPUT)


def value_input() -> dict:
    return {"b": [1, 2.5, None], "a": {"y": "x", "p": Path("p/q")}}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Files at two depths, an empty file, an empty folder, a non-ASCII name, and a name that sorts before `a`."""
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (root / "sub" / "deeper" / "c").write_bytes(b"")
    (root / "Z.txt").write_bytes("zäta\n".encode())
    return root


def test_file_digest_is_the_sha256_of_the_bytes(tree):
    assert hashing.file_digest(tree / "a.txt") == ALPHA
    assert hashing.file_digest(str(tree / "sub" / "b.bin")) == BYTES
    assert hashing.file_digest(tree / "sub" / "deeper" / "c") == EMPTY
    big = tree / "big.bin"  # larger than one read chunk: streamed, same digest as hashing the bytes at once
    big.write_bytes(bytes(range(256)) * 40_000)
    assert hashing.file_digest(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def test_file_digests_are_keyed_by_name_in_sorted_order(tree):
    """What `run_code` (module -> file) and the old `deps.file_hashes` (relative path -> file) recorded."""
    files = {"mlic.z": tree / "Z.txt", "mlic.a": tree / "a.txt", "mlic.b": tree / "sub" / "b.bin"}
    digests = hashing.file_digests(files)
    assert digests == {"mlic.a": ALPHA, "mlic.b": BYTES, "mlic.z": ZETA}
    assert list(digests) == ["mlic.a", "mlic.b", "mlic.z"]  # the JSON of a resume fingerprint depends on the order
    assert hashing.file_digests({}) == {}


def test_tree_digest_is_the_old_io_tree_digest(tree):
    assert hashing.tree_digest(tree) == TREE
    assert hashing.tree_digest(str(tree)) == TREE
    assert hashing.tree_digest(tree / "empty") == hashing.tree_digest(tree / "missing") == EMPTY


def test_tree_digest_changes_with_a_rename_an_edit_or_a_new_file_but_not_an_empty_folder(tree):
    (tree / "another" / "empty").mkdir(parents=True)
    assert hashing.tree_digest(tree) == TREE
    (tree / "a.txt").rename(tree / "a2.txt")
    renamed = hashing.tree_digest(tree)
    (tree / "a2.txt").write_bytes(b"alpha!\n")
    edited = hashing.tree_digest(tree)
    (tree / "sub" / "new").write_bytes(b"")
    assert len({TREE, renamed, edited, hashing.tree_digest(tree)}) == 4


def test_value_digest_is_the_sorted_json_of_the_value():
    assert hashing.value_digest(value_input()) == VALUE
    reordered = {"a": {"p": "p/q", "y": "x"}, "b": [1, 2.5, None]}  # key order, and a path as its string
    assert hashing.value_digest(reordered) == VALUE
    assert hashing.value_digest({"b": [2.5, 1, None], "a": {"y": "x", "p": "p/q"}}) != VALUE  # list order counts
