"""The installed distributions are requirements.lock, exactly: no package missing, at another version, or extra.

A venv that drifted from the lock (a `pip install` by hand, a lock bumped without `make install`) runs code that a
fresh clone's `make install` would not: results and test outcomes that nobody else can reproduce.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest
from conftest import REPO

LOCK = REPO / "requirements.lock"
DIRECT = REPO / "requirements.in"
PROJECT = "mlic"  # the editable install of this checkout: not a pin
FIX = "run `make install` (syncs the venv to requirements.lock), or `make lock` after editing requirements.in"
# `name==version`, then markers (`; python_version < "3.12"`), a line continuation or a comment.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\#]+)")


def normalise(name: str) -> str:
    """PEP 503: lowercase, runs of `-_.` as one `-` (the lock says zc-lockfile, its metadata zc.lockfile)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """name -> version of each `name==version` line; hashes, `# via` comments and options are not pins."""
    found = (PIN.match(line.strip()) for line in text.splitlines())
    return {normalise(m[1]): m[2] for m in found if m}


def installed() -> dict[str, str]:
    """name -> version of the running interpreter's distributions (the venv pytest runs in)."""
    # The first of a name on sys.path wins, as for imports; a duplicate further along is shadowed.
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        found.setdefault(normalise(dist.metadata["Name"]), dist.version)
    return found


def env_differences(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """What `pip-sync requirements.lock` would change, one line per package."""
    missing = [f"not installed: {n}=={v}" for n, v in sorted(locked.items()) if n not in present]
    other = [
        f"installed {n}=={present[n]}, the lock has {v}"
        for n, v in sorted(locked.items())
        if n in present and present[n] != v
    ]
    extra = [f"not in the lock: {n}=={v}" for n, v in sorted(present.items()) if n not in locked and n != PROJECT]
    return missing + other + extra


def lock_or_skip() -> dict[str, str]:
    if not LOCK.is_file():
        pytest.skip(f"no {LOCK.name}: nothing to compare the environment with")
    return pins(LOCK.read_text())


def test_the_installed_distributions_are_the_lock():
    problems = env_differences(lock_or_skip(), installed())
    assert not problems, "the environment is not requirements.lock:\n  " + "\n  ".join(problems) + f"\n{FIX}"


def test_every_direct_dependency_is_locked_at_its_pin():
    locked = lock_or_skip()
    direct = pins(DIRECT.read_text())
    problems = [
        f"{n}=={v}: the lock has {locked.get(n, 'no such package')}" for n, v in direct.items() if locked.get(n) != v
    ]
    assert direct and not problems, f"requirements.lock is not {DIRECT.name}:\n  " + "\n  ".join(problems) + f"\n{FIX}"


def test_the_comparison_names_each_kind_of_difference():
    locked = {"numpy": "2.2.6", "zc-lockfile": "4.0", "torch": "2.14.1"}
    present = {"numpy": "2.2.5", "zc-lockfile": "4.0", "rich": "15.0.0", PROJECT: "0.1.0"}
    assert env_differences(locked, present) == [
        "not installed: torch==2.14.1",
        "installed numpy==2.2.5, the lock has 2.2.6",
        "not in the lock: rich==15.0.0",
    ]
    assert normalise("Zc.Lockfile") == normalise("zc_lockfile") == "zc-lockfile"
    assert pins("pip-tools==7.6.2       # `make lock`\nfoo==1.0 ; python_version < '3.12' \\\n    --hash=x\n") == {
        "pip-tools": "7.6.2",
        "foo": "1.0",
    }
