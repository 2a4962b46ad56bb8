"""Models, registered by the name used in `models.<entry>.arch`."""

from mlic.models import baseline, hog_models, hourglass  # noqa: F401  (register the models)
from mlic.models.registry import MODELS, create_model, model_inputs, register_model

__all__ = ["MODELS", "create_model", "model_inputs", "register_model"]
