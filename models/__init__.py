"""Model zoo, safe save/load and the training loop shared by targets and shadow models."""

# Imported for its registration: "trust-masked" must be in the registry wherever it is read.
import models.masking  # noqa: F401
from models.io import load_model, model_bytes, save_model

# Registers the composite "stacked" architecture wherever the registry is used: every import of
# models.zoo runs this file first.
from models.stacking import StackedModel
from models.zoo import MODELS, build_model, classifier_of, count_params, register_model

__all__ = [
    "MODELS",
    "StackedModel",
    "build_model",
    "classifier_of",
    "count_params",
    "load_model",
    "model_bytes",
    "register_model",
    "save_model",
]
