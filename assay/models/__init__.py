"""Model clients: one interface (``ModelClient``), several backends."""

from assay.models.base import ModelClient, ModelSpec, ProgressCallback, ServingConfig

__all__ = ["ModelClient", "ModelSpec", "ProgressCallback", "ServingConfig"]
