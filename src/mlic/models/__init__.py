"""Models, registered by the name used in `model.name`."""

from mlic.models import baseline  # noqa: F401  (registers "baseline")
from mlic.models.registry import MODELS, create_model, register_model

__all__ = ["MODELS", "create_model", "register_model"]
