"""Models: one file per method family; layers grouped by concept under ``layers/``."""

from .registry import create_model, list_models, model_presets, parse_model_spec, register_model

__all__ = ["create_model", "list_models", "model_presets", "parse_model_spec", "register_model"]
