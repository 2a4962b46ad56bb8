"""Competition readers and submission writers, registered by the name used in `data.competition`."""

from mlic.config import DataConfig
from mlic.data.competitions import folder, imet, planet  # noqa: F401  (register the readers)
from mlic.data.competitions.base import COMPETITIONS, Competition, RawData, Scan

__all__ = ["COMPETITIONS", "Competition", "RawData", "Scan", "get_competition"]


def get_competition(data: DataConfig) -> Competition:
    """The reader named by `data.competition`, configured from the `data` section."""
    return COMPETITIONS.get(data.competition)(data)
