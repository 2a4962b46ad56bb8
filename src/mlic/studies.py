"""Optuna's study storage, shared by the tuner (`mlic tune`) and the `optuna` threshold fitter.

Kept in the base layer so that neither borrows it from the other: threshold fitting (predict) and the tuner
(experiments) sit in different layers. Optuna is imported when a storage is made, not when this module loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def create_study_storage(path: str | Path) -> Any:
    """Optuna's SQLite storage at `path` (created with its tables when absent); quiet unless something is wrong."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}")
