"""Competition readers and submission writers, registered by the name used in `data.competition`."""

from mlic.competitions import planet  # noqa: F401  (registers "planet")
from mlic.competitions.base import COMPETITIONS, Competition, RawData

__all__ = ["COMPETITIONS", "Competition", "RawData", "get_competition"]


def get_competition(name: str) -> Competition:
    """The registered competition called `name` (a ConfigError lists the known ones)."""
    return COMPETITIONS.get(name)
