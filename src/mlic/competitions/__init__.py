"""Competition readers and submission writers, registered by the name used in `data.competition`."""

from mlic.competitions import folder, imet, planet  # noqa: F401  (register the readers)
from mlic.competitions.base import COMPETITIONS, Competition, RawData, Scan
from mlic.config import DataConfig

__all__ = ["COMPETITIONS", "Competition", "RawData", "Scan", "get_competition"]


def get_competition(data: DataConfig) -> Competition:
    """The reader named by `data.competition`, configured from the `data` section."""
    return COMPETITIONS.get(data.competition)(data)
